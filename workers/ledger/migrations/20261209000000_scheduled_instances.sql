-- Starts with `not_before` are `scheduled` until they run; instances of a concurrency key are
-- `queued` until they get a slot. A row's status moves only forward within a run: scheduled,
-- queued, running, then a final status. The fold in Rust ranks them the same way
-- (`status::rank`).
CREATE FUNCTION ledger.status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE status WHEN 'scheduled' THEN 0 WHEN 'queued' THEN 1 WHEN 'running' THEN 2 ELSE 3 END;
