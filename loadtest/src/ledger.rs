//! `ledger`: the ledger's ingest rate and lag under the orchestrator benchmark's load.
//!
//! A fresh server with one orchestrator, one `test` worker and one ledger process (on a fresh
//! Postgres database). `workflows` 1-step workflows are started as fast as the server acks
//! them (as `nats-direct` does), and beside each start the load generator publishes
//! `usage_per_workflow` usage events for the instance, as a metered step would. Every 100 ms
//! it samples the ledger's durable consumers (messages not yet delivered plus delivered but
//! not yet acked, i.e. not yet committed to Postgres) and asks the ledger how many usage
//! events it has stored.
//!
//! The run ends when the ledger holds every usage event and every instance as completed;
//! it reports lost work otherwise. Figures: usage events stored per second (first publish to
//! the last event visible in Postgres), the largest lag seen, the lag when the load stopped,
//! and how long the ledger took to drain it.

use std::{
    collections::VecDeque,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::bail;
use async_nats::{HeaderMap, jetstream};
use serde::Serialize;
use serde_json::{Value, json};
use switchyard_proto::{
    ContentType, Job, JobResult, JobStatus, StartWorkflow, UsageEvent, decode, encode_proto,
    header, stream, subject,
};

use crate::{
    report,
    worker_loop::provisioned_server,
    workflows::{Processes, TENANT, register, spawn},
};

/// Outstanding PubAcks while publishing.
const WINDOW: usize = 512;
/// How often the lag and the ledger's counts are sampled.
const SAMPLE: Duration = Duration::from_millis(100);
/// How long the ledger may go without storing anything before the run counts as lost work.
const STALL: Duration = Duration::from_secs(60);

const ONE_STEP: &str =
    "name: one_step\nversion: 1\nsteps:\n  - { id: a, operation: test.echo, input: { n: 1 } }\n";

/// `switchyard-loadtest ledger` arguments.
#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    /// 1-step workflows started, as fast as the server acks them.
    #[arg(long, default_value_t = 20_000)]
    pub workflows: usize,
    /// Usage events published per workflow.
    #[arg(long, default_value_t = 1)]
    pub usage_per_workflow: usize,
    /// `ledger.batch_size` of the ledger process.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    #[arg(long, default_value = "target/release/switchyard-orchestrator")]
    pub orchestrator: PathBuf,
    #[arg(long, default_value = "target/release/switchyard-test-worker")]
    pub worker: PathBuf,
    #[arg(long, default_value = "target/release/switchyard-ledger")]
    pub ledger: PathBuf,
    #[arg(long, default_value = "loadtest/results/ledger.json")]
    pub out: PathBuf,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub workflows: usize,
    pub usage_events: usize,
    pub batch_size: usize,
    /// Starts and usage events PubAck'd per second.
    pub published_per_s: f64,
    /// Usage events stored in Postgres per second, first publish to the last one visible.
    pub usage_stored_per_s: f64,
    /// Seconds from the first publish until the ledger held every usage event.
    pub usage_done_s: f64,
    /// Seconds from the first publish until the ledger showed every instance completed.
    pub instances_done_s: f64,
    /// Largest backlog of the `ledger-usage` consumer seen (not delivered + not acked).
    pub usage_max_lag: u64,
    /// Its backlog when the last publish was acked.
    pub usage_lag_at_load_end: u64,
    /// Largest backlog of the `ledger-events` consumer seen.
    pub events_max_lag: u64,
    pub events_lag_at_load_end: u64,
    /// Seconds from the last publish's ack until both backlogs were zero.
    pub drain_s: f64,
    /// Both backlogs at the end of the run (0 when the ledger caught up).
    pub final_lag: u64,
}

/// Runs the scenario and prints and writes its figures.
pub async fn cli(args: LedgerArgs) -> anyhow::Result<()> {
    let m = run(&args).await?;
    println!(
        "{:>9} {:>7} {:>6} {:>12} {:>13} {:>9} {:>9} {:>12} {:>9} {:>8} {:>6}",
        "workflows",
        "usage",
        "batch",
        "published/s",
        "usage stored/s",
        "max lag",
        "lag@end",
        "events lag",
        "drain s",
        "total s",
        "final"
    );
    println!(
        "{:>9} {:>7} {:>6} {:>12.0} {:>13.0} {:>9} {:>9} {:>12} {:>9.2} {:>8.2} {:>6}",
        m.workflows,
        m.usage_events,
        m.batch_size,
        m.published_per_s,
        m.usage_stored_per_s,
        m.usage_max_lag,
        m.usage_lag_at_load_end,
        m.events_max_lag,
        m.drain_s,
        m.instances_done_s.max(m.usage_done_s),
        m.final_lag
    );
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&[&m])?)?;
    println!("written to {}", args.out.display());
    Ok(())
}

