#!/usr/bin/env python3
"""test_microvm.py — real microVMs end to end: PostgreSQL, prewarmd and one prewarm-agent with
the qemu driver (QEMU microvm guests; TCG where KVM cannot be proven, which is the case on
nested hosts), guest images from agents/guest/build-guest.sh.

Checks, in order:
 (a) PUT of a function makes its golden snapshot on the host (GET /v1/hosts snapshots, the RAM
     file on tmpfs) and the host says which accelerator it uses (label accelerator)
 (b) pool min=2 gives 2 restored VMs: 2 QEMU processes, no RAM file of their own
 (c) acquire returns an address where HTTP GET reaches the function's handler in the VM; two
     VMs answer with different X-Prewarm-Instance
 (d) two functions with different handlers answer differently
 (e) a bad image (missing, or of another function) fails the restore with a clear reason and
     the agent stays up
 (f) agent SIGKILL with 5 VMs running, then a restart: every QEMU is adopted (GET /v1/vms
     shows the same VM ids as the processes on the host) and still answers HTTP
 (g) release and destroy (pool min 0 + keep-alive, DELETE) leave no QEMU process (no zombie
     either) and no RAM file but the golden snapshots'
 (h) SIGTERM of the agent with VMs running destroys them: nothing left behind
Prints measured times. Skips loudly without QEMU, or fails when PREWARM_REQUIRE_QEMU=1.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (REPO, Agent, Checks, Cluster, HarnessError, become_subreaper,  # noqa: E402
                     build_guest_image, qemu_skip_or_fail,
                     expect, qemu_processes, reap, wait_until)

HEARTBEAT_MS = 500
AGENT = "qa"
FN_A, FN_B = "mv-a", "mv-b"
BODY_A = "hello from mv-a"


class S:
    img_a = img_b = None
    run_dir = mem_dir = None
    seen_pids = set()  # every QEMU of ours ever seen, to check for zombies at the end
    bodies = {}


def log(msg):
    print(msg, flush=True)





# ---- the host's view ---------------------------------------------------------------------------
def our_qemus():
    """{pid: (vm id hex, state, ppid)} of the QEMU processes whose sockets are in our run dir."""
    found = qemu_processes(S.run_dir)
    S.seen_pids.update(found)
    return found


def running_ids():
    return sorted(v[0] for v in our_qemus().values() if v[1] != "Z")


def ram_files():
    return sorted(f for f in os.listdir(S.mem_dir) if f.endswith(".mem"))


def snapshot_ram_files():
    """The RAM files the golden snapshots' manifests name."""
    names = []
    root = os.path.join(S.run_dir, "snapshots")
    for fn in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, fn, "snapshot.json")) as f:
                names.append(os.path.basename(json.load(f)["mem_path"]))
        except (OSError, ValueError, KeyError):
            pass
    return sorted(names)


def vm_dirs():
    return sorted(d for d in os.listdir(S.run_dir) if len(d) == 16)


def http_get(address, timeout=10):
    t = time.monotonic()
    with urllib.request.urlopen("http://%s/hello?x=1" % address, timeout=timeout) as r:
        body = r.read().decode()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body, (time.monotonic() - t) * 1000


def put_fn(c, name, image, pool):
    st, fn = c.http("PUT", "/v1/functions/" + name,
                    {"image": image, "memory_mb": 128, "vcpus": 1, "pool": pool})
    expect(st == 200, "PUT /v1/functions/%s -> %s" % (name, st), fn)


def wait_idle(c, fn, n, timeout):
    def pred():
        p = c.pool(fn)
        return p.get("idle") == n and p.get("restoring") == 0, {k: p.get(k) for k in
                                                                 ("idle", "leased", "restoring", "failed")}
    return wait_until(pred, timeout, "%s idle == %d" % (fn, n), interval=0.1)


