#!/usr/bin/env python3
"""test_cli.py — prewarmctl against a running cluster: PostgreSQL, prewarmd and two sim agents.

Every command runs as a real process; its table and JSON output are parsed and checked against
GET of the API. Also: functions put (flags, --file, stdin) then get, pool set then get, hosts
drain / undrain, model list / get / train / activate (history seeded in PostgreSQL, a tampered
model file refused, the active model kept across a restart, old files pruned by --model-keep),
forecast get (no forecast yet: the error line and exit 1; a forecast with its
contributions from a canned server), top --once and top on a terminal (frames redrawn until SIGINT), completion bash (bash -n, and it completes
function names), --help everywhere, usage errors (exit 2), server errors and a server that is
down (exit 1, one line), the HTTP client's framing (chunked, read to close), a peer that is not
HTTP and one that never answers (--timeout), and the precedence flags > environment > config file > default for the
server and the token (seen by small fake servers).
"""

import http.server
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (BINARY_DIR, SANITIZER_MARKERS, Agent, Checks, Cluster, expect,  # noqa: E402
                     free_port, wait_until)

CTL = os.path.join(BINARY_DIR, "cli", "prewarmctl")
HOME = tempfile.mkdtemp(prefix="pw-cli-home-")


class S:
    c = None
    server = None


def run(*args, env=None, stdin=None, server=True, timeout=20):
    """Run prewarmctl; returns (rc, stdout, stderr). The environment has no PREWARM_* and a
    HOME of its own (no config file) unless env says otherwise; server=True adds --server."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    e["HOME"] = HOME
    e.pop("XDG_CONFIG_HOME", None)
    e.update(env or {})
    argv = [CTL] + (["--server", S.server] if server else []) + list(args)
    r = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=e, timeout=timeout)
    for m in SANITIZER_MARKERS:
        expect(m not in r.stderr, "no sanitizer report from %s" % " ".join(args), r.stderr[-2000:])
    return r.returncode, r.stdout, r.stderr


def ok(*args, **kw):
    rc, out, err = run(*args, **kw)
    expect(rc == 0 and err == "", "prewarmctl %s exits 0 quietly" % " ".join(args), (rc, out[-500:], err))
    return out


def ok_json(*args, **kw):
    out = ok(*(list(args) + ["-o", "json"]), **kw)
    return json.loads(out)


def fails(rc_want, *args, **kw):
    """Runs a command that must fail with rc_want and one line on stderr; returns that line."""
    rc, out, err = run(*args, **kw)
    expect(rc == rc_want, "prewarmctl %s exits %d" % (" ".join(args), rc_want), (rc, out, err))
    lines = err.splitlines()
    expect(len(lines) == 1 and lines[0].startswith("prewarmctl: "), "one error line", err)
    expect(out == "", "nothing on stdout", out)
    return lines[0]


def table(text):
    """Parse an aligned table (first line: header) into a list of dicts. Columns start where
    the header's words start."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    hdr = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", hdr)]
    names = hdr.split()
    rows = []
    for ln in lines[1:]:
        cells = []
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else None
            cells.append(ln[s:end].strip())
        rows.append(dict(zip(names, cells)))
    return rows


def fields(text):
    """FIELD VALUE rows into a dict."""
    return {r["FIELD"]: r["VALUE"] for r in table(text)}


def flat(obj, prefix=""):
    """The API object flattened as prewarmctl prints it (dotted keys, lists joined by ',')."""
    out = {}
    items = enumerate(obj) if isinstance(obj, list) else obj.items()
    for k, v in items:
        key = ("%s[%d]" % (prefix, k)) if isinstance(obj, list) else (prefix + "." + k if prefix else k)
        if isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], (dict, list))):
            out.update(flat(v, key))
        else:
            out[key] = cell(v)
    return out


def cell(v):
    if v is None or v == "" or v == []:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(cell(x) for x in v)
    if isinstance(v, (int, float)):
        if float(v).is_integer():
            return "%d" % v
        return "%.4g" % v
    return str(v)


# ---- fake servers (precedence, token, a canned forecast) ----------------------------------

