//! The `switchyard` command: applies and inspects the bus definitions, runs worker replicas,
//! runs the orchestrator, registers and runs workflows, prints the effective configuration,
//! and runs the local demo. Thin glue over the library
//! crates; it holds no logic another process would need.

pub mod demo;
pub mod dlq;
pub mod registry;
pub mod workflow;
