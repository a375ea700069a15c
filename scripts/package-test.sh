#!/usr/bin/env bash
# The Debian packages, built and exercised on this machine (issue 9, docs/adr/0011-packaging.md):
#   build (dpkg-buildpackage, binaries in the shared CARGO_TARGET_DIR) -> lintian -> dpkg -i
#   -> systemd-analyze verify of the installed units -> man pages -> `aos-cloud-manager
#   --version` -> as the aos user: `configure` and `db migrate` on a fresh MariaDB database ->
#   daemons started from their installed units' User= and ExecStart= and seen ready on
#   /readyz (the listener; the agent's controller role, then its node role) -> upgrade to a
#   newer build (the admin's /etc/aos edits and the database must be untouched) -> remove
#   (everything kept) -> purge (conffiles and logs gone; data, admin files and the aos user
#   kept, as documented).
# Everything it installs or creates (packages, database and its user, a RabbitMQ vhost, the aos
# user when it did not exist, files under /etc/aos, /var/lib/aos, /var/log/aos) is removed
# at exit, success or not; the build tools it installs (debhelper, lintian) stay.
#
# Needs root, MariaDB and RabbitMQ on 127.0.0.1 (scripts/ensure-services.sh starts them).
# Refuses to run where aos-cloud-manager is installed for real or /etc/aos already exists.
# Environment: AOS_PKGTEST_KEEP=1 keeps the built .deb files (their directory is printed);
# AOS_DEB_PROFILE=dev packages the binaries of scripts/test's `cargo test --workspace` build
# instead of a release build (debian/rules; what scripts/test's last step uses), release
# (the default) is what is shipped.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aos-cloud-manager/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export DEBIAN_FRONTEND=noninteractive
export AOS_DEB_PROFILE="${AOS_DEB_PROFILE:-release}"

PACKAGES=(aos-cloud-manager aos-cloud-manager-api aos-cloud-manager-listener aos-cloud-manager-beat
    aos-cloud-manager-worker aos-cloud-manager-agent aos-cloud-manager-node-agent)
# Each unit is in the package of the same name.
UNITS=(aos-cloud-manager-api aos-cloud-manager-listener aos-cloud-manager-beat aos-cloud-manager-worker
    aos-cloud-manager-agent aos-cloud-manager-node-agent)
BINARIES=(aos-cloud-manager aos-cloud-manager-api aos-cloud-manager-listener aos-cloud-manager-beat
    aos-cloud-manager-worker aos-cloud-manager-agent)
# The daemon started from its unit before and after the upgrade: the listener becomes ready
# with MariaDB and RabbitMQ alone (the beat and the worker also wait for Keystone).
ROLE=listener
STATE_FILE=/var/tmp/aos-pkgtest.state # what a run created, for the next run if this one was killed

START=$SECONDS
step() { printf '== %s (%ss)\n' "$*" "$((SECONDS - START))"; }
fail() {
    printf 'package-test: FAIL: %s\n' "$*" >&2
    exit 1
}
check() { # check DESCRIPTION COMMAND...: runs COMMAND, fails with DESCRIPTION when it fails
    local description=$1
    shift
    if "$@"; then echo "   ok: $description"; else fail "$description"; fi
}

[[ $(id -u) == 0 ]] || fail "run as root: it installs packages and creates a system user"
# One run at a time on a machine (it installs system-wide packages and a user).
exec 9>/var/lock/aos-pkgtest.lock
flock -w 1800 9 || fail "another package test has held /var/lock/aos-pkgtest.lock for 30 min"

