# Sourced by deploy/testbed.sh and the integration tests: a private
# mosquitto on 127.0.0.1 on a free port, stopped by its PID.
#
#   broker_start DIR      # sets BROKER_PORT, BROKER_PID, BROKER_URL; config and log in DIR
#   broker_stop
#   broker_restart        # stop, then start again on the same port with the same config
# With BROKER_PERSISTENCE=1 the broker saves sessions and queued messages
# in DIR and loads them again on restart. BROKER_SYS_INTERVAL sets how often
# (seconds) the broker refreshes its $SYS counters (default 10).
# BROKER_MAX_QUEUED_MESSAGES sets max_queued_messages (default 10000): the
# coordinator takes a burst of about 2 to 4 messages per agent at the start
# of a job (statuses, updates, repeats), which past the cap the broker drops
# ("Outgoing messages are being dropped"); bench/load-scale.sh raises it for
# thousands of agents.

broker_start() {
    local dir=$1 attempt port
    mkdir -p "$dir"
    command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; return 1; }
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 12768)) # below the ephemeral range (32768-60999): a probe there can connect to itself
        # Skip ports something already listens on; mosquitto would fail on them anyway.
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            continue
        fi
        local persistence="persistence false"
        [ "${BROKER_PERSISTENCE:-0}" = 1 ] && persistence="persistence true
persistence_location $dir/
autosave_interval 1"
        cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
$persistence
user $(id -un)
max_queued_messages ${BROKER_MAX_QUEUED_MESSAGES:-10000}
max_inflight_messages 64
sys_interval ${BROKER_SYS_INTERVAL:-10}
# Without it Nagle + delayed ACKs add ~40 ms to every small message.
set_tcp_nodelay true
log_dest file $dir/mosquitto.log
log_type error
log_type warning
log_type notice
log_type subscribe
CONF
        BROKER_DIR=$dir
        if broker_launch "$port"; then
            return 0
        fi
    done
    echo "could not start mosquitto on a free 127.0.0.1 port; see $dir/mosquitto.log" >&2
    return 1
}

# broker_launch PORT: runs mosquitto with $BROKER_DIR/mosquitto.conf and
# waits until it accepts connections on PORT.
broker_launch() {
    local port=$1 i
    mosquitto -c "$BROKER_DIR/mosquitto.conf" >>"$BROKER_DIR/mosquitto.out" 2>&1 &
    BROKER_PID=$!
    for i in $(seq 1 50); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            break # exited: port taken between the check and the bind
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            BROKER_PORT=$port
            BROKER_URL="tcp://127.0.0.1:$port"
            export BROKER_PID BROKER_PORT BROKER_URL BROKER_DIR
            return 0
        fi
        sleep 0.1
    done
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    return 1
}

broker_restart() {
    broker_stop
    local i
    for i in $(seq 1 30); do
        broker_launch "$BROKER_PORT" && return 0
        sleep 0.2 # the old socket may still be closing
    done
    echo "could not restart mosquitto on port $BROKER_PORT" >&2
    return 1
}

broker_stop() {
    if [ -n "${BROKER_PID:-}" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
