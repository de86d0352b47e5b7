//! `suite`: the standard benchmark run behind `make bench` — every scenario at its standard
//! size, each on its own fresh nats-server, then one summary table of the figures the README
//! quotes, with their references (the bus's raw rate, Celery, one replica), ratios and targets.
//!
//! A scenario that loses work (or fails to run) is reported as failed and makes the suite
//! exit non-zero; the others still run so one run shows everything.

use std::{fmt::Write as _, path::PathBuf, time::Instant};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{
    celery::Reference,
    cli::{self, EngineBinaries, Fsync},
    report::{self, write_json},
};

/// `suite` flags.
#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// The Celery reference measured in this run (`loadtest/celery/bench.py --out ...`); its
    /// chain count is used for Switchyard's throughput runs too.
    #[arg(long)]
    pub celery: Option<PathBuf>,
    /// Chains per throughput run when there is no Celery reference.
    #[arg(long, default_value_t = 2000)]
    pub chains: usize,
    /// 1-step workflows of the `nats-direct` run.
    #[arg(long, default_value_t = 20_000)]
    pub workflows: usize,
    /// Workflows per chain in the 100/s latency runs.
    #[arg(long, default_value_t = 1500)]
    pub latency_workflows: usize,
    /// Seconds of measured HTTP load.
    #[arg(long, default_value_t = 10)]
    pub http_seconds: u64,
    #[arg(long, default_value = "target/release/switchyard-gateway")]
    pub gateway: PathBuf,
    #[command(flatten)]
    pub engine: EngineBinaries,
    /// Where every result, chart and the summary go.
    #[arg(long, default_value = "loadtest/results")]
    pub results: PathBuf,
}

/// One line of the summary table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub measure: String,
    /// The measured value in `unit`; `None` when its scenario failed.
    pub value: Option<f64>,
    pub unit: String,
    /// What it is compared with, e.g. "raw publish 150,540/s".
    pub reference: String,
    /// value / reference value.
    pub ratio: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

/// The machine the suite ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub nats_server: String,
}

/// Everything `suite` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub machine: Machine,
    /// The Celery reference of this run, if measured.
    pub celery: Option<Reference>,
    pub rows: Vec<Row>,
    /// Scenarios that refused to report or could not run.
    pub failures: Vec<String>,
    pub duration_s: f64,
}

fn out(args: &SuiteArgs, name: &str) -> PathBuf {
    args.results.join(name)
}

/// Keeps a scenario's figures, or records why there are none.
fn step<T>(name: &str, result: anyhow::Result<T>, failures: &mut Vec<String>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("{name}: FAILED: {e:#}");
            failures.push(format!("{name}: {e:#}"));
            None
        }
    }
}

fn banner(name: &str) {
    println!("\n=== {name} ===");
}

