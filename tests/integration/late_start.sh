#!/usr/bin/env bash
# An agent that is still starting up (here 6 s late) is waited for in the
# first round even under a majority quorum and a short --round-timeout:
# the start has its own timeout (--start-timeout), so the first round has
# every agent in it instead of closing without the late one.
source "$(dirname "$0")/common.sh" "$1"
job=it-late-start
start_broker
start_coordinator "$job" --agents 3 --rounds 20 --method esgd --drop 0.9 --seed 47 --model mlp --eval-every 1000 \
    --round-timeout 2 --start-timeout 60
start_agent "$job" 0
agent_pids=("$last_pid")
start_agent "$job" 1
agent_pids+=("$last_pid")
sleep 6
start_agent "$job" 2
agent_pids+=("$last_pid")
finish_job
first=$(grep -m 1 "^round 1/" "$work/coordinator.log")
echo "$first"
[[ "$first" == *"participants 3 "* ]] || fail "the first round should wait for the late agent: $first"
echo PASS
