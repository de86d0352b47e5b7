//! JetStream stream, consumer and KV bucket names.

/// Starts, results, cancels and signals, consumed by the orchestrator.
pub const WF_INBOX: &str = "WF_INBOX";
/// Workflow and step progress, token deltas; read by the gateway (SSE), the ledger, anyone.
pub const WF_EVENTS: &str = "WF_EVENTS";
/// Usage events for billing, consumed by the ledger.
pub const USAGE: &str = "USAGE";
/// Who did what: definition changes, cancellations, signals, refused credentials; consumed
/// by the ledger into its audit log.
pub const AUDIT: &str = "AUDIT";
/// Dead letters: messages given up on, with the reason.
pub const DLQ: &str = "DLQ";
/// Schedules (`wf.schedule.>`) and their firings (`wf.tick.>`): the definitions' `schedules:`
/// as messages the server's scheduler fires (ADR 19). Created with message schedules allowed.
pub const WF_SCHEDULES: &str = "WF_SCHEDULES";
/// Tenants' own events (`evt.>`), each starting the workflows whose `triggers:` name its
/// subject; deduplicated by `Nats-Msg-Id`. The front door for event-driven starts.
pub const WF_TRIGGERS: &str = "WF_TRIGGERS";
/// KV bucket holding each workflow instance's state, keyed by instance id.
pub const WF_STATE_BUCKET: &str = "WF_STATE";
/// KV bucket holding registered workflow definitions, one key per version.
pub const WF_DEFINITIONS_BUCKET: &str = "WF_DEFINITIONS";
/// KV bucket of the `Idempotency-Key`s the gateway has seen, each with a fingerprint of its
/// request, so a key reused for a different request is refused; entries expire.
pub const IDEMPOTENCY_BUCKET: &str = "WF_IDEMPOTENCY";
/// KV bucket of what each unsettled job's deliveries ended in, keyed `<kind>.<stream sequence>`:
/// the handler failures that used up attempts, and the hand-backs for infrastructure faults
/// or shutdown that did not (ADR 14). Written only when a delivery does not succeed.
pub const ATTEMPTS_BUCKET: &str = "WF_ATTEMPTS";
/// KV bucket of the operations worker kinds declared at run time, one key per operation
/// version, `<operation>.v<version>` (docs/worker-protocol.md). A version is never rewritten.
pub const OPERATIONS_BUCKET: &str = "WF_OPERATIONS";
/// KV bucket of the dead letters that were replayed, keyed by their sequence in [`DLQ`]: a
/// letter is replayed once, and a purge removes what was handled.
pub const DLQ_HANDLED_BUCKET: &str = "WF_DLQ_HANDLED";
/// KV bucket of the concurrency keys' slots: per `<tenant>.<workflow>.<key digest>`, the
/// instances holding a slot and those waiting for one, in order (ADR 20).
pub const CONCURRENCY_BUCKET: &str = "WF_CONCURRENCY";
/// KV bucket of the rate limits' schedules: per `<tenant>.<workflow>.<scope>.<key digest>`,
/// the theoretical arrival time of the next run (GCRA; ADR 20).
pub const RATES_BUCKET: &str = "WF_RATES";
/// Object store for payloads too large to copy into every message (long transcripts); a
/// message carries a reference instead (see [`OBJECT_REF_PREFIX`]).
pub const WF_OBJECTS_BUCKET: &str = "WF_OBJECTS";
/// How a string value names an object in [`WF_OBJECTS_BUCKET`]: this prefix, then the
/// object's name, `<tenant>/<sha-256 of the content in hex>`.
pub const OBJECT_REF_PREFIX: &str = "nats-object://WF_OBJECTS/";

/// The work-queue stream of one worker kind, e.g. `JOBS_AI`.
pub fn jobs(kind: &str) -> String {
    format!("JOBS_{}", kind.to_ascii_uppercase())
}

/// The durable pull consumer that every replica of a worker kind shares.
pub fn worker_consumer(kind: &str) -> String {
    format!("worker-{kind}")
}

/// The orchestrator's consumer of starts, cancels and signals.
pub const ORCHESTRATOR_COMMANDS: &str = "orchestrator-commands";
/// The orchestrator's consumer of job results, apart from starts so a backlog of new work
/// cannot starve the results that finish work.
pub const ORCHESTRATOR_RESULTS: &str = "orchestrator-results";
/// The orchestrator's consumer of timers (step timeouts, SLA deadlines).
pub const ORCHESTRATOR_TIMERS: &str = "orchestrator-timers";
/// The orchestrator's consumer of schedule firings, which it turns into starts.
pub const ORCHESTRATOR_SCHEDULES: &str = "orchestrator-schedules";
/// The orchestrator's consumer of tenants' events, which it turns into starts.
pub const ORCHESTRATOR_TRIGGERS: &str = "orchestrator-triggers";
/// The ledger's consumer of usage events.
pub const LEDGER_USAGE: &str = "ledger-usage";
/// The ledger's consumer of workflow events.
pub const LEDGER_EVENTS: &str = "ledger-events";
/// The ledger's consumer of audit events.
pub const LEDGER_AUDIT: &str = "ledger-audit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_design() {
        assert_eq!(jobs("ai"), "JOBS_AI");
        assert_eq!(worker_consumer("research"), "worker-research");
    }
}