class Fake:
    def __init__(self, name):
        self.name = name
        self.seen = []
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                fake.seen.append((self.path, self.headers.get("Authorization")))
                if self.path.endswith("/forecast"):
                    body = {"function": "fx", "minute": 29000000, "lambda_per_min": 12.5,
                            "duration_ms": 40.0, "restore_ms": 200, "floor": 2, "policy": "predictive",
                            "quantile": 0.99, "model": "models/default.json", "retrains": 0,
                            "contributions": [{"feature": "rate_5m", "value": 11.0, "contribution": 0.75},
                                              {"feature": "hour_sin", "value": 0.5, "contribution": -0.125}]}
                else:
                    body = {"functions": [{"name": "from-" + fake.name, "image": "i", "memory_mb": 128,
                                           "vcpus": 1, "pool": {"policy": "fixed", "min": 0, "max": 1,
                                                                "keepalive_ms": 0, "quantile": 0.99},
                                           "placement": {"clouds": [], "regions": [], "zones": [],
                                                         "max_host_share": 0, "max_zone_share": 0}}]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


# ---- checks ----------------------------------------------------------------------------------

def check_put_flags():
    j = ok_json("functions", "put", "f1", "--image", "img-one", "--memory-mb", "256", "--vcpus", "2",
                "--policy", "fixed", "--min", "1", "--max", "3", "--keepalive", "2m", "--zones", "z1,z2",
                "--max-host-share", "0.5")
    api = S.c.get_json("/v1/functions/f1")
    expect(j == api, "put -o json == GET", (j, api))
    expect(api["image"] == "img-one" and api["memory_mb"] == 256 and api["vcpus"] == 2, "fields", api)
    expect(api["pool"]["min"] == 1 and api["pool"]["max"] == 3 and api["pool"]["keepalive_ms"] == 120000,
           "pool", api)
    expect(api["placement"]["zones"] == ["z1", "z2"] and api["placement"]["max_host_share"] == 0.5,
           "placement", api)
    # get in both formats
    expect(ok_json("functions", "get", "f1") == api, "get -o json == GET")
    got = fields(ok("functions", "get", "f1"))
    expect(got == flat(api), "get table == GET flattened", (got, flat(api)))


def check_put_file_and_stdin():
    spec = {"name": "f2", "image": "img-two", "memory_mb": 512, "vcpus": 1,
            "pool": {"policy": "keepalive", "min": 0, "max": 2, "keepalive_ms": 30000}}
    path = os.path.join(HOME, "f2.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    # Flags override the file.
    out = ok("functions", "put", "--file", path, "--max", "4")
    api = S.c.get_json("/v1/functions/f2")
    expect(fields(out) == flat(api), "put table == GET flattened", (out, api))
    expect(api["image"] == "img-two" and api["pool"]["policy"] == "keepalive" and api["pool"]["max"] == 4,
           "file + flag applied", api)
    # stdin, with the name as an argument; then a get -o json round trip through put.
    ok("functions", "put", "f3", "--file", "-", stdin=json.dumps({"image": "img-three", "vcpus": 2}))
    api3 = S.c.get_json("/v1/functions/f3")
    expect(api3["image"] == "img-three" and api3["vcpus"] == 2, "stdin spec applied", api3)
    round_trip = ok("functions", "get", "f3", "-o", "json")
    ok("functions", "put", "f3", "--file", "-", stdin=round_trip)
    expect(S.c.get_json("/v1/functions/f3") == api3, "get -o json | put --file - changes nothing")
    line = fails(2, "functions", "put", "other", "--file", path)
    expect("'f2'" in line and "try 'prewarmctl functions put --help'" in line, "name mismatch is usage", line)


def check_list():
    api = S.c.get_json("/v1/functions")
    expect(ok_json("functions", "list") == api, "list -o json == GET /v1/functions")
    rows = table(ok("functions", "list"))
    by = {r["NAME"]: r for r in rows}
    expect(sorted(by) == sorted(f["name"] for f in api["functions"]), "names", (by.keys(), api))
    for f in api["functions"]:
        r = by[f["name"]]
        want = {"IMAGE": f["image"], "MEMORY_MB": str(f["memory_mb"]), "VCPUS": str(f["vcpus"]),
                "POLICY": f["pool"]["policy"], "MIN": str(f["pool"]["min"]), "MAX": str(f["pool"]["max"]),
                "KEEPALIVE_MS": str(f["pool"]["keepalive_ms"]), "QUANTILE": cell(f["pool"]["quantile"])}
        for k, v in want.items():
            expect(r[k] == v, "%s %s" % (f["name"], k), (r, f))
    expect("zones=z1,z2;max_host_share=0.5" == by["f1"]["PLACEMENT"], "placement column", by["f1"])
    names = ok("functions", "list", "-o", "names").split()
    expect(sorted(names) == sorted(by), "-o names", names)
    return "%d functions" % len(rows)


def check_pool():
    j = ok_json("pool", "set", "f1", "--min", "2", "--max", "5", "--keepalive", "45s")
    api = S.c.pool("f1")
    for k in ("function", "policy", "min", "max", "keepalive_ms", "quantile"):
        expect(j[k] == api[k], "pool set -o json %s == GET pool" % k, (j, api))
    expect(api["min"] == 2 and api["max"] == 5 and api["keepalive_ms"] == 45000, "pool set applied", api)
    expect(list(j) == list(api), "same keys in the server's order", (list(j), list(api)))
    got = ok_json("pool", "get", "f1")
    expect(list(got) == list(api), "pool get -o json keys", got)
    t = fields(ok("pool", "get", "f1"))
    for k in ("function", "policy", "min", "max", "keepalive_ms", "quantile", "target_idle", "acquires"):
        expect(k in t, "pool get table has %s" % k, t)
    for k in ("function", "policy", "min", "max", "keepalive_ms", "quantile"):
        expect(t[k] == cell(api[k]), "pool get table %s" % k, (t, api))
    line = fails(1, "pool", "set", "f1", "--quantile", "2")
    expect(line.endswith("(invalid, HTTP 400)") and "quantile" in line, "server 400 as one line", line)
    line = fails(1, "pool", "get", "nope")
    expect(line == "prewarmctl: no such function (not_found, HTTP 404)", "404 line", line)


def check_hosts():
    api = S.c.get_json("/v1/hosts")
    # last_seen_ms_ago and load move between two requests: compare ids and key order.
    j = ok_json("hosts", "list")
    expect([h["id"] for h in j["hosts"]] == [h["id"] for h in api["hosts"]], "hosts -o json ids", j)
    expect(list(j["hosts"][0]) == list(api["hosts"][0]), "host keys in the server's order", j)
    rows = {r["ID"]: r for r in table(ok("hosts", "list"))}
    for h in api["hosts"]:
        r = rows[h["id"]]
        expect(r["STATE"] == h["state"] and r["DRIVER"] == h["driver"] and r["ZONE"] == cell(h["zone"])
               and r["CLOUD"] == cell(h["cloud"]) and r["DRAINING"] == "no" and r["HEALTH"] == "ok",
               "host row %s" % h["id"], (r, h))
    expect(sorted(ok("hosts", "list", "-o", "names").split()) == sorted(rows), "-o names")
    g = fields(ok("hosts", "get", "a1"))
    expect(g["id"] == "a1" and g["zone"] == "z1" and g["labels.zone"] == "z1" and "numa[0].cpus" in g,
           "hosts get table", g)
    line = fails(1, "hosts", "get", "nohost")
    expect(line == "prewarmctl: no such host (not_found, HTTP 404)", "unknown host", line)


def check_drain():
    rows = table(ok("hosts", "drain", "a2"))
    expect(len(rows) == 1 and rows[0]["ID"] == "a2" and rows[0]["DRAINING"] == "operator", "drain table", rows)
    expect(S.c.hosts()["a2"]["draining"] is True, "API says draining")
    j = ok_json("hosts", "undrain", "a2")
    expect(j["id"] == "a2" and j["draining"] is False, "undrain -o json", j)
    expect(S.c.hosts()["a2"]["draining"] is False, "API says not draining")
    j = ok_json("hosts", "drain", "a2")
    expect(j["draining"] is True, "drain -o json", j)
    ok("hosts", "undrain", "a2")
    expect(table(ok("hosts", "list"))[1]["DRAINING"] == "no", "undrained in the list")


def check_forecast():
    line = fails(1, "forecast", "get", "f1")
    expect(line.startswith("prewarmctl: no forecast yet") and line.endswith("(no_forecast_yet, HTTP 404)"),
           "no forecast yet line", line)
    line = fails(1, "forecast", "get", "nope")
    expect(line == "prewarmctl: no such function (not_found, HTTP 404)", "unknown function", line)
    fake = Fake("forecast")
    try:
        j = ok_json("forecast", "get", "fx", server=False, env={"PREWARM_SERVER": fake.url})
        expect(j["contributions"][0]["feature"] == "rate_5m", "forecast -o json", j)
        out = ok("forecast", "get", "fx", server=False, env={"PREWARM_SERVER": fake.url})
        head, _, contrib = out.partition("\n\n")
        f = fields(head)
        expect(f["lambda_per_min"] == "12.5" and f["floor"] == "2" and f["model"] == "models/default.json"
               and "contributions" not in f, "forecast fields", f)
        rows = table(contrib)
        expect([(r["FEATURE"], r["VALUE"], r["CONTRIBUTION"]) for r in rows]
               == [("rate_5m", "11", "0.75"), ("hour_sin", "0.5", "-0.125")], "contributions table", rows)
    finally:
        fake.httpd.shutdown()


def psql(sql):
    exe = "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(exe):
        exe = "psql"
    r = subprocess.run([exe, "-h", S.c.pg.dir, "-U", "postgres", "-d", "postgres", "-At", "-v", "ON_ERROR_STOP=1",
                        "-c", sql], capture_output=True, text=True, timeout=30)
    expect(r.returncode == 0, "psql: %s" % sql[:60], r.stderr[-500:])
    return r.stdout


def models_json():
    return S.c.get_json("/v1/models")


def check_models():
    # The registry as the API has it, against the table and -o json/names.
    api = models_json()
    j = ok_json("model", "list")
    expect(j["models"] == api["models"] and j["in_use"] == api["in_use"], "model list -o json equals the API", j)
    names = ok("model", "list", "-o", "names").split()
    expect(names == [m["version"] for m in api["models"]], "model list -o names", names)
    # No invocation history yet: a training is refused, one line, exit 1.
    line = fails(1, "model", "train", "--wait")
    expect("no invocation history" in line and "HTTP 409" in line, "train without history", line)
    # Six functions x 6 h of minutes in invocation_minutes, as prewarmd's telemetry writes them;
    # prewarmd reads its training history at start.
    now_min = int(time.time() // 60)
    psql("INSERT INTO invocation_minutes (function, minute, count) "
         "SELECT 'hist' || f, m, (3 + 4 * f + 3 * f * sin(m / 30.0) + (m %% 5))::int "
         "FROM generate_series(1, 6) f, generate_series(%d, %d) m" % (now_min - 360, now_min - 1))
    S.c.restart_scheduler(sig=signal.SIGTERM)
    t = ok_json("model", "train", "--wait")
    expect(t["state"] == "succeeded" and t["trigger"] == "api" and t["activate"] is False and t["rows"] >= 1000,
           "train --wait -o json: succeeded", t)
    v1 = t["version"]
    api = models_json()
    row = [m for m in api["models"] if m["version"] == v1]
    expect(len(row) == 1 and row[0]["source"] == "trained" and not row[0]["active"] and not row[0]["in_use"]
           and row[0]["functions"] >= 6 and os.path.exists(row[0]["path"]), "registered, not active", row)
    before = api["in_use"]
    # The table: one row per model, the columns from the API.
    out = ok("model", "list")
    head, _, foot = out.partition("\n\n")
    rows = table(head)
    expect([r["VERSION"] for r in rows] == [m["version"] for m in api["models"]], "model list table rows", rows)
    r1 = [r for r in rows if r["VERSION"] == v1][0]
    expect(r1["SOURCE"] == "trained" and r1["ACTIVE"] == "no" and r1["IN-USE"] == "no" and r1["FUNCTIONS"] == "6"
           and r1["ROWS"] == str(row[0]["rows"]) and r1["SHA256"] == row[0]["sha256"][:12], "table row", r1)
    expect(foot.startswith("in use: ") and "last training: succeeded (%s)" % v1 in foot, "table footer", foot)
    # model get: FIELD VALUE rows of the API's object.
    f = fields(ok("model", "get", v1))
    expect(f == flat(row[0]), "model get table equals the API", (f, flat(row[0])))
    # Activate it: the one active model, in use, persisted with an audit row.
    f = fields(ok("model", "activate", v1))
    expect(f["active"] == "true" and f["in_use"] == "true", "model activate", f)
    api = models_json()
    expect(api["in_use"] == v1 and [m["version"] for m in api["models"] if m["active"]] == [v1],
           "v1 active and in use", api)
    expect(psql("SELECT version FROM models WHERE active").split() == [v1], "active in PostgreSQL")
    expect("api|model.activate|" + v1 in psql("SELECT actor, action, subject FROM audit_log"), "audit row")
    # A second model whose file changed after training is refused; v1 stays in use. Versions
    # are named by the second and the model's sha256: trained within the same second from the
    # same history, two models are one version, so wait for the next second.
    time.sleep(1.1)
    t = ok_json("model", "train", "--wait")
    v2 = t["version"]
    path2 = [m["path"] for m in models_json()["models"] if m["version"] == v2][0]
    with open(path2, "a") as fh:
        fh.write(" ")
    line = fails(1, "model", "activate", v2)
    expect("the file changed" in line and "HTTP 409" in line, "tampered model refused", line)
    line = fails(1, "model", "activate", "no-such-model")
    expect(line == "prewarmctl: no such model version (not_found, HTTP 404)", "unknown version", line)
    expect(models_json()["in_use"] == v1, "still v1 after the refusals")
    # train --activate: used as soon as it is registered.
    time.sleep(1.1)
    t = ok_json("model", "train", "--activate", "--wait")
    v3 = t["version"]
    expect(len({v1, v2, v3}) == 3, "three distinct versions", (v1, v2, v3))
    expect(t["activate"] is True and models_json()["in_use"] == v3, "train --activate puts it in use", t)
    # A restart (SIGKILL) starts from the registry's active model, not the --model file.
    S.c.restart_scheduler(sig=signal.SIGKILL)
    api = models_json()
    expect(api["in_use"] == v3 and [m["version"] for m in api["models"] if m["active"]] == [v3],
           "after a restart the active model is in use", api)
    expect(before != v3, "the model changed from the one at start", before)
    # --model-keep 1: after the next trainings only the newest file besides the active one (v3,
    # also in use) stays in --model-dir; pruned models keep their rows, say file_exists false
    # and cannot be activated.
    S.c.scheduler.argv += ["--model-keep", "1"]
    S.c.restart_scheduler(sig=signal.SIGTERM)
    newer = []
    for _ in range(2):
        time.sleep(1.1)  # versions are named by the second
        newer.append(ok_json("model", "train", "--wait")["version"])
    v5 = newer[-1]
    rows = {m["version"]: m for m in models_json()["models"]}
    want = {v: v in (v3, v5) for v in (v1, v2, v3) + tuple(newer)}
    got = {v: rows[v]["file_exists"] for v in want}
    expect(got == want and all(os.path.exists(rows[v]["path"]) == want[v] for v in want),
           "--model-keep 1 keeps the newest and the active model's files", got)
    line = fails(1, "model", "activate", v1)
    expect("cannot read" in line and "HTTP 409" in line, "a pruned model cannot be activated", line)
    expect(models_json()["in_use"] == v3, "still v3 in use after pruning", models_json()["in_use"])
    S.c.scheduler.argv = S.c.scheduler.argv[:-2]


def check_top():
    # Some traffic first: a warm acquire on f1 (min 2) and release it.
    wait_until(lambda: S.c.pool("f1")["idle"] >= 1, 10, "f1 has an idle VM")
    for _ in range(3):
        st, lease = S.c.http("POST", "/v1/functions/f1/acquire", {"timeout_ms": 5000})
        expect(st == 200, "acquire", lease)
        st, _ = S.c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 5, "outcome": "ok"})
        expect(st == 200, "release")
    out = ok("top", "--once")
    head, pools, hosts = out.split("\n\n")
    expect(head.startswith("prewarm top  %s" % S.server), "header", head)
    prow = {r["FUNCTION"]: r for r in table(pools)}
    api = {f["name"]: S.c.pool(f["name"]) for f in S.c.get_json("/v1/functions")["functions"]}
    expect(sorted(prow) == sorted(api), "a row per pool", (prow, api))
    for fn, p in api.items():
        r = prow[fn]
        hit = "-" if p["acquires"] == 0 else "%.1f%%" % (100.0 * p["warm"] / p["acquires"])
        expect(r["POLICY"] == p["policy"] and r["ACQUIRES"] == str(p["acquires"]) and r["HIT_RATE"] == hit
               and r["COLD"] == str(p["cold"]) and r["TIMEOUTS"] == str(p["timeouts"]),
               "pool row %s" % fn, (r, p))
    expect(int(prow["f1"]["ACQUIRES"]) >= 3, "f1 acquires counted", prow["f1"])
    total = sum(p["acquires"] for p in api.values())
    expect(("acquires %d " % total) in head and "hosts 2 alive / 2" in head, "summary", head)
    hrow = {r["HOST"]: r for r in table(hosts)}
    expect(sorted(hrow) == ["a1", "a2"] and hrow["a1"]["ZONE"] == "z1" and hrow["a1"]["STATE"] == "alive",
           "host rows", hrow)
    j = ok_json("top", "--once")
    expect(j["server"] == S.server and [p["function"] for p in j["pools"]] == list(api)
           and len(j["hosts"]) == 2, "top -o json", j)
    # Not a terminal: top without --once prints one frame and exits.
    out = ok("top", "--interval", "0.2")
    expect(out.startswith("prewarm top") and "\033[" not in out, "no TTY: one frame, no escapes", out[:200])
    # A terminal: frames redrawn with an ANSI clear until SIGINT, then exit 0.
    master, slave = pty.openpty()
    e = {k: v for k, v in os.environ.items() if not k.startswith("PREWARM_")}
    e["HOME"] = HOME
    p = subprocess.Popen([CTL, "--server", S.server, "top", "--interval", "0.2"], stdout=slave,
                         stderr=subprocess.PIPE, env=e)
    os.close(slave)
    buf = b""
    deadline = time.monotonic() + 10
    while buf.count(b"\033[H\033[2J") < 3 and time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if r:
            try:
                buf += os.read(master, 65536)
            except OSError:
                break
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=5)
    err = p.stderr.read().decode(errors="replace")
    os.close(master)
    expect(buf.count(b"\033[H\033[2J") >= 3 and b"FUNCTION" in buf, "TTY: refreshing frames", buf[-300:])
    expect(rc == 0 and err == "", "TTY: SIGINT ends top with 0", (rc, err))
    return prow["f1"]["HIT_RATE"]


