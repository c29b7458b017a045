#!/usr/bin/env python3
"""test_foundation.py — end-to-end acceptance test of the foundation.

Real PostgreSQL, a real prewarmd and two real prewarm-agent processes (sim driver, topology
fixtures 2node and 4node), heartbeat 500 ms, sim restore 300 ms. Checks, in order:
 (a) fixed pool min=3 fills to 3 idle VMs          (f) bad input is rejected and changes nothing
 (b) acquire is warm; the pool refills              (g) a SIGKILLed agent is declared dead, its VMs
 (c) release                                            leave, the pool refills elsewhere
 (d) acquire on an empty pool is a cold start       (h) the agent restarts and is alive again
 (e) min=0 + keep-alive drains the pool             (i) prewarmd SIGKILL + restart: config persists,
                                                        VMs are adopted, not duplicated
 (j) invocations reach PostgreSQL                   (k) placement constraints persist; an operator
                                                        drain moves VMs off a host and survives a
                                                        restart; undrain
Prints one line per check and "N passed, M failed" last; exits non-zero on any failure.
"""

import os
import signal
import sys
import subprocess
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Agent, Checks, Cluster, expect, is_error_body,  # noqa: E402
                     is_hex_id, wait_until)

HEARTBEAT_MS = 500
RESTORE_MS = 300
AGENTS = [Agent("agent-a", "2node", {"zone": "a"}), Agent("agent-b", "4node", {"zone": "b"})]

F1 = "f1"
F2 = "f2"
POOL_COUNTERS = ("target_idle", "restoring", "idle", "leased", "stopping", "failed", "waiters")


class State:
    lease = None          # the warm lease of (b)
    killed_agent = None   # the agent SIGKILLed in (g)


def pool_view(p, keys=("idle", "leased", "restoring", "stopping")):
    return {k: p.get(k) for k in keys}


def settled(c, fn):
    """The pool has no VM in transit (nothing restoring or stopping)."""
    p = c.pool(fn)
    return p.get("restoring") == 0 and p.get("stopping") == 0, pool_view(p)


def vm_summary(vms):
    return sorted((v.get("function"), v.get("host"), v.get("state"), v.get("vm_id")) for v in vms)


# ---- (a) ------------------------------------------------------------------------------------
def check_a(c):
    body = {"image": "img-f1", "memory_mb": 128, "vcpus": 1,
            "pool": {"policy": "fixed", "min": 3, "max": 10, "keepalive_ms": 1000}}
    st, fn = c.http("PUT", "/v1/functions/" + F1, body)
    expect(st == 200, "PUT /v1/functions/f1 -> %s" % st, fn)
    expect(isinstance(fn, dict) and fn.get("name") == F1 and fn.get("image") == "img-f1"
           and fn.get("memory_mb") == 128 and fn.get("vcpus") == 1, "function object fields", fn)
    pool = fn.get("pool") or {}
    expect(pool.get("policy") == "fixed" and pool.get("min") == 3 and pool.get("max") == 10
           and pool.get("keepalive_ms") == 1000, "function object pool fields", fn)

    def ready():
        p = c.pool(F1)
        idle_vms = c.vms(F1)
        n_idle = sum(1 for v in idle_vms if v.get("state") == "idle")
        return p.get("idle") == 3 and n_idle == 3, {"pool": pool_view(p), "vms_idle": n_idle}
    wait_until(ready, 2.0, "f1 pool idle==3 and 3 idle f1 VMs in /v1/vms")
    vms = c.vms(F1)
    expect(all(is_hex_id(v.get("vm_id")) for v in vms), "vm_id is a 16-hex-digit string", vms)
    expect(all(v.get("host") in c.agents for v in vms), "VM hosts are our agents", vms)
    hosts = sorted({v["host"] for v in vms})
    return "3 idle on %s" % ",".join(hosts)


