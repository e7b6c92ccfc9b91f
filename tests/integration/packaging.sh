#!/usr/bin/env bash
# The .deb and the systemd units: cpack builds the package from this build
# tree into a scratch folder; it carries the four programs, the units, the
# sysusers file, the examples and the maintainer scripts with the right
# dependencies; unpacked with dpkg -x (not installed) the programs run; the
# units as packaged are deploy/systemd's (which systemd_units.sh verifies)
# and keep their hardening.
source "$(dirname "$0")/common.sh" "$1"
for tool in cpack dpkg-deb dpkg file; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done
[ -f "$build/CPackConfig.cmake" ] || fail "no CPackConfig.cmake in $build (is cmake/packaging.cmake included?)"

# ---- the package ----
(cd "$build" && cpack -G DEB -B "$work/pkg" >"$work/cpack.log" 2>&1) || fail "cpack failed: $(tail -n 20 "$work/cpack.log")"
debs=("$work"/pkg/esgd_*.deb)
[ "${#debs[@]}" = 1 ] && [ -f "${debs[0]}" ] || fail "expected one esgd_*.deb in $work/pkg, found: ${debs[*]}"
deb=${debs[0]}
echo "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = esgd ] || fail "package name $(field Package)"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "architecture $(field Architecture)"
depends=$(field Depends)
echo "Depends: $depends"
dep_names=$(echo "$depends" | tr ',|' '\n\n' | sed 's/(.*//; s/ //g')
for dep in libpaho-mqtt1.3 libmsgpackc2 libopenblas0 libsodium23 libc6 adduser; do
    grep -qx -- "$dep" <<<"$dep_names" || fail "Depends lacks $dep"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -t >"$work/control.list"
for script in postinst prerm postrm; do
    grep -qx "./$script" "$work/control.list" || fail "no $script in the package"
done
mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
for script in postinst prerm postrm; do
    [ -x "$work/control/$script" ] || fail "$script is not executable"
    sh -n "$work/control/$script" || fail "$script has a syntax error"
done

# ---- its contents, unpacked into a scratch root ----
rootfs=$work/root
dpkg -x "$deb" "$rootfs"
expected=(
    usr/bin/esgd-agent usr/bin/esgd-coordinator usr/bin/esgd-watch usr/bin/esgd-sim usr/bin/esgd-keygen
    usr/lib/systemd/system/esgd-agent.service usr/lib/systemd/system/esgd-coordinator.service
    usr/lib/sysusers.d/esgd.conf
    usr/share/doc/esgd/examples/agent.env.example usr/share/doc/esgd/examples/coordinator.env.example
    usr/share/doc/esgd/examples/mosquitto.conf usr/share/esgd/make-credentials.sh
)
for f in "${expected[@]}"; do
    [ -f "$rootfs/$f" ] || fail "the package lacks /$f"
done
for unit in esgd-agent.service esgd-coordinator.service; do
    cmp -s "$rootfs/usr/lib/systemd/system/$unit" "$root/deploy/systemd/$unit" || fail "packaged $unit differs from deploy/systemd"
done
for program in esgd-agent esgd-coordinator esgd-watch esgd-sim esgd-keygen; do
    bin=$rootfs/usr/bin/$program
    [ -x "$bin" ] || fail "/usr/bin/$program is not executable"
    "$bin" --help >"$work/$program-help.log" 2>&1 || fail "$program --help exited with $?"
    grep -q "^usage: $program" "$work/$program-help.log" || fail "$program --help printed no usage"
done
bash -n "$rootfs/usr/share/esgd/make-credentials.sh" || fail "make-credentials.sh has a syntax error"
echo "the package holds ${#expected[@]} expected files; its 5 programs run"

# ---- the units: settings the deployment relies on ----
for unit in esgd-agent esgd-coordinator; do
    file=$rootfs/usr/lib/systemd/system/$unit.service
    state=/var/lib/$unit
    for line in "User=esgd" "ExecStart=/usr/bin/$unit" "EnvironmentFile=/etc/esgd/${unit#esgd-}.env" \
        "StateDirectory=$unit" "Environment=ESGD_STATE_DIR=$state" "Restart=on-failure" "NoNewPrivileges=yes" \
        "ProtectSystem=strict" "ProtectHome=yes" "PrivateTmp=yes" "CapabilityBoundingSet="; do
        grep -qx -- "$line" "$file" || fail "$unit.service lacks '$line'"
    done
done
# Each ESGD_ variable in the examples names a real option of its program
# (ESGD_X_Y is --x-y in --help).
for pair in agent:esgd-agent coordinator:esgd-coordinator; do
    check_env_options "$rootfs/usr/share/doc/esgd/examples/${pair%%:*}.env.example" "${pair%%:*}.env.example" \
        "${pair#*:}" "$work/${pair#*:}-help.log"
done
echo "the units keep their hardening; the example variables are real options"

echo PASS