/// Runs the suite; `Ok(summary)` even when scenarios failed (see [`Summary::failures`]).
pub async fn run(args: SuiteArgs) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut failures = Vec::new();
    let celery = match &args.celery {
        Some(path) => step("celery", Reference::read(path), &mut failures),
        None => None,
    };
    let chains = celery
        .as_ref()
        .and_then(|c| c.runs.first())
        .map_or(args.chains, |r| r.chains);

    banner("raw");
    let raw = step(
        "raw",
        cli::raw(cli::RawArgs {
            messages: 50_000,
            fsync: Fsync::Both,
            out: out(&args, "raw.json"),
        })
        .await,
        &mut failures,
    );

    banner("nats-direct");
    let direct = step(
        "nats-direct",
        cli::nats_direct(cli::NatsDirectArgs {
            workflows: args.workflows,
            always_workflows: Some(args.workflows / 4),
            fsync: Fsync::Both,
            engine: args.engine.clone(),
            out: out(&args, "nats-direct.json"),
        })
        .await,
        &mut failures,
    );

    banner("e2e at 100 workflows/s");
    let latency = step(
        "e2e (100/s)",
        cli::e2e(cli::E2eArgs {
            steps: vec![1, 3],
            workflows: args.latency_workflows,
            rate: 100.0,
            fsync: Fsync::Default,
            engine: args.engine.clone(),
            out: out(&args, "e2e.json"),
        })
        .await,
        &mut failures,
    );

    banner(&format!("e2e at full speed, {chains} chains (as Celery)"));
    let throughput = step(
        "e2e (full speed)",
        cli::e2e(cli::E2eArgs {
            steps: vec![1, 3],
            workflows: chains,
            rate: 0.0,
            fsync: Fsync::Default,
            engine: args.engine.clone(),
            out: out(&args, "e2e-max.json"),
        })
        .await,
        &mut failures,
    );

    banner("http-trigger");
    let http = step(
        "http-trigger",
        cli::http_trigger(cli::HttpTriggerArgs {
            connections: 64,
            seconds: args.http_seconds,
            gateway: args.gateway.clone(),
            engine: args.engine.clone(),
            out: out(&args, "http-trigger.json"),
        })
        .await,
        &mut failures,
    );

    banner("scale");
    let scale = step(
        "scale",
        cli::scale(cli::ScaleArgs {
            replicas: vec![1, 2, 4],
            job_ms: 50,
            concurrency: 8,
            per_replica: 800,
            engine: args.engine.clone(),
            out: out(&args, "scale.json"),
        })
        .await,
        &mut failures,
    );

    banner("python-worker");
    let python = step(
        "python-worker",
        crate::python_worker::run(
            &args.engine.worker,
            &args.engine.orchestrator,
            &crate::python_worker::default_python(),
            5000,
            64,
        )
        .await
        .and_then(|m| {
            println!("{}", crate::python_worker::describe(&m));
            report::write_json(&out(&args, "python-worker.json"), &m)?;
            Ok(m)
        }),
        &mut failures,
    );

    banner("mcp-overhead");
    let binaries = crate::mcp::Binaries {
        gateway: &args.gateway,
        orchestrator: &args.engine.orchestrator,
        worker: &args.engine.worker,
    };
    let _mcp = step(
        "mcp-overhead",
        crate::mcp::run(binaries, 1000).await.and_then(|m| {
            println!("{}", crate::mcp::describe(&m));
            report::write_json(&out(&args, "mcp-overhead.json"), &m)?;
            Ok(m)
        }),
        &mut failures,
    );

    // The rows.
    let mut rows = Vec::new();
    let floor = raw.as_ref().and_then(|r| r.iter().find(|r| !r.sync_always));
    rows.push(Row {
        measure: "raw JetStream publish/s, pipelined (the floor)".into(),
        value: floor.map(|r| r.publish_per_s),
        unit: "/s".into(),
        reference: floor.map_or_else(String::new, |r| {
            format!("consume+ack {}/s", thousands(r.consume_ack_per_s))
        }),
        ratio: None,
        target: String::new(),
        met: None,
    });
    let default_fsync = direct
        .as_ref()
        .and_then(|d| d.iter().find(|d| !d.run.sync_always));
    let one_step = default_fsync.map(|d| d.run.completed_per_s);
    rows.push(Row {
        measure: format!("1-step workflows/s (nats-direct, {})", args.workflows),
        value: one_step,
        unit: "/s".into(),
        reference: default_fsync.map_or_else(String::new, |d| {
            format!("raw publish {}/s", thousands(d.raw_publish_per_s))
        }),
        ratio: default_fsync.map(|d| d.ratio_to_raw),
        target: "≥ 3,000/s".into(),
        met: one_step.map(|v| v >= 3000.0),
    });
    let durable = direct
        .as_ref()
        .and_then(|d| d.iter().find(|d| d.run.sync_always));
    rows.push(Row {
        measure: format!(
            "1-step workflows/s, sync_interval: always ({})",
            args.workflows / 4
        ),
        value: durable.map(|d| d.run.completed_per_s),
        unit: "/s".into(),
        reference: durable.map_or_else(String::new, |d| {
            format!("raw publish {}/s", thousands(d.raw_publish_per_s))
        }),
        ratio: durable.map(|d| d.ratio_to_raw),
        target: String::new(),
        met: None,
    });
    let three = latency
        .as_ref()
        .and_then(|rows| rows.iter().find(|r| r.steps == 3));
    let p50 = three.map(|r| r.latency.p50_ms);
    let p99 = three.map(|r| r.latency.p99_ms);
    rows.push(Row {
        measure: "3-step p50, start → completed at 100/s".into(),
        value: p50,
        unit: "ms".into(),
        reference: String::new(),
        ratio: None,
        target: "< 15 ms".into(),
        met: p50.map(|v| v < 15.0),
    });
    rows.push(Row {
        measure: "3-step p99, start → completed at 100/s".into(),
        value: p99,
        unit: "ms".into(),
        reference: String::new(),
        ratio: None,
        target: "< 50 ms".into(),
        met: p99.map(|v| v < 50.0),
    });
    let triggers = http.as_ref().map(|h| h.triggers_per_s);
    let http_raw = http.as_ref().map(|h| h.raw_pipelined_publish_per_s);
    rows.push(Row {
        measure: "gateway triggers/s (64 connections)".into(),
        value: triggers,
        unit: "/s".into(),
        reference: http_raw.map_or_else(String::new, |r| format!("raw publish {}/s", thousands(r))),
        ratio: ratio(triggers, http_raw),
        target: "≥ 20,000/s".into(),
        met: triggers.map(|v| v >= 20_000.0),
    });
    let http_p99 = http.as_ref().map(|h| h.p99_ms);
    let http_errors: Option<u64> = http.as_ref().map(|h| h.errors.values().sum());
    rows.push(Row {
        measure: "gateway trigger p99".into(),
        value: http_p99,
        unit: "ms".into(),
        reference: http_errors.map_or_else(String::new, |e| format!("{e} non-202 answers")),
        ratio: None,
        target: "< 25 ms".into(),
        met: http_p99.map(|v| v < 25.0),
    });
    for steps in [3, 1] {
        let ours = throughput
            .as_ref()
            .and_then(|rows| rows.iter().find(|r| r.steps == steps))
            .map(|r| r.completed_per_s);
        let theirs = celery
            .as_ref()
            .and_then(|c| c.run(steps))
            .map(|r| r.chains_per_s);
        rows.push(Row {
            measure: format!("{steps}-step chains/s, Switchyard vs Celery ({chains} chains)"),
            value: ours,
            unit: "/s".into(),
            reference: theirs.map_or_else(
                || "Celery not run".into(),
                |c| format!("Celery {}/s", thousands(c)),
            ),
            ratio: ratio(ours, theirs),
            target: if steps == 3 { "≥ 5×" } else { "" }.into(),
            met: if steps == 3 {
                ratio(ours, theirs).map(|r| r >= 5.0)
            } else {
                None
            },
        });
    }
    let first = scale
        .as_ref()
        .and_then(|s| s.first())
        .map(|r| r.completed_per_s);
    let four = scale
        .as_ref()
        .and_then(|s| s.iter().find(|r| r.replicas == 4))
        .map(|r| r.completed_per_s);
    rows.push(Row {
        measure: "50 ms jobs, 4 replicas vs 1 (8 at once each)".into(),
        value: four,
        unit: "/s".into(),
        reference: first.map_or_else(String::new, |f| format!("1 replica {}/s", thousands(f))),
        ratio: ratio(four, first),
        target: "≥ 3.5×".into(),
        met: ratio(four, first).map(|r| r >= 3.5),
    });

    rows.push(Row {
        measure: "no-op jobs/s, one Python SDK replica (64 at once)".into(),
        value: python.as_ref().map(|p| p.python_jobs_per_s),
        unit: "/s".into(),
        reference: python.as_ref().map_or_else(String::new, |p| {
            format!("Rust test replica {}/s", thousands(p.rust_jobs_per_s))
        }),
        ratio: python.as_ref().map(|p| p.ratio),
        target: String::new(),
        met: None,
    });
    rows.push(Row {
        measure: "idle RSS of a Python SDK replica".into(),
        value: python
            .as_ref()
            .map(|p| p.python_idle_rss_kib as f64 / 1024.0),
        unit: "MiB".into(),
        reference: python.as_ref().map_or_else(String::new, |p| {
            format!(
                "Rust test replica {:.1} MiB",
                p.rust_idle_rss_kib as f64 / 1024.0
            )
        }),
        ratio: None,
        target: String::new(),
        met: None,
    });

    // The comparison chart.
    if let (Some(t), Some(c)) = (&throughput, &celery) {
        let mut bars = Vec::new();
        for steps in [1, 3] {
            if let Some(r) = t.iter().find(|r| r.steps == steps) {
                bars.push((format!("Switchyard {steps}-step"), r.completed_per_s));
            }
            if let Some(r) = c.run(steps) {
                bars.push((format!("Celery {steps}-step"), r.chains_per_s));
            }
        }
        let chart = out(&args, "celery-comparison.svg");
        step(
            "chart",
            report::bar_chart(
                &chart,
                &format!("chains completed per second, {chains} chains, same machine"),
                "chains/s",
                &bars,
            )
            .map_err(Into::into),
            &mut failures,
        );
    }

    let summary = Summary {
        machine: machine(),
        celery,
        rows,
        failures,
        duration_s: started.elapsed().as_secs_f64(),
    };
    println!("\n{}", table(&summary));
    write_json(&out(&args, "summary.json"), &summary)?;
    let md = out(&args, "summary.md");
    std::fs::write(&md, markdown(&summary))?;
    println!("written to {}", md.display());
    Ok(summary)
}

