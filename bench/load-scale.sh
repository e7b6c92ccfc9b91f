#!/usr/bin/env bash
# Load beyond processes (issue 14, item 5): round overhead, broker traffic,
# CPU and memory with 64, 256, 1,000 and 4,000 agents, each its own MQTT
# client, simulated by esgd-load (several agents per process), against a
# private mosquitto and a real esgd-coordinator. This script owns the
# measurement: it starts everything per size, merges what the processes
# report and writes one JSON line per size, then prints a table.
#
# The job: MLP (or LeNet) with eSGD drop 0.99, --quorum N (every round waits
# for every agent), --round-timeout 600, --republish-after 60 (the 5 s
# default republishes the whole model to every agent whenever a round's
# fan-out takes longer than 5 s without a new update, which at thousands of
# agents feeds on itself) and --lr-schedule constant (with the default step
# decay an epoch is two rounds at 4,000 agents of batch 8, the rate halves
# every two rounds, and the model, hence the broadcast delta, stops changing
# in most coordinates within 20 rounds; sizes would not compare).
# esgd-load's processes connect every agent first; the coordinator starts
# once all are connected, so the first round does not also carry thousands
# of connections. The broker is deploy/lib/broker.sh's with
# max_queued_messages at least 4 x agents + 1000 (BROKER_MAX_QUEUED_MESSAGES):
# the default 10000 drops part of the coordinator's start burst at about
# 2,500 agents. What it dropped anyway is counted (broker_dropped).
#
# usage: bench/load-scale.sh [--build DIR] [--agents "64 256 1000 4000"]
#            [--rounds R] [--model mlp|lenet] [--per-process M] [--timeout S]
#            [--out FILE] [--keep] [-- COORDINATOR OPTIONS...]
#   --per-process M  agents per esgd-load process (default 4000: one process
#                    up to 4,000 agents); N agents take ceil(N / M) processes
#   after --          options for esgd-coordinator, appended last so they win
#                    (e.g. -- --down-drop 0.99, --republish-after 5)
# Each size's JSON line goes to FILE (default results/load-scale.jsonl) and
# stdout; logs of a failed size are kept and named (all with --keep).
#
# Per round, from the load processes' merged timelines (rounds 1 .. R-2: the
# first has the start-up in it, the last has no next model):
#   fanout_ms     from the first to the last agent receiving the round's model
#   turnaround_ms from the broker's acknowledgement of the round's last update
#                 to the next round's model reaching the first agent: broker to
#                 coordinator, its verify, decode and close, encoding and
#                 publishing the next model, broker back; no agent compute
#   overhead_ms   from the broker's acknowledgement of the round's last update
#                 to the next round's model at every agent (turnaround plus
#                 the next model's fan-out): what the system adds to a round
#                 beyond the agents' own work, the issue's "round overhead"
#                 (bench/broker-bench.sh's: the last agent to report, from its
#                 update sent to its next model), taken at its worst agent
#   period_ms     from one round's model to the next
# and the coordinator's round_seconds (open to close). CPU seconds are per
# process over the whole run (start-up included): esgd-load (summed over its
# processes, and by thread: main, Paho's receive and send threads), mosquitto
# (/proc), esgd-coordinator (bash's times). Broker traffic is mosquitto's own
# $SYS counters (PUBLISH packets and bytes in and out, whole run) when
# mosquitto_sub is installed, and the coordinator's JSON byte counters.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="$root/build" sizes="64 256 1000 4000" rounds=20 model=mlp per_process=4000 timeout=3600
out="$root/results/load-scale.jsonl" keep=0
coordinator_extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --agents) sizes=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --per-process) per_process=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; coordinator_extra=("$@"); break ;;
    --help | -h) sed -n '2,47p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "load-scale: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
number() { [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "load-scale: $2 must be a positive integer, not '$1'" >&2; exit 2; }; }
number "$rounds" --rounds
number "$per_process" --per-process
number "$timeout" --timeout
for n in $sizes; do number "$n" "each of --agents"; done
[ "$rounds" -ge 3 ] || { echo "load-scale: --rounds must be at least 3 (the first and the last are not timed)" >&2; exit 2; }
case $model in mlp | lenet) ;; *) echo "load-scale: --model must be mlp or lenet, not '$model'" >&2; exit 2 ;; esac
build=$(cd "$build" 2>/dev/null && pwd) || { echo "load-scale: no build folder $build" >&2; exit 2; }
load_bin=$build/mqtt/esgd-load coordinator_bin=$build/coordinator/esgd-coordinator keygen_bin=$build/core/esgd-keygen
for bin in "$load_bin" "$coordinator_bin" "$keygen_bin"; do
    [ -x "$bin" ] || { echo "load-scale: $bin is missing; build first (cmake --build $build)" >&2; exit 2; }
