#!/usr/bin/env bash
# Load: 64 agents, each its own esgd-agent process, through one mosquitto for
# 120 rounds at QoS 1 (every topic of the job is QoS 1). Checks that every
# update is accepted exactly once (accepted = agents x rounds, nothing early
# or rejected), that every round closes with all agents and none waits, and
# that every agent exits 0. Repeats are counted but allowed: an agent re-sends
# the same bytes when it sees the model of a round it has answered again (its
# retained first model and the round's own copy, or the model published again
# after 5 s without a new update while slow agents start), and the
# coordinator counts each once, as a duplicate, or as late when the round
# closed meanwhile; their number is printed and bounded.
#
# The model is the small MLP with batch 8 and eSGD drop 0.99, so the run is
# about the messages, not the arithmetic. ESGD_LOAD_AGENTS and
# ESGD_LOAD_ROUNDS change the size for manual measurements (results/load.md).
source "$(dirname "$0")/common.sh" "$1"
agents=${ESGD_LOAD_AGENTS:-64}
rounds=${ESGD_LOAD_ROUNDS:-120}
job=it-load

export BROKER_SYS_INTERVAL=1 # fresh $SYS counters for the figures at the end
start_broker
started=$(date +%s.%N)
# The quorum is every agent and the timeout generous, so a round that closes
# without someone is a stall, not a straggler the deadline forgave.
start_coordinator "$job" --agents "$agents" --quorum "$agents" --round-timeout 120 --rounds "$rounds" \
    --model mlp --batch 8 --method esgd --drop 0.99 --seed 5 --eval-every 100000
start_agents "$job" "$agents"
# A stalled round never closes (the quorum is everyone), and the coordinator
# says so after 30 s: fail then rather than at finish_job's long timeout.
for ((i = 0; i < 6000; i++)); do
    kill -0 "$coordinator_pid" 2>/dev/null || break
    ! grep -q "waiting" "$work/coordinator.log" || fail "a round stalled: $(grep -m 1 waiting "$work/coordinator.log")"
    sleep 0.1
done
finish_job
finished=$(date +%s.%N)

json=$work/coordinator.json
log=$work/coordinator.log
expected=$((agents * rounds))
for key in rounds accepted duplicate late early rejected; do
    echo "$key: $(json_get "$key" "$json")"
done
[ "$(json_get rounds "$json")" = "$rounds" ] || fail "ran $(json_get rounds "$json") rounds, expected $rounds"
[ "$(json_get accepted "$json")" = "$expected" ] || fail "accepted $(json_get accepted "$json"), expected $expected"
for key in early rejected; do
    [ "$(json_get "$key" "$json")" = 0 ] || fail "$key updates: $(json_get "$key" "$json")"
done

# Every round has a progress line, and it closed with every agent.
closed=$(grep -c "^round [0-9]*/$rounds .* participants $agents " "$log" || true)
[ "$closed" = "$rounds" ] || fail "$closed of $rounds rounds closed with all $agents agents"
! grep -q "waiting" "$log" || fail "a round waited: $(grep -m 1 waiting "$log")"

# No agent missed a model (a lost delta makes it fetch the retained one) or
# saw one it could not use.
! grep -l "warning:\|error:" "$work"/agent-*.log >/dev/null ||
    fail "agent warnings: $(grep -h -m 1 "warning:\|error:" "$work"/agent-*.log | head -n 3)"

# Repeats: an agent re-sends its update when the model of a round it has
# answered reaches it again, which happens around its first round (the
# retained model and the round's own copy can both arrive while it fetches
# the retained one), or when the coordinator publishes the model again after
# a round made no progress for 5 s (slow starts on a loaded machine). Every
# re-send the agents logged must be one repeat the coordinator counted and
# ignored (duplicate, or late if the round had closed), and the broker added
# none of its own (QoS 1 redelivery would show as more repeats than re-sends).
duplicates=$(json_get duplicate "$json")
late=$(json_get late "$json")
repeats=$((duplicates + late))
resent=$(cat "$work"/agent-*.log | grep -c "re-sent the update" || true)
echo "agents re-sent $resent updates, the coordinator counted $duplicates duplicate and $late late"
[ "$resent" = "$repeats" ] || fail "$resent re-sent updates but $duplicates duplicate + $late late"
# Repeats are logged once per 10 s each, with a count of the ones left out
# ("and N more like it", and a last "N more duplicate, late or early
# updates"): lines plus counts must add up to the repeats.
logged=$(awk '/(duplicate|late) update on/ { n++ } match($0, /and [0-9]+ more like it/) { split(substr($0, RSTART, RLENGTH), w, " "); n += w[2] }
    match($0, /[0-9]+ more duplicate, late or early updates/) { split(substr($0, RSTART, RLENGTH), w, " "); n += w[1] }
    END { print n + 0 }' "$log")
[ "$logged" = "$repeats" ] || fail "$logged repeats logged (lines and counts), $repeats counted"
republished=$(grep -c "publishing the model again" "$log" || true)
[ "$repeats" -le $((agents * (1 + republished))) ] ||
    fail "$repeats repeats, more than one per agent and model published again ($republished)"
if [ "$duplicates" -gt 0 ]; then
    echo "duplicates by round: $(grep -o "duplicate update on esgd/$job/round/[0-9]*" "$log" |
        sed 's|.*/round/||' | sort -n | uniq -c | awk '{printf "round %s: %s; ", $2, $1}')"
fi

# Throughput, for results/load.md (whole run, including start-up).
uplink=$(json_get uplink_bytes "$json")
broadcast=$(json_get broadcast_bytes "$json")
downlink=$(json_get downlink_bytes "$json")
awk -v s="$started" -v e="$finished" -v r="$rounds" -v a="$agents" -v d="$duplicates" \
    -v up="$uplink" -v bc="$broadcast" -v down="$downlink" 'BEGIN {
    w = e - s
    printf "agents %d rounds %d wall %.1f s: %.2f rounds/s, %.0f update messages/s, ", a, r, w, r / w, (a * r + d) / w
    printf "uplink %.3f MB/s, broadcast %.3f MB/s in, downlink %.3f MB/s out\n", up / w / 1e6, bc / w / 1e6, down / w / 1e6
}'
grep "broker link" "$log" | sed 's/^.*: job/coordinator: job/' || true
echo "round seconds (open to close): median $(json_get round_seconds_median "$json"), p90 $(json_get round_seconds_p90 "$json")"
# Round overhead as the agents saw it: per round, the least time any agent
# waited from sending its update to receiving the next model. That agent was
# the last to report, so the wait is broker + coordinator + broker, no compute.
cat "$work"/agent-*.log | sed -n 's/.*round \([0-9]*\): loss.*model \([0-9.]*\) ms after our last update.*/\1 \2/p' |
    sort -k1,1n -k2,2g | awk '$1 != last { print $2; last = $1 }' | sort -g |
    awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "round overhead: no agent logged a wait"; exit }
        p90 = int(0.9 * NR + 0.5); if (p90 < 1) p90 = 1
        printf "round overhead (last update sent to next model received): median %.3f ms, p90 %.3f ms over %d rounds\n",
            v[int((NR + 1) / 2)], v[p90], NR }'
# What the broker itself counted since it started (PUBLISH packets, and all
# bytes), refreshed every second.
sleep 1.5
mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -W 5 -C 4 -v -t '$SYS/broker/publish/messages/received' \
    -t '$SYS/broker/publish/messages/sent' -t '$SYS/broker/bytes/received' -t '$SYS/broker/bytes/sent' |
    sed 's|^\$SYS/broker/|broker |' || echo "broker \$SYS counters not read"
echo PASS
