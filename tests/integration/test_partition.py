#!/usr/bin/env python3
"""test_partition.py — a network partition between one agent and prewarmd, then healed.

The test makes its own network namespace and veth pair (10.231.0.1/30 on the host side,
10.231.0.2/30 inside), runs agent n1 inside the namespace (`ip netns exec`) and agents h1, h2
on the host; prewarmd listens for agents on 10.231.0.1 only, and its HTTP API on 127.0.0.1.
No traffic goes anywhere but those two addresses and loopback; no firewall rule is used. The
partition is the host-side veth set down; healing sets it up again. The namespace and the veth
are deleted in a finally block and by a cluster stop hook, also on failure.

Checks, under acquire -> hold -> release traffic (the invariants of test_faults.py):
 (a) setup: n1 holds VMs of f1 (it is the cheapest host)
 (b) partition: n1 declared dead after 3 missed heartbeats, its VMs replaced on h1/h2, pools
     at target; no lease on n1's VMs; the partitioned agent still holds them (its own view)
 (c) heal: n1 alive again, its stale VMs adopted or destroyed, scheduler view == agents'
     views, surplus trimmed back to min, config intact
Prints "recovery: ..." lines with the measured times, one line per check and "N passed, M
failed" last. Needs root (network namespaces): when `ip netns add` is not permitted the test
says so and FAILS, unless PW_SKIP_NETNS=1, which turns that into a loud SKIP.
"""

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_faults as tf  # noqa: E402
from harness import Agent, Checks, Cluster, HarnessError, expect, free_ports, log, wait_until  # noqa: E402

HOST_ADDR, NS_ADDR, PREFIX = "10.231.0.1", "10.231.0.2", 30
TAG = "%d" % (os.getpid() % 100000)
NS = "pwpart" + TAG
VETH_HOST, VETH_NS = "pwp%sh" % TAG, "pwp%sn" % TAG  # at most 15 characters
IP = shutil.which("ip") or "/usr/sbin/ip"

