#!/usr/bin/env bash
# The main job: set everything up (packages, MNIST, build), then run the
# local broker-based testbed with its defaults: a private mosquitto, the
# coordinator and 4 agents training LeNet with eSGD at drop 0.875 for 2
# epochs. Extra arguments go to deploy/testbed.sh (see its --help).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" "$root/build"
exec "$root/deploy/testbed.sh" --build "$root/build" --data "$root/data/mnist" "$@"