def acquire(c, fn, timeout_ms=20000):
    st, lease = c.http("POST", "/v1/functions/%s/acquire" % fn, {"timeout_ms": timeout_ms},
                       timeout=timeout_ms / 1000 + 10)
    expect(st == 200, "acquire %s -> %s" % (fn, st), lease)
    return lease


def release(c, lease):
    st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"],
                      {"duration_ms": 5, "outcome": "ok"})
    expect(st == 200, "release -> %s" % st, body)


# ---- checks -------------------------------------------------------------------------------------
def check_a(c):
    t0 = time.monotonic()
    put_fn(c, FN_A, S.img_a, {"policy": "fixed", "min": 0, "max": 8, "keepalive_ms": 60000})
    wait_until(lambda: (lambda h: (h.get("snapshots") == 1, h))(c.hosts()[AGENT]), 90,
               "GET /v1/hosts shows 1 snapshot on %s" % AGENT)
    took = time.monotonic() - t0
    host = c.hosts()[AGENT]
    accel = host.get("labels", {}).get("accelerator")
    expect(accel in ("tcg", "kvm"), "label accelerator is tcg or kvm", host.get("labels"))
    expect(len(ram_files()) == 1 and ram_files() == snapshot_ram_files(),
           "one RAM file in the memory directory, the snapshot's", ram_files())
    wait_until(lambda: (not our_qemus(), our_qemus()), 10, "the golden VM gone")
    expect(c.vms(FN_A) == [], "no VM yet (pool min 0)", c.vms(FN_A))
    return "snapshot in %.1f s after the PUT (golden boot + snapshot), accelerator %s" % (took, accel)


def check_b(c):
    t0 = time.monotonic()
    st, p = c.http("PUT", "/v1/functions/%s/pool" % FN_A, {"min": 2})
    expect(st == 200, "PUT pool min=2 -> %s" % st, p)
    wait_idle(c, FN_A, 2, 60)
    took = time.monotonic() - t0
    q = our_qemus()
    expect(len(running_ids()) == 2, "2 QEMU processes", q)
    vms = c.vms(FN_A, host=AGENT)
    expect(sorted(v["vm_id"] for v in vms) == running_ids(),
           "GET /v1/vms matches the QEMU processes", {"api": vms, "host": q})
    expect(ram_files() == snapshot_ram_files(), "restored VMs have no RAM file of their own",
           ram_files())
    # Each QEMU runs on its NUMA node's CPUs with its memory bound to that node.
    node = c.hosts()[AGENT]["numa"][0]
    bound = []
    for pid in q:
        with open("/proc/%d/status" % pid) as f:
            cpus = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("Cpus_allowed_list")]
        with open("/proc/%d/numa_maps" % pid) as f:
            policies = {ln.split()[1] for ln in f if len(ln.split()) > 1}
        expect(cpus == [node["cpus"]], "QEMU %d runs on node %d's CPUs" % (pid, node["id"]),
               (cpus, node))
        expect(policies == {"bind:%d" % node["id"]}, "QEMU %d's memory is bound to node %d"
               % (pid, node["id"]), policies)
        bound.append("%d: CPUs %s, bind:%d" % (pid, cpus[0], node["id"]))
    return "2 VMs restored and RUNNING %.2f s after the PUT; %s" % (took, "; ".join(bound))


def check_c(c):
    l1 = acquire(c, FN_A)
    l2 = acquire(c, FN_A)
    try:
        expect(l1["vm_id"] != l2["vm_id"], "two leases, two VMs", [l1, l2])
        answers = []
        for lease in (l1, l2):
            expect(lease.get("address", "").startswith("127.0.0.1:"), "address 127.0.0.1:port", lease)
            st, hdr, body, ms = http_get(lease["address"])
            expect(st == 200 and body == BODY_A, "GET -> 200 %r" % BODY_A, (st, body))
            expect(hdr.get("x-prewarm-function") == FN_A, "X-Prewarm-Function", hdr)
            expect(hdr.get("x-prewarm-instance") == lease["vm_id"],
                   "X-Prewarm-Instance is the VM's id", (hdr, lease))
            answers.append((lease["address"], hdr.get("x-prewarm-instance"), ms))
        expect(answers[0][1] != answers[1][1], "the instances differ", answers)
        S.bodies[FN_A] = BODY_A
    finally:
        release(c, l1)
        release(c, l2)
    return "; ".join("GET %s -> instance %s in %.0f ms" % a for a in answers)


