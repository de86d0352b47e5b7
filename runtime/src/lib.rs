//! What every Switchyard process shares: layered configuration validated at start-up,
//! telemetry, the NATS connection (with the server version check), Prometheus metrics with a
//! small `/metrics` + `/healthz` HTTP server, graceful shutdown, and the worker loop that
//! gives every worker kind at-least-once processing, retries, dead-lettering and discovery.
//!
//! This crate holds no workflow or product logic and never names a subject itself: subjects,
//! streams and headers come from `switchyard-proto`.

pub mod audit;
pub mod breaker;
pub mod config;
#[cfg(feature = "database")]
pub mod database;
pub mod dlq;
pub mod error;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod net;
pub mod objects;
pub mod process;
pub mod shutdown;
pub mod signature;
pub mod sqlstate;
pub mod telemetry;
pub mod worker;

pub use config::Config;
pub use error::Error;
pub use worker::{Handler, InputError, JobContext, JobFailure, JobInput, OperationInfo, Worker};
