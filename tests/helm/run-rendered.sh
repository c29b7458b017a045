#!/usr/bin/env bash
# run-rendered.sh EXTRACT_DIR — runs the real binaries with what the chart rendered
# (validate.mjs --extract): prewarmd with the Deployment's env and the ConfigMap's config file
# against a throwaway PostgreSQL, and prewarm-agent (driver sim instead of qemu, the fixture
# topology instead of /host, scratch dirs instead of host paths) with the DaemonSet's args and
# the config file that the node-labels go-template (run by the pinned kubectl on
# tests/helm/node.json) produces. Passes when /livez and /readyz answer 200 and the agent shows
# up in /v1/hosts with the labels taken from the node and from the values.
# With TLS rendered (tls.api: PREWARM_HTTPS*; tls.agents: a tls+tcp:// PREWARM_AGENTS and the
# agent's --tls-* flags) it makes two throwaway CAs with openssl (one for the scheduler's and
# the API's certificates, one for the agents'), writes each certificate, key and CA into a
# scratch directory per mounted Secret / host directory (the mounts validate.mjs extracts), at
# the file the rendered env or args name, and also checks: the agent registers over tls+tcp
# with a certificate naming its id and is alive, and `curl --cacert CA https://.../readyz` is
# 200 (and untrusted without the CA). Prints "run-rendered: TLS PASS|FAIL ..." for each.
# Needs: $BUILD/scheduler/prewarmd, $BUILD/agents/prewarm-agent, PostgreSQL 15, root (initdb is
# run as a throwaway user), .tools/kubectl/kubectl, and with TLS openssl and curl. Prints
# "SKIP ..." and exits 3 without them.
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

