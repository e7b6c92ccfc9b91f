#!/usr/bin/env bash
# The production broker setup, for real: credentials from
# deploy/make-credentials.sh, mosquitto running deploy/mosquitto/mosquitto.conf
# with only its ports (free loopback ones), file paths, log and user rewritten.
#   - anonymous clients and a wrong password are refused, on both listeners;
#   - an agent cannot publish to another agent's topics nor to the model or
#     configuration topics, the coordinator and the monitor cannot publish
#     updates: the broker answers "not authorized" (MQTT 5) and nothing
#     reaches subscribers allowed to read those topics, retained or not;
#   - an agent reads models but not the other agents' updates or status;
#   - a 500 KB message (bigger than the largest full model) gets through;
#   - the client id is the user name: an agent's password used with the
#     coordinator's client id takes over nothing;
#   - a short job (MLP, 3 agents, 30 rounds) runs to completion over TLS with
#     per-agent credentials and the signing keys make-credentials.sh wrote,
#     and esgd-watch as "monitor" checks every signature and decodes it all.
source "$(dirname "$0")/common.sh" "$1"
for tool in mosquitto mosquitto_passwd mosquitto_pub mosquitto_sub openssl; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed (apt-get install mosquitto mosquitto-clients openssl)"; exit 77; }
done

job=it-security
agents=3
creds=$work/credentials
bash "$root/deploy/make-credentials.sh" "$creds" --agents "$agents" --job "$job" 2>"$work/credentials.log" ||
    fail "make-credentials.sh failed: $(cat "$work/credentials.log")"
for f in "$creds"/*.password "$creds"/*.key; do
    [ "$(stat -c %a "$f")" = 600 ] || fail "$f has mode $(stat -c %a "$f"), expected 600"
done
[ "$(sort -u "$creds"/agent-*.password | wc -l)" = "$agents" ] || fail "agents share a password"

# start_production_broker [true]: the production config with free ports
# (and, with "true", require_certificate true); sets BROKER_PID (stopped by
# common.sh's cleanup), tls_port and plain_port.
start_production_broker() {
    local dir=$work/broker attempt require=${1:-} lines=10
    [ -z "$require" ] || lines=11
    mkdir -p "$dir"
    for attempt in 1 2 3 4 5; do
        tls_port=$(free_port)
        plain_port=$(free_port)
        [ "$tls_port" != "$plain_port" ] || continue
        # Exactly these lines change; anything else in the file is run as written.
        awk -v tls="$tls_port" -v plain="$plain_port" -v creds="$creds" -v dir="$dir" -v me="$(id -un)" \
            -v require="$require" -v lines="$lines" '
            $1 == "listener" && $2 == "8883" { print "listener " tls " 127.0.0.1"; n++; next }
            $1 == "listener" && $2 == "1883" && $3 == "127.0.0.1" { print "listener " plain " 127.0.0.1"; n++; next }
            $1 ~ /^(password_file|acl_file|cafile|certfile|keyfile)$/ {
                file = $2; sub(/.*\//, "", file); print $1 " " creds "/" file; n++; next }
            $1 == "persistence_location" { print $1 " " dir "/"; n++; next }
            $1 == "log_dest" { print "log_dest file " dir "/mosquitto.log"; n++; next }
            $1 == "user" { print "user " me; n++; next }
            $1 == "require_certificate" && require != "" { print $1 " " require; n++; next }
            { print }
            END { if (n != lines) { print "rewrote " n " lines, expected " lines > "/dev/stderr"; exit 1 } }
        ' "$root/deploy/mosquitto/mosquitto.conf" >"$dir/mosquitto.conf" || fail "cannot rewrite the production config"
        mosquitto -c "$dir/mosquitto.conf" >>"$dir/mosquitto.out" 2>&1 &
        BROKER_PID=$!
        if wait_for_port "$BROKER_PID" "$tls_port" 10 && wait_for_port "$BROKER_PID" "$plain_port" 5; then
            return 0
        fi
        broker_stop # a port was taken meanwhile; try others
    done
    fail "mosquitto did not start with the production config: $(tail -n 5 "$dir/mosquitto.log" "$dir/mosquitto.out" 2>/dev/null)"
}
start_production_broker
echo "broker: TLS on $tls_port, plain loopback on $plain_port"
# Only those two: a listener option placed before the first listener line
# makes mosquitto 2.0 open an extra listener on port 1883 of every interface.
opened=$(sed -n 's/.*Opening \(ipv[46]\) listen socket on port \([0-9]*\)\..*/\1:\2/p' "$work/broker/mosquitto.log" | sort -u)
[ "$opened" = "$(printf 'ipv4:%s\nipv4:%s' "$tls_port" "$plain_port" | sort)" ] ||
    fail "the production config opened other listeners than its two: ${opened//$'\n'/ }"

