//! Rebuilding the ledger from the streams: in one transaction, empty every table, then read
//! `USAGE`, `WF_EVENTS` and `AUDIT` from their first message to the last one stored when the
//! rebuild began (with ordered, ephemeral consumers; the durables are not touched) through the
//! same decoding and [`store::apply`] as the live consumers.
//!
//! A live ledger may keep running: its batches wait for the rebuild's lock and, after the
//! commit, find their messages already applied (every write is idempotent). What the
//! streams no longer hold (past their `max_age`) is gone from the rebuilt ledger too.

use std::fmt;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures::StreamExt as _;
use serde::Serialize;
use sqlx::{PgPool, Row as _};

use crate::{
    Error,
    ingest::{Source, decode_stored},
    store::{self, Item},
};

/// What a rebuild read and wrote.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct RebuildReport {
    pub streams: Vec<StreamReport>,
    /// Rows in each table afterwards, in [`store::TABLES`] order.
    pub tables: Vec<(String, i64)>,
}

/// What a rebuild read from one stream.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct StreamReport {
    pub stream: String,
    pub read: u64,
    pub stored: u64,
    pub duplicate: u64,
    pub ignored: u64,
    /// Messages that could not be read (the live ledger dead-lettered them).
    pub malformed: u64,
}

impl fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "stream", "read", "stored", "duplicate", "ignored", "malformed"
        )?;
        for s in &self.streams {
            writeln!(
                f,
                "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                s.stream, s.read, s.stored, s.duplicate, s.ignored, s.malformed
            )?;
        }
        for (table, rows) in &self.tables {
            writeln!(f, "{table:<22} {rows:>10} rows")?;
        }
        Ok(())
    }
}

/// Empties the ledger and replays the streams into it; `batch_size` messages per write.
pub async fn rebuild(
    pool: &PgPool,
    client: &async_nats::Client,
    batch_size: usize,
) -> Result<RebuildReport, Error> {
    let js = jetstream::new(client.clone());
    let mut tx = pool.begin().await?;
    store::truncate(&mut tx).await?;
    let mut report = RebuildReport::default();
    for source in Source::ALL {
        let stream_report = replay(&js, &mut tx, source, batch_size.max(1)).await?;
        report.streams.push(stream_report);
    }
    for table in store::TABLES {
        // The names are the crate's own constants, not input.
        let sql = format!("SELECT count(*) FROM {table}");
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        report.tables.push((table.to_owned(), n));
    }
    tx.commit().await?;
    Ok(report)
}

async fn replay(
    js: &jetstream::Context,
    conn: &mut sqlx::PgConnection,
    source: Source,
    batch_size: usize,
) -> Result<StreamReport, Error> {
    let name = source.stream();
    let mut report = StreamReport {
        stream: name.to_owned(),
        ..StreamReport::default()
    };
    let mut stream =
        js.get_stream(name)
            .await
            .map_err(|_| switchyard_runtime::Error::NotProvisioned {
                what: format!("stream {name}"),
            })?;
    let state = stream
        .info()
        .await
        .map_err(|e| Error::bus("cannot read the stream's state", e))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(report);
    }
    let last = state.last_sequence;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..OrderedConfig::default()
        })
        .await
        .map_err(|e| Error::bus("cannot create a replay consumer", e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Error::bus("cannot replay the stream", e))?;
    let mut items: Vec<Item> = Vec::with_capacity(batch_size);
    let mut done = false;
    while !done {
        let Some(next) = messages.next().await else {
            break;
        };
        let msg = next.map_err(|e| Error::bus("replay failed", e))?;
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(last);
        done = seq >= last;
        report.read += 1;
        match decode_stored(source, &msg) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => report.ignored += 1,
            Err(_) => report.malformed += 1,
        }
        if items.len() >= batch_size || done {
            let applied = store::apply(conn, &items).await?;
            report.stored += applied.stored as u64;
            report.duplicate += applied.duplicate as u64;
            items.clear();
        }
    }
    Ok(report)
}
