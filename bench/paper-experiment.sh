#!/usr/bin/env bash
# The paper's experiment (Tao and Li, HotEdge 2018, Table 1 and Figure 2),
# rerun with esgd-sim: std SGD (dense), threshold SGD, eSGD, top-k with error
# feedback and random-k at drop 0.5, 0.75, 0.875, 0.99, 0.999, over several
# seeds, plus the DGC recipe, the best eSGD variant (residual decay beta = 1)
# and eSGD with fp16 values. Writes into a results folder:
#   runs.jsonl        one esgd-sim JSON object per run
#   loss/*.csv        per-round training loss of every run (runs.jsonl keeps
#                     its test evaluations, once per epoch on all test images)
#   report.md         table: mean and spread over seeds of test accuracy,
#                     uplink bytes per agent per round, compression, downlink
#                     bytes, wall time
#   loss.png          training loss against round, eSGD at each drop ratio (Figure 2)
#   accuracy-bytes.png  test accuracy against uplink bytes, one line per method
#
# usage: bench/paper-experiment.sh [--out DIR] [--seeds "1 2 3"] [--epochs 2]
#          [--model lenet|mlp] [--partition iid|noniid] [--methods "..."] [--build DIR]
#          [--dataset mnist|fashion] [--drops "0.875 0.99"] [--report-epochs "2 5"] [--agents 4]
#          [--resume] [--report-only] [-- extra esgd-sim flags]
# --dataset picks data/mnist or data/fashion-mnist (scripts/setup.sh --dataset
# fashion fetches it); the default folder is then results/fashion/... .
# --report-epochs adds one accuracy table per listed epoch, from the runs'
# end-of-epoch evaluations: with the step schedule the first e epochs of
# a longer run are exactly an e-epoch run, so one 5-epoch run gives both.
# Extra flags after -- override the defaults (lr 0.1 halved per epoch), e.g.
# -- --lr-schedule cosine --lr 0.2 --warmup-rounds 100.
# --resume keeps runs.jsonl and skips the runs already in it (an interrupted
# experiment goes on where it stopped); --report-only redoes the report and the
# plots from runs.jsonl without running anything.
# methods: dense threshold esgd topk randk dgc, and the variants esgd-beta1
# (--beta 1) and esgd-f16 (--values f16); every one but dense and threshold
# runs at each drop ratio, threshold at each fixed threshold.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="" seeds="1 2 3" epochs=2 model=lenet partition=iid build="$root/build" resume=0 report_only=0
dataset=mnist drops="0.5 0.75 0.875 0.99 0.999" report_epochs="" agents=4
methods="dense threshold esgd topk randk dgc esgd-beta1 esgd-f16"
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --out) out=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --partition) partition=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    --drops) drops=$2; shift 2 ;;
    --report-epochs) report_epochs=$2; shift 2 ;;
    --agents) agents=$2; shift 2 ;;
    --resume) resume=1; shift ;;
    --report-only) report_only=1; shift ;;
    --help|-h) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "paper-experiment: unknown option $1" >&2; exit 2 ;;
    esac
done
case $dataset in
mnist) data="$root/data/mnist" results="$root/results/paper" ;;
fashion) data="$root/data/fashion-mnist" results="$root/results/fashion" ;;
*) echo "paper-experiment: unknown dataset $dataset (mnist or fashion)" >&2; exit 2 ;;
esac
[ -n "$out" ] || out="$results/$model-$partition-${epochs}ep"
mkdir -p "$out/loss"
export OPENBLAS_NUM_THREADS=1
sim="$build/core/esgd-sim"
read -r -a drops <<<"$drops"
thresholds=(0.003 0.01 0.03 0.1)
[ "$resume" = 1 ] || [ "$report_only" = 1 ] || : >"$out/runs.jsonl"

method_flags() { # method_flags METHOD: sets flags to the esgd-sim flags of a drop-ratio method
    case $1 in
    esgd-beta1) flags=(--method esgd --beta 1) ;;
    esgd-f16) flags=(--method esgd --values f16) ;;
    esgd | topk | randk | dgc) flags=(--method "$1") ;;
    *) echo "paper-experiment: unknown method $1" >&2; exit 2 ;;
    esac
}
for method in $methods; do
    case $method in dense | threshold) ;; *) method_flags "$method" ;; esac
done
[ "$report_only" = 1 ] || [ -x "$sim" ] || { echo "paper-experiment: $sim not found; build first (scripts/setup.sh)" >&2; exit 1; }

