#!/usr/bin/env bash
# A private RabbitMQ cluster with the MQTT plugin on 127.0.0.1, for tests and
# trials (Debian 12's rabbitmq-server, 3.10): its own epmd on a free port,
# N nodes esgd1@127.0.0.1 .. esgdN@127.0.0.1 with their own MQTT and Erlang
# distribution ports, all under one folder, run as the current user without
# systemd, stopped by their PIDs. Nothing listens beyond loopback (epmd also
# takes [::1] on its port: it always adds the loopback addresses).
#
# As a library (tests/integration/rabbitmq_cluster.sh, in CTest):
#   source deploy/rabbitmq/local-cluster.sh
#   rabbit_cluster_start DIR N VHOST USER PASSWORD
#       # sets RABBIT_NODES[i], RABBIT_MQTT_PORTS[i], RABBIT_URLS[i] (i = 1..N),
#       # RABBIT_BOOT_SECONDS, RABBIT_JOIN_SECONDS; returns 1 with a message on failure
#   rabbit_ctl I COMMAND...       # rabbitmqctl against node I
#   rabbit_cluster_stop           # TERM, then KILL after 30 s; also epmd
#   rabbit_install                # as root: apt-get install rabbitmq-server, its
#                                 # system services kept from starting and left disabled
# By hand:
#   deploy/rabbitmq/local-cluster.sh [--nodes N] DIR
#       # starts the cluster, prints the URLs and credentials, stops it on Ctrl-C
#   deploy/rabbitmq/local-cluster.sh --install   # rabbit_install (scripts/setup.sh)
RABBIT_LIB=${RABBIT_LIB:-/usr/lib/rabbitmq/bin}
RABBIT_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RABBIT_DIR=
RABBIT_EPMD_PID=
RABBIT_EPMD_PORT=
RABBIT_CTL_PORT=
RABBIT_USED_PORTS=" "
RABBIT_NODES=()
RABBIT_MQTT_PORTS=()
RABBIT_DIST_PORTS=()
RABBIT_URLS=()
RABBIT_WRAPPER_PIDS=()

rabbit_installed() {
    [ -x "$RABBIT_LIB/rabbitmq-server" ] && [ -x "$RABBIT_LIB/rabbitmqctl" ] && command -v epmd >/dev/null
}

# rabbit_install: as root, apt-get install rabbitmq-server (apt-get update
# and again when that fails), apt's output on stdout. Packages' services are
# kept from starting while it installs (a temporary /usr/sbin/policy-rc.d,
# only when there is none; RABBIT_POLICY_MADE=1 meanwhile, for a caller's
# trap), and rabbitmq-server's and epmd's are left disabled: they would
# listen on every interface (AMQP 5672, distribution 25672, epmd 4369),
# while these nodes are our own, on 127.0.0.1. Status 1 when it failed.
RABBIT_POLICY_MADE=0
rabbit_install() {
    local rc=0 unit
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && RABBIT_POLICY_MADE=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server ||
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server; } ||
        rc=1
    if [ "$RABBIT_POLICY_MADE" = 1 ]; then rm -f /usr/sbin/policy-rc.d; RABBIT_POLICY_MADE=0; fi
    [ "$rc" = 0 ] || return 1
    # ...nor at the next boot.
    for unit in rabbitmq-server.service epmd.socket epmd.service; do
        deb-systemd-helper disable "$unit" >/dev/null 2>&1 || true
    done
    update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
    echo "installed rabbitmq-server $(dpkg-query -W -f '${Version}' rabbitmq-server) (its system service and epmd's left disabled)"
    rabbit_installed
}

_rabbit_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# _rabbit_pick_ports N: the first of N consecutive free 127.0.0.1 ports not
# handed out before, below the kernel's ephemeral range (32768 and up on
# Debian): polling a port in that range until a node listens on it can
# connect the probe to itself, which then holds the port and the node's
# listener fails with eaddrinuse.
_rabbit_pick_ports() {
    local n=$1 base i ok low=32768 span
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
    span=$((low - 20000 - n))
    [ "$span" -ge 1000 ] || span=$((40000 - n)) # an odd ephemeral range: fall back
    while :; do
        base=$((20000 + (RANDOM * 32768 + RANDOM) % span))
        ok=1
        for ((i = 0; i < n; i++)); do
            case $RABBIT_USED_PORTS in *" $((base + i)) "*) ok=0 ;; esac
            [ "$ok" = 1 ] && ! _rabbit_port_free $((base + i)) && ok=0
            [ "$ok" = 1 ] || break
        done
        if [ "$ok" = 1 ]; then
            echo "$base" # the caller adds them to RABBIT_USED_PORTS
            return 0
        fi
    done
}

