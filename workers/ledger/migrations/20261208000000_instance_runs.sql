-- Re-runs: the instance's latest run (0 until it is re-run). A row follows its latest run's
-- events; a terminal status of an earlier run gives way to a later run's. A re-run may move
-- the instance to a newer version: `version_run` is the run `version` was learnt from, so the
-- later one wins whatever order the events arrive in.
ALTER TABLE ledger.instances ADD COLUMN run integer NOT NULL DEFAULT 0;
ALTER TABLE ledger.instances ADD COLUMN version_run integer NOT NULL DEFAULT 0;
