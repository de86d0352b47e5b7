//! Connecting to NATS: retry on the first connect, reconnect forever afterwards, and refuse a
//! server older than the version Switchyard is built for.

use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};
use tracing::{info, warn};

use crate::{Config, Error};

/// The oldest nats-server Switchyard supports. 2.9 silently ignores multiple consumer filter
/// subjects and cannot create KV buckets the way async-nats 0.51 asks.
pub const MIN_SERVER_VERSION: Version = Version(2, 10, 0);

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses `2.10.4`, `v2.11.0-beta.1` and the like; `None` when it has no major.minor.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text
            .trim()
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some(Version(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(Version::parse("2.15.1"), Some(Version(2, 15, 1)));
        assert_eq!(Version::parse("v2.11.0-beta.1"), Some(Version(2, 11, 0)));
        assert_eq!(Version::parse("2.10"), Some(Version(2, 10, 0)));
        assert_eq!(Version::parse("garbage"), None);
        assert!(Version::parse("2.9.10").unwrap() < MIN_SERVER_VERSION);
        assert!(Version::parse("2.10.0").unwrap() >= MIN_SERVER_VERSION);
    }
}