run() { # run NAME [flags]: one esgd-sim run, JSON line tagged with the run's name
    local name=$1
    shift
    local line
    [ "$report_only" = 0 ] || return 0
    if [ "$resume" = 1 ] && grep -q "\"name\": \"$name\"}" "$out/runs.jsonl" 2>/dev/null; then return 0; fi
    line=$("$sim" --data "$data" --model "$model" --agents "$agents" --partition "$partition" --batch 32 \
        --epochs "$epochs" --lr 0.1 --lr-decay 0.5 --json --loss-csv "$out/loss/$name.csv" "$@" "${extra[@]}" \
        2>>"$out/progress.log")
    # Every evaluation on the way ([round, accuracy] pairs, once per epoch by
    # default) goes into the run's line, so the report needs no loss CSV.
    local evaluations
    evaluations=$(awk -F, 'NR > 1 && $5 != "" { printf "%s[%s, %s]", n++ ? ", " : "", $1, $5 }' "$out/loss/$name.csv")
    echo "${line%\}}, \"evaluations\": [$evaluations], \"dataset\": \"$dataset\", \"name\": \"$name\"}" >>"$out/runs.jsonl"
    echo "$name: $(grep -o '"test_accuracy": [0-9.]*' <<<"$line")" >&2
}

for seed in $seeds; do
    for method in $methods; do
        case $method in
        dense) run "dense-s$seed" --method dense --seed "$seed" ;;
        threshold)
            for t in "${thresholds[@]}"; do run "threshold-$t-s$seed" --method threshold --threshold "$t" --seed "$seed"; done ;;
        *)
            method_flags "$method"
            for drop in "${drops[@]}"; do run "$method-$drop-s$seed" "${flags[@]}" --drop "$drop" --seed "$seed"; done ;;
        esac
    done
done

python3 - "$out" "$report_epochs" <<'PY'
import collections, json, math, os, sys
out, report_epochs = sys.argv[1], [int(e) for e in sys.argv[2].split()]
runs = [json.loads(l) for l in open(os.path.join(out, "runs.jsonl"))]
groups = collections.OrderedDict()
for r in runs:
    key = r["name"].rsplit("-s", 1)[0]
    groups.setdefault(key, []).append(r)
def stats(vals):
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd
def split_setting(key):
    """'esgd-beta1-0.99' -> ('esgd-beta1', 0.99), 'threshold-0.01' -> ('threshold', 0.01), 'dense' -> ('dense', None)"""
    head, _, tail = key.rpartition("-")
    return (head, float(tail)) if head and tail.replace(".", "").isdigit() else (key, None)
first = runs[0]
schedule = {"step": f"lr {first['lr']} halved per epoch", "constant": f"constant lr {first['lr']}",
            "cosine": f"lr {first['lr']} on a cosine to 0"}.get(first.get("lr_schedule", "step"))
if first.get("warmup_rounds"):
    schedule += f" after {first['warmup_rounds']} warm-up rounds"
dataset = first.get("dataset", "mnist")
lines = [f"# {first['model']} on {dataset}, {first['agents']} agents, {first['partition']}, batch {first['batch']}, "
         f"{first['epochs']} epochs, {schedule}; {len(groups)} settings x "
         f"{len(next(iter(groups.values())))} seeds", "",
         "| setting | test accuracy (mean ± sd) | uplink B per agent per round | compression vs dense fp32 | "
         "downlink MB | wall s |", "| --- | --- | --- | --- | --- | --- |"]
summary = collections.OrderedDict()  # setting -> (accuracy, uplink per agent per round, compression), each (mean, sd)
for key, rs in groups.items():
    acc = stats([r["test_accuracy"] for r in rs])
    per = stats([r["uplink_bytes"] / (r["rounds"] * r["agents"]) for r in rs])
    comp = stats([r["compression"] for r in rs])
    down = stats([r["downlink_bytes"] / 1e6 for r in rs])
    wall = stats([r["seconds"] for r in rs])
    lines.append(f"| {key} | {100*acc[0]:.2f} % ± {100*acc[1]:.2f} | {per[0]:,.0f} | {comp[0]:.1f}x | "
                 f"{down[0]:.1f} | {wall[0]:.1f} |")
    summary[key] = (acc, per, comp)
def epoch_accuracy(run, epoch):
    """Test accuracy on all test images at the end of epoch (1-based), from the run's evaluations."""
    if epoch == run["epochs"]:
        return run["test_accuracy"]
    at = epoch * run["rounds"] // run["epochs"]
    for rnd, accuracy in run.get("evaluations", []):
        if rnd == at:
            return accuracy
    sys.exit(f"paper-experiment: {run['name']} has no evaluation at the end of epoch {epoch}")
