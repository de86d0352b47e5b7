//! `switchyard dlq list|show|replay|purge`: the dead letters through the engine's service,
//! for any tenant (`--tenant` narrows it). Replays and purges are audited under the
//! command-line user.

use std::fmt::Write as _;

use switchyard_proto::orchestrator::{
    DlqFilter, DlqList, DlqPage, DlqPurge, DlqPurgeReply, DlqRef, DlqReplay, DlqReplayReply,
    GetDeadLetter, ListDeadLetters, PurgeDeadLetters, ReplayDeadLetters,
};

use crate::workflow::{cli_actor, query};

/// One page of letters.
pub async fn list(
    client: &async_nats::Client,
    filter: DlqFilter,
    limit: Option<u32>,
    after: Option<u64>,
) -> anyhow::Result<DlqPage> {
    query::<ListDeadLetters>(
        client,
        &DlqList {
            filter,
            limit,
            after,
        },
    )
    .await
}

/// One letter in full, as JSON.
pub async fn show(
    client: &async_nats::Client,
    tenant: Option<String>,
    seq: u64,
) -> anyhow::Result<serde_json::Value> {
    let letter = query::<GetDeadLetter>(client, &DlqRef { tenant, seq }).await?;
    Ok(serde_json::to_value(letter)?)
}

/// Replays one letter, or (without `seq`) those `filter` selects.
pub async fn replay(
    client: &async_nats::Client,
    tenant: Option<String>,
    seq: Option<u64>,
    filter: Option<DlqFilter>,
    limit: Option<u32>,
) -> anyhow::Result<DlqReplayReply> {
    query::<ReplayDeadLetters>(
        client,
        &DlqReplay {
            tenant,
            seq,
            filter,
            limit,
            requested_by: cli_actor(),
        },
    )
    .await
}

/// Removes letters: `seqs`, or those `filter` selects (only replayed ones unless it says).
pub async fn purge(
    client: &async_nats::Client,
    filter: DlqFilter,
    seqs: Vec<u64>,
) -> anyhow::Result<DlqPurgeReply> {
    query::<PurgeDeadLetters>(
        client,
        &DlqPurge {
            filter,
            seqs,
            requested_by: cli_actor(),
        },
    )
    .await
}

/// A page as a table, one letter per line.
pub fn render(page: &DlqPage) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>8}  {:<12} {:<24} {:<18} {:<10} {:>8}  {:<10} error",
        "seq", "kind", "operation", "reason", "tenant", "attempts", "handled"
    );
    for l in &page.letters {
        let _ = writeln!(
            out,
            "{:>8}  {:<12} {:<24} {:<18} {:<10} {:>8}  {:<10} {}",
            l.seq,
            l.kind,
            l.operation.as_deref().unwrap_or("-"),
            l.reason,
            l.tenant.as_deref().unwrap_or("-"),
            l.attempts,
            l.handled.as_ref().map_or("no", |h| h.action.as_str()),
            l.error.lines().next().unwrap_or_default(),
        );
    }
    if let Some(next) = page.next_cursor {
        let _ = writeln!(out, "more: --after {next}");
    }
    out
}

/// What a replay did, one line per letter.
pub fn render_replay(reply: &DlqReplayReply) -> String {
    let mut out = String::new();
    for r in &reply.replayed {
        match (&r.instance_id, r.run, &r.subject) {
            (Some(instance), Some(run), _) => {
                let _ = writeln!(out, "{}: instance {instance} re-runs (run {run})", r.seq);
            }
            (_, _, Some(subject)) => {
                let _ = writeln!(out, "{}: published again to {subject}", r.seq);
            }
            _ => {
                let _ = writeln!(out, "{}: {}", r.seq, r.action);
            }
        }
    }
    for r in &reply.refused {
        let _ = writeln!(out, "{}: refused: {}", r.seq, r.reason);
    }
    if reply.more {
        let _ = writeln!(out, "more letters matched: run it again");
    }
    out
}
