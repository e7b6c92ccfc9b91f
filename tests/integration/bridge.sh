#!/usr/bin/env bash
# The bridged gateway topology of deploy/bridge/: a central mosquitto (the
# coordinator) and two site mosquittos (two agents each), every broker run
# from the shipped templates (deploy/bridge/render.sh) with the credentials
# of deploy/make-credentials.sh and deploy/bridge/add-site.sh, the sites
# bridged to the centre over TLS with passwords and the ACL.
#   - the bridge's topic lines are exactly the topics of schemas/messages.md
#     section 1, each in its publisher's direction, at its QoS;
#   - the job ends with exactly esgd-sim's model (and update bytes): the
#     bridges lose, duplicate and reorder nothing that matters;
#   - from the central broker's $SYS counters: it sends each message of the
#     coordinator once per site (2 copies), not once per agent (4), and
#     nothing else but the updates and statuses to the coordinator (no
#     loop, no update of one site to the other); the figures per round are
#     printed, by kind (full model, round model, updates);
#   - an agent started on a site after the job still finds the retained
#     configuration and final model on its site broker (they crossed the
#     bridge as retained messages).
source "$(dirname "$0")/common.sh" "$1"
for tool in mosquitto mosquitto_passwd mosquitto_sub; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed (apt-get install mosquitto mosquitto-clients)"; exit 77; }
done

# The bridge carries exactly the job's topics of schemas/messages.md
# (section 1), each in the direction of its publisher: what the coordinator
# publishes comes in to the sites, what agents publish goes out to the
# centre, at the table's QoS. A topic added to the table without a line in
# site.conf (or the reverse) fails here, before any broker starts.
expected=$(awk -F'|' '/^## 1\. Topics/ { on = 1; next } on && /^## / { exit }
    on && $2 ~ /`esgd\// {
        topic = $2; gsub(/[ `]/, "", topic); gsub(/<job>/, "@JOB@", topic); gsub(/<t>|<agent>/, "+", topic)
        direction = $4; sub(/^ */, "", direction); qos = $6; gsub(/ /, "", qos)
        if (direction ~ /^coordinator/) way = "in"; else if (direction ~ /^agent/) way = "out"; else way = "?"
        print "topic " topic " " way " " qos }' "$root/schemas/messages.md" | sort)
shipped=$(grep '^topic ' "$root/deploy/bridge/site.conf" | sort)
[ -n "$expected" ] || fail "no topics found in schemas/messages.md section 1"
[ "$expected" = "$shipped" ] || fail "deploy/bridge/site.conf's topic lines differ from schemas/messages.md section 1:
$(diff <(echo "$expected") <(echo "$shipped") | grep '^[<>]' | sed 's/^</  missing:/; s/^>/  not in the schema:/')"
echo "bridge topics = schemas/messages.md section 1: $(echo "$expected" | wc -l) topics, $(echo "$expected" | grep -c ' in ') in, $(echo "$expected" | grep -c ' out ') out"

job=it-bridge
rounds=30
# Every agent reports every round (quorum = agents), so the model is the
# simulator's bit for bit (as in matches_sim.sh).
settings=(--job "$job" --agents 4 --rounds "$rounds" --method esgd --drop 0.99 --seed 11 --model mlp --eval-every 1000)
"$sim_bin" --data "$data" --json "${settings[@]}" >"$work/sim.json" 2>"$work/sim.log" || fail "esgd-sim failed"

creds=$work/credentials
bash "$root/deploy/make-credentials.sh" "$creds" --agents 4 --job "$job" 2>"$work/credentials.log" ||
    fail "make-credentials.sh failed: $(cat "$work/credentials.log")"
bash "$root/deploy/bridge/add-site.sh" "$creds" --job "$job" --site a --agents 0,1 2>>"$work/credentials.log" ||
    fail "add-site.sh a failed: $(cat "$work/credentials.log")"
bash "$root/deploy/bridge/add-site.sh" "$creds" --job "$job" --site b --agents 2,3 2>>"$work/credentials.log" ||
    fail "add-site.sh b failed: $(cat "$work/credentials.log")"

