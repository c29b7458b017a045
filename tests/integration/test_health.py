#!/usr/bin/env python3
"""test_health.py — self-healing: a host whose restores fail, or are far slower than the
fleet's, is cordoned automatically (no new VMs, its pools refilled elsewhere, an event in the
log and a metric), and uncordoned once healthy again.

Real processes: PostgreSQL, prewarmd (--cordon 3s) and sim agents. Three healthy hosts
(restores of 50 ms) give the fleet its history; then "flaky" (every restore fails) and
"slow" (restores of 1.5 s) join as the cheapest hosts, so placement prefers them. Checked:
flaky is cordoned for restore_failures and slow for restore_slow, each reported in
/v1/hosts, the log and /metrics; the pools reach their targets on the healthy hosts; a
cordoned host gets no new VM; after flaky is restarted healthy, it is put on probation after
the cordon time, proves itself and is uncordoned. The times are printed.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import BINARY_DIR, Agent, Checks, Cluster, expect, log, wait_until  # noqa: E402

HEALTHY = ["h1", "h2", "h3"]


class S:
    c = None


def host(hid):
    return S.c.hosts().get(hid, {})


def pool(fn):
    return S.c.pool(fn)


def metric(name, label=None):
    st, text = S.c.http("GET", "/metrics")
    for ln in text.splitlines():
        if ln.startswith(name + (("{" + label + "}") if label else " ")):
            return float(ln.rsplit(" ", 1)[1])
    return 0.0


def vms_on(hid, fn=None):
    return [v for v in S.c.vms(fn) if v.get("host") == hid]


def check_fleet_history():
    st, body = S.c.http("PUT", "/v1/functions/f1", {"image": "i", "memory_mb": 128,
                                                    "pool": {"policy": "fixed", "min": 9, "max": 40}})
    expect(st == 200, "PUT f1", body)
    wait_until(lambda: pool("f1").get("idle", 0) >= 9, 15, "f1 at 9 idle on the healthy hosts")
    expect({v["host"] for v in S.c.vms("f1")} == set(HEALTHY), "spread over the fleet", S.c.vms("f1"))


def check_failures_cordoned():
    S.c.start_agent("flaky")
    S.c.wait_agents_alive(["flaky"], timeout=10)
    t0 = time.monotonic()
    st, body = S.c.http("PUT", "/v1/functions/f2", {"image": "i", "memory_mb": 128,
                                                    "pool": {"policy": "fixed", "min": 4, "max": 20}})
    expect(st == 200, "PUT f2", body)
    wait_until(lambda: host("flaky").get("cordoned"), 15, "flaky cordoned")
    t_cordon = time.monotonic() - t0
    h = host("flaky")
    expect(h["cordon_reason"] == "restore_failures" and not h["cordon_probation"], "reason restore_failures", h)
    wait_until(lambda: pool("f2").get("idle", 0) >= 4, 20, "f2 refilled on the healthy hosts")
    t_refill = time.monotonic() - t0
    expect(not vms_on("flaky", "f2"), "no f2 VM on flaky", vms_on("flaky"))
    expect(metric("prewarm_host_cordons_total", 'reason="restore_failures"') == 1, "counted",
           metric("prewarm_host_cordons_total", 'reason="restore_failures"'))
    expect(metric("prewarm_hosts_cordoned") >= 1, "gauge")
    expect("host flaky cordoned: restore_failures" in S.c.scheduler.log_text(), "event in the log")
    ctl = os.path.join(BINARY_DIR, "cli", "prewarmctl")
    r = subprocess.run([ctl, "--server", "http://127.0.0.1:%d" % S.c.http_port, "hosts", "list"],
                       capture_output=True, text=True, timeout=20)
    row = [ln for ln in r.stdout.splitlines() if ln.startswith("flaky ")]
    expect(r.returncode == 0 and row and "cordoned:restore_failures" in row[0], "prewarmctl hosts list shows it",
           r.stdout)
    # No new VM goes there while cordoned: more VMs wanted, none on flaky.
    st, body = S.c.http("PUT", "/v1/functions/f2/pool", {"min": 7})
    wait_until(lambda: pool("f2").get("idle", 0) >= 7, 20, "f2 at 7")
    expect(not vms_on("flaky", "f2"), "still no VM on flaky", vms_on("flaky"))
    line = "recovery: failing host -> cordoned %.2f s, its pool refilled elsewhere %.2f s" % (t_cordon, t_refill)
    log(line)
    return line


def check_slow_cordoned():
    S.c.start_agent("slow")
    S.c.wait_agents_alive(["slow"], timeout=10)
    t0 = time.monotonic()
    st, body = S.c.http("PUT", "/v1/functions/f3", {"image": "i", "memory_mb": 128,
                                                    "pool": {"policy": "fixed", "min": 5, "max": 20}})
    expect(st == 200, "PUT f3", body)
    wait_until(lambda: host("slow").get("cordoned"), 20, "slow cordoned")
    t_cordon = time.monotonic() - t0
    expect(host("slow")["cordon_reason"] == "restore_slow", "reason restore_slow", host("slow"))
    wait_until(lambda: pool("f3").get("idle", 0) >= 5, 20, "f3 at target")
    expect(metric("prewarm_host_cordons_total", 'reason="restore_slow"') == 1, "counted")
    expect("host slow cordoned: restore_slow" in S.c.scheduler.log_text(), "event in the log")
    line = "recovery: slow host (1.5 s restores vs 50 ms) -> cordoned %.2f s" % t_cordon
    log(line)
    return line


def check_uncordon():
    # flaky is repaired: the same host id comes back with healthy restores.
    S.c.kill_agent("flaky")
    a = S.c.agents["flaky"]
    a.extra_args = []  # restores succeed again
    a.process = None
    t0 = time.monotonic()
    S.c.start_agent("flaky")
    S.c.wait_agents_alive(["flaky"], timeout=10)
    wait_until(lambda: host("flaky").get("cordon_probation"), 20, "flaky on probation after the cordon time")
    t_probation = time.monotonic() - t0
    # Demand that placement sends to it (the cheapest host) while on probation.
    st, body = S.c.http("PUT", "/v1/functions/f2/pool", {"min": 12})
    wait_until(lambda: not host("flaky").get("cordoned"), 20, "flaky uncordoned")
    t_clear = time.monotonic() - t0
    wait_until(lambda: pool("f2").get("idle", 0) >= 12, 20, "f2 at 12")
    expect(vms_on("flaky"), "flaky takes VMs again", vms_on("flaky"))
    expect(metric("prewarm_host_uncordons_total") >= 1, "uncordon counted")
    expect("host flaky uncordoned" in S.c.scheduler.log_text(), "event in the log")
    line = "recovery: repaired host -> on probation %.2f s, uncordoned %.2f s (cordon time 3 s)" % (t_probation,
                                                                                                  t_clear)
    log(line)
    return line


def main():
    checks = Checks("self-healing: cordon hosts whose restores fail or are slow against the fleet")
    cheap = {"cost_per_gib_hour": "0.001", "zone": "z"}
    normal = {"cost_per_gib_hour": "0.01", "zone": "z"}
    agents = [Agent(h, "2node", labels=normal, sim_restore_ms=50) for h in HEALTHY]
    agents.append(Agent("flaky", "2node", labels=cheap, sim_restore_ms=50, extra_args=["--sim-fail-rate", "1"]))
    agents.append(Agent("slow", "2node", labels=cheap, sim_restore_ms=1500))
    c = Cluster(agents=agents, name="health", heartbeat_ms=500, scheduler_args=["--cordon", "3s"])
    # flaky and slow join later, once the fleet has a history.
    started = {k: v for k, v in c.agents.items()}
    c.agents = {k: v for k, v in started.items() if k in HEALTHY}
    with c:
        c.agents.update(started)
        S.c = c
        for name, fn in [("the healthy fleet builds a restore history", check_fleet_history),
                         ("failing restores: cordoned, pools refilled elsewhere", check_failures_cordoned),
                         ("slow restores against the fleet: cordoned", check_slow_cordoned),
                         ("repaired: probation, then uncordoned", check_uncordon)]:
            checks.check(name, fn)
        checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
