#!/usr/bin/env python3
"""test_faults.py — faults injected into a real cluster under traffic, invariants checked after.

Real PostgreSQL, a real prewarmd and three real prewarm-agent processes (sim driver, 2node
fixtures, heartbeat 500 ms, so an agent silent for 1.5 s is dead). Two fixed pools (f1 min 3,
f2 min 2) and an operator drain on a3, so the pools live on a1 and a2. During every fault a
background thread runs acquire -> short hold -> release against the HTTP API and counts the
outcomes (warm, cold, errors, timeouts).

Faults, each followed by the shared invariants (check_invariants):
 (1) agent SIGKILL: dead, its VMs replaced elsewhere; then restarted: alive, pools at target
 (2) agent SIGSTOP past the dead timeout, then SIGCONT: dead, VMs replaced elsewhere; back, its
     stale VMs adopted (docs/core.md: the agent's hello inventory is the truth) or destroyed,
     nothing double-counted, the surplus trimmed back to min by keep-alive
 (2b) a lease held on the stopped agent's VM ended with its death (release -> 404) and must not
     be resurrected by the agent's hello after SIGCONT
 (3) prewarmd SIGKILL mid-traffic and restart: config from PostgreSQL, the same VM ids adopted
     from the agents, traffic resumes
 (4) PostgreSQL down 30 s under traffic: acquires keep being served, /readyz 503, a config
     write is refused with 503 store_unavailable and changes nothing, telemetry is buffered
     within its bound (--telemetry-max-rows) and flushed after, prewarmd does not crash
 (5) the network partition is in test_partition.py (network namespaces)
 (6) duplicated, reordered and truncated agent messages, from a fake agent speaking NNG's SP
     protocol over raw TCP (req0 -> rep0): prewarmd stays up, counts the malformed ones,
     applies each event once and keeps its view consistent

Invariants (check_invariants), each from a real source:
 - scheduler view == agents' view: GET /v1/vms against each agent's own account of its VMs,
   rebuilt from the agent's log (every "cmd N: prewarm vm ID", "cmd N: destroy vm ID" and
   "event N: vm ID running|gone|failed" line since its last start) and cross-checked with the
   VM count the agent exposes on its own /metrics (--metrics-listen, prewarm_agent_vms)
 - no lease on a dead VM: every leased VM is on an alive host and running in that agent's view
 - no operator config lost: functions, pools, placement and drains read back as PUT before
 - pools back to target (idle + restoring >= min) within a stated bound
Each fault prints "recovery: ..." lines with the times it measured.
Prints one line per check and "N passed, M failed" last; exits non-zero on any failure.
"""

import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Agent, Checks, Cluster, HarnessError, expect, free_ports, is_error_body,  # noqa: E402
                     log, wait_until)

HEARTBEAT_MS = 500
DEAD_S = 3 * HEARTBEAT_MS / 1000.0       # dead_after_beats (3) heartbeats
RESTORE_MS = 100
KEEPALIVE_MS = 1000
LEASE_TTL_MS = 20000
TELEMETRY_MAX_ROWS = 100                 # the smallest bound prewarmd accepts
PG_OUTAGE_S = 30.0                        # the issue asks for 30 s

F1, F2 = "f1", "f2"
FUNCTIONS = {
    F1: {"image": "img-f1", "memory_mb": 128, "vcpus": 1,
         "pool": {"policy": "fixed", "min": 3, "max": 12, "keepalive_ms": KEEPALIVE_MS},
         "placement": {"max_host_share": 1}},
    F2: {"image": "img-f2", "memory_mb": 256, "vcpus": 1,
         "pool": {"policy": "fixed", "min": 2, "max": 8, "keepalive_ms": KEEPALIVE_MS}},
}
DRAINED = "a3"   # drained by the operator before the faults; the drain must survive them

# Recovery bounds (seconds), stated in the output next to what was measured.
BOUND_DEAD = DEAD_S + 1.5                 # silent agent declared dead
BOUND_REPLACED = DEAD_S + 4.0             # its VMs replaced elsewhere, pools at target
BOUND_REJOIN = 5.0                        # a restarted / resumed agent alive again
BOUND_TARGET = 5.0                        # pools at target and views agreeing after a rejoin
BOUND_SCHED_READY = 10.0                  # prewarmd restart -> /readyz 200
BOUND_SCHED_TARGET = 10.0                 # prewarmd restart -> VMs adopted, pools at target
BOUND_PG = 10.0                           # PostgreSQL back -> /readyz 200 and telemetry flushed


def metrics_listen_args():
    return ["--metrics-listen", "127.0.0.1:%d" % free_ports(1)[0], "--vcpu-overcommit", "4"]


def make_agents():
    return [Agent(i, "2node", {"zone": z}, extra_args=metrics_listen_args())
            for i, z in (("a1", "z1"), ("a2", "z2"), ("a3", "z3"))]


# ---- the agents' own view ---------------------------------------------------------------------
def agent_log_view(agent):
    """{vm_id as 16 hex digits: state} of the VMs the agent holds, from its own log lines since
    its last start (the harness marks each start). States: restoring, running, stopping."""
    text = agent.process.log_text() if agent.process else ""
    cut = text.rfind("\n=== harness: start #")
    view = {}
    for line in text[cut + 1 if cut >= 0 else 0:].splitlines():
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue  # a line being written right now
        w = msg.split()
        try:
            if len(w) >= 5 and w[0] == "cmd" and w[2] == "prewarm" and w[3] == "vm":
                view["%016x" % int(w[4])] = "restoring"
            elif len(w) >= 5 and w[0] == "cmd" and w[2] == "destroy" and w[3] == "vm":
                k = "%016x" % int(w[4])
                if k in view:
                    view[k] = "stopping"
            elif len(w) >= 5 and w[0] == "event" and w[2] == "vm":
                k = "%016x" % int(w[3])
                st = w[4].rstrip(":")
                if st == "running" and k in view and view[k] == "restoring":
                    view[k] = "running"
                elif st in ("gone", "failed"):
                    view.pop(k, None)
        except ValueError:
            continue
    return view


