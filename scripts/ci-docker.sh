# shellcheck shell=bash
# Docker for the container provisioning backend in CI. SOURCE this file (bash), then:
#
#     source scripts/ci-docker.sh
#     sixty_docker_up
#     trap sixty_docker_down EXIT
#
# sixty_docker_up
#     On a runner whose Docker engine answers and can give the default image (postgres:16),
#     does nothing. Otherwise (an air-gapped machine): installs docker.io and debootstrap with
#     apt-get if missing, starts dockerd (--iptables=false --storage-driver=vfs) unless one
#     already answers, waits for it (bounded), builds the offline image if absent, and exports
#     SIXTY_PG_IMAGE, SIXTY_DOCKER_NETWORK=host and TESTCONTAINERS_RYUK_DISABLED=true.
#     Either way it exports SIXTY_REQUIRE_DOCKER=1: the container tests then fail instead
#     of skipping when no engine answers, so CI cannot pass with the backend untested.
#     Returns non-zero with a message when any of that fails; it never skips silently.
# sixty_docker_down
#     Removes the containers the harness started (label sixty.harness) and stops dockerd
#     only if sixty_docker_up started it (SIGTERM, bounded wait, then SIGKILL).
#
# Settings (environment, optional): SIXTY_DOCKER_STATE_DIR holds dockerd's log and pidfile
# (default /var/tmp/sixty-docker); SIXTY_DOCKER_WAIT_S bounds the wait for dockerd (60).

SIXTY_DOCKER_DEFAULT_IMAGE="postgres:16"
SIXTY_DOCKER_OFFLINE_IMAGE="sixty/postgres:15-offline"
# Must match CONTAINER_LABEL in sixty_core/db/_container.py.
SIXTY_DOCKER_CONTAINER_LABEL="sixty.harness"
SIXTY_DOCKER_STATE_DIR="${SIXTY_DOCKER_STATE_DIR:-/var/tmp/sixty-docker}"
SIXTY_DOCKERD_LOG="$SIXTY_DOCKER_STATE_DIR/dockerd.log"
SIXTY_DOCKERD_PIDFILE="$SIXTY_DOCKER_STATE_DIR/dockerd.pid"
_SIXTY_DOCKER_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Set by sixty_docker_up when this shell started dockerd; sixty_docker_down reads it.
_SIXTY_DOCKERD_STARTED_PID=""
_SIXTY_APT_UPDATED=0

_sixty_docker_log() { printf 'ci-docker: %s\n' "$*" >&2; }

_sixty_docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

_sixty_apt_install() {
    if [[ "$(id -u)" != 0 ]]; then
        _sixty_docker_log "error: need root to apt-get install $*"
        return 1
    fi
    if ((!_SIXTY_APT_UPDATED)); then
        _sixty_docker_log "apt-get update"
        timeout 600 apt-get update -qq >&2 || {
            _sixty_docker_log "error: apt-get update failed"
            return 1
        }
        _SIXTY_APT_UPDATED=1
    fi
    _sixty_docker_log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "$@" >&2 || {
        _sixty_docker_log "error: apt-get install $* failed"
        return 1
    }
}

# Print the pid in our pidfile if that process is a live dockerd; fail otherwise.
_sixty_dockerd_pid() {
    local pid
    [[ -f "$SIXTY_DOCKERD_PIDFILE" ]] || return 1
    pid="$(cat "$SIXTY_DOCKERD_PIDFILE" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    printf '%s\n' "$pid"
}

