#!/usr/bin/env python3
"""test_metrics.py — the /metrics endpoints of prewarmd and of an agent, checked by Prometheus'
own tools and by a real Prometheus server.

Real PostgreSQL, a real prewarmd (PREWARM_METRICS_TOP_FUNCTIONS=2) and one sim agent with
--metrics-listen. Checks ((c) runs first, so the others see non-empty counters and histograms):
 (a) `promtool check metrics` finds no problem in either exposition
 (b) every histogram's buckets are cumulative, end with le="+Inf", and _count equals that bucket
 (c) acquires and releases move the acquire counters and the histograms; pools beyond the top 2
     are summed as function="other"; agent VMs by state and restores are counted
 (d) a real Prometheus scrapes both every second; its HTTP API returns the acquire counter by
     result and a histogram_quantile over prewarm_acquire_duration_seconds_bucket
 (e) deploy/prometheus/alerts.yml passes `promtool check rules`
 (f) deploy/grafana/prewarm-dashboard.json parses and every expression names scraped metrics
 (g) docs/metrics.md documents exactly the metrics the two endpoints expose
prometheus and promtool come from scripts/install-deps.sh (Debian package `prometheus`); the test
fails when they are missing. Prints one line per check and "N passed, M failed" last.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (REPO, Agent, Checks, Cluster, HarnessError, Process, expect,  # noqa: E402
                     free_port, log, wait_until)

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ALERTS = os.path.join(REPO, "deploy", "prometheus", "alerts.yml")
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "prewarm-dashboard.json")
DOCS = os.path.join(REPO, "docs", "metrics.md")
TOP_N = 2
FUNCTIONS = ["m1", "m2", "m3", "m4"]

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


# ---- exposition parsing ----------------------------------------------------------------------
def parse(text):
    """Returns (families {name: {"type", "help"}}, samples [(name, {labels}, value)])."""
    fams, samples = {}, []
    for ln in text.splitlines():
        if not ln:
            continue
        if ln.startswith("# HELP ") or ln.startswith("# TYPE "):
            parts = ln.split(" ", 3)
            fam = fams.setdefault(parts[2], {})
            fam["help" if parts[1] == "HELP" else "type"] = parts[3] if len(parts) > 3 else ""
            continue
        if ln.startswith("#"):
            continue
        m = SAMPLE_RE.match(ln)
        if m is None:
            raise HarnessError("unparsable sample line: %r" % ln)
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, float(m.group(3))))
    return fams, samples


def family_of(name, fams):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and fams.get(name[:-len(suffix)], {}).get("type") == "histogram":
            return name[:-len(suffix)]
    return name


def value(samples, name, **labels):
    for n, ls, v in samples:
        if n == name and all(ls.get(k) == val for k, val in labels.items()):
            return v
    return None


def fetch(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
        ctype = r.headers.get("Content-Type", "")
        return r.status, ctype, r.read().decode("utf-8")


class State:
    agent_port = None
    texts = {}   # endpoint name -> last exposition text
    prom = None  # the Prometheus Process
    prom_port = None
    prom_dir = None


def scrape_both(c):
    st, ctype, sched = fetch(c.http_port)
    expect(st == 200 and ctype.startswith("text/plain; version=0.0.4"), "prewarmd /metrics answers",
           (st, ctype))
    st, ctype, agent = fetch(State.agent_port)
    expect(st == 200 and ctype.startswith("text/plain; version=0.0.4"), "agent /metrics answers",
           (st, ctype))
    State.texts = {"prewarmd": sched, "agent": agent}
    return State.texts


# ---- (a) ------------------------------------------------------------------------------------
def check_promtool(c):
    texts = scrape_both(c)
    sizes = []
    for name, text in texts.items():
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                           timeout=30)
        out = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
        expect(p.returncode == 0 and out == "", "promtool check metrics is clean on %s" % name,
               "exit %d: %s" % (p.returncode, out))
        sizes.append("%s %d bytes" % (name, len(text)))
    return ", ".join(sizes)


# ---- (b) ------------------------------------------------------------------------------------
def check_histograms(text, where):
    fams, samples = parse(text)
    hists = [n for n, f in fams.items() if f.get("type") == "histogram"]
    expect(hists, "%s exposes histograms" % where, sorted(fams))
    checked = 0
    for h in hists:
        series = {}
        for n, ls, v in samples:
            if n in (h + "_bucket", h + "_sum", h + "_count"):
                key = tuple(sorted((k, x) for k, x in ls.items() if k != "le"))
                series.setdefault(key, {"buckets": [], "sum": None, "count": None})
                if n.endswith("_bucket"):
                    series[key]["buckets"].append((ls.get("le"), v))
                elif n.endswith("_sum"):
                    series[key]["sum"] = v
                else:
                    series[key]["count"] = v
        expect(series, "histogram %s has series" % h)
        for key, s in series.items():
            b = s["buckets"]
            expect(b and b[-1][0] == "+Inf", "%s%s ends with le=+Inf" % (h, key), b[-3:])
            les = [float(le) for le, _ in b]
            expect(all(les[i] < les[i + 1] for i in range(len(les) - 1)),
                   "%s%s bucket bounds increase" % (h, key), les)
            counts = [v for _, v in b]
            expect(all(counts[i] <= counts[i + 1] for i in range(len(counts) - 1)),
                   "%s%s buckets are cumulative" % (h, key), counts)
            expect(s["count"] == counts[-1], "%s%s _count equals the +Inf bucket" % (h, key),
                   (s["count"], counts[-1]))
            expect(s["sum"] is not None and s["sum"] >= 0, "%s%s has a _sum" % (h, key), s["sum"])
            checked += 1
    return checked


def check_cumulative(c):
    texts = scrape_both(c)
    n = sum(check_histograms(t, name) for name, t in texts.items())
    return "%d histogram series" % n


# ---- (c) ------------------------------------------------------------------------------------
def acquire(c, fn):
    st, body = c.http("POST", "/v1/functions/%s/acquire" % fn, {"timeout_ms": 5000})
    expect(st == 200, "acquire %s" % fn, (st, body))
    return body


def release(c, lease):
    st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"],
                      {"duration_ms": 20, "outcome": "ok"})
    expect(st == 200, "release", (st, body))


def check_drive(c):
    for i, fn in enumerate(FUNCTIONS):
        body = {"image": "img-" + fn, "memory_mb": 128, "vcpus": 1,
                "pool": {"policy": "fixed", "min": 1 if i < 3 else 0, "max": 4, "keepalive_ms": 60000}}
        st, out = c.http("PUT", "/v1/functions/" + fn, body)
        expect(st == 200, "PUT function %s" % fn, (st, out))
    c.wait_adopt_grace()
    wait_until(lambda: all(c.pool(fn)["idle"] >= 1 for fn in FUNCTIONS[:3]), 15, "pools m1..m3 have an idle VM")
    warm = 0
    # m1 busiest, m2 next: they are the top 2; m3 and m4 go to "other".
    for fn, n in (("m1", 4), ("m2", 2), ("m3", 1)):
        for _ in range(n):
            lease = acquire(c, fn)
            warm += lease["start"] == "warm"
            release(c, lease)
            wait_until(lambda: c.pool(fn)["idle"] >= 1, 10, "pool %s idle again" % fn)
    cold = acquire(c, "m4")  # min 0: waits for a restore
    expect(cold["start"] == "cold", "acquire on an empty pool is cold", cold)
    release(c, cold)
    wait_until(lambda: all(c.pool(fn)["restoring"] == 0 for fn in FUNCTIONS), 10, "no restore in flight")

    texts = scrape_both(c)
    fams, s = parse(texts["prewarmd"])
    expect(value(s, "prewarm_acquires_total", result="warm") == warm, "warm acquires counted",
           value(s, "prewarm_acquires_total", result="warm"))
    expect(value(s, "prewarm_acquires_total", result="cold") == 1, "cold acquire counted",
           value(s, "prewarm_acquires_total", result="cold"))
    expect(value(s, "prewarm_acquire_duration_seconds_count", result="warm") == warm,
           "warm acquires observed in the histogram")
    expect(value(s, "prewarm_acquire_duration_seconds_count", result="cold") == 1,
           "cold acquire observed in the histogram")
    expect(value(s, "prewarm_cold_starts_total", reason="no_idle_vm") >= 1, "cold start by reason")
    expect(value(s, "prewarm_restore_duration_seconds_count") >= 4, "restores observed",
           value(s, "prewarm_restore_duration_seconds_count"))
    expect(value(s, "prewarm_placement_duration_seconds_count") >= 1, "placements timed",
           value(s, "prewarm_placement_duration_seconds_count"))
    pools = sorted(ls["function"] for n, ls, _ in s if n == "prewarm_pool_size")
    expect(pools == ["m1", "m2", "other"], "top %d pools plus other" % TOP_N, pools)
    other = value(s, "prewarm_pool_size", function="other")
    want = sum(c.pool(fn)["idle"] + c.pool(fn)["leased"] + c.pool(fn)["restoring"] for fn in ("m3", "m4"))
    expect(other == want, "other sums the rest", (other, want))
    expect(value(s, "prewarm_agents", state="alive") == 1, "one agent alive")
    expect(value(s, "prewarm_agent_up", agent="ma") == 1, "agent ma up")
    expect(value(s, "prewarm_build_info") == 1, "build info")
    expect(value(s, "prewarm_model_info") == 1, "model info")

    fams, a = parse(texts["agent"])
    info = [ls for n, ls, _ in a if n == "prewarm_agent_info"]
    expect(len(info) == 1 and info[0].get("driver") == "sim" and info[0].get("agent") == "ma",
           "agent info labels", info)
    running = value(a, "prewarm_agent_vms", state="running")
    want_vms = len(c.vms(host="ma"))
    expect(running is not None and running + value(a, "prewarm_agent_vms", state="restoring")
           + value(a, "prewarm_agent_vms", state="stopping") >= 1, "agent VMs by state", running)
    expect(value(a, "prewarm_agent_restores_total") >= 4, "agent restores counted")
    expect(value(a, "prewarm_agent_restore_duration_seconds_count")
           == value(a, "prewarm_agent_restores_total"), "agent restore histogram")
    expect(value(a, "prewarm_agent_requests_total", kind="report") >= 1, "reports sent")
    expect(value(a, "prewarm_agent_scheduler_connected") == 1, "agent linked to the scheduler")
    return "%d warm, 1 cold; agent: %d running of %d VMs the scheduler sees" % (warm, running, want_vms)


# ---- (d) ------------------------------------------------------------------------------------
def prom_query(q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (State.prom_port, urllib.parse.urlencode({"query": q}))
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read().decode())
    if body.get("status") != "success":
        raise HarnessError("query %s: %s" % (q, body))
    return body["data"]["result"]


def start_prometheus(c):
    expect(os.access(PROMETHEUS, os.X_OK), "prometheus is installed (scripts/install-deps.sh)", PROMETHEUS)
    State.prom_dir = tempfile.mkdtemp(prefix="pw-prom-")
    State.prom_port = free_port()
    cfg = os.path.join(State.prom_dir, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                "rule_files:\n  - %s\n"
                "scrape_configs:\n"
                "  - job_name: prewarmd\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                "  - job_name: prewarm-agent\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n"
                % (ALERTS, c.http_port, State.agent_port))
    State.prom = Process("prometheus", [PROMETHEUS, "--config.file=" + cfg,
                                        "--storage.tsdb.path=" + os.path.join(State.prom_dir, "data"),
                                        "--web.listen-address=127.0.0.1:%d" % State.prom_port,
                                        "--log.level=warn"],
                         os.path.join(c.tmp, "prometheus.log"))
    State.prom.start()

    def ready():
        if not State.prom.running():
            raise HarnessError("prometheus exited: %s" % "\n".join(State.prom.tail(10)))
        with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % State.prom_port, timeout=2) as r:
            return r.status == 200
    wait_until(ready, 30, "prometheus /-/ready", interval=0.2)


def stop_prometheus():
    if State.prom is not None:
        State.prom.stop(grace=10)
        State.prom = None
    if State.prom_dir is not None:
        shutil.rmtree(State.prom_dir, ignore_errors=True)
        State.prom_dir = None


def check_prometheus(c):
    start_prometheus(c)
    # More traffic while Prometheus watches.
    for _ in range(3):
        release(c, acquire(c, "m1"))
        time.sleep(0.3)

    def targets_up():
        r = prom_query("up")
        ups = {x["metric"]["job"]: x["value"][1] for x in r}
        return ups.get("prewarmd") == "1" and ups.get("prewarm-agent") == "1", ups
    wait_until(targets_up, 20, "both targets up in Prometheus", interval=0.5)

    def counter():
        r = prom_query('prewarm_acquires_total')
        by = {x["metric"].get("result"): float(x["value"][1]) for x in r}
        return by.get("warm", 0) >= 3 and set(by) == {"warm", "cold", "timeout"}, by
    by = wait_until(counter, 20, "prewarm_acquires_total by result in Prometheus", interval=0.5)

    q = 'histogram_quantile(0.99, sum by (le) (prewarm_acquire_duration_seconds_bucket))'

    def quantile():
        r = prom_query(q)
        if len(r) != 1:
            return False, r
        v = float(r[0]["value"][1])
        return not math.isnan(v) and 0 <= v <= 60, v
    p99 = wait_until(quantile, 20, q, interval=0.5)

    def agent_hist():
        r = prom_query('sum(prewarm_agent_restore_duration_seconds_count{job="prewarm-agent"})')
        return len(r) == 1 and float(r[0]["value"][1]) >= 1, r
    wait_until(agent_hist, 20, "agent restore histogram in Prometheus", interval=0.5)

    def rules_loaded():
        with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/rules" % State.prom_port, timeout=5) as r:
            body = json.loads(r.read().decode())
        n = sum(len(g.get("rules", [])) for g in body["data"]["groups"])
        return n > 0, n
    nrules = wait_until(rules_loaded, 10, "alert rules loaded", interval=0.5)
    stop_prometheus()
    return "acquires %s, acquire p99 %.4f s, %d rules loaded" % (
        {k: int(v) for k, v in sorted(by.items())}, p99, nrules)


# ---- (e) ------------------------------------------------------------------------------------
def check_rules():
    p = subprocess.run([PROMTOOL, "check", "rules", ALERTS], capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    expect(p.returncode == 0, "promtool check rules %s" % ALERTS, out)
    with open(ALERTS) as f:
        text = f.read()
    for alert in ("PrewarmAgentDown", "PrewarmColdStartRateHigh", "PrewarmStoreErrors",
                  "PrewarmForecastErrorHigh"):
        expect("alert: %s" % alert in text, "alert %s is defined" % alert)
    names = set(re.findall(r'\bprewarm_[a-z0-9_]+', text))
    known = known_families()
    missing = sorted(n for n in names if n not in known)
    expect(not missing, "alert expressions name exposed metrics", missing)
    return out.strip().splitlines()[-1].strip()


def known_families():
    known = set()
    for text in State.texts.values():
        fams, samples = parse(text)
        known |= set(fams)
        known |= {n for n, _, _ in samples}
    return known


# ---- (f) ------------------------------------------------------------------------------------
def check_dashboard():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    expect(isinstance(dash.get("panels"), list) and dash["panels"], "dashboard has panels")
    expect(dash.get("title") and dash.get("uid") and isinstance(dash.get("schemaVersion"), int),
           "dashboard has title, uid, schemaVersion")
    known = known_families()
    exprs = 0
    ids = set()
    for p in dash["panels"]:
        expect(p.get("id") not in ids, "panel ids are unique", p.get("id"))
        ids.add(p.get("id"))
        for t in p.get("targets", []):
            e = t.get("expr", "")
            exprs += 1
            names = re.findall(r'\bprewarm_[a-z0-9_]+', e)
            expect(names, "panel %r expression names a prewarm metric" % p.get("title"), e)
            missing = [n for n in names if n not in known]
            expect(not missing, "panel %r names only exposed metrics" % p.get("title"), missing)
    return "%d panels, %d expressions" % (len(dash["panels"]), exprs)


# ---- (g) ------------------------------------------------------------------------------------
def check_docs():
    with open(DOCS) as f:
        text = f.read()
    documented = set(re.findall(r'^\| `(prewarm_[a-z0-9_]+)` \|', text, re.M))
    exposed = set()
    for t in State.texts.values():
        fams, _ = parse(t)
        exposed |= set(fams)
    expect(not (exposed - documented), "every exposed metric is documented", sorted(exposed - documented))
    expect(not (documented - exposed), "every documented metric is exposed", sorted(documented - exposed))
    return "%d metrics" % len(exposed)


def main():
    for tool in (PROMETHEUS, PROMTOOL):
        if not os.access(tool, os.X_OK):
            log("FAIL %s is missing: run scripts/install-deps.sh (Debian package prometheus)" % tool)
            log("0 passed, 1 failed")
            return 1
    os.environ["PREWARM_METRICS_TOP_FUNCTIONS"] = str(TOP_N)
    State.agent_port = free_port()
    checks = Checks("metrics: promtool, cumulative histograms, a real Prometheus, rules, dashboard, docs")
    agents = [Agent("ma", "2node", extra_args=["--metrics-listen", "127.0.0.1:%d" % State.agent_port])]
    try:
        with Cluster(agents=agents, heartbeat_ms=500, sim_restore_ms=100, name="metrics") as c:
            checks.check("(c) acquires, pools (top-N + other) and agent VMs show in the metrics",
                         check_drive, c)
            checks.check("(a) promtool check metrics is clean on both endpoints", check_promtool, c)
            checks.check("(b) histogram buckets are cumulative; _count equals +Inf", check_cumulative, c)
            checks.check("(d) a real Prometheus scrapes both and answers queries", check_prometheus, c)
            checks.check("(e) alert rules pass promtool check rules", check_rules)
            checks.check("(f) the Grafana dashboard names only exposed metrics", check_dashboard)
            checks.check("(g) docs/metrics.md matches the exposition", check_docs)
            checks.done_with(c)
    finally:
        stop_prometheus()
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
