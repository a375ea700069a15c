#!/usr/bin/env bash
# Makes sure one instance of the BMC emulators (../shared/bmc-sim: IPMI lanplus on UDP and a
# Redfish emulator on TCP, 127.0.0.1 only) is running for the power tests. Does nothing when
# that instance is already alive and answering; otherwise starts it (installing ipmitool and the
# kit's Python venv when missing, as root) and waits until every peer answers.
#
# ../shared is read-only and the kit's up.sh creates `.venv` beside itself, so the kit is
# copied to ~/.cache/aos-bmc-sim/kit (refreshed when the source changed; the venv is kept) and
# run from there, with its state in ~/.cache/aos-bmc-sim/<instance>.
#
# Usage: scripts/ensure-bmc-sim.sh [INSTANCE]          (default instance: power-tests)
#        scripts/ensure-bmc-sim.sh --print-run-dir [INSTANCE]
#        scripts/ensure-bmc-sim.sh --down [INSTANCE]
#
# Environment (the defaults are the power tests' instance):
#   AOS_BMC_SIM_INSTANCE     instance name when not given as argument   [power-tests]
#   AOS_BMC_SIM_HOSTS        host names, space separated                [aos-pw-1 .. aos-pw-6]
#   AOS_BMC_SIM_IPMI_PORT    first IPMI UDP port                        [9101]
#   AOS_BMC_SIM_REDFISH_PORT Redfish TCP port                           [9180]
#   AOS_BMC_SIM_POWER_HOOK   power hook command (bmc-sim README)        [none: never touches the cloud]
#   AOS_BMC_SIM_INITIAL_POWER on | off                                  [on]
#   AOS_BMC_SIM_PASSWORD     IPMI and Redfish password of user admin    [Bmc-s1m-S3cret]
#                            (distinctive, so tests can prove it never reaches a log line)
#   AOS_BMC_SIM_DIR          the bmc-sim kit to copy                    [../shared/bmc-sim]
#   AOS_BMC_SIM_HOME         where kit and instances live               [~/.cache/aos-bmc-sim]
set -euo pipefail

started=$(date +%s)
log() { printf 'ensure-bmc-sim: %s\n' "$*" >&2; }
took() { echo "ensure-bmc-sim: $1 in $(( $(date +%s) - started ))s"; }

action=up
case "${1:-}" in
--print-run-dir) action=print; shift ;;
--down) action=down; shift ;;
esac
instance="${1:-${AOS_BMC_SIM_INSTANCE:-power-tests}}"
[[ $instance =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || { log "bad instance name '$instance'"; exit 2; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
source_dir="${AOS_BMC_SIM_DIR:-$repo_dir/../shared/bmc-sim}"
[ -x "$source_dir/up.sh" ] || source_dir="$script_dir/../../shared/bmc-sim"
home_dir="${AOS_BMC_SIM_HOME:-$HOME/.cache/aos-bmc-sim}"
kit_dir="$home_dir/kit"
run_dir="$home_dir/$instance"

if [ "$action" = print ]; then
    echo "$run_dir"
    exit 0
fi
if [ "$action" = down ]; then
    if [ -x "$kit_dir/down.sh" ]; then BMC_SIM_RUN_DIR="$run_dir" "$kit_dir/down.sh"; fi
    exit 0
fi

hosts="${AOS_BMC_SIM_HOSTS:-aos-pw-1 aos-pw-2 aos-pw-3 aos-pw-4 aos-pw-5 aos-pw-6}"
ipmi_port="${AOS_BMC_SIM_IPMI_PORT:-9101}"
redfish_port="${AOS_BMC_SIM_REDFISH_PORT:-9180}"
initial_power="${AOS_BMC_SIM_INITIAL_POWER:-on}"
user=admin
password="${AOS_BMC_SIM_PASSWORD:-Bmc-s1m-S3cret}"

# Is every IPMI BMC and the Redfish emulator of this instance answering a real request?
instance_alive() {
    [ -s "$run_dir/hosts.tsv" ] && command -v ipmitool >/dev/null || return 1
    local count=0 name _backend port cipher _rest
    while read -r name _backend port cipher _rest; do
        [ "${name:0:1}" = "#" ] && continue
        count=$((count + 1))
        local copt=()
        [ "$cipher" = any ] || copt=(-C "$cipher")
        IPMI_PASSWORD="$password" ipmitool -I lanplus -H 127.0.0.1 -p "$port" -U "$user" -E "${copt[@]}" \
            -N 1 -R 1 power status >/dev/null 2>&1 || return 1
    done < "$run_dir/hosts.tsv"
    [ "$count" -eq "$(wc -w <<< "$hosts")" ] || return 1
    curl -s -f -m 3 -u "$user:$password" "http://127.0.0.1:$redfish_port/redfish/v1/Systems" >/dev/null
}

if instance_alive; then
    took "instance $instance is already running ($run_dir)"
    exit 0
fi

if [ ! -x "$source_dir/up.sh" ]; then
    log "cannot find bmc-sim/up.sh (looked in $repo_dir/../shared and $script_dir/../../shared); set AOS_BMC_SIM_DIR"
    exit 1
fi

# Copy (or refresh) the kit; its .venv and run/ directories are not part of the source.
mkdir -p "$kit_dir"
source_sum=$(cd "$source_dir" && find . -path ./.venv -prune -o -path ./run -prune -o -type f -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$kit_dir/.source-sum" 2>/dev/null)" != "$source_sum" ]; then
    log "copying the kit from $source_dir to $kit_dir"
    (cd "$source_dir" && find . -path ./.venv -prune -o -path ./run -prune -o -type f -print0 |
        xargs -0 cp --parents -f -t "$kit_dir")
    chmod -R u+w "$kit_dir"
    echo "$source_sum" > "$kit_dir/.source-sum"
fi

# A half-alive previous run (one peer killed, a test that died mid-fault): stop it first.
if [ -d "$run_dir/pids" ]; then
    log "instance $instance is not answering: stopping what is left of it"
    BMC_SIM_RUN_DIR="$run_dir" "$kit_dir/down.sh" >&2 || true
fi

mkdir -p "$home_dir"
up_log="$home_dir/$instance.up.log"
log "starting instance $instance: hosts '$hosts', IPMI from UDP $ipmi_port, Redfish TCP $redfish_port"
if ! env BMC_SIM_RUN_DIR="$run_dir" \
        BMC_SIM_HOST_NAMES="$hosts" \
        BMC_SIM_IPMI_BASE_PORT="$ipmi_port" \
        BMC_SIM_REDFISH_PORT="$redfish_port" \
        BMC_SIM_INITIAL_POWER="$initial_power" \
        BMC_SIM_POWER_HOOK="${AOS_BMC_SIM_POWER_HOOK:-}" \
        BMC_SIM_IPMI_USER="$user" BMC_SIM_IPMI_PASSWORD="$password" \
        BMC_SIM_REDFISH_USER="$user" BMC_SIM_REDFISH_PASSWORD="$password" \
        "$kit_dir/up.sh" >"$up_log" 2>&1; then
    tail -n 30 "$up_log" >&2
    log "up.sh failed; full output in $up_log"
    exit 1
fi
if ! instance_alive; then
    log "instance $instance started but does not answer; see $run_dir/logs"
    exit 1
fi
took "instance $instance is up ($run_dir)"
