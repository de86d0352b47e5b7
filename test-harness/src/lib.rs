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

/// The project's Python interpreter, checked to import `module`: `SWITCHYARD_PYTHON` (set by
/// `deploy/local/test.sh`), else the project's venv. Panics naming what to run when it cannot.
pub fn python_with(module: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("SWITCHYARD_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join(".switchyard/venv/bin/python3"));
    let imports = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        imports,
        "{} cannot import {module}; run deploy/local/test.sh (it installs the Python packages the \
         tests use), or set SWITCHYARD_PYTHON",
        python.display()
    );
    python
}
