#!/usr/bin/env bash
# LeNet training speed side by side with PyTorch 1.13 (Debian's
# python3-torch), one thread each, on MNIST: the same network, batch 32,
# plain SGD (lr 0.1, halved per epoch), a fresh permutation per epoch, 2
# epochs (60,000 x 2 samples). Ours is `esgd-bench --train` (core/tools/
# bench.c), PyTorch's bench/vs_pytorch.py. Both time only the training loop
# (per batch: gather and scale 32 images, forward, loss, backward, SGD step),
# not loading the data nor the final test evaluation, and report wall-clock
# and user-CPU samples/s. Runs alternate (ours, PyTorch, ours, ...) so both
# see the same machine load; the ratio is of the medians. User CPU time is
# the steadier figure on a busy machine.
#
# Both use the same libopenblas (PyTorch's dense layers call it through
# libblas.so.3; its convolutions run on oneDNN): OPENBLAS_CORETYPE, when set,
# applies to both.
#
# usage: bench/vs-pytorch.sh [--build DIR] [--repeats N] [--epochs E] [--data DIR]
# Prints one JSON object (medians, the ratio, every run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build repeats=3 epochs=2 data=$root/data/mnist
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --help | -h) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "vs-pytorch: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
# Debian's python3 (a pyenv or venv python would not see python3-torch).
python=/usr/bin/python3
if ! "$python" -c 'import torch' 2>/dev/null; then
    echo "vs-pytorch: PyTorch is not installed (apt-get install python3-torch)" >&2
    exit 77
fi
[ -x "$build/core/esgd-bench" ] || { echo "vs-pytorch: no $build/core/esgd-bench (build first)" >&2; exit 1; }
[ -f "$data/train-images-idx3-ubyte" ] || { echo "vs-pytorch: no MNIST in $data (scripts/fetch-mnist.sh)" >&2; exit 1; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
runs=$(mktemp)
trap 'rm -f "$runs"' EXIT
for ((i = 1; i <= repeats; i++)); do
    echo "vs-pytorch: run $i/$repeats: esgd" >&2
    "$build/core/esgd-bench" --train "$data" "$epochs" >>"$runs"
    echo "vs-pytorch: run $i/$repeats: pytorch" >&2
    "$python" "$root/bench/vs_pytorch.py" "$data" "$epochs" >>"$runs"
done
"$python" - "$runs" <<'PY'
import json, os, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(impl, key):
    return statistics.median(r[key] for r in runs if r["impl"] == impl)
out = {"cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
       "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE", ""),
       "load_average_1min": round(os.getloadavg()[0], 2)}
for impl in ("esgd", "pytorch"):
    out[impl] = {k: med(impl, k) for k in ("samples_per_second", "samples_per_user_second", "seconds",
                                             "user_seconds", "test_accuracy")}
out["esgd"]["blas_core"] = runs[0]["blas_core"]
out["ratio_wall"] = round(out["esgd"]["samples_per_second"] / out["pytorch"]["samples_per_second"], 2)
out["ratio_user_cpu"] = round(out["esgd"]["samples_per_user_second"] / out["pytorch"]["samples_per_user_second"], 2)
out["runs"] = runs
print(json.dumps(out, indent=1))
PY
