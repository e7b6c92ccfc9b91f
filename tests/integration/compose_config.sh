#!/usr/bin/env bash
# deploy/compose cannot run here (no container engine), so check that it
# stays consistent with what the other tests run: every credential file it
# mounts is one make-credentials.sh writes, it mounts the broker files where
# mosquitto.conf reads them, every ESGD_ variable is an option of the
# programs, every relative host path exists, and Prometheus scrapes the
# coordinator's metrics port.
source "$(dirname "$0")/common.sh" "$1"
compose_dir=$root/deploy/compose
compose=$compose_dir/docker-compose.yml
[ -f "$compose" ] || fail "no $compose"
command -v mosquitto_passwd >/dev/null && command -v openssl >/dev/null ||
    { echo "SKIP: mosquitto_passwd or openssl missing"; exit 77; }

# Credentials: what the compose file mounts is what the script writes for 3 agents.
bash "$root/deploy/make-credentials.sh" "$work/credentials" --agents 3 --job mnist --san DNS:broker 2>/dev/null ||
    fail "make-credentials.sh failed"
grep -oE '\./credentials/[A-Za-z0-9._/-]+' "$compose" | sort -u >"$work/mounted"
[ -s "$work/mounted" ] || fail "the compose file mounts no credentials"
while read -r path; do
    [ -e "$work/${path#./}" ] || fail "the compose file mounts $path, which make-credentials.sh does not write"
done <"$work/mounted"
openssl x509 -in "$work/credentials/server.crt" -noout -ext subjectAltName | grep -q "DNS:broker" ||
    fail "--san DNS:broker did not reach the server certificate"

# Broker files: mounted exactly where mosquitto.conf reads them.
for key in password_file acl_file cafile certfile keyfile; do
    file=$(awk -v k="$key" '$1 == k { print $2 }' "$root/deploy/mosquitto/mosquitto.conf")
    grep -q ":$file:ro" "$compose" || fail "mosquitto.conf's $key $file is not mounted by the broker service"
done
grep -q "ssl://broker:$(awk '$1 == "listener" && NF == 2 { print $2 }' "$root/deploy/mosquitto/mosquitto.conf")" "$compose" ||
    fail "the programs do not use the TLS listener's port"

# Environment: every ESGD_ variable is an option of the agent or the coordinator.
"$agent_bin" --help >"$work/help.txt" 2>&1
"$coordinator_bin" --help >>"$work/help.txt" 2>&1
check_env_options "$compose" "the compose file" "esgd-agent or esgd-coordinator" "$work/help.txt"

# Relative host paths (credentials aside) exist, relative to deploy/compose.
for path in $(grep -oE '(\.\./)+[A-Za-z0-9._/-]+' "$compose" | sort -u); do
    [ -e "$compose_dir/$path" ] || fail "the compose file refers to $path, which does not exist"
done
[ -f "$compose_dir/Dockerfile" ] || fail "no deploy/compose/Dockerfile"

# Prometheus scrapes the port the coordinator serves on, on all interfaces.
port=$(grep -oE 'ESGD_METRICS_PORT: "?[0-9]+' "$compose" | grep -oE '[0-9]+$')
[ -n "$port" ] || fail "the coordinator serves no metrics"
grep -q "coordinator:$port" "$root/deploy/prometheus/prometheus.yml" || fail "prometheus.yml does not scrape coordinator:$port"
grep -q 'ESGD_METRICS_ADDRESS: 0.0.0.0' "$compose" || fail "the coordinator's metrics are not reachable from Prometheus"
echo "compose: $(wc -l <"$work/mounted") credential files, broker paths, variables, host paths and the metrics port agree"
echo PASS
