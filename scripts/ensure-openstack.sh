#!/usr/bin/env bash
# Makes sure the real test cloud the OpenStack tests talk to is running on loopback:
# Keystone 127.0.0.1:5000, Nova 127.0.0.1:8774 and at least 3 nova-compute services up
# (../shared/openstack-env, see its README). Does nothing when that is already so; otherwise
# runs the environment's up.sh, which installs what is missing (apt, as root), starts only
# what is not running and waits for the computes. Prints how long it took.
#
# Environment:
#   OSENV_STATE_DIR      state of the cloud (venv, configs, logs): default ~/.cache/aos-osenv,
#                        outside the repository (the venv alone is ~0.5 GB / 33k files)
#   AOS_OSENV_DIR        the openstack-env directory: default ../shared/openstack-env beside
#                        the repository
#   AOS_TEST_OS_AUTH_URL, AOS_TEST_OS_USERNAME, AOS_TEST_OS_PASSWORD, AOS_TEST_OS_PROJECT
#                        what the tests use (defaults http://127.0.0.1:5000/v3, admin/admin/admin)
set -euo pipefail

started=$(date +%s)
log() { printf 'ensure-openstack: %s\n' "$*" >&2; }
took() { echo "ensure-openstack: $1 in $(( $(date +%s) - started ))s"; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
osenv_dir="${AOS_OSENV_DIR:-$repo_dir/../shared/openstack-env}"
[ -x "$osenv_dir/up.sh" ] || osenv_dir="$script_dir/../../shared/openstack-env"
export OSENV_STATE_DIR="${OSENV_STATE_DIR:-$HOME/.cache/aos-osenv}"

auth_url="${AOS_TEST_OS_AUTH_URL:-http://127.0.0.1:5000/v3}"
username="${AOS_TEST_OS_USERNAME:-admin}"
password="${AOS_TEST_OS_PASSWORD:-admin}"
project="${AOS_TEST_OS_PROJECT:-admin}"
required_computes=3

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Number of nova-compute services Nova reports up (0 when it cannot tell). Needs curl and
# python3, which a running cloud implies (up.sh installs both).
computes_up() {
    command -v curl >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1 || { echo 0; return; }
    local body headers token nova
    body=$(printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"%s","domain":{"name":"Default"},"password":"%s"}}},"scope":{"project":{"name":"%s","domain":{"name":"Default"}}}}}' \
        "$username" "$password" "$project")
    headers=$(mktemp)
    # The token goes to a temporary file and a variable, never to the terminal.
    nova=$(curl -s -m 20 -D "$headers" -H 'Content-Type: application/json' -d "$body" "${auth_url%/}/auth/tokens" |
        python3 -c 'import json,sys
try:
    catalog = json.load(sys.stdin)["token"]["catalog"]
    print(next(e["url"] for s in catalog if s["type"] == "compute" for e in s["endpoints"] if e["interface"] == "public"))
except Exception:
    pass' 2>/dev/null || true)
    token=$(awk 'tolower($1) == "x-subject-token:" { sub(/\r$/, "", $2); print $2 }' "$headers")
    rm -f "$headers"
    if [ -z "$token" ] || [ -z "$nova" ]; then echo 0; return; fi
    curl -s -m 20 -H "X-Auth-Token: $token" -H 'OpenStack-API-Version: compute 2.53' \
        "${nova%/}/os-services?binary=nova-compute" |
        python3 -c 'import json,sys
try:
    print(sum(1 for s in json.load(sys.stdin)["services"] if s["state"] == "up"))
except Exception:
    print(0)' 2>/dev/null || echo 0
}

up_count=0
cloud_ready() {
    up_count=0
    port_open 5000 && port_open 8774 || return 1
    up_count=$(computes_up)
    [ "$up_count" -ge "$required_computes" ]
}

if cloud_ready; then
    took "the test cloud is already running ($up_count nova-compute up)"
    exit 0
fi

if [ ! -x "$osenv_dir/up.sh" ]; then
    log "cannot find openstack-env/up.sh (looked in $repo_dir/../shared and $script_dir/../../shared); set AOS_OSENV_DIR"
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    log "starting the test cloud needs root (up.sh installs packages and runs MariaDB/RabbitMQ)"
    exit 1
fi

wait_ready() { # seconds
    local deadline=$((SECONDS + $1))
    until cloud_ready; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 2
    done
}

# The APIs answer but computes are missing (e.g. a test killed one): start the fake hosts
# that are not running (compute.sh start is a no-op for running ones). Re-running up.sh on a
# running cloud is not needed for that, and it can stop at `cell_v2 create_cell` when the
# cell already exists (its `list_cells | grep -q` check fails under pipefail on SIGPIPE).
if port_open 5000 && port_open 8774 && [ -x "$osenv_dir/compute.sh" ] && [ -d "$OSENV_STATE_DIR/venv" ]; then
    log "Keystone and Nova answer but only $up_count nova-compute are up: starting fake-1..fake-$required_computes"
    for i in $(seq 1 "$required_computes"); do
        "$osenv_dir/compute.sh" start "fake-$i" >&2 || true
    done
    if wait_ready 60; then
        took "the test cloud is up again ($up_count nova-compute up)"
        exit 0
    fi
fi

log "starting the test cloud with $osenv_dir/up.sh (state in $OSENV_STATE_DIR); first start takes a few minutes"
mkdir -p "$OSENV_STATE_DIR"
up_log="$OSENV_STATE_DIR/ensure-openstack.log"
if ! OSENV_COMPUTES="${OSENV_COMPUTES:-$required_computes}" "$osenv_dir/up.sh" >"$up_log" 2>&1; then
    tail -n 20 "$up_log" >&2
    # A restart over existing databases can stop at `cell_v2 create_cell` (see above). The
    # cloud is a throwaway test peer: drop its databases (the venv is kept) and start afresh.
    log "up.sh failed over the existing state; purging the test cloud's data and starting it from scratch"
    OSENV_PURGE=1 "$osenv_dir/down.sh" >>"$up_log" 2>&1 || true
    if ! OSENV_COMPUTES="${OSENV_COMPUTES:-$required_computes}" "$osenv_dir/up.sh" >>"$up_log" 2>&1; then
        tail -n 40 "$up_log" >&2
        log "up.sh failed; full output in $up_log"
        exit 1
    fi
fi

# up.sh waits for its computes; this only confirms what the tests will see.
if ! wait_ready 120; then
    log "the cloud started but $up_count < $required_computes nova-compute services are up; see $OSENV_STATE_DIR/logs"
    exit 1
fi
took "the test cloud is up ($up_count nova-compute up)"
