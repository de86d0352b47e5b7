-- One row per job that has an external effect (a Notion page, a Slack message, a ClickUp
-- task, a webhook delivery, a Markdown file). The worker claims the row before calling the
-- API and records the result after, so a redelivered job whose effect is done gets the
-- recorded result instead of a second page or message.
CREATE TABLE integration.effects (
    job_id             text PRIMARY KEY,
    operation          text NOT NULL,
    system             text NOT NULL,
    -- new: claimed row not yet started; started: a call is (or was) in flight and its outcome
    -- is unknown; not_applied: the last call is known to have had no effect; done: result holds
    -- what the operation returned.
    state              text NOT NULL CHECK (state IN ('new', 'started', 'not_applied', 'done')),
    tenant             text NOT NULL DEFAULT '',
    instance_id        text NOT NULL DEFAULT '',
    attempts           integer NOT NULL DEFAULT 0,
    -- Attempts that began while an earlier call's outcome was unknown: each may have
    -- duplicated the effect on an API without idempotency keys.
    uncertain_attempts integer NOT NULL DEFAULT 0,
    claimed_by         text,
    claimed_until      timestamptz,
    -- Partial progress of multi-call effects (the Notion page created, chunks appended), so
    -- a retry resumes instead of starting over.
    progress           jsonb,
    result             jsonb,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);

CREATE INDEX effects_unfinished ON integration.effects (updated_at) WHERE state <> 'done';
