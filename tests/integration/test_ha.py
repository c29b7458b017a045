#!/usr/bin/env python3
"""test_ha.py — two prewarmd replicas against one PostgreSQL: leader election with fencing.

Real processes: a throwaway PostgreSQL, replicas a and b (each with its own HTTP and agent
port, leader timing renew 200 ms / lease 800 ms / takeover 1600 ms), and two sim agents that
dial both replicas (only the leader listens for agents).

Checked, with the recovery times printed:
 1. a leads (epoch E1); b follows: /livez 200, /readyz 503 naming a, the API 503 not_leader.
 2. a is SIGKILLed under traffic: b leads with a newer epoch, the agents follow it, the
    function written through a is there, pools back at target; time measured.
 3. a comes back as a follower. b is SIGSTOPped (its session, and so the lock, stay open):
    a ends b's silent session and leads; time measured; the agents follow a.
 4. b is resumed with SIGCONT: it changes nothing. A write sent to it at once is refused, it
    exits with status 3 ("no longer the leader"), nothing it was asked is in PostgreSQL, and
    the agents keep a's epoch.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (AGENT, FIXTURES, PREWARMD, SANITIZER_MARKERS, Checks, Postgres, Process,  # noqa: E402
                     expect, free_ports, log, wait_until)

import tempfile  # noqa: E402

TIMING = ["--leader-renew", "200ms", "--leader-lease", "800ms", "--leader-takeover", "1600ms"]


class S:
    pg = None
    tmp = None
    repl = {}      # name -> (Process, http port, agent port)
    agents = []
    recoveries = []


def http(name, method, path, body=None, timeout=5):
    port = S.repl[name][1]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        return 0, str(e)


def psql(sql):
    exe = "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(exe):
        exe = "psql"
    r = subprocess.run([exe, "-h", S.pg.dir, "-U", "postgres", "-d", "postgres", "-At", "-c", sql],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def start_replica(name):
    if name not in S.repl:
        hp, ap = free_ports(2)
        argv = [PREWARMD, "--http", "127.0.0.1:%d" % hp, "--agents", "tcp://127.0.0.1:%d" % ap,
                "--pg", S.pg.conninfo, "--replica-name", "sched-" + name, "--heartbeat-ms", "300",
                "--adopt-grace-ms", "600", "--model-dir", os.path.join(S.tmp, "models-" + name)] + TIMING
        S.repl[name] = (Process("prewarmd-" + name, argv, os.path.join(S.tmp, "prewarmd-%s.log" % name)), hp, ap)
    S.repl[name][0].start()
    wait_until(lambda: http(name, "GET", "/livez")[0] == 200, 15, "replica %s /livez" % name)


def ready(name):
    return http(name, "GET", "/readyz")[0] == 200


def start_agents():
    urls = ",".join("tcp://127.0.0.1:%d" % S.repl[n][2] for n in ("a", "b"))
    for aid in ("h1", "h2"):
        p = Process("agent-" + aid, [AGENT, "--id", aid, "--scheduler", urls, "--driver", "sim", "--topology-root",
                                     os.path.join(FIXTURES, "2node"), "--sim-restore-ms", "30", "--log-level",
                                     "info"], os.path.join(S.tmp, "agent-%s.log" % aid))
        p.start()
        S.agents.append(p)


def hosts_alive(name):
    st, body = http(name, "GET", "/v1/hosts")
    if st != 200:
        return set()
    return {h["id"] for h in body.get("hosts", []) if h.get("state") == "alive"}


def pool_ok(name, fn, want):
    st, p = http(name, "GET", "/v1/functions/%s/pool" % fn)
    return st == 200 and p.get("idle", 0) + p.get("leased", 0) >= want


class Traffic:
    """acquire -> release against whichever replica leads, counting outcomes."""

    def __init__(self):
        self.stop = False
        self.ok = 0
        self.refused = 0
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop:
            for name in list(S.repl):
                st, lease = http(name, "POST", "/v1/functions/f/acquire", {"timeout_ms": 1000}, timeout=3)
                if st == 200:
                    http(name, "POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 1})
                    self.ok += 1
                    break
                self.refused += 1
            time.sleep(0.02)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *a):
        self.stop = True
        self.t.join(10)


def check_one_leader():
    wait_until(lambda: ready("a"), 15, "a elected")
    start_replica("b")
    time.sleep(1.0)
    st, body = http("b", "GET", "/readyz")
    expect(st == 503 and body["leader"] is False and body["current_leader"] == "sched-a", "b follows a", body)
    st, body = http("b", "GET", "/v1/functions")
    expect(st == 503 and body["error"]["code"] == "not_leader" and "sched-a" in body["error"]["message"],
           "b refuses the API", body)
    st, body = http("a", "GET", "/readyz")
    expect(st == 200 and body["leader"] is True and body["epoch"] >= 1, "a leads", body)
    S.e1 = body["epoch"]
    start_agents()
    wait_until(lambda: hosts_alive("a") == {"h1", "h2"}, 15, "agents on a")
    st, body = http("a", "PUT", "/v1/functions/f", {"image": "i", "pool": {"policy": "fixed", "min": 3, "max": 8}})
    expect(st == 200, "PUT f through a", body)
    wait_until(lambda: pool_ok("a", "f", 3), 10, "f at target on a")


def check_kill_leader():
    with Traffic() as tr:
        time.sleep(0.5)
        t0 = time.monotonic()
        S.repl["a"][0].kill(signal.SIGKILL)
        wait_until(lambda: ready("b"), 15, "b elected")
        t_ready = time.monotonic() - t0
        wait_until(lambda: hosts_alive("b") == {"h1", "h2"}, 15, "agents on b")
        t_agents = time.monotonic() - t0
        wait_until(lambda: pool_ok("b", "f", 3), 15, "f at target on b")
        t_pool = time.monotonic() - t0
        time.sleep(0.5)
    st, body = http("b", "GET", "/readyz")
    expect(body["epoch"] > S.e1, "a newer epoch", body)
    S.e2 = body["epoch"]
    st, f = http("b", "GET", "/v1/functions/f")
    expect(st == 200 and f["pool"]["min"] == 3, "the function written through a is there", f)
    expect(tr.ok > 0, "traffic served", tr.ok)
    line = ("recovery: leader SIGKILL -> follower ready %.2f s, agents on it %.2f s, pools at target %.2f s "
            "(bound 10 s); traffic %d ok, %d refused meanwhile" % (t_ready, t_agents, t_pool, tr.ok, tr.refused))
    log(line)
    S.recoveries.append(line)
    expect(t_pool < 10, "recovered within 10 s", t_pool)


def check_stop_leader():
    start_replica("a")
    time.sleep(0.8)
    st, body = http("a", "GET", "/readyz")
    expect(st == 503 and body["current_leader"] == "sched-b", "a back as a follower", body)
    t0 = time.monotonic()
    S.repl["b"][0].send_signal(signal.SIGSTOP)
    S.stopped_at = t0
    wait_until(lambda: ready("a"), 20, "a takes over from the stopped b")
    t_ready = time.monotonic() - t0
    wait_until(lambda: hosts_alive("a") == {"h1", "h2"}, 15, "agents on a")
    t_agents = time.monotonic() - t0
    st, body = http("a", "GET", "/readyz")
    expect(body["epoch"] > S.e2, "a newer epoch again", body)
    S.e3 = body["epoch"]
    st, body = http("a", "PUT", "/v1/functions/f/pool", {"min": 4})
    expect(st == 200, "a writes", body)
    wait_until(lambda: pool_ok("a", "f", 4), 10, "f at its new target on a")
    t_pool = time.monotonic() - t0
    line = ("recovery: leader SIGSTOP -> follower ends its session and is ready %.2f s, agents on it %.2f s, "
            "pools at target %.2f s (takeover 1.6 s; bound 10 s)" % (t_ready, t_agents, t_pool))
    log(line)
    S.recoveries.append(line)
    expect(t_ready < 10, "taken over within 10 s", t_ready)


def check_stale_leader():
    proc = S.repl["b"][0]
    # Queue requests that reach b the moment it runs again.
    results = {}

    def put():
        results["put"] = http("b", "PUT", "/v1/functions/stale", {"image": "x", "pool": {"policy": "fixed", "min": 1}},
                              timeout=10)

    def drain():
        results["drain"] = http("b", "POST", "/v1/hosts/h1/drain", timeout=10)
    ts = [threading.Thread(target=put), threading.Thread(target=drain)]
    for t in ts:
        t.start()
    time.sleep(0.3)
    proc.send_signal(signal.SIGCONT)
    for t in ts:
        t.join(15)
    expect(results["put"][0] != 200 and results["drain"][0] != 200, "the stale leader's writes are refused",
           results)
    code = proc.wait(10)
    expect(code == 3, "the stale leader exits with status 3", code)
    expect("no longer the leader" in proc.log_text(), "and says why", proc.tail(5))
    expect(psql("SELECT count(*) FROM functions WHERE name = 'stale'") == "0", "nothing written by the stale leader")
    expect(psql("SELECT count(*) FROM hosts WHERE draining") == "0", "no drain written by the stale leader")
    expect(psql("SELECT epoch FROM pw_leader") == str(S.e3), "pw_leader keeps a's epoch")
    st, f = http("a", "GET", "/v1/functions/f/pool")
    expect(st == 200 and f["min"] == 4, "a's config stands", f)
    time.sleep(1.0)
    for p in S.agents:
        text = p.log_text()
        expect("scheduler epoch %d -> %d" % (S.e2, S.e3) in text or "-> %d" % S.e3 in text,
               "%s follows epoch %d" % (p.name, S.e3), p.tail(8))
        after = text[text.rfind("-> %d" % S.e3):]
        expect("-> %d" % S.e2 not in after, "%s never goes back to the stale epoch" % p.name)
    expect(hosts_alive("a") == {"h1", "h2"} and pool_ok("a", "f", 4), "a still serves")


def main():
    checks = Checks("HA: two prewarmd replicas, leader election with fencing")
    S.tmp = tempfile.mkdtemp(prefix="pw-ha-")
    S.pg = Postgres()
    S.pg.start()
    log("harness: logs in %s" % S.tmp)
    try:
        start_replica("a")
        for name, fn in [("one leader; the follower is alive, not ready, refuses the API", check_one_leader),
                         ("leader SIGKILL: the follower takes over, agents follow", check_kill_leader),
                         ("leader SIGSTOP: its silent session is ended, the follower leads", check_stop_leader),
                         ("the stale leader resumed with SIGCONT changes nothing", check_stale_leader)]:
            if not checks.check(name, fn):
                break
        for name, (p, _, _) in S.repl.items():
            for m in SANITIZER_MARKERS:
                expect(m not in p.log_text(), "no sanitizer report from %s" % name)
    finally:
        for p in S.agents:
            p.stop()
        for p, _, _ in S.repl.values():
            if p.running():
                p.send_signal(signal.SIGCONT)
                p.stop()
        S.pg.stop()
        if not checks.ok:
            print("logs kept in %s" % S.tmp)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
