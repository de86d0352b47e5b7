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
command -v curl >/dev/null 2>&1 || ensure_apt curl
command -v cc >/dev/null 2>&1 || ensure_apt build-essential
command -v pkg-config >/dev/null 2>&1 || ensure_apt pkg-config
# The AI Tutor example is a Python worker on the SDK in sdk/python.
ensure_python_sdk
ensure_python_mcp

cd "$SWITCHYARD_ROOT"
log "cargo build --bin switchyard"
switchyard="$(build_switchyard)"

start_nats "$switchyard"
ensure_postgres

log "NATS:     $SWITCHYARD_NATS_URL (authentication on: each process connects with its own credentials from ${SWITCHYARD_NATS__CREDENTIALS_DIR#"$SWITCHYARD_ROOT"/})"
log "Postgres: $DATABASE_URL"

# --- run the system ---

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

export SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR="$SWITCHYARD_HOME/out"
log "starting the ai worker (local provider: no key, no network) and the integration worker (Markdown sink in $SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR)"
SWITCHYARD_WORKER__WORKER_ID="ai-1" "$switchyard" worker ai >"$logs/ai.log" 2>&1 &
WORKER_PIDS+=("$!")
SWITCHYARD_WORKER__WORKER_ID="integration-1" "$switchyard" worker integration >"$logs/integration.log" 2>&1 &
WORKER_PIDS+=("$!")
log "starting the cards worker (cards in Postgres, schema cards)"
SWITCHYARD_WORKER__WORKER_ID="cards-1" "$switchyard" worker cards >"$logs/cards.log" 2>&1 &
WORKER_PIDS+=("$!")
log "starting the research worker (corpus in workers/research/corpus, no web search)"
SWITCHYARD_WORKER__WORKER_ID="research-1" "$switchyard" worker research >"$logs/research.log" 2>&1 &
WORKER_PIDS+=("$!")
log "starting the ledger (usage, instance history and audit log in Postgres, schema ledger)"
SWITCHYARD_WORKER__WORKER_ID="ledger-1" "$switchyard" ledger >"$logs/ledger.log" 2>&1 &
WORKER_PIDS+=("$!")

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

# --- an outside service: the AI Tutor, a Python worker that declares its operations ---

log "starting the AI Tutor (examples/ai_tutor, Python on the worker SDK), as the role worker-tutor"
tutor_creds="$SWITCHYARD_NATS__CREDENTIALS_DIR/worker-tutor.creds"
"$switchyard" bus credentials worker-tutor --dir "$SWITCHYARD_BUS_AUTH_DIR" --out "$tutor_creds"
"$SWITCHYARD_PYTHON" examples/ai_tutor/tutor.py --nats "$SWITCHYARD_NATS_URL" \
    --creds "$tutor_creds" --worker-id tutor-1 >"$logs/tutor.log" 2>&1 &
WORKER_PIDS+=("$!")
# Whether the engine's registry lists a live replica of kind $1 (one that answered its last
# $SRV.PING sweeps): the kind has declared its operations and serves.
kind_live() {
    "$switchyard" registry --json | python3 -c 'import json, sys
kinds = {k["kind"]: k for k in json.load(sys.stdin)["kinds"]}
sys.exit(0 if kinds.get(sys.argv[1], {}).get("replicas") else 1)' "$1"
}
tutor_live() { kind_live tutor; }
for _ in $(seq 1 100); do
    tutor_live && break
    sleep 0.2
done
log "switchyard workflow: register examples/ai_tutor/study_notes.yaml (checked against the tutor's declarations) and run it"
tutor_status=0
if "$switchyard" workflow register examples/ai_tutor/study_notes.yaml; then
    "$switchyard" workflow run study_notes --timeout 60 \
        --input '{"topic": "Ada Lovelace and the Analytical Engine"}' || tutor_status=$?
else
    tutor_status=1
fi

# Routing by capability: research_brief (shipped) names the capability `research`. While the
# tutor runs, its tutor.research takes it; after SIGTERM, the built-in research worker does.
brief_status=0
log "switchyard workflow run research_brief (capability research) while the tutor runs"
brief="$("$switchyard" workflow run research_brief --timeout 60 \
    --input '{"topic": "Ada Lovelace and the Analytical Engine"}')" || brief_status=$?
