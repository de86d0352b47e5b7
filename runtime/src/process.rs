//! Running one worker replica as a process: connect, serve `/metrics` and `/healthz`, consume
//! until the shutdown token fires, drain the connection. A worker binary's `main` is config,
//! telemetry and a call to [`run_worker`].

use prometheus::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{Config, Error, Handler, Worker, http, nats};

use std::future::Future;

/// Runs one worker replica as the process `name` until `shutdown` is cancelled and in-flight
/// jobs are done: [`run_process`], then the handler `build` makes — its metrics registered in
/// the process's registry, beside the worker loop's — served by one [`Worker`] (its stream
/// and its request/reply endpoints). The one shape every worker kind runs in.
pub async fn run_worker<H, B, Fut, E>(
    config: &Config,
    name: &str,
    build: B,
    shutdown: CancellationToken,
) -> Result<(), E>
where
    H: Handler,
    B: FnOnce(Registry) -> Fut,
    Fut: Future<Output = Result<H, E>>,
    E: From<Error>,
{
    let worker_config = config.clone();
    run_process(config, name, |client, registry| async move {
        let handler = build(registry.clone()).await?;
        Worker::new(client, &worker_config, handler, &registry)?
            .run(shutdown)
            .await?;
        Ok(())
    })
    .await
}

/// The frame of every Switchyard process: connect to NATS as `name`, serve `/metrics` (from the
/// registry `body` registers its metrics in) and `/healthz`, run `body` to its end, then stop
/// serving, drain the connection and flush the spans not yet exported.
pub async fn run_process<F, Fut, E>(config: &Config, name: &str, body: F) -> Result<(), E>
where
    F: FnOnce(async_nats::Client, Registry) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<Error>,
{
    let client = nats::connect(config, name).await?;
    let registry = Registry::new();
    let http_stop = CancellationToken::new();
    let addr = http::serve(
        config.metrics_addr,
        registry.clone(),
        client.clone(),
        http_stop.clone(),
    )
    .await?;
    info!(process = name, metrics_addr = %addr, "serving /metrics and /healthz");
    let result = body(client.clone(), registry).await;
    http_stop.cancel();
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "cannot drain the nats connection");
    }
    crate::telemetry::shutdown();
    result
}

/// Exit code for a configuration error.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code for any other start-up or run failure.
pub const EXIT_FAILURE: i32 = 1;

/// The exit code for an error, so that scripts can tell bad configuration apart.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Config(_) => EXIT_CONFIG,
        _ => EXIT_FAILURE,
    }
}
