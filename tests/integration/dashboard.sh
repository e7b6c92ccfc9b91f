#!/usr/bin/env bash
# The Grafana dashboard against real metrics: a real Prometheus (Debian's
# package, on a free loopback port, with a generated config) scrapes a
# running coordinator; every PromQL expression in the dashboard JSON must
# return data through Prometheus's HTTP API. Also checks the dashboard JSON
# itself: valid, unique panel ids, every data source reference resolving to
# the provisioned one.
source "$(dirname "$0")/common.sh" "$1"
command -v prometheus >/dev/null || { echo "SKIP: prometheus not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
dashboard=$root/deploy/grafana/dashboards/esgd-training.json
datasource=$root/deploy/grafana/provisioning/datasources/prometheus.yml

# 1. The dashboard file: structure and references; its expressions to a file.
python3 - "$dashboard" "$datasource" "$work/exprs.txt" <<'PY' || fail "dashboard JSON is not valid"
import json, re, sys
dash = json.load(open(sys.argv[1]))
uid = re.search(r"uid:\s*(\S+)", open(sys.argv[2]).read()).group(1)
ids = [p["id"] for p in dash["panels"]]
assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
exprs = []
for p in dash["panels"]:
    refs = [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]
    for r in refs:
        assert r and r.get("uid") == uid and r.get("type") == "prometheus", f"panel {p['id']}: data source {r}"
    assert p.get("targets"), f"panel {p['id']} has no query"
    exprs += [t["expr"] for t in p["targets"]]
# Grafana's interval variable is not PromQL; Prometheus gets a fixed window.
open(sys.argv[3], "w").write("\n".join(e.replace("$__rate_interval", "30s") for e in exprs) + "\n")
print(f"dashboard: {len(ids)} panels, {len(exprs)} queries, data source {uid}")
PY

# 2. A job long enough to be scraped, with its metrics on a free port.
start_broker
job=it-dashboard
metrics_port=$(free_port)
start_coordinator "$job" --agents 2 --quorum 2 --model mlp --rounds 1000000 --method esgd --drop 0.99 \
    --eval-every 100 --eval-limit 500 --metrics-port "$metrics_port"
start_agents "$job" 2
wait_for_line "^round 100/" "$work/coordinator.log" 60

# 3. Prometheus scraping it every second.
prom_port=$(free_port)
cat >"$work/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: esgd-coordinator
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
CONF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
started_pids+=("$!")
api="http://127.0.0.1:$prom_port"
for _ in $(seq 1 100); do curl -sf "$api/-/ready" >/dev/null && break; sleep 0.2; done
curl -sf "$api/-/ready" >/dev/null || fail "prometheus did not become ready"
sleep 8 # several scrapes, so that rate() and increase() have two samples

# 4. Every dashboard query returns data.
checked=0
while IFS= read -r expr; do
    [ -n "$expr" ] || continue
    curl -sf --data-urlencode "query=$expr" "$api/api/v1/query" >"$work/answer.json" ||
        fail "query failed: $expr"
    python3 - "$work/answer.json" "$expr" <<'PY' || fail "no data for: $expr"
import json, sys
a = json.load(open(sys.argv[1]))
assert a["status"] == "success", a
result = a["data"]["result"]
values = [result[1]] if a["data"]["resultType"] == "scalar" else [r["value"][1] for r in result]
assert values, "empty result"
print(f"  {sys.argv[2]} -> {values[:3]}")
PY
    checked=$((checked + 1))
done <"$work/exprs.txt"
echo "all $checked dashboard queries returned data"
[ "$checked" -ge 10 ] || fail "expected at least 10 queries, checked $checked"
echo PASS
