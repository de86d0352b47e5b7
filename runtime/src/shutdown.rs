//! Graceful shutdown: the first SIGTERM or Ctrl-C cancels the root token (components stop
//! taking work and finish what they hold); a second one exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code used when a second signal cuts shutdown short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token cancelled by the first SIGTERM/SIGINT; the second signal exits the process.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight work (signal again to exit now)");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