def drop_table(title, accuracy_of):
    """The paper's layout: one row per method, one column per drop ratio; test
    accuracy in percent, mean ± sd over seeds, and the compression; dense above."""
    rows, dense = collections.OrderedDict(), None
    for key, rs in groups.items():
        method, drop = split_setting(key)
        acc = stats([accuracy_of(r) for r in rs])
        cell = f"{100*acc[0]:.2f} ± {100*acc[1]:.2f}"
        if key == "dense":
            dense = cell
        elif drop is not None and method != "threshold":
            rows.setdefault(method, {})[drop] = f"{cell} (x{summary[key][2][0]:.1f})"
    if not rows:
        return []
    drops = sorted({drop for by_drop in rows.values() for drop in by_drop})
    out_lines = ["", title, ""]
    if dense:
        out_lines += [f"dense (std SGD): **{dense}**", ""]
    out_lines += ["| method | " + " | ".join(f"{d:g}" for d in drops) + " |", "| --- |" + " --- |" * len(drops)]
    for method, by_drop in rows.items():
        out_lines.append(f"| {method} | " + " | ".join(by_drop.get(d, "") for d in drops) + " |")
    return out_lines
lines += drop_table("Test accuracy (%, mean ± sd over seeds) and compression vs dense fp32, by drop ratio:",
                    lambda r: r["test_accuracy"])
for epoch in report_epochs:
    lines += drop_table(f"After epoch {epoch} of {first['epochs']}: test accuracy (%, mean ± sd over seeds), by drop ratio:",
                        lambda r, e=epoch: epoch_accuracy(r, e))
open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

# accuracy-bytes: one gnuplot data block per method (the setting's name without
# its drop ratio or threshold), so that each method is one line with a legend.
# The y range starts 6 points below dense; settings below it (random-k at high
# drop, say) would squash every other line flat, so they are listed instead.
points = [(key, per[0], acc[0]) for key, (acc, per, comp) in summary.items()]
families = collections.OrderedDict()
for key, per, acc in points:
    families.setdefault(split_setting(key)[0], []).append((per, acc, key))
dense = [acc for key, per, acc in points if key == "dense"]
floor = (dense[0] if dense else max(acc for _, _, acc in points)) - 0.06
hidden = [f"{key} {100*acc:.1f}%" for key, per, acc in points if acc < floor]
with open(os.path.join(out, "accuracy-bytes.dat"), "w") as f:
    for family, pts in families.items():
        f.write(f"# {family}\n")
        for per, acc, key in sorted(pts):
            f.write(f"{per} {acc} {key}\n")
        f.write("\n\n")
title = "Test accuracy against uplink bytes per agent per round"
if hidden:
    title += "\\nbelow the range, not shown: " + ", ".join(hidden)
plot = ", ".join(f'"accuracy-bytes.dat" index {i} using 1:2 with linespoints pointtype {4 + i % 10} pointsize 1.3 title "{name}"'
                 for i, name in enumerate(families))
with open(os.path.join(out, "accuracy-bytes.gp"), "w") as f:
    f.write(f"""set terminal pngcairo size 1000,650 noenhanced
set output "accuracy-bytes.png"
set title "{title}"
set xlabel "uplink bytes per agent per round (log)"; set ylabel "test accuracy"
set logscale x
set yrange [{floor:.4f}:*]
set key outside right
set grid
plot {plot}
""")
PY

if command -v gnuplot >/dev/null; then
    seed1=$(echo "$seeds" | awk '{print $1}')
    plots=""
    for drop in "${drops[@]}"; do
        f="$out/loss/esgd-$drop-s$seed1.csv"
        [ -f "$f" ] && plots+="\"$f\" using 1:2 smooth bezier with lines title \"eSGD drop $drop\", "
    done
    [ -f "$out/loss/dense-s$seed1.csv" ] && plots+="\"$out/loss/dense-s$seed1.csv\" using 1:2 smooth bezier with lines title \"std SGD\", "
    gnuplot <<PLOT
set terminal pngcairo size 1000,600 noenhanced
set datafile separator ","
set output "$out/loss.png"
set title "Training loss against round (seed $seed1)"
set xlabel "round"; set ylabel "global training loss (Bezier-smoothed)"
set yrange [0:*]
plot ${plots%, }
PLOT
    (cd "$out" && gnuplot accuracy-bytes.gp)
fi
echo "paper-experiment: report in $out/report.md" >&2
