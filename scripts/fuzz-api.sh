#!/usr/bin/env bash
# Schema-driven fuzzing of the REST API (issue 6): schemathesis generates requests from the
# API's own /v1/openapi.json and checks that none gets a 5xx (and that answers match the
# documented schema). The API runs from this tree (debug build) over a fresh SQLite database
# with the test cloud's computes as nodes, validating tokens against the real Keystone of the test cloud
# (scripts/ensure-openstack.sh); requests carry an admin token, so every mutating route is
# exercised; no worker runs, so the tasks they record are never executed.
#
# Usage: scripts/fuzz-api.sh [MAX_EXAMPLES per operation, default 50]
# Not part of scripts/test (minutes, and random by nature); ADR 0013 records its last run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aos-cloud-manager/target}"
MAX_EXAMPLES=${1:-50}
PORT=${AOS_FUZZ_PORT:-19362}
VENV=$HOME/.cache/aos-cloud-manager/st-venv
if [[ ! -x $VENV/bin/st ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'schemathesis==4.32.5'
fi
scripts/ensure-openstack.sh >/dev/null
cargo build -q --bin aos-cloud-manager --bin aos-cloud-manager-api
WORK=$(mktemp -d /tmp/aos-fuzz.XXXXXX)
API_PID=
cleanup() {
    [[ -n $API_PID ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
cat >"$WORK/cloud_manager.conf" <<CONF
[DEFAULT]
log_dir = $WORK
[database]
url = sqlite:///$WORK/aos.db
[keystone_authtoken]
auth_url = http://127.0.0.1:5000/v3
username = admin
password = admin
project_name = admin
interface = public
[api]
host = 127.0.0.1
port = $PORT
audit_enabled = true
policy_file = $PWD/etc/aos/policy.json
CONF
BIN=$CARGO_TARGET_DIR/debug
CONF_ARGS=(--no-default-config-files --config-file "$WORK/cloud_manager.conf")
"$BIN/aos-cloud-manager" "${CONF_ARGS[@]}" db migrate >/dev/null
# The nodes are the test cloud's computes (no worker runs here: a recorded evacuation or
# balancing task stays pending in this throw-away database).
"$BIN/aos-cloud-manager" "${CONF_ARGS[@]}" node sync >/dev/null
"$BIN/aos-cloud-manager-api" "${CONF_ARGS[@]}" >"$WORK/api.out" 2>&1 &
API_PID=$!
for _ in $(seq 1 60); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 1
done
TOKEN=$(curl -s -i -m 10 -X POST http://127.0.0.1:5000/v3/auth/tokens -H 'Content-Type: application/json' \
    -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"admin"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' |
    grep -i '^x-subject-token' | awk '{print $2}' | tr -d '\r')
[[ -n $TOKEN ]] || { echo "fuzz-api: no token from Keystone" >&2; exit 1; }
echo "fuzz-api: schemathesis $("$VENV/bin/st" --version 2>/dev/null | awk '{print $NF}'), $MAX_EXAMPLES examples per operation, API on 127.0.0.1:$PORT"
status=0
"$VENV/bin/st" run "http://127.0.0.1:$PORT/v1/openapi.json" \
    --header "X-Auth-Token: $TOKEN" \
    --checks not_a_server_error \
    --max-examples "$MAX_EXAMPLES" \
    --request-timeout 120 \
    --workers 2 || status=$?
if grep -q 'panicked' "$WORK/api.out"; then
    echo "fuzz-api: the API panicked:" >&2
    grep -A5 panicked "$WORK/api.out" >&2
    status=1
fi
exit $status