def check_completion():
    script = ok("completion", "bash")
    r = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    expect(r.returncode == 0, "bash -n accepts the script", r.stderr)
    path = os.path.join(HOME, "completion.bash")
    with open(path, "w") as f:
        f.write(script)

    def complete(*words):
        words = [CTL, "--server", S.server] + list(words)
        prog = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _prewarmctl; printf "%%s\\n" "${COMPREPLY[@]}"'
                % (path, " ".join("'%s'" % w for w in words), len(words) - 1))
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=20)
        return sorted(x for x in r.stdout.split("\n") if x)

    expect(complete("po") == ["pool"], "noun", complete("po"))
    expect(complete("hosts", "") == ["drain", "get", "list", "undrain"], "verbs", complete("hosts", ""))
    expect(complete("pool", "get", "f") == ["f1", "f2", "f3"], "function names", complete("pool", "get", "f"))
    expect(complete("hosts", "drain", "") == ["a1", "a2"], "host names", complete("hosts", "drain", ""))
    expect("--keepalive" in complete("pool", "set", "f1", "--k"), "flags", complete("pool", "set", "f1", "--k"))
    expect(complete("pool", "set", "f1", "--policy", "p") == ["predictive"], "policy values")


def check_help():
    for args in (["--help"], ["help"], ["functions", "--help"], ["functions", "list", "--help"],
                 ["functions", "get", "--help"], ["functions", "put", "--help"], ["functions", "delete", "-h"],
                 ["pool", "get", "--help"], ["pool", "set", "--help"], ["hosts", "list", "--help"],
                 ["hosts", "get", "--help"], ["hosts", "drain", "--help"], ["hosts", "undrain", "--help"],
                 ["forecast", "get", "--help"], ["top", "--help"], ["completion", "--help"],
                 ["model", "--help"], ["model", "list", "--help"], ["model", "train", "--help"],
                 ["model", "activate", "-h"], ["model", "get", "--help"]):
        out = ok(*args, server=False)
        expect(out.startswith("usage: prewarmctl"), "%s prints usage" % " ".join(args), out[:200])


