#!/usr/bin/env bash
# The Helm charts as CI checks them (scripts/test.sh runs this; needs install_k8s_tools):
#   - helm lint --strict and helm template of charts/traceflow-manager and
#     charts/traceflow-cluster, with their defaults and with every ci/*.yaml;
#   - kubernetes-validate --strict for Kubernetes 1.33 on every rendered object (CRD included);
#   - the Traceflow CRD's schema accepts Antrea's guide examples (apiVersion changed only,
#     tests/fixtures/traceflows) and refuses a wrong type, naming the field.
# The chart's CRD equals the generated one: adapter-k8s crd::resource tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export PATH="$K8S_TOOLS_DIR:$PATH"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

render() { # CHART NAME [helm args...]
  local chart="$1" name="$2"
  shift 2
  echo "==> helm lint --strict / template charts/$chart ($name)"
  helm lint --strict --quiet "charts/$chart" "$@" >"$out/lint.log" 2>&1 \
    || { cat "$out/lint.log"; echo "error: helm lint failed for charts/$chart ($name)" >&2; exit 1; }
  helm template "tf-$name" "charts/$chart" --namespace traceflow --include-crds "$@" \
    >"$out/$chart-$name.yaml"
}

render traceflow-manager defaults
# The cluster chart has required values: with its defaults it must refuse, saying which.
if helm template tf "charts/traceflow-cluster" >"$out/refused.yaml" 2>"$out/refused.log"; then
  echo "error: charts/traceflow-cluster rendered without cluster.name; it must refuse" >&2
  exit 1
fi
grep -q "cluster.name is required" "$out/refused.log" \
  || { cat "$out/refused.log"; echo "error: the refusal does not name cluster.name" >&2; exit 1; }
for chart in traceflow-manager traceflow-cluster; do
  for values in charts/$chart/ci/*.yaml; do
    render "$chart" "$(basename "$values" .yaml)" -f "$values"
  done
done

echo "==> kubernetes-validate --strict (Kubernetes 1.33) on every rendered object"
kubernetes-validate --strict --kubernetes-version 1.33.0 --quiet "$out"/*.yaml 2>&1 | tee "$out/validate.log"
# Kinds without an upstream schema are only warned about; the one expected is ServiceMonitor.
if grep "Couldn't find schema" "$out/validate.log" | grep -v "kind ServiceMonitor with api version monitoring.coreos.com/v1"; then
  echo "error: rendered objects of a kind kubernetes-validate cannot check (above)" >&2
  exit 1
fi
objects="$(cat "$out"/*.yaml | grep -c '^kind: ')"
monitors="$(cat "$out"/*.yaml | grep -c '^kind: ServiceMonitor')"
echo "    $objects objects rendered; all but $monitors ServiceMonitors validated against Kubernetes 1.33"

echo "==> the Traceflow CRD schema against Antrea's guide examples"
python3 - charts/traceflow-cluster/crds/traceflows.yaml tests/fixtures/traceflows <<'PY'
import sys, pathlib, yaml, jsonschema
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
validator = jsonschema.Draft4Validator(schema)
fixtures = pathlib.Path(sys.argv[2])
def errors(name):
    obj = yaml.safe_load((fixtures / name).read_text())
    return [".".join(str(p) for p in e.absolute_path) + ": " + e.message
            for e in validator.iter_errors(obj)]
for ok in ("tf-test.yaml", "tf-test-ipv6.yaml"):
    errs = errors(ok)
    assert not errs, f"{ok} refused by the CRD schema: {errs}"
    print(f"    {ok}: accepted")
errs = errors("tf-wrong-type.yaml")
assert any(e.startswith("spec.packet.ipHeader.protocol:") and "integer" in e for e in errs), \
    f"tf-wrong-type.yaml not refused on spec.packet.ipHeader.protocol: {errs}"
print(f"    tf-wrong-type.yaml: refused ({errs[0]})")
PY
echo "==> charts OK"
