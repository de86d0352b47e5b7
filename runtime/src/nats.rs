//! Connecting to NATS: with the configured credentials and TLS, retrying the first connect and
//! reconnecting forever afterwards; refusing a server older than the version Switchyard is
//! built for, and one that admits anyone unless that was explicitly allowed.

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tracing::{info, warn};

use crate::{Config, Error, config::NatsSettings};

pub use switchyard_proto::server::{MIN_SERVER_VERSION, Version};

/// The connect options `settings` ask for: credentials, inbox prefix and TLS.
pub async fn options(settings: &NatsSettings) -> Result<ConnectOptions, Error> {
    let mut options = ConnectOptions::new();
    if let Some(path) = &settings.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| Error::Credentials(format!("nats.credentials {}: {e}", path.display())))?;
    }
    if let Some(path) = &settings.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| {
            Error::Credentials(format!("nats.nkey_seed_file {}: {e}", path.display()))
        })?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(prefix) = &settings.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = &settings.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if settings.tls_required {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// Connects as `name`, retrying the first connection for `nats_connect_timeout`, then checks
/// the server version and that the server asked for credentials. After that the client
/// reconnects on its own, without limit.
pub async fn connect(config: &Config, name: &str) -> Result<Client, Error> {
    let url = config.nats_url.clone();
    // `nats_url` may list several servers (a cluster's nodes), comma-separated: the client
    // tries each, at start-up and on every reconnect.
    let servers = server_addrs(&url)?;
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let client = loop {
        let options = options(&config.nats)
            .await?
            .name(name)
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                match event {
                    Event::Connected => info!("nats connected"),
                    Event::Disconnected => warn!("nats disconnected"),
                    other => info!(event = %other, "nats event"),
                }
            });
        match options.connect(servers.as_slice()).await {
            Ok(client) => break client,
            // Wrong credentials do not get better by waiting.
            Err(e) if e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation => {
                return Err(Error::Connect {
                    url,
                    reason: format!(
                        "{e}: the server refused this process's credentials (nats.credentials)"
                    ),
                });
            }
            Err(e) if started.elapsed() + delay < config.nats_connect_timeout => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "nats not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(Error::Connect {
                    url,
                    reason: e.to_string(),
                });
            }
        }
    };
    check_version(&client, &url)?;
    if !client.server_info().auth_required && !config.nats.allow_unauthenticated {
        return Err(Error::Unauthenticated { url });
    }
    Ok(client)
}

/// Waits until `client` is connected. A pull request made while the connection is down is
/// sent when it comes back, and what the server delivers to it can go unseen until the
/// consumer's ack wait runs out (observed after a server restart: a start delivered once,
/// never handled, for 30 s); pulling only on a live connection avoids that.
pub async fn connected(client: &Client) {
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The servers of a `nats_url`: one URL, or several separated by commas.
pub fn server_addrs(url: &str) -> Result<Vec<ServerAddr>, Error> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServerAddr>().map_err(|e| Error::Connect {
                url: url.to_owned(),
                reason: format!("{s:?} is not a server URL: {e}"),
            })
        })
        .collect()
}

/// Refuses a server older than [`MIN_SERVER_VERSION`].
pub fn check_version(client: &Client, url: &str) -> Result<Version, Error> {
    let found = client.server_info().version;
    match Version::parse(&found) {
        Some(v) if v >= MIN_SERVER_VERSION => Ok(v),
        _ => Err(Error::UnsupportedServer {
            url: url.to_owned(),
            found,
            required: MIN_SERVER_VERSION.to_string(),
        }),
    }
}
