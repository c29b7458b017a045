#!/usr/bin/env bash
# run-rendered.sh EXTRACT_DIR — runs the real binaries with what the chart rendered
# (validate.mjs --extract): prewarmd with the Deployment's env and the ConfigMap's config file
# against a throwaway PostgreSQL, and prewarm-agent (driver sim instead of qemu, the fixture
# topology instead of /host, scratch dirs instead of host paths) with the DaemonSet's args and
# the config file that the node-labels go-template (run by the pinned kubectl on
# tests/helm/node.json) produces. Passes when /livez and /readyz answer 200 and the agent shows
# up in /v1/hosts with the labels taken from the node and from the values.
# Needs: $BUILD/scheduler/prewarmd, $BUILD/agents/prewarm-agent, PostgreSQL 15, root (initdb is
# run as a throwaway user), .tools/kubectl/kubectl. Prints "SKIP ..." and exits 3 without them.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
X=$1
BUILD=${PREWARM_BUILD_DIR:-$REPO/build}
PRE=$BUILD/scheduler/prewarmd
AGENT=$BUILD/agents/prewarm-agent
KUBECTL=$REPO/.tools/kubectl/kubectl
PGB=/usr/lib/postgresql/15/bin
for f in "$PRE" "$AGENT" "$KUBECTL" "$PGB/initdb"; do
  [ -x "$f" ] || { echo "SKIP $f not found"; exit 3; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP not root (initdb as a throwaway user)"; exit 3; }

T=$(mktemp -d /tmp/pw-helm.XXXX)
PGD=$(mktemp -d /tmp/pg.XXXX)
pre_pid=
agent_pid=
# stop PID NAME — SIGTERM, up to 10 s, then SIGKILL (with a warning: a hung shutdown).
stop() {
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run-rendered: WARNING: $name did not exit within 10 s of SIGTERM; killed"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  # The agent first, while prewarmd still answers (the order of a normal shutdown).
  stop "$agent_pid" prewarm-agent
  stop "$pre_pid" prewarmd
  if [ -d "$PGD/data" ]; then runuser -u pgtest -- "$PGB/pg_ctl" -D "$PGD/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$T" "$PGD"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# PostgreSQL (TOOLING.md recipe)
id pgtest >/dev/null 2>&1 || useradd -M -r -s /usr/sbin/nologin pgtest
chown pgtest "$PGD"
runuser -u pgtest -- "$PGB/initdb" -D "$PGD/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
runuser -u pgtest -- "$PGB/pg_ctl" -D "$PGD/data" -l "$PGD/log" -w \
  -o "-k $PGD -c listen_addresses='' -c fsync=off" start >/dev/null

HTTP=$(free_port)
AGP=$(free_port)
# The Deployment's plain env, then what differs outside a pod: listen addresses on 127.0.0.1,
# the config file's path, PREWARM_PG (a secretKeyRef in the pod) and the model directory (a
# volume mounted at /var/lib/prewarm/models in the pod).
env_args=()
while IFS= read -r line; do [ -n "$line" ] && env_args+=("$line"); done <"$X/scheduler.env"
grep -qx 'PREWARM_MODEL_DIR=/var/lib/prewarm/models' "$X/scheduler.env" || {
  echo "run-rendered: the Deployment does not set PREWARM_MODEL_DIR to its models volume" >&2; exit 1; }
env_args+=("PREWARM_HTTP=127.0.0.1:$HTTP" "PREWARM_AGENTS=tcp://127.0.0.1:$AGP"
  "PREWARM_PG=host=$PGD user=postgres dbname=postgres" "PREWARM_MODEL_DIR=$T/models")
# API tokens: the Secret's file where the pod mounts it. The first token is the one to use.
TOKEN=
if grep -q '^PREWARM_TOKENS_FILE=' "$X/scheduler.env"; then
  [ -f "$X/tokens" ] || { echo "run-rendered: PREWARM_TOKENS_FILE set but no tokens Secret rendered" >&2; exit 1; }
  env_args+=("PREWARM_TOKENS_FILE=$X/tokens")
  TOKEN=$(awk 'NF >= 2 && $1 !~ /^#/ { print $2; exit }' "$X/tokens")
fi
[ -f "$X/prewarmd.json" ] && env_args+=("PREWARM_CONFIG=$X/prewarmd.json")
env -i PATH="$PATH" "${env_args[@]}" "$PRE" >"$T/prewarmd.log" 2>&1 &
pre_pid=$!

get() { curl -s -o "$T/body" -w '%{http_code}' ${TOKEN:+-H "Authorization: Bearer $TOKEN"} "http://127.0.0.1:$HTTP$1" 2>/dev/null || true; }
ready=
for _ in $(seq 1 100); do
  [ "$(get /readyz)" = 200 ] && ready=1 && break
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "run-rendered: prewarmd with the rendered env/config never answered /readyz 200:"
  tail -n 20 "$T/prewarmd.log"
  exit 1
fi
[ "$(get /livez)" = 200 ] || { echo "run-rendered: /livez is not 200"; exit 1; }
echo "run-rendered: prewarmd (rendered env + config file): /livez 200, /readyz 200"
if [ -n "$TOKEN" ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP/v1/hosts" || true)
  [ "$code" = 401 ] || { echo "run-rendered: /v1/hosts without the Secret's token is $code, not 401"; exit 1; }
  echo "run-rendered: API tokens from the Secret: /v1/hosts 401 without, 200 with the token"
fi

# The node-labels init step, with the pinned kubectl on a fixture Node.
if [ -f "$X/agent-labels.gotmpl" ]; then
  "$KUBECTL" label --local -f "$REPO/tests/helm/node.json" prewarm.dev/render=1 \
    -o go-template-file="$X/agent-labels.gotmpl" >"$T/agent.json"
  echo "run-rendered: node-labels init output: $(cat "$T/agent.json")"
fi
mkdir -p "$T/run" "$T/snapshots" "$T/mem"
args=()
AMP=
while IFS= read -r a; do
  case "$a" in
    /etc/prewarm-agent/labels/agent.json) a=$T/agent.json ;;
    /host) a=$REPO/tests/fixtures/topology/2node ;;
    '/run/prewarm/$(PREWARM_AGENT_ID)') a=$T/run ;;
    /var/lib/prewarm/snapshots) a=$T/snapshots ;;
    /var/lib/prewarm/mem) a=$T/mem ;;
    0.0.0.0:*) AMP=$(free_port) && a=127.0.0.1:$AMP ;;
  esac
  args+=("$a")