# ---- (b) ------------------------------------------------------------------------------------
def check_b(c):
    st, lease = c.http("POST", "/v1/functions/%s/acquire" % F1, {"timeout_ms": 5000})
    expect(st == 200, "acquire f1 -> %s" % st, lease)
    expect(lease.get("start") == "warm", "start == warm", lease)
    expect(is_hex_id(lease.get("lease_id")) and is_hex_id(lease.get("vm_id")),
           "lease_id and vm_id are 16-hex-digit strings", lease)
    expect(lease.get("host") in c.agents, "lease host is one of our agents", lease)
    expect(isinstance(lease.get("expires_in_ms"), int) and lease["expires_in_ms"] > 0,
           "expires_in_ms > 0", lease)
    for k in ("address", "wait_ms"):
        expect(k in lease, "lease has %s" % k, lease)
    State.lease = lease
    p = c.pool(F1)
    # Right after the acquire idle is 2 (3 if the 300 ms refill restore already finished).
    expect(p.get("leased") == 1 and p.get("idle") in (2, 3),
           "right after acquire: leased==1, idle==2", pool_view(p))
    first = pool_view(p)
    wait_until(lambda: (lambda q: (q.get("idle") == 3 and q.get("leased") == 1, pool_view(q)))(c.pool(F1)),
               2.0, "f1 refilled to idle==3 with leased==1")
    vm = [v for v in c.vms(F1) if v.get("vm_id") == lease["vm_id"]]
    expect(len(vm) == 1 and vm[0].get("state") == "leased" and vm[0].get("lease_id") == lease["lease_id"],
           "leased VM shows state leased with its lease_id in /v1/vms", vm)
    return "after acquire %s, refilled to idle 3" % first


# ---- (c) ------------------------------------------------------------------------------------
def check_c(c):
    expect(State.lease is not None, "no lease from (b)")
    st, body = c.http("POST", "/v1/leases/%s/release" % State.lease["lease_id"],
                      {"duration_ms": 40, "outcome": "ok"})
    expect(st == 200, "release -> %s" % st, body)
    wait_until(lambda: (lambda q: (q.get("leased") == 0, pool_view(q)))(c.pool(F1)), 1.0,
               "f1 leased==0 after release")
    p = c.pool(F1)
    expect(p.get("acquires", 0) >= 1 and p.get("warm", 0) >= 1, "acquires/warm counted", p)


# ---- (d) ------------------------------------------------------------------------------------
def check_d(c):
    body = {"image": "img-f2", "memory_mb": 128, "vcpus": 1,
            "pool": {"policy": "fixed", "min": 0, "max": 10, "keepalive_ms": 60000}}
    st, fn = c.http("PUT", "/v1/functions/" + F2, body)
    expect(st == 200, "PUT /v1/functions/f2 -> %s" % st, fn)
    p = c.pool(F2)
    expect(p.get("idle") == 0 and p.get("restoring") == 0, "f2 pool starts empty", p)
    t0 = time.monotonic()
    st, lease = c.http("POST", "/v1/functions/%s/acquire" % F2, {"timeout_ms": 5000}, timeout=10)
    took_ms = (time.monotonic() - t0) * 1000
    expect(st == 200, "acquire f2 -> %s" % st, lease)
    expect(lease.get("start") == "cold", "start == cold", lease)
    wait_ms = lease.get("wait_ms")
    expect(isinstance(wait_ms, (int, float)) and wait_ms >= RESTORE_MS - 50,
           "wait_ms >= %d (sim restore %d ms)" % (RESTORE_MS - 50, RESTORE_MS), lease)
    expect(wait_ms < 5000 and took_ms < 5000, "answered before the 5000 ms timeout (took %.0f ms)" % took_ms,
           lease)
    expect(took_ms >= RESTORE_MS - 50, "client saw at least the restore time (took %.0f ms)" % took_ms)
    st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 10, "outcome": "ok"})
    expect(st == 200, "release f2 lease -> %s" % st, body)
    p = c.pool(F2)
    expect(p.get("cold", 0) >= 1, "f2 cold counter", p)
    return "wait_ms %s, client %.0f ms" % (wait_ms, took_ms)


