# Sourced by deploy/testbed.sh and the integration tests: a private
# mosquitto on 127.0.0.1 on a free port, stopped by its PID.
#
#   broker_start DIR      # sets BROKER_PORT, BROKER_PID, BROKER_URL; config and log in DIR
#   broker_stop

broker_start() {
    local dir=$1 attempt port
    mkdir -p "$dir"
    command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; return 1; }
    local bin
    bin=$(command -v mosquitto)
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        # Skip ports something already listens on; mosquitto would fail on them anyway.
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
max_queued_messages 10000
max_inflight_messages 64
# Without it Nagle + delayed ACKs add ~40 ms to every small message.
set_tcp_nodelay true
log_dest file $dir/mosquitto.log
log_type error
log_type warning
log_type notice
CONF
        "$bin" -c "$dir/mosquitto.conf" >>"$dir/mosquitto.out" 2>&1 &
        BROKER_PID=$!
        local i
        for i in $(seq 1 50); do
            if ! kill -0 "$BROKER_PID" 2>/dev/null; then
                break # exited: port taken between the check and the bind; try another
            fi
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                BROKER_PORT=$port
                BROKER_URL="tcp://127.0.0.1:$port"
                export BROKER_PID BROKER_PORT BROKER_URL
                return 0
            fi
            sleep 0.1
        done
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    done
    echo "could not start mosquitto on a free 127.0.0.1 port; see $dir/mosquitto.log" >&2
    return 1
}

broker_stop() {
    if [ -n "${BROKER_PID:-}" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
