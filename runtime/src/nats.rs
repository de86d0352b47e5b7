//! Connecting to NATS: retry on the first connect, reconnect forever afterwards, and refuse a
//! server older than the version Switchyard is built for.

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};
use tracing::{info, warn};

use crate::{Config, Error};

pub use switchyard_proto::server::{MIN_SERVER_VERSION, Version};

/// Connects as `name`, retrying the first connection for `nats_connect_timeout`, then checks
/// the server version. After that the client reconnects on its own, without limit.
pub async fn connect(config: &Config, name: &str) -> Result<Client, Error> {
    let url = config.nats_url.clone();
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let client = loop {
        let options = ConnectOptions::new()
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
        match options.connect(url.as_str()).await {
            Ok(client) => break client,
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
    Ok(client)
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