# --- tools -----------------------------------------------------------------------------------
APT_UPDATED=
apt_install() {
    if ! apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
        [[ -n $APT_UPDATED ]] && return 1
        apt-get update -q >/dev/null
        APT_UPDATED=1
        apt-get install -y -q --no-install-recommends "$@" >/dev/null
    fi
}
need_tools=()
command -v dpkg-buildpackage >/dev/null || need_tools+=(dpkg-dev)
command -v dh >/dev/null || need_tools+=(debhelper)
command -v lintian >/dev/null || need_tools+=(lintian)
command -v systemd-analyze >/dev/null || need_tools+=(systemd)
command -v curl >/dev/null || need_tools+=(curl)
command -v mariadb >/dev/null || need_tools+=(mariadb-client)
command -v help2man >/dev/null || need_tools+=(help2man)
command -v man >/dev/null || need_tools+=(man-db)
if ((${#need_tools[@]})); then
    step "installing build and test tools: ${need_tools[*]}"
    apt_install "${need_tools[@]}"
fi

mysql_root() { mariadb --protocol=socket -uroot -N -B "$@"; }
rabbitmqctl_q() { rabbitmqctl -q "$@" 2>/dev/null; }

# --- clean-up (also of a previous run that was killed) ---------------------------------------
purge_packages() {
    local installed=()
    for package in "${PACKAGES[@]}"; do
        if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -qv 'not-installed'; then
            installed+=("$package")
        fi
    done
    if ((${#installed[@]})); then dpkg --purge "${installed[@]}" >/dev/null; fi
}
cleanup_state() { # undoes what STATE_FILE records
    [[ -f $STATE_FILE ]] || return 0
    local db='' db_user='' vhost='' created_user='' daemon_pid='' out=''
    # shellcheck disable=SC1090
    source "$STATE_FILE"
    # Only if that pid is still one of our daemons (not a pid reused after a reboot).
    if [[ -n $daemon_pid ]] && [[ $(readlink "/proc/$daemon_pid/exe" 2>/dev/null) == /usr/bin/aos-cloud-manager* ]]; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        sleep 2
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    purge_packages
    if [[ -n $db ]]; then mysql_root -e "DROP DATABASE IF EXISTS \`$db\`" || true; fi
    if [[ -n $db_user ]]; then mysql_root -e "DROP USER IF EXISTS '$db_user'@'127.0.0.1'" || true; fi
    if [[ -n $vhost ]]; then rabbitmqctl_q delete_vhost "$vhost" >/dev/null || true; fi
    rm -rf /etc/aos /var/log/aos /var/lib/aos
    # A killed run's packages and logs (this run's own: cleanup below, AOS_PKGTEST_KEEP).
    if [[ $out == /tmp/aos-pkgtest.* && $out != "$OUT" ]]; then rm -rf "$out"; fi
    if [[ $created_user == 1 ]]; then
        if getent passwd aos >/dev/null; then deluser --quiet --system aos >/dev/null 2>&1 || userdel aos; fi
        if getent group aos >/dev/null; then delgroup --quiet --system aos >/dev/null 2>&1 || groupdel aos; fi
    fi
    rm -f "$STATE_FILE"
}
OUT=
cleanup() {
    local status=$?
    set +e
    cleanup_state
    (cd "$SRC" && debian/rules clean >/dev/null 2>&1)
    if [[ -n $OUT ]]; then
        if [[ ${AOS_PKGTEST_KEEP:-} == 1 ]]; then echo "packages kept in $OUT"; else rm -rf "$OUT"; fi
    fi
    if ((status == 0)); then
        step "package-test: all checks passed, machine cleaned up"
    else
        echo "package-test: failed (exit $status); machine cleaned up" >&2
    fi
    exit "$status"
}

if [[ -f $STATE_FILE ]]; then
    step "cleaning up after an interrupted run ($STATE_FILE)"
    cleanup_state
fi
if dpkg-query -W -f='${Status}\n' "${PACKAGES[@]}" 2>/dev/null | grep -q '^install ok'; then
    fail "aos-cloud-manager packages are installed on this machine: not touching a real installation"
fi
[[ ! -e /etc/aos ]] || fail "/etc/aos exists: not touching a real installation"

suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
DB=aos_pkgtest_$suffix
DB_USER=aos_pkgtest_$suffix
DB_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
VHOST=aos-pkgtest-$suffix # its queues and exchanges go with it at the end
CREATED_USER=0
getent passwd aos >/dev/null || CREATED_USER=1
record_state() {
    printf 'db=%q\ndb_user=%q\nvhost=%q\ncreated_user=%q\ndaemon_pid=%q\nout=%q\n' \
        "$DB" "$DB_USER" "$VHOST" "$CREATED_USER" "${DAEMON_PID:-}" "$OUT" >"$STATE_FILE"
}
OUT=$(mktemp -d /tmp/aos-pkgtest.XXXXXX)
record_state
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 0755 "$OUT"

# --- build -----------------------------------------------------------------------------------
UPSTREAM_VERSION=$(dpkg-parsechangelog -l debian/changelog -S Version)
UPGRADE_VERSION="$UPSTREAM_VERSION+pkgtest1"
build() { # build DESTDIR [VERSION]
    local destdir=$1 version=${2:-}
    mkdir -p "$destdir"
    AOS_DEB_DESTDIR=$destdir AOS_DEB_VERSION=$version \
        dpkg-buildpackage -b -us -uc --no-sign \
        --buildinfo-option="-u$destdir" --changes-option="-u$destdir" \
        --buildinfo-file="$destdir/aos-cloud-manager.buildinfo" \
        --changes-file="$destdir/aos-cloud-manager.changes" >"$destdir/build.log" 2>&1 ||
        {
            tail -40 "$destdir/build.log"
            fail "dpkg-buildpackage failed (log above)"
        }
    debian/rules clean >/dev/null 2>&1
}
cargo_summary() { # what cargo did in a package build's log
    echo "   cargo compiled $(grep -c '^ *Compiling' "$1") crates; $(grep -E '^ *Finished' "$1" | tail -1 | sed 's/^ *//')"
}
step "building the packages $UPSTREAM_VERSION (dpkg-buildpackage; AOS_DEB_PROFILE=$AOS_DEB_PROFILE, cargo in $CARGO_TARGET_DIR)"
build "$OUT/v1"
cargo_summary "$OUT/v1/build.log"
for package in "${PACKAGES[@]}"; do
    deb=$(echo "$OUT/v1/${package}_${UPSTREAM_VERSION}_"*.deb)
    [[ -f $deb ]] || fail "missing $package .deb"
    printf '   %-32s %6s KiB (installed %s KiB)\n' "$package" "$(($(stat -c %s "$deb") / 1024))" \
        "$(dpkg-deb -f "$deb" Installed-Size)"
done

step "lintian (fails on any error or warning not overridden in debian/*.lintian-overrides, with the reason)"
# One run shows everything (O: = overridden, with the reason as N: lines); an E: or W: line
# left is a failure. (--fail-on would count overridden tags once --show-overrides is given.)
lintian --fail-on none --display-info --show-overrides --tag-display-limit 0 "$OUT"/v1/*.deb \
    2>&1 | grep -v '^running with root privileges' >"$OUT/lintian.log" || true
sed 's/^/   /' "$OUT/lintian.log"
if grep -q '^[EW]: ' "$OUT/lintian.log"; then fail "lintian: errors or warnings not overridden (above)"; fi
grep -q '^[EWIO]: ' "$OUT/lintian.log" || fail "lintian printed no tag at all: did it run?"

step "maintainer scripts: units enabled, never started; stopped before upgrade and removal"
for unit in "${UNITS[@]}"; do
    control=$OUT/control/$unit
    mkdir -p "$OUT/control"
    dpkg-deb -e "$(echo "$OUT/v1/${unit}_${UPSTREAM_VERSION}_"*.deb)" "$control"
    check "$unit: postinst enables, never starts" sh -c "grep -q \"deb-systemd-helper enable '$unit.service'\" '$control/postinst' &&
        ! grep -Eq 'deb-systemd-invoke (start|restart|try-restart)' '$control/postinst'"
    check "$unit: stopped by the preinst on upgrade and the prerm on remove" sh -c "
        grep -q \"deb-systemd-invoke stop '$unit.service'\" '$control/preinst' &&
        grep -q \"deb-systemd-invoke stop '$unit.service'\" '$control/prerm'"
done

# --- install ---------------------------------------------------------------------------------
step "installing with dpkg -i"
if ! dpkg -i "$OUT"/v1/*.deb </dev/null >"$OUT/install.log" 2>&1; then
    echo "   dpkg -i left dependencies to resolve: apt-get -f install"
    apt-get -f install -y -q </dev/null >>"$OUT/install.log" 2>&1 || {
        cat "$OUT/install.log"
        fail "installation failed"
    }
fi
for package in "${PACKAGES[@]}"; do
    check "$package installed" test "$(dpkg-query -W -f='${Status}' "$package")" = "install ok installed"
done
check "aos system user and group" sh -c 'getent passwd aos | grep -q ":/var/lib/aos:/usr/sbin/nologin$" && getent group aos >/dev/null'
stat_is() { test "$(stat -c '%U:%G %a' "$1")" = "$2"; }
check "/var/log/aos/cloud-manager aos:aos 750" stat_is /var/log/aos/cloud-manager "aos:aos 750"
check "/var/lib/aos aos:aos 750" stat_is /var/lib/aos "aos:aos 750"
check "/etc/aos/aos.conf root:aos 640" stat_is /etc/aos/aos.conf "root:aos 640"
check "/etc/aos/cloud_manager.conf root:aos 640" stat_is /etc/aos/cloud_manager.conf "root:aos 640"
check "conffiles registered" sh -c 'dpkg-query -W -f="\${Conffiles}\n" aos-cloud-manager | grep -q "/etc/aos/cloud_manager.conf "'
check "/etc/aos/aos.conf is the generated example" cmp -s /etc/aos/aos.conf etc/aos/aos.conf.example
check "/etc/aos/policy.json (api) is the API's default policy" cmp -s /etc/aos/policy.json etc/aos/policy.json
if command -v logrotate >/dev/null; then
    check "logrotate accepts /etc/logrotate.d/aos-cloud-manager" \
        sh -c 'logrotate -d /etc/logrotate.d/aos-cloud-manager >/dev/null 2>&1'
fi

step "systemd-analyze verify (the ${#UNITS[@]} installed units; also runs man for their Documentation=man:)"
unit_files=()
for unit in "${UNITS[@]}"; do unit_files+=("$(dpkg -L "$unit" | grep "/systemd/system/$unit.service$")"); done
# Without systemd as PID 1 it still loads and checks the files (syntax, every directive, that
# ExecStart is executable). It exits non-zero only for fatal problems: an unknown or invalid
# directive is a message ("Failed to parse ..., ignoring") with exit status 0, so any output
# fails the check.
verify_status=0
systemd-analyze verify "${unit_files[@]}" >"$OUT/verify.log" 2>&1 || verify_status=$?
sed 's/^/   /' "$OUT/verify.log"
if ((verify_status != 0)) || [[ -s $OUT/verify.log ]]; then fail "systemd-analyze verify reported problems (above)"; fi
echo "   ok: no errors, no warnings for ${#unit_files[@]} units"
# The sandbox's exposure score, from the files (0 = fully locked down, 10 = none).
for file in "${unit_files[@]}"; do
    exposure=$(systemd-analyze security --offline=true "$file" 2>/dev/null | sed -n 's/^→ Overall exposure level for \([^:]*\): \([0-9.]*\).*/\1 \2/p')
    [[ -n $exposure ]] || fail "systemd-analyze security gave no score for $file"
    check "exposure ${exposure#* } <= 2.0: ${exposure%% *}" awk -v score="${exposure#* }" 'BEGIN { exit !(score <= 2.0) }'
done

step "man pages (help2man, from each binary's --help)"
for binary in "${BINARIES[@]}"; do
    page=$(man -w "$binary" 2>/dev/null) || fail "no man page for $binary"
    check "$binary: $page documents --config-file" sh -c "man -P cat '$binary' 2>/dev/null | grep -q -- '--config-file'"
done
check "aos-cloud-manager-agent(8) documents --role" sh -c "man -P cat aos-cloud-manager-agent 2>/dev/null | grep -q -- '--role'"

step "aos-cloud-manager --version"
version_line=$(aos-cloud-manager --version)
echo "   $version_line"
check "version matches the package's upstream version" test "$version_line" = "aos-cloud-manager ${UPSTREAM_VERSION%%[-+~]*}"

# --- the admin configures it -------------------------------------------------------------------
step "admin: database $DB for user $DB_USER, RabbitMQ vhost $VHOST, /etc/aos edited, credential key"
mysql_root -e "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4;
    CREATE USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
    GRANT ALL PRIVILEGES ON \`$DB\`.* TO '$DB_USER'@'127.0.0.1';"
rabbitmqctl_q add_vhost "$VHOST" >/dev/null
rabbitmqctl_q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
STATUS_PORT=$(free_port)
AGENT_PORT=$(free_port) # both agent roles (run one after the other: one [agent] section)
# set_option FILE SECTION KEY VALUE: in the generated file every option sits commented out
# under its section header; replace that line (or append under the header).
set_option() {
    local file=$1 section=$2 key=$3 value=$4
    awk -v section="[$section]" -v key="$key" -v value="$value" '
        $0 == section { inside = 1; print; next }
        /^\[/ { if (inside && !done) { print key " = " value; done = 1 } inside = 0 }
        inside && !done && ($0 ~ "^#?" key " *=") { print key " = " value; done = 1; next }
        { print }
        END { if (!done) { if (!inside) print section; print key " = " value } }
    ' "$file" >"$file.new"
    cat "$file.new" >"$file" # keeps owner and mode
    rm -f "$file.new"
}
set_option /etc/aos/aos.conf DEFAULT log_dir /var/log/aos/cloud-manager
set_option /etc/aos/aos.conf DEFAULT host "pkgtest-$suffix"
set_option /etc/aos/aos.conf DEFAULT transport_url "rabbit://guest:guest@127.0.0.1:5672/$VHOST"
set_option /etc/aos/cloud_manager.conf database url "mysql+pymysql://$DB_USER:$DB_PASSWORD@127.0.0.1:3306/$DB?charset=utf8"
set_option /etc/aos/cloud_manager.conf "$ROLE" logfile "$ROLE.log"
set_option /etc/aos/cloud_manager.conf "$ROLE" status_port "$STATUS_PORT"
set_option /etc/aos/cloud_manager.conf listener nova_rabbit_vhost "$VHOST"
set_option /etc/aos/cloud_manager.conf agent enabled True
set_option /etc/aos/cloud_manager.conf agent logfile agent.log
set_option /etc/aos/cloud_manager.conf agent status_port "$AGENT_PORT"
aos-cloud-manager power-device generate-key | sed 's/^/   /'
chown aos:aos /etc/aos/power.key
check "the effective configuration has the admin's values" \
    sh -c "aos-cloud-manager config show | grep -q 'status_port.*$STATUS_PORT'"

as_aos() { (cd / && runuser -u aos -- "$@"); }
step "as aos: aos-cloud-manager configure (before db migrate: the schema check must fail)"
if as_aos aos-cloud-manager configure >"$OUT/configure-0.log" 2>&1; then
    cat "$OUT/configure-0.log"
    fail "configure passed on an empty database"
fi
sed 's/^/   /' "$OUT/configure-0.log"
step "as aos: aos-cloud-manager db migrate"
as_aos aos-cloud-manager db migrate 2>&1 | sed 's/^/   /'
step "as aos: aos-cloud-manager configure"
as_aos aos-cloud-manager configure 2>&1 | sed 's/^/   /' || true
check "configure: all checks passed" sh -c "cd / && runuser -u aos -- aos-cloud-manager configure >/dev/null 2>&1"
step "as aos: rollback to migration 1 (db migrate --migration 1), then up again"
as_aos aos-cloud-manager db migrate --migration 1 2>&1 | sed 's/^/   /'
check "configure fails on the rolled-back schema" sh -c "cd / && ! runuser -u aos -- aos-cloud-manager configure >/dev/null 2>&1"
as_aos aos-cloud-manager db migrate 2>&1 | sed 's/^/   /'
check "configure passes after migrating up again" sh -c "cd / && runuser -u aos -- aos-cloud-manager configure >/dev/null 2>&1"
check "configure wrote nothing (the .example files are packaged)" \
    sh -c 'test "$(ls /etc/aos | sort | tr "\n" " ")" = "aos.conf aos.conf.example cloud_manager.conf cloud_manager.conf.example policy.json power.key "'

# --- one daemon from its installed unit ----------------------------------------------------------
DAEMON_PID=
unit_value() { # unit_value UNIT KEY: the last KEY= of the installed unit file
    sed -n "s/^$2=//p" "$(dpkg -L "$1" | grep "/systemd/system/$1.service$")" | tail -1
}
wait_for() { # wait_for SECONDS COMMAND...: true once COMMAND succeeds within SECONDS
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}
# run_daemon_from_unit UNIT OUTPUT_NAME STATUS_PORT LOGFILE [COMMAND...]: starts the unit's
# ExecStart= as its User=, waits for /readyz 200 on STATUS_PORT (then for COMMAND, if given,
# up to 30 s), checks the user and the log file, and stops it with SIGTERM.
run_daemon_from_unit() {
    local unit=$1 name=$2 port=$3 logfile=$4 user exec_start
    shift 4
    user=$(unit_value "$unit" User)
    exec_start=$(unit_value "$unit" ExecStart)
    exec_start=${exec_start#[-@:+!]}
    echo "   unit $unit: User=$user ExecStart=$exec_start"
    # As systemd runs it: User= and its groups, a clean environment, no PAM session (setpriv
    # execs, so $! is the daemon itself and gets the SIGTERM, as KillMode= would send it).
    # shellcheck disable=SC2086 # ExecStart is a command line: split it as systemd would (no quoting used)
    (cd / && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" \
        USER="$user" LOGNAME="$user" setpriv --reuid="$user" --regid="$user" --init-groups -- $exec_start) \
        >"$OUT/$name.out" 2>&1 9>&- & # 9: the run's lock, which a daemon left by a killed run must not keep
    DAEMON_PID=$!
    record_state
    local ready='' deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        if ready=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null); then break; fi
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        ready=
        sleep 0.5
    done
    if [[ -z $ready ]]; then
        cat "$OUT/$name.out"
        curl -sS --max-time 2 "http://127.0.0.1:$port/readyz" 2>&1 || true
        tail -20 "$logfile" 2>/dev/null || true
        fail "$unit did not become ready on 127.0.0.1:$port/readyz"
    fi
    echo "   /readyz: $ready"
    READY_BODY=$ready
    check "$unit runs as $user" test "$(ps -o user= -p "$DAEMON_PID" | tr -d ' ')" = "$user"
    check "$unit logs to $logfile" test -s "$logfile"
    if (($#)); then
        check "$unit: $*" wait_for 30 "$@"
        # The checks a daemon registers after its first readiness (a lease) are there now.
        READY_BODY=$(curl -fsS --max-time 2 "http://127.0.0.1:$port/readyz") || fail "$unit: /readyz after $*"
        echo "   /readyz: $READY_BODY"
    fi
    local stopped_at=$SECONDS
    kill -TERM "$DAEMON_PID"
    local status=0
    wait "$DAEMON_PID" || status=$?
    DAEMON_PID=
    record_state
    check "$unit exits 0 on SIGTERM (in $((SECONDS - stopped_at)) s)" test "$status" = 0
}
LOG_DIR=/var/log/aos/cloud-manager
step "starting aos-cloud-manager-$ROLE from its unit's User= and ExecStart="
run_daemon_from_unit "aos-cloud-manager-$ROLE" daemon-1 "$STATUS_PORT" "$LOG_DIR/$ROLE.log"
# The agent: the controller role declares the aos-agent exchange once it holds the agent
# lease; the node role needs that exchange (its request queue is bound to it). The node role
# connects as guest here, not as a node user: this checks the unit and the role, the trust
# rules are aos-agent's tests (docs/adr/0012-agent.md).
agent_exchange_declared() { rabbitmqctl_q list_exchanges -p "$VHOST" name | grep -qx aos-agent; }
step "starting aos-cloud-manager-agent (controller role) from its unit"
run_daemon_from_unit aos-cloud-manager-agent agent-controller "$AGENT_PORT" "$LOG_DIR/agent.log" agent_exchange_declared
check "aos-cloud-manager-agent: the controller role (database and lease checks)" \
    sh -c "echo '$READY_BODY' | grep -q '\"database\"' && echo '$READY_BODY' | grep -q '\"lease:agent\"'"
step "starting aos-cloud-manager-node-agent (node role) from its unit"
run_daemon_from_unit aos-cloud-manager-node-agent node-agent "$AGENT_PORT" "$LOG_DIR/agent.log"
check "aos-cloud-manager-node-agent: the node role (broker check, no database)" \
    sh -c "echo '$READY_BODY' | grep -q '\"broker\"' && ! echo '$READY_BODY' | grep -q '\"database\"'"

# --- upgrade ---------------------------------------------------------------------------------
db_fingerprint() { # the whole database's content, for an equality check
    mariadb-dump --protocol=socket -uroot --skip-dump-date --skip-comments --order-by-primary "$DB" | sha256sum
}
admin_conf_sum=$(sha256sum /etc/aos/aos.conf /etc/aos/cloud_manager.conf /etc/aos/power.key)
db_before=$(db_fingerprint)
step "building the upgrade $UPGRADE_VERSION"
build "$OUT/v2" "$UPGRADE_VERSION"
cargo_summary "$OUT/v2/build.log"
step "upgrading with dpkg -i (no terminal: a conffile prompt would fail it)"
dpkg -i "$OUT"/v2/*.deb </dev/null >"$OUT/upgrade.log" 2>&1 || {
    cat "$OUT/upgrade.log"
    fail "upgrade failed"
}
for package in "${PACKAGES[@]}"; do
    check "$package at $UPGRADE_VERSION" test "$(dpkg-query -W -f='${Version}' "$package")" = "$UPGRADE_VERSION"
done
check "the admin's /etc/aos files are unchanged" test "$(sha256sum /etc/aos/aos.conf /etc/aos/cloud_manager.conf /etc/aos/power.key)" = "$admin_conf_sum"
check "no .dpkg-dist/.dpkg-new/.dpkg-old left in /etc/aos" sh -c '! ls /etc/aos | grep -q "\.dpkg-"'
check "/etc/aos/cloud_manager.conf still root:aos 640" stat_is /etc/aos/cloud_manager.conf "root:aos 640"
check "/etc/aos/power.key still aos:aos 600" stat_is /etc/aos/power.key "aos:aos 600"
check "the log file is kept" test -s /var/log/aos/cloud-manager/$ROLE.log
check "the database is untouched" test "$(db_fingerprint)" = "$db_before"
check "schema still current (configure as aos)" sh -c "cd / && runuser -u aos -- aos-cloud-manager configure >/dev/null 2>&1"
step "starting aos-cloud-manager-$ROLE again after the upgrade"
run_daemon_from_unit "aos-cloud-manager-$ROLE" daemon-2 "$STATUS_PORT" "$LOG_DIR/$ROLE.log"

# --- remove, then purge ----------------------------------------------------------------------
db_before=$(db_fingerprint) # the daemon's run after the upgrade wrote to it
step "dpkg --remove: configuration, logs, data and the user stay"
dpkg --remove "${PACKAGES[@]}" >"$OUT/remove.log" 2>&1 || {
    cat "$OUT/remove.log"
    fail "remove failed"
}
check "binaries and units removed" sh -c '! test -e /usr/bin/aos-cloud-manager && ! ls /lib/systemd/system/aos-cloud-manager-*.service >/dev/null 2>&1'
check "the admin's /etc/aos files are kept" test "$(sha256sum /etc/aos/aos.conf /etc/aos/cloud_manager.conf /etc/aos/power.key)" = "$admin_conf_sum"
check "the logs are kept" test -s /var/log/aos/cloud-manager/$ROLE.log
check "the aos user is kept" sh -c "getent passwd aos >/dev/null"
step "dpkg --purge"
dpkg --purge "${PACKAGES[@]}" 2>&1 | sed 's/^/   /'
check "conffiles removed" sh -c '! test -e /etc/aos/aos.conf && ! test -e /etc/aos/cloud_manager.conf && ! test -e /etc/aos/aos.conf.example && ! test -e /etc/aos/policy.json'
check "the admin's credential key is kept" test -f /etc/aos/power.key
check "/var/log/aos removed" test ! -e /var/log/aos
check "/var/lib/aos removed (it was empty)" test ! -e /var/lib/aos
check "logrotate config removed" test ! -e /etc/logrotate.d/aos-cloud-manager
check "the aos user is kept (documented)" sh -c "getent passwd aos >/dev/null"
check "the database is untouched by the packages" test "$(db_fingerprint)" = "$db_before"