FUNCTIONS = {
    "f1": {"image": "img-f1", "memory_mb": 128, "vcpus": 1,
           "pool": {"policy": "fixed", "min": 4, "max": 12, "keepalive_ms": tf.KEEPALIVE_MS},
           "placement": {"max_host_share": 0.5}},
    "f2": {"image": "img-f2", "memory_mb": 256, "vcpus": 1,
           "pool": {"policy": "fixed", "min": 2, "max": 8, "keepalive_ms": tf.KEEPALIVE_MS}},
}
BOUND_HEAL = 20.0   # includes TCP's retransmission back-off on the connection that was cut


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise HarnessError("%s failed (rc %d): %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r


class Netns:
    """The namespace and veth pair this test creates, and removes (idempotently)."""

    def __init__(self):
        self.made_ns = False

    def setup(self):
        used = sh(IP, "-o", "-4", "addr", "show").stdout
        if "10.231.0." in used:
            raise HarnessError("10.231.0.0/%d is already in use on this machine; not touching it" % PREFIX)
        sh(IP, "netns", "add", NS)
        self.made_ns = True
        sh(IP, "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS, "netns", NS)
        sh(IP, "addr", "add", "%s/%d" % (HOST_ADDR, PREFIX), "dev", VETH_HOST)
        sh(IP, "link", "set", VETH_HOST, "up")
        sh(IP, "netns", "exec", NS, IP, "link", "set", "lo", "up")
        sh(IP, "netns", "exec", NS, IP, "addr", "add", "%s/%d" % (NS_ADDR, PREFIX), "dev", VETH_NS)
        sh(IP, "netns", "exec", NS, IP, "link", "set", VETH_NS, "up")
        wait_until(lambda: sh(IP, "netns", "exec", NS, "ping", "-c", "1", "-W", "1", HOST_ADDR,
                              check=False).returncode == 0 if shutil.which("ping") else True,
                   5.0, "the namespace reaches %s" % HOST_ADDR)

    def link(self, up):
        sh(IP, "link", "set", VETH_HOST, "up" if up else "down")

    def cleanup(self):
        # Deleting the namespace deletes its end of the pair, and with it the host end.
        if self.made_ns:
            sh(IP, "netns", "del", NS, check=False)
            self.made_ns = False
        if sh(IP, "link", "show", VETH_HOST, check=False).returncode == 0:
            sh(IP, "link", "del", VETH_HOST, check=False)
        left = [x for x in (sh(IP, "netns", "list", check=False).stdout.split()) if x == NS]
        if left or sh(IP, "link", "show", VETH_HOST, check=False).returncode == 0:
            raise HarnessError("could not remove netns %s / veth %s" % (NS, VETH_HOST))


def netns_permitted():
    """None when `ip netns add` works here, else why not."""
    if not os.path.exists(IP):
        return "no ip(8) binary"
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    probe = "pwprobe" + TAG
    r = sh(IP, "netns", "add", probe, check=False)
    if r.returncode != 0:
        return "`ip netns add` failed: %s" % r.stderr.strip()
    sh(IP, "netns", "del", probe, check=False)
    return None


def make_agents():
    ns_port, h1_port, h2_port = free_ports(3)
    return [
        Agent("n1", "2node", {"zone": "ns", "cost_per_gib_hour": "0.001"}, wrapper=[IP, "netns", "exec", NS],
              extra_args=["--metrics-listen", "%s:%d" % (NS_ADDR, ns_port), "--vcpu-overcommit", "4"]),
        Agent("h1", "2node", {"zone": "h1", "cost_per_gib_hour": "0.002"},
              extra_args=["--metrics-listen", "127.0.0.1:%d" % h1_port, "--vcpu-overcommit", "4"]),
        Agent("h2", "2node", {"zone": "h2", "cost_per_gib_hour": "0.003"},
              extra_args=["--metrics-listen", "127.0.0.1:%d" % h2_port, "--vcpu-overcommit", "4"]),
    ]


class State:
    baseline = None


def check_setup(c):
    for fn, body in FUNCTIONS.items():
        st, obj = c.http("PUT", "/v1/functions/" + fn, body)
        expect(st == 200, "PUT /v1/functions/%s -> %s" % (fn, st), obj)
    wait_until(lambda: tf.recovered(c), 5.0, "pools at target and views agree")
    State.baseline = tf.config_snapshot(c)
    on_n1 = c.vms(host="n1")
    expect(len(on_n1) >= 2, "n1 (cheapest) holds VMs before the partition", on_n1)
    return "n1 holds %d VMs; agents dial %s" % (len(on_n1), c.agents_url)


def check_partition(c, net):
    a = c.agents["n1"]
    lines = []
    with tf.Traffic(c) as tr:
        time.sleep(0.5)
        t0 = time.monotonic()
        net.link(False)
        try:
            dead = tf.measure(lambda: (c.hosts()["n1"]["state"] == "dead", c.hosts()["n1"]["state"]),
                              tf.BOUND_DEAD, "n1 declared dead", t0)
            repl = tf.measure(lambda: tf.recovered(c, away=("n1",)) if not c.vms(host="n1")
                              else (False, "VMs on n1"), tf.BOUND_REPLACED, "VMs replaced on h1/h2", t0)
            lines.append(tf.recovery("partition -> n1 dead in %.2f s, its VMs replaced elsewhere, pools at "
                                     "target" % dead, repl, tf.BOUND_REPLACED))
            ok, problems = tf.leases_on_live_vms(c)
            expect(ok, "no lease on n1's VMs while it is cut off", problems)
            stale = tf.agent_log_view(a)
            expect(a.process.running() and len(stale) >= 2, "n1 runs on and still holds its VMs", stale)
            # Long enough for n1's request to time out (2 heartbeats + 1 s) and be retried unanswered.
            time.sleep(max(0.0, 2 * tf.DEAD_S + 2.0 - (time.monotonic() - t0)))
            stale = tf.agent_log_view(a)
        finally:
            net.link(True)
        t1 = time.monotonic()
        alive = tf.measure(lambda: (c.hosts()["n1"]["state"] == "alive", c.hosts()["n1"]["state"]),
                           BOUND_HEAL, "n1 alive again after the heal", t1)

        def reconciled():
            ok, obs = tf.recovered(c)
            held = tf.agent_log_view(a)
            sched = {v["vm_id"] for v in c.vms(host="n1")}
            destroyed = tf.agent_log_destroyed(a)
            loose = [v for v in stale if v in held and v not in sched]
            unexplained = [v for v in stale if v not in held and v not in sched and v not in destroyed]
            return ok and not loose and not unexplained, {"recovered": obs, "held_not_known": loose,
                                                          "vanished_without_destroy": unexplained}
        back = tf.measure(reconciled, BOUND_HEAL, "stale VMs reconciled, views agree", t1)
        lines.append(tf.recovery("heal -> n1 alive in %.2f s, its stale VMs reconciled, views agreeing"
                                 % alive, back, BOUND_HEAL))
        time.sleep(0.3)
    tf.expect_traffic_served(tr, t0, None, "partition")
    log("  " + tr.summary())
    t2 = time.monotonic()

    def trimmed():
        seen = {fn: (c.pool(fn).get("idle"), c.pool(fn).get("leased"), c.pool(fn).get("restoring"))
                for fn in FUNCTIONS}
        return all(s == (FUNCTIONS[fn]["pool"]["min"], 0, 0) for fn, s in seen.items()), seen
    trim = tf.measure(trimmed, tf.KEEPALIVE_MS / 1000.0 + 4.0, "every pool back to exactly min idle", t2)
    lines.append(tf.recovery("traffic stopped -> surplus trimmed, every pool at exactly min idle", trim,
                             tf.KEEPALIVE_MS / 1000.0 + 4.0))
    adopted = len(set(stale) & {v["vm_id"] for v in c.vms(host="n1")})
    return "n1 held %d VMs through the partition (%d still adopted now); %s" % (len(stale), adopted, "; ".join(lines))


def main():
    checks = Checks("test_partition: agent n1 in a network namespace, partitioned from prewarmd, healed")
    why = netns_permitted()
    if why is not None:
        bar = "*" * 78
        if os.environ.get("PW_SKIP_NETNS") == "1":
            log("%s\n** SKIP test_partition: network namespaces are not usable here: %s\n"
                "** (PW_SKIP_NETNS=1 is set; without it this is a failure)\n%s" % (bar, why, bar))
            return 0
        checks.fail("network namespaces usable", "%s (set PW_SKIP_NETNS=1 to skip instead)" % why)
        return checks.finish()
    # The helpers of test_faults.py check these pools.
    tf.FUNCTIONS.clear()
    tf.FUNCTIONS.update(FUNCTIONS)
    net = Netns()
    cluster = Cluster(agents=make_agents(), heartbeat_ms=tf.HEARTBEAT_MS, sim_restore_ms=tf.RESTORE_MS,
                      lease_ttl_ms=tf.LEASE_TTL_MS, name="partition", agent_listen_host=HOST_ADDR)
    cluster.add_stop_hook(net.cleanup)  # after the agent in the namespace has stopped
    try:
        net.setup()
        log("netns %s: %s/%d (%s) <-> %s/%d (%s)" % (NS, HOST_ADDR, PREFIX, VETH_HOST, NS_ADDR, PREFIX, VETH_NS))
        with cluster as c:
            log("cluster up: http 127.0.0.1:%d, agents %s" % (c.http_port, c.agents_url))
            c.wait_adopt_grace()
            if checks.check("(a) setup: f1 min 4 (half per host at most), f2 min 2; n1 cheapest", check_setup, c):
                checks.check("(b+c) partition n1 past the dead timeout, then heal", check_partition, c, net)
                checks.check("    invariants after the partition", tf.check_invariants, c, State.baseline)
                checks.check("prewarmd never crashed", lambda: expect(
                    c.scheduler.running() and c.scheduler.starts == 1, "prewarmd running, started once",
                    c.scheduler.starts))
            checks.done_with(c)
    except HarnessError as e:
        checks.fail("setup", str(e))
    except Exception as e:  # noqa: BLE001
        checks.fail("setup", "%s: %s" % (type(e).__name__, e))
    finally:
        try:
            net.cleanup()
        except HarnessError as e:
            checks.fail("netns and veth removed", str(e))
    left = [x for x in sh(IP, "netns", "list", check=False).stdout.split() if x.startswith("pwpart")]
    if sh(IP, "link", "show", VETH_HOST, check=False).returncode == 0 or NS in left:
        checks.fail("netns and veth removed", "still there: %s %s" % (NS, VETH_HOST))
    else:
        log("netns %s and veth %s removed" % (NS, VETH_HOST))
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
