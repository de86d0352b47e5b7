//! Message counts of the declared streams and consumers, for operators.

use std::collections::BTreeMap;
use std::fmt;

use async_nats::jetstream::{self, context::ConsumerInfoErrorKind};
use futures::TryStreamExt;
use serde::Serialize;
use switchyard_proto::{stream as names, subject};

use crate::Error;
use crate::apply::{ObjectKind, current_stream_info, kv_stream_name, object_store_stream_name};
use crate::config::BusConfig;

/// Counts of one stream or KV bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StreamCounts {
    /// Messages stored (values, for a KV bucket with history 1).
    pub messages: u64,
    pub bytes: u64,
    pub consumers: usize,
}

/// One declared stream or KV bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamStatus {
    pub kind: ObjectKind,
    pub name: String,
    /// `None` when it does not exist on the server.
    pub counts: Option<StreamCounts>,
}

/// Counts of one durable consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConsumerCounts {
    /// Messages matching the filter and not yet delivered.
    pub num_pending: u64,
    /// Messages delivered and waiting for an ack.
    pub num_ack_pending: usize,
    /// Messages delivered more than once.
    pub num_redelivered: usize,
    /// Pull requests waiting for messages (roughly: idle workers).
    pub num_waiting: usize,
}

/// One declared durable consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerStatus {
    pub stream: String,
    pub name: String,
    /// `None` when the consumer or its stream does not exist on the server.
    pub counts: Option<ConsumerCounts>,
}

/// Dead letters waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqStatus {
    /// Messages in `DLQ`; `None` when the stream does not exist.
    pub messages: Option<u64>,
    /// Messages per subject (`dlq.<kind>`), only subjects that have some.
    pub by_subject: BTreeMap<String, u64>,
}

/// Counts of every declared object, for `switchyard bus status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub streams: Vec<StreamStatus>,
    pub consumers: Vec<ConsumerStatus>,
    pub dlq: DlqStatus,
}

impl StatusReport {
    /// Whether some declared object does not exist on the server.
    pub fn any_missing(&self) -> bool {
        self.streams.iter().any(|s| s.counts.is_none())
            || self.consumers.iter().any(|c| c.counts.is_none())
    }
}

/// Reads the counts of every object `cfg` declares; objects that do not exist are reported as
/// missing, not as an error.
pub async fn status(js: &jetstream::Context, cfg: &BusConfig) -> Result<StatusReport, Error> {
    let mut streams = Vec::new();
    let mut dlq = DlqStatus {
        messages: None,
        by_subject: BTreeMap::new(),
    };

    let stream_names = cfg
        .stream_specs()
        .into_iter()
        .map(|s| (ObjectKind::Stream, s.name));
    let kv_names = cfg
        .kv_specs()
        .into_iter()
        .map(|k| (ObjectKind::Kv, k.bucket));
    let object_store = std::iter::once((ObjectKind::ObjectStore, cfg.object_store_spec().bucket));
    for (kind, name) in stream_names.chain(kv_names).chain(object_store) {
        let stream_name = match kind {
            ObjectKind::Kv => kv_stream_name(&name),
            ObjectKind::ObjectStore => object_store_stream_name(&name),
            _ => name.clone(),
        };
        let counts = current_stream_info(js, &stream_name)
            .await?
            .map(|info| StreamCounts {
                messages: info.state.messages,
                bytes: info.state.bytes,
                consumers: info.state.consumer_count,
            });
        if name == names::DLQ
            && let Some(counts) = counts
        {
            dlq.messages = Some(counts.messages);
            if counts.messages > 0 {
                dlq.by_subject = dlq_by_subject(js).await?;
            }
        }
        streams.push(StreamStatus { kind, name, counts });
    }

    let mut consumers = Vec::new();
    for spec in cfg.consumer_specs() {
        let counts = consumer_counts(js, &spec.stream, &spec.name).await?;
        consumers.push(ConsumerStatus {
            stream: spec.stream,
            name: spec.name,
            counts,
        });
    }
    Ok(StatusReport {
        streams,
        consumers,
        dlq,
    })
}

async fn dlq_by_subject(js: &jetstream::Context) -> Result<BTreeMap<String, u64>, Error> {
    let error = |error: async_nats::Error| Error::Server {
        action: "counting subjects of stream",
        object: names::DLQ.to_owned(),
        error,
    };
    let stream = js
        .get_stream_no_info(names::DLQ)
        .await
        .map_err(|e| error(e.into()))?;
    let subjects = stream
        .info_with_subjects(subject::ALL_DLQ)
        .await
        .map_err(|e| error(e.into()))?;
    subjects
        .map_ok(|(subject, count)| (subject, count as u64))
        .try_collect()
        .await
        .map_err(|e| error(e.into()))
}

async fn consumer_counts(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Result<Option<ConsumerCounts>, Error> {
    let object = format!("{stream}/{consumer}");
    let error = |error: async_nats::Error| Error::Server {
        action: "reading consumer",
        object: object.clone(),
        error,
    };
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| error(e.into()))?;
    match handle.consumer_info(consumer).await {
        Ok(info) => Ok(Some(ConsumerCounts {
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending,
            num_redelivered: info.num_redelivered,
            num_waiting: info.num_waiting,
        })),
        Err(e)
            if matches!(
                e.kind(),
                ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(error(e.into())),
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .streams
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "{:<8} {:<width$} {:>12} {:>14} {:>9}",
            "KIND", "NAME", "MESSAGES", "BYTES", "CONSUMERS"
        )?;
        for s in &self.streams {
            let kind = s.kind.to_string();
            match s.counts {
                Some(c) => writeln!(
                    f,
                    "{kind:<8} {:<width$} {:>12} {:>14} {:>9}",
                    s.name, c.messages, c.bytes, c.consumers
                )?,
                None => writeln!(f, "{kind:<8} {:<width$} {:>12}", s.name, "missing")?,
            }
        }

        writeln!(f)?;
        let width = self
            .consumers
            .iter()
            .map(|c| c.stream.len() + 1 + c.name.len())
            .max()
            .unwrap_or(0)
            .max(8);
        writeln!(
            f,
            "{:<width$} {:>10} {:>12} {:>12} {:>8}",
            "CONSUMER", "PENDING", "ACK_PENDING", "REDELIVERED", "WAITING"
        )?;
        for c in &self.consumers {
            let name = format!("{}/{}", c.stream, c.name);
            match c.counts {
                Some(n) => writeln!(
                    f,
                    "{name:<width$} {:>10} {:>12} {:>12} {:>8}",
                    n.num_pending, n.num_ack_pending, n.num_redelivered, n.num_waiting
                )?,
                None => writeln!(f, "{name:<width$} {:>10}", "missing")?,
            }
        }

        writeln!(f)?;
        match self.dlq.messages {
            None => writeln!(
                f,
                "dead letters: missing ({} stream does not exist)",
                names::DLQ
            )?,
            Some(n) => {
                write!(f, "dead letters: {n}")?;
                let parts: Vec<String> = self
                    .dlq
                    .by_subject
                    .iter()
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect();
                if !parts.is_empty() {
                    write!(f, " ({})", parts.join(", "))?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