# start_mosquitto NAME TEMPLATE PORT_VARS... -- NAME=VALUE...: renders the
# template into $work/NAME/mosquitto.conf with a free port for each of
# PORT_VARS (e.g. SITE_PORT) and the other values, adds only sys_interval 1
# (the counters below must be fresh), starts it and waits for every port;
# on a port taken meanwhile it tries others. Sets broker_ports, the ports in
# the order of PORT_VARS; common.sh's cleanup stops the broker by its PID.
# The log goes to $work/NAME.log, which the failure output shows.
start_mosquitto() {
    local name=$1 template=$2 var pid
    shift 2
    local port_vars=()
    while [ "$1" != -- ]; do port_vars+=("$1"); shift; done
    shift
    mkdir -p "$work/$name"
    for _ in 1 2 3 4 5; do
        local values=() ports=()
        for var in "${port_vars[@]}"; do
            ports+=("$(free_port)")
            values+=("$var=${ports[-1]}")
        done
        [ "$(printf '%s\n' "${ports[@]}" | sort -u | wc -l)" = "${#ports[@]}" ] || continue
        bash "$root/deploy/bridge/render.sh" "$root/deploy/bridge/$template" "${values[@]}" "$@" \
            DATA_DIR="$work/$name" LOG_FILE="$work/$name.log" USER="$(id -un)" >"$work/$name/mosquitto.conf" ||
            fail "cannot render deploy/bridge/$template"
        echo "sys_interval 1" >>"$work/$name/mosquitto.conf"
        # Each start has the log to itself (the listener check below reads it).
        [ ! -f "$work/$name.log" ] || { cat "$work/$name.log" >>"$work/$name/failed-starts.log"; rm "$work/$name.log"; }
        mosquitto -c "$work/$name/mosquitto.conf" >>"$work/$name/mosquitto.out" 2>&1 &
        pid=$!
        started_pids+=("$pid")
        local up=1 port
        for port in "${ports[@]}"; do wait_for_port "$pid" "$port" 10 || up=0; done
        if [ "$up" = 1 ]; then
            broker_ports=("${ports[@]}")
            return 0
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    fail "mosquitto $name did not start: $(tail -n 5 "$work/$name/failed-starts.log" "$work/$name.log" "$work/$name/mosquitto.out" 2>/dev/null)"
}

start_mosquitto central central.conf CENTRAL_PORT LOCAL_PORT -- CENTRAL_BIND=127.0.0.1 CREDENTIALS_DIR="$creds"
central_port=${broker_ports[0]} local_port=${broker_ports[1]}
declare -A site_port
for site in a b; do
    # The server certificate names 127.0.0.1 (make-credentials.sh), so the
    # bridge checks it as it would a real host name.
    start_mosquitto "site-$site" site.conf SITE_PORT -- SITE="$site" JOB="$job" CENTRAL_HOST=127.0.0.1 \
        CENTRAL_PORT="$central_port" SITE_BIND=127.0.0.1 SITE_DIR="$creds/site-$site" \
        BRIDGE_PASSWORD="$(cat "$creds/bridge-$site.password")"
    site_port[$site]=${broker_ports[0]}
done
echo "central broker: TLS $central_port, loopback $local_port; site a ${site_port[a]}, site b ${site_port[b]}"
# Each broker listens on its given 127.0.0.1 ports only: a listener option
# placed before the first listener line would make mosquitto 2.0 open an
# extra listener on port 1883 of every interface (IPv4 and IPv6).
opened=$(cat "$work"/central.log "$work"/site-[ab].log | sed -n 's/.*Opening \(ipv[46]\) listen socket on port \([0-9]*\)\..*/\1:\2/p' | sort)
[ "$opened" = "$(printf 'ipv4:%s\n' "$central_port" "$local_port" "${site_port[a]}" "${site_port[b]}" | sort)" ] ||
    fail "the brokers opened other listeners than those configured: ${opened//$'\n'/ }"
wait_for_line "New [a-z]* connected .* as bridge-a " "$work/central.log" 30
wait_for_line "New [a-z]* connected .* as bridge-b " "$work/central.log" 30

# sys_read PORT FILE: the central counters as "name value" lines, read as
# monitor. The values are those of the last refresh (every second); the
# reading itself costs exactly one PUBLISH per topic, which the next
# reading counts and sys_delta takes off again.
sys_topics=(publish/messages/sent publish/messages/received publish/bytes/sent publish/bytes/received
    publish/messages/dropped)
