#!/usr/bin/env bash
# Makes sure the real peers the tests talk to are running on loopback:
#   MariaDB 127.0.0.1:3306 (root, no password over TCP) and RabbitMQ 127.0.0.1:5672 (guest/guest).
# Installs them from Debian's packages when missing (needs root), starts them when stopped,
# and waits until they answer. Idempotent; safe to run before every test run.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
    local port=$1 seconds=$2 what=$3 i
    for ((i = 0; i < seconds * 2; i++)); do
        port_open "$port" && return 0
        sleep 0.5
    done
    log "$what did not open 127.0.0.1:$port within ${seconds}s"
    return 1
}

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        log "need root to install $* (apt-get)"; return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_mariadb() {
    if ! port_open 3306; then
        if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
            log "installing mariadb-server"
            apt_install mariadb-server mariadb-client
        fi
        if ! port_open 3306; then
            log "starting mariadbd"
            mkdir -p /run/mysqld
            chown mysql:mysql /run/mysqld 2>/dev/null || true
            if [ ! -d /var/lib/mysql/mysql ]; then
                mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
            fi
            local user_arg=()
            [ "$(id -u)" = 0 ] && user_arg=(--user=mysql)
            setsid /usr/sbin/mariadbd "${user_arg[@]}" --bind-address=127.0.0.1 --port=3306 \
                >/tmp/aos-ci-mariadbd.log 2>&1 < /dev/null &
        fi
        wait_port 3306 60 MariaDB
    fi
    # A fresh Debian install authenticates root over the unix socket only: allow root over TCP
    # from loopback without a password, as the tests expect (this is a throwaway test box).
    if ! mysql -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null 2>&1; then
        log "granting root@127.0.0.1 (no password) for the tests"
        mysql -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;"
    fi
    mysql -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null
    log "MariaDB ready on 127.0.0.1:3306"
}

ensure_rabbitmq() {
    if ! port_open 5672; then
        if ! command -v rabbitmq-server >/dev/null 2>&1; then
            log "installing rabbitmq-server"
            apt_install rabbitmq-server
        fi
        if ! port_open 5672; then
            log "starting rabbitmq-server"
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached >/dev/null 2>&1 || true
        fi
        wait_port 5672 120 RabbitMQ
        rabbitmqctl await_startup >/dev/null 2>&1 || true
    fi
    log "RabbitMQ ready on 127.0.0.1:5672"
}

ensure_mariadb
ensure_rabbitmq
