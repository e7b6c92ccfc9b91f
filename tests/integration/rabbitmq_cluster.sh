#!/usr/bin/env bash
# The job on a 2-node RabbitMQ cluster with its MQTT plugin (Debian 12's
# rabbitmq-server, 3.10), both nodes on 127.0.0.1 with their own ports and
# node names (deploy/rabbitmq/local-cluster.sh), agents on node 1 and the
# coordinator on node 2. RabbitMQ 3.10 keeps retained messages per node:
# what the coordinator publishes retained through node 2 (config, latest
# model, lease) is not there for a client that subscribes on node 1 later;
# and it keeps client ids unique across the cluster (a second connection
# with one id, on either node, drops the first). Each part is reported on
# its own:
#   single  coordinator and agents on node 1: the job ends on esgd-sim's model
#           (RabbitMQ's MQTT as such)
#   split   coordinator on node 2 first, then the agents on node 1: the job
#           ends on esgd-sim's model; how long the agents waited is printed
#   lease   during split, a second coordinator of that job on node 1 refuses
#           to start (exit status 2, naming the first) without ever taking
#           the first one's connection (it sees the holder's lease refresh,
#           which crosses nodes, under a client id of its own), and the job
#           still ends on esgd-sim's model
#   late    split, rounds closing on a quorum of 2 before any stall: an agent
#           started late on node 1 joins within 30 s
#   dot     a job name with a dot (allowed by the product, turned into topic
#           levels by RabbitMQ) on one node: the coordinator stops at once
#           with exit status 2 and says to use a name without '.'
# Installs rabbitmq-server when missing and running as root (the system
# service is kept from starting); exit 77 (skipped) only when it cannot be
# installed. Every process started here is stopped by PID; nothing listens
# beyond loopback (checked). About 1.5 minutes on 2 cores.
# By hand: bash tests/integration/rabbitmq_cluster.sh build
source "$(dirname "$0")/common.sh" "$1"
source "$root/deploy/rabbitmq/local-cluster.sh"

rabbit_test_cleanup() {
    local rc=$? pid f
    set +e
    for pid in "${started_pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for pid in "${started_pids[@]}"; do wait "$pid" 2>/dev/null; done
    started_pids=()
    rabbit_cluster_stop
    [ "$RABBIT_POLICY_MADE" = 1 ] && rm -f /usr/sbin/policy-rc.d
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -n "$RABBIT_DIR" ]; then
        for f in "$RABBIT_DIR"/n*/log/esgd*@*.log; do
            [ -f "$f" ] && { echo "== $f (errors and warnings)"; grep -E '\[(error|warning)\]' "$f" | tail -n 8; }
        done
    fi
    (exit "$rc")
    cleanup
}
trap rabbit_test_cleanup EXIT

# ---- rabbitmq-server: install it when missing (root), else skip ----------
if ! rabbit_installed; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "rabbitmq-server is missing: apt-get install rabbitmq-server"
        rabbit_install >"$work/apt.log" 2>&1 ||
            { tail -n 5 "$work/apt.log"; echo "SKIP: rabbitmq-server could not be installed"; exit 77; }
        tail -n 1 "$work/apt.log"
    else
        echo "SKIP: rabbitmq-server is not installed and this is not root (apt-get install rabbitmq-server)"
        exit 77
    fi
fi

problems=()
problem() {
    local text
    text=$(tr '\n' ' ' <<<"$*")
    echo "FAIL: $text"
    problems+=("$text")
}
note() { echo "note: $*"; }

