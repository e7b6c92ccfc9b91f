#!/usr/bin/env bash
# The main job: set everything up, then train LeNet on MNIST with 4 agents
# and eSGD at drop 0.875. Extra arguments go to esgd-sim (see --help).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" "$root/build"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
exec "$root/build/core/esgd-sim" --data "$root/data/mnist" --model lenet --agents 4 --method esgd \
    --drop 0.875 --epochs 2 --json "$@"
