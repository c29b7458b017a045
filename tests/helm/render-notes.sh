#!/usr/bin/env bash
# render-notes.sh HELM CHART [helm args...] — prints NOTES.txt as `helm install` would, offline:
# helm template does not render NOTES.txt, so a scratch copy of the chart moves it to files/
# and renders it with tpl inside a ConfigMap. Fails if NOTES.txt does not render.
set -euo pipefail
HELM=$1 CHART=$2
shift 2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cp -r "$CHART" "$T/chart"
mkdir -p "$T/chart/files"
mv "$T/chart/templates/NOTES.txt" "$T/chart/files/NOTES.render.txt"
cat >"$T/chart/templates/zz-notes.yaml" <<'TPL'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes
data:
  notes: {{ tpl (.Files.Get "files/NOTES.render.txt") . | toJson }}
TPL
"$HELM" template prewarm "$T/chart" --show-only templates/zz-notes.yaml "$@" >"$T/out.yaml"
sed -n 's/^  notes: //p' "$T/out.yaml" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()))'
