//! Switchyard's JetStream objects — the streams, the `WF_STATE` KV bucket and the durable pull
//! consumers — declared in `bus.toml` ([`BusConfig`]), created or brought back in line with
//! [`apply`] (idempotent; it reports per object what it created, updated, left alone or could
//! not change in place), and inspected with [`status`]. The NATS server configurations for one
//! node and a 3-node cluster live beside it in `nats/`.
//!
//! This crate must not publish, consume or delete messages, and must never delete or recreate
//! a stream or consumer to fix drift: that would lose accepted work, so it is left to an
//! operator. Names and subjects come from `switchyard-proto`; none is spelled here.

mod apply;
mod config;
mod status;

use std::path::PathBuf;

pub use apply::{
    ApplyOptions, ApplyReport, FieldChange, ObjectKind, ObjectReport, Outcome, apply, ensure_kind,
};
pub use config::{
    AckPolicy, BusConfig, ByteSize, ConsumerSettings, ConsumerSpec, Consumers, DEFAULT_TOML,
    DeliverPolicy, Discard, Jobs, KvBuckets, KvSettings, KvSpec, Retention, Storage,
    StreamSettings, StreamSpec, Streams,
};
pub use status::{
    ConsumerCounts, ConsumerStatus, DlqStatus, StatusReport, StreamCounts, StreamStatus, status,
};

/// What can go wrong reading the definitions or applying them to a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The definitions file cannot be read; fix the path or its permissions.
    #[error("cannot read bus config {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The definitions are not valid TOML or have unknown or mistyped keys.
    #[error("{origin}: {error}")]
    Parse {
        origin: String,
        error: toml::de::Error,
    },
    /// The definitions parse but make no sense; every problem names its key and the fix.
    #[error("{origin} has {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
    /// The server does not answer JetStream requests: it was started without JetStream, or
    /// this account has none.
    #[error("jetstream is not available on the server: {error}")]
    JetStreamUnavailable { error: async_nats::Error },
    /// The server is older than [`switchyard_proto::server::MIN_SERVER_VERSION`]; upgrade it.
    #[error("nats server {version} is not supported; switchyard needs {minimum} or newer")]
    UnsupportedServer {
        version: String,
        minimum: switchyard_proto::server::Version,
    },
    /// The server refused or failed a request about one object.
    #[error("{action} {object}: {error}")]
    Server {
        action: &'static str,
        object: String,
        error: async_nats::Error,
    },
}