# forget PID: no longer ours to kill (it was waited for)
forget() {
    local keep=() p
    for p in "${started_pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    started_pids=("${keep[@]}")
}
# wait_exit PID SECONDS: sets rc to its exit status, or to 124 after
# SECONDS (then it is stopped). Not in $(...): a subshell cannot wait for it.
wait_exit() {
    local i
    rc=0
    for ((i = 0; i < $2 * 10; i++)); do
        if ! kill -0 "$1" 2>/dev/null; then
            wait "$1" || rc=$?
            forget "$1"
            return 0
        fi
        sleep 0.1
    done
    stop_pid "$1"
    rc=124
}
# stop_pid PID: SIGTERM, SIGKILL after 10 s, reaped
stop_pid() {
    local i
    kill -TERM "$1" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}
# seconds LOGLINE: the seconds of the day of a program's log line
seconds() {
    sed -n 's/^[0-9-]*T\([0-9]*\):\([0-9]*\):\([0-9.]*\)Z.*/\1 \2 \3/p' <<<"$1" | awk '{ printf "%.3f", $1 * 3600 + $2 * 60 + $3 }'
}

# ---- the cluster -----------------------------------------------------------
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
echo "$password" >"$work/rabbit.pass"
creds=(--username esgd --password-file "$work/rabbit.pass")
echo "starting a 2-node RabbitMQ cluster on 127.0.0.1 ($(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null))"
rabbit_cluster_start "$work/rabbit" 2 esgd esgd "$password" || fail "the RabbitMQ cluster did not start"
node1=${RABBIT_URLS[1]} node2=${RABBIT_URLS[2]}
echo "cluster up: nodes booted in $RABBIT_BOOT_SECONDS s, joined and user set up in $RABBIT_JOIN_SECONDS s;" \
    "node 1 $node1, node 2 $node2"
# (Erlang quotes the atoms: their names hold dots.)
running=$(rabbit_ctl 1 eval 'lists:sort(rabbit_nodes:all_running()).' 2>&1 | tr -d "\n '" || true)
[ "$running" = "[esgd1@127.0.0.1,esgd2@127.0.0.1]" ] || fail "the cluster's running nodes: $running"

# Nothing of the cluster listens beyond loopback (epmd adds [::1] itself).
listening=$(python3 - $(rabbit_pids) <<'EOF'
import os, sys
inodes = set()
for pid in sys.argv[1:]:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
for name in ("tcp", "tcp6", "udp", "udp6"):
    try:
        lines = open(f"/proc/net/{name}").read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[9] not in inodes or (name.startswith("tcp") and f[3] != "0A"):
            continue
        addr, port = f[1].split(":")
        if len(addr) == 8:
            ip = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
        else:
            ip = "::1" if addr == "00000000000000000000000001000000" else addr
        print(f"{name} {ip}:{int(port, 16)}")
EOF
)
echo "the cluster listens on: $(echo $listening)"
[ -n "$listening" ] || fail "found no listening socket of the cluster's processes"
grep -vE '^tcp 127\.0\.0\.1:|^tcp6 ::1:' <<<"$listening" && fail "the cluster listens beyond loopback"

# ---- what the broker does with retained messages (informational) -----------
if command -v mosquitto_sub >/dev/null && command -v mosquitto_pub >/dev/null; then
    probe_sub() { # URL-PORT FILTER: what a new subscriber gets within 2 s
        timeout 5 mosquitto_sub -h 127.0.0.1 -p "$1" -u esgd -P "$password" -q 1 -t "$2" -F '%t retain=%r' -C 1 -W 2 \
            2>/dev/null || echo "nothing"
    }
    mosquitto_pub -h 127.0.0.1 -p "${RABBIT_MQTT_PORTS[2]}" -u esgd -P "$password" -q 1 -r \
        -t esgd/it-rmq-probe/config -m probe || fail "mosquitto_pub to node 2 failed"
    echo "broker: retained message published through node 2 on esgd/it-rmq-probe/config; a new subscriber gets:"
    echo "broker:   on node 2, the topic itself: $(probe_sub "${RABBIT_MQTT_PORTS[2]}" esgd/it-rmq-probe/config)"
    echo "broker:   on node 2, esgd/it-rmq-probe/+: $(probe_sub "${RABBIT_MQTT_PORTS[2]}" 'esgd/it-rmq-probe/+')"
    echo "broker:   on node 1, the topic itself: $(probe_sub "${RABBIT_MQTT_PORTS[1]}" esgd/it-rmq-probe/config)"