sys_read() {
    local args=() t
    for t in "${sys_topics[@]}"; do args+=(-t "\$SYS/broker/$t"); done
    mosquitto_sub -h 127.0.0.1 -p "$1" -u monitor -P "$(cat "$creds/monitor.password")" -W 10 -C "${#sys_topics[@]}" \
        -v "${args[@]}" | sed 's|^\$SYS/broker/||' >"$2" || fail "cannot read \$SYS on port $1"
    [ "$(wc -l <"$2")" = "${#sys_topics[@]}" ] || fail "\$SYS on port $1: $(cat "$2")"
}
sys_value() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
sys_read "$local_port" "$work/sys-before.txt"

# The coordinator on the central broker's loopback listener, the agents on
# their site's broker, each with its own credentials.
BROKER_URL=tcp://127.0.0.1:$local_port
start_coordinator "$job" "${settings[@]}" --quorum 4 --username coordinator \
    --password-file "$creds/coordinator.password" --lease-username lease --lease-password-file "$creds/lease.password"
# The agents once the job is on the broker, so that they find its retained
# configuration rather than ask for it (an answer to one agent goes to one
# site only, which would skew the copies counted below).
wait_for_line "job $job run " "$work/coordinator.log" 60
agent_pids=()
for id in 0 1 2 3; do
    site=a
    [ "$id" -lt 2 ] || site=b
    BROKER_URL=tcp://127.0.0.1:${site_port[$site]}
    # A config that does not come over the bridge ends the agent instead of
    # hanging the test.
    start_agent "$job" "$id" --username "agent-$id" --password-file "$creds/agent-$id.password" --config-timeout 60
    agent_pids+=("$last_pid")
done
wait_pid "$coordinator_pid" 120 || fail "coordinator exited with $?"
for pid in "${agent_pids[@]}"; do wait_pid "$pid" 60 || fail "an agent exited with $?"; done
same_values "$work/sim.json" "$work/coordinator.json" model_fnv1a64 uplink_bytes broadcast_bytes final_loss \
    test_accuracy accepted

# ---- what left the central broker ----
sleep 2.5 # two $SYS refreshes after the last message
sys_read "$local_port" "$work/sys-after.txt"
# sys_delta NAME: the counter's growth over the job, without the first
# reading's own messages (one per topic, its payloads the values read).
sys_delta() {
    local before after
    before=$(sys_value "$1" "$work/sys-before.txt")
    after=$(sys_value "$1" "$work/sys-after.txt")
    case $1 in
    publish/messages/sent) echo $((after - before - ${#sys_topics[@]})) ;;
    publish/bytes/sent) echo $((after - before - $(awk '{ n += length($2) } END { print n }' "$work/sys-before.txt"))) ;;
    *) echo $((after - before)) ;;
    esac
}
sent_msgs=$(sys_delta publish/messages/sent)
sent_bytes=$(sys_delta publish/bytes/sent)
received_msgs=$(sys_delta publish/messages/received)
received_bytes=$(sys_delta publish/bytes/received)
dropped=$(sys_delta publish/messages/dropped)
json=$work/coordinator.json
retained=$(json_get retained_model_bytes "$json")
broadcast=$(json_get broadcast_bytes "$json")
uplink=$(json_get uplink_bytes "$json")
# The coordinator's own count of the PUBLISH packets it received (updates,
# statuses, its lease) and sent (lease, config, models).
read -r coord_in coord_out < <(sed -n 's/.*broker link: \([0-9]*\) messages in, \([0-9]*\) out.*/\1 \2/p' "$work/coordinator.log") || true
[ -n "$coord_in" ] || fail "no 'broker link' line in the coordinator's log"
republished=$(grep -c "publishing the model again" "$work/coordinator.log" || true)
# A round model published again (after --republish-after seconds without an
# update) is the full model, which broadcast_bytes does not count: 4 bytes
# a coordinate (d from esgd-sim's log) plus a header of about 100.
dim=$(sed -n 's/.*, d = \([0-9]*\).*/\1/p' "$work/sim.log" | head -n 1)
[ -n "$dim" ] || fail "no model dimension in esgd-sim's log"
models=$((retained + broadcast + republished * 4 * dim))
echo "central broker over the job: PUBLISH sent $sent_msgs ($sent_bytes payload bytes), received $received_msgs" \
    "($received_bytes bytes), dropped $dropped; the coordinator received $coord_in messages and published $coord_out" \
    "($retained bytes of retained full models, $broadcast of round models; $republished times published again)"
