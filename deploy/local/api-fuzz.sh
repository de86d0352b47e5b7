#!/usr/bin/env bash
# The HTTP API's property-based test: starts a whole local system on its own ports (the bus with
# authentication on, Postgres, every worker kind, the ledger, the orchestrator and the gateway)
# and runs schemathesis, every check, against the gateway's own /openapi.json. Any failure,
# server error or crash fails it: the document and the validation must agree.
#
# Usage: deploy/local/api-fuzz.sh [extra schemathesis run arguments...]
#   e.g. deploy/local/api-fuzz.sh --max-examples 100
#        deploy/local/api-fuzz.sh --include-path /api/v1/cards
# Environment: SWITCHYARD_FUZZ_SEED (default 1; `random` for a fresh one),
#   SWITCHYARD_FUZZ_EXAMPLES (cases per operation, default 20), SWITCHYARD_FUZZ_NATS_PORT,
#   SWITCHYARD_FUZZ_HTTP_PORT.
set -euo pipefail

# shellcheck source=deploy/local/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# Its own ports and store, so it runs beside run.sh and the tests.
export SWITCHYARD_NATS_PORT="${SWITCHYARD_FUZZ_NATS_PORT:-4398}"
export SWITCHYARD_NATS_MONITOR_PORT="$((SWITCHYARD_NATS_PORT + 4000))"
work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-api-fuzz.XXXXXX")"
export SWITCHYARD_NATS_STORE="$work/nats"
export SWITCHYARD_BUS_AUTH_DIR="$work/bus"
logs="$work/logs"
mkdir -p "$logs"

PIDS=()
finish() {
    local status=$? pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_started
    if [[ "$status" -ne 0 ]]; then
        warn "the API's property-based test failed; the processes' logs:"
        tail -n 5 "$logs"/*.log >&2 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap finish EXIT

ensure_rust
ensure_schemathesis
ensure_postgres_binaries
ensure_postgres

cd "$SWITCHYARD_ROOT"
log "cargo build --bin switchyard"
switchyard="$(build_switchyard)"

start_nats "$switchyard"
"$switchyard" bus apply >/dev/null

# Markdown documents go to this run's directory; rate limits are off: the test sends far more
# requests per second than a tenant's defaults allow, and a 429 is not what it checks.
export SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR="$work/out"
for group in START CONTROL READ DEFINITIONS RESEARCH REFUSED; do
    export "SWITCHYARD_GATEWAY__RATE_LIMITS__$group=off"
done
SWITCHYARD_GATEWAY__AUTH__SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export SWITCHYARD_GATEWAY__AUTH__SECRET

# ClickUp, on a loopback server that speaks its API, so task routes run their whole path.
clickup_port_file="$work/clickup.port"
"$SWITCHYARD_PYTHON" "$SWITCHYARD_ROOT/deploy/local/clickup_loopback.py" pk_fuzz >"$clickup_port_file" 2>"$logs/clickup.log" &
PIDS+=("$!")
for _ in $(seq 1 50); do
    [[ -s "$clickup_port_file" ]] && break
    sleep 0.1
done
[[ -s "$clickup_port_file" ]] || die "the loopback ClickUp did not start"
export SWITCHYARD_INTEGRATION__TENANTS__FUZZ__CLICKUP__TOKEN=pk_fuzz
SWITCHYARD_INTEGRATION__TENANTS__FUZZ__CLICKUP__BASE_URL="http://127.0.0.1:$(cat "$clickup_port_file")"
export SWITCHYARD_INTEGRATION__TENANTS__FUZZ__CLICKUP__BASE_URL

start() {
    local name="$1"
    shift
    SWITCHYARD_WORKER__WORKER_ID="$name-fuzz" "$switchyard" "$@" >"$logs/$name.log" 2>&1 &
    PIDS+=("$!")
}
start test worker test
start ai worker ai
start integration worker integration
start cards worker cards
start research worker research
start ledger ledger
start orchestrator orchestrator

http_port="${SWITCHYARD_FUZZ_HTTP_PORT:-8397}"
port_open "$http_port" && die "port $http_port is taken; choose another with SWITCHYARD_FUZZ_HTTP_PORT"
export SWITCHYARD_HTTP_ADDR="127.0.0.1:$http_port"
base="http://$SWITCHYARD_HTTP_ADDR"
start gateway gateway
for _ in $(seq 1 150); do
    if curl -sf "$base/ready" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
curl -sf "$base/ready" >/dev/null || die "the gateway did not become ready"

# A registered workflow, so that reads and starts by name have something to find.
"$switchyard" workflow register workflows/examples/hello.yaml >/dev/null

# The deployment's operator (`platform`): every route is open to it, so no refusal is about the role.
token="$("$switchyard" token --tenant fuzz --role platform)"

seed="${SWITCHYARD_FUZZ_SEED:-1}"
seed_args=()
[[ "$seed" == random ]] || seed_args=(--seed "$seed")
log "schemathesis ${SCHEMATHESIS_VERSION}: every check against $base/openapi.json (seed $seed)"
SCHEMATHESIS_HOOKS="$SWITCHYARD_ROOT/deploy/local/api_fuzz_hooks.py" \
    "$SWITCHYARD_SCHEMATHESIS" --config-file "$SWITCHYARD_ROOT/deploy/local/schemathesis.toml" \
    run "$base/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --max-examples "${SWITCHYARD_FUZZ_EXAMPLES:-20}" \
    --workers 1 \
    --request-timeout 30 \
    --generation-database none \
    --generation-allow-x00 false \
    --no-color \
    "${seed_args[@]}" \
    "$@"
log "the API agrees with its document"