else
    note "mosquitto-clients not installed: no broker probes"
fi

settings=(--agents 3 --rounds 40 --method esgd --drop 0.95 --seed 11 --model lenet --eval-every 1000)

# agents_report DIR JOB: per agent, when it got the config and its first round
agents_report() {
    local dir=$1 job=$2 id waiting got first
    for id in 0 1 2; do
        [ -f "$dir/agent-$id.log" ] || continue
        waiting=$(grep -m1 'waiting for the configuration' "$dir/agent-$id.log" || true)
        got=$(grep -m1 "job $job run [0-9a-f]*:" "$dir/agent-$id.log" || true)
        first=$(grep -m1 'round [0-9]*: loss' "$dir/agent-$id.log" || true)
        if [ -z "$got" ]; then
            echo "  agent $id: never received the configuration"
        elif [ -n "$waiting" ] && [ -n "$first" ]; then
            echo "  agent $id: configuration $(awk -v a="$(seconds "$waiting")" -v b="$(seconds "$got")" 'BEGIN { printf "%.1f", b - a }') s" \
                "after connecting, first update $(awk -v a="$(seconds "$waiting")" -v b="$(seconds "$first")" 'BEGIN { printf "%.1f", b - a }') s after"
        else
            echo "  agent $id: received the configuration, sent no update"
        fi
    done
}

# run_job NAME COORDINATOR_URL AGENTS_URL [SECOND_URL]: the 40-round job,
# coordinator first; the final model must be esgd-sim's. With SECOND_URL, a
# second coordinator of the job starts there with the agents (lease_check).
run_job() {
    local name=$1 curl=$2 aurl=$3 second_url=${4:-} job=it-rmq-$1 dir=$work/$1 id rc cpid
    mkdir -p "$dir"
    "$sim_bin" --data "$data" --json --job "$job" "${settings[@]}" >"$dir/sim.json" 2>"$dir/sim.log" ||
        fail "esgd-sim failed: $(tail -n 3 "$dir/sim.log")"
    "$coordinator_bin" --broker "$curl" "${creds[@]}" --data "$data" --json --job "$job" "${settings[@]}" --quorum 3 \
        >"$dir/coordinator.json" 2>"$dir/coordinator.log" &
    cpid=$!
    started_pids+=("$cpid")
    wait_line "job $job run " "$dir/coordinator.log" 60 || {
        problem "$name: the coordinator did not start the job: $(tail -n 3 "$dir/coordinator.log")"
        return 0
    }
    local apids=()
    for id in 0 1 2; do
        "$agent_bin" --broker "$aurl" "${creds[@]}" --job "$job" --id "$id" --data "$data" >"$dir/agent-$id.log" 2>&1 &
        apids+=($!)
        started_pids+=($!)
    done
    [ -n "$second_url" ] && lease_check "$name" "$second_url" "$job" "$dir" "$cpid"
    wait_exit "$cpid" 180
    echo "$name: coordinator exit status $rc; $(grep -c 'publishing the model again' "$dir/coordinator.log") republications after a stall"
    agents_report "$dir" "$job"
    if [ "$rc" != 0 ]; then
        [ "$rc" = 124 ] && rc="none: still running after 180 s"
        problem "$name: the job did not finish (coordinator exit status $rc): $(grep -v '^round' "$dir/coordinator.log" | tail -n 2)"
        for id in 0 1 2; do stop_pid "${apids[$id]}"; done
        return 0
    fi
    for id in 0 1 2; do
        wait_exit "${apids[$id]}" 60
        [ "$rc" = 0 ] || problem "$name: agent $id exit status $rc: $(tail -n 2 "$dir/agent-$id.log")"
    done
    local key va vb
    for key in model_fnv1a64 uplink_bytes broadcast_bytes final_loss test_accuracy accepted; do
        va=$(json_get "$key" "$dir/sim.json")
        vb=$(json_get "$key" "$dir/coordinator.json")
        echo "  $key: esgd-sim $va, over RabbitMQ $vb"
        [ -n "$va" ] && [ "$va" = "$vb" ] || problem "$name: $key differs from esgd-sim's ($va, $vb)"
    done
}

