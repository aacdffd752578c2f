#!/usr/bin/env bash
# Build a Postgres 15 Docker image from Debian packages alone, for hosts that reach no image
# registry (only a Debian mirror). The mirror is read from this machine's own apt sources.
#
# Usage: scripts/build-offline-postgres-image.sh [--force] [TAG]
# See --help. Needs root, debootstrap and a running Docker engine.
set -euo pipefail

DEFAULT_TAG="sixty/postgres:15-offline"
SUITE="bookworm"
PG_MAJOR="15"
# debootstrap runs maintainer scripts in a chroot: keep it off /tmp, which may be noexec.
WORK_PARENT="${SIXTY_IMAGE_WORKDIR:-/var/tmp}"

usage() {
    cat <<EOF
Usage: $(basename "$0") [--force] [TAG]

Build a local Postgres ${PG_MAJOR} image (default tag: ${DEFAULT_TAG}) with
'debootstrap --variant=minbase --include=postgresql-${PG_MAJOR} ${SUITE}' from the Debian
mirror named in this machine's apt sources, then 'docker import' it.

The image works like the official postgres image for the variables that testcontainers
uses: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and PGPORT (postgres listens on PGPORT,
and psql inside the container connects there by default); POSTGRES_LISTEN_ADDRESSES
(default '*') limits the listening addresses, e.g. to 127.0.0.1 with host networking.

Options:
  --force     rebuild even if TAG already exists
  -h, --help  show this help

Environment:
  SIXTY_DEBIAN_MIRROR    use this mirror URL instead of the one in the apt sources
  SIXTY_IMAGE_WORKDIR    parent of the temporary root file system (default /var/tmp)

Exits 0 at once when TAG already exists (unless --force). Needs root, debootstrap, and a
Docker engine that answers 'docker info'. Takes about a minute and a few hundred MB of disk.
EOF
}