password() { cat "$creds/$1.password"; }
tls=(-h 127.0.0.1 -p "$tls_port" --cafile "$creds/ca.crt")
plain=(-h 127.0.0.1 -p "$plain_port")

# ---- 1. anonymous clients and bad passwords are refused ----
refused() { # refused NAME COMMAND...: the client fails with "not authorised"
    local name=$1 rc=0
    shift
    "$@" >"$work/$name.out" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] && grep -qi "not authori[sz]ed" "$work/$name.out" ||
        fail "$name: expected a refused connection, got exit $rc: $(cat "$work/$name.out")"
}
refused anon-plain-pub mosquitto_pub "${plain[@]}" -t "esgd/$job/config" -m anonymous
refused anon-tls-pub mosquitto_pub "${tls[@]}" -t "esgd/$job/config" -m anonymous
refused anon-tls-sub mosquitto_sub "${tls[@]}" -t "esgd/$job/#" -W 3
refused anon-tls-cert mosquitto_pub "${tls[@]}" --cert "$creds/agent-0.crt" --key "$creds/agent-0.key" -t x -m y
refused bad-password mosquitto_pub "${tls[@]}" -u agent-0 -P "$(password agent-1)" -t x -m y
refused unknown-user mosquitto_pub "${plain[@]}" -u agent-$agents -P "$(password agent-0)" -t x -m y
# The project's own client is refused too (and says so).
rc=0
"$watch_bin" --broker "ssl://127.0.0.1:$tls_port" --ca-file "$creds/ca.crt" --job "$job" \
    --connect-timeout 2 --timeout 3 >"$work/anon-watch.json" 2>"$work/anon-watch.log" || rc=$?
[ "$rc" -ne 0 ] || fail "esgd-watch connected without credentials"
echo "anonymous clients, a wrong password and an unknown user are refused"

# ---- 2. the ACL ----
# pub USER TOPIC PAYLOAD [mosquitto_pub options]: MQTT 5 QoS 1 over TLS, so a
# denied PUBLISH comes back as "not authorized"; prints allowed or denied.
pub() {
    local user=$1 topic=$2 message=(-m "$3") rc=0
    [ -n "$3" ] || message=(-n) # an empty payload (clears a retained message)
    shift 3
    mosquitto_pub -V mqttv5 "${tls[@]}" -u "$user" -P "$(password "$user")" -q 1 -t "$topic" "${message[@]}" "$@" \
        >"$work/pub.out" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || fail "mosquitto_pub as $user to $topic failed: $(cat "$work/pub.out")"
    if grep -qi "not authori[sz]ed" "$work/pub.out"; then echo denied; else echo allowed; fi
}
expect_pub() { # expect_pub allowed|denied USER TOPIC PAYLOAD [options]
    local want=$1 got
    shift
    got=$(pub "$@")
    [ "$got" = "$want" ] || fail "publish by $1 to $2: $got, expected $want"
}
# sub NAME USER TOPIC...: a subscriber in the background, "topic payload" lines
# in $work/NAME.sub; returns once its subscription is acknowledged.
sub() {
    local name=$1 user=$2 topic args=()
    shift 2
    for topic in "$@"; do args+=(-t "$topic"); done
    stdbuf -oL mosquitto_sub -d -V mqttv5 "${tls[@]}" -u "$user" -P "$(password "$user")" -q 1 -v "${args[@]}" \
        >"$work/$name.sub" 2>&1 &
    started_pids+=("$!")
    wait_for_line "received SUBACK" "$work/$name.sub" 10
}
# The client id is the user name (use_username_as_clientid), so a user has
# one connection at a time: a publish as a user would drop that user's
# subscriber. Each phase therefore listens only as users that do not
# publish in it.
# Phase 1: agents publish; the coordinator and the monitor listen.
sub monitor monitor "esgd/$job/#"
monitor_sub=${started_pids[-1]}
sub coordinator coordinator "esgd/$job/round/+/grad/+" "esgd/$job/status/+"
coordinator_sub=${started_pids[-1]}
# Impersonation and writes to the coordinator's topics: all denied.
expect_pub denied agent-1 "esgd/$job/round/7/grad/0" denied-grad-of-agent-0
expect_pub denied agent-1 "esgd/$job/status/0" denied-status-of-agent-0 -r
expect_pub denied agent-1 "esgd/$job/model" denied-model -r
expect_pub denied agent-1 "esgd/$job/round/7/model" denied-round-model
expect_pub denied agent-1 "esgd/$job/config" denied-config -r
expect_pub denied agent-1 "esgd/$job/round/7/grad/1/x" denied-deeper-level
expect_pub denied agent-1 "esgd/other-job/round/7/grad/1" denied-other-job
expect_pub denied agent-2 "esgd/$job/round/7/grad/0" denied-grad-of-agent-0-by-2
expect_pub denied agent-2 "esgd/$job/agent/0/model" denied-agent-model-by-2
# What each may do.
expect_pub allowed agent-1 "esgd/$job/round/7/grad/1" allowed-grad-1
expect_pub allowed agent-1 "esgd/$job/status/1" allowed-status-1 -r
expect_pub allowed agent-0 "esgd/$job/round/7/grad/0" allowed-grad-0
# mosquitto_pub waited for each PUBACK and the broker delivers in order, so
# once the last allowed message is in, anything denied would be too.
wait_for_line "esgd/$job/round/7/grad/0 allowed-grad-0" "$work/coordinator.sub" 10
for line in "round/7/grad/1 allowed-grad-1" "status/1 allowed-status-1" "round/7/grad/0 allowed-grad-0"; do
    grep -q "esgd/$job/$line" "$work/coordinator.sub" || fail "the coordinator did not receive $line"
