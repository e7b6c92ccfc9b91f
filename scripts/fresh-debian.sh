#!/usr/bin/env bash
# The fresh-machine check: builds a bare Debian 12 root (debootstrap
# --variant=minbase, from this machine's own apt sources), copies a clean
# clone of this repository into it, and runs exactly the README's two
# commands there as root, each timed, in private mount and PID namespaces
# (so nothing it starts outlives it). A missing install step fails it, and so
# does any test that skips on the bare machine. Only a mirror that cannot be
# reached at all, after retries, ends it as skipped (exit 77, said loudly;
# .ci/run then runs the suite on the machine itself).
#
# What it copies from this machine: the apt sources and apt's settings (the
# same mirror), the CA certificates this machine trusts (a machine behind a
# TLS-intercepting proxy needs its CA for npm), and OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE when set (machines whose CPU OpenBLAS 0.3.21 does not
# know set them; the root runs on the same CPU), nothing else.
#
# Usage: scripts/fresh-debian.sh [--keep] [--dir DIR]
#   --dir DIR   where the root goes (default: a new folder under /var/tmp)
#   --keep      leave the root in place afterwards (for a look inside)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "fresh-debian: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

keep=0 dir=""
while [ $# -gt 0 ]; do
    case $1 in
    --keep) keep=1; shift ;;
    --dir) dir=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown option $1 (see --help)"; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || fail "must run as root (debootstrap, chroot and namespaces need it)"
for tool in debootstrap unshare curl git; do
    command -v "$tool" >/dev/null && continue
    say "installing $tool's package"
    pkg=$tool
    [ "$tool" = unshare ] && pkg=util-linux
    apt-get install -y -q --no-install-recommends "$pkg" >/dev/null || fail "cannot install $pkg"
done

# ---- this machine's Debian mirror ----
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v security | head -n 1)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources"
reached=0
for attempt in 1 2 3; do
    if curl -fsS --max-time 30 -o /dev/null "$mirror/dists/bookworm/Release"; then reached=1; break; fi
    say "mirror $mirror not reached (attempt $attempt of 3)"
    sleep $((attempt * 5))
done
if ((!reached)); then
    say "************************************************************"
    say "SKIPPED: the Debian mirror $mirror cannot be reached from this"
    say "machine after 3 attempts, so no bare Debian root can be built."
    say "The fresh-machine check did NOT run."
    say "************************************************************"
    exit 77
fi

# ---- the bare root ----
if [ -z "$dir" ]; then
    dir=$(mktemp -d /var/tmp/esgd-fresh.XXXXXX)
elif [ -e "$dir" ]; then
    fail "$dir exists; give a new folder"
fi
cleanup() {
    if ((keep)); then say "root kept in $dir"; else rm -rf --one-file-system "$dir"; fi
}
trap cleanup EXIT
say "debootstrap --variant=minbase bookworm from $mirror into $dir"
started=$SECONDS
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1 ||
    { tail -n 20 "$dir.debootstrap.log" >&2; fail "debootstrap failed (log: $dir.debootstrap.log)"; }
rm -f "$dir.debootstrap.log"
say "bare root ready in $((SECONDS - started)) s ($(du -sh --one-file-system "$dir" | cut -f1))"

# The machine's apt sources and settings, and the CAs it trusts.
rm -f "$dir/etc/apt/sources.list"
cp -a /etc/apt/sources.list /etc/apt/sources.list.d "$dir/etc/apt/" 2>/dev/null || true
find "$dir/etc/apt/sources.list.d" -type f ! -name '*.sources' ! -name '*.list' -delete
cp -a /etc/apt/apt.conf.d/. "$dir/etc/apt/apt.conf.d/"
if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp -a /usr/local/share/ca-certificates/. "$dir/usr/local/share/ca-certificates/"
fi
mkdir -p "$dir/etc/ssl/certs"
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/"

# A clean clone: what is committed, nothing of this work tree's builds or data.
git clone --quiet --no-hardlinks "$root" "$dir/root/esgd"
say "clean clone of $(git -C "$root" rev-parse --short HEAD) in /root/esgd"

# run_inside LABEL COMMAND: COMMAND in the root, as root, with a bare
# environment, in new mount and PID namespaces with their own /proc and /dev.
run_inside() {
    local label=$1 command=$2 t0=$SECONDS status=0 blas=()
    [ -n "${OPENBLAS_CORETYPE:-}" ] && blas+=("OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE")
    [ -n "${OPENBLAS_L2_SIZE:-}" ] && blas+=("OPENBLAS_L2_SIZE=$OPENBLAS_L2_SIZE")
    say "running '$command' on the bare Debian"
    unshare --mount --pid --fork --propagation private bash -c '
        set -e
        mount -t proc proc "$1/proc"
        mount -t sysfs sys "$1/sys"
        mount --rbind /dev "$1/dev"
        mount -t tmpfs tmpfs "$1/dev/shm"
        mount -t tmpfs tmpfs "$1/tmp"
        root=$1 command=$2
        shift 2
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@" \
            bash -c "cd /root/esgd && $command"' _ "$dir" "$command" "${blas[@]}" 2>&1 | tee "$dir.$label.log" || status=$?
    local took=$((SECONDS - t0))
    printf '%s\t%d s\t(%dm%02ds)\texit %d\n' "$command" "$took" $((took / 60)) $((took % 60)) "$status" >>"$dir.times"
    return "$status"
}

: >"$dir.times"
run_inside run "scripts/run.sh" || fail "scripts/run.sh failed on a bare Debian 12 (log: $dir.run.log)"
grep -q '"model_fnv1a64"' "$dir.run.log" || fail "scripts/run.sh printed no result (log: $dir.run.log)"
run_inside test "scripts/test.sh" || fail "scripts/test.sh failed on a bare Debian 12 (log: $dir.test.log)"
summary=$(grep -E '^summary: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$dir.test.log" | tail -n 1)
[ -n "$summary" ] || fail "scripts/test.sh printed no summary line"
skipped=$(sed -E 's/.* ([0-9]+) skipped$/\1/' <<<"$summary")
if [ "$skipped" != 0 ]; then
    grep -E '\*\*\*Skipped|SKIP' "$dir.test.log" >&2 || true
    fail "$skipped test(s) skipped on a machine set up by the README's commands: an install step is missing"
fi
say "both README commands passed on a bare Debian 12:"
sed 's/^/  /' "$dir.times" >&2
rm -f "$dir.run.log" "$dir.test.log" "$dir.times"