printf '%s\n' "$brief"
grep -q "tutor.research v1" <<<"$brief" || brief_status=1
log "stopping the tutor (SIGTERM); the registry sees it go within two sweeps"
tutor_pid="${WORKER_PIDS[-1]}"
kill -TERM "$tutor_pid"
wait "$tutor_pid" || brief_status=$?
unset 'WORKER_PIDS[-1]'
for _ in $(seq 1 50); do
    tutor_live || break
    sleep 0.2
done
"$switchyard" registry
log "switchyard workflow run research_brief again: now on the built-in research worker"
brief="$("$switchyard" workflow run research_brief --timeout 60 \
    --input '{"topic": "exponential backoff with jitter"}')" || brief_status=$?
printf '%s\n' "$brief"
grep -q "research.topic v1" <<<"$brief" || brief_status=1

# --- MCP, workflow side: the tutor's notes as an MCP server, its tools as declared steps ---

mcp_config="$SWITCHYARD_HOME/mcp.toml"
cat >"$mcp_config" <<TOML
# Written by deploy/local/run.sh: the AI Tutor's MCP server, spoken to over stdio.
[mcp.servers.tutor]
command = ["$SWITCHYARD_PYTHON", "$SWITCHYARD_ROOT/examples/ai_tutor/mcp_server.py"]
TOML
log "starting the mcp worker (servers in ${mcp_config#"$SWITCHYARD_ROOT"/}: the tutor's notes over stdio)"
SWITCHYARD_WORKER__WORKER_ID="mcp-1" "$switchyard" worker mcp --config "$mcp_config" >"$logs/mcp.log" 2>&1 &
WORKER_PIDS+=("$!")
log "switchyard workflow: register workflows/examples/tutor_notes.yaml (its steps are the server's tools, checked against their schemas) and run it"
for _ in $(seq 1 100); do
    kind_live mcp && break
    sleep 0.2
done
mcp_status=1
for _ in $(seq 1 100); do
    if "$switchyard" workflow register workflows/examples/tutor_notes.yaml 2>/dev/null; then
        mcp_status=0
        break
    fi
    sleep 0.2
done
if [[ "$mcp_status" -eq 0 ]]; then
    "$switchyard" workflow run tutor_notes --timeout 60 \
        --input '{"topic": "the Analytical Engine"}' || mcp_status=$?
else
    "$switchyard" workflow register workflows/examples/tutor_notes.yaml || true
fi

# --- the same over HTTP, through the gateway ---

# A development signing key for this run, unless one is configured.
if [[ -z "${SWITCHYARD_GATEWAY__AUTH__SECRET:-}" ]]; then
    SWITCHYARD_GATEWAY__AUTH__SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    export SWITCHYARD_GATEWAY__AUTH__SECRET
fi
http_port="${SWITCHYARD_GATEWAY_PORT:-8380}"
if port_open "$http_port"; then
    die "port $http_port is taken; choose another with SWITCHYARD_GATEWAY_PORT"
fi
export SWITCHYARD_HTTP_ADDR="127.0.0.1:$http_port"
base="http://$SWITCHYARD_HTTP_ADDR"
log "starting the gateway on $base (logs in $logs)"
"$switchyard" gateway >"$logs/gateway.log" 2>&1 &
WORKER_PIDS+=("$!")
http_status=0
for _ in $(seq 1 100); do
    if curl -sf "$base/ready" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
if ! curl -sf "$base/ready" >/dev/null; then
    http_status=1
    warn "the gateway did not become ready; see $logs/gateway.log"