def check_d(c):
    t0 = time.monotonic()
    put_fn(c, FN_B, S.img_b, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 500})
    wait_idle(c, FN_B, 1, 90)
    took = time.monotonic() - t0
    lease = acquire(c, FN_B)
    try:
        st, hdr, body, ms = http_get(lease["address"])
    finally:
        release(c, lease)
    expect(st == 200 and body.startswith("hello from mv-b"), "GET mv-b -> 200 hello from mv-b",
           (st, body))
    expect(hdr.get("x-prewarm-function") == FN_B, "X-Prewarm-Function mv-b", hdr)
    expect(body != S.bodies[FN_A], "mv-a and mv-b answer differently", body)
    expect(c.hosts()[AGENT].get("snapshots") == 2, "2 snapshots on the host", c.hosts()[AGENT])
    return "mv-b: golden + restore %.1f s after the PUT; GET -> %r in %.0f ms" % (took, body.strip(), ms)


def check_e(c):
    agent = c.agents[AGENT].process
    before = len(agent.log_text())
    put_fn(c, "mv-bad", "/nonexistent/mv-bad", {"policy": "fixed", "min": 0, "max": 2})
    put_fn(c, "mv-wrong", S.img_a, {"policy": "fixed", "min": 0, "max": 2})
    for fn in ("mv-bad", "mv-wrong"):
        st, body = c.http("POST", "/v1/functions/%s/acquire" % fn, {"timeout_ms": 1500}, timeout=15)
        expect(st == 503, "acquire %s with a bad image -> 503" % fn, (st, body))
    for fn in ("mv-bad", "mv-wrong"):
        st, body = c.http("DELETE", "/v1/functions/" + fn)
        expect(st in (200, 204), "DELETE %s -> %s" % (fn, st), body)
    expect(agent.running(), "the agent is still running")
    text = agent.log_text()[before:]
    want = ["golden snapshot of mv-bad failed: image /nonexistent/mv-bad",
            'image %s is of function \\"mv-a\\", not \\"mv-wrong\\"' % S.img_a]
    for w in want:
        expect(w in text, "the agent reports %r" % w, text[-1500:])
    line = [ln for ln in text.splitlines() if "mv-bad failed" in ln and "event" in ln]
    wait_until(lambda: (not any(len(d) == 16 for d in os.listdir(S.run_dir))
                        or set(vm_dirs()) == set(running_ids()), vm_dirs()), 10,
               "no VM directory left by the failures")
    expect(ram_files() == snapshot_ram_files(), "no RAM file left by the failures", ram_files())
    return "reported: %s" % (line[0][line[0].find("failed"):][:160] if line else want[0])


