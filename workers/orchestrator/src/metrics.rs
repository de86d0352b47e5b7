//! The orchestrator's Prometheus metrics: names and help texts in one place.

use std::sync::Arc;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use switchyard_runtime::metrics::TenantLabels;

/// Metrics of one orchestrator process.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Inbox messages handled, by kind (`start`, `result`, `cancel`, `signal`, `timer`) and
    /// outcome (`applied`, `ignored`, `later`, `redelivered`, `retry`, `dead_letter`).
    pub messages: IntCounterVec,
    /// Time to handle one inbox message, from delivery to ack.
    pub handle_seconds: HistogramVec,
    /// Compare-and-set conflicts on an instance's state (another writer got there first).
    pub conflicts: IntCounter,
    pub started: IntCounterVec,
    pub finished: IntCounterVec,
    /// The product spec's name: start to finish of an instance, by tenant (bounded by
    /// [`TenantLabels`]), workflow and final status.
    pub execution_seconds: HistogramVec,
    pub sla_breaches: IntCounterVec,
    /// Messages in the `DLQ` stream, sampled.
    pub dlq_messages: IntGauge,
    /// Replicas of each worker kind that answered the registry's last sweeps.
    pub kind_replicas: IntGaugeVec,
    /// For each kind a registered definition uses: seconds it has had no live replica (0
    /// while it has one).
    pub kind_unserved_seconds: IntGaugeVec,
    /// Schedule firings handled, by outcome (`started`, `duplicate`, `dropped`, `retry`).
    pub schedule_ticks: IntCounterVec,
    /// Concurrency slots, by workflow and what happened: `immediate` (a slot at once),
    /// `queued` (waits in line), `dequeued` (granted from the line), `left` (gave up its place:
    /// cancelled or failed while waiting), `released`. Instances waiting now:
    /// `queued - dequeued - left`, summed over the replicas.
    pub concurrency_slots: IntCounterVec,
    /// Rate-limit turns taken, by workflow and whether they had to wait (`immediate`,
    /// `delayed`).
    pub rate_turns: IntCounterVec,
    /// Tenants' events handled, by outcome (`started`, `unmatched`, `dead_letter`, `retry`).
    pub trigger_events: IntCounterVec,
    /// The `tenant_id` label values.
    pub tenants: Arc<TenantLabels>,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            messages: IntCounterVec::new(
                Opts::new(
                    "switchyard_orchestrator_messages_total",
                    "Inbox messages handled by the orchestrator, by kind and outcome",
                ),
                &["kind", "outcome"],
            )?,
            handle_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "switchyard_orchestrator_handle_seconds",
                    "Time from an inbox message's delivery to its ack",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
                &["kind"],
            )?,
            conflicts: IntCounter::new(
                "switchyard_orchestrator_state_conflicts_total",
                "Compare-and-set conflicts on instance state, each followed by a reload and retry",
            )?,
            started: IntCounterVec::new(
                Opts::new(
                    "switchyard_workflows_started_total",
                    "Workflow instances started",
                ),
                &["workflow"],
            )?,
            finished: IntCounterVec::new(
                Opts::new(
                    "switchyard_workflows_finished_total",
                    "Workflow instances finished, by final status",
                ),
                &["workflow", "status"],
            )?,
            execution_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "workflow_execution_duration_seconds",
                    "Time from a workflow instance's start to its end",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 1800.0,
                ]),
                &["tenant_id", "workflow_type", "status"],
            )?,
            sla_breaches: IntCounterVec::new(
                Opts::new(
                    "switchyard_sla_breaches_total",
                    "Steps that waited for a signal past their SLA",
                ),
                &["workflow"],
            )?,
            dlq_messages: IntGauge::new(
                "switchyard_dlq_messages",
                "Messages in the dead-letter stream (every kind's), sampled by the orchestrator",
            )?,
            kind_replicas: IntGaugeVec::new(
                Opts::new(
                    "switchyard_worker_kind_replicas",
                    "Replicas of a worker kind that answered the engine's last $SRV.PING sweeps",
                ),
                &["kind"],
            )?,
            kind_unserved_seconds: IntGaugeVec::new(
                Opts::new(
                    "switchyard_worker_kind_unserved_seconds",
                    "Seconds a worker kind that registered definitions use has had no live replica (0 while it has one)",
                ),
                &["kind"],
            )?,
            schedule_ticks: IntCounterVec::new(
                Opts::new(
                    "switchyard_schedule_ticks_total",
                    "Schedule firings the engine handled, by outcome (started, duplicate, dropped, retry)",
                ),
                &["outcome"],
            )?,
            concurrency_slots: IntCounterVec::new(
                Opts::new(
                    "switchyard_concurrency_slots_total",
                    "Concurrency-key slots by workflow and outcome (immediate, queued, dequeued, left, released)",
                ),
                &["workflow", "outcome"],
            )?,
            rate_turns: IntCounterVec::new(
                Opts::new(
                    "switchyard_rate_limit_turns_total",
                    "Rate-limit turns taken, by workflow and whether they waited (immediate, delayed)",
                ),
                &["workflow", "outcome"],
            )?,
            trigger_events: IntCounterVec::new(
                Opts::new(
                    "switchyard_trigger_events_total",
                    "Tenants' events the engine handled, by outcome (started, unmatched, dead_letter, retry)",
                ),
                &["outcome"],
            )?,
            tenants: Arc::new(TenantLabels::default()),
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.handle_seconds.clone()))?;
        registry.register(Box::new(m.conflicts.clone()))?;
        registry.register(Box::new(m.started.clone()))?;
        registry.register(Box::new(m.finished.clone()))?;
        registry.register(Box::new(m.execution_seconds.clone()))?;
        registry.register(Box::new(m.sla_breaches.clone()))?;
        registry.register(Box::new(m.dlq_messages.clone()))?;
        registry.register(Box::new(m.kind_replicas.clone()))?;
        registry.register(Box::new(m.kind_unserved_seconds.clone()))?;
        registry.register(Box::new(m.schedule_ticks.clone()))?;
        registry.register(Box::new(m.trigger_events.clone()))?;
        registry.register(Box::new(m.concurrency_slots.clone()))?;
        registry.register(Box::new(m.rate_turns.clone()))?;
        Ok(m)
    }
}