def check_usage_errors():
    cases = [
        (["functions", "list", "--bogus"], "unknown option '--bogus'", "functions list"),
        (["pool", "set", "f1", "--min"], "option '--min' needs a value", "pool set"),
        (["pool", "set", "f1", "--min", "x"], "--min must be an integer", "pool set"),
        (["pool", "set", "f1"], "nothing to set", "pool set"),
        (["pool", "set", "f1", "--policy", "lru"], "--policy must be", "pool set"),
        (["pool", "set", "f1", "--keepalive", "soon"], "--keepalive must be a duration", "pool set"),
        (["functions", "get"], "missing function", "functions get"),
        (["functions", "get", "a", "b"], "unexpected argument 'b'", "functions get"),
        (["functions", "get", "bad/name"], "invalid function name", "functions get"),
        (["functions", "list", "-o", "yaml"], "-o must be table or json", "functions list"),
        (["hosts", "explode", "a1"], "unknown verb 'explode'", "hosts"),
        (["pool"], "'pool' needs a verb", "pool"),
        (["frobnicate"], "unknown command 'frobnicate'", ""),
        (["--nope", "functions", "list"], "unknown option '--nope'", ""),
        (["top", "--interval", "0"], "--interval must be", "top"),
        (["completion", "zsh"], "unsupported shell", "completion"),
        (["model", "activate"], "missing model version", "model activate"),
        (["model", "train", "now"], "unexpected argument 'now'", "model train"),
        (["model", "train", "--activate=yes"], "takes no value", "model train"),
        (["model", "get", "bad/x"], "invalid model version name", "model get"),
        (["model", "retire", "x"], "unknown verb 'retire'", "model"),
    ]
    for args, msg, cmd in cases:
        line = fails(2, *args)
        hint = "try 'prewarmctl %s--help'" % (cmd + " " if cmd else "")
        expect(msg in line and line.endswith(hint), "%s: usage line" % " ".join(args), line)
    rc, out, err = run(server=False)
    expect(rc == 2 and out == "" and err.startswith("usage:"), "no command: usage, exit 2", (rc, err))