/// Runs one session.
pub async fn run(args: &LedgerArgs) -> anyhow::Result<Measurement> {
    anyhow::ensure!(args.workflows > 0, "--workflows must be at least 1");
    let (server, client, js) = provisioned_server(false).await?;
    let db = switchyard_test_support::database().await;
    let batch = args.batch_size.to_string();
    let _processes = Processes(vec![
        spawn(&args.orchestrator, &server, &[])?,
        spawn(
            &args.worker,
            &server,
            &[("SWITCHYARD_WORKER__CONCURRENCY", "256")],
        )?,
        spawn(
            &args.ledger,
            &server,
            &[
                ("DATABASE_URL", db.url.as_str()),
                ("SWITCHYARD_LEDGER__BATCH_SIZE", batch.as_str()),
            ],
        )?,
    ]);
    register(&client, ONE_STEP).await?;
    for service in ["switchyard-test", "switchyard-ledger"] {
        wait_for(&client, service).await?;
    }

    let usage_total = args.workflows * args.usage_per_workflow;
    let prefix = format!("ledger-{}", switchyard_proto::now_ms());
    let origin = Instant::now();
    let publisher = tokio::spawn(publish(
        js.clone(),
        prefix,
        args.workflows,
        args.usage_per_workflow,
    ));

    let (mut usage_max, mut events_max) = (0u64, 0u64);
    let (mut usage_at_end, mut events_at_end) = (0u64, 0u64);
    let mut load_end: Option<Instant> = None;
    let (mut usage_done, mut instances_done) = (None, None);
    let mut drained = None;
    let (mut last_stored, mut last_progress) = (0usize, Instant::now());
    let final_lag = loop {
        tokio::time::sleep(SAMPLE).await;
        let usage_lag = backlog(&js, stream::USAGE, stream::LEDGER_USAGE).await?;
        let events_lag = backlog(&js, stream::WF_EVENTS, stream::LEDGER_EVENTS).await?;
        usage_max = usage_max.max(usage_lag);
        events_max = events_max.max(events_lag);
        if load_end.is_none() && publisher.is_finished() {
            load_end = Some(Instant::now());
            usage_at_end = usage_lag;
            events_at_end = events_lag;
        }
        let stored = stored_usage(&client).await?;
        if stored > last_stored {
            (last_stored, last_progress) = (stored, Instant::now());
        }
        if usage_done.is_none() && stored >= usage_total {
            usage_done = Some(origin.elapsed());
        }
        if instances_done.is_none() && completed_instances(&client).await? >= args.workflows {
            instances_done = Some(origin.elapsed());
        }
        if let Some(ended) = load_end
            && drained.is_none()
            && usage_lag == 0
            && events_lag == 0
        {
            drained = Some(ended.elapsed());
        }
        if usage_done.is_some() && instances_done.is_some() && drained.is_some() {
            break usage_lag + events_lag;
        }
        if last_progress.elapsed() > STALL && usage_done.is_none() {
            return Err(report::Error::LostWork {
                scenario: "ledger",
                what: "usage events",
                accepted: usage_total,
                completed: stored,
                detail: format!("nothing stored for {STALL:?}"),
            }
            .into());
        }
        if origin.elapsed() > STALL * 10 {
            bail!(
                "the ledger did not show every instance completed within {:?}",
                STALL * 10
            );
        }
    };
    let (published, published_per_s) = publisher.await??;
    anyhow::ensure!(
        published == args.workflows + usage_total,
        "only {published} publishes were acked"
    );
    let usage_done = usage_done.unwrap_or_default();
    Ok(Measurement {
        workflows: args.workflows,
        usage_events: usage_total,
        batch_size: args.batch_size,
        published_per_s,
        usage_stored_per_s: usage_total as f64 / usage_done.as_secs_f64(),
        usage_done_s: usage_done.as_secs_f64(),
        instances_done_s: instances_done.unwrap_or_default().as_secs_f64(),
        usage_max_lag: usage_max,
        usage_lag_at_load_end: usage_at_end,
        events_max_lag: events_max,
        events_lag_at_load_end: events_at_end,
        drain_s: drained.unwrap_or_default().as_secs_f64(),
        final_lag,
    })
}

