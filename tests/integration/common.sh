# Sourced by every integration test: a scratch folder, a private broker,
# helpers to start the programs, and cleanup of everything started.
# usage in a test: source common.sh BUILD_DIR   (needs_mnist=0 before it:
# a test of its own data, not skipped without MNIST)
set -euo pipefail
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$root/deploy/lib/broker.sh"
data=${ESGD_DATA_DIR:-$root/data/mnist}
if [ "${needs_mnist:-1}" = 1 ] && { [ ! -f "$data/train-labels-idx1-ubyte" ] || [ ! -f "$data/t10k-images-idx3-ubyte" ]; }; then
    echo "SKIP: MNIST not found in $data (scripts/fetch-mnist.sh fetches it)"
    exit 77
fi
export OPENBLAS_NUM_THREADS=1
coordinator_bin="$build/coordinator/esgd-coordinator"
agent_bin="$build/edge-agent/esgd-agent"
watch_bin="$build/mqtt/esgd-watch"
sim_bin="$build/core/esgd-sim"
work=$(mktemp -d "${TMPDIR:-/tmp}/esgd-it.XXXXXX")
# Every message is signed: one key folder per test, which every program
# started here reads through ESGD_KEYS (esgd-watch too, so it checks them).
"$build/core/esgd-keygen" --dir "$work/keys" --agents "${ESGD_TEST_KEY_AGENTS:-64}" 2>/dev/null ||
    { echo "FAIL: esgd-keygen could not make the test keys"; exit 1; }
export ESGD_KEYS=$work/keys ESGD_KEYGEN=$build/core/esgd-keygen
started_pids=()

cleanup() {
    local rc=$? pid
    for pid in "${started_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${started_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    broker_stop
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        echo "---- logs of the failed test ($work) ----"
        # The coordinator's log first: CI output is cut in the middle, and
        # it says most about a stalled job.
        local f
        for f in "$work"/coordinator.log "$work"/broker/mosquitto.log; do [ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; }; done
        for f in "$work"/*.log "$work"/*.json; do
            [ "$f" = "$work/coordinator.log" ] && continue
            [ -f "$f" ] && { echo "== $f"; tail -n 15 "$f"; }
        done
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# json_get KEY FILE: the value of a top-level key in a one-line JSON object.
json_get() {
    grep -o "\"$1\": *[^,}]*" "$2" | head -n 1 | sed 's/^[^:]*: *//; s/"//g'
}

# wait_line PATTERN FILE SECONDS: 0 when a line matches within the time
wait_line() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$1" "$2" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# wait_for_line PATTERN FILE SECONDS: the same, failing the test on a timeout
wait_for_line() {
    wait_line "$@" || fail "no line matching '$1' in $2 after $3 s"
}

start_broker() {
    broker_start "$work/broker"
}

# check_env_options FILE WHERE PROGRAMS HELP...: every ESGD_ variable FILE
# sets, or shows commented out (a YAML "ESGD_X:" or an env file's
# "ESGD_X="), is an option of PROGRAMS: ESGD_X_Y is --x-y in one of the
# --help outputs saved in the HELP files. WHERE names FILE in the failure.
check_env_options() {
    local file=$1 where=$2 programs=$3 var option
    shift 3
    for var in $(grep -oE '^ *#? *ESGD_[A-Z_]+' "$file" | tr -d ' #' | sort -u); do
        option=$(echo "${var#ESGD_}" | tr 'A-Z_' 'a-z-')
        grep -qE -- "--$option( |$)" "$@" || fail "$var in $where is not an option of $programs"
    done
}

