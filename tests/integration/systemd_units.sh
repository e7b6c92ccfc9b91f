#!/usr/bin/env bash
# The systemd units in deploy/systemd (the ones the .deb ships, see
# packaging.sh) pass systemd-analyze verify with the programs of this build.
# Skipped, and reported so to CTest, only where systemd-analyze is missing
# (scripts/setup.sh installs it).
source "$(dirname "$0")/common.sh" "$1"
command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed (apt-get install systemd)"; exit 77; }

# systemd-analyze verify exits 0 even on unknown keys or bad values, so any
# output is a failure. ExecStart points into this build so that the units'
# programs are checked for being executable.
mkdir -p "$work/units"
for unit in esgd-agent esgd-coordinator; do
    dir=$([ $unit = esgd-agent ] && echo edge-agent || echo coordinator)
    sed "s|^ExecStart=/usr/bin/$unit|ExecStart=$build/$dir/$unit|" "$root/deploy/systemd/$unit.service" \
        >"$work/units/$unit.service"
    grep -q "^ExecStart=$build/" "$work/units/$unit.service" || fail "$unit.service has no ExecStart=/usr/bin/$unit"
done
verify() { (cd "$work/units" && systemd-analyze verify "$@") >"$work/verify.log" 2>&1 && [ ! -s "$work/verify.log" ]; }
verify ./esgd-agent.service ./esgd-coordinator.service || fail "systemd-analyze verify: $(cat "$work/verify.log")"
# The check itself can fail: a unit with a misspelt setting is caught.
sed 's/^ProtectSystem=strict/ProtectSystem=strikt/' "$work/units/esgd-agent.service" >"$work/units/esgd-broken.service"
! verify ./esgd-broken.service || fail "systemd-analyze verify did not catch a bad value"
echo "systemd-analyze verify: both units clean"
echo PASS
