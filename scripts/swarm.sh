#!/usr/bin/env bash
# swarm.sh - a one-node Docker Swarm on this machine: start | status.
#
# `start` makes sure a Docker engine answers (scripts/ensure-docker.sh), then runs
# `docker swarm init --advertise-addr 127.0.0.1` when the node is in no Swarm yet, on a free
# loopback port (SWARM_PORT, default 2377) so nothing is exposed beyond this machine. A node that
# is already a manager is left as it is. Leaving is deliberate and by hand
# (`docker swarm leave --force`): other stacks may run on it.
#
#   scripts/swarm.sh start    # idempotent
#   scripts/swarm.sh status   # exit 0 when this engine is a Swarm manager
set -euo pipefail
cd "$(dirname "$0")/.."

state() { docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}' 2>/dev/null; }

case "${1:-start}" in
start)
    scripts/ensure-docker.sh
    case "$(state)" in
    "active true") echo "swarm: this engine is a Swarm manager already" ;;
    active*) echo "swarm: this node is a Swarm worker, not a manager: deploy from a manager (DOCKER_HOST)" >&2; exit 1 ;;
    *)
        port=${SWARM_PORT:-2377}
        docker swarm init --advertise-addr 127.0.0.1 --listen-addr "127.0.0.1:${port}" >/dev/null
        echo "swarm: initialised a one-node Swarm (manager on 127.0.0.1:${port}); leave it with: docker swarm leave --force"
        ;;
    esac
    ;;
status)
    [[ "$(state)" == "active true" ]] && echo "swarm: manager" || { echo "swarm: not a manager"; exit 1; }
    ;;
*) echo "usage: $0 start|status" >&2; exit 2 ;;
esac
