#!/usr/bin/env bash
# Runs Switchyard locally: installs and starts what it needs (nats-server, Postgres), builds
# the `switchyard` binary and runs it. Stops the servers it started when it exits, unless
# --keep is given: then they keep running (and the next run reuses them) and it prints how
# to stop them.
#
# Usage: deploy/local/run.sh [--keep]
set -euo pipefail

# shellcheck source=deploy/local/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

keep=""
for arg in "$@"; do
    case "$arg" in
    --keep) keep=1 ;;
    -h | --help)
        sed -n '2,9p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $arg (see --help)" ;;
    esac
done

# With --keep, say how to stop what was left running.
keep_hint() {
    if [[ -n "$STARTED_NATS_PID" ]]; then
        log "left running: nats-server (stop: kill $STARTED_NATS_PID)"
    fi
    if [[ -n "$STARTED_PG_DATA" ]]; then
        log "left running: Postgres (stop: $(as_pg_owner_hint)/usr/lib/postgresql/$PG_MAJOR/bin/pg_ctl -D $STARTED_PG_DATA stop)"
    fi
}
as_pg_owner_hint() {
    if [[ "$(id -u)" -eq 0 ]]; then printf 'runuser -u postgres -- '; fi
}
# Worker replicas this script started; stopped with SIGTERM on the way out.
WORKER_PIDS=()
stop_workers() {
    local pid
    for pid in "${WORKER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${WORKER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    WORKER_PIDS=()
}
if [[ -n "$keep" ]]; then
    trap 'stop_workers; keep_hint' EXIT
else
    trap 'stop_workers; stop_started' EXIT
fi

ensure_rust
command -v cc >/dev/null 2>&1 || ensure_apt build-essential
command -v pkg-config >/dev/null 2>&1 || ensure_apt pkg-config
start_nats
ensure_postgres

cd "$SWITCHYARD_ROOT"
log "cargo build --bin switchyard"
if ! cargo build --bin switchyard; then
    die "building the switchyard binary failed"
fi

log "NATS:     $SWITCHYARD_NATS_URL"
log "Postgres: $DATABASE_URL"

# --- run the system ---

switchyard="$SWITCHYARD_ROOT/target/debug/switchyard"
logs="$SWITCHYARD_HOME/logs"
mkdir -p "$logs"

log "switchyard bus apply (streams, consumers, KV buckets)"
"$switchyard" bus apply
log "switchyard bus apply, again: nothing should change"
"$switchyard" bus apply | tail -n 1

replicas="${SWITCHYARD_REPLICAS:-2}"
log "starting $replicas replicas of the test worker (logs in $logs)"
for i in $(seq 1 "$replicas"); do
    SWITCHYARD_WORKER__WORKER_ID="replica-$i" "$switchyard" worker test >"$logs/worker-$i.log" 2>&1 &
    WORKER_PIDS+=("$!")
done

log "starting the orchestrator (logs in $logs)"
SWITCHYARD_WORKER__WORKER_ID="orchestrator-1" "$switchyard" orchestrator >"$logs/orchestrator.log" 2>&1 &
WORKER_PIDS+=("$!")

log "switchyard demo: jobs published straight onto the bus, followed to their outcomes"
demo_status=0
"$switchyard" demo || demo_status=$?

log "switchyard workflow: register workflows/examples/hello.yaml and run it"
workflow_status=0
"$switchyard" workflow register workflows/examples/hello.yaml || workflow_status=$?
if [[ "$workflow_status" -eq 0 ]]; then
    "$switchyard" workflow list || workflow_status=$?
    "$switchyard" workflow run hello --input '{"name": "Switchyard"}' --timeout 60 || workflow_status=$?
fi

log "switchyard bus status"
"$switchyard" bus status || true

log "stopping the workers and the orchestrator with SIGTERM (they finish in-flight work first)"
worker_status=0
for pid in "${WORKER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
done
for pid in "${WORKER_PIDS[@]}"; do
    wait "$pid" || worker_status=$?
done
WORKER_PIDS=()

if [[ "$workflow_status" -ne 0 ]]; then
    die "the hello workflow did not complete (exit $workflow_status); logs are in $logs"
fi
if [[ "$demo_status" -ne 0 ]]; then
    die "the demo did not end as expected (exit $demo_status); worker logs are in $logs"
fi
if [[ "$worker_status" -ne 0 ]]; then
    die "a worker or the orchestrator exited with status $worker_status; see $logs"
fi
log "done: every job and the workflow ended as expected, and every process shut down cleanly"