def check_f(c):
    put_fn(c, FN_B, S.img_b, {"policy": "fixed", "min": 0, "max": 4, "keepalive_ms": 200})
    st, p = c.http("PUT", "/v1/functions/%s/pool" % FN_A, {"min": 5})
    expect(st == 200, "PUT pool min=5 -> %s" % st, p)
    wait_idle(c, FN_A, 5, 60)
    wait_until(lambda: (len(running_ids()) == 5 and not c.vms(FN_B), running_ids()), 20,
               "5 QEMU processes (mv-a only)")
    before = {pid: v for pid, v in our_qemus().items() if v[1] != "Z"}
    agent = c.agents[AGENT].process
    old_pid = agent.pid
    agent.kill(signal.SIGKILL)
    time.sleep(0.3)
    after_kill = {pid: v for pid, v in our_qemus().items() if v[1] != "Z"}
    expect(set(after_kill) == set(before), "the VMs outlive the agent", after_kill)
    expect(all(v[2] != old_pid for v in after_kill.values()), "reparented away from the dead agent",
           after_kill)
    logged = len(agent.log_text())
    t0 = time.monotonic()
    c.start_agent(AGENT)
    ids = sorted(v[0] for v in before.values())
    wait_until(lambda: "hello accepted" in agent.log_text()[logged:], 30,
               "the restarted agent's hello accepted")
    hello = time.monotonic() - t0

    def matches():
        api = sorted(v["vm_id"] for v in c.vms(host=AGENT))
        hs = c.hosts().get(AGENT, {})
        return hs.get("state") == "alive" and api == ids and running_ids() == ids, \
            {"api": api, "host": running_ids(), "state": hs.get("state")}
    wait_until(matches, 30, "GET /v1/vms == the QEMU processes on the host, same ids")
    took = time.monotonic() - t0
    now = {pid: v for pid, v in our_qemus().items() if v[1] != "Z"}
    expect(set(now) == set(before), "the same QEMU processes (none restarted, none added)",
           {"before": before, "now": now})
    text = agent.log_text()[logged:]
    expect(text.count("adopted from an earlier agent: pid") == len(before),
           "the agent logs %d adoptions" % len(before), text[-2000:])
    wait_idle(c, FN_A, 5, 20)
    lease = acquire(c, FN_A)
    try:
        st, hdr, body, ms = http_get(lease["address"])
    finally:
        release(c, lease)
    expect(st == 200 and body == BODY_A and hdr.get("x-prewarm-instance") == lease["vm_id"],
           "an adopted VM answers", (st, hdr, body))
    return "%d QEMU before the SIGKILL, %d after the restart, all adopted; hello %.1f s and the " \
           "scheduler in sync %.1f s after the restart" % (len(before), len(now), hello, took)


def check_g(c):
    st, p = c.http("PUT", "/v1/functions/%s/pool" % FN_A, {"min": 0, "keepalive_ms": 300})
    expect(st == 200, "PUT pool min=0 -> %s" % st, p)
    st, body = c.http("DELETE", "/v1/functions/" + FN_B)
    expect(st in (200, 204), "DELETE mv-b -> %s" % st, body)
    t0 = time.monotonic()
    wait_until(lambda: (not c.vms(), c.vms()), 30, "no VM in GET /v1/vms")
    wait_until(lambda: (not running_ids(), our_qemus()), 15, "no QEMU process of ours")
    took = time.monotonic() - t0
    # Adopted QEMUs are no longer the agent's children: their parent (here this test, a
    # subreaper) reaps them; the agent reaps its own.
    def all_gone():
        reap(list(S.seen_pids))
        left = [pid for pid in S.seen_pids if os.path.exists("/proc/%d" % pid)]
        return not left, left
    wait_until(all_gone, 10, "no QEMU process of ours, zombie or not")
    wait_until(lambda: (not vm_dirs(), vm_dirs()), 10, "no VM directory in the run dir")
    expect(ram_files() == snapshot_ram_files() and len(ram_files()) == 2,
           "only the 2 golden snapshots' RAM files remain", {"mem": ram_files()})
    return "all VMs gone %.1f s after min 0 / DELETE; mem dir: %s" % (took, " ".join(ram_files()))


def check_h(c):
    st, p = c.http("PUT", "/v1/functions/%s/pool" % FN_A, {"min": 2})
    expect(st == 200, "PUT pool min=2 -> %s" % st, p)
    wait_idle(c, FN_A, 2, 60)
    pids = [pid for pid, v in our_qemus().items() if v[1] != "Z"]
    expect(len(pids) == 2, "2 QEMU processes", our_qemus())
    t0 = time.monotonic()
    rc = c.agents[AGENT].process.stop(grace=20)
    took = time.monotonic() - t0
    expect(rc == 0, "the agent exits 0 after SIGTERM", rc)
    expect(not running_ids(), "its VMs are gone", our_qemus())
    expect(not [p for p in pids if os.path.exists("/proc/%d" % p)], "reaped, no zombie", pids)
    expect(not vm_dirs(), "no VM directory", vm_dirs())
    expect(ram_files() == snapshot_ram_files(), "no RAM file but the snapshots'", ram_files())
    return "SIGTERM -> agent exited 0 in %.2f s, 2 VMs destroyed" % took


