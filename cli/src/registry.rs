//! `switchyard registry`: every worker kind as the engine sees it (operations and versions,
//! live replicas, the age of the last answer, waiting jobs, the definitions that use it), and
//! `switchyard registry retire KIND` to remove a declared kind nothing uses.

use std::fmt::Write as _;

use switchyard_proto::orchestrator::{
    GetRegistry, RegistryGet, RegistryView, RetireKind, RetireReply, RetireRequest,
};

use crate::workflow::query;

/// The registry, from any orchestrator replica.
pub async fn get(client: &async_nats::Client) -> anyhow::Result<RegistryView> {
    query::<GetRegistry>(client, &RegistryGet::default()).await
}

/// Removes the declarations of `kind`; refused (naming them) while definitions use it.
pub async fn retire(client: &async_nats::Client, kind: &str) -> anyhow::Result<RetireReply> {
    query::<RetireKind>(
        client,
        &RetireRequest {
            kind: kind.to_owned(),
        },
    )
    .await
}

/// The registry as a table per kind.
pub fn render(view: &RegistryView) -> String {
    let mut out = String::new();
    let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let _ = writeln!(
        out,
        "{:<14} {:<9} {:>8} {:>10} {:>8} {:>11}  USED BY",
        "KIND", "SOURCE", "REPLICAS", "HEARTBEAT", "PENDING", "ACK-PENDING"
    );
    for kind in &view.kinds {
        let heartbeat = kind.heartbeat_age_ms.map_or_else(
            || "never".to_owned(),
            |ms| format!("{:.1}s", ms as f64 / 1000.0),
        );
        let used_by: Vec<String> = kind.used_by.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{:<14} {:<9} {:>8} {:>10} {:>8} {:>11}  {}",
            kind.kind,
            if kind.builtin { "built-in" } else { "declared" },
            kind.replicas.len(),
            heartbeat,
            count(kind.pending),
            count(kind.ack_pending),
            if used_by.is_empty() {
                "-".to_owned()
            } else {
                used_by.join(", ")
            },
        );
        for op in &kind.operations {
            let capabilities = if op.capabilities.is_empty() {
                String::new()
            } else {
                format!("  capabilities: {}", op.capabilities.join(", "))
            };
            let versions: Vec<String> = op.versions.iter().map(|v| format!("v{v}")).collect();
            let _ = writeln!(
                out,
                "    {} v{} (stored: {}){capabilities}",
                op.name,
                op.version,
                versions.join(", ")
            );
        }
        for r in &kind.replicas {
            let _ = writeln!(
                out,
                "    replica {} {} (answered {:.1}s ago)",
                r.worker_id.as_deref().unwrap_or(&r.id),
                r.version,
                r.heartbeat_age_ms as f64 / 1000.0
            );
        }
    }
    if !view.capabilities.is_empty() {
        let _ = writeln!(out, "\nCAPABILITY     CONTRACT             PROVIDERS");
        for c in &view.capabilities {
            let _ = writeln!(
                out,
                "{:<14} {:<20} {}",
                c.name,
                c.contract,
                c.providers.join(", ")
            );
        }
    }
    out
}
