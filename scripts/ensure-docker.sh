#!/usr/bin/env bash
# ensure-docker.sh - make sure a Docker-compatible engine answers `docker info`.
#
# Idempotent and safe to run concurrently (serialised with flock).
#
#   1. If `docker info` already answers (DOCKER_HOST / docker context honoured),
#      print one line naming the engine and exit 0.
#   2. On a root Debian machine without a running engine: install Debian's
#      `docker.io` package if `dockerd` is missing, start `dockerd` in the
#      background without systemd, and wait until `docker info` answers.
#   3. Anywhere else: explain how to start Docker or Podman and exit 1.
#
# Environment:
#   DOCKERD_LOG              dockerd log file        (default /var/log/dockerd.log)
#   ENSURE_DOCKER_TIMEOUT    seconds to wait for the engine (default 60)
#   ENSURE_DOCKER_LOCK       lock file               (default /run/lock/ensure-docker.lock)
#
# Exit status: 0 engine answers, 1 no engine and none could be started.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
TIMEOUT=${ENSURE_DOCKER_TIMEOUT:-60}
LOCK_FILE=${ENSURE_DOCKER_LOCK:-/run/lock/ensure-docker.lock}
DOCKERD_PIDFILE=/var/run/docker.pid

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True when the engine answers within a few seconds.
engine_up() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 10 docker info >/dev/null 2>&1
}

# One line naming the engine, its version and its API endpoint.
describe_engine() {
    local components version api name endpoint
    components=$(timeout 10 docker version --format '{{range .Server.Components}}{{.Name}};{{end}}' 2>/dev/null || true)
    version=$(timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null || true)
    api=$(timeout 10 docker version --format '{{.Server.APIVersion}}' 2>/dev/null || true)
    case "$components" in
        *[Pp]odman*) name="Podman" ;;
        *) name="Docker Engine" ;;
    esac
    endpoint=${DOCKER_HOST:-$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null || echo 'default socket')}
    printf 'ensure-docker: %s %s (API %s) answers at %s\n' "$name" "${version:-?}" "${api:-?}" "$endpoint"
}

print_manual_help() {
    cat >&2 <<'EOF'
ensure-docker: no Docker-compatible engine answers `docker info`, and this script only
starts one by itself on a root Debian machine. Start one of these, then re-run:

  Docker
    - macOS / Windows: start Docker Desktop.
    - Linux with systemd:   sudo systemctl start docker
      (not installed? Debian/Ubuntu: sudo apt-get install docker.io)
    - add yourself to the `docker` group or use sudo if the socket is not yours:
      sudo usermod -aG docker "$USER"   (then log in again)

  Podman (rootless, Docker-compatible API)
    systemctl --user start podman.socket
    export DOCKER_HOST=unix://$XDG_RUNTIME_DIR/podman/podman.sock

EOF
}

# --- 1. fast path ----------------------------------------------------------
if engine_up; then
    describe_engine
    exit 0
fi

# A DOCKER_HOST that points somewhere other than the local dockerd socket
# cannot be fixed by starting dockerd here: say so instead of guessing.
case "${DOCKER_HOST:-}" in
    "" | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
    *)
        print_manual_help
        die "DOCKER_HOST=$DOCKER_HOST does not answer. Start that engine, or unset DOCKER_HOST to let this script start a local dockerd."
        ;;
esac

# --- 3. not a root Debian machine: explain --------------------------------
if [[ ! -r /etc/debian_version || $(id -u) -ne 0 ]]; then
    print_manual_help
    if command -v docker >/dev/null 2>&1; then
        log "docker CLI found at $(command -v docker), but 'docker info' fails:"
        timeout 10 docker info 2>&1 | tail -n 3 | sed 's/^/    /' >&2 || true
    else
        log "the docker CLI is not installed either."
    fi
    exit 1
fi

# --- 2. root Debian: install and start dockerd -----------------------------
mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
if ! flock -w $((TIMEOUT + 300)) 9; then
    die "timed out waiting for the lock $LOCK_FILE (another ensure-docker.sh is stuck?)"