# ---- main ---------------------------------------------------------------------------------------
def cleanup():
    """Whatever happened: kill our QEMUs, reap them, remove the directories."""
    for pid in our_qemus():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [p for p, v in our_qemus().items() if v[1] != "Z"]:
        time.sleep(0.05)
    reap(list(S.seen_pids))
    for d in (S.run_dir, S.mem_dir):
        if d:
            shutil.rmtree(d, ignore_errors=True)


def main():
    t_start = time.monotonic()
    if shutil.which("qemu-system-x86_64") is None:
        return qemu_skip_or_fail("test_microvm", "no qemu-system-x86_64 in PATH (apt-get install qemu-system-x86)")
    checks = Checks("test_microvm: PostgreSQL + prewarmd + 1 agent (qemu driver, real microVMs)")
    try:
        S.img_a = build_guest_image(FN_A, "--static", BODY_A)
        S.img_b = build_guest_image(FN_B, "--command", 'echo "hello from mv-b, instance $PREWARM_INSTANCE"')
    except (HarnessError, subprocess.SubprocessError, OSError) as e:
        if os.environ.get("PREWARM_REQUIRE_QEMU") == "1":
            checks.fail("guest images", str(e))
            return checks.finish()
        return qemu_skip_or_fail("test_microvm", "guest images could not be built: %s" % e)
    if not become_subreaper():
        log("note: not a subreaper; QEMUs orphaned by the SIGKILL are reaped by PID 1 (or not)")
    S.run_dir = tempfile.mkdtemp(prefix="pwmv-", dir="/tmp")
    S.mem_dir = tempfile.mkdtemp(prefix="pwmv-", dir="/dev/shm")
    agent = Agent(AGENT, None, driver="qemu",
                  extra_args=["--qemu-accel", "auto", "--qemu-probe-image", S.img_a,
                              "--qemu-run-dir", S.run_dir, "--qemu-mem-dir", S.mem_dir,
                              "--qemu-restore-timeout-ms", "30000",
                              # Warm VMs idle: offer more vCPU slots than the host has CPUs.
                              "--vcpu-overcommit", "16"])
    cluster = Cluster(agents=[agent], heartbeat_ms=HEARTBEAT_MS, name="microvm")
    cluster.add_stop_hook(cleanup)
    with checks.setup_guard(cleanup=cleanup):
        with cluster as c:
            log("cluster up: http 127.0.0.1:%d, run dir %s, mem dir %s (%.1f s)"
                % (c.http_port, S.run_dir, S.mem_dir, time.monotonic() - t_start))
            c.wait_adopt_grace()
            for name, fn in (("(a) PUT makes the golden snapshot; accelerator label", check_a),
                             ("(b) pool min=2 gives 2 restored VMs", check_b),
                             ("(c) acquire -> HTTP reaches the handler; instances differ", check_c),
                             ("(d) two functions answer differently", check_d),
                             ("(e) a bad image fails cleanly", check_e),
                             ("(f) agent SIGKILL with 5 VMs + restart: all adopted", check_f),
                             ("(g) release + destroy leave no process, no RAM file", check_g),
                             ("(h) SIGTERM destroys the VMs", check_h)):
                if not checks.check(name, fn, c) and name.startswith(("(a)", "(b)")):
                    break  # everything after needs the snapshot and the pool
            checks.done_with(c)
    log("test_microvm took %.1f s" % (time.monotonic() - t_start))
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