/// Publishes `workflows` starts, each followed by `per` usage events of its instance, with at
/// most [`WINDOW`] PubAcks outstanding. Returns the acked count and the rate.
async fn publish(
    js: jetstream::Context,
    prefix: String,
    workflows: usize,
    per: usize,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(WINDOW);
    let mut acked = 0;
    let start_subject = subject::start(TENANT, "one_step");
    let usage_subject = subject::usage(TENANT, "tokens");
    for i in 0..workflows {
        let instance = format!("{prefix}-{i}");
        let start = StartWorkflow {
            tenant: TENANT.into(),
            workflow: "one_step".into(),
            instance_id: instance.clone(),
            input: b"{}".to_vec(),
            ..StartWorkflow::default()
        };
        let mut messages = vec![(
            start_subject.clone(),
            instance.clone(),
            encode_proto(&start),
        )];
        for n in 0..per {
            let event_id = format!("{instance}-a-tokens-{n}");
            let usage = UsageEvent {
                event_id: event_id.clone(),
                tenant: TENANT.into(),
                meter: "tokens".into(),
                quantity: 42.0,
                unit: "token".into(),
                instance_id: instance.clone(),
                step_id: "a".into(),
                operation: "test.echo".into(),
                at_ms: switchyard_proto::now_ms(),
                attributes: Default::default(),
            };
            messages.push((usage_subject.clone(), event_id, encode_proto(&usage)));
        }
        for (subject_name, msg_id, payload) in messages {
            let mut headers = HeaderMap::new();
            headers.insert(header::MSG_ID, msg_id.as_str());
            pending.push_back(
                js.publish_with_headers(subject_name, headers, payload.into())
                    .await?,
            );
            if pending.len() >= WINDOW
                && let Some(ack) = pending.pop_front()
            {
                ack.await?;
                acked += 1;
            }
        }
    }
    for ack in pending {
        ack.await?;
        acked += 1;
    }
    Ok((acked, acked as f64 / started.elapsed().as_secs_f64()))
}

/// Messages of `stream_name` the ledger's `consumer` has not committed: not yet delivered
/// plus delivered and not yet acked.
async fn backlog(
    js: &jetstream::Context,
    stream_name: &str,
    consumer: &str,
) -> anyhow::Result<u64> {
    let mut c: jetstream::consumer::PullConsumer = js
        .get_stream(stream_name)
        .await?
        .get_consumer(consumer)
        .await
        .map_err(|e| anyhow::anyhow!("consumer {consumer} on {stream_name}: {e}"))?;
    let info = c.info().await?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

/// Asks the ledger's `svc.ledger.<op>` for the benchmark tenant.
async fn ask(client: &async_nats::Client, op: &str, input: Value) -> anyhow::Result<Value> {
    let job = Job {
        job_id: format!("loadtest-{}", switchyard_proto::now_ms()),
        tenant: TENANT.into(),
        operation: format!("ledger.{op}"),
        input: serde_json::to_vec(&input)?,
        ..Job::default()
    };
    let reply = client
        .request(
            format!("{}.{op}", subject::service_group("ledger")),
            encode_proto(&job).into(),
        )
        .await?;
    let result: JobResult = decode(ContentType::Protobuf, &reply.payload)?;
    if result.status != JobStatus::Succeeded as i32 {
        bail!("ledger.{op} failed: {:?}", result.error);
    }
    Ok(serde_json::from_slice(&result.output)?)
}

async fn stored_usage(client: &async_nats::Client) -> anyhow::Result<usize> {
    let v = ask(client, "usage", json!({ "group_by": "meter" })).await?;
    Ok(v["usage"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["events"].as_u64())
        .sum::<u64>() as usize)
}

async fn completed_instances(client: &async_nats::Client) -> anyhow::Result<usize> {
    let v = ask(client, "stats", json!({})).await?;
    Ok(v["workflows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["counts"]["completed"].as_u64())
        .sum::<u64>() as usize)
}

/// Waits until `service` answers `$SRV.PING`.
async fn wait_for(client: &async_nats::Client, service: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if client
            .request(format!("$SRV.PING.{service}"), "".into())
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{service} did not answer $SRV.PING within 60 s")
}