done
[ "$(grep -c "sending CONNECT" "$work/coordinator.sub")" = 1 ] || fail "the coordinator's subscriber was dropped"
kill "$coordinator_sub"
# Phase 2: the coordinator publishes; agent-0 and the monitor listen.
sub agent0 agent-0 "esgd/$job/#"
expect_pub denied coordinator "esgd/$job/round/7/grad/0" denied-grad-by-coordinator
expect_pub allowed coordinator "esgd/$job/config" allowed-config -r
expect_pub allowed coordinator "esgd/$job/round/7/model" allowed-round-model
expect_pub allowed coordinator "esgd/$job/agent/0/model" allowed-agent-model
expect_pub allowed coordinator "esgd/$job/agent/1/model" allowed-agent-model-of-1
expect_pub allowed agent-1 "esgd/$job/round/8/grad/1" allowed-grad-1-again
expect_pub allowed coordinator "esgd/$job/model" allowed-model -r
wait_for_line "esgd/$job/model allowed-model" "$work/monitor.sub" 10
wait_for_line "esgd/$job/model allowed-model" "$work/agent0.sub" 10
for line in "config allowed-config" "round/7/model allowed-round-model" "model allowed-model" \
    "agent/0/model allowed-agent-model"; do
    grep -q "esgd/$job/$line" "$work/agent0.sub" || fail "agent-0 did not receive $line"
done
! grep -E "esgd/$job/((round/[0-9]+/grad|status)/|agent/1/)" "$work/agent0.sub" || fail "agent-0 read another agent's topic"
[ "$(grep -c "sending CONNECT" "$work/agent0.sub" "$work/monitor.sub" | grep -vc ":1$")" = 0 ] ||
    fail "a subscriber was dropped"