fn ratio(value: Option<f64>, reference: Option<f64>) -> Option<f64> {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 => Some(v / r),
        _ => None,
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn value_text(row: &Row) -> String {
    match row.value {
        None => "FAILED".into(),
        Some(v) if row.unit == "ms" => format!("{v:.2} ms"),
        Some(v) => format!("{}{}", thousands(v), row.unit),
    }
}

fn ratio_text(row: &Row) -> String {
    match row.ratio {
        None => String::new(),
        Some(r) if r < 1.0 => format!("{r:.3}"),
        Some(r) => format!("{r:.2}×"),
    }
}

fn met_text(row: &Row) -> &'static str {
    match row.met {
        Some(true) => "yes",
        Some(false) => "no",
        None => "",
    }
}

/// The summary as a plain-text table.
pub fn table(summary: &Summary) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<58} {:>12} {:<26} {:>8} {:<11} {:<4}",
        "measure", "measured", "reference", "ratio", "target", "met"
    );
    for r in &summary.rows {
        let _ = writeln!(
            s,
            "{:<58} {:>12} {:<26} {:>8} {:<11} {:<4}",
            r.measure,
            value_text(r),
            r.reference,
            ratio_text(r),
            r.target,
            met_text(r)
        );
    }
    let m = &summary.machine;
    let _ = writeln!(
        s,
        "\nmachine: {} ({} cores, {:.1} GiB), Linux {}, nats-server {}; suite took {:.0} s",
        m.cpu, m.cores, m.memory_gib, m.kernel, m.nats_server, summary.duration_s
    );
    if let Some(c) = &summary.celery {
        let _ = writeln!(
            s,
            "Celery {} (prefork pool, {} worker processes), Redis {} as broker and result backend",
            c.celery_version, c.concurrency, c.redis_version
        );
    }
    if summary.failures.is_empty() {
        let _ = writeln!(
            s,
            "every scenario verified that all accepted work completed"
        );
    } else {
        for f in &summary.failures {
            let _ = writeln!(s, "FAILED {f}");
        }
    }
    s
}