done <"$X/agent.args"
aenv=()
while IFS= read -r line; do [ -n "$line" ] && aenv+=("$line"); done <"$X/agent.env"
aenv+=("PREWARM_AGENT_ID=worker-1.example" "PREWARM_SCHEDULER=tcp://127.0.0.1:$AGP" "PREWARM_DRIVER=sim")
env -i PATH="$PATH" "${aenv[@]}" "$AGENT" "${args[@]}" >"$T/agent.log" 2>&1 &
agent_pid=$!

want=("${@:2}")
for _ in $(seq 1 100); do
  if [ "$(get /v1/hosts/worker-1.example)" = 200 ]; then
    missing=()
    for w in "${want[@]}"; do grep -q -- "$w" "$T/body" || missing+=("$w"); done
    if [ ${#missing[@]} -eq 0 ]; then
      echo "run-rendered: agent worker-1.example registered with ${want[*]:-its defaults}"
      if [ -n "$AMP" ]; then
        if curl -s "http://127.0.0.1:$AMP/metrics" | grep -q '^prewarm_agent_info{'; then
          echo "run-rendered: agent /metrics (--metrics-listen) serves prewarm_agent_info"
        else
          echo "run-rendered: agent /metrics on 127.0.0.1:$AMP does not serve prewarm_agent_info"
          exit 1
        fi
      fi
      exit 0
    fi
  fi
  sleep 0.1
done
echo "run-rendered: agent did not register with ${want[*]}; last /v1/hosts/worker-1.example:"
cat "$T/body" 2>/dev/null; echo
tail -n 20 "$T/agent.log"
exit 1