def check_delete():
    out = ok("functions", "delete", "f3")
    expect(out == "deleted function f3\n", "delete table", out)
    line = fails(1, "functions", "get", "f3")
    expect(line == "prewarmctl: no such function (not_found, HTTP 404)", "gone", line)
    j = ok_json("functions", "delete", "f2")
    expect(j == {"deleted": "f2"}, "delete -o json", j)


def check_server_down():
    port = free_port()
    line = fails(1, "functions", "list", server=False, env={"PREWARM_SERVER": "http://127.0.0.1:%d" % port})
    expect("cannot connect to http://127.0.0.1:%d" % port in line and "refused" in line, "refused line", line)
    line = fails(1, "--server", "ftp://x", "hosts", "list", server=False)
    expect("only http:// and https://" in line, "other schemes refused", line)


def check_precedence():
    flag, env, filed = Fake("flag"), Fake("env"), Fake("file")
    cfg_dir = os.path.join(HOME, ".config", "prewarm")
    os.makedirs(cfg_dir, exist_ok=True)
    default_cfg = os.path.join(cfg_dir, "prewarmctl.json")
    try:
        with open(default_cfg, "w") as f:
            json.dump({"server": filed.url, "token": "file-token"}, f)

        def who(*args, env_vars=None):
            out = ok("functions", "list", "-o", "names", *args, server=False, env=env_vars)
            return out.strip()

        expect(who() == "from-file", "config file over the default")
        expect(filed.seen[-1][1] == "Bearer file-token", "token from the file", filed.seen[-1])
        e = {"PREWARM_SERVER": env.url, "PREWARM_TOKEN": "env-token"}
        expect(who(env_vars=e) == "from-env", "environment over the file")
        expect(env.seen[-1][1] == "Bearer env-token", "token from the environment", env.seen[-1])
        expect(who("--server", flag.url, "--token", "flag-token", env_vars=e) == "from-flag", "flags over env")
        expect(flag.seen[-1][1] == "Bearer flag-token", "token from the flag", flag.seen[-1])
        # Only the server from the environment: the token still comes from the file.
        expect(who(env_vars={"PREWARM_SERVER": env.url}) == "from-env", "env server")
        expect(env.seen[-1][1] == "Bearer file-token", "file token with the env server", env.seen[-1])
        # $PREWARM_CONFIG names another file; a missing one is an error.
        other = os.path.join(HOME, "other.json")
        with open(other, "w") as f:
            json.dump({"server": flag.url}, f)
        expect(who(env_vars={"PREWARM_CONFIG": other}) == "from-flag", "$PREWARM_CONFIG")
        expect(flag.seen[-1][1] is None, "no token: no Authorization header", flag.seen[-1])
        line = fails(1, "functions", "list", server=False, env={"PREWARM_CONFIG": other + ".missing"})
        expect("cannot read config file" in line, "missing $PREWARM_CONFIG", line)
        with open(default_cfg, "w") as f:
            f.write("{not json")
        line = fails(1, "hosts", "list", server=False)
        expect("not a JSON object" in line, "bad config file", line)
        # No file: the default server (nothing listens there in the test, or prewarmd's port).
        os.unlink(default_cfg)
        rc, out, err = run("functions", "list", "--timeout", "2", server=False)
        expect("cannot connect" not in err or "http://127.0.0.1:8080" in err, "default http://127.0.0.1:8080",
               (rc, err))
    finally:
        for f in (flag, env, filed):
            f.httpd.shutdown()


