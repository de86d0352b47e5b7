//! The `test` worker kind: `test.echo`, `test.sleep` and `test.fail`, for tests and
//! benchmarks of the worker loop, the engine and the bus. It is kept apart from the product
//! workers and does nothing useful on purpose; never route product workflows to it.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_proto::Job;
use switchyard_runtime::JobInput as _;
use switchyard_runtime::{Handler, JobContext, JobFailure, OperationInfo};

/// The configuration sections this component reads and validates, besides the common ones.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 1] = {
    use switchyard_runtime::config::Section;
    [Section::Worker]
};

/// The handler of the `test` kind.
#[derive(Debug, Clone, Default)]
pub struct TestWorker;

/// `test.sleep` input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sleep {
    /// How long to take, in milliseconds.
    ms: u64,
    /// Usage to report, in the meter [`TEST_UNITS`], once per job however often it runs.
    #[serde(default)]
    units: Option<f64>,
}

/// The meter `test.sleep` reports its `units` in.
pub const TEST_UNITS: &str = "test_units";

/// `test.fail` input: fail in `mode` on the first `times` attempts (deliveries, for
/// `unavailable`, which uses no attempts), or in the instance's first `runs` runs, then
/// succeed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    mode: FailMode,
    /// Attempts that fail before one succeeds; absent means every attempt fails.
    times: Option<u32>,
    /// Fail while the job belongs to one of its instance's first `runs` runs.
    runs: Option<u32>,
    /// Asked-for lower bound on the retry delay, like an HTTP `Retry-After`.
    retry_after_ms: Option<u64>,
    /// What an earlier delivery recorded as the result of its effect ([`Handler::recorded`]).
    recorded: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FailMode {
    Retryable,
    Permanent,
    InvalidInput,
    /// Infrastructure the job needs is unavailable.
    Unavailable,
}

impl Handler for TestWorker {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn operations(&self) -> Vec<OperationInfo> {
        OperationInfo::of_kind("test")
    }

    async fn handle(&self, ctx: JobContext, job: &Job) -> Result<Value, JobFailure> {
        match job.operation.as_str() {
            "test.echo" => {
                if job.input.is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_slice(&job.input)
                    .map_err(|e| JobFailure::invalid_input("input", e.to_string()))
            }
            "test.sleep" => {
                let Sleep { ms, units } = job.input()?;
                if let Some(units) = units {
                    ctx.usage_once("sleep", TEST_UNITS, units, "unit", Default::default())
                        .await
                        .map_err(|e| JobFailure::unavailable("the bus", e.to_string()))?;
                }
                let _ = ctx
                    .event(
                        "sleeping",
                        json!({ "ms": ms, "worker_id": &*ctx.worker_id, "attempt": ctx.attempt }),
                    )
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = ctx.cancel.cancelled() => return Err(JobFailure::retryable("cancelled while sleeping")),
                }
                Ok(
                    json!({ "slept_ms": ms, "worker_id": &*ctx.worker_id, "delivery": ctx.delivery }),
                )
            }
            "test.fail" => {
                let Fail {
                    mode,
                    times,
                    runs,
                    retry_after_ms,
                    ..
                } = job.input()?;
                let _ = ctx
                    .event(
                        "attempt",
                        json!({ "attempt": ctx.attempt, "at_ms": switchyard_proto::now_ms() }),
                    )
                    .await;
                let tries = match mode {
                    FailMode::Unavailable => ctx.delivery,
                    _ => ctx.attempt,
                };
                let fixed = runs.is_some_and(|r| switchyard_proto::job_run(&job.job_id) >= r);
                if fixed || times.is_some_and(|t| tries > t) {
                    return Ok(json!({ "attempts": ctx.attempt }));
                }
                let message = format!("failing on purpose (attempt {})", ctx.attempt);
                Err(match mode {
                    FailMode::Retryable => JobFailure::Retryable {
                        message,
                        retry_after: retry_after_ms.map(Duration::from_millis),
                    },
                    FailMode::Permanent => JobFailure::permanent(message),
                    FailMode::InvalidInput => JobFailure::invalid_input("mode", message),
                    FailMode::Unavailable => JobFailure::unavailable("the database", message),
                })
            }
            other => Err(JobFailure::permanent(format!(
                "unknown operation {other:?}"
            ))),
        }
    }

    async fn recorded(&self, job: &Job) -> Option<Value> {
        if job.operation != "test.fail" {
            return None;
        }
        job.input::<Fail>().ok()?.recorded
    }
}