# The environment every node and CLI call shares: the cookie in $HOME, our
# epmd, distribution on 127.0.0.1 only, no system-wide configuration.
_rabbit_common_env() {
    export HOME=$RABBIT_DIR
    export ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$RABBIT_EPMD_PORT
    export RABBITMQ_USE_LONGNAME=true
    export RABBITMQ_CONF_ENV_FILE=$RABBIT_DIR/rabbitmq-env.conf
    export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_DIST_PORT_MIN=$RABBIT_CTL_PORT RABBITMQ_CTL_DIST_PORT_MAX=$((RABBIT_CTL_PORT + 9))
}

# rabbit_ctl I COMMAND...: rabbitmqctl against node I (quiet, 60 s timeout)
rabbit_ctl() {
    local i=$1
    shift
    (
        _rabbit_common_env
        exec "$RABBIT_LIB/rabbitmqctl" -q -t 60 -n "${RABBIT_NODES[$i]}" "$@"
    )
}

# _rabbit_spawn I VHOST: starts node I in the background (its ports, config,
# data and logs under $RABBIT_DIR/nI); _rabbit_await I waits for it.
_rabbit_spawn() {
    local i=$1 d=$RABBIT_DIR/n$1 vhost=$2
    mkdir -p "$d/log" "$d/mnesia" "$d/conf.d" "$d/plugins-expand"
    RABBIT_MQTT_PORTS[$i]=$(_rabbit_pick_ports 1)
    RABBIT_USED_PORTS+="${RABBIT_MQTT_PORTS[$i]} "
    RABBIT_DIST_PORTS[$i]=$(_rabbit_pick_ports 1)
    RABBIT_USED_PORTS+="${RABBIT_DIST_PORTS[$i]} "
    # Long names on the address itself: a host name needs resolving, and a
    # bare root (debootstrap) has no /etc/hosts, so not even localhost.
    RABBIT_NODES[$i]=esgd$i@127.0.0.1
    RABBIT_URLS[$i]=tcp://127.0.0.1:${RABBIT_MQTT_PORTS[$i]}
    sed -e "s/@MQTT_PORT@/${RABBIT_MQTT_PORTS[$i]}/" -e "s/@VHOST@/$vhost/" \
        "$RABBIT_HERE/local-node.conf" >"$d/rabbitmq.conf"
    rm -f "$d/beam.pid"
    (
        _rabbit_common_env
        export RABBITMQ_NODENAME=${RABBIT_NODES[$i]} RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        export RABBITMQ_DIST_PORT=${RABBIT_DIST_PORTS[$i]}
        # Our files only: not /etc/rabbitmq/{rabbitmq.conf,conf.d,advanced.config,enabled_plugins}
        export RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf RABBITMQ_CONFIG_FILES=$d/conf.d
        export RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
        export RABBITMQ_ENABLED_PLUGINS_FILE=$RABBIT_HERE/enabled_plugins
        export RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log
        export RABBITMQ_PLUGINS_EXPAND_DIR=$d/plugins-expand RABBITMQ_PID_FILE=$d/beam.pid
        export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        export ERL_CRASH_DUMP=$d/erl_crash.dump
        cd "$d" && exec "$RABBIT_LIB/rabbitmq-server" >"$d/stdout.log" 2>&1 </dev/null
    ) &
    # The wrapper script: on SIGTERM it stops the VM (its child, PID in
    # beam.pid) cleanly and exits.
    RABBIT_WRAPPER_PIDS[$i]=$!
}

_rabbit_await() { # I SECONDS: the node's MQTT listener accepts connections
    local i=$1 t d=$RABBIT_DIR/n$1
    for ((t = 0; t < $2 * 10; t++)); do
        kill -0 "${RABBIT_WRAPPER_PIDS[$i]}" 2>/dev/null || break
        (exec 3<>"/dev/tcp/127.0.0.1/${RABBIT_MQTT_PORTS[$i]}") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "rabbitmq node ${RABBIT_NODES[$i]} did not open its MQTT port ${RABBIT_MQTT_PORTS[$i]} within $2 s; see $d/stdout.log and $d/log/" >&2
    tail -n 15 "$d/stdout.log" >&2 2>/dev/null
    return 1
}

