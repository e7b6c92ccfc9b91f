#!/usr/bin/env bash
# Agents announce their shard and a fingerprint of their data in their
# status: an agent started on another agent's shard (--shard 1/3 for agent
# 2) is reported with a warning and counted in data_conflicts, not left to
# skew the model silently. The job itself still runs to its end.
source "$(dirname "$0")/common.sh" "$1"
job=it-overlap
start_broker
start_coordinator "$job" --agents 3 --rounds 40 --method esgd --drop 0.9 --seed 41 --model mlp --eval-every 1000 \
    --quorum 3
start_agent "$job" 0
agent_pids=("$last_pid")
start_agent "$job" 1
agent_pids+=("$last_pid")
start_agent "$job" 2 --shard 1/3
agent_pids+=("$last_pid")
finish_job
grep "trains on the same shard as agent" "$work/coordinator.log" ||
    fail "the coordinator did not report agents 1 and 2 on one shard"
conflicts=$(json_get data_conflicts "$work/coordinator.json")
[ -n "$conflicts" ] && [ "$conflicts" -ge 1 ] || fail "data_conflicts should count the overlap (got '$conflicts')"
echo "data_conflicts $conflicts"
echo PASS
