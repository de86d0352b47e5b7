//! The one test harness of the workspace, on top of `switchyard-test-support` (which starts
//! the real nats-server and Postgres): a provisioned bus, the orchestrator and workers run in
//! the test's process, and workflows registered, started and followed the way a user or an
//! outside service does — over the bus, through the engine's service contract.
//!
//! Dev-only: crates take it as a dev-dependency, for their `tests/`. Unit tests inside a
//! crate's `src/` must not use it where the harness depends on that crate (the gateway, the
//! orchestrator, the test worker), or they would see a second copy of the crate's types.

pub mod bus;
pub mod components;
pub mod engine;
pub mod jobs;
pub mod metrics;

pub use bus::{Bus, bus, round_trip};
pub use components::{Components, orchestrator_options, worker_config};
pub use switchyard_test_support::{NatsServer, Role as BusRole, TestDatabase, database, free_port};

/// The tenant tests act as, unless they name another.
pub const TENANT: &str = "acme";