# ---- (e) ------------------------------------------------------------------------------------
def check_e(c):
    # Use one VM now, so it is freshly idle when min drops: keep-alive must hold it ~1 s.
    st, lease = c.http("POST", "/v1/functions/%s/acquire" % F1, {"timeout_ms": 5000})
    expect(st == 200 and lease.get("start") == "warm", "warm acquire before lowering min -> %s" % st, lease)
    st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 5, "outcome": "ok"})
    expect(st == 200, "release -> %s" % st, body)
    t0 = time.monotonic()
    st, p = c.http("PUT", "/v1/functions/%s/pool" % F1, {"min": 0, "keepalive_ms": 1000})
    expect(st == 200, "PUT f1 pool min=0 -> %s" % st, p)
    # The answer is the pool object (with its counters), not the function object.
    shape_ok = (isinstance(p, dict) and p.get("function") == F1 and p.get("min") == 0
                and p.get("keepalive_ms") == 1000 and p.get("max") == 10 and p.get("policy") == "fixed"
                and all(k in p for k in POOL_COUNTERS))
    q = c.pool(F1)
    expect(q.get("min") == 0 and q.get("keepalive_ms") == 1000 and q.get("max") == 10
           and q.get("policy") == "fixed", "GET pool reflects the change (other fields kept)", q)

    def drained():
        q = c.pool(F1)
        vms = c.vms(F1)
        return q.get("idle") == 0 and not vms, {"pool": pool_view(q), "f1_vms": vm_summary(vms)}
    # VMs idle longer than keep-alive may go at once; the one just released stays until its
    # keep-alive has passed.
    time.sleep(max(0.0, 0.6 - (time.monotonic() - t0)))
    held = [v for v in c.vms(F1) if v.get("vm_id") == lease["vm_id"]]
    expect(len(held) == 1 and held[0].get("state") == "idle",
           "the VM released 0.6 s ago is still idle (keep-alive 1 s not yet passed)", vm_summary(c.vms(F1)))
    wait_until(drained, 1.0 + 2.0, "f1 idle==0 and no f1 VM in /v1/vms (keepalive 1 s + 2 s)")
    gone_after = time.monotonic() - t0
    expect(gone_after >= 0.9, "the released VM lived out its keep-alive (gone after %.2f s)" % gone_after)
    expect(shape_ok, "PUT /v1/functions/f1/pool answers the pool object {function, policy, min, max, "
           "keepalive_ms, target_idle, restoring, idle, ...}", p)


# ---- (f) ------------------------------------------------------------------------------------
def snapshot(c):
    def st():
        return {"f1": c.get_json("/v1/functions/" + F1), "f2": c.get_json("/v1/functions/" + F2),
                "pool_f1": c.pool(F1), "pool_f2": c.pool(F2),
                "functions": sorted(f.get("name") for f in c.get_json("/v1/functions").get("functions", []))}
    return st()


def check_f(c):
    for fn in (F1, F2):
        wait_until(lambda: settled(c, fn), 3.0, "%s pool settled before the bad-input checks" % fn)
    before = snapshot(c)
    problems = []

    def want(what, status, body, code):
        if status != code or not is_error_body(body, status):
            problems.append("%s -> %s %r (want %d + JSON error)" % (what, status, body, code))

    st, body = c.http("PUT", "/v1/functions/" + F1, raw=b'{"image": "x", "memory_mb": ')
    want("malformed JSON PUT function", st, body, 400)
    st, body = c.http("PUT", "/v1/functions/%s/pool" % F1, raw=b'{"min": 1,,}')
    want("malformed JSON PUT pool", st, body, 400)
    st, body = c.http("POST", "/v1/functions/no-such-fn/acquire", {"timeout_ms": 100})
    want("acquire unknown function", st, body, 404)
    big = b'{"image":"' + b"x" * (1024 * 1024 + 16) + b'"}'
    st, _hdrs, body = c.http_raw("PUT", "/v1/functions/" + F1, big)
    want("body over 1 MiB", st, body, 413)
    st, body = c.http("POST", "/v1/leases/%s/release" % "00000000deadbeef", {"duration_ms": 1, "outcome": "ok"})
    want("release unknown lease", st, body, 404)
    st, body = c.http("PUT", "/v1/functions/%s/pool" % F1, {"min": 5, "max": 2})
    want("pool min>max", st, body, 400)
    st, body = c.http("PUT", "/v1/functions/" + F1, {"image": "img-f1", "memory_mb": 128, "vcpus": 1,
                                                      "pool": {"policy": "fixed", "min": 7, "max": 3}})
    want("function with pool min>max", st, body, 400)
    good = {"image": "img-f1", "memory_mb": 128, "vcpus": 1}
    for what, placement in (("placement not an object", [1]),
                            ("placement zone not a name", {"zones": ["bad zone"]}),
                            ("placement zones not a list", {"zones": "a"}),
                            ("placement too many zones", {"zones": ["z%d" % i for i in range(9)]}),
                            ("placement share above 1", {"max_host_share": 1.5}),
                            ("placement share negative", {"max_zone_share": -0.1}),
                            ("placement share not a number", {"max_zone_share": "0.5"}),
                            ("placement unknown key", {"zone": ["a"]})):
        st, body = c.http("PUT", "/v1/functions/" + F1, dict(good, placement=placement))
        want(what, st, body, 400)
        msg = ((body or {}).get("error") or {}).get("message", "") if isinstance(body, dict) else ""
        if "placement" not in msg:
            problems.append("%s: the error message does not say what is wrong: %r" % (what, body))
    time.sleep(0.3)  # give a wrongly accepted change time to show
    after = snapshot(c)
    if before != after:
        diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        problems.append("state changed: %s" % diff)
    expect(not problems, "; ".join(problems))
    return "400/404/413/404/400/400 and 8 bad placements 400, state unchanged"