# Phase 3: the monitor may not write; nobody listens as monitor now.
kill "$monitor_sub"
expect_pub denied monitor "esgd/$job/config" denied-config-by-monitor -r
! grep -h "denied-" "$work"/*.sub || fail "a denied message reached a subscriber"
[ "$(grep -c "^esgd/$job/" "$work/monitor.sub")" = 9 ] || fail "the monitor saw $(grep -c "^esgd/$job/" "$work/monitor.sub") messages, expected 9"

# Retained: only what was allowed is kept.
mosquitto_sub -V mqttv5 "${tls[@]}" -u monitor -P "$(password monitor)" -t "esgd/$job/#" -v --retained-only -W 2 \
    >"$work/retained.sub" 2>&1 || true
grep "^esgd/" "$work/retained.sub" | sort >"$work/retained.sorted" || true
printf '%s\n' "esgd/$job/config allowed-config" "esgd/$job/model allowed-model" "esgd/$job/status/1 allowed-status-1" |
    cmp -s - "$work/retained.sorted" || fail "retained messages: $(cat "$work/retained.sub")"
echo "ACL: 11 forbidden publishes denied and undelivered, 9 allowed ones delivered to exactly their readers"

# Big messages: a 500 KB update (more than the MLP's 410 KB full model) passes.
head -c 500000 /dev/urandom >"$work/big.bin"
mosquitto_sub -V mqttv5 "${tls[@]}" -u coordinator -P "$(password coordinator)" -q 1 -t "esgd/$job/round/+/grad/0" \
    -C 1 -W 15 -N >"$work/big.received" 2>"$work/big.log" &
big_sub=$!
started_pids+=("$big_sub")
sleep 0.5 # no -d here: the payload must be the only output
mosquitto_pub -V mqttv5 "${tls[@]}" -u agent-0 -P "$(password agent-0)" -q 1 -t "esgd/$job/round/8/grad/0" \
    -f "$work/big.bin" >"$work/big-pub.log" 2>&1 || fail "cannot publish 500 KB: $(cat "$work/big-pub.log")"
wait_pid "$big_sub" 20 || fail "the 500 KB message did not arrive: $(cat "$work/big.log")"
cmp -s "$work/big.bin" "$work/big.received" || fail "the 500 KB message arrived altered"
echo "a 500 KB message passes max_packet_size"

# ---- 2b. a stolen agent password cannot take over another session ----
# The live coordinator's session (its client id as esgd-coordinator asks for
# it); then agent-0's credentials connect asking for the same client id.
stdbuf -oL mosquitto_sub -d -V mqttv5 "${tls[@]}" -u coordinator -P "$(password coordinator)" -q 1 \
    -i "esgd-coordinator-$job" -t "esgd/$job/status/+" >"$work/victim.sub" 2>&1 &
victim=$!
started_pids+=("$victim")
wait_for_line "received SUBACK" "$work/victim.sub" 10
mosquitto_sub -V mqttv5 "${tls[@]}" -u agent-0 -P "$(password agent-0)" -i "esgd-coordinator-$job" \
    -t "esgd/$job/config" -W 2 >"$work/thief.sub" 2>&1 || true
kill -0 "$victim" 2>/dev/null || fail "agent-0's credentials took the coordinator's session over: $(cat "$work/victim.sub")"
# mosquitto_sub reconnects by itself, so a takeover shows as a second
# CONNECT of the victim and the broker's "already connected" line.
[ "$(grep -c "sending CONNECT" "$work/victim.sub")" = 1 ] ||
    fail "the coordinator's connection was dropped and made again: $(cat "$work/victim.sub")"
# The client id is the user name: the victim's is "coordinator".
grep -q "Client coordinator already connected" "$work/broker/mosquitto.log" &&
    fail "the broker closed the coordinator's connection for agent-0's"
kill "$victim"
echo "agent-0's password with the coordinator's client id took nothing over"

# Leave the job's topics clean for the real run: the coordinator and agent-1
# remove what they retained.
expect_pub allowed coordinator "esgd/$job/config" "" -r
expect_pub allowed coordinator "esgd/$job/model" "" -r
expect_pub allowed agent-1 "esgd/$job/status/1" "" -r
for pid in "${started_pids[@]}"; do kill "$pid" 2>/dev/null || true; done

# ---- 3. a short job over TLS, each program with its own credentials ----
# secret USER: the program options giving USER's password, from its file
# when the programs have --password-file.
if "$agent_bin" --help | grep -q -- "--password-file"; then
    secret() { echo "--username $1 --password-file $creds/$1.password"; }
else
    secret() { echo "--username $1 --password $(password "$1")"; }
fi
url="ssl://127.0.0.1:$tls_port"
# shellcheck disable=SC2046 # secret's words are separate options (no spaces in them)
"$watch_bin" --broker "$url" --ca-file "$creds/ca.crt" $(secret monitor) --keys "$creds/keys" \
    --job "$job" --timeout 120 >"$work/watch.json" 2>"$work/watch.log" &
watch_pid=$!
started_pids+=("$watch_pid")
wait_for_line "u'monitor')" "$work/broker/mosquitto.log" 10
sleep 0.5
BROKER_URL=$url
export ESGD_KEYS=$creds/keys # the production keys, not the test's own
# shellcheck disable=SC2046
lease_user=()
"$coordinator_bin" --help | grep -q -- "--lease-username" &&
    lease_user=(--lease-username lease --lease-password-file "$creds/lease.password")
start_coordinator "$job" --ca-file "$creds/ca.crt" $(secret coordinator) "${lease_user[@]}" \
    --model mlp --agents "$agents" --quorum "$agents" --rounds 30 --method esgd --drop 0.9 --seed 5 --eval-every 1000
if [ "${#lease_user[@]}" -gt 0 ]; then
    # A second coordinator of the job (the broker makes the user name the
    # client id): it looks at the lease as "lease" and refuses to start,
    # without taking the first one's connection as "coordinator".
    wait_for_line "job $job run " "$work/coordinator.log" 60
    rc=0
    # shellcheck disable=SC2046
    timeout 60 "$coordinator_bin" --broker "$url" --job "$job" --data "$data" --ca-file "$creds/ca.crt" \
        $(secret coordinator) "${lease_user[@]}" --model mlp --agents "$agents" --state-dir "$work/second-state" \
        >/dev/null 2>"$work/second.log" || rc=$?
    [ "$rc" = 2 ] && grep -q "another coordinator is running job $job" "$work/second.log" ||
        fail "a second coordinator should refuse the job with exit status 2 (got $rc): $(tail -n 2 "$work/second.log")"
    echo "second coordinator: $(grep -o 'another coordinator.*' "$work/second.log" | head -n 1)"
    grep -q "u'lease')" "$work/broker/mosquitto.log" || fail "the lease check did not log in as lease"
fi
agent_pids=()
for ((id = 0; id < agents; id++)); do
    # shellcheck disable=SC2046
    start_agent "$job" "$id" --ca-file "$creds/ca.crt" $(secret "agent-$id")
    agent_pids+=("$last_pid")
done
finish_job
wait_pid "$watch_pid" 60 || fail "esgd-watch failed or found invalid messages: $(cat "$work/watch.json")"

json=$work/coordinator.json
echo "job over TLS: rounds $(json_get rounds "$json"), accepted $(json_get accepted "$json"), test accuracy $(json_get test_accuracy "$json")"
[ "$(json_get rounds "$json")" = 30 ] || fail "ran $(json_get rounds "$json") rounds, expected 30"
[ "$(json_get accepted "$json")" = $((30 * agents)) ] || fail "accepted $(json_get accepted "$json") updates, expected $((30 * agents))"
[ "$(json_get rejected "$json")" = 0 ] || fail "some updates were rejected"
[ "$(json_get invalid "$work/watch.json")" = 0 ] || fail "invalid messages on the broker"
[ "$(json_get signatures_checked "$work/watch.json")" = true ] || fail "esgd-watch did not check the signatures"
for ((id = 0; id < agents; id++)); do
    grep -q "u'agent-$id')" "$work/broker/mosquitto.log" || fail "agent $id did not log in as agent-$id"
done
grep -q "u'coordinator')" "$work/broker/mosquitto.log" || fail "the coordinator did not log in as coordinator"
! grep -q 'connection to .* lost' "$work/coordinator.log" ||
    fail "the coordinator lost its connection: $(grep -m1 'connection to .* lost' "$work/coordinator.log")"

# ---- 4. require_certificate true: only clients with a certificate from the CA ----
broker_stop
start_production_broker true
tls=(-h 127.0.0.1 -p "$tls_port" --cafile "$creds/ca.crt")
other=$work/other-ca
bash "$root/deploy/make-credentials.sh" "$other" --agents 1 --job "$job" 2>/dev/null || fail "make-credentials.sh failed"
cert_pub() { # cert_pub CERT_DIR: agent-0 publishes its status with that folder's certificate
    mosquitto_pub "${tls[@]}" --cert "$1/agent-0.crt" --key "$1/agent-0.key" -u agent-0 -P "$(password agent-0)" \
        -q 1 -t "esgd/$job/status/0" -m certified >"$work/cert-pub.out" 2>&1
}
! mosquitto_pub "${tls[@]}" -u agent-0 -P "$(password agent-0)" -t "esgd/$job/status/0" -m x >"$work/nocert.out" 2>&1 ||
    fail "a client without a certificate connected"
! cert_pub "$other" || fail "a certificate from another CA was accepted"
cert_pub "$creds" || fail "agent-0 with its certificate was refused: $(cat "$work/cert-pub.out")"
if "$watch_bin" --help | grep -q -- "--cert-file"; then
    # shellcheck disable=SC2046
    "$watch_bin" --broker "ssl://127.0.0.1:$tls_port" --ca-file "$creds/ca.crt" $(secret monitor) --job "$job" \
        --connect-timeout 5 --timeout 2 >"$work/nocert-watch.json" 2>"$work/nocert-watch.log" &&
        fail "esgd-watch connected without a certificate"
    # shellcheck disable=SC2046
    "$watch_bin" --broker "ssl://127.0.0.1:$tls_port" --ca-file "$creds/ca.crt" $(secret monitor) --job "$job" \
        --cert-file "$creds/monitor.crt" --key-file "$creds/monitor.key" --connect-timeout 5 --timeout 2 \
        >"$work/cert-watch.json" 2>"$work/cert-watch.log" || fail "esgd-watch with its certificate failed: $(cat "$work/cert-watch.log")"
    echo "require_certificate true: no certificate or another CA's is refused; mosquitto_pub and esgd-watch connect with theirs"
else
    echo "require_certificate true: no certificate or another CA's is refused; mosquitto_pub connects with its own"
fi
echo PASS