[ "$dropped" = 0 ] || fail "the central broker dropped $dropped messages"
# Copies of each coordinator message, by bytes: every byte the coordinator
# publishes (models, config, lease) is received once and sent once per
# subscribing bridge, and everything else the broker sends (updates and
# statuses to the coordinator) it has received once. So sent - received =
# (copies - 1) x what the coordinator published; its models are all but a
# few hundred bytes of that. Per-agent delivery would make it 4.
copies_bytes=$(awk -v s="$sent_bytes" -v r="$received_bytes" -v m="$models" \
    'BEGIN { printf "%.3f", 1 + (s - r) / m }')
# By messages (mosquitto 2.0.11's $SYS/broker/publish/messages/received
# leaves out every PUBLISH with the retain flag, printed above, so the
# coordinator's own counts stand in): all that is not for the coordinator
# went to the bridges.
copies_msgs=$(awk -v s="$sent_msgs" -v i="$coord_in" -v o="$coord_out" 'BEGIN { printf "%.3f", (s - i) / o }')
echo "copies of each coordinator message sent by the central broker: $copies_bytes (bytes), $copies_msgs (messages);" \
    "2 sites, 4 agents"
awk -v c="$copies_bytes" 'BEGIN { exit !(c > 1.98 && c < 2.02) }' ||
    fail "the central broker sent $copies_bytes copies of each model (bytes), expected 2: one per site"
awk -v c="$copies_msgs" 'BEGIN { exit !(c > 1.9 && c < 2.1) }' ||
    fail "the central broker sent $copies_msgs copies of each message, expected 2: one per site"
# Per round, by kind: each site gets every full model the coordinator
# retains (the bridge keeps the site's retained copy current) and every
# round's model; the coordinator gets the updates. For comparison, the 4
# agents connected to the central broker directly would take only the round
# models (the retained one once, when they start).
awk -v r="$rounds" -v s="$sent_bytes" -v full="$retained" -v bc="$broadcast" -v up="$uplink" \
    -v m="$sent_msgs" -v i="$coord_in" 'BEGIN {
    printf "per round leaving the central broker: %.0f messages, %.0f bytes:\n", m / r, s / r
    printf "  to each site: %.2f messages (full model %.0f B + round model %.0f B)\n", (m - i) / r / 2, full / r, bc / r
    printf "  to the coordinator: %.2f messages, updates %.0f B\n", i / r, up / r
    printf "  (the 4 agents connected to it directly would take 4 round models: %.0f B)\n", 4 * bc / r
}'

# ---- the retained messages reached the sites as retained ----
# A fresh agent on site b after the job: nothing is published any more, so
# it can only get the configuration and the final model from the site
# broker's retained store. It verifies both (the coordinator's signature,
# the run) and, having taken no part in the run, says it has finished and
# waits for a new one.
run=$(grep -oE "job $job run [0-9a-f]{16}" "$work/coordinator.log" | head -n 1 | awk '{ print $4 }')
"$agent_bin" --broker "tcp://127.0.0.1:${site_port[b]}" --job "$job" --id 3 --data "$data" --username agent-3 \
    --password-file "$creds/agent-3.password" --config-timeout 15 >"$work/late-agent.log" 2>&1 &
late=$!
started_pids+=("$late")
wait_for_line "run $run of job $job has already finished" "$work/late-agent.log" 30
kill "$late"
wait "$late" 2>/dev/null || true
echo "an agent started on site b after the job found run $run's retained configuration and final model there"
# The reason it works: mosquitto logs a client that said it is a bridge
# (try_private) as "New bridge", and keeps the retain flag of what it sends
# to it.
grep -q "New bridge connected .* as bridge-a " "$work/central.log" ||
    fail "the central broker did not take bridge-a for a bridge: $(grep -m 1 'as bridge-a ' "$work/central.log")"
echo PASS