# ---- (g) ------------------------------------------------------------------------------------
def check_g(c):
    st, p = c.http("PUT", "/v1/functions/%s/pool" % F1, {"min": 2})
    expect(st == 200, "PUT f1 pool min=2 -> %s" % st, p)
    expect(c.pool(F1).get("min") == 2, "GET pool shows min 2", c.pool(F1))
    wait_until(lambda: (lambda q: (q.get("idle") == 2 and q.get("restoring") == 0, pool_view(q)))(c.pool(F1)),
               2.0, "f1 idle==2")
    per_host = {}
    for v in c.vms(F1):
        per_host[v["host"]] = per_host.get(v["host"], 0) + 1
    victim = max(sorted(c.agents), key=lambda h: per_host.get(h, 0))
    survivor = [a for a in sorted(c.agents) if a != victim][0]
    State.killed_agent = victim
    t_kill = time.monotonic()
    c.kill_agent(victim, signal.SIGKILL)
    dead_within = 3 * HEARTBEAT_MS / 1000.0 + 1.0

    def dead():
        h = c.hosts().get(victim, {})
        return h.get("state") == "dead", h
    wait_until(dead, dead_within, "%s state==dead in /v1/hosts (3 heartbeats + 1 s)" % victim)
    dead_after = time.monotonic() - t_kill
    left = max(0.2, dead_within - dead_after)
    wait_until(lambda: (lambda vs: (not vs, vm_summary(vs)))(c.vms(host=victim)), left,
               "no VM on dead host %s in /v1/vms" % victim)

    def refilled():
        q = c.pool(F1)
        vms = c.vms(F1)
        idle_on = sorted(v["host"] for v in vms if v.get("state") == "idle")
        return (q.get("idle") == 2 and len(idle_on) == 2 and all(h == survivor for h in idle_on),
                {"pool": pool_view(q), "idle_hosts": idle_on})
    wait_until(refilled, 3.0, "f1 idle==2 again, all on surviving agent %s" % survivor)
    return "killed %s (had %d f1 VMs), dead after %.2fs" % (victim, per_host.get(victim, 0), dead_after)


# ---- (h) ------------------------------------------------------------------------------------
def check_h(c):
    victim = State.killed_agent
    expect(victim is not None, "no agent was killed in (g)")
    c.restart_agent(victim)
    wait_until(lambda: (lambda h: (h.get("state") == "alive", h))(c.hosts().get(victim, {})), 3.0,
               "%s alive again in /v1/hosts" % victim)


