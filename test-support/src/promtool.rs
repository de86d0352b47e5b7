//! Prometheus's `promtool`, for tests that check the shipped rules, scrape config and the
//! processes' `/metrics` output.

use std::path::PathBuf;
use std::process::Command;

use crate::util::{find_on_path, is_executable};

const INSTALL_HINT: &str = "run `deploy/local/test.sh` (its ensure_promtool unpacks promtool \
     from Debian's `prometheus` package into .switchyard/promtool and exports \
     SWITCHYARD_PROMTOOL), or set SWITCHYARD_PROMTOOL to a promtool binary";

/// Path of `promtool`: `$SWITCHYARD_PROMTOOL`; outside CI also
/// `.switchyard/promtool/usr/bin/promtool` in the workspace, else `promtool` on `$PATH`.
///
/// # Panics
///
/// In CI (`$CI` set) when `$SWITCHYARD_PROMTOOL` is not set, so the CI run cannot pass by
/// picking up some other promtool; anywhere when none is found or it does not run. The
/// message says how to install one.
pub fn promtool_binary() -> PathBuf {
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let (binary, source) = match std::env::var_os("SWITCHYARD_PROMTOOL").filter(|v| !v.is_empty()) {
        Some(path) => (PathBuf::from(path), "$SWITCHYARD_PROMTOOL"),
        None if in_ci => panic!(
            "SWITCHYARD_PROMTOOL is not set, and CI must check the Prometheus rules and every \
             process's /metrics with promtool; {INSTALL_HINT}"
        ),
        None => {
            let unpacked =
                crate::nats::workspace_root().join(".switchyard/promtool/usr/bin/promtool");
            if is_executable(&unpacked) {
                (unpacked, "the workspace's .switchyard/promtool")
            } else if let Some(on_path) = find_on_path("promtool") {
                (on_path, "$PATH")
            } else {
                panic!(
                    "no promtool found (looked at $SWITCHYARD_PROMTOOL, {}, and $PATH); {INSTALL_HINT}",
                    unpacked.display()
                );
            }
        }
    };
    match Command::new(&binary).arg("--version").output() {
        Ok(out) if out.status.success() => binary,
        Ok(out) => panic!(
            "promtool {} (from {source}) failed on --version ({}): {}; {INSTALL_HINT}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "promtool {} (from {source}) does not run: {e}; {INSTALL_HINT}",
            binary.display()
        ),
    }
}
