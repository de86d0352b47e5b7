//! The command-line scenarios `raw`, `http-trigger`, `nats-direct`, `e2e` and `scale`: their
//! flags, and for each a table on stdout, JSON in `loadtest/results/` and an SVG chart beside
//! it.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::{
    gateway, raw,
    report::{self, chart_path, write_json},
    workflows::{self, Binaries, Chain, Engine, Setup},
};

/// Which fsync settings of the server to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// The server's default (flush every two minutes).
    Default,
    /// `jetstream { sync_interval: always }`: a PubAck means "on disk".
    Always,
    /// Both, one after the other.
    Both,
}

impl Fsync {
    /// The `sync_always` values to run.
    pub fn settings(self) -> Vec<bool> {
        match self {
            Fsync::Default => vec![false],
            Fsync::Always => vec![true],
            Fsync::Both => vec![false, true],
        }
    }
}

pub(crate) fn fsync_label(sync_always: bool) -> &'static str {
    if sync_always {
        "sync_interval: always"
    } else {
        "server default"
    }
}

/// The engine binaries (build them in release mode for real numbers).
#[derive(Debug, Clone, Args)]
pub struct EngineBinaries {
    #[arg(long, default_value = "target/release/switchyard-orchestrator")]
    pub orchestrator: PathBuf,
    #[arg(long, default_value = "target/release/switchyard-test-worker")]
    pub worker: PathBuf,
}

impl EngineBinaries {
    pub fn binaries(&self) -> Binaries<'_> {
        Binaries {
            orchestrator: &self.orchestrator,
            worker: &self.worker,
        }
    }
}

/// `raw` flags.
#[derive(Debug, Clone, Args)]
pub struct RawArgs {
    /// Messages published, then consumed, per fsync setting.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    #[arg(long, value_enum, default_value_t = Fsync::Both)]
    pub fsync: Fsync,
    #[arg(long, default_value = "loadtest/results/raw.json")]
    pub out: PathBuf,
}

pub async fn raw(args: RawArgs) -> anyhow::Result<Vec<raw::Measurement>> {
    let mut rows = Vec::new();
    for sync_always in args.fsync.settings() {
        rows.push(raw::run(args.messages, sync_always).await?);
    }
    print_raw(&rows);
    write_json(&args.out, &rows)?;
    let bars: Vec<(String, f64)> = rows
        .iter()
        .flat_map(|r| {
            let fsync = if r.sync_always { "always" } else { "default" };
            [
                (format!("publish, {fsync}"), r.publish_per_s),
                (format!("consume+ack, {fsync}"), r.consume_ack_per_s),
            ]
        })
        .collect();
    report::bar_chart(
        &chart_path(&args.out),
        "raw JetStream rates (messages/s)",
        "messages/s",
        &bars,
    )?;
    Ok(rows)
}

pub fn print_raw(rows: &[raw::Measurement]) {
    println!(
        "{:<22} {:>9} {:>7} {:>14} {:>16}",
        "fsync", "messages", "bytes", "publish/s", "consume+ack/s"
    );
    for r in rows {
        println!(
            "{:<22} {:>9} {:>7} {:>14.0} {:>16.0}",
            fsync_label(r.sync_always),
            r.messages,
            r.message_bytes,
            r.publish_per_s,
            r.consume_ack_per_s
        );
    }
}

/// `http-trigger` flags.
#[derive(Debug, Clone, Args)]
pub struct HttpTriggerArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of measured load, after a 2 s warm-up.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value = "target/release/switchyard-gateway")]
    pub gateway: PathBuf,
    #[command(flatten)]
    pub engine: EngineBinaries,
    #[arg(long, default_value = "loadtest/results/http-trigger.json")]
    pub out: PathBuf,
}

pub async fn http_trigger(args: HttpTriggerArgs) -> anyhow::Result<gateway::Measurement> {
    let r = gateway::run(
        gateway::Binaries {
            gateway: &args.gateway,
            orchestrator: &args.engine.orchestrator,
            worker: &args.engine.worker,
        },
        args.connections,
        std::time::Duration::from_secs(args.seconds),
    )
    .await?;
    print_http_trigger(&r);
    write_json(&args.out, &[&r])?;
    report::latency_chart(
        &chart_path(&args.out),
        &format!(
            "POST /workflows/trigger latency, {} connections",
            r.connections
        ),
        &[(format!("{:.0} triggers/s", r.triggers_per_s), &r.samples)],
    )?;
    Ok(r)
}

pub fn print_http_trigger(r: &gateway::Measurement) {
    println!(
        "{:>5} {:>11} {:>11} {:>11} {:>7} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10}",
        "conns",
        "raw pipe/s",
        "raw conc/s",
        "triggers/s",
        "errors",
        "p50",
        "p90",
        "p99",
        "CPU/trigger",
        "RSS MiB",
        "completed"
    );
    let errors: u64 = r.errors.values().sum();
    println!(
        "{:>5} {:>11.0} {:>11.0} {:>11.0} {:>7} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>8.1} µs {:>10.1} {:>10}",
        r.connections,
        r.raw_pipelined_publish_per_s,
        r.raw_concurrent_publish_per_s,
        r.triggers_per_s,
        errors,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.gateway_cpu_us_per_trigger,
        r.gateway_peak_rss_kib as f64 / 1024.0,
        r.completed
    );
    for (status, n) in &r.errors {
        println!("answered {status}: {n} times");
    }
}

