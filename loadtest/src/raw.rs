//! `raw`: the bus's own limit, which every other figure is divided by. On a fresh server,
//! `messages` start-sized messages (each with a `Nats-Msg-Id`, as the engine sends them) are
//! published to a work-queue stream keeping 512 PubAcks in flight, then pulled by one durable
//! consumer and acked one by one. The run checks every message was delivered and that the
//! acks emptied the stream.

use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream::{self, consumer::pull, stream::RetentionPolicy};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use switchyard_proto::{StartWorkflow, encode_proto};

use crate::{
    report,
    worker_loop::{pipelined, provisioned_server},
};

const STREAM: &str = "BENCH_RAW_WQ";

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub sync_always: bool,
    pub messages: usize,
    pub message_bytes: usize,
    /// Pipelined publishes per second (512 PubAcks in flight).
    pub publish_per_s: f64,
    /// Messages pulled and acked per second by one consumer (batches of 512), until the server
    /// has applied every ack (the work queue is empty).
    pub consume_ack_per_s: f64,
}

/// Runs the scenario on a fresh server with the given fsync setting.
pub async fn run(messages: usize, sync_always: bool) -> anyhow::Result<Measurement> {
    anyhow::ensure!(messages > 0, "--messages must be at least 1");
    let (_server, _client, js) = provisioned_server(sync_always).await?;
    let mut stream = js
        .create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.wq.>".into()],
            retention: RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let sample = encode_proto(&StartWorkflow {
        tenant: "bench".into(),
        workflow: "one_step".into(),
        instance_id: "one_step-1763700000000-0".into(),
        input: b"{}".to_vec(),
        ..StartWorkflow::default()
    });
    let message_bytes = sample.len();
    let publish_per_s = pipelined(&js, messages, |i| {
        (
            format!("bench.wq.{}", i % 16),
            format!("wq-{i}"),
            sample.clone(),
        )
    })
    .await?;
    let stored = stream.info().await?.state.messages as usize;
    if stored != messages {
        return Err(report::Error::LostWork {
            scenario: "raw",
            what: "messages",
            accepted: messages,
            completed: stored,
            detail: "PubAck'd messages missing from the stream".into(),
        }
        .into());
    }

    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 100_000,
            ..Default::default()
        })
        .await?;
    let mut delivered = consumer
        .stream()
        .max_messages_per_batch(512)
        .messages()
        .await?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < messages {
        match tokio::time::timeout(Duration::from_secs(30), delivered.next()).await {
            Ok(Some(Ok(msg))) => {
                msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                seen += 1;
            }
            Ok(Some(Err(e))) => bail!("pulling: {e}"),
            _ => {
                return Err(report::Error::LostWork {
                    scenario: "raw",
                    what: "messages",
                    accepted: messages,
                    completed: seen,
                    detail: "no delivery for 30 s".into(),
                }
                .into());
            }
        }
    }
    // Acks are fire-and-forget: the consume-ack rate runs until the server has applied them
    // all, i.e. until the work queue is empty (with `sync_interval: always` each removal is a
    // stored write too). A minute without progress is lost work.
    let mut left = stream.info().await?.state.messages;
    let mut progress_at = Instant::now();
    while left > 0 {
        if progress_at.elapsed() > Duration::from_secs(60) {
            return Err(report::Error::LostWork {
                scenario: "raw",
                what: "acks",
                accepted: messages,
                completed: messages - left as usize,
                detail: format!(
                    "{left} messages still on {STREAM} a minute after the last ack applied"
                ),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = stream.info().await?.state.messages;
        if now < left {
            progress_at = Instant::now();
        }
        left = now;
    }
    let consume_ack_per_s = messages as f64 / started.elapsed().as_secs_f64();
    Ok(Measurement {
        sync_always,
        messages,
        message_bytes,
        publish_per_s,
        consume_ack_per_s,
    })
}
