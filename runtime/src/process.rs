//! Running one worker replica as a process: connect, serve `/metrics` and `/healthz`, consume
//! until the shutdown token fires, drain the connection. A worker binary's `main` is config,
//! telemetry and a call to [`run_worker`].

use prometheus::Registry;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{Config, Error, Handler, Worker, http, nats};

/// Runs `handler` as a worker replica until `shutdown` is cancelled and in-flight jobs are done.
pub async fn run_worker<H: Handler>(
    config: Config,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let kind = handler.kind();
    let client = nats::connect(&config, &format!("switchyard-{kind}")).await?;
    let registry = Registry::new();
    let worker = Worker::new(client.clone(), &config, handler, &registry)?;
    let http_stop = CancellationToken::new();
    let addr = http::serve(
        config.metrics_addr,
        registry,
        client.clone(),
        http_stop.clone(),
    )
    .await?;
    info!(kind, metrics_addr = %addr, "serving /metrics and /healthz");
    let result = worker.run(shutdown).await;
    http_stop.cancel();
    if let Err(e) = client.drain().await {
        tracing::warn!(error = %e, "cannot drain the nats connection");
    }
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