# predict_matches MODEL DATA [esgd-predict options]: esgd-predict on the
# coordinator's exported MODEL and the test split of DATA must read the
# examples the coordinator tested ($work/coordinator.json) and count exactly
# its hits. Leaves its JSON in $work/predict.json (out) and its hits in correct.
predict_matches() {
    local model=$1 data_dir=$2 json=$work/coordinator.json examples coordinator_correct
    shift 2
    "$build/core/esgd-predict" --model "$model" --data "$data_dir" --json "$@" >"$work/predict.json" \
        2>"$work/predict.log" || fail "esgd-predict exited with $?: $(cat "$work/predict.log")"
    out=$work/predict.json
    examples=$(json_get examples "$out")
    correct=$(json_get test_correct "$out")
    coordinator_correct=$(json_get test_correct "$json")
    [ "$(json_get test_images "$json")" = "$examples" ] ||
        fail "esgd-predict read $examples examples, the coordinator tested $(json_get test_images "$json")"
    echo "coordinator: $(json_get rounds "$json") rounds, test accuracy $(json_get test_accuracy "$json")" \
        "($coordinator_correct of $examples)"
    echo "esgd-predict: test accuracy $(json_get test_accuracy "$out") ($correct of $examples)"
    [ "$correct" = "$coordinator_correct" ] || fail "esgd-predict counts $correct hits, the coordinator $coordinator_correct"
}

# start_watch JOB: esgd-watch in the background, output in $work/watch.json
start_watch() {
    "$watch_bin" --broker "$BROKER_URL" --job "$1" --timeout 600 >"$work/watch.json" 2>"$work/watch.log" &
    watch_pid=$!
    started_pids+=("$watch_pid")
    # The broker logs "<client> <qos> <filter>" once it has processed the
    # SUBSCRIBE; a fixed pause instead lost round 0 on a loaded machine.
    wait_for_line "esgd-watch-$1-[0-9]* [012] esgd/$1/#" "$work/broker/mosquitto.log" 30
}

# start_agent JOB ID [more options]: appends to $work/agent-ID.log; sets last_pid
start_agent() {
    local job=$1 id=$2
    shift 2
    "$agent_bin" --broker "$BROKER_URL" --job "$job" --id "$id" --data "$data" "$@" >>"$work/agent-$id.log" 2>&1 &
    last_pid=$!
    started_pids+=("$last_pid")
}

# start_coordinator JOB [options]: JSON in $work/coordinator.json, log in $work/coordinator.log
start_coordinator() {
    local job=$1
    shift
    "$coordinator_bin" --broker "$BROKER_URL" --job "$job" --data "$data" --json "$@" \
        >"$work/coordinator.json" 2>"$work/coordinator.log" &
    coordinator_pid=$!
    started_pids+=("$coordinator_pid")
}

# wait_pid PID SECONDS: its exit status, or fail on timeout
wait_pid() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        if ! kill -0 "$1" 2>/dev/null; then
            local rc=0
            wait "$1" || rc=$?
            return "$rc"
        fi
        sleep 0.1
    done
    fail "process $1 still running after $2 s"
}

# start_agents JOB N [options]: agents 0..N-1; their PIDs in agent_pids
start_agents() {
    local job=$1 n=$2 id
    shift 2
    agent_pids=()
    for ((id = 0; id < n; id++)); do
        start_agent "$job" "$id" "$@"
        agent_pids+=("$last_pid")
    done
}

# finish_job: the coordinator and every agent in agent_pids exit 0
finish_job() {
    wait_pid "$coordinator_pid" 600 || fail "coordinator exited with $?"
    local pid
    for pid in "${agent_pids[@]}"; do wait_pid "$pid" 60 || fail "an agent exited with $?"; done
}

# same_values FILE_A FILE_B KEY...: each key has one non-empty value in both JSON files
same_values() {
    local a=$1 b=$2 key
    shift 2
    for key in "$@"; do
        local va vb
        va=$(json_get "$key" "$a")
        vb=$(json_get "$key" "$b")
        echo "$key: $(basename "$a" .json) $va, $(basename "$b" .json) $vb"
        [ -n "$va" ] && [ "$va" = "$vb" ] || fail "$key differs"
    done
}

# free_port: prints a 127.0.0.1 TCP port nothing listens on now (a caller
# that then fails to bind it should pick another and retry).
free_port() {
    local port
    while :; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 12768)) # below the ephemeral range (32768-60999): a probe there can connect to itself
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return 0; }
    done
}

# port_open PORT: something accepts connections on 127.0.0.1:PORT
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for_port PID PORT SECONDS: PID listens on 127.0.0.1:PORT within the
# time (status 0); 1 if PID exits first or the time runs out.
wait_for_port() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 1
        port_open "$2" && return 0
        sleep 0.1
    done
    return 1
}