fi

# Someone else may have started the engine while we waited for the lock.
if engine_up; then
    describe_engine
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# Run apt-get quietly; show its output only when it fails.
apt_quiet() {
    local out rc=0
    out=$(mktemp)
    apt-get -qq -o=Dpkg::Use-Pty=0 "$@" >"$out" 2>&1 || rc=$?
    if ((rc != 0)); then
        log "apt-get $* failed (exit $rc):"
        tail -n 20 "$out" | sed 's/^/    /' >&2
    fi
    rm -f "$out"
    return "$rc"
}

if ! command -v dockerd >/dev/null 2>&1; then
    log "dockerd missing: installing Debian's docker.io package..."
    t0=$SECONDS
    # Refresh package lists only when docker.io is not installable from them.
    if ! apt-cache policy docker.io 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        log "apt-get update (docker.io not in the package lists)"
        apt_quiet update
    fi
    if ! apt_quiet install -y --no-install-recommends docker.io; then
        # Stale lists (404 on a superseded .deb): refresh once and retry.
        log "install failed; apt-get update and retry"
        apt_quiet update
        apt_quiet install -y --no-install-recommends docker.io
    fi
    command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd is still not on PATH"
    log "docker.io installed in $((SECONDS - t0)) s ($(dockerd --version 2>/dev/null || echo 'dockerd ?'))"
fi
command -v docker >/dev/null 2>&1 || die "docker CLI not found on PATH after installing docker.io"

# True when PID exists and is not a zombie. `kill -0` alone is not enough:
# a SIGKILLed dockerd re-parented to a PID 1 that reaps lazily stays a zombie
# for a while, and still answers kill -0 and /proc/PID/comm.
pid_running() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }    # drop "pid (comm) ", leaving "STATE ppid ..."
    [[ ${stat%% *} != [ZX] ]]
}

dockerd_pid_alive() {
    local pid
    [[ -s $DOCKERD_PIDFILE ]] || return 1
    pid=$(<"$DOCKERD_PIDFILE")
    pid_running "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]
}

started_pid=""
if dockerd_pid_alive; then
    log "dockerd already running (pid $(<"$DOCKERD_PIDFILE")) but not answering yet; waiting"
else
    if [[ -e $DOCKERD_PIDFILE ]]; then
        log "removing stale $DOCKERD_PIDFILE"
        rm -f "$DOCKERD_PIDFILE"
    fi
    # Stale containerd pid/socket left by a killed dockerd-managed containerd.
    cpid_file=/var/run/docker/containerd/containerd.pid
    if [[ -s $cpid_file ]] && ! pid_running "$(<"$cpid_file")"; then
        rm -f "$cpid_file"
    fi
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    printf '\n=== ensure-docker: starting dockerd at %s ===\n' "$(date -Is)" >>"$DOCKERD_LOG"
    # setsid: own session, survives this shell. 9>&-: don't inherit the lock,
    # or the lock would be held for as long as dockerd runs.
    setsid dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
    started_pid=$!
    log "started dockerd (pid $started_pid, log $DOCKERD_LOG); waiting up to ${TIMEOUT} s"
fi

t0=$SECONDS
until engine_up; do
    if [[ -n $started_pid ]] && ! pid_running "$started_pid"; then
        log "dockerd exited early. Last lines of $DOCKERD_LOG:"
        tail -n 25 "$DOCKERD_LOG" | sed 's/^/    /' >&2
        die "dockerd failed to start"
    fi
    if ((SECONDS - t0 >= TIMEOUT)); then
        log "no answer from 'docker info' after ${TIMEOUT} s. Last lines of $DOCKERD_LOG:"
        tail -n 25 "$DOCKERD_LOG" | sed 's/^/    /' >&2
        die "dockerd did not become ready"
    fi
    sleep 0.5
done
log "engine ready after $((SECONDS - t0)) s"
describe_engine