_rabbit_wait_port() { # PORT SECONDS
    local t
    for ((t = 0; t < $2 * 10; t++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

_rabbit_now() { date +%s.%N; }
_rabbit_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# rabbit_cluster_start DIR N VHOST USER PASSWORD
rabbit_cluster_start() {
    local dir=$1 n=$2 vhost=$3 user=$4 password=$5 i t0
    rabbit_installed || { echo "rabbitmq-server is not installed" >&2; return 1; }
    mkdir -p "$dir"
    RABBIT_DIR=$(cd "$dir" && pwd)
    : >"$RABBIT_DIR/rabbitmq-env.conf"
    # The shared Erlang cookie: every node and CLI call reads $HOME/.erlang.cookie.
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RABBIT_DIR/.erlang.cookie")
    chmod 400 "$RABBIT_DIR/.erlang.cookie"
    RABBIT_CTL_PORT=$(_rabbit_pick_ports 10)
    for ((i = 0; i < 10; i++)); do RABBIT_USED_PORTS+="$((RABBIT_CTL_PORT + i)) "; done
    RABBIT_EPMD_PORT=$(_rabbit_pick_ports 1)
    RABBIT_USED_PORTS+="$RABBIT_EPMD_PORT "
    t0=$(_rabbit_now)
    # Our own epmd in the foreground (no -daemon), so that we hold its PID;
    # the nodes and the CLI find it by ERL_EPMD_PORT and start no other.
    epmd -address 127.0.0.1 -port "$RABBIT_EPMD_PORT" >"$RABBIT_DIR/epmd.log" 2>&1 &
    RABBIT_EPMD_PID=$!
    _rabbit_wait_port "$RABBIT_EPMD_PORT" 10 || { echo "epmd did not start on port $RABBIT_EPMD_PORT" >&2; return 1; }
    # The nodes boot in parallel (several seconds of CPU each).
    for ((i = 1; i <= n; i++)); do _rabbit_spawn "$i" "$vhost"; done
    local attempt
    for ((i = 1; i <= n; i++)); do
        # A port taken between our check and the node's bind: new ports.
        for attempt in 2 3 0; do
            _rabbit_await "$i" 180 && break
            [ "$attempt" = 0 ] && return 1
            echo "rabbitmq node ${RABBIT_NODES[$i]}: starting again on other ports (attempt $attempt)" >&2
            _rabbit_stop_node "$i"
            _rabbit_spawn "$i" "$vhost"
        done
    done
    RABBIT_BOOT_SECONDS=$(_rabbit_since "$t0")
    # Join nodes 2..N to node 1 (join_cluster wipes the joining node's data).
    t0=$(_rabbit_now)
    for ((i = 2; i <= n; i++)); do
        rabbit_ctl "$i" stop_app >/dev/null &&
            rabbit_ctl "$i" join_cluster "${RABBIT_NODES[1]}" >/dev/null &&
            rabbit_ctl "$i" start_app >/dev/null &&
            _rabbit_await "$i" 120 || { echo "node ${RABBIT_NODES[$i]} could not join ${RABBIT_NODES[1]}" >&2; return 1; }
    done
    # Virtual host, user and permissions live in the cluster's shared
    # database: once, on node 1.
    rabbit_ctl 1 add_vhost "$vhost" >/dev/null &&
        rabbit_ctl 1 add_user "$user" "$password" >/dev/null &&
        rabbit_ctl 1 set_permissions -p "$vhost" "$user" '.*' '.*' '.*' >/dev/null ||
        { echo "could not create the virtual host $vhost and user $user" >&2; return 1; }
    RABBIT_JOIN_SECONDS=$(_rabbit_since "$t0")
    export RABBIT_BOOT_SECONDS RABBIT_JOIN_SECONDS
    return 0
}

# rabbit_pids: every PID the cluster runs (wrappers, VMs, epmd)
rabbit_pids() {
    local i
    for i in "${!RABBIT_WRAPPER_PIDS[@]}"; do
        echo "${RABBIT_WRAPPER_PIDS[$i]}"
        [ -s "$RABBIT_DIR/n$i/beam.pid" ] && echo "$(cat "$RABBIT_DIR/n$i/beam.pid")"
    done
    [ -n "$RABBIT_EPMD_PID" ] && echo "$RABBIT_EPMD_PID"
    return 0
}

_rabbit_stop_node() { # I: a node that failed to start
    local beam
    kill -TERM "${RABBIT_WRAPPER_PIDS[$1]}" 2>/dev/null || true
    beam=$(cat "$RABBIT_DIR/n$1/beam.pid" 2>/dev/null || true)
    sleep 1
    [ -n "$beam" ] && kill -KILL "$beam" 2>/dev/null
    kill -KILL "${RABBIT_WRAPPER_PIDS[$1]}" 2>/dev/null || true
    wait "${RABBIT_WRAPPER_PIDS[$1]}" 2>/dev/null || true
    mv "$RABBIT_DIR/n$1" "$RABBIT_DIR/n$1.failed.$$.$RANDOM"
}

# rabbit_cluster_stop: SIGTERM to every node's wrapper (a clean stop of
# its VM), SIGKILL to what still runs after 30 s, then epmd.
rabbit_cluster_stop() {
    local i t alive beam
    for i in "${!RABBIT_WRAPPER_PIDS[@]}"; do kill -TERM "${RABBIT_WRAPPER_PIDS[$i]}" 2>/dev/null || true; done
    for ((t = 0; t < 300; t++)); do
        alive=0
        for i in "${!RABBIT_WRAPPER_PIDS[@]}"; do
            kill -0 "${RABBIT_WRAPPER_PIDS[$i]}" 2>/dev/null && alive=1
            beam=$(cat "$RABBIT_DIR/n$i/beam.pid" 2>/dev/null || true)
            [ -n "$beam" ] && kill -0 "$beam" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for i in "${!RABBIT_WRAPPER_PIDS[@]}"; do
        beam=$(cat "$RABBIT_DIR/n$i/beam.pid" 2>/dev/null || true)
        if [ -n "$beam" ] && kill -0 "$beam" 2>/dev/null; then
            echo "rabbitmq node ${RABBIT_NODES[$i]} (pid $beam) did not stop within 30 s: killed" >&2
            kill -KILL "$beam" 2>/dev/null || true
        fi
        kill -KILL "${RABBIT_WRAPPER_PIDS[$i]}" 2>/dev/null || true
        wait "${RABBIT_WRAPPER_PIDS[$i]}" 2>/dev/null || true
    done
    RABBIT_WRAPPER_PIDS=()
    if [ -n "$RABBIT_EPMD_PID" ]; then
        kill -TERM "$RABBIT_EPMD_PID" 2>/dev/null || true
        for ((t = 0; t < 50; t++)); do kill -0 "$RABBIT_EPMD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$RABBIT_EPMD_PID" 2>/dev/null || true
        wait "$RABBIT_EPMD_PID" 2>/dev/null || true
        RABBIT_EPMD_PID=
    fi
}

# By hand: start, print, wait for Ctrl-C, stop.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -eu
    if [ "${1:-}" = --install ]; then
        trap '[ "$RABBIT_POLICY_MADE" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
        rabbit_install
        exit
    fi
    nodes=2
    [ "${1:-}" = --nodes ] && { nodes=$2; shift 2; }
    [ $# = 1 ] || { echo "usage: $0 [--nodes N] DIR" >&2; exit 2; }
    password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    trap 'rabbit_cluster_stop; exit 0' INT TERM
    trap 'rabbit_cluster_stop' EXIT
    rabbit_cluster_start "$1" "$nodes" esgd esgd "$password" || exit 1
    umask 077
    echo "$password" >"$RABBIT_DIR/password"
    echo "booted in $RABBIT_BOOT_SECONDS s, clustered in $RABBIT_JOIN_SECONDS s"
    for i in "${!RABBIT_URLS[@]}"; do echo "node ${RABBIT_NODES[$i]}: ${RABBIT_URLS[$i]}"; done
    echo "MQTT user esgd, password in $RABBIT_DIR/password (--username esgd --password-file $RABBIT_DIR/password)"
    echo "Ctrl-C stops the cluster"
    while :; do sleep 1; done
fi