# ---- (i) ------------------------------------------------------------------------------------
def config_of(fn_obj):
    p = fn_obj.get("pool") or {}
    return {k: fn_obj.get(k) for k in ("name", "image", "memory_mb", "vcpus")} | \
        {"pool": {k: p.get(k) for k in ("policy", "min", "max", "keepalive_ms")}}


def check_i(c):
    for fn in (F1, F2):
        wait_until(lambda: settled(c, fn), 3.0, "%s pool settled before the restart" % fn)
    wait_until(lambda: (lambda q: (q.get("idle") == 2, pool_view(q)))(c.pool(F1)), 2.0, "f1 idle==2")
    cfg_before = {fn: config_of(c.get_json("/v1/functions/" + fn)) for fn in (F1, F2)}
    vms_before = c.vms()
    ids_before = sorted(v["vm_id"] for v in vms_before)
    expect(len(ids_before) == len(set(ids_before)), "no duplicate vm_ids before the restart", ids_before)
    f1_target = c.pool(F1).get("target_idle")
    State.acquires_before_restart = {fn: c.pool(fn).get("acquires", 0) for fn in (F1, F2)}
    time.sleep(1.5)  # telemetry is flushed about once a second; what a SIGKILL loses is not the point here

    c.kill_scheduler(signal.SIGKILL)
    c.start_scheduler(wait=True)

    cfg_after = {fn: config_of(c.get_json("/v1/functions/" + fn)) for fn in (F1, F2)}
    expect(cfg_after == cfg_before, "functions and policies survive the restart",
           {"before": cfg_before, "after": cfg_after})
    c.wait_agents_alive(list(c.agents), timeout=3.0)

    def same_vms():
        vs = c.vms()
        ids = sorted(v["vm_id"] for v in vs)
        return ids == ids_before, {"before": ids_before, "now": vm_summary(vs)}
    wait_until(same_vms, 3.0, "the VM set after the agents re-hello equals the set before the kill")
    # Past the adoption grace nothing must be restored twice.
    time.sleep(3 * HEARTBEAT_MS / 1000.0 + 0.5)
    vs = c.vms()
    ids = sorted(v["vm_id"] for v in vs)
    expect(ids == ids_before, "VM set still the same after the adoption grace",
           {"before": ids_before, "now": vm_summary(vs)})
    expect(len(ids) == len(set(ids)), "no duplicate vm_ids", ids)
    f1_vms = [v for v in vs if v.get("function") == F1]
    p = c.pool(F1)
    expect(len(f1_vms) == 2 and p.get("idle") == 2 and p.get("target_idle", 2) == f1_target,
           "f1 has exactly its target (2) VMs, not double", {"pool": p, "f1_vms": vm_summary(f1_vms)})
    return "%d VMs adopted" % len(ids)


# ---- (j) ------------------------------------------------------------------------------------
def check_j(c):
    """Every acquire is one invocation in the forecasting history: counted per function per
    minute and written to PostgreSQL in batches (flushed about once a second)."""
    for fn in (F1, F2):
        st, lease = c.http("POST", "/v1/functions/%s/acquire" % fn, {"timeout_ms": 5000})
        expect(st == 200, "acquire %s -> %s" % (fn, st), lease)
        st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 3})
        expect(st == 200, "release %s -> %s" % (fn, st), body)
    before = getattr(State, "acquires_before_restart", {F1: 0, F2: 0})
    acquires = {fn: before[fn] + c.pool(fn).get("acquires", 0) for fn in (F1, F2)}
    psql = "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(psql):
        psql = "psql"

    def stored():
        r = subprocess.run([psql, "-h", c.pg.dir, "-U", "postgres", "-d", "postgres", "-At", "-c",
                            "SELECT function, sum(count) FROM invocation_minutes GROUP BY function"],
                           capture_output=True, text=True, timeout=10)
        rows = dict(line.split("|") for line in r.stdout.split() if "|" in line)
        got = {fn: int(rows.get(fn, 0)) for fn in (F1, F2)}
        # Pool counters restart with prewarmd; the table keeps everything since the first start.
        return all(got[fn] == acquires[fn] > 0 for fn in (F1, F2)), {"stored": got, "pool_acquires": acquires,
                                                                       "psql_err": r.stderr[-300:]}
    wait_until(stored, 5.0, "invocation_minutes holds exactly the acquires made before and after the restart")
    return "stored per-minute counts cover %s" % acquires