else
    token="$("$switchyard" token --tenant demo --role operator)"
    log "POST $base/api/v1/workflows/execute (hello, wait up to 30 s)"
    result="$(curl -sS -X POST "$base/api/v1/workflows/execute" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d '{"workflow_type": "hello", "name": "HTTP", "wait": 30}')" || http_status=$?
    printf '%s\n' "$result" | head -c 600
    printf '\n'
    instance="$(printf '%s' "$result" | sed -n 's/.*"instance_id":"\([^"]*\)".*/\1/p')"
    if [[ "$result" != *'"status":"completed"'* || -z "$instance" ]]; then
        http_status=1
        warn "execute did not return a completed instance"
    else
        log "GET $base/api/v1/workflows/instances/$instance/events (Server-Sent Events)"
        events="$(curl -sSN --max-time 20 "$base/api/v1/workflows/instances/$instance/events" \
            -H "Authorization: Bearer $token" | grep '^event:' | sed 's/^event: */  /')" || http_status=$?
        printf '%s\n' "$events"
        [[ "$events" == *completed* ]] || {
            http_status=1
            warn "the event stream did not end with completed"
        }
    fi

    log "MCP, caller side: the official Python SDK's client runs hello as a tool at $base/mcp"
    "$SWITCHYARD_PYTHON" examples/python/mcp_client.py "$base/mcp" "$token" hello \
        '{"name": "MCP"}' || {
        http_status=1
        warn "the MCP client did not get hello's output"
    }

    sample="workers/ai/samples/meetings/product_sync.vtt"
    log "POST $base/api/v1/workflows/execute (meeting_to_tasks on $sample: local AI provider, Markdown sink)"
    body="$(python3 -c 'import json, sys
print(json.dumps({"workflow_type": "meeting_to_tasks", "wait": 60,
    "transcript": open(sys.argv[1]).read(), "meeting_title": "Product sync", "meeting_date": "2025-03-12"}))' "$sample")"
    meeting="$(curl -sS -X POST "$base/api/v1/workflows/execute" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "$body")" || http_status=$?
    notes="$(printf '%s' "$meeting" | python3 -c 'import json, sys
s = json.load(sys.stdin)
if s.get("status") != "completed":
    sys.exit("meeting_to_tasks: " + json.dumps(s)[:800])
o = s["output"]
print("  speakers:", ", ".join(o["speakers"]))
print("  tasks:")
for t in o["tasks"]:
    print("   -", t["title"], "|", t.get("assignee") or "unassigned", "|", t.get("due") or "no date", "|", t["priority"])
print(o["notes"])')" || http_status=1
    if [[ "$http_status" -eq 0 ]]; then
        printf '%s\n' "$notes" | sed '$d'
        notes_file="$SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR/demo/$(printf '%s\n' "$notes" | tail -n 1)"
        log "the meeting notes, $notes_file:"
        sed 's/^/  | /' "$notes_file" | head -n 40
    else
        warn "meeting_to_tasks did not complete over HTTP"
    fi

    log "POST $base/api/v1/workflows/execute (research_to_docs on the shipped corpus, Markdown sink)"
    research="$(curl -sS -X POST "$base/api/v1/workflows/execute" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d '{"workflow_type": "research_to_docs", "wait": 60, "topic": "circuit breaker half-open state", "difficulty": "beginner"}')" || http_status=$?
    doc="$(printf '%s' "$research" | python3 -c 'import json, sys
s = json.load(sys.stdin)
if s.get("status") != "completed":
    sys.exit("research_to_docs: " + json.dumps(s)[:800])
print(s["output"]["path"])')" || http_status=1
    if [[ "$http_status" -eq 0 ]]; then
        doc_file="$SWITCHYARD_INTEGRATION__MARKDOWN__OUTPUT_DIR/demo/$doc"
        log "the research document, $doc_file:"
        sed 's/^/  | /' "$doc_file" | head -n 30
    else
        warn "research_to_docs did not complete over HTTP"
    fi

    log "POST $base/api/v1/onboarding (answers → company, audience, voice and insight cards)"
    onboarding="$(curl -sS -X POST "$base/api/v1/onboarding" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d '{"answers": {"company_name": "Acme Freight", "company_description": "Acme Freight moves containers for 300 importers across Europe.", "industry": "logistics", "audience": "People who plan inbound freight at mid-size importers.", "audience_roles": ["logistics managers", "supply chain leads"], "tone": "friendly and direct", "insight": "Late containers cost more than slow ones.", "evidence": "Customers forgive slow delivery; late containers break warehouse schedules."}}')" || http_status=$?
    card_ids="$(printf '%s' "$onboarding" | python3 -c 'import json, sys
s = json.load(sys.stdin)
if len(s.get("card_ids", [])) != 4:
    sys.exit("onboarding: " + json.dumps(s)[:800])
print(json.dumps(s["card_ids"]))')" || http_status=1
    if [[ "$http_status" -eq 0 ]]; then
        log "cards: $card_ids"
        log "POST $base/api/v1/workflows/execute (linkedin_post on those cards)"
        linkedin="$(curl -sS -X POST "$base/api/v1/workflows/execute" \
            -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
            -d "{\"workflow_type\": \"linkedin_post\", \"wait\": 60, \"card_ids\": $card_ids, \"additional_context\": \"We publish our on-time rate every month.\"}")" || http_status=$?
        printf '%s' "$linkedin" | python3 -c 'import json, sys
s = json.load(sys.stdin)
if s.get("status") != "completed":
    sys.exit("linkedin_post: " + json.dumps(s)[:800])
print("\n".join("  | " + line for line in s["output"]["post"].splitlines()))' || http_status=1
    else
        warn "onboarding did not create the four cards"
    fi

    # The ledger writes in batches (ledger.batch_wait, 200ms by default); give it a moment.
    sleep 1
    log "GET $base/api/v1/usage (this month, per meter, from the ledger)"
    usage="$(curl -sS "$base/api/v1/usage" -H "Authorization: Bearer $token")" || http_status=$?
    printf '%s' "$usage" | python3 -c 'import json, sys
s = json.load(sys.stdin)
if "usage" not in s:
    sys.exit("usage: " + json.dumps(s)[:800])
print("  %s, %s to %s:" % (s["tenant"], s["from"], s["to"]))
for r in s["usage"] or [{"meter": "(none yet)", "quantity": 0, "unit": "", "events": 0}]:
    print("  %-24s %12g %-8s in %d events" % (r["meter"], r["quantity"], r["unit"], r["events"]))' || http_status=1
    log "GET $base/api/v1/workflows/instances?limit=5 (newest first, from the ledger)"
    instances="$(curl -sS "$base/api/v1/workflows/instances?limit=5" -H "Authorization: Bearer $token")" || http_status=$?
    printf '%s' "$instances" | python3 -c 'import json, sys
s = json.load(sys.stdin)
if "instances" not in s:
    sys.exit("instances: " + json.dumps(s)[:800])
for i in s["instances"]:
    took = "" if i["duration_ms"] is None else "%d ms" % i["duration_ms"]
    print("  %s  %-20s %-10s %s" % (i["instance_id"], i["workflow"] or "?", i["status"], took))' || http_status=1
fi

log "switchyard bus status"
"$switchyard" bus status || true

# The demo's failing jobs are in the DLQ on purpose; `switchyard dlq show SEQ` and
# `switchyard dlq replay SEQ` inspect and replay one (docs/recovery.md).
log "switchyard dlq list"
dlq_status=0
"$switchyard" dlq list || dlq_status=$?

log "stopping the gateway, the workers and the orchestrator with SIGTERM (they finish in-flight work first)"
worker_status=0
for pid in "${WORKER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
done
for pid in "${WORKER_PIDS[@]}"; do
    wait "$pid" || worker_status=$?
done
WORKER_PIDS=()

if [[ "$dlq_status" -ne 0 ]]; then
    die "switchyard dlq list failed (exit $dlq_status); logs are in $logs"
fi
if [[ "$http_status" -ne 0 ]]; then
    die "the workflow over HTTP did not complete (exit $http_status); logs are in $logs"
fi
if [[ "$workflow_status" -ne 0 ]]; then
    die "the hello workflow did not complete (exit $workflow_status); logs are in $logs"
fi
if [[ "$brief_status" -ne 0 ]]; then
    die "research_brief did not run on the tutor and then on the built-in research worker (exit $brief_status)"
fi
if [[ "$tutor_status" -ne 0 ]]; then
    die "the AI Tutor's study_notes workflow did not complete (exit $tutor_status); see $logs/tutor.log"
fi
if [[ "$mcp_status" -ne 0 ]]; then
    die "tutor_notes did not run on the tutor's MCP server (exit $mcp_status); see $logs/mcp.log"
fi
if [[ "$demo_status" -ne 0 ]]; then
    die "the demo did not end as expected (exit $demo_status); worker logs are in $logs"
fi
if [[ "$worker_status" -ne 0 ]]; then
    die "a worker or the orchestrator exited with status $worker_status; see $logs"
fi
log "done: every job and the workflows (over the bus, from the Python tutor, over MCP and over HTTP) ended as expected, and every process shut down cleanly"

