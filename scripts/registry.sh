#!/usr/bin/env bash
# registry.sh - a local OCI registry for the release flow: start | stop | status.
#
# Runs the CNCF distribution registry (Debian's `docker-registry` package, installed with apt
# when missing) on 127.0.0.1:$REGISTRY_PORT, anonymous, plain HTTP on loopback, with its config,
# filesystem storage, pid file and log in one state folder. `storage.delete.enabled` lets tags
# and manifests be deleted (as ghcr.io allows). Idempotent: `start` on a running registry and
# `stop` on a stopped one say so and succeed.
#
#   scripts/registry.sh start     # then: export REGISTRY=127.0.0.1:5000 REGISTRY_INSECURE=true
#   scripts/registry.sh status    # exit 0 when it answers, 1 when not
#   scripts/registry.sh stop      # keeps the storage; `rm -rf` the state folder to forget it
#   scripts/registry.sh install   # only install the package (the test fixture runs it itself)
#
# Environment:
#   REGISTRY_PORT   port on 127.0.0.1       (default 5000)
#   REGISTRY_DIR    state folder            (default ${TMPDIR:-/tmp}/gitops-ml-registry-$REGISTRY_PORT)
set -euo pipefail

PORT=${REGISTRY_PORT:-5000}
DIR=${REGISTRY_DIR:-${TMPDIR:-/tmp}/gitops-ml-registry-$PORT}
CONFIG=$DIR/config.yml
PIDFILE=$DIR/registry.pid
LOG=$DIR/registry.log
URL=http://127.0.0.1:$PORT/v2/

log() { printf 'registry: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

answers() { curl -fsS -o /dev/null --max-time 2 "$URL" 2>/dev/null; }

running_pid() {
    local pid
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == docker-registry ]] || return 1
    echo "$pid"
}

install_registry() {
    command -v docker-registry >/dev/null 2>&1 && return 0
    [[ -r /etc/debian_version && $(id -u) -eq 0 ]] ||
        die "docker-registry is not installed; on Debian/Ubuntu: sudo apt-get install docker-registry"
    log "installing Debian's docker-registry package (the CNCF distribution registry)"
    export DEBIAN_FRONTEND=noninteractive
    # The package's own service would take port 5000 with its system-wide config: keep it off
    # while installing (a policy-rc.d that denies service starts), unless one is there already.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    local rc=0
    apt-cache policy docker-registry 2>/dev/null | grep -q 'Candidate: [0-9]' ||
        apt-get -qq update >/dev/null || rc=$?
    ((rc == 0)) && { apt-get -qq install -y --no-install-recommends docker-registry >/dev/null || rc=$?; }
    [[ -n $made_policy ]] && rm -f "$policy"
    ((rc == 0)) || die "apt-get install docker-registry failed (exit $rc)"
}

write_config() {
    mkdir -p "$DIR/storage"
    cat >"$CONFIG" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$PORT
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

start() {
    if pid=$(running_pid) && answers; then
        log "already running at 127.0.0.1:$PORT (pid $pid, storage $DIR/storage)"
        return 0
    fi
    if answers; then
        die "something else answers at $URL; stop it or set REGISTRY_PORT"
    fi
    install_registry
    write_config
    setsid docker-registry serve "$CONFIG" </dev/null >>"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 100); do
        answers && { log "started at 127.0.0.1:$PORT (pid $(<"$PIDFILE"), storage $DIR/storage, log $LOG)"; return 0; }
        kill -0 "$(<"$PIDFILE")" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$LOG" | sed 's/^/    /' >&2
    die "the registry did not answer at $URL (log: $LOG)"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PIDFILE"
        log "not running (no live pid in $PIDFILE)"
        return 0
    fi
    kill "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$PIDFILE"
    log "stopped (pid $pid); storage kept in $DIR/storage"
}

status() {
    local pid
    if pid=$(running_pid) && answers; then
        echo "registry: running at 127.0.0.1:$PORT (pid $pid, storage $DIR/storage)"
        return 0
    fi
    echo "registry: not running at 127.0.0.1:$PORT"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    install) install_registry ;;
    *) echo "usage: $0 start|stop|status|install" >&2; exit 2 ;;
esac
