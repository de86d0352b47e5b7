//! What the tests that start Switchyard the way a user does share: the `switchyard` binary run
//! as commands and as long-running processes, each with its log in the test's directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use switchyard_test_support::free_port;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate lives one level below the workspace root")
        .to_path_buf()
}

/// A command's stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One running Switchyard process; killed on drop, log kept in the test's directory.
pub struct Process {
    pub name: &'static str,
    pub child: Child,
    /// `/metrics` (the gateway's HTTP address with `/metrics`).
    pub metrics_url: String,
    pub log: PathBuf,
}

impl Process {
    /// The process's whole log.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the process's log.
    pub fn log(&self) -> String {
        let log = self.full_log();
        let start = log.len().saturating_sub(6000);
        let start = (start..log.len())
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        log[start..].to_owned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every process and command of one run shares.
pub struct Run {
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl Run {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(root())
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run switchyard");
        assert!(out.status.success(), "switchyard {args:?}: {}", text(&out));
        out
    }

    pub fn spawn(&self, name: &'static str, args: &[&str], extra: &[(&str, String)]) -> Process {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let port = free_port();
        let mut cmd = self.command(args);
        let metrics_url = if name == "gateway" {
            cmd.env("SWITCHYARD_HTTP_ADDR", format!("127.0.0.1:{port}"));
            format!("http://127.0.0.1:{port}/metrics")
        } else {
            cmd.env("SWITCHYARD_METRICS_ADDR", format!("127.0.0.1:{port}"));
            format!("http://127.0.0.1:{port}/metrics")
        };
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start switchyard");
        Process {
            name,
            child,
            metrics_url,
            log,
        }
    }
}
