#!/usr/bin/env bash
# Makes sure a real OpenStack Watcher (watcher-api under gunicorn on 127.0.0.1:9322 and
# watcher-decision-engine) runs against the real test cloud (../shared/openstack-env:
# Keystone 127.0.0.1:5000, Nova, Placement, RabbitMQ vhost osenv) and MariaDB, for the DRS
# tests of aos-balance (docs/adr/0015-drs.md). Does nothing when the API answers and has its
# goals; otherwise installs python-watcher in its own venv (first time ~1-2 min), creates its
# database, writes its configuration and starts both services. Prints how long it took.
#
# Environment: AOS_WATCHER_DIR (state: venv, config, logs; default ~/.cache/aos-watcher).
set -euo pipefail
started=$(date +%s)
dir="${AOS_WATCHER_DIR:-$HOME/.cache/aos-watcher}"
api=http://127.0.0.1:9322
log() { printf 'ensure-watcher: %s\n' "$*" >&2; }

token() {
  curl -s -i -m 10 -X POST http://127.0.0.1:5000/v3/auth/tokens -H 'Content-Type: application/json' \
    -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"name":"Default"},"password":"admin"}}},"scope":{"project":{"name":"admin","domain":{"name":"Default"}}}}}' \
    | grep -i '^x-subject-token' | awk '{print $2}' | tr -d '\r'
}
ready() {
  local t
  [ -f "$dir/de.pid" ] && kill -0 "$(cat "$dir/de.pid")" 2>/dev/null || return 1
  t=$(token) || return 1
  [ -n "$t" ] || return 1
  curl -s -m 5 -H "X-Auth-Token: $t" "$api/v1/strategies" 2>/dev/null | grep -q host_maintenance
}

if ready; then echo "ensure-watcher: already running in $(( $(date +%s) - started ))s"; exit 0; fi

mkdir -p "$dir/logs" "$dir/state/lock"
if [ ! -x "$dir/venv/bin/watcher-decision-engine" ] || [ ! -x "$dir/venv/bin/gunicorn" ]; then
  log "installing python-watcher in $dir/venv"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --upgrade pip
  "$dir/venv/bin/pip" install -q python-watcher==17.0.0 PyMySQL==1.2.4 gunicorn==27.0.1
fi
mysql -uroot -e "CREATE DATABASE IF NOT EXISTS aos_watcher CHARACTER SET utf8mb4;
  CREATE USER IF NOT EXISTS 'aoswatcher'@'127.0.0.1' IDENTIFIED BY 'aoswatcher-pass';
  GRANT ALL ON aos_watcher.* TO 'aoswatcher'@'127.0.0.1';"
cat > "$dir/watcher.conf" <<CONF
[DEFAULT]
transport_url = rabbit://osenv:osenv-rabbit-pass@127.0.0.1:5672/osenv
log_dir = $dir/logs
state_path = $dir/state

[database]
connection = mysql+pymysql://aoswatcher:aoswatcher-pass@127.0.0.1/aos_watcher?charset=utf8

[api]
host = 127.0.0.1
port = 9322

[keystone_authtoken]
auth_type = password
auth_url = http://127.0.0.1:5000/v3
www_authenticate_uri = http://127.0.0.1:5000/v3
username = admin
password = admin
project_name = admin
user_domain_name = Default
project_domain_name = Default

[watcher_clients_auth]
auth_type = password
auth_url = http://127.0.0.1:5000/v3
username = admin
password = admin
project_name = admin
user_domain_name = Default
project_domain_name = Default

[nova_client]
api_version = 2.56

[oslo_concurrency]
lock_path = $dir/state/lock

[oslo_messaging_notifications]
driver = noop

[watcher_cluster_data_model_collectors.compute]
period = 10

[watcher_decision_engine]
# Nova's notifications are not consumed (they would compete with other consumers of the
# shared cloud's notification queues): the data model is collected every 10 s instead.
notification_topics = aos_watcher_unused.notifications
CONF
cat > "$dir/aos_watcher_wsgi.py" <<PY
import sys
sys.argv = ["watcher-api", "--config-file", "$dir/watcher.conf"]
from watcher.wsgi.api import application  # noqa: E402,F401
PY
"$dir/venv/bin/watcher-db-manage" --config-file "$dir/watcher.conf" upgrade >"$dir/logs/db-manage.out" 2>&1
# watcher-api's own server (oslo.service wsgi) refuses to run on the threading backend:
# it is served by gunicorn, as a WSGI application.
if ! [ -f "$dir/api.pid" ] || ! kill -0 "$(cat "$dir/api.pid")" 2>/dev/null; then
  nohup "$dir/venv/bin/gunicorn" --chdir "$dir" -w 1 -b 127.0.0.1:9322 aos_watcher_wsgi:application \
    >"$dir/logs/gunicorn.out" 2>&1 &
  echo $! >"$dir/api.pid"
fi
if ! [ -f "$dir/de.pid" ] || ! kill -0 "$(cat "$dir/de.pid")" 2>/dev/null; then
  nohup "$dir/venv/bin/watcher-decision-engine" --config-file "$dir/watcher.conf" >"$dir/logs/de.out" 2>&1 &
  echo $! >"$dir/de.pid"
fi
for _ in $(seq 1 120); do
  if ready; then echo "ensure-watcher: started in $(( $(date +%s) - started ))s"; exit 0; fi
  sleep 1
done
log "Watcher did not come up; see $dir/logs"
tail -n 20 "$dir/logs/gunicorn.out" "$dir/logs/watcher-decision-engine.log" >&2 || true
exit 1