def agent_log_destroyed(agent):
    """vm ids (hex) the agent was told to destroy since its last start."""
    text = agent.process.log_text() if agent.process else ""
    cut = text.rfind("\n=== harness: start #")
    out = set()
    for line in text[cut + 1 if cut >= 0 else 0:].splitlines():
        try:
            w = json.loads(line).get("msg", "").split()
        except ValueError:
            continue
        if len(w) >= 5 and w[0] == "cmd" and w[2] == "destroy" and w[3] == "vm":
            out.add("%016x" % int(w[4]))
    return out


def agent_metrics_port(agent):
    for i, a in enumerate(agent.extra_args):
        if a == "--metrics-listen":
            host, _, port = agent.extra_args[i + 1].rpartition(":")
            return host, int(port)
    return None


def agent_metrics_vms(agent, timeout=1.0):
    """{state: count} from the agent's own /metrics (prewarm_agent_vms), or None."""
    hp = agent_metrics_port(agent)
    if hp is None:
        return None
    conn = http.client.HTTPConnection(hp[0], hp[1], timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith('prewarm_agent_vms{state="'):
            st = line.split('"')[1]
            out[st] = int(float(line.split()[-1]))
    return out


def scheduler_metrics(c):
    """Unlabelled samples and labelled ones (name{labels}) of prewarmd's /metrics -> float."""
    st, text = c.http("GET", "/metrics")
    if st != 200 or not isinstance(text, str):
        raise HarnessError("GET /metrics -> %s" % st)
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


# ---- invariants ---------------------------------------------------------------------------------
def views_agree(c, away=(), extra_views=None):
    """(ok, observed): the scheduler's VMs per host equal each agent's own view.

    away: agents not reachable right now (stopped, partitioned): not compared, and ignored
    unless the scheduler still lists VMs on them as alive. Agents whose process is dead must
    hold nothing in the scheduler's view. extra_views: {host: {vm_id: state}} for hosts that
    are not harness agents (the fake agent)."""
    vms = c.vms()
    hosts = c.hosts()
    ids = [v["vm_id"] for v in vms]
    problems = []
    if len(ids) != len(set(ids)):
        problems.append("duplicate vm ids in /v1/vms")
    sched = {}
    for v in vms:
        sched.setdefault(v["host"], {})[v["vm_id"]] = v["state"]
    views = {}
    for aid, a in c.agents.items():
        if aid in away:
            continue
        if a.process is None or not a.process.running():
            if sched.get(aid):
                problems.append("%s is down but the scheduler lists %s on it" % (aid, sorted(sched[aid])))
            continue
        views[aid] = agent_log_view(a)
        m = agent_metrics_vms(a)
        if m is not None and sum(m.values()) != len(views[aid]):
            problems.append("%s: its /metrics counts %s VMs, its log %d" % (aid, m, len(views[aid])))
    views.update(extra_views or {})
    for h in sorted(set(sched) | set(views)):
        if h in away:
            continue
        s, a = sched.get(h, {}), views.get(h)
        if a is None:
            problems.append("VMs on unknown host %s: %s" % (h, sorted(s)))
            continue
        if set(s) != set(a):
            problems.append("%s: scheduler only %s, agent only %s" % (h, sorted(set(s) - set(a)),
                                                                    sorted(set(a) - set(s))))
        for vid, st in s.items():
            if st in ("idle", "leased") and a.get(vid) not in (None, "running"):
                problems.append("%s: %s is %s in the scheduler, %s on the agent" % (h, vid, st, a.get(vid)))
        if s and hosts.get(h, {}).get("state") != "alive":
            problems.append("%s is %s but holds %d VMs" % (h, hosts.get(h, {}).get("state"), len(s)))
    return not problems, {"problems": problems,
                          "scheduler": {h: len(v) for h, v in sched.items()},
                          "agents": {h: len(v) for h, v in views.items()}}


def leases_on_live_vms(c, extra_views=None):
    """(ok, observed): every leased VM is on an alive host and running in that agent's view."""
    hosts = c.hosts()
    problems = []
    for v in c.vms():
        if v.get("state") != "leased" and not v.get("lease_id"):
            continue
        h = v.get("host")
        if hosts.get(h, {}).get("state") != "alive":
            problems.append("lease %s on %s: host %s is %s" % (v.get("lease_id"), v["vm_id"], h,
                                                               hosts.get(h, {}).get("state")))
            continue
        a = c.agents.get(h)
        view = (extra_views or {}).get(h) if a is None else (agent_log_view(a) if a.process.running() else {})
        if (view or {}).get(v["vm_id"]) != "running":
            problems.append("lease %s on %s: the agent %s has it as %s" % (v.get("lease_id"), v["vm_id"], h,
                                                                           (view or {}).get(v["vm_id"])))
    return not problems, problems


def config_of(fn_obj):
    p = fn_obj.get("pool") or {}
    return {"image": fn_obj.get("image"), "memory_mb": fn_obj.get("memory_mb"), "vcpus": fn_obj.get("vcpus"),
            "pool": {k: p.get(k) for k in ("policy", "min", "max", "keepalive_ms")},
            "placement": fn_obj.get("placement")}


def config_snapshot(c):
    return {"functions": {fn: config_of(c.get_json("/v1/functions/" + fn)) for fn in FUNCTIONS},
            "drains": {h: v.get("draining") for h, v in sorted(c.hosts().items()) if h in c.agents}}


def pools_at_target(c, fns=None):
    """(ok, observed): idle + restoring >= the operator's min for every pool."""
    fns = tuple(FUNCTIONS) if fns is None else fns
    seen = {}
    ok = True
    for fn in fns:
        p = c.pool(fn)
        want = FUNCTIONS[fn]["pool"]["min"]
        seen[fn] = "%d+%d/%d" % (p.get("idle", 0), p.get("restoring", 0), want)
        ok = ok and p.get("idle", 0) + p.get("restoring", 0) >= want
    return ok, seen


def recovered(c, away=(), extra_views=None):
    ok1, pools = pools_at_target(c)
    ok2, views = views_agree(c, away, extra_views)
    return ok1 and ok2, {"pools": pools, "views": views}


def measure(pred, bound, what, t0=None):
    """Wait (bounded) for pred; return the seconds since t0 (default: now)."""
    t0 = time.monotonic() if t0 is None else t0
    wait_until(pred, max(0.1, bound - (time.monotonic() - t0)), "%s (bound %.1f s)" % (what, bound))
    return time.monotonic() - t0


def recovery(text, seconds, bound):
    line = "recovery: %s in %.2f s (bound %.0f s)" % (text, seconds, bound)
    log(line)
    return line


def check_invariants(c, baseline_cfg, extra_views=None):
    """The four invariants after a fault (with the bounds above for things still settling)."""
    expect(c.scheduler.running(), "prewarmd is running")
    wait_until(lambda: recovered(c, extra_views=extra_views), BOUND_TARGET,
               "scheduler view == agents' view and pools at target")
    ok, problems = leases_on_live_vms(c, extra_views)
    expect(ok, "no lease on a dead VM", problems)
    cfg = config_snapshot(c)
    expect(cfg == baseline_cfg, "operator config unchanged", {"before": baseline_cfg, "now": cfg})
    n = len(c.vms())
    return "%d VMs, views agree, leases on live VMs only, config intact, pools at target" % n


# ---- traffic ------------------------------------------------------------------------------------
class Traffic:
    """A background acquire -> hold -> release loop over f1 and f2, counting outcomes."""

    def __init__(self, c, fns=(F1, F2), hold_s=0.03, gap_s=0.02, timeout_ms=2000):
        self.c, self.fns, self.hold_s, self.gap_s, self.timeout_ms = c, fns, hold_s, gap_s, timeout_ms
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.log = []       # (monotonic, wall, fn, outcome)
        self.releases = {}  # outcome -> count
        self.samples = []   # a few error answers
        self.thread = None

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(15)

    def _note(self, t, wall, fn, outcome, body=None):
        with self.lock:
            self.log.append((t, wall, fn, outcome))
            if outcome not in ("warm", "cold") and len(self.samples) < 5:
                self.samples.append((fn, outcome, body))

    def _run(self):
        i = 0
        while not self.stop_ev.is_set():
            fn = self.fns[i % len(self.fns)]
            i += 1
            t, wall = time.monotonic(), time.time()
            try:
                st, body = self.c.http("POST", "/v1/functions/%s/acquire" % fn, {"timeout_ms": self.timeout_ms},
                                       timeout=self.timeout_ms / 1000.0 + 3)
            except socket.timeout:
                self._note(t, wall, fn, "timeout")
                continue
            except OSError as e:
                self._note(t, wall, fn, "error:conn", str(e))
                time.sleep(0.05)
                continue
            if st == 200 and isinstance(body, dict):
                self._note(t, wall, fn, "warm" if body.get("start") == "warm" else "cold")
                time.sleep(self.hold_s)
                try:
                    rs, _ = self.c.http("POST", "/v1/leases/%s/release" % body["lease_id"],
                                        {"duration_ms": int(self.hold_s * 1000), "outcome": "ok"})
                    k = {200: "ok", 404: "lease_gone"}.get(rs, "error:%s" % rs)
                except OSError:
                    k = "error:conn"
                with self.lock:
                    self.releases[k] = self.releases.get(k, 0) + 1
            else:
                code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
                self._note(t, wall, fn, "timeout" if code == "timeout" else "error:%s" % (code or st), body)
                time.sleep(0.05)
            time.sleep(self.gap_s)

    def counts(self, t0=None, t1=None, fn=None):
        out = {"warm": 0, "cold": 0, "timeouts": 0, "errors": 0}
        with self.lock:
            for t, _w, f, o in self.log:
                if (t0 is not None and t < t0) or (t1 is not None and t > t1) or (fn and f != fn):
                    continue
                k = o if o in ("warm", "cold") else "timeouts" if o == "timeout" else "errors"
                out[k] += 1
        return out

    def summary(self):
        c = self.counts()
        with self.lock:
            rel = dict(self.releases)
        return "traffic: %d warm, %d cold, %d errors, %d timeouts; releases %s" % (
            c["warm"], c["cold"], c["errors"], c["timeouts"], rel)


# ---- (0) setup ----------------------------------------------------------------------------------
class State:
    baseline = None
    restarts = 0
    ghost = []          # (2): VMs carrying the lease that ended when their agent was declared dead
    ghost_lease = None


def check_setup(c):
    st, h = c.http("POST", "/v1/hosts/%s/drain" % DRAINED)
    expect(st == 200 and h.get("draining") is True, "drain %s -> %s" % (DRAINED, st), h)
    for fn, body in FUNCTIONS.items():
        st, obj = c.http("PUT", "/v1/functions/" + fn, body)
        expect(st == 200, "PUT /v1/functions/%s -> %s" % (fn, st), obj)
    wait_until(lambda: recovered(c), 5.0, "pools at target and views agree")
    State.baseline = config_snapshot(c)
    expect(State.baseline["drains"] == {"a1": False, "a2": False, "a3": True}, "drains as set", State.baseline)
    expect(not c.vms(host=DRAINED), "nothing on the drained host", c.vms(host=DRAINED))
    ok, views = views_agree(c)
    return "baseline: %s" % views["agents"]


def busiest(c, among=("a1", "a2")):
    per = {h: len(c.vms(host=h)) for h in among}
    return max(sorted(among), key=lambda h: per[h]), per


def expect_traffic_served(tr, t0, t1, what):
    n = tr.counts(t0, t1)
    expect(n["warm"] + n["cold"] > 0, "%s: traffic was served" % what, n)
    expect(n["errors"] == 0 and n["timeouts"] == 0, "%s: no acquire failed or timed out" % what,
           {"counts": n, "samples": tr.samples})
    return n


# ---- (1) agent SIGKILL --------------------------------------------------------------------------
def check_agent_kill(c):
    victim, per = busiest(c)
    lines = []
    with Traffic(c) as tr:
        time.sleep(0.5)
        t0 = time.monotonic()
        c.kill_agent(victim, signal.SIGKILL)
        dead = measure(lambda: (c.hosts()[victim]["state"] == "dead", c.hosts()[victim]["state"]),
                       BOUND_DEAD, "%s declared dead" % victim, t0)
        repl = measure(lambda: recovered(c), BOUND_REPLACED, "VMs replaced elsewhere, pools at target", t0)
        lines.append(recovery("agent SIGKILL (not restarted) -> %s dead in %.2f s, its VMs replaced "
                              "elsewhere, pools at target" % (victim, dead), repl, BOUND_REPLACED))
        expect(not c.vms(host=victim), "no VM left on the dead host", c.vms(host=victim))
        t1 = time.monotonic()
        c.start_agent(victim)
        alive = measure(lambda: (c.hosts()[victim]["state"] == "alive", c.hosts()[victim]["state"]),
                        BOUND_REJOIN, "%s alive again" % victim, t1)
        back = measure(lambda: recovered(c), BOUND_TARGET, "pools at target, views agree", t1)
        lines.append(recovery("agent restart -> %s alive in %.2f s, pools at target and views agreeing"
                              % (victim, alive), back, BOUND_TARGET))
        time.sleep(0.5)
    expect_traffic_served(tr, t0, None, "agent SIGKILL")
    log("  " + tr.summary())
    return "%s had %s VMs; %s" % (victim, per[victim], "; ".join(lines))


# ---- (2) agent SIGSTOP / SIGCONT ------------------------------------------------------------------
def check_agent_stop(c):
    # A lease held across the fault: its VM's host is the one stopped.
    st, held_lease = c.http("POST", "/v1/functions/%s/acquire" % F1, {"timeout_ms": 2000})
    expect(st == 200 and held_lease.get("host") in ("a1", "a2"), "acquire f1 -> %s" % st, held_lease)
    victim = held_lease["host"]
    a = c.agents[victim]
    lines = []
    with Traffic(c) as tr:
        time.sleep(0.5)
        t0 = time.monotonic()
        a.process.send_signal(signal.SIGSTOP)
        try:
            stale = agent_log_view(a)  # the agent is frozen: this is what it holds
            dead = measure(lambda: (c.hosts()[victim]["state"] == "dead", c.hosts()[victim]["state"]),
                           BOUND_DEAD, "%s declared dead" % victim, t0)
            repl = measure(lambda: recovered(c, away=(victim,)) if not c.vms(host=victim) else (False, "VMs on %s" % victim),
                           BOUND_REPLACED, "VMs replaced elsewhere, pools at target", t0)
            lines.append(recovery("agent SIGSTOP -> %s dead in %.2f s, VMs replaced elsewhere, pools at target"
                                  % (victim, dead), repl, BOUND_REPLACED))
            ok, problems = leases_on_live_vms(c)
            expect(ok, "no lease on the stopped agent's VMs while it is dead", problems)
            # docs/core.md: leases on a dead host's VMs end; the holder's release says so.
            rel_st, rel_body = c.http("POST", "/v1/leases/%s/release" % held_lease["lease_id"],
                                      {"duration_ms": 1, "outcome": "ok"})
            expect(rel_st == 404, "releasing the lease on the dead host's VM -> 404 (the lease ended)",
                   (rel_st, rel_body))
            time.sleep(max(0.0, 2 * DEAD_S + 1.0 - (time.monotonic() - t0)))  # well past the dead timeout
        finally:
            a.process.send_signal(signal.SIGCONT)
        t1 = time.monotonic()
        alive = measure(lambda: (c.hosts()[victim]["state"] == "alive", c.hosts()[victim]["state"]),
                        BOUND_REJOIN + 2 * HEARTBEAT_MS / 1000.0, "%s alive again" % victim, t1)

        ghost = {"seen": False}

        def reconciled():
            ok, obs = recovered(c)
            ghost["seen"] |= any(v.get("lease_id") == held_lease["lease_id"] for v in c.vms())
            held = agent_log_view(a)
            sched = {v["vm_id"] for v in c.vms(host=victim)}
            destroyed = agent_log_destroyed(a)
            # Each stale VM: adopted (the scheduler lists it on the agent again) or destroyed on
            # the scheduler's command; never kept by the agent behind the scheduler's back.
            loose = [v for v in stale if v in held and v not in sched]
            unexplained = [v for v in stale if v not in held and v not in sched and v not in destroyed]
            return ok and not loose and not unexplained, {"recovered": obs, "held_not_known": loose,
                                                          "vanished_without_destroy": unexplained}
        back = measure(reconciled, BOUND_TARGET + BOUND_REJOIN, "stale VMs reconciled, views agree", t1)
        lines.append(recovery("SIGCONT -> %s alive in %.2f s, stale VMs reconciled, views agreeing"
                              % (victim, alive), back, BOUND_TARGET + BOUND_REJOIN))
        time.sleep(0.3)
    adopted = sum(1 for v in stale if v in {x["vm_id"] for x in c.vms(host=victim)})
    destroyed = len(set(stale) & agent_log_destroyed(a))
    expect_traffic_served(tr, t0, None, "agent SIGSTOP")
    log("  " + tr.summary())
    # Adopted VMs above min are surplus: keep-alive trims them, so each pool ends at min idle.
    t2 = time.monotonic()

    ghost["seen"] |= any(v.get("lease_id") == held_lease["lease_id"] for v in c.vms())
    State.ghost = [v for v in c.vms() if v.get("lease_id") == held_lease["lease_id"]] if ghost["seen"] else []
    State.ghost_lease = held_lease["lease_id"]
    if ghost["seen"]:
        log("  FINDING: the lease %s, ended when %s was declared dead (its release answered 404), is back in "
            "/v1/vms after the agent's hello: %s" % (held_lease["lease_id"], victim, State.ghost))

    def trimmed():
        # The lease of (2b) is judged there; here only what is not it.
        ghosts = {fn: sum(1 for v in c.vms(fn) if v.get("lease_id") == held_lease["lease_id"]) for fn in FUNCTIONS}
        seen = {fn: (c.pool(fn).get("idle"), c.pool(fn).get("leased") - ghosts[fn], c.pool(fn).get("restoring"))
                for fn in FUNCTIONS}
        return all(s == (FUNCTIONS[fn]["pool"]["min"], 0, 0) for fn, s in seen.items()), seen
    trim = measure(trimmed, KEEPALIVE_MS / 1000.0 + 4.0, "every pool back to exactly min idle, nothing leased", t2)
    lines.append(recovery("traffic stopped -> surplus trimmed, every pool at exactly min idle", trim,
                          KEEPALIVE_MS / 1000.0 + 4.0))
    return "%s held %d VMs when stopped: %d still adopted, %d destroyed on command; %s" % (
        victim, len(stale), adopted, destroyed, "; ".join(lines))


def check_no_ghost_lease(c):
    """docs/core.md: leases on a dead agent's VMs end. A lease that ended so (its holder's release
    answered 404) must not come back when the agent returns with the lease note in its hello
    inventory: nobody holds it any more, so its VM would sit leased, unusable, until the lease
    TTL (--lease-ttl-ms, 60 s by default)."""
    expect(State.ghost_lease is not None, "(2) ran")
    expect(not State.ghost, "the ended lease %s is not resurrected by the returning agent's hello"
           % State.ghost_lease, State.ghost)


# ---- (3) prewarmd SIGKILL -----------------------------------------------------------------------
def check_scheduler_kill(c):
    lines = []
    with Traffic(c) as tr:
        time.sleep(1.0)
        t0 = time.monotonic()
        c.kill_scheduler(signal.SIGKILL)
        # The agents keep running: what they hold at the kill is what they hold at the restart.
        views_kill = {aid: agent_log_view(a) for aid, a in c.agents.items()}
        c.start_scheduler(wait=False)
        State.restarts += 1

        def ready():
            st, body = c.http("GET", "/readyz", timeout=2)
            return st == 200, (st, body)
        t_ready = measure(ready, BOUND_SCHED_READY, "prewarmd /readyz 200", t0)
        cfg = config_snapshot(c)
        expect(cfg == State.baseline, "functions, pools, placement and drains from PostgreSQL",
               {"before": State.baseline, "now": cfg})
        t_alive = measure(lambda: (all(h.get("state") == "alive" for h in c.hosts().values()),
                                   {k: h.get("state") for k, h in c.hosts().items()}),
                          BOUND_SCHED_TARGET, "every agent re-helloed", t0)
        adopted_now = {v["vm_id"] for v in c.vms()}
        t_target = measure(lambda: recovered(c), BOUND_SCHED_TARGET, "VMs adopted, pools at target", t0)
        lines.append(recovery("prewarmd SIGKILL -> /readyz 200 in %.2f s, agents alive in %.2f s, VMs adopted "
                              "and pools at target" % (t_ready, t_alive), t_target, BOUND_SCHED_TARGET))
        t_back = time.monotonic()
        time.sleep(1.0)
    held = set().union(*[set(v) for v in views_kill.values()])
    missing = sorted(held - adopted_now)
    destroyed = set().union(*[agent_log_destroyed(a) for a in c.agents.values()])
    expect(not [m for m in missing if m not in destroyed],
           "every VM the agents held at the kill was adopted with the same id",
           {"held": len(held), "missing": missing})
    n_after = tr.counts(t_back)
    expect(n_after["warm"] + n_after["cold"] > 0 and n_after["errors"] == 0, "traffic resumed after the restart",
           {"after": n_after, "samples": tr.samples})
    log("  " + tr.summary())
    same = len(held & adopted_now)
    expect(same == len(held) - len([m for m in missing if m in destroyed]), "adopted ids", (same, len(held)))
    return "%d of %d VMs re-adopted with the same ids; %s" % (same, len(held), "; ".join(lines))


# ---- (4) PostgreSQL outage ----------------------------------------------------------------------
def psql(c, sql):
    exe = "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(exe):
        exe = "psql"
    r = subprocess.run([exe, "-h", c.pg.dir, "-U", "postgres", "-d", "postgres", "-At", "-c", sql],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise HarnessError("psql: %s" % r.stderr.strip())
    return r.stdout.strip()


def check_pg_outage(c):
    pid = c.scheduler.pid
    m0 = scheduler_metrics(c)
    expect(m0.get("prewarm_store_up") == 1, "store up before the outage", m0.get("prewarm_store_up"))
    pool_before = {k: c.pool(F1).get(k) for k in ("policy", "min", "max", "keepalive_ms")}
    lines = []
    obs = {"readyz": set(), "buffered_max": 0}
    with Traffic(c) as tr:
        time.sleep(1.0)
        t_halt, wall_halt = time.monotonic(), time.time()
        c.halt_pg()
        try:
            wait_until(lambda: (c.http("GET", "/readyz", timeout=2)[0] == 503, c.http("GET", "/readyz")),
                       5.0, "/readyz 503 with PostgreSQL down")
            st, body = c.http("PUT", "/v1/functions/%s/pool" % F1, {"min": 7}, timeout=15)
            expect(st == 503 and is_error_body(body, st) and body["error"]["code"] == "store_unavailable",
                   "PUT pool during the outage -> 503 store_unavailable", (st, body))
            expect(c.pool(F1).get("min") == FUNCTIONS[F1]["pool"]["min"], "the refused write changed nothing",
                   c.pool(F1))
            while time.monotonic() - t_halt < PG_OUTAGE_S:
                st, body = c.http("GET", "/readyz", timeout=2)
                obs["readyz"].add(st)
                m = scheduler_metrics(c)
                obs["buffered_max"] = max(obs["buffered_max"], m.get("prewarm_store_buffered_rows", 0))
                expect(m.get("prewarm_store_up") == 0, "prewarm_store_up 0 during the outage", m.get("prewarm_store_up"))
                expect(c.scheduler.running(), "prewarmd alive during the outage")
                time.sleep(1.0)
            m_down = scheduler_metrics(c)
        finally:
            t_resume, wall_resume = time.monotonic(), time.time()
            c.resume_pg()
        served = tr.counts(t_halt, t_resume)

        def back():
            st, body = c.http("GET", "/readyz", timeout=2)
            m = scheduler_metrics(c)
            return (st == 200 and m.get("prewarm_store_buffered_rows") == 0 and m.get("prewarm_store_up") == 1,
                    {"readyz": st, "buffered": m.get("prewarm_store_buffered_rows")})
        t_back = measure(back, BOUND_PG, "/readyz 200 and the telemetry buffer flushed", t_resume)
        lines.append(recovery("PostgreSQL back after %.0f s down -> /readyz 200 and telemetry flushed"
                              % (t_resume - t_halt), t_back, BOUND_PG))
        time.sleep(0.5)
    log("  " + tr.summary())
    m1 = scheduler_metrics(c)
    expect(c.scheduler.pid == pid and c.scheduler.running(), "prewarmd did not crash or restart")
    expect(obs["readyz"] == {503}, "/readyz was 503 throughout the outage", sorted(obs["readyz"]))
    expect(served["warm"] + served["cold"] >= 50 and served["errors"] == 0 and served["timeouts"] == 0,
           "acquires kept being served during the outage", {"served": served, "samples": tr.samples})
    expect(0 < obs["buffered_max"] <= TELEMETRY_MAX_ROWS, "telemetry buffered within its bound (%d rows)"
           % TELEMETRY_MAX_ROWS, obs["buffered_max"])
    expect(m1.get("prewarm_store_dropped_rows_total", 0) == m0.get("prewarm_store_dropped_rows_total", 0),
           "no telemetry row dropped", (m0.get("prewarm_store_dropped_rows_total"),
                                       m1.get("prewarm_store_dropped_rows_total")))
    expect(m1.get("prewarm_store_flushed_rows_total", 0) >= m_down.get("prewarm_store_flushed_rows_total", 0)
           + m_down.get("prewarm_store_buffered_rows", 0), "the buffered rows were flushed",
           {"down": m_down.get("prewarm_store_buffered_rows"), "flushed before": m_down.get(
               "prewarm_store_flushed_rows_total"), "flushed now": m1.get("prewarm_store_flushed_rows_total")})
    expect({k: c.pool(F1).get(k) for k in pool_before} == pool_before,
           "the refused pool write was not applied later", c.pool(F1))
    # The minutes of the outage are in invocation_minutes, counting at least what was served then.
    lo, hi = int(wall_halt // 60), int((wall_resume + 1) // 60)
    sent = {fn: 0 for fn in FUNCTIONS}
    with tr.lock:
        for t, _w, fn, o in tr.log:
            if t_halt <= t <= t_resume and o in ("warm", "cold", "timeout"):
                sent[fn] += 1
    rows = psql(c, "SELECT function, minute, count FROM invocation_minutes WHERE minute BETWEEN %d AND %d "
                   "ORDER BY 1, 2" % (lo, hi))
    stored = {fn: 0 for fn in FUNCTIONS}
    minutes = {fn: set() for fn in FUNCTIONS}
    for r in rows.splitlines():
        fn, minute, n = r.split("|")
        if fn in stored:
            stored[fn] += int(n)
            minutes[fn].add(int(minute))
    for fn in FUNCTIONS:
        expect(stored[fn] >= sent[fn] > 0, "invocation_minutes holds %s's outage invocations" % fn,
               {"stored": stored, "acquired during the outage": sent, "rows": rows})
        expect(minutes[fn] >= set(range(int(wall_halt // 60), int(wall_resume // 60) + 1)),
               "a row for every minute of the outage (%s)" % fn, {"minutes": sorted(minutes[fn]), "lo": lo, "hi": hi})
    return "%d acquires served while PostgreSQL was down (0 errors), up to %d rows buffered, %s; %s" % (
        served["warm"] + served["cold"], obs["buffered_max"], stored, "; ".join(lines))


# ---- (6) duplicated, reordered and truncated agent messages --------------------------------------
SP_REQ0, SP_REP0 = 0x30, 0x31


class FakeAgent:
    """An agent speaking NNG 1.5's SP-over-TCP by hand: an 8-byte handshake (00 'S' 'P' 00, the
    16-bit protocol id, 2 reserved bytes), then frames of a 64-bit big-endian length followed
    by the message; a req0 message starts with its 32-bit request id (top bit set), which
    rep0 sends back in front of the reply."""

    def __init__(self, port, agent_id="fake-agent", boot_id="00000000fa4e0001"):
        self.port, self.id, self.boot = port, agent_id, boot_id
        self.sock = None
        self.next_req = 1

    def connect(self, proto=SP_REQ0):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.sendall(b"\x00SP\x00" + struct.pack(">H", proto) + b"\x00\x00")
        peer = self._recv(8)
        expect(peer[:4] == b"\x00SP\x00" and struct.unpack(">H", peer[4:6])[0] == SP_REP0,
               "rep0 handshake from prewarmd", peer)
        return self

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise HarnessError("connection closed by prewarmd after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return buf

    def frame(self, payload, req_id=None):
        if req_id is None:
            req_id = self.next_req
            self.next_req += 1
        body = struct.pack(">I", 0x80000000 | req_id) + payload
        return struct.pack(">Q", len(body)) + body, req_id

    def send(self, payload, req_id=None):
        data, rid = self.frame(payload, req_id)
        self.sock.sendall(data)
        return rid

    def recv(self):
        n = struct.unpack(">Q", self._recv(8))[0]
        body = self._recv(n)
        return struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF, json.loads(body[4:].decode())

    def request(self, msg):
        rid = self.send(json.dumps(msg).encode())
        got, reply = self.recv()
        expect(got == rid, "reply to request %d" % rid, got)
        return reply

    def hello(self, vms=()):
        return {"v": 1, "type": "hello", "agent_id": self.id, "boot_id": self.boot, "version": "test",
                "driver": "fake", "vms": list(vms),
                # No room: nothing is ever placed here, and it is not draining (a drain would
                # move its VMs away on its own), so only its own messages change its VMs.
                "numa": [{"id": 0, "cpulist": "0", "ncpus": 1, "mem_total_mb": 0, "mem_free_mb": 0,
                          "vcpu_total": 0, "vcpu_free": 0}]}

    def report(self, seq, events=()):
        return {"v": 1, "type": "report", "agent_id": self.id, "boot_id": self.boot, "seq": "%016x" % seq,
                "numa": [{"id": 0, "mem_free_mb": 0, "vcpu_free": 0}],
                "events": list(events)}


def ev(seq, vm, state, fn="fz"):
    e = {"seq": "%016x" % seq, "vm_id": vm, "state": state, "function": fn, "numa_node": 0}
    if state == "running":
        e["restore_ms"] = 5
        e["address"] = "127.0.0.1:9"
    return e


def check_bad_messages(c):
    FZ = "fz"
    st, obj = c.http("PUT", "/v1/functions/" + FZ, {"image": "img-fz", "memory_mb": 128, "vcpus": 1,
                                                    "pool": {"policy": "fixed", "min": 0, "max": 8,
                                                             "keepalive_ms": 600000}})
    expect(st == 200, "PUT fz -> %s" % st, obj)
    m0 = scheduler_metrics(c)
    # VM ids in an epoch range prewarmd never issues (ids are epoch << 40 | n).
    V1, V2, V3 = ("7f00000000000001", "7f00000000000002", "7f00000000000003")
    fake = FakeAgent(c.agent_port).connect()
    mine = {}
    notes = []

    def fz_ids():
        return {v["vm_id"] for v in c.vms(host=fake.id)}
    try:
        r = fake.request(fake.hello())
        expect(r.get("type") == "reply", "hello answered with a reply", r)
        # A VM comes up.
        r = fake.request(fake.report(1, [ev(1, V1, "running")]))
        expect(r.get("type") == "reply" and int(r["event_ack"], 16) == 1, "event 1 acknowledged", r)
        mine[V1] = "running"
        expect(fz_ids() == {V1}, "V1 adopted from its running event", c.vms(host=fake.id))

        # Duplicated: the same request, byte for byte, twice more (as NNG's resend would).
        data, _ = fake.frame(json.dumps(fake.report(1, [ev(1, V1, "running")])).encode())
        fake.sock.sendall(data + data)
        replies = [fake.recv()[1], fake.recv()[1]]
        expect(all(x.get("type") == "reply" and int(x["event_ack"], 16) == 1 for x in replies),
               "duplicates answered, event_ack still 1", replies)
        expect(fz_ids() == {V1} and c.pool(FZ).get("idle") == 1, "a duplicated event is applied once",
               {"vms": sorted(fz_ids()), "pool": c.pool(FZ)})
        notes.append("duplicate x2 ignored")

        # Reordered within a report: seq 3 before seq 2.
        r = fake.request(fake.report(2, [ev(3, V3, "running"), ev(2, V2, "running")]))
        expect(int(r["event_ack"], 16) == 3, "events 2 and 3 acknowledged", r)
        mine[V2] = mine[V3] = "running"
        expect(fz_ids() == {V1, V2, V3}, "both reordered events applied", sorted(fz_ids()))
        # Reordered across reports: an older report (seq 1, event 2 "gone") arrives late.
        r = fake.request(fake.report(1, [ev(2, V2, "gone")]))
        expect(int(r["event_ack"], 16) == 3, "event_ack stays 3 for a stale report", r)
        expect(fz_ids() == {V1, V2, V3}, "a stale event (seq <= applied) is not applied", sorted(fz_ids()))
        notes.append("reordered applied in seq order, stale ignored")

        # Spoofed: an event about another agent's VM.
        victim = next(v for v in c.vms() if v["host"] in c.agents)
        r = fake.request(fake.report(3, [ev(4, victim["vm_id"], "gone", victim["function"])]))
        expect(int(r["event_ack"], 16) == 4, "event 4 acknowledged", r)
        expect(any(v["vm_id"] == victim["vm_id"] and v["host"] == victim["host"] for v in c.vms()),
               "an event about another host's VM is ignored", victim)
        notes.append("foreign VM event ignored")

        # Truncated JSON in a well-formed frame, and a hello missing a required NUMA field.
        whole = json.dumps(fake.report(4, [ev(5, V1, "gone")])).encode()
        fake.send(whole[:len(whole) // 2])
        _, r = fake.recv()
        expect(r.get("type") == "error" and r.get("code") == "bad_request", "truncated JSON -> error bad_request", r)
        bad = fake.hello()
        del bad["numa"][0]["id"]
        r = fake.request(bad)
        expect(r.get("type") == "error" and r.get("code") == "bad_request", "hello without numa[0].id -> bad_request", r)
        expect(fz_ids() == {V1, V2, V3}, "the truncated report (V1 gone) was not applied", sorted(fz_ids()))
        notes.append("2 malformed messages answered bad_request")
    finally:
        fake.close()

    # Truncated at the transport: each on its own connection; NNG drops the connection.
    def raw(data, proto=SP_REQ0, handshake=True):
        s = socket.create_connection(("127.0.0.1", c.agent_port), timeout=5)
        try:
            try:
                if handshake:
                    s.sendall(b"\x00SP\x00" + struct.pack(">H", proto) + b"\x00\x00")
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                return  # prewarmd (NNG) already dropped the connection: what is being tested
            s.settimeout(2)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
        finally:
            s.close()
    frame, _ = fake.frame(json.dumps(fake.report(5, [ev(6, V1, "gone")])).encode())
    raw(frame[:len(frame) - 20])                        # the frame cut short, then EOF
    raw(frame[:5])                                      # the length itself cut short
    raw(struct.pack(">Q", 2) + b"\x80\x00")             # shorter than the request id header
    raw(struct.pack(">Q", 8 << 20) + b"x" * 1000)       # claims 8 MiB (> the receive limit)
    raw(b"\x00SP", handshake=False)                     # the handshake cut short
    raw(frame, proto=0x10)                              # wrong protocol (pair0)
    notes.append("6 transport-level truncations survived")
    st, _ = c.http("GET", "/livez")
    expect(st == 200 and c.scheduler.running(), "prewarmd alive after the bad messages", st)
    expect(fz_ids() == {V1, V2, V3}, "nothing from a truncated frame was applied", sorted(fz_ids()))
    m1 = scheduler_metrics(c)
    mal = m1.get("prewarm_agent_messages_malformed_total", 0) - m0.get("prewarm_agent_messages_malformed_total", 0)
    expect(mal == 2, "prewarm_agent_messages_malformed_total counted the 2 malformed messages", mal)
    for aid in c.agents:
        expect(c.hosts()[aid]["state"] == "alive", "%s still alive" % aid, c.hosts()[aid])

    # A new connection, same session: the fake agent's view and the scheduler's agree.
    fake.connect()
    try:
        r = fake.request(fake.report(6))
        expect(r.get("type") == "reply" and int(r["event_ack"], 16) == 4, "the session survives", r)
        ok, obs = views_agree(c, extra_views={fake.id: dict(mine)})
        expect(ok, "scheduler view == agents' view (the fake agent's included)", obs)
        ok, problems = leases_on_live_vms(c, {fake.id: dict(mine)})
        expect(ok, "no lease on a dead VM", problems)
    finally:
        fake.close()
    # Silent now: declared dead, its VMs leave.
    t0 = time.monotonic()
    gone = measure(lambda: (c.hosts()[fake.id]["state"] == "dead" and not fz_ids(), sorted(fz_ids())),
                   BOUND_DEAD + HEARTBEAT_MS / 1000.0, "the silent fake agent dead, its VMs gone", t0)
    recovery("fake agent silent -> dead and its VMs removed", gone, BOUND_DEAD + HEARTBEAT_MS / 1000.0)
    return "; ".join(notes)


def main():
    checks = Checks("test_faults: agent SIGKILL/SIGSTOP, prewarmd SIGKILL, PostgreSQL outage, bad agent "
                    "messages (3 sim agents, traffic during each fault)")
    cluster = Cluster(agents=make_agents(), heartbeat_ms=HEARTBEAT_MS, sim_restore_ms=RESTORE_MS,
                      lease_ttl_ms=LEASE_TTL_MS, name="faults",
                      scheduler_args=["--telemetry-max-rows", str(TELEMETRY_MAX_ROWS)])
    with checks.setup_guard():
        with cluster as c:
            log("cluster up: http 127.0.0.1:%d, agents %s" % (c.http_port, c.agents_url))
            c.wait_adopt_grace()
            if checks.check("(0) setup: f1 min 3, f2 min 2, %s drained" % DRAINED, check_setup, c):
                for name, fn in (("(1) agent SIGKILL, then restart", check_agent_kill),
                                 ("(2) agent SIGSTOP past the dead timeout, then SIGCONT", check_agent_stop),
                                 ("(2b) a lease ended by the agent's death stays ended after SIGCONT",
                                  check_no_ghost_lease),
                                 ("(3) prewarmd SIGKILL mid-traffic, restart", check_scheduler_kill),
                                 ("(4) PostgreSQL down %.0f s under traffic" % PG_OUTAGE_S, check_pg_outage),
                                 ("(6) duplicated, reordered, truncated agent messages", check_bad_messages)):
                    checks.check(name, fn, c)
                    if fn is check_no_ghost_lease:
                        continue  # judges what (2) observed; no new fault
                    checks.check("    invariants after %s" % name.split(")")[0].strip("("),
                                 check_invariants, c, State.baseline)
                expect_starts = 1 + State.restarts
                checks.check("prewarmd never crashed (started %d times, all by the test)" % expect_starts,
                             lambda: expect(c.scheduler.running() and c.scheduler.starts == expect_starts,
                                            "prewarmd running, %d starts" % expect_starts, c.scheduler.starts))
            checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
