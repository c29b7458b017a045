#!/usr/bin/env python3
"""test_auth.py — bearer tokens with roles on prewarmd's HTTP API, against a real cluster
(PostgreSQL, prewarmd, one sim agent).

Tokens come from a file (--tokens-file) and PREWARM_TOKENS. Checked: health and metrics stay
open; no token or a wrong one is 401 with WWW-Authenticate; viewer reads, gateway also acquires
and releases, operator does everything, a role too low is 403 naming the role needed; the audit
row names the token's owner; prewarmctl with --token and PREWARM_TOKEN; the refusals are
counted in /metrics; prewarm-gateway refused without a token and acquiring with
--token-file; no token ever appears in prewarmd's log (debug level); a bad tokens file
stops prewarmd at start with exit 2 and an error naming the entry, not the token. With --https the
same API answers over TLS (a throwaway self-signed certificate), keep-alive included, and tokens
apply there too.
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (BINARY_DIR, PREWARMD, Agent, Checks, Cluster, expect,  # noqa: E402
                     free_ports, start_gateway)

CTL = os.path.join(BINARY_DIR, "cli", "prewarmctl")
VIEWER = "viewer-9f2c61d0a7b34e58"
GATEWAY = "gateway-3b7e0c94d12a6f85"
OPERATOR = "operator-c84d1e2f9a0b7365"
ENV_OPERATOR = "env-operator-51a9e3c7d2b08f46"
ALL = (VIEWER, GATEWAY, OPERATOR, ENV_OPERATOR)


class S:
    c = None


def call(method, path, token, body=None):
    hdrs = {"Authorization": ("Bearer " + token) if token else None}
    return S.c.http(method, path, body=body, headers=hdrs)


def check_open_endpoints():
    for path in ("/livez", "/readyz", "/metrics"):
        st, _ = call("GET", path, None)
        expect(st == 200, "%s needs no token" % path, st)


def check_unauthenticated():
    for tok in (None, "not-a-configured-token-000", VIEWER + "x"):
        st, body = call("GET", "/v1/functions", tok)
        expect(st == 401 and body["error"]["code"] == "unauthorized", "401 for %r" % (tok and tok[:6]), body)
        expect(S.c.last_headers.get("www-authenticate", "").startswith("Bearer"), "WWW-Authenticate",
               S.c.last_headers)
    st, body = S.c.http("GET", "/v1/functions", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    expect(st == 401, "Basic is not a bearer token", body)


def check_roles():
    spec = {"image": "img", "memory_mb": 128, "vcpus": 1, "pool": {"policy": "fixed", "min": 1, "max": 4}}
    st, body = call("PUT", "/v1/functions/f1", VIEWER, spec)
    expect(st == 403 and body["error"]["code"] == "forbidden" and "operator role" in body["error"]["message"]
           and "role is viewer" in body["error"]["message"], "viewer cannot write", body)
    st, body = call("PUT", "/v1/functions/f1", GATEWAY, spec)
    expect(st == 403 and "role is gateway" in body["error"]["message"], "gateway cannot write", body)
    st, body = call("PUT", "/v1/functions/f1", OPERATOR, spec)
    expect(st == 200 and body["name"] == "f1", "operator writes", body)
    for tok in (VIEWER, GATEWAY, OPERATOR, ENV_OPERATOR):
        st, body = call("GET", "/v1/functions/f1", tok)
        expect(st == 200, "every role reads", (tok[:6], body))
    st, body = call("POST", "/v1/functions/f1/acquire", VIEWER, {"timeout_ms": 3000})
    expect(st == 403 and "gateway role" in body["error"]["message"], "viewer cannot acquire", body)
    st, lease = call("POST", "/v1/functions/f1/acquire", GATEWAY, {"timeout_ms": 5000})
    expect(st == 200 and lease.get("lease_id"), "gateway acquires", lease)
    st, body = call("POST", "/v1/leases/%s/release" % lease["lease_id"], VIEWER, {"duration_ms": 5})
    expect(st == 403, "viewer cannot release", body)
    st, body = call("POST", "/v1/leases/%s/release" % lease["lease_id"], GATEWAY, {"duration_ms": 5})
    expect(st == 200, "gateway releases", body)
    st, body = call("POST", "/v1/hosts/a1/drain", GATEWAY)
    expect(st == 403, "gateway cannot drain", body)
    st, body = call("POST", "/v1/models/train", VIEWER)
    expect(st == 403, "viewer cannot train", body)
    # The environment's token is an operator too, and the audit trail names each owner.
    st, body = call("PUT", "/v1/functions/f2", ENV_OPERATOR, spec)
    expect(st == 200, "PREWARM_TOKENS operator writes", body)
    psql = "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(psql):
        psql = "psql"
    r = subprocess.run([psql, "-h", S.c.pg.dir, "-U", "postgres", "-d", "postgres", "-At", "-c",
                        "SELECT actor || ' ' || subject FROM audit_log WHERE action = 'function.put' ORDER BY id"],
                       capture_output=True, text=True, timeout=30)
    expect(r.stdout.split("\n")[:2] == ["alice f1", "ops-env f2"], "audit actors are the tokens' names", r.stdout)


def check_cli():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    env["HOME"] = tempfile.mkdtemp(prefix="pw-auth-home-")
    server = "http://127.0.0.1:%d" % S.c.http_port
    r = subprocess.run([CTL, "--server", server, "functions", "list"], capture_output=True, text=True, env=env,
                       timeout=20)
    expect(r.returncode == 1 and "HTTP 401" in r.stderr and r.stderr.count("\n") == 1, "no token: exit 1", r.stderr)
    r = subprocess.run([CTL, "--server", server, "--token", VIEWER, "functions", "list", "-o", "names"],
                       capture_output=True, text=True, env=env, timeout=20)
    expect(r.returncode == 0 and r.stdout.split() == ["f1", "f2"], "--token viewer lists", (r.stdout, r.stderr))
    env["PREWARM_TOKEN"] = VIEWER
    r = subprocess.run([CTL, "--server", server, "hosts", "drain", "a1"], capture_output=True, text=True, env=env,
                       timeout=20)
    expect(r.returncode == 1 and "HTTP 403" in r.stderr and "operator role" in r.stderr, "viewer cannot drain",
           r.stderr)
    env["PREWARM_TOKEN"] = OPERATOR
    r = subprocess.run([CTL, "--server", server, "pool", "set", "f2", "--max", "3", "-o", "json"],
                       capture_output=True, text=True, env=env, timeout=20)
    expect(r.returncode == 0 and '"max": 3' in r.stdout, "PREWARM_TOKEN operator sets a pool", (r.stdout, r.stderr))


def gateway_invoke(port):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", "/invoke/f1/")
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def acquires_total():
    st, text = call("GET", "/metrics", None)
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith("prewarm_acquires_total{"))


def check_gateway(tmp):
    # Without a token prewarmd refuses the gateway's acquire: a 502 that says why.
    g = start_gateway(S.c)
    st, body = gateway_invoke(g.port)
    expect(st == 502 and "HTTP 401" in body and "token" in body, "gateway without a token", (st, body))
    g.stop()
    # With a gateway-role token from a file the acquire goes through (the sim VM has no HTTP
    # server, so the call itself then fails: the lease is taken and released all the same).
    tf = os.path.join(tmp, "gw-token")
    with open(tf, "w") as f:
        f.write(GATEWAY + "\n")
    before = acquires_total()
    g = start_gateway(S.c, extra_args=["--token-file", tf])
    st, body = gateway_invoke(g.port)
    expect("HTTP 401" not in body and "HTTP 403" not in body and acquires_total() >= before + 1,
           "gateway with its token acquires", (st, body))
    g.stop()
    expect(GATEWAY not in g.log_text(), "the gateway does not log its token")


def check_metrics():
    st, text = call("GET", "/metrics", None)
    got = {}
    for ln in text.splitlines():
        if ln.startswith("prewarm_http_auth_failures_total{"):
            reason = ln.split('reason="')[1].split('"')[0]
            got[reason] = float(ln.rsplit(" ", 1)[1])
    expect(got.get("missing", 0) >= 2 and got.get("invalid", 0) >= 2 and got.get("forbidden", 0) >= 6,
           "refusals counted by reason", got)


def check_log_has_no_tokens():
    log = S.c.scheduler.log_text()
    for tok in ALL:
        expect(tok not in log, "token %s... not in prewarmd's log" % tok[:8])


def check_https(tmp):
    """--https: the same API over TLS (a throwaway self-signed certificate); tokens apply."""
    import ssl
    import http.client
    ctx = ssl.create_default_context(cafile=S.cert)
    ctx.check_hostname = False

    def get(path, token=None, context=ctx):
        conn = http.client.HTTPSConnection("127.0.0.1", S.https_port, context=context, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()
    st, _ = get("/livez")
    expect(st == 200, "GET /livez over TLS", st)
    st, _ = get("/v1/functions")
    expect(st == 401, "tokens apply over TLS", st)
    st, body = get("/v1/functions", VIEWER)
    expect(st == 200 and b"f1" in body, "a viewer reads over TLS", body[:200])
    # Keep-alive through the terminator: several requests on one connection.
    conn = http.client.HTTPSConnection("127.0.0.1", S.https_port, context=ctx, timeout=10)
    for _ in range(3):
        conn.request("GET", "/livez")
        r = conn.getresponse()
        expect(r.status == 200, "keep-alive over TLS", r.status)
        r.read()
    conn.close()
    # A client that does not trust the certificate refuses it; plain HTTP on the TLS port fails.
    try:
        get("/livez", context=ssl.create_default_context())
        expect(False, "an untrusted certificate is refused by the client")
    except ssl.SSLError:
        pass
    import socket
    s = socket.create_connection(("127.0.0.1", S.https_port), timeout=5)
    s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    try:
        data = s.recv(100)
    except OSError:
        pass
    s.close()
    expect(not data.startswith(b"HTTP/1.1 200"), "plain HTTP on the TLS port gets no answer", data)
    # prewarmctl over https://, trusting the certificate through PREWARM_CA.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    env["HOME"] = tmp
    server = "https://localhost:%d" % S.https_port
    r = subprocess.run([CTL, "--server", server, "--token", VIEWER, "functions", "list", "-o", "names"],
                       capture_output=True, text=True, env=dict(env, PREWARM_CA=S.cert), timeout=20)
    expect(r.returncode == 0 and "f1" in r.stdout.split(), "prewarmctl over https", (r.stdout, r.stderr))
    r = subprocess.run([CTL, "--server", server, "--token", VIEWER, "functions", "list"],
                       capture_output=True, text=True, env=env, timeout=20)
    expect(r.returncode == 1 and "not trusted" in r.stderr, "an untrusted server: one clear line, exit 1",
           (r.returncode, r.stderr))


def check_bad_file(tmp):
    bad = os.path.join(tmp, "bad-tokens")
    with open(bad, "w") as f:
        f.write("operator %s\nsuperuser %s\n" % (OPERATOR, VIEWER))
    http, agents = free_ports(2)
    r = subprocess.run([PREWARMD, "--http", "127.0.0.1:%d" % http, "--agents", "tcp://127.0.0.1:%d" % agents,
                        "--pg", S.c.pg.conninfo, "--tokens-file", bad], capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    expect(r.returncode == 2 and "entry 2: role must be viewer, gateway or operator" in out, "bad file: exit 2",
           (r.returncode, out[-400:]))
    expect(VIEWER not in out and OPERATOR not in out, "the error does not quote a token")


def main():
    checks = Checks("API bearer tokens with roles")
    tmp = tempfile.mkdtemp(prefix="pw-auth-")
    path = os.path.join(tmp, "tokens")
    with open(path, "w") as f:
        f.write("# role token name\nviewer %s\ngateway %s gw\noperator %s alice\n" % (VIEWER, GATEWAY, OPERATOR))
    os.environ["PREWARM_TOKENS"] = "operator %s ops-env" % ENV_OPERATOR
    key, S.cert = os.path.join(tmp, "https.key"), os.path.join(tmp, "https.crt")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", S.cert, "-subj", "/CN=localhost", "-days", "2"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        checks.fail("a throwaway certificate with openssl", r.stderr[-300:])
        return checks.finish()
    both = os.path.join(tmp, "https.pem")
    with open(both, "w") as f:
        f.write(open(S.cert).read() + open(key).read())
    S.https_port = free_ports(1)[0]
    try:
        with Cluster(agents=[Agent("a1", "2node")], sim_restore_ms=20, log_level="debug", name="auth",
                     scheduler_args=["--tokens-file", path, "--https", "127.0.0.1:%d" % S.https_port,
                                     "--https-cert", both], token=OPERATOR) as c:
            S.c = c
            for name, fn in [("health and metrics need no token", check_open_endpoints),
                             ("no token, a wrong one, not Bearer: 401", check_unauthenticated),
                             ("viewer < gateway < operator; audit names the owner", check_roles),
                             ("prewarmctl --token and PREWARM_TOKEN", check_cli),
                             ("refusals counted in /metrics", check_metrics),
                             ("no token in the log", check_log_has_no_tokens)]:
                checks.check(name, fn)
            checks.check("prewarm-gateway: refused without a token, acquires with --token-file", check_gateway, tmp)
            checks.check("--https: the API over TLS, tokens included", check_https, tmp)
            checks.check("a bad tokens file stops prewarmd (exit 2, entry named)", check_bad_file, tmp)
            checks.done_with(c)
    finally:
        os.environ.pop("PREWARM_TOKENS", None)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