# lease_check PART URL JOB DIR FIRST_PID: a second coordinator of JOB at URL
# while the first (FIRST_PID) runs must exit 2 naming the first, before the
# first finishes, and must not take the first one's connection.
lease_check() {
    local name=$1 url=$2 job=$3 dir=$4 first=$5 second t0
    echo "== lease: a second coordinator of job $job on node 1 while the first runs on node 2"
    t0=$(date +%s.%N)
    "$coordinator_bin" --broker "$url" "${creds[@]}" --data "$data" --json --job "$job" "${settings[@]}" --quorum 3 \
        >"$dir/second.json" 2>"$dir/second.log" &
    second=$!
    started_pids+=("$second")
    wait_exit "$second" 30
    echo "lease: the second coordinator's exit status after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s: $rc" \
        "($(grep -m1 -E 'another coordinator|job .* run ' "$dir/second.log" || echo 'no line about the lease'))"
    if [ "$rc" != 2 ] || ! grep -q "another coordinator is running job $job: .* state" "$dir/second.log"; then
        [ "$rc" = 124 ] && rc="none, still running after 30 s"
        problem "lease: a second coordinator on node 1 did not refuse the job (exit status $rc; expected 2 and" \
            "'another coordinator is running job $job: <holder>'): $(grep -v '^round' "$dir/second.log" | tail -n 2)"
    fi
    grep -q "job $job run " "$dir/second.log" && problem "lease: the second coordinator started a run of its own"
    kill -0 "$first" 2>/dev/null ||
        problem "lease: the first coordinator had already exited when the second one gave up: nothing was checked"
    if grep -q -E 'connection to .* lost|claims job' "$dir/coordinator.log"; then
        problem "lease: the first coordinator was disturbed: $(grep -m1 -E 'connection to .* lost|claims job' "$dir/coordinator.log")"
    fi
}

echo "== single: coordinator and agents on node 1"
run_job single "$node1" "$node1"
echo "== split: coordinator on node 2, agents on node 1 (and a second coordinator on node 1: lease)"
run_job split "$node2" "$node1" "$node1"
for f in "$work"/split/agent-*.log; do
    ! grep -q 'has a new run' "$f" || problem "lease: an agent followed another run: $(grep -m1 'has a new run' "$f")"
done

echo "== late: coordinator on node 2, agents 0 and 1 on node 1, rounds close on a quorum of 2; agent 2 joins later on node 1"
dir=$work/late job=it-rmq-late
mkdir -p "$dir"
late_settings=(--job "$job" --agents 3 --quorum 2 --round-timeout 2 --start-timeout 2 --rounds 100000 --method esgd
    --drop 0.95 --seed 11 --model lenet --eval-every 100000)
"$coordinator_bin" --broker "$node2" "${creds[@]}" --data "$data" --json "${late_settings[@]}" \
    >"$dir/coordinator.json" 2>"$dir/coordinator.log" &
late_coordinator=$!
started_pids+=("$late_coordinator")
late_agents=()
wait_line "job $job run " "$dir/coordinator.log" 60 || fail "late: the coordinator did not start: $(tail -n 3 "$dir/coordinator.log")"
for id in 0 1; do
    "$agent_bin" --broker "$node1" "${creds[@]}" --job "$job" --id "$id" --data "$data" >"$dir/agent-$id.log" 2>&1 &
    late_agents+=($!)
    started_pids+=($!)