/// `nats-direct` flags.
#[derive(Debug, Clone, Args)]
pub struct NatsDirectArgs {
    /// 1-step workflows per fsync setting.
    #[arg(long, default_value_t = 20_000)]
    pub workflows: usize,
    /// 1-step workflows of the `sync_interval: always` run, if not `--workflows` (that
    /// setting runs about a tenth as fast).
    #[arg(long)]
    pub always_workflows: Option<usize>,
    #[arg(long, value_enum, default_value_t = Fsync::Default)]
    pub fsync: Fsync,
    #[command(flatten)]
    pub engine: EngineBinaries,
    #[arg(long, default_value = "loadtest/results/nats-direct.json")]
    pub out: PathBuf,
}

pub async fn nats_direct(args: NatsDirectArgs) -> anyhow::Result<Vec<workflows::NatsDirect>> {
    let mut rows = Vec::new();
    for sync_always in args.fsync.settings() {
        let n = match args.always_workflows {
            Some(n) if sync_always => n,
            _ => args.workflows,
        };
        rows.push(workflows::nats_direct(args.engine.binaries(), n, sync_always).await?);
    }
    print_nats_direct(&rows);
    write_json(&args.out, &rows)?;
    let series: Vec<(String, &[f64])> = rows
        .iter()
        .map(|r| {
            (
                format!("{}, {}", fsync_label(r.run.sync_always), r.run.workflows),
                r.run.samples.as_slice(),
            )
        })
        .collect();
    report::latency_chart(
        &chart_path(&args.out),
        "1-step workflows published at full speed: start to completed",
        &series,
    )?;
    Ok(rows)
}

pub fn print_nats_direct(rows: &[workflows::NatsDirect]) {
    println!(
        "{:<22} {:>10} {:>13} {:>12} {:>13} {:>7} {:>10} {:>10}",
        "fsync", "workflows", "raw publish/s", "accepted/s", "completed/s", "ratio", "p50", "p99"
    );
    for r in rows {
        println!(
            "{:<22} {:>10} {:>13.0} {:>12.0} {:>13.0} {:>7.3} {:>7.1} ms {:>7.1} ms",
            fsync_label(r.run.sync_always),
            r.run.workflows,
            r.raw_publish_per_s,
            r.run.accepted_per_s,
            r.run.completed_per_s,
            r.ratio_to_raw,
            r.run.latency.p50_ms,
            r.run.latency.p99_ms
        );
    }
}

/// `keyed` flags.
#[derive(Debug, Clone, Args)]
pub struct KeyedArgs {
    /// Workflows of each kind.
    #[arg(long, default_value_t = 5000)]
    pub workflows: usize,
    #[command(flatten)]
    pub engine: EngineBinaries,
    #[arg(long, default_value = "loadtest/results/keyed.json")]
    pub out: PathBuf,
}

/// What a concurrency key costs a start: 1-step workflows published at full speed, without a
/// key, with a key per start (no waiting; the cost of taking and giving back a slot), and with
/// one key of limit 100 for all (every slot change on one KV key), on one engine in one run.
pub async fn keyed(args: KeyedArgs) -> anyhow::Result<Vec<workflows::Run>> {
    let n = u32::try_from(args.workflows).unwrap_or(u32::MAX);
    let chains = [
        Chain::OneStep,
        Chain::Keyed { keys: n, limit: 1 },
        Chain::Keyed {
            keys: 1,
            limit: 100,
        },
    ];
    let engine = Engine::start(args.engine.binaries(), Setup::default(), &chains).await?;
    let mut rows = Vec::new();
    for chain in chains {
        rows.push(engine.run("keyed", chain, args.workflows, None).await?);
    }
    let base = rows[0].completed_per_s;
    println!(
        "{:<44} {:>10} {:>13} {:>10} {:>10} {:>10}",
        "workflow", "workflows", "completed/s", "vs none", "p50", "p99"
    );
    for (chain, r) in chains.iter().zip(&rows) {
        println!(
            "{:<44} {:>10} {:>13.0} {:>10.3} {:>7.1} ms {:>7.1} ms",
            chain.label(),
            r.workflows,
            r.completed_per_s,
            r.completed_per_s / base,
            r.latency.p50_ms,
            r.latency.p99_ms
        );
    }
    write_json(&args.out, &rows)?;
    Ok(rows)
}

