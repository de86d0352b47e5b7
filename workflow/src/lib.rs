//! Workflow definitions: the YAML format, its parser, the validator that checks a definition
//! against the operation catalog, the templating of step inputs, and the registry of
//! registered definitions (the `WF_DEFINITIONS` KV bucket mirrored in memory) and of the
//! operations worker kinds declared at run time (`WF_OPERATIONS`).
//!
//! It runs nothing: the engine (`switchyard-orchestrator`) executes definitions, and the
//! gateway, the CLI and the load tests read and check them. Depending on this crate must never
//! pull in the engine.

mod bucket;
pub mod definition;
pub mod operations;
pub mod store;

pub use definition::{Definition, Problem, Problems, RenderLimits, ValidateOptions};
pub use operations::Operations;
pub use store::{Entry, PutError, Scope, Store};

/// Why reading or writing the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {reason}")]
    Bus {
        action: &'static str,
        reason: String,
    },
    #[error("workflow definition: {0}")]
    Definition(String),
}

impl Error {
    pub(crate) fn bus(action: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Bus {
            action,
            reason: err.to_string(),
        }
    }
}
