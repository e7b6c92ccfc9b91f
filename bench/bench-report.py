#!/usr/bin/env python3
"""Renders results/bench.json (written by scripts/bench.sh) as markdown tables.

usage: bench/bench-report.py results/bench.json > results/bench.md
"""
import json
import sys


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip())
    with open(sys.argv[1]) as f:
        bench = json.load(f)
    m, core, broker, memory = bench["machine"], bench["core"], bench["broker"], bench.get("memory")
    print("# Benchmarks\n")
    print(f"Generated from `{sys.argv[1]}` by `bench/bench-report.py`; command: `scripts/bench.sh` "
          f"(as root on a fresh machine it installs and builds first). Single thread "
          f"(`OPENBLAS_NUM_THREADS=1`), Release build.\n")
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_MiB']} MiB, kernel {m['kernel']}, "
          f"{m['compiler']}; {m['date']}; 1-minute load average at the end {m['load_average_1min_at_end']} "
          f"(the broker runs start hundreds of processes, so it is high by then).\n")

    t = core["training_samples_per_second"]
    print("## Training throughput (forward + backward + SGD step)\n")
    print(table(["model", "batch", "samples/s"],
                [["LeNet-5 (61,706 parameters)", t["batch"], f"{t['lenet']:,}"],
                 ["MLP 784-128-10 (101,770)", t["batch"], f"{t['mlp']:,}"]]))

    vs = bench.get("vs_pytorch")
    if vs:
        print("## LeNet training beside PyTorch 1.13 (bench/vs-pytorch.sh)\n")
        print("The same LeNet, batch 32, plain SGD, MNIST, one thread each, runs alternated; only the training "
              f"loop is timed. 1-minute load average {vs.get('load_average_1min')}.\n")
        rows = [[name, f"{vs[key]['samples_per_second']:,}", f"{vs[key]['samples_per_user_second']:,}",
                 vs[key].get("test_accuracy")] for name, key in (("eSGD's LeNet", "esgd"), ("PyTorch 1.13", "pytorch"))]
        print(table(["", "samples/s (wall)", "samples per user-CPU second", "test accuracy"], rows))
        print(f"Ratio: {vs['ratio_wall']}x by wall clock, {vs['ratio_user_cpu']}x by user CPU.\n")

    print("## Sparsifier cost per round (ms; eSGD differs when the loss rose)\n")
    rows = []
    for s in core["select_ms_per_round"]:
        rows.append([s["method"], f"{s['dim']:,}", s["drop"], f"{s['loss_fell']:.4f}", f"{s['loss_rose']:.4f}",
                     f"{s['ns_per_coord']:.2f}"])
    print(table(["method", "d", "drop", "loss fell", "loss rose", "ns per coordinate"], rows))

    print("## Wire size per sent coordinate (d = 61,706)\n")
    rows = [[w["drop"], f"{w['k']:,}", w["idx_enc"], f"{w['index_bytes']:,}", f"{w['bound_bytes']:,}",
             f"{w['index_over_bound']:.3f}", f"{w['index_bits_per_coord']:.2f}", f"{w['bytes_per_coord_f32']:.2f}",
             f"{w['bytes_per_coord_f16']:.2f}", f"{w['message_bytes_f32']:,}", f"{w['message_bytes_f16']:,}"]
            for w in core["wire"]]
    print(table(["drop", "k", "index coding", "index B", "log2 C(d,k) / 8", "index / bound", "index bits per coord",
                 "B per coord f32", "B per coord f16", "message B f32", "message B f16"], rows))

    print("## Codec throughput (update messages, d = 61,706)\n")
    rows = [[c["drop"], c["values"], f"{c['bytes']:,}", f"{c['encode_MBps']:,}", f"{c['decode_MBps']:,}"]
            for c in core["codec"]]
    print(table(["drop", "values", "message B", "encode MB/s", "decode MB/s"], rows))

    print(f"## Coordinator aggregation (memory triad: {core['memory_triad_GBps']} GB/s)\n")
    print("MB/s counts 8 B (index + value) per received entry.\n")
    rows = [[f"{a['dim']:,}", a["drop"], a["agents"], f"{a['round_ms']:.3f}", f"{a['updates_per_second']:,}",
             f"{a['update_MBps']:,}"] for a in core["aggregation"]]
    print(table(["d", "drop", "agents", "ms per round", "updates/s", "MB/s"], rows))

    print("## Through mosquitto on loopback (MLP, batch 8, eSGD drop 0.99, QoS 1)\n")
    print("Overhead: per round, the least time an agent waited from sending its update to receiving the next "
          "model (the last agent to report: broker, coordinator, broker; no compute), median / p90 over rounds. "
          "Round: the coordinator's round time, open to close; esgd-sim: the same job in one process.\n")
    rows = [[b["agents"], b["rounds"], f"{b['round_overhead_ms_median']} / {b['round_overhead_ms_p90']}",
             f"{b['round_ms_median']} / {b['round_ms_p90']}", b["sim_round_ms_median"],
             f"{b['broker_publish_in']:,}", f"{b['broker_publish_out']:,}",
             f"{b['broker_messages_per_second']:,}", b["broker_MB_in"], b["broker_MB_out"], b["broker_MBps"]]
            for b in broker]
    print(table(["agents", "rounds", "overhead ms (median / p90)", "round ms (median / p90)", "esgd-sim round ms",
                 "PUBLISH in", "PUBLISH out", "msgs/s", "MB in", "MB out", "MB/s"], rows))

    load = bench.get("load")
    if load:
        print("## Many agents in one process (esgd-load: MLP, batch 8, eSGD drop 0.99, QoS 1)\n")
        print("`bench/load-scale.sh`: every agent its own MQTT client in esgd-load, a real mosquitto and "
              "esgd-coordinator on this machine. Overhead: from the broker's acknowledgement of a round's last "
              "update to the next model at every agent (the coordinator's close plus the fan-out; no agent "
              "compute), median / p90 over rounds. Close: the same to the first agent. Bytes per agent per "
              "round as the coordinator counts them: the model delta is what each agent receives in a "
              "round after the first (the coordinator's per-round CSV); the downlink with full models adds the first full model (and any sent again), which a "
              "short run like this one does not amortise; retained: the full models kept on the broker, as a share "
              "of all broker traffic (agents' uplink in and out, the coordinator's publications, the "
              "deliveries to agents).\n")
        if bench.get("load_note"):
            print(f"These rows were {bench['load_note']}.\n")
        rows = []
        for r in load:
            per = r["agents"] * r["rounds"]
            up = r.get("steady_uplink_B_per_agent_round")
            down = r["downlink_MB"] * 1e6 / per if r.get("downlink_MB") else None
            traffic = 2 * (r.get("uplink_MB") or 0) + (r.get("published_MB") or 0) + (r.get("downlink_MB") or 0)
            retained = r.get("retained_model_MB")
            dd = (r.get("coordinator_options") or "").replace("--down-drop", "").strip() or "0"
            delta = r.get("steady_downlink_B_per_agent_round")
            rows.append([r["agents"], dd, r["status"], f"{r['overhead_ms_median']} / {r['overhead_ms_p90']}",
                         r["turnaround_ms_median"], f"{r['round_ms_median']} / {r['round_ms_p90']}",
                         f"{up:,.0f}" if up else "?", f"{delta:,}" if delta else "?",
                         f"{delta / up:.2f}" if up and delta else "?", f"{down:,.0f}" if down else "?",
                         f"{100 * retained / traffic:.1f}%" if retained is not None and traffic else "?",
                         r["broker_MB_out"], f"{r['cpu_load_seconds']} / {r['cpu_broker_seconds']} / "
                         f"{r['cpu_coordinator_seconds']}"])
        print(table(["agents", "down-drop", "status", "overhead ms (median / p90)", "close ms",
                     "round ms (median / p90)", "uplink B/agent/round", "model delta B/agent/round", "delta / up",
                     "downlink with full models B/agent/round",
                     "retained share", "broker MB out", "CPU s load / broker / coordinator"], rows))

    if memory:
        print("## Peak resident set\n")
        print(table(["model", "method", "drop", "agents", "rounds", "each agent (MiB)", "coordinator (MiB)"],
                    [[memory["model"], memory["method"], memory["drop"], memory["agents"], memory["rounds"],
                      ", ".join(str(x) for x in memory["agent_peak_rss_MiB"]),
                      memory["coordinator_peak_rss_MiB"]]]))


if __name__ == "__main__":
    main()