# --- TLS: what the chart rendered, and certificates where its mounts put them ---------------
renv() { sed -n "s/^$1=//p" "$X/$2" | tail -n 1; }
# argafter FLAG — the value after FLAG in agent.args.
argafter() { awk -v f="$1" 'p { print; exit } $0 == f { p = 1 }' "$X/agent.args"; }
tls_fail() { echo "run-rendered: TLS FAIL: $*"; exit 1; }
AGENTS_SCHEME=tcp
case "$(renv PREWARM_AGENTS scheduler.env)" in tls+tcp://*) AGENTS_SCHEME=tls+tcp ;; esac
HTTPS_CERT=$(renv PREWARM_HTTPS_CERT scheduler.env)
# mapped MOUNTS PATH — where PATH (inside a container) is in this run: PATH must be on a
# read-only Secret or hostPath mount of MOUNTS (scheduler.mounts / agent.mounts); one scratch
# directory per Secret / host directory, so two mounts of one Secret share their files.
mapped() {
  local best='' src='' ro='' mp s r
  while IFS=$'\t' read -r mp s r; do
    case "$2" in "$mp"/*) if [ ${#mp} -gt ${#best} ]; then best=$mp src=$s ro=$r; fi ;; esac
  done <"$X/$1"
  [ -n "$best" ] || { echo "run-rendered: $2 is on no volume mount of the ${1%.mounts} container" >&2; return 1; }
  case "$src" in secret:* | hostPath:*) ;; *) echo "run-rendered: $2 is on $src, not a Secret or host directory" >&2; return 1 ;; esac
  [ "$ro" = ro ] || { echo "run-rendered: $2: its mount ($best) is not read-only" >&2; return 1; }
  local d=$T/vol/${src//[:\/]/_}
  echo "$d/${2#"$best"/}"
}
# put FILE CONTAINER_PATH MOUNTS — places FILE at the mapped path; prints that path. Two roles
# needing different contents in one file is a chart bug.
put() {
  local dst
  dst=$(mapped "$3" "$2") || return 1
  mkdir -p "$(dirname "$dst")"
  if [ -e "$dst" ] && ! cmp -s "$1" "$dst"; then
    echo "run-rendered: $2 ($dst) would need two different files" >&2
    return 1
  fi
  cp "$1" "$dst"
  echo "$dst"
}
AGENT_ID=worker-1.example
if [ "$AGENTS_SCHEME" = tls+tcp ] || [ -n "$HTTPS_CERT" ]; then
  for t in openssl curl; do command -v "$t" >/dev/null || { echo "SKIP $t not found (TLS rendered)"; exit 3; }; done
  C=$T/certs
  mkdir -p "$C"
  ossl() { openssl "$@" >>"$C/openssl.log" 2>&1 || tls_fail "openssl $*: $(tail -n 3 "$C/openssl.log")"; }
  # mkca NAME; mkcert CA NAME CN SAN — EC P-256, like tests/integration/test_tls.py; the leaf
  # is certificate + key in one PEM file, as the Secret's combined key holds them.
  mkca() { ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$C/$1.key" \
    -out "$C/$1.crt" -subj "/CN=$1" -days 2; }
  mkcert() {
    ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$C/$2.key" \
      -out "$C/$2.csr" -subj "/CN=$3"
    printf 'subjectAltName=%s\n' "$4" >"$C/$2.ext"
    ossl x509 -req -in "$C/$2.csr" -CA "$C/$1.crt" -CAkey "$C/$1.key" -CAcreateserial -days 2 \
      -extfile "$C/$2.ext" -out "$C/$2.crt"
    cat "$C/$2.crt" "$C/$2.key" >"$C/$2.pem"
  }
  mkca server-ca # signs the scheduler's certificates (agent link, API)
  mkca agents-ca # signs the agents' certificates
fi
if [ -n "$HTTPS_CERT" ]; then
  HTTPS=$(free_port)
  mkcert server-ca api prewarm-api "DNS:localhost,IP:127.0.0.1"
  HTTPS_FILE=$(put "$C/api.pem" "$HTTPS_CERT" scheduler.mounts) || tls_fail "PREWARM_HTTPS_CERT=$HTTPS_CERT"
  echo "run-rendered: tls.api: PREWARM_HTTPS=$(renv PREWARM_HTTPS scheduler.env) (run on 127.0.0.1:$HTTPS), PREWARM_HTTPS_CERT=$HTTPS_CERT"
fi
if [ "$AGENTS_SCHEME" = tls+tcp ]; then
  # The name the agent expects in the scheduler's certificate: --tls-server-name, else the
  # host of its rendered scheduler URL (the agent's default); this run dials 127.0.0.1.
  SERVER_NAME=$(argafter --tls-server-name)
  if [ -z "$SERVER_NAME" ]; then
    SERVER_NAME=$(renv PREWARM_SCHEDULER agent.env | sed -E 's#^[a-z+]+://##; s#,.*##; s#:[0-9]+$##')
  fi
  [ -n "$SERVER_NAME" ] || tls_fail "no --tls-server-name and no host in the agent's PREWARM_SCHEDULER"
  mkcert server-ca scheduler "$SERVER_NAME" "DNS:$SERVER_NAME"
  mkcert agents-ca agent "$AGENT_ID" "DNS:$AGENT_ID"
  ag_cert=$(renv PREWARM_AGENTS_TLS_CERT scheduler.env)
  ag_ca=$(renv PREWARM_AGENTS_TLS_CA scheduler.env)
  [ -n "$ag_cert" ] && [ -n "$ag_ca" ] || tls_fail "tls+tcp:// PREWARM_AGENTS without PREWARM_AGENTS_TLS_CERT/_CA"
  AG_CERT_FILE=$(put "$C/scheduler.pem" "$ag_cert" scheduler.mounts) || tls_fail "PREWARM_AGENTS_TLS_CERT=$ag_cert"
  AG_CA_FILE=$(put "$C/agents-ca.crt" "$ag_ca" scheduler.mounts) || tls_fail "PREWARM_AGENTS_TLS_CA=$ag_ca"
  a_cert=$(argafter --tls-cert)
  a_ca=$(argafter --tls-ca)
  [ -n "$a_cert" ] && [ -n "$a_ca" ] || tls_fail "the agent has no --tls-cert/--tls-ca"
  put "$C/agent.pem" "$a_cert" agent.mounts >/dev/null || tls_fail "agent --tls-cert $a_cert"
  put "$C/server-ca.crt" "$a_ca" agent.mounts >/dev/null || tls_fail "agent --tls-ca $a_ca"
  echo "run-rendered: tls.agents: prewarmd PREWARM_AGENTS=$(renv PREWARM_AGENTS scheduler.env) cert $ag_cert ca $ag_ca;" \
    "agent --tls-cert $a_cert --tls-ca $a_ca --tls-server-name $SERVER_NAME (certificate CN/DNS $AGENT_ID)"
fi
# The Deployment's plain env, then what differs outside a pod: listen addresses on 127.0.0.1,
# the config file's path, PREWARM_PG (a secretKeyRef in the pod) and the model directory (a
# volume mounted at /var/lib/prewarm/models in the pod).
env_args=()
while IFS= read -r line; do [ -n "$line" ] && env_args+=("$line"); done <"$X/scheduler.env"
grep -qx 'PREWARM_MODEL_DIR=/var/lib/prewarm/models' "$X/scheduler.env" || {
  echo "run-rendered: the Deployment does not set PREWARM_MODEL_DIR to its models volume" >&2; exit 1; }
env_args+=("PREWARM_HTTP=127.0.0.1:$HTTP" "PREWARM_AGENTS=$AGENTS_SCHEME://127.0.0.1:$AGP"
  "PREWARM_PG=host=$PGD user=postgres dbname=postgres" "PREWARM_MODEL_DIR=$T/models")
# TLS files: where this run put them (same files the pod's mounts would hold).
[ -n "$HTTPS_CERT" ] && env_args+=("PREWARM_HTTPS=127.0.0.1:$HTTPS" "PREWARM_HTTPS_CERT=$HTTPS_FILE")
[ "$AGENTS_SCHEME" = tls+tcp ] && env_args+=("PREWARM_AGENTS_TLS_CERT=$AG_CERT_FILE" "PREWARM_AGENTS_TLS_CA=$AG_CA_FILE")
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
if [ -n "$HTTPS_CERT" ]; then
  hcode() { curl -s -o "$T/hbody" -w '%{http_code}' "$@" 2>/dev/null || true; }
  code=$(hcode --cacert "$C/server-ca.crt" "https://127.0.0.1:$HTTPS/readyz")
  [ "$code" = 200 ] || { tail -n 5 "$T/prewarmd.log"; tls_fail "curl --cacert CA https://127.0.0.1:$HTTPS/readyz is $code, not 200"; }
  code=$(hcode "https://127.0.0.1:$HTTPS/readyz")
  [ "$code" = 000 ] || tls_fail "https://127.0.0.1:$HTTPS/readyz without the CA is $code: not the throwaway certificate?"
  if [ -n "$TOKEN" ]; then
    code=$(hcode --cacert "$C/server-ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$HTTPS/v1/hosts")
    [ "$code" = 200 ] || tls_fail "https /v1/hosts with the token is $code, not 200"
  fi
  echo "run-rendered: TLS PASS: API over HTTPS: curl --cacert CA https://127.0.0.1:$HTTPS/readyz 200 (untrusted without the CA)${TOKEN:+, /v1/hosts 200 with the token}"
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
prev=
while IFS= read -r a; do
  case "$prev" in
    --tls-cert | --tls-ca) a=$(mapped agent.mounts "$a") || tls_fail "agent $prev $a" ;;
  esac
  prev=$a
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
aenv+=("PREWARM_AGENT_ID=$AGENT_ID" "PREWARM_SCHEDULER=$AGENTS_SCHEME://127.0.0.1:$AGP" "PREWARM_DRIVER=sim")
if [ "$AGENTS_SCHEME" = tls+tcp ] && [ -z "$(argafter --tls-server-name)" ]; then
  args+=(--tls-server-name "$SERVER_NAME") # as the rendered URL's host would give it
fi
env -i PATH="$PATH" "${aenv[@]}" "$AGENT" "${args[@]}" >"$T/agent.log" 2>&1 &
agent_pid=$!

want=("${@:2}")
[ "$AGENTS_SCHEME" = tls+tcp ] && want+=('"state":"alive"')
for _ in $(seq 1 100); do
  if [ "$(get /v1/hosts/worker-1.example)" = 200 ]; then
    missing=()
    for w in "${want[@]}"; do grep -q -- "$w" "$T/body" || missing+=("$w"); done
    if [ ${#missing[@]} -eq 0 ]; then
      echo "run-rendered: agent worker-1.example registered with ${want[*]:-its defaults}"
      if [ "$AGENTS_SCHEME" = tls+tcp ]; then
        get /v1/hosts >/dev/null
        grep -q "\"id\":\"$AGENT_ID\"" "$T/body" ||
          tls_fail "GET /v1/hosts does not list $AGENT_ID"
        echo "run-rendered: TLS PASS: agent link over mutual TLS: $AGENT_ID registered on tls+tcp://127.0.0.1:$AGP and is alive in /v1/hosts"
      fi
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
[ "$AGENTS_SCHEME" = tls+tcp ] && echo "run-rendered: TLS FAIL: the agent did not register over tls+tcp (below)"
echo "run-rendered: agent did not register with ${want[*]}; last /v1/hosts/worker-1.example:"
cat "$T/body" 2>/dev/null; echo
tail -n 20 "$T/agent.log"
exit 1
