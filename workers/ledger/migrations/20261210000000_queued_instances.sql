-- Instances of a concurrency key are `queued` until they get a slot: between scheduled and
-- running. A row's status moves only forward within a run: scheduled, queued, running, then a
-- final status; the fold in Rust ranks them the same way (`status::rank`).
CREATE OR REPLACE FUNCTION ledger.status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE status WHEN 'scheduled' THEN 0 WHEN 'queued' THEN 1 WHEN 'running' THEN 2 ELSE 3 END;
