-- Starts with `not_before` are `scheduled` until they run. A row's status moves only forward
-- within a run: scheduled, then running, then a final status. The fold in Rust ranks them the
-- same way (`status::rank`).
CREATE FUNCTION ledger.status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE status WHEN 'scheduled' THEN 0 WHEN 'running' THEN 1 ELSE 2 END;
