#!/usr/bin/env bash
# Runs every test in the workspace against real servers, the Python worker SDK's tests, then
# the HTTP API's property-based test (deploy/local/api-fuzz.sh), installing what is missing
# first:
# build tools, the pinned nats-server (tests start their own servers from it), Debian's old
# nats-server (for the unsupported-server tests), nats-py (for the Python example's test),
# promtool (for the checks of deploy/prometheus and of every process's /metrics) and
# PostgreSQL.
#
# Usage: deploy/local/test.sh [cargo test arguments...]
#   e.g. deploy/local/test.sh -p switchyard-gateway
#        deploy/local/test.sh -- --nocapture
set -euo pipefail

# shellcheck source=deploy/local/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

ensure_rust
command -v cc >/dev/null 2>&1 || ensure_apt build-essential
command -v pkg-config >/dev/null 2>&1 || ensure_apt pkg-config
ensure_nats_server
ensure_nats_py
ensure_python_sdk
ensure_python_mcp
ensure_old_nats_server
ensure_promtool
ensure_postgres_binaries
ensure_postgres
trap stop_started EXIT

cd "$SWITCHYARD_ROOT"
export SWITCHYARD_NATS_SERVER SWITCHYARD_OLD_NATS_SERVER SWITCHYARD_PYTHON SWITCHYARD_PROMTOOL DATABASE_URL

# Without a package selection, test the whole workspace.
scope=(--workspace)
for arg in "$@"; do
    case "$arg" in
    --) break ;;
    -p | --package | --package=* | -p?*) scope=() ;;
    esac
done

log cargo test "${scope[@]}" --all-targets "$@"
cargo test "${scope[@]}" --all-targets "$@"
log cargo test "${scope[@]}" --doc "$@"
cargo test "${scope[@]}" --doc "$@"
# The Python worker SDK's own tests, each against a nats-server of its own.
if [[ "$#" -eq 0 ]]; then
    log "pytest sdk/python"
    "$SWITCHYARD_PYTHON" -m pytest -q "$SWITCHYARD_ROOT/sdk/python"
fi
# The HTTP API against its own OpenAPI document, on a whole running system: with every test,
# not with a selection.
if [[ "$#" -eq 0 ]]; then
    log "deploy/local/api-fuzz.sh (schemathesis, every check, against /openapi.json)"
    bash "$SWITCHYARD_ROOT/deploy/local/api-fuzz.sh" </dev/null
fi
log "all tests passed"
