#!/usr/bin/env bash
# Unpacks Fashion-MNIST (Zalando's drop-in replacement for MNIST: 28x28
# grey images of 10 kinds of clothing) into DEST_DIR (default
# <repo>/data/fashion-mnist) under MNIST's file names, so every program
# reads it as it reads MNIST. The data comes from the Debian package
# dataset-fashion-mnist (gzipped IDX files in /usr/share/datasets/fashion-mnist),
# which this script installs with apt-get when it is missing and it runs as
# root (scripts/setup.sh --dataset fashion does both). Files already in
# DEST_DIR with the right sizes are kept.
# Usage: scripts/fetch-fashion.sh [DEST_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-$root/data/fashion-mnist}
package=dataset-fashion-mnist
source_dir=/usr/share/datasets/fashion-mnist

# The IDX files' sizes: header plus 60000 (train) or 10000 (t10k) examples.
declare -A size=(
    [train-images-idx3-ubyte]=47040016
    [train-labels-idx1-ubyte]=60008
    [t10k-images-idx3-ubyte]=7840016
    [t10k-labels-idx1-ubyte]=10008
)
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

say() { echo "fetch-fashion: $*" >&2; }
fail() {
    say "error: $1"
    shift
    local hint
    for hint in "$@"; do say "  $hint"; done
    exit 1
}
size_ok() { [ -f "$1" ] && [ "$(stat -c %s "$1")" = "${size[$2]}" ]; }

all_present=1
for f in "${files[@]}"; do
    size_ok "$dest/$f" "$f" || all_present=0
done
if ((all_present)); then
    say "Fashion-MNIST already in $dest (sizes checked), nothing to do"
    exit 0
fi

if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    [ "$(id -u)" -eq 0 ] || fail "the Debian package $package is not installed" \
        "run this script (or scripts/setup.sh --dataset fashion) as root, or: apt-get install $package"
    say "installing the Debian package $package (30 MB)"
    # apt-get update only when the package is unknown to apt's lists.
    apt-cache show "$package" >/dev/null 2>&1 || apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package"
fi
for f in "${files[@]}"; do
    [ -f "$source_dir/$f.gz" ] || fail "$source_dir/$f.gz is missing although $package is installed" \
        "reinstall it: apt-get install --reinstall $package"
done

mkdir -p "$dest" || fail "cannot create $dest"
# Unpacked beside the final names, then renamed: a reader never sees a
# half-written file under a final name.
work=$(mktemp -d "$dest/.fetch.XXXXXX") || fail "cannot create a temporary directory in $dest"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM HUP

say "unpacking Fashion-MNIST from $source_dir into $dest"
for f in "${files[@]}"; do
    gzip -dc "$source_dir/$f.gz" >"$work/$f" || fail "cannot unpack $source_dir/$f.gz"
    size_ok "$work/$f" "$f" ||
        fail "$f unpacked to $(stat -c %s "$work/$f") bytes, expected ${size[$f]}; nothing was installed"
done
for f in "${files[@]}"; do
    chmod 0644 "$work/$f"
    mv -f "$work/$f" "$dest/$f" || fail "cannot move $f into $dest"
done
say "Fashion-MNIST ready in $dest (${files[*]})"