# ---- (k) ------------------------------------------------------------------------------------
NO_PLACEMENT = {"clouds": [], "regions": [], "zones": [], "max_host_share": 0, "max_zone_share": 0}


def psql_one(c, sql):
    psql = "/usr/lib/postgresql/15/bin/psql"
    if not os.path.exists(psql):
        psql = "psql"
    r = subprocess.run([psql, "-h", c.pg.dir, "-U", "postgres", "-d", "postgres", "-At", "-c", sql],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def check_k(c):
    """Placement constraints round-trip through the API and PostgreSQL; an operator drain moves
    every idle VM off a host, is stored with an audit row, survives a prewarmd restart and is
    undone by undrain."""
    # Placement: set, kept by a PUT that does not name it, cleared by null.
    placement = {"clouds": [], "regions": [], "zones": ["a", "b"], "max_host_share": 1, "max_zone_share": 0.75}
    st, fn = c.http("PUT", "/v1/functions/" + F2, {"placement": placement})
    expect(st == 200 and fn.get("placement") == placement, "PUT f2 placement -> %s" % st, fn)
    st, fn = c.http("PUT", "/v1/functions/" + F2, {"image": "img-f2"})
    expect(st == 200 and fn.get("placement") == placement, "a PUT without placement keeps it", fn)
    st, pool = c.http("PUT", "/v1/functions/%s/pool" % F2, {"min": 0})
    expect(st == 200 and c.get_json("/v1/functions/" + F2).get("placement") == placement,
           "a pool PUT keeps the placement", c.get_json("/v1/functions/" + F2))
    expect(isinstance(pool.get("outgoing"), int), "the pool object has outgoing", pool)

    # Hosts: the new fields, and errors for unknown or invalid ids.
    hosts = c.hosts()
    for h in hosts.values():
        types = {"draining": (bool,), "agent_draining": (bool,), "cloud": (str,), "region": (str,),
                 "zone": (str,), "instance_type": (str,), "cost_per_gib_hour": (int, float), "snapshots": (int,)}
        expect(all(type(h.get(k)) in t for k, t in types.items()),
               "host %s has draining, agent_draining, cloud, region, zone, instance_type, "
               "cost_per_gib_hour, snapshots" % h.get("id"), h)
        expect(h.get("zone") == c.agents[h["id"]].labels.get("zone") and h.get("draining") is False,
               "host %s: zone from its label, not draining" % h.get("id"), h)
        one = c.get_json("/v1/hosts/" + h["id"])
        expect(one.get("id") == h["id"] and one.get("zone") == h.get("zone"), "GET /v1/hosts/{id}", one)
    for method, path, code in (("POST", "/v1/hosts/no-such-host/drain", 404),
                               ("POST", "/v1/hosts/no-such-host/undrain", 404),
                               ("GET", "/v1/hosts/no-such-host", 404),
                               ("POST", "/v1/hosts/bad%20id/drain", 400),
                               ("GET", "/v1/hosts/%s/drain" % sorted(hosts)[0], 405)):
        st, body = c.http(method, path)
        expect(st == code and is_error_body(body, st), "%s %s -> %s (want %d)" % (method, path, st, code), body)
    expect(psql_one(c, "SELECT count(*) FROM hosts WHERE id = 'no-such-host'") == "0",
           "a refused drain wrote nothing")

    # Drain the host with the most VMs: everything idle moves to the other one.
    for fn in (F1, F2):
        wait_until(lambda: settled(c, fn), 3.0, "%s pool settled before the drain" % fn)
    per_host = {}
    for v in c.vms():
        per_host[v["host"]] = per_host.get(v["host"], 0) + 1
    victim = max(sorted(c.agents), key=lambda h: per_host.get(h, 0))
    other = [a for a in sorted(c.agents) if a != victim][0]
    f1_idle = c.pool(F1).get("idle")
    st, h = c.http("POST", "/v1/hosts/%s/drain" % victim)
    expect(st == 200 and h.get("id") == victim and h.get("draining") is True, "drain %s -> %s" % (victim, st), h)

    def moved():
        vs = c.vms()
        on_victim = [v for v in vs if v.get("host") == victim]
        q = c.pool(F1)
        return (not on_victim and q.get("idle") == f1_idle and q.get("outgoing") == 0,
                {"on_victim": vm_summary(on_victim), "f1": pool_view(q, ("idle", "restoring", "stopping",
                                                                         "outgoing"))})
    wait_until(moved, 5.0, "no VM left on drained %s and f1 back to idle==%s on %s" % (victim, f1_idle, other))
    expect(c.hosts()[victim].get("draining") is True, "GET /v1/hosts shows the drain", c.hosts()[victim])

    # The drain is stored and survives a restart: nothing is placed on the host afterwards.
    stored = psql_one(c, "SELECT draining::text || ' ' || drain_changed_by FROM hosts WHERE id = '%s'" % victim)
    expect(stored == "true api", "hosts row says draining, by api", stored)
    c.kill_scheduler(signal.SIGKILL)
    c.start_scheduler(wait=True)
    c.wait_agents_alive(list(c.agents), timeout=3.0)
    expect(c.get_json("/v1/hosts/" + victim).get("draining") is True, "the drain survives the restart",
           c.get_json("/v1/hosts/" + victim))
    expect(c.get_json("/v1/functions/" + F2).get("placement") == placement,
           "the placement survives the restart", c.get_json("/v1/functions/" + F2))
    c.wait_adopt_grace()
    st, lease = c.http("POST", "/v1/functions/%s/acquire" % F1, {"timeout_ms": 5000})
    expect(st == 200 and lease.get("host") == other, "an acquire after the restart is served on %s" % other, lease)
    st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 1})
    expect(st == 200, "release -> %s" % st, body)
    on_victim = c.vms(host=victim)
    expect(not on_victim, "no VM placed on the drained host after the restart", vm_summary(on_victim))

    # Undrain, and clear the placement.
    st, h = c.http("POST", "/v1/hosts/%s/undrain" % victim, raw=b"")
    expect(st == 200 and h.get("draining") is False, "undrain %s -> %s" % (victim, st), h)
    expect(c.get_json("/v1/hosts/" + victim).get("draining") is False, "GET shows the undrain")
    audit = psql_one(c, "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE subject = '%s'" % victim)
    expect(audit == "host.drain,host.undrain", "audit rows for the drain and the undrain", audit)
    st, fn = c.http("PUT", "/v1/functions/" + F2, {"placement": None})
    expect(st == 200 and fn.get("placement") == NO_PLACEMENT, "placement null clears it", fn)
    return "drained %s (%d VMs moved to %s), restart kept it, undrained" % (victim, per_host.get(victim, 0), other)


