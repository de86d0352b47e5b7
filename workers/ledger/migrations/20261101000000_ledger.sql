-- The usage ledger, the instance read model and the audit log. Everything here is derived from
-- the USAGE, WF_EVENTS and AUDIT streams and can be rebuilt from them (`switchyard ledger
-- rebuild`), so no column holds a value the streams do not carry (no ingestion time).

-- One row per usage event, keyed by its id: an event stored twice in the stream (republished
-- outside the duplicate window, or redelivered) is counted once.
CREATE TABLE ledger.usage_events (
    event_id    text PRIMARY KEY,
    tenant      text NOT NULL,
    meter       text NOT NULL,
    -- numeric, not float: sums are exact whatever order events arrive in.
    quantity    numeric NOT NULL,
    unit        text NOT NULL,
    instance_id text NOT NULL DEFAULT '',
    step_id     text NOT NULL DEFAULT '',
    operation   text NOT NULL DEFAULT '',
    at_ms       bigint NOT NULL,
    -- The UTC day of `at_ms`, the rollups' key.
    day         date NOT NULL,
    attributes  jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX usage_events_by_tenant_day ON ledger.usage_events (tenant, day);
CREATE INDEX usage_events_by_instance ON ledger.usage_events (tenant, instance_id);

-- Per tenant, meter, unit and UTC day: the sum of the events above, updated in the same
-- transaction from newly inserted rows only.
CREATE TABLE ledger.usage_daily (
    tenant   text NOT NULL,
    day      date NOT NULL,
    meter    text NOT NULL,
    unit     text NOT NULL,
    quantity numeric NOT NULL,
    events   bigint NOT NULL,
    PRIMARY KEY (tenant, day, meter, unit)
);

-- One row per workflow instance, folded from its events in any order: a terminal status is
-- never overwritten by `running`, times only move towards the first start and the last event.
CREATE TABLE ledger.instances (
    tenant            text NOT NULL,
    instance_id       text NOT NULL,
    workflow          text NOT NULL DEFAULT '',
    version           integer,
    -- running, completed, failed or cancelled.
    status            text NOT NULL,
    correlation_id    text NOT NULL DEFAULT '',
    started_at_ms     bigint,
    finished_at_ms    bigint,
    duration_ms       bigint,
    error_code        text,
    failed_step       text,
    -- Steps whose SLA deadline passed without a signal, sorted, each once.
    sla_breached_steps text[] NOT NULL DEFAULT '{}',
    -- The earliest event time seen: the listing order (newest first) and the time filters.
    created_at_ms     bigint NOT NULL,
    last_event_at_ms  bigint NOT NULL,
    PRIMARY KEY (tenant, instance_id)
);

CREATE INDEX instances_by_tenant_time ON ledger.instances (tenant, created_at_ms DESC, instance_id DESC);
CREATE INDEX instances_by_workflow ON ledger.instances (tenant, workflow, created_at_ms DESC);
CREATE INDEX instances_by_correlation ON ledger.instances (tenant, correlation_id);

-- Who did what: definition changes, cancellations, signals, refused credentials.
CREATE TABLE ledger.audit_log (
    event_id       text PRIMARY KEY,
    tenant         text NOT NULL,
    actor          text NOT NULL DEFAULT '',
    action         text NOT NULL,
    target         text NOT NULL DEFAULT '',
    outcome        text NOT NULL DEFAULT '',
    at_ms          bigint NOT NULL,
    correlation_id text NOT NULL DEFAULT '',
    attributes     jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_log_by_tenant_time ON ledger.audit_log (tenant, at_ms DESC, event_id DESC);