_sixty_dockerd_start() {
    local pid waited=0 limit="${SIXTY_DOCKER_WAIT_S:-60}"
    mkdir -p "$SIXTY_DOCKER_STATE_DIR"
    if ! pid="$(_sixty_dockerd_pid)"; then
        rm -f "$SIXTY_DOCKERD_PIDFILE"
        _sixty_docker_log "starting dockerd --iptables=false --storage-driver=vfs (log $SIXTY_DOCKERD_LOG)"
        # setsid: dockerd must not get the CI shell's SIGINT/SIGHUP; we stop it ourselves.
        setsid dockerd --iptables=false --storage-driver=vfs --pidfile "$SIXTY_DOCKERD_PIDFILE" \
            >>"$SIXTY_DOCKERD_LOG" 2>&1 </dev/null &
        pid=$!
        _SIXTY_DOCKERD_STARTED_PID="$pid"
    else
        _sixty_docker_log "dockerd $pid (from $SIXTY_DOCKERD_PIDFILE) is already running; waiting for it"
    fi
    until _sixty_docker_answers; do
        if [[ ! -d "/proc/$pid" ]]; then
            _sixty_docker_log "error: dockerd (pid $pid) exited; last lines of $SIXTY_DOCKERD_LOG:"
            tail -n 20 "$SIXTY_DOCKERD_LOG" >&2 || true
            _SIXTY_DOCKERD_STARTED_PID=""
            return 1
        fi
        if ((waited >= limit)); then
            _sixty_docker_log "error: dockerd (pid $pid) did not answer 'docker info' within ${limit} s; see $SIXTY_DOCKERD_LOG"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    _sixty_docker_log "dockerd $pid answers (after ${waited} s)"
}

sixty_docker_up() {
    if command -v docker >/dev/null && _sixty_docker_answers; then
        if docker image inspect "$SIXTY_DOCKER_DEFAULT_IMAGE" >/dev/null 2>&1 ||
            timeout 120 docker pull -q "$SIXTY_DOCKER_DEFAULT_IMAGE" >/dev/null 2>&1; then
            _sixty_docker_log "docker answers and has $SIXTY_DOCKER_DEFAULT_IMAGE; using it as it is"
            export SIXTY_REQUIRE_DOCKER=1
            return 0
        fi
        _sixty_docker_log "docker answers but cannot get $SIXTY_DOCKER_DEFAULT_IMAGE; using the offline image"
    fi

    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        _sixty_apt_install "${missing[@]}" || return 1
    fi

    if ! _sixty_docker_answers; then
        _sixty_dockerd_start || return 1
    fi

    _sixty_docker_sweep --filter status=exited --filter status=created --filter status=dead
    bash "$_SIXTY_DOCKER_SCRIPTS/build-offline-postgres-image.sh" "$SIXTY_DOCKER_OFFLINE_IMAGE" || {
        _sixty_docker_log "error: building $SIXTY_DOCKER_OFFLINE_IMAGE failed"
        return 1
    }

    export SIXTY_PG_IMAGE="$SIXTY_DOCKER_OFFLINE_IMAGE"
    export SIXTY_DOCKER_NETWORK=host
    export TESTCONTAINERS_RYUK_DISABLED=true
    export SIXTY_REQUIRE_DOCKER=1
    _sixty_docker_log "ready: SIXTY_PG_IMAGE=$SIXTY_PG_IMAGE SIXTY_DOCKER_NETWORK=host TESTCONTAINERS_RYUK_DISABLED=true"
}

# Remove harness containers (label $SIXTY_DOCKER_CONTAINER_LABEL) matching extra filters "$@".
# A killed test run leaves its containers behind, each a full copy of the image under vfs.
_sixty_docker_sweep() {
    local ids
    command -v docker >/dev/null && _sixty_docker_answers || return 0
    ids="$(timeout 20 docker ps -aq --filter "label=$SIXTY_DOCKER_CONTAINER_LABEL" "$@" 2>/dev/null || true)"
    [[ -n "$ids" ]] || return 0
    _sixty_docker_log "removing leftover harness containers: $(echo "$ids" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # one id per word
    timeout 60 docker rm -f $ids >/dev/null 2>&1 || _sixty_docker_log "warning: docker rm -f failed"
}

sixty_docker_down() {
    local status=$? pid waited=0
    _sixty_docker_sweep
    pid="$_SIXTY_DOCKERD_STARTED_PID"
    if [[ -n "$pid" && -d "/proc/$pid" ]]; then
        _sixty_docker_log "stopping dockerd $pid"
        kill -TERM "$pid" 2>/dev/null || true
        # dockerd gives running containers up to 15 s to stop before it exits.
        while [[ -d "/proc/$pid" ]] && ((waited < 30)); do
            sleep 1
            waited=$((waited + 1))
        done
        if [[ -d "/proc/$pid" ]]; then
            _sixty_docker_log "dockerd $pid ignored SIGTERM for 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        rm -f "$SIXTY_DOCKERD_PIDFILE"
    fi
    _SIXTY_DOCKERD_STARTED_PID=""
    return "$status"
}
