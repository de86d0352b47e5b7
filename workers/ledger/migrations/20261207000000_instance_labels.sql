-- The labels a start carried (the `started` event's `labels`), to find instances by:
-- `labels @> '{"team": "growth"}'`.
ALTER TABLE ledger.instances ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb;
CREATE INDEX instances_by_labels ON ledger.instances USING gin (labels jsonb_path_ops);
