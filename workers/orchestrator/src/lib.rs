//! The workflow engine. It consumes `WF_INBOX` (starts, job results, cancels, signals and its
//! own timers), keeps each instance's state in the `WF_STATE` KV bucket with compare-and-set,
//! and publishes jobs and events with deterministic ids. Definitions (format, validation,
//! registry) live in `switchyard-workflow`; this crate executes them.
//!
//! It runs on JetStream alone: no database, no scheduler process (timers are messages handed
//! back with a delayed redelivery; schedules are fired by the server's message scheduler), no
//! leader (any number of replicas). It never runs an
//! operation itself; workers do.

pub mod concurrency;
pub mod dlq;
pub mod engine;
pub mod error;
pub mod instance;
pub mod metrics;
pub mod registry;
pub mod schedules;
pub mod service;
mod shared;
pub mod transition;
pub mod triggers;

use std::collections::BTreeMap;

use switchyard_runtime::{Config, process};
use tokio_util::sync::CancellationToken;

pub use engine::{Options, Orchestrator};
pub use error::Error;

/// The configuration sections this component reads and validates, besides the common ones;
/// `worker.worker_id` names the replica.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 2] = {
    use switchyard_runtime::config::Section;
    [Section::Orchestrator, Section::Worker]
};

/// Reads the allow-listed variables (`orchestrator.template_env`) from `lookup`, so templates
/// can see them as `env.NAME`. Unset ones are left out.
pub fn template_env(
    config: &Config,
    lookup: impl Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    config
        .orchestrator
        .template_env
        .iter()
        .filter_map(|name| lookup(name).map(|v| (name.clone(), v)))
        .collect()
}

/// Runs one orchestrator replica as a process: connect, serve `/metrics` and `/healthz`,
/// consume until `shutdown`, drain.
pub async fn run(
    config: Config,
    env: BTreeMap<String, String>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let options = Options {
        concurrency: config.orchestrator.concurrency,
        env,
        replica_id: config.worker_id(),
        grace: config.shutdown_grace,
        max_deliveries: config.orchestrator.max_deliveries,
        replica_sweep: config.orchestrator.replica_sweep,
        limits: {
            let t = config.orchestrator.template_limits;
            switchyard_workflow::RenderLimits {
                value_bytes: t.value_bytes,
                output_bytes: t.output_bytes,
                step_input_bytes: t.step_input_bytes,
            }
        },
    };
    process::run_process(
        &config,
        "switchyard-orchestrator",
        |client, registry| async move {
            Orchestrator::new(client, options, &registry)
                .await?
                .run(shutdown)
                .await
        },
    )
    .await
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => switchyard_runtime::process::exit_code(e),
        _ => switchyard_runtime::process::EXIT_FAILURE,
    }
}
