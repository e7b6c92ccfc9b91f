#!/usr/bin/env bash
# The main job: set everything up (packages, data, build), then run the
# local broker-based testbed with its defaults: a private mosquitto, the
# coordinator and 4 agents training LeNet with eSGD at drop 0.875 for 2
# epochs. --dataset mnist|fashion (default mnist, or ESGD_DATASET) picks
# MNIST (data/mnist) or Fashion-MNIST (data/fashion-mnist, from the Debian
# package dataset-fashion-mnist). Other arguments go to deploy/testbed.sh
# (see its --help).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dataset=${ESGD_DATASET:-mnist}
args=()
while [ $# -gt 0 ]; do
    case $1 in
    --dataset) [ $# -ge 2 ] || { echo "run: --dataset needs a value (mnist or fashion)" >&2; exit 2; }
        dataset=$2; shift 2 ;;
    --dataset=*) dataset=${1#--dataset=}; shift ;;
    --) args+=("$@"); break ;; # the rest is the coordinator's
    *) args+=("$1"); shift ;;
    esac
done
case $dataset in
mnist) data=$root/data/mnist ;;
fashion) data=$root/data/fashion-mnist ;;
*) echo "run: unknown data set '$dataset' (mnist or fashion)" >&2; exit 2 ;;
esac
"$root/scripts/setup.sh" --dataset "$dataset" "$root/build"
exec "$root/deploy/testbed.sh" --build "$root/build" --dataset "$dataset" --data "$data" ${args[@]+"${args[@]}"}
