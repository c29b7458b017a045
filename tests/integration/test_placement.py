#!/usr/bin/env python3
"""test_placement.py — placement across clouds and zones, and a drain without cold starts.

Real PostgreSQL, a real prewarmd and four real prewarm-agent processes (sim driver) on
loopback, each reporting a different topology fixture and labels: two clouds, three zones,
four prices.

  host  fixture  cloud  region      zone  cost/GiB-h
  p1    1node    aws    eu-west     eu-a  0.010
  p2    2node    aws    eu-west     eu-b  0.012
  p3    4node    gcp    eu-central  eu-c  0.008
  p4    2node    aws    eu-west     eu-a  0.015

Checks:
 (a) the agents' labels and topology reach GET /v1/hosts
 (b) "api" (clouds [aws], max_host_share 0.5, min 4): only aws hosts, at most 2 per host, the
     cheapest allowed first (p1 and p2)
 (c) "batch" (zones [eu-c], max_host_share 0.5, min 3): only zone eu-c
 (d) "spread" (max_zone_share 0.33, min 6): 2 VMs in each of the three zones
 (e) every VM sits on one NUMA node of its host, and no node is over-committed
 (f) draining p1 under traffic to "api": its VMs are replaced elsewhere (within the spread
     limit) before they go, every acquire is warm, p1 ends empty and takes nothing new
 (g) undrain: p1 takes VMs again
Prints one line per check and "N passed, M failed" last; exits non-zero on any failure.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Agent, Checks, Cluster, expect, wait_until  # noqa: E402

LABELS = {
    "p1": ("1node", {"cloud": "aws", "region": "eu-west", "zone": "eu-a", "cost_per_gib_hour": "0.010"}),
    "p2": ("2node", {"cloud": "aws", "region": "eu-west", "zone": "eu-b", "cost_per_gib_hour": "0.012"}),
    "p3": ("4node", {"cloud": "gcp", "region": "eu-central", "zone": "eu-c", "cost_per_gib_hour": "0.008"}),
    "p4": ("2node", {"cloud": "aws", "region": "eu-west", "zone": "eu-a", "cost_per_gib_hour": "0.015"}),
}
AGENTS = [Agent(i, fx, labels) for i, (fx, labels) in sorted(LABELS.items())]
ZONE = {i: labels["zone"] for i, (_, labels) in LABELS.items()}


def per_host(c, fn):
    counts = {}
    for v in c.vms(fn):
        if v.get("state") in ("idle", "leased", "restoring"):
            counts[v["host"]] = counts.get(v["host"], 0) + 1
    return counts


def put(c, name, memory_mb, pool, placement):
    body = {"image": "img-" + name, "memory_mb": memory_mb, "vcpus": 1, "pool": pool, "placement": placement}
    st, resp = c.http("PUT", "/v1/functions/%s" % name, body)
    expect(st in (200, 201), "PUT %s -> %s" % (name, st), resp)
    expect(resp.get("placement", {}) == placement or all(resp.get("placement", {}).get(k) == v
                                                           for k, v in placement.items()),
           "the function echoes its placement", resp)


def settled(c, fn, n):
    p = c.pool(fn)
    return (p.get("idle") == n and p.get("restoring") == 0 and p.get("stopping") == 0,
            {k: p.get(k) for k in ("idle", "restoring", "stopping", "leased", "outgoing")})


def check_a(c):
    hs = c.hosts()
    for hid, (fixture, labels) in LABELS.items():
        h = hs.get(hid, {})
        expect(h.get("state") == "alive", "%s alive" % hid, h)
        for k in ("cloud", "region", "zone"):
            expect(h.get(k) == labels[k], "%s %s == %s" % (hid, k, labels[k]), h)
        expect(abs(h.get("cost_per_gib_hour", -1) - float(labels["cost_per_gib_hour"])) < 1e-9,
               "%s cost" % hid, h)
        nodes = int(fixture[0])
        expect(len(h.get("numa", [])) == nodes, "%s reports %d NUMA nodes" % (hid, nodes), h)
        expect(h.get("draining") is False, "%s not draining" % hid, h)
    return "4 hosts, 2 clouds, 3 zones, 1/2/4/2 NUMA nodes"


def check_b(c):
    put(c, "api", 1024, {"policy": "fixed", "min": 4, "max": 8, "keepalive_ms": 1000},
        {"clouds": ["aws"], "max_host_share": 0.5})
    wait_until(lambda: settled(c, "api", 4), 5.0, "api settled at 4 idle")
    counts = per_host(c, "api")
    expect("p3" not in counts, "no api VM on the gcp host", counts)
    expect(all(n <= 2 for n in counts.values()), "at most half (2 of 4) per host", counts)
    expect(counts == {"p1": 2, "p2": 2}, "the two cheapest aws hosts hold them", counts)
    return "api: %s" % counts


def check_c(c):
    put(c, "batch", 512, {"policy": "fixed", "min": 3, "max": 8, "keepalive_ms": 60000},
        {"zones": ["eu-c"], "max_host_share": 0.5})
    # One host in eu-c: a second VM there would be all of a 2-VM pool, above half, so the pool
    # stops at 1 of 3 — spread is a hard limit.
    time.sleep(1.0)
    counts = per_host(c, "batch")
    expect(counts == {"p3": 1}, "1 of 3, in zone eu-c: the spread limit binds with one host", counts)
    # Without the share limit the pool fills on p3.
    put(c, "batch", 512, {"policy": "fixed", "min": 3, "max": 8, "keepalive_ms": 60000}, {"zones": ["eu-c"]})
    wait_until(lambda: settled(c, "batch", 3), 5.0, "batch settled at 3 idle")
    counts = per_host(c, "batch")
    expect(counts == {"p3": 3}, "batch: 3 on p3", counts)
    return "batch: %s" % counts


def check_d(c):
    put(c, "spread", 256, {"policy": "fixed", "min": 6, "max": 12, "keepalive_ms": 60000},
        {"max_zone_share": 0.33})
    wait_until(lambda: settled(c, "spread", 6), 5.0, "spread settled at 6 idle")
    counts = per_host(c, "spread")
    zones = {}
    for h, n in counts.items():
        zones[ZONE[h]] = zones.get(ZONE[h], 0) + n
    expect(zones == {"eu-a": 2, "eu-b": 2, "eu-c": 2}, "2 per zone", zones)
    return "spread: zones %s, hosts %s" % (zones, counts)


def check_e(c):
    hs = c.hosts()
    vms = c.vms()
    used = {}
    for v in vms:
        h = hs.get(v.get("host"), {})
        ids = [n.get("id") for n in h.get("numa", [])]
        expect(v.get("numa_node") in ids, "VM %s on a node of %s" % (v.get("vm_id"), v.get("host")), v)
    for hid, h in hs.items():
        for n in h.get("numa", []):
            expect(n.get("mem_free_mb", -1) >= 0 and n.get("vcpu_free", -1) >= 0,
                   "%s node %s not over-committed" % (hid, n.get("id")), n)
            used[(hid, n.get("id"))] = n.get("mem_total_mb", 0) - n.get("mem_free_mb", 0)
    return "%d VMs, each on one node; busiest node %d MiB placed" % (len(vms), max(used.values()))


def check_f(c):
    before = c.pool("api")
    stop = threading.Event()
    results = {"warm": 0, "cold": 0, "errors": []}

    def traffic():
        while not stop.is_set():
            st, lease = c.http("POST", "/v1/functions/api/acquire", {"timeout_ms": 3000})
            if st != 200:
                results["errors"].append((st, lease))
                time.sleep(0.05)
                continue
            results["warm" if lease.get("start") == "warm" else "cold"] += 1
            time.sleep(0.05)
            c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 50, "outcome": "ok"})

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        st, h = c.http("POST", "/v1/hosts/p1/drain")
        expect(st == 200 and h.get("draining") is True, "POST /v1/hosts/p1/drain -> 200, draining", (st, h))
        t0 = time.monotonic()
        wait_until(lambda: (per_host(c, "api").get("p1", 0) == 0 and c.pool("api").get("outgoing") == 0,
                            per_host(c, "api")), 10.0, "p1 holds no api VM")
        moved_s = time.monotonic() - t0
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(10)
    after = c.pool("api")
    counts = per_host(c, "api")
    expect(not results["errors"], "every acquire answered 200", results["errors"][:3])
    expect(results["cold"] == 0 and after.get("cold") == before.get("cold"),
           "no cold start for api during the drain", (results, before.get("cold"), after.get("cold")))
    expect(results["warm"] >= 5, "traffic ran during the drain", results)
    expect("p1" not in counts and "p3" not in counts, "api off p1, still only on aws", counts)
    # Traffic may have grown the pool (a fixed pool keeps 4 idle beside leased ones); the
    # extras age out after the 1 s keep-alive.
    wait_until(lambda: settled(c, "api", 4), 8.0, "api back to 4 idle")
    counts = per_host(c, "api")
    expect(counts == {"p2": 2, "p4": 2}, "after the drain: half on each remaining aws host", counts)
    # Nothing new lands on p1 while it drains.
    put(c, "fresh", 256, {"policy": "fixed", "min": 3, "max": 6, "keepalive_ms": 60000}, {"clouds": ["aws"]})
    wait_until(lambda: settled(c, "fresh", 3), 5.0, "fresh settled")
    expect("p1" not in per_host(c, "fresh"), "no new VM on the draining host", per_host(c, "fresh"))
    expect(per_host(c, "spread").get("p1", 0) == 0, "every function left p1", per_host(c, "spread"))
    return "p1 emptied in %.2fs under traffic: %d warm acquires, 0 cold; api now %s" % (
        moved_s, results["warm"], counts)


def check_g(c):
    st, h = c.http("POST", "/v1/hosts/p1/undrain")
    expect(st == 200 and h.get("draining") is False, "POST /v1/hosts/p1/undrain -> 200", (st, h))
    st, body = c.http("POST", "/v1/hosts/nope/drain")
    expect(st == 404, "draining an unknown host -> 404", (st, body))
    put(c, "late", 256, {"policy": "fixed", "min": 2, "max": 4, "keepalive_ms": 60000}, {"clouds": ["aws"]})
    wait_until(lambda: settled(c, "late", 2), 5.0, "late settled")
    counts = per_host(c, "late")
    expect(counts.get("p1", 0) >= 1, "p1 takes VMs again (it is the cheapest aws host)", counts)
    return "late: %s" % counts


def main():
    checks = Checks("placement across clouds and zones, drain (4 agents)")
    with Cluster(agents=AGENTS, heartbeat_ms=500, sim_restore_ms=200, name="placement") as c:
        c.wait_agents_alive([a.id for a in AGENTS])
        c.wait_adopt_grace()
        for name, fn in (("(a) labels and topology reach the scheduler", check_a),
                         ("(b) api: aws only, half per host at most, cheapest first", check_b),
                         ("(c) batch: zone eu-c only; the share limit is hard", check_c),
                         ("(d) spread: a third per zone", check_d),
                         ("(e) one NUMA node per VM, no node over-committed", check_e),
                         ("(f) drain p1 under traffic: no cold start", check_f),
                         ("(g) undrain", check_g)):
            checks.check(name, fn, c)
        checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