/// The summary as a Markdown table, for the README.
pub fn markdown(summary: &Summary) -> String {
    let mut s = String::from(
        "| measure | measured | reference | ratio | target | met |\n|---|---|---|---|---|---|\n",
    );
    for r in &summary.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.measure,
            value_text(r),
            r.reference,
            ratio_text(r),
            r.target,
            met_text(r)
        );
    }
    s
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    let nats_server = switchyard_test_support::nats_server_version(
        &switchyard_test_support::nats_server_binary(),
    )
    .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        kernel,
        nats_server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(150_540.06), "150,540");
        assert_eq!(thousands(-1_234_567.0), "-1,234,567");
    }

    #[test]
    fn a_failed_scenario_shows_in_the_table() {
        let summary = Summary {
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                memory_gib: 4.0,
                kernel: "6".into(),
                nats_server: "2.15.1".into(),
            },
            celery: None,
            rows: vec![Row {
                measure: "50 ms jobs, 4 replicas vs 1".into(),
                value: None,
                unit: "/s".into(),
                reference: String::new(),
                ratio: None,
                target: "≥ 3.5×".into(),
                met: None,
            }],
            failures: vec!["scale: lost work".into()],
            duration_s: 1.0,
        };
        let t = table(&summary);
        assert!(
            t.contains("FAILED") && t.contains("FAILED scale: lost work"),
            "{t}"
        );
        assert!(markdown(&summary).contains("| 50 ms jobs, 4 replicas vs 1 | FAILED |"));
    }
}