done
data=${ESGD_DATA_DIR:-$root/data/mnist}
[ -f "$data/t10k-labels-idx1-ubyte" ] || { echo "load-scale: MNIST not found in $data (scripts/fetch-mnist.sh)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "load-scale: python3 is needed to merge the results" >&2; exit 2; }
have_sub=1
command -v mosquitto_sub >/dev/null || { have_sub=0; echo "load-scale: mosquitto_sub not installed: no broker \$SYS counters" >&2; }
source "$root/deploy/lib/broker.sh"
export OPENBLAS_NUM_THREADS=1

# One descriptor per agent in esgd-load and in mosquitto (which inherits
# ours): the soft limit goes up to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
max_agents=0
for n in $sizes; do [ "$n" -gt "$max_agents" ] && max_agents=$n; done
fd_limit=$(ulimit -n)
if [ "$fd_limit" != unlimited ] && [ "$fd_limit" -lt $((max_agents + 200)) ]; then
    echo "load-scale: $max_agents agents need about $((max_agents + 200)) file descriptors in mosquitto; the limit is $fd_limit (raise ulimit -Hn)" >&2
    exit 2
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/esgd-load-scale.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    broker_stop
    if [ "$keep" = 1 ]; then echo "load-scale: logs kept in $scratch" >&2; else rm -rf "$scratch/keys"; rmdir "$scratch" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "load-scale: keys for $max_agents agents (esgd-keygen)" >&2
"$keygen_bin" --dir "$scratch/keys" --agents "$max_agents" >/dev/null 2>&1 ||
    { echo "load-scale: esgd-keygen could not make the keys in $scratch/keys" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
: >"$out"

# proc_cpu PID: user+system seconds of a running process, from /proc.
proc_cpu() {
    awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo null
}
# proc_peak_mib PID: its peak resident set.
proc_peak_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo null
}

# wait_connected DIR PROCS SECONDS: every esgd-load process has connected all its agents.
wait_connected() {
    local dir=$1 procs=$2 i p ready
    for ((i = 0; i < $3 * 5; i++)); do
        ready=0
        for ((p = 0; p < procs; p++)); do
            grep -q "all [0-9]* agents connected" "$dir/load-$p.log" 2>/dev/null && ready=$((ready + 1))
            kill -0 "${load_pids[$p]}" 2>/dev/null || { echo "esgd-load process $p exited early"; return 1; }
        done
        [ "$ready" = "$procs" ] && return 0
        sleep 0.2
    done
    echo "not every agent connected within $3 s"
    return 1
}

run_size() {
    local agents=$1 dir=$2 procs p first count
    procs=$(((agents + per_process - 1) / per_process))
    job="ls${agents}"
    mkdir -p "$dir"
    # The coordinator's queue on the broker takes the start's burst: every
    # agent's retained status, its status on joining, its update and (when
    # the retained and the round's model both reach it) a repeat. Past the
    # cap the broker drops messages to the coordinator; the default 10000
    # does at about 2,500 agents.
    local queue=$((4 * agents + 1000))
    [ "$queue" -ge 10000 ] || queue=10000
    echo "$queue" >"$dir/queue"
    BROKER_MAX_QUEUED_MESSAGES=$queue BROKER_SYS_INTERVAL=1 broker_start "$dir/broker" || return 1
    load_pids=()
    for ((p = 0; p < procs; p++)); do
        first=$((p * per_process))
        count=$((agents - first < per_process ? agents - first : per_process))
        "$load_bin" --broker "$BROKER_URL" --job "$job" --keys "$scratch/keys" --first-id "$first" --count "$count" \
            --json --timeline "$dir/timeline-$p.csv" --timeout "$timeout" --progress-every 30 \
            >"$dir/load-$p.json" 2>"$dir/load-$p.log" &
        load_pids+=("$!")
        pids+=("$!")
    done
    local why
    why=$(wait_connected "$dir" "$procs" 600) || { echo "$why" >"$dir/failure"; return 1; }
    started=$(date +%s.%N)
    # bash's times in the subshell: the coordinator's CPU, as its waited-for child.
    (
        rc=0
        "$coordinator_bin" --broker "$BROKER_URL" --job "$job" --keys "$scratch/keys" --data "$data" --json \
            --agents "$agents" --quorum "$agents" --round-timeout 600 --republish-after 60 --rounds "$rounds" \
            --lr-schedule constant --model "$model" --batch 8 --method esgd --drop 0.99 --seed 5 --eval-every 100000 \
            --csv "$dir/rounds.csv" "${coordinator_extra[@]}" >"$dir/coordinator.json" 2>"$dir/coordinator.log" || rc=$?
        times >"$dir/coordinator.times"
        exit "$rc"
    ) &
    local coordinator_pid=$! rc=0
    pids+=("$coordinator_pid")
    wait "$coordinator_pid" || rc=$?
    finished=$(date +%s.%N)
    [ "$rc" = 0 ] || echo "esgd-coordinator exited with $rc" >>"$dir/failure"
    for ((p = 0; p < procs; p++)); do
        rc=0
        wait "${load_pids[$p]}" || rc=$?
        [ "$rc" = 0 ] || echo "esgd-load process $p exited with $rc" >>"$dir/failure"
    done
    # What the broker did, before it stops: its CPU and peak memory, and its
    # own counters (refreshed every second).
    echo "broker_cpu=$(proc_cpu "$BROKER_PID") broker_peak_mib=$(proc_peak_mib "$BROKER_PID")" >"$dir/broker.stats"
    if [ "$have_sub" = 1 ]; then
        sleep 1.5
        # Three seconds of them (refreshed every second): the last value of each counts.
        mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -W 3 -v -t '$SYS/broker/publish/messages/received' \
            -t '$SYS/broker/publish/messages/sent' -t '$SYS/broker/bytes/received' -t '$SYS/broker/bytes/sent' \
            -t '$SYS/broker/publish/messages/dropped' >"$dir/broker.sys" 2>/dev/null || true
    fi
    broker_stop
    echo "$started $finished" >"$dir/wall"
    [ ! -f "$dir/failure" ]
}

for agents in $sizes; do
    procs=$(((agents + per_process - 1) / per_process))
    echo "load-scale: $agents agents in $procs esgd-load process(es), $rounds rounds, $model" >&2
    dir="$scratch/$agents"
    ok=1
    run_size "$agents" "$dir" || ok=0
    # Whatever is left of a failed size goes before the next one starts.
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    broker_stop
    python3 - "$dir" "$agents" "$procs" "$rounds" "$model" "$ok" "${coordinator_extra[*]:-}" <<'PY' | tee -a "$out"
import csv, glob, json, math, os, re, statistics, sys
d, agents, procs, rounds, model, ok, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1", sys.argv[7]
def read(path):
    try:
        with open(path) as f: return f.read()
    except OSError: return ""
def last_json(path):
    for line in reversed(read(path).splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try: return json.loads(line)
            except ValueError: return {}
    return {}
def q(values, p):
    if not values: return None
    v = sorted(values); i = max(1, math.ceil(p * len(v))) - 1
    return v[i] if p != 0.5 else v[(len(v) - 1) // 2]
def ms(x): return None if x is None else round(x * 1e3, 1)
co = last_json(os.path.join(d, "coordinator.json"))
loads = [last_json(p) for p in sorted(glob.glob(os.path.join(d, "load-*.json")))]
failure = read(os.path.join(d, "failure")).strip().replace("\n", "; ")
# Rounds merged over the load processes (monotonic clock, one per machine).
rows = {}
for path in glob.glob(os.path.join(d, "timeline-*.csv")):
    with open(path) as f:
        for r in csv.DictReader(f):
            t = rows.setdefault(int(r["round"]), {"answered": 0, "acked": 0, "first": math.inf, "last": -math.inf, "acked_at": -math.inf})
            t["answered"] += int(r["answered"]); t["acked"] += int(r["acked"])
            t["first"] = min(t["first"], float(r["first_model"])); t["last"] = max(t["last"], float(r["last_model"]))
            a = float(r["last_acked"])
            if not math.isnan(a): t["acked_at"] = max(t["acked_at"], a)
fanout, turnaround, overhead, period = [], [], [], []
for r in range(1, rounds - 1):
    t, n = rows.get(r), rows.get(r + 1)
    if not t or not n or t["answered"] != agents or t["acked"] < agents: continue
    fanout.append(t["last"] - t["first"]); turnaround.append(n["first"] - t["acked_at"])
    overhead.append(n["last"] - t["acked_at"]); period.append(n["first"] - t["first"])
# Bytes per agent per round after the first (whose model is the full one), from
# the coordinator's cumulative per-round CSV: the steady state of a long job.
steady_up = steady_down = None
try:
    with open(os.path.join(d, "rounds.csv")) as f:
        csv_rows = list(csv.DictReader(f))
    if len(csv_rows) > 2:
        a, b = csv_rows[0], csv_rows[-1]
        n = agents * (len(csv_rows) - 1)
        steady_up = round((int(b["uplink_bytes"]) - int(a["uplink_bytes"])) / n)
        steady_down = round((int(b["downlink_bytes"]) - int(a["downlink_bytes"])) / n)
except (OSError, KeyError, ValueError):
    pass
times = read(os.path.join(d, "coordinator.times")).split("\n")
def seconds(text):
    m = re.findall(r"(\d+)m([\d.]+)s", text)
    return sum(int(a) * 60 + float(b) for a, b in m)
coordinator_cpu = round(seconds(times[1]), 2) if len(times) > 1 and times[1] else None
peak = re.findall(r"peak resident set ([\d.]+) MiB", read(os.path.join(d, "coordinator.log")))
broker = dict(kv.split("=") for kv in read(os.path.join(d, "broker.stats")).split())
sys_counters = {}
for line in read(os.path.join(d, "broker.sys")).splitlines():
    k, _, v = line.partition(" ")
    if v.strip().isdigit(): sys_counters[k.replace("$SYS/broker/", "")] = int(v)
wall = [float(x) for x in read(os.path.join(d, "wall")).split()] or [0, 0]
def num(x):
    try: return float(x)
    except (TypeError, ValueError): return None
load_cpu = sum(l.get("cpu_user_seconds", 0) + l.get("cpu_system_seconds", 0) for l in loads) if loads else None
threads = {}
for l in loads:
    for k, v in (l.get("thread_cpu_seconds") or {}).items(): threads[k] = round(threads.get(k, 0) + v, 2)
load_peak = sum(l.get("peak_rss_mib") or 0 for l in loads) if loads else None
load_base = sum(l.get("rss_before_mib") or 0 for l in loads) if loads else None
connected = [l.get("rss_connected_mib") for l in loads]
expected = agents * rounds
accepted, rejected = co.get("accepted"), co.get("rejected")
if ok and (accepted != expected or rejected != 0):
    ok = False; failure = f"accepted {accepted} of {expected}, rejected {rejected}"
median = co.get("round_seconds_median")
result = {
    "status": "ok" if ok else "failed", "agents": agents, "load_processes": procs, "rounds": rounds, "model": model,
    "coordinator_options": extra,
    "accepted": accepted, "rejected": rejected, "duplicate": co.get("duplicate"), "late": co.get("late"),
    "wall_seconds": round(wall[1] - wall[0], 1), "coordinator_seconds": co.get("seconds"),
    "round_ms_median": ms(median), "round_ms_p90": ms(co.get("round_seconds_p90")),
    "timed_rounds": len(period),
    "period_ms_median": ms(q(period, 0.5)), "period_ms_p90": ms(q(period, 0.9)),
    "fanout_ms_median": ms(q(fanout, 0.5)), "fanout_ms_p90": ms(q(fanout, 0.9)),
    "turnaround_ms_median": ms(q(turnaround, 0.5)), "turnaround_ms_p90": ms(q(turnaround, 0.9)),
    "overhead_ms_median": ms(q(overhead, 0.5)), "overhead_ms_p90": ms(q(overhead, 0.9)),
    "uplink_MB": round(co["uplink_bytes"] / 1e6, 2) if "uplink_bytes" in co else None,
    "downlink_MB": round(co["downlink_bytes"] / 1e6, 2) if "downlink_bytes" in co else None,
    "broadcast_bytes_per_round": round(co["broadcast_bytes"] / max(1, co.get("rounds", rounds))) if "broadcast_bytes" in co else None,
    "broadcast_kB_per_round": round(co["broadcast_bytes"] / 1e3 / max(1, co.get("rounds", rounds)), 1) if "broadcast_bytes" in co else None,
    "steady_uplink_B_per_agent_round": steady_up, "steady_downlink_B_per_agent_round": steady_down,
    "published_MB": round(co["published_bytes"] / 1e6, 2) if "published_bytes" in co else None,
    "retained_model_MB": round(co["retained_model_bytes"] / 1e6, 2) if "retained_model_bytes" in co else None,
    "broker_publish_in": sys_counters.get("publish/messages/received"), "broker_publish_out": sys_counters.get("publish/messages/sent"),
    "broker_MB_in": round(sys_counters["bytes/received"] / 1e6, 1) if "bytes/received" in sys_counters else None,
    "broker_MB_out": round(sys_counters["bytes/sent"] / 1e6, 1) if "bytes/sent" in sys_counters else None,
    "broker_max_queued_messages": int(read(os.path.join(d, "queue")) or 0) or None,
    "broker_dropped": sys_counters.get("publish/messages/dropped"),
    "broker_drop_warnings": read(os.path.join(d, "broker", "mosquitto.log")).count("are being dropped"),
    "cpu_load_seconds": round(load_cpu, 2) if load_cpu is not None else None, "cpu_load_by_thread": threads,
    "cpu_broker_seconds": num(broker.get("broker_cpu")), "cpu_coordinator_seconds": coordinator_cpu,
    "load_peak_rss_mib": round(load_peak, 1) if load_peak is not None else None,
    "load_kib_per_agent_connected": round(sum(c - l.get("rss_before_mib", 0) for c, l in zip(connected, loads)) * 1024 / agents, 1) if loads and None not in connected else None,
    "load_peak_kib_per_agent": round((load_peak - load_base) * 1024 / agents, 1) if loads else None,
    "broker_peak_rss_mib": num(broker.get("broker_peak_mib")),
    "coordinator_peak_rss_mib": float(peak[-1]) if peak else None,
    "load_failures": {k: sum(l.get(k, 0) for l in loads) for k in ("publish_failures", "subscribe_failures", "connect_failures", "connections_lost", "events_lost")},
    "updates_resent": sum(l.get("updates_resent", 0) for l in loads),
    "failure": failure or None,
}
print(json.dumps(result))
PY
    if [ "$ok" = 1 ] && [ "$keep" = 0 ]; then rm -rf "$dir"; else echo "load-scale: logs of $agents agents in $dir" >&2; keep=1; fi
done

# The table, from the JSON lines.
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cols = [("agents", "agents"), ("procs", "load_processes"), ("status", "status"), ("round ms med/p90", None),
        ("period ms", "period_ms_median"), ("fan-out ms", "fanout_ms_median"), ("close ms", "turnaround_ms_median"),
        ("overhead ms med/p90", None),
        ("kB/round bcast", "broadcast_kB_per_round"), ("broker MB out", "broker_MB_out"),
        ("dropped", "broker_dropped"), ("CPU s load/broker/coord", None), ("load peak MiB", "load_peak_rss_mib"),
        ("KiB/agent", "load_kib_per_agent_connected"),
        ("broker peak MiB", "broker_peak_rss_mib")]
def cell(r, name, key):
    if name == "round ms med/p90": return f"{r.get('round_ms_median')}/{r.get('round_ms_p90')}"
    if name == "overhead ms med/p90": return f"{r.get('overhead_ms_median')}/{r.get('overhead_ms_p90')}"
    if name == "dropped":  # $SYS when mosquitto published it, else its log's warnings
        v = r.get("broker_dropped")
        return str(v) if v is not None else ("logged" if r.get("broker_drop_warnings") else "0")
    if name == "CPU s load/broker/coord": return f"{r.get('cpu_load_seconds')}/{r.get('cpu_broker_seconds')}/{r.get('cpu_coordinator_seconds')}"
    v = r.get(key)
    return "-" if v is None else str(v)
table = [[c[0] for c in cols]] + [[cell(r, *c) for c in cols] for r in rows]
widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
for row in table:
    print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
PY