done
if ! wait_line '^round 30/' "$dir/coordinator.log" 120; then
    problem "late: agents 0 and 1 did not get 30 rounds done in 120 s: $(grep -v '^round' "$dir/coordinator.log" | tail -n 2)"
else
    agents_report "$dir" "$job"
    "$agent_bin" --broker "$node1" "${creds[@]}" --job "$job" --id 2 --data "$data" >"$dir/agent-2.log" 2>&1 &
    late_agents+=($!)
    started_pids+=($!)
    at=$(grep '^round ' "$dir/coordinator.log" | tail -n 1 | cut -d' ' -f2)
    if wait_line 'round [0-9]*: loss' "$dir/agent-2.log" 30; then
        echo "late: agent 2, started at round $at, answered: $(grep -m1 'round [0-9]*: loss' "$dir/agent-2.log" | cut -d' ' -f3-5)"
    else
        now=$(grep '^round ' "$dir/coordinator.log" | tail -n 1 | cut -d' ' -f2)
        if grep -q "job $job run " "$dir/agent-2.log"; then
            problem "late: agent 2 on node 1 received the configuration but answered no round in 30 s (rounds $at to $now)"
        else
            problem "late: agent 2 on node 1 never received the configuration in 30 s while rounds $at to $now ran" \
                "(it is retained on node 2 only: the agent should have asked for it, status syncing with run 0)"
        fi
    fi
fi
stop_pid "$late_coordinator"
for pid in "${late_agents[@]}"; do stop_pid "$pid"; done

echo "== dot: job name it.rmq (the product allows dots, RabbitMQ turns them into levels) on node 1 alone"
dir=$work/dot job=it.rmq
mkdir -p "$dir"
if command -v mosquitto_sub >/dev/null; then
    mosquitto_sub -h 127.0.0.1 -p "${RABBIT_MQTT_PORTS[1]}" -u esgd -P "$password" -q 1 -t 'esgd/#' -F '%t' \
        >"$dir/trace.log" 2>&1 &
    started_pids+=($!)
    trace=$!
fi
"$coordinator_bin" --broker "$node1" "${creds[@]}" --data "$data" --json --job "$job" --agents 3 --quorum 3 --rounds 5 \
    --method esgd --drop 0.95 --seed 11 --model lenet >"$dir/coordinator.json" 2>"$dir/coordinator.log" &
dot_coordinator=$!
started_pids+=("$dot_coordinator")
dot_agents=()
for id in 0 1 2; do
    "$agent_bin" --broker "$node1" "${creds[@]}" --job "$job" --id "$id" --data "$data" >"$dir/agent-$id.log" 2>&1 &
    dot_agents+=($!)
    started_pids+=($!)
done
wait_exit "$dot_coordinator" 30
[ "$rc" = 124 ] && rc="none, still running after 30 s"
echo "dot: coordinator exit status $rc"
agents_report "$dir" "$job"
if [ "$rc" != 2 ] || ! grep -q "use a job name without '.'" "$dir/coordinator.log"; then
    problem "dot: a job named $job on RabbitMQ should stop the coordinator with exit status 2 and a clear" \
        "message (exit status $rc); the broker delivered" \
        "$(sort -u "$dir/trace.log" 2>/dev/null | grep -m2 -E 'config|lease' | tr '\n' ' ')for esgd/$job/..."
else
    echo "dot: refused clearly: $(grep -o "the broker delivered.*" "$dir/coordinator.log" | head -n 1)"
fi
for pid in "${dot_agents[@]}"; do stop_pid "$pid"; done
[ -n "${trace:-}" ] && stop_pid "$trace"

if [ "${#problems[@]}" -gt 0 ]; then
    echo "---- ${#problems[@]} problem(s) on RabbitMQ (deploy/rabbitmq/README.md):"
    for p in "${problems[@]}"; do echo "  - $p"; done
    exit 1
fi
echo PASS