def main():
    checks = Checks("test_foundation: PostgreSQL + prewarmd + 2 agents (sim)")
    cluster = Cluster(agents=AGENTS, heartbeat_ms=HEARTBEAT_MS, sim_restore_ms=RESTORE_MS,
                      name="foundation")
    with checks.setup_guard():
        with cluster as c:
            log_line = "cluster up: http 127.0.0.1:%d, agents %s" % (c.http_port, c.agents_url)
            print(log_line, flush=True)
            c.wait_adopt_grace()  # a fresh prewarmd waits 3 heartbeats for agents' VMs first
            for name, fn in (("(a) fixed pool min=3 fills to 3 idle", check_a),
                             ("(b) acquire is warm, pool refills", check_b),
                             ("(c) release", check_c),
                             ("(d) cold start on an empty pool", check_d),
                             ("(e) min=0 drains idle VMs after keep-alive", check_e),
                             ("(f) bad input rejected, state unchanged", check_f),
                             ("(g) killed agent declared dead, pool refills elsewhere", check_g),
                             ("(h) restarted agent alive again", check_h),
                             ("(i) prewarmd restart keeps config and adopts VMs", check_i),
                             ("(j) invocations reach PostgreSQL per function per minute", check_j),
                             ("(k) placement persists; drain moves VMs, survives a restart", check_k)):
                checks.check(name, fn, c)
            checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
