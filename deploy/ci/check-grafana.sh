#!/usr/bin/env bash
# Checks deploy/grafana/: the dashboard is valid JSON, every panel query is
# valid PromQL (promtool parses them as recording rules, $node -> .*), every
# panel uses the ${DS_PROMETHEUS} datasource, and the provisioning files are
# valid YAML. Needs python3 (+ PyYAML) and promtool (see check-prometheus.sh).
set -euo pipefail
cd "$(dirname "$0")/../grafana"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

python3 -m json.tool dashboards/hydra.json >/dev/null
echo "ok   dashboards/hydra.json is valid JSON"
python3 - "$TMP/rules.yml" <<'PY'
import json, sys
d = json.load(open("dashboards/hydra.json"))
out, n, bad = ["groups:", "- name: dashboard", "  rules:"], 0, []
for p in d["panels"]:
    if p["type"] == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        bad.append(p["title"])
    for t in p.get("targets", []):
        n += 1
        out.append(f"  - record: dashboard:expr{n}")
        out.append(f"    expr: {json.dumps(t['expr'].replace('$node', '.*'))}")
if bad:
    sys.exit(f"panels without the ${{DS_PROMETHEUS}} datasource: {bad}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
print(f"ok   {n} panel queries extracted, all panels on ${{DS_PROMETHEUS}}")
PY
promtool check rules "$TMP/rules.yml" >/dev/null
echo "ok   panel queries are valid PromQL"
python3 -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' provisioning/*/hydra.yml
echo "ok   provisioning YAML"
