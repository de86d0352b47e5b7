#!/usr/bin/env bash
# The standard benchmark suite (`make bench`): Switchyard against the bus's own limit and
# against Celery, on this machine, in one run.
#
# It installs what is missing (the pinned nats-server and Celery into .switchyard/venv,
# redis-server from apt), builds the release binaries it needs (timed separately), starts its
# own Redis on a free port with a temporary directory (never a Redis already running), runs the
# Celery reference, then `switchyard-loadtest suite`, which starts a fresh nats-server from the
# venv for every scenario. Results, charts and the summary go to loadtest/results/.
#
# Exits 0 only if every scenario verified that all the work it started completed.
#
# Usage: loadtest/bench.sh [extra `switchyard-loadtest suite` flags, e.g. --http-seconds 5]
# Environment: BENCH_CHAINS (default 2000), chains per Switchyard/Celery throughput run.
set -euo pipefail

# shellcheck source=deploy/local/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../deploy/local/env.sh"

CHAINS="${BENCH_CHAINS:-2000}"
RESULTS="loadtest/results"
REDIS_PID=""
REDIS_DIR=""

cleanup() {
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    [[ -z "$REDIS_DIR" ]] || rm -rf "$REDIS_DIR"
    stop_started
}
trap cleanup EXIT

cd "$SWITCHYARD_ROOT"
ensure_rust
command -v cc >/dev/null 2>&1 || ensure_apt build-essential
ensure_nats_server
export SWITCHYARD_NATS_SERVER
# The Python SDK, for the python-worker scenario.
ensure_python_sdk
export SWITCHYARD_PYTHON="$SWITCHYARD_HOME/venv/bin/python3"

# Celery, pinned, into the project's venv (ensure_nats_server created it).
VENV="$SWITCHYARD_HOME/venv"
if ! "$VENV/bin/python3" - <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
want = {l.split("==")[0].split("[")[0]: l.split("==")[1].strip()
        for l in open("loadtest/celery/requirements.txt")
        if "==" in l and not l.startswith("#")}
sys.exit(any(version(k) != v for k, v in want.items()))
PY
    log "pip install -r loadtest/celery/requirements.txt"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
        -r loadtest/celery/requirements.txt
fi
command -v redis-server >/dev/null 2>&1 || ensure_apt redis-server

log "building release binaries"
build_started=$SECONDS
cargo build --release --quiet -p switchyard-loadtest -p switchyard-orchestrator \
    -p switchyard-test-worker -p switchyard-gateway
BUILD_S=$((SECONDS - build_started))
log "build took ${BUILD_S} s (not counted in the suite's time)"

suite_started=$SECONDS
mkdir -p "$RESULTS"

# Our own Redis: a free port, a temporary directory, no persistence.
REDIS_DIR="$(mktemp -d)"
REDIS_PORT="$("$VENV/bin/python3" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --save '' \
    --appendonly no --daemonize no --logfile "$REDIS_DIR/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
    port_open "$REDIS_PORT" && break
    sleep 0.1
done
port_open "$REDIS_PORT" || die "redis-server did not start; see $REDIS_DIR/redis.log"
log "redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

log "Celery reference: $CHAINS chains of 1 and 3 no-op tasks"
"$VENV/bin/python3" loadtest/celery/bench.py --redis-url "redis://127.0.0.1:$REDIS_PORT/0" \
    --chains "$CHAINS" --out "$RESULTS/celery.json"
kill -TERM "$REDIS_PID" 2>/dev/null || true
wait "$REDIS_PID" 2>/dev/null || true
REDIS_PID=""

log "Switchyard suite"
status=0
# A failure is one clear line per scenario, not a backtrace.
RUST_LIB_BACKTRACE=0 target/release/switchyard-loadtest suite --celery "$RESULTS/celery.json" \
    --results "$RESULTS" "$@" || status=$?

log "suite took $((SECONDS - suite_started)) s; release build took ${BUILD_S} s before it"
exit "$status"