log() { printf 'build-offline-postgres-image: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Print the first Debian mirror URL whose suite is exactly $SUITE, from one-line .list files
# and deb822 .sources files (disabled stanzas and other file names are ignored). With
# "any" as $1, take the first non-security 'deb' source of any suite instead: a host on a
# newer release (trixie) names its mirror only with its own suite, and the same mirror
# serves $SUITE too.
find_debian_mirror() {
    local any="${1:-}"
    local files=()
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && files+=("$f")
    done
    ((${#files[@]})) || return 1
    awk -v suite="$SUITE" -v any="$any" '
        function has_word(list, word,    n, i, parts) {
            n = split(list, parts, /[ \t]+/)
            for (i = 1; i <= n; i++) if (parts[i] == word) return 1
            return 0
        }
        function wanted(list, uri,    n, i, parts) {
            if (any != "any") return has_word(list, suite)
            if (uri ~ /security/) return 0
            n = split(list, parts, /[ \t]+/)
            for (i = 1; i <= n; i++) if (parts[i] != "" && parts[i] !~ /security/) return 1
            return 0
        }
        function flush() {
            split(uris, u, /[ \t]+/)
            if (uris != "" && has_word(types, "deb") && wanted(suites, u[1]) && enabled != "no") {
                print u[1]; found = 1; exit
            }
            types = ""; uris = ""; suites = ""; enabled = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*#/ { next }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            line = $0; key = tolower(line); sub(/:.*/, "", key)
            value = line; sub(/^[^:]*:[ \t]*/, "", value)
            if (key == "types") types = value
            else if (key == "uris") uris = value
            else if (key == "suites") suites = value
            else if (key == "enabled") enabled = tolower(value)
            next
        }
        $1 == "deb" {
            # One-line format: deb [options] URI suite components...
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if (wanted($(i + 1), $i)) { print $i; found = 1; exit }
        }
        END { if (!found) flush() }
    ' "${files[@]}"
}

force=0
tag=""
while (($#)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --force) force=1 ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *)
            [[ -z "$tag" ]] || die "only one TAG may be given (see --help)"
            tag="$1"
            ;;
    esac
    shift
done
tag="${tag:-$DEFAULT_TAG}"

command -v docker >/dev/null || die "the docker CLI is not installed (apt-get install -y docker.io)"
timeout 20 docker info >/dev/null 2>&1 ||
    die "no Docker engine answers 'docker info' (start one, e.g. source scripts/ci-docker.sh; sixty_docker_up)"

if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
    log "image $tag already exists; nothing to do (use --force to rebuild)"
    exit 0
fi

[[ "$(id -u)" == 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"

mirror="${SIXTY_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(find_debian_mirror || true)"
    if [[ -z "$mirror" ]]; then
        mirror="$(find_debian_mirror any || true)"
        [[ -z "$mirror" ]] || log "no '$SUITE' source in the apt sources; trying $SUITE from the host's mirror"
    fi
    [[ -n "$mirror" ]] ||
        die "no Debian 'deb' source in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set SIXTY_DEBIAN_MIRROR"
fi

rootfs=""
cleanup() {
    local status=$?
    if [[ -n "$rootfs" && -d "$rootfs" ]]; then
        # A debootstrap killed half-way can leave /proc, /sys or /dev mounted inside the
        # root; unmount them (deepest first) before deleting anything under it.
        local mounts
        mounts="$(awk -v root="$rootfs" 'index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r)"
        if [[ -n "$mounts" ]]; then
            while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mounts"
        fi
        log "removing $rootfs"
        rm -rf --one-file-system "$rootfs" || log "warning: could not remove $rootfs entirely"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

rootfs="$(mktemp -d "$WORK_PARENT/sixty-pg-rootfs.XXXXXX")"
# mktemp makes the directory 0700 and it becomes the image's '/': the postgres user must
# be able to traverse it.
chmod 0755 "$rootfs"
started=$SECONDS

log "debootstrap --variant=minbase --include=postgresql-$PG_MAJOR $SUITE $rootfs $mirror"
debootstrap --variant=minbase --include="postgresql-$PG_MAJOR" "$SUITE" "$rootfs" "$mirror" >&2

pg_bin="/usr/lib/postgresql/$PG_MAJOR/bin"
[[ -x "$rootfs$pg_bin/postgres" && -x "$rootfs$pg_bin/psql" ]] ||
    die "debootstrap finished but $pg_bin/postgres or psql is missing"

log "trimming the root file system"
# The package scripts create a 'main' cluster; the entrypoint makes its own in PGDATA.
rm -rf "$rootfs/etc/postgresql/$PG_MAJOR/main" "$rootfs/var/lib/postgresql/$PG_MAJOR/main"
# JIT is off in this image; without llvmjit.so postgres disables it silently, and libLLVM
# is about a third of the image.
rm -f "$rootfs/usr/lib/postgresql/$PG_MAJOR/lib/llvmjit.so" "$rootfs"/usr/lib/x86_64-linux-gnu/libLLVM-*.so*
rm -rf "$rootfs/usr/lib/postgresql/$PG_MAJOR/lib/bitcode"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*

log "writing the entrypoint"
install -d -m 0755 "$rootfs/usr/local/bin"
cat >"$rootfs/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# Entrypoint of the offline Postgres image: the official image's variables, minus the rest.
# docker-entrypoint.sh [postgres] [postgres options...]  -> init PGDATA once, run postgres
# docker-entrypoint.sh COMMAND [ARGS...]                 -> run COMMAND instead
set -eu

if [ "$#" -eq 0 ] || [ "$1" = postgres ]; then
    [ "$#" -eq 0 ] || shift
elif [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:=}"
: "${POSTGRES_LISTEN_ADDRESSES:=*}"
: "${PGPORT:=5432}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGPORT PGDATA

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
quote_ident() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 0700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "entrypoint: initdb in $PGDATA for user $POSTGRES_USER, database $POSTGRES_DB"
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-postgres}" >"$pwfile"
    chown postgres "$pwfile"
    locale=C
    [ -d /usr/lib/locale/C.utf8 ] && locale=C.UTF-8
    as_postgres initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 \
        --locale="$locale" --auth-local=trust --auth-host=md5 >/dev/null
    rm -f "$pwfile"
    if [ -n "$POSTGRES_PASSWORD" ]; then host_auth=md5; else host_auth=trust; fi
    {
        echo "local all all trust"
        echo "host all all all $host_auth"
    } >"$PGDATA/pg_hba.conf"
    {
        echo "unix_socket_directories = '/var/run/postgresql'"
        echo "jit = off"
    } >>"$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # Single-user mode: no socket, no port, nothing can connect before the DB exists.
        echo "CREATE DATABASE $(quote_ident "$POSTGRES_DB");" |
            as_postgres postgres --single -D "$PGDATA" -j postgres >/dev/null
    fi
    echo "entrypoint: initdb done"
fi

echo "entrypoint: starting postgres on port $PGPORT, listen_addresses '$POSTGRES_LISTEN_ADDRESSES'"
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -p "$PGPORT" -c "listen_addresses=$POSTGRES_LISTEN_ADDRESSES" "$@"
ENTRYPOINT
chmod 0755 "$rootfs/usr/local/bin/docker-entrypoint.sh"

log "importing into docker as $tag"
old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
path="$pg_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
tar -C "$rootfs" --numeric-owner --one-file-system \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . |
    docker import \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["postgres"]' \
        --change "ENV PATH=$path" \
        --change 'ENV PGDATA=/var/lib/postgresql/data' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'EXPOSE 5432' \
        --change "LABEL org.sixty.image=offline-postgres org.sixty.suite=$SUITE" \
        - "$tag" >/dev/null

new_id="$(docker image inspect --format '{{.Id}}' "$tag")"
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    # --force: drop the image the tag used to name, unless a container still uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || log "kept the previous image $old_id (in use)"
fi
size="$(docker image inspect --format '{{.Size}}' "$tag")"
log "built $tag in $((SECONDS - started)) s, $((size / 1024 / 1024)) MiB"