def raw_server(answer):
    """A one-connection-at-a-time TCP server that reads a request head and writes answer (bytes,
    or None to never answer), then closes. Returns (url, stop)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    done = threading.Event()

    def loop():
        while not done.is_set():
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if answer is None:
                    done.wait(5)
                else:
                    conn.sendall(answer)
    threading.Thread(target=loop, daemon=True).start()

    def stop():
        done.set()
        ls.close()
    return "http://127.0.0.1:%d" % ls.getsockname()[1], stop


def check_framing():
    body = json.dumps({"functions": [{"name": "chunky"}]}).encode()
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % 10 + body[:10] + b"\r\n"
               + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    to_close = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
    for answer in (chunked, to_close):
        url, stop = raw_server(answer)
        try:
            out = ok("functions", "list", "-o", "names", server=False, env={"PREWARM_SERVER": url})
            expect(out == "chunky\n", "framing %r" % answer[:40], out)
        finally:
            stop()
    url, stop = raw_server(b"SSH-2.0-OpenSSH\r\n\r\n")
    try:
        line = fails(1, "hosts", "list", server=False, env={"PREWARM_SERVER": url})
        expect("did not answer with HTTP" in line, "not HTTP", line)
    finally:
        stop()
    url, stop = raw_server(None)
    try:
        t = time.monotonic()
        line = fails(1, "--timeout", "0.5", "hosts", "list", server=False, env={"PREWARM_SERVER": url})
        expect("timed out after 500 ms" in line and time.monotonic() - t < 3, "timeout", line)
    finally:
        stop()


def main():
    checks = Checks("prewarmctl against a running cluster")
    if not os.access(CTL, os.X_OK):
        checks.fail("prewarmctl built", "not found: %s" % CTL)
        return checks.finish()
    agents = [Agent("a1", "2node", labels={"zone": "z1", "cloud": "c1"}),
              Agent("a2", "1node", labels={"zone": "z2", "cloud": "c1"})]
    model_dir = tempfile.mkdtemp(prefix="pw-cli-models-")
    with Cluster(agents=agents, heartbeat_ms=1000, sim_restore_ms=50, adopt_grace_ms=300, name="cli",
                 scheduler_args=["--model-dir", model_dir]) as c:
        S.c = c
        S.server = "http://127.0.0.1:%d" % c.http_port
        c.wait_adopt_grace()
        for name, fn in [("functions put with flags, then get (table, json)", check_put_flags),
                         ("functions put --file / stdin, flags over the file", check_put_file_and_stdin),
                         ("functions list (table, json, names)", check_list),
                         ("pool set then pool get (table, json); server errors", check_pool),
                         ("hosts list / get (table, json)", check_hosts),
                         ("hosts drain / undrain", check_drain),
                         ("forecast get: none yet, unknown, canned forecast", check_forecast),
                         ("top --once (table, json), no TTY, a TTY refreshing", check_top),
                         ("completion bash", check_completion),
                         ("--help on every command", check_help),
                         ("usage errors exit 2 with one line and a hint", check_usage_errors),
                         ("functions delete", check_delete),
                         ("model list / get / train / activate; refusals; kept across a restart",
                          check_models),
                         ("server down: exit 1, one line", check_server_down),
                         ("HTTP framing: chunked, to close; not HTTP; timeout", check_framing),
                         ("server and token: flags > env > config file > default", check_precedence)]:
            checks.check(name, fn)
        checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