/// `e2e` flags.
#[derive(Debug, Clone, Args)]
pub struct E2eArgs {
    /// Chains to run: 1 and/or 3 `test.echo` steps.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub steps: Vec<u8>,
    /// Workflows per chain.
    #[arg(long, default_value_t = 2000)]
    pub workflows: usize,
    /// Starts per second; 0 = as fast as the server acks them (sustained throughput).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    #[arg(long, value_enum, default_value_t = Fsync::Default)]
    pub fsync: Fsync,
    #[command(flatten)]
    pub engine: EngineBinaries,
    #[arg(long, default_value = "loadtest/results/e2e.json")]
    pub out: PathBuf,
}

pub async fn e2e(args: E2eArgs) -> anyhow::Result<Vec<workflows::Run>> {
    let chains = args
        .steps
        .iter()
        .map(|&s| Chain::of_steps(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rate = (args.rate > 0.0).then_some(args.rate);
    let mut rows = Vec::new();
    for sync_always in args.fsync.settings() {
        let setup = Setup {
            sync_always,
            ..Setup::default()
        };
        let engine = Engine::start(args.engine.binaries(), setup, &chains).await?;
        for &chain in &chains {
            rows.push(engine.run("e2e", chain, args.workflows, rate).await?);
        }
    }
    print_runs(&rows);
    write_json(&args.out, &rows)?;
    let title = match rate {
        Some(r) => format!("start to completed at {r:.0} workflows/s"),
        None => "start to completed, published at full speed".to_owned(),
    };
    latency_chart_of(&args.out, &title, &rows)?;
    Ok(rows)
}

/// A latency chart of engine runs, one series per run.
pub(crate) fn latency_chart_of(
    out: &Path,
    title: &str,
    rows: &[workflows::Run],
) -> Result<(), report::Error> {
    let series: Vec<(String, &[f64])> = rows
        .iter()
        .map(|r| {
            (
                format!(
                    "{}{}",
                    Chain::label_of(&r.workflow),
                    if r.sync_always { ", fsync always" } else { "" }
                ),
                r.samples.as_slice(),
            )
        })
        .collect();
    report::latency_chart(&chart_path(out), title, &series)
}

pub fn print_runs(rows: &[workflows::Run]) {
    println!(
        "{:<14} {:<22} {:>8} {:>9} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "workflow",
        "fsync",
        "replicas",
        "workflows",
        "rate",
        "completed/s",
        "p50",
        "p90",
        "p99",
        "max"
    );
    for r in rows {
        let rate = r
            .target_rate_per_s
            .map_or_else(|| "max".to_owned(), |r| format!("{r:.0}/s"));
        println!(
            "{:<14} {:<22} {:>8} {:>9} {:>10} {:>12.0} {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>6.1} ms",
            r.workflow,
            fsync_label(r.sync_always),
            r.replicas,
            r.workflows,
            rate,
            r.completed_per_s,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms
        );
    }
}

/// `scale` flags.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Replica counts to measure, each on a fresh engine.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub replicas: Vec<usize>,
    /// How long each job takes (`test.sleep`), in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub job_ms: u64,
    /// Jobs one replica runs at once (`worker.concurrency`).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Workflows per replica, so each run lasts about as long.
    #[arg(long, default_value_t = 800)]
    pub per_replica: usize,
    #[command(flatten)]
    pub engine: EngineBinaries,
    #[arg(long, default_value = "loadtest/results/scale.json")]
    pub out: PathBuf,
}

pub async fn scale(args: ScaleArgs) -> anyhow::Result<Vec<workflows::Run>> {
    anyhow::ensure!(
        !args.replicas.is_empty() && !args.replicas.contains(&0),
        "--replicas: give one or more counts of at least 1"
    );
    let rows = workflows::scale(
        args.engine.binaries(),
        Chain::Sleep(args.job_ms),
        &args.replicas,
        args.concurrency,
        args.per_replica,
    )
    .await?;
    print_scale(&rows, args.job_ms);
    write_json(&args.out, &rows)?;
    let points: Vec<(usize, f64)> = rows
        .iter()
        .map(|r| (r.replicas, r.completed_per_s))
        .collect();
    report::scaling_chart(
        &chart_path(&args.out),
        &format!(
            "{} ms jobs, {} per replica at once",
            args.job_ms, args.concurrency
        ),
        &points,
    )?;
    Ok(rows)
}

pub fn print_scale(rows: &[workflows::Run], job_ms: u64) {
    println!(
        "{:>8} {:>12} {:>10} {:>12} {:>13} {:>10} {:>10} {:>9}",
        "replicas",
        "concurrency",
        "workflows",
        "completed/s",
        "ideal/s",
        "efficiency",
        "p50",
        "vs first"
    );
    let first = rows.first().map_or(1.0, |r| r.completed_per_s);
    for r in rows {
        let ideal = (r.replicas * r.worker_concurrency) as f64 * 1000.0 / job_ms as f64;
        println!(
            "{:>8} {:>12} {:>10} {:>12.0} {:>13.0} {:>9.0}% {:>7.1} ms {:>8.2}×",
            r.replicas,
            r.worker_concurrency,
            r.workflows,
            r.completed_per_s,
            ideal,
            r.completed_per_s / ideal * 100.0,
            r.latency.p50_ms,
            r.completed_per_s / first
        );
    }
}
