#!/usr/bin/env python3
"""test_isolation.py — VM isolation of the qemu driver (--qemu-uid-base/--qemu-uids), with real
QEMU microVMs (TCG where KVM cannot be proven): PostgreSQL, prewarmd and one prewarm-agent run
as root, two functions with one VM each.

Checks, in order:
 (a) the golden snapshots hold private RAM: no RAM file on tmpfs, "ram": "private" in the
     manifest, the snapshot directory 0700 and its state file 0600, both root's
 (b) each QEMU runs as its own uid and gid from the range (real, effective, saved, fs), with no
     supplementary groups, NoNewPrivs 1 and Seccomp 2 (filter) in /proc/PID/status
 (c) each VM directory is owned by its QEMU's uid, mode 0700
 (d) the proof: as VM A's uid (a child process with A's uid/gid and no groups) B's directory
     cannot be listed, B's console.log cannot be read, B's QMP socket cannot be connected and
     B's /proc/PID/maps cannot be read: permission denied each time; as B's uid the same works.
     Neither uid can read a snapshot state file.
 (e) the guests still answer HTTP on their lease addresses
 (f) agent SIGKILL + restart: the VMs are adopted with their uids, and a new VM gets a uid no
     running VM has
 (g) pool min 0: every VM, its directory and its uid gone
 (h) an agent that is not root refuses --qemu-uids with a clear message
Skips loudly without QEMU (or without root), or fails when PREWARM_REQUIRE_QEMU=1.
test_microvm.py covers the default mode (isolation off), which must not change.
"""

import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (AGENT as AGENT_BIN, Agent, Checks, Cluster, HarnessError,  # noqa: E402
                     become_subreaper, build_guest_image, expect, qemu_skip_or_fail, reap,
                     qemu_processes, wait_until)

HEARTBEAT_MS = 500
AGENT = "qi"
FN_A, FN_B = "iso-a", "iso-b"
BODY_A, BODY_B = "hello from iso-a", "hello from iso-b"
UID_BASE, UIDS = 62000, 8


class S:
    img_a = img_b = None
    run_dir = mem_dir = None
    seen_pids = set()


def log(msg):
    print(msg, flush=True)


# ---- the host's view ---------------------------------------------------------------------------
def our_qemus():
    """{pid: vm id hex} of the running (not zombie) QEMUs whose sockets are in our run dir."""
    found = {pid: v[0] for pid, v in qemu_processes(S.run_dir).items() if v[1] != "Z"}
    S.seen_pids.update(found)
    return found


def status(pid):
    """/proc/PID/status as {key: value}."""
    with open("/proc/%d/status" % pid) as f:
        return {k: v.strip() for k, v in (ln.split(":", 1) for ln in f if ":" in ln)}


def vm_dirs():
    return sorted(d for d in os.listdir(S.run_dir) if len(d) == 16)


def snapshots():
    """{function: manifest} of the golden snapshots."""
    root = os.path.join(S.run_dir, "snapshots")
    out = {}
    for fn in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, fn, "snapshot.json")) as f:
                out[fn] = json.load(f)
        except (OSError, ValueError):
            pass
    return out


def vms_by_function(c):
    """{function: [(vm id, pid, uid)]} of the RUNNING VMs the scheduler knows, with their QEMU."""
    by_id = {v: p for p, v in our_qemus().items()}
    out = {}
    for v in c.vms(host=AGENT):
        pid = by_id.get(v["vm_id"])
        uid = int(status(pid)["Uid"].split()[0]) if pid else None
        out.setdefault(v["function"], []).append((v["vm_id"], pid, uid))
    return out


# ---- acting as a VM's uid ----------------------------------------------------------------------
def _probe(what, path):
    try:
        if what == "list":
            os.listdir(path)
        elif what == "read":
            with open(path, "rb") as f:
                f.read(16)
        elif what == "connect":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(path)
            s.close()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def as_uid(uid, what, path):
    """Runs one file operation in a forked child with uid and gid uid and no supplementary
    groups (what the agent gives a VM); returns "ok" or the errno name. A fork, not an exec:
    this interpreter may live where those uids cannot reach."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.write(w, _probe(what, path).encode())
        except BaseException as e:  # noqa: BLE001
            os.write(w, ("child: %s" % e).encode()[:200])
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def http_get(address, timeout=10):
    with urllib.request.urlopen("http://%s/hello" % address, timeout=timeout) as r:
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()


def put_fn(c, name, image, pool):
    st, fn = c.http("PUT", "/v1/functions/" + name,
                    {"image": image, "memory_mb": 128, "vcpus": 1, "pool": pool})
    expect(st == 200, "PUT /v1/functions/%s -> %s" % (name, st), fn)


def wait_idle(c, fn, n, timeout):
    def pred():
        p = c.pool(fn)
        return p.get("idle") == n and p.get("restoring") == 0, p
    return wait_until(pred, timeout, "%s idle == %d" % (fn, n), interval=0.1)


# ---- checks -------------------------------------------------------------------------------------
def check_a(c):
    t0 = time.monotonic()
    put_fn(c, FN_A, S.img_a, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 60000})
    put_fn(c, FN_B, S.img_b, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 60000})
    wait_idle(c, FN_A, 1, 120)
    wait_idle(c, FN_B, 1, 120)
    took = time.monotonic() - t0
    snaps = snapshots()
    expect(sorted(snaps) == [FN_A, FN_B], "two golden snapshots", sorted(snaps))
    mem = [f for f in os.listdir(S.mem_dir) if f.endswith(".mem")]
    expect(mem == [], "no RAM file in the memory directory", mem)
    for fn, m in snaps.items():
        expect(m.get("ram") == "private" and m.get("mem_path") == "",
               "%s: the manifest says private RAM and names no RAM file" % fn, m)
        d = os.stat(os.path.join(S.run_dir, "snapshots", fn))
        expect(d.st_uid == 0 and stat.S_IMODE(d.st_mode) == 0o700,
               "%s: snapshot directory root's, 0700" % fn, (d.st_uid, oct(d.st_mode)))
        s = os.stat(m["state_path"])
        expect(s.st_uid == 0 and stat.S_IMODE(s.st_mode) == 0o600,
               "%s: state file root's, 0600" % fn, (s.st_uid, oct(s.st_mode)))
    sizes = ", ".join("%s %.1f MiB" % (fn, os.stat(m["state_path"]).st_size / 2**20)
                      for fn, m in sorted(snaps.items()))
    return "2 golden snapshots + 2 VMs in %.1f s; state files (with the RAM): %s" % (took, sizes)


def check_b(c):
    vms = vms_by_function(c)
    expect(len(vms.get(FN_A, [])) >= 1 and len(vms.get(FN_B, [])) >= 1, "VMs of both functions",
           vms)
    seen = []
    for fn, vm_id, pid, uid in [(f, *v) for f in (FN_A, FN_B) for v in vms[f]]:
        expect(pid is not None, "%s: its QEMU runs" % fn, vms)
        st = status(pid)
        uids, gids = st["Uid"].split(), st["Gid"].split()
        expect(len(set(uids)) == 1 and uids == gids, "%s: uid == gid, real/effective/saved/fs"
               % fn, (uids, gids))
        expect(UID_BASE <= uid < UID_BASE + UIDS, "%s: uid %d in [%d, %d)" % (fn, uid, UID_BASE,
                                                                              UID_BASE + UIDS), uid)
        expect(st.get("Groups", "") == "", "%s: no supplementary groups" % fn, st.get("Groups"))
        expect(st.get("NoNewPrivs") == "1", "%s: NoNewPrivs 1" % fn, st.get("NoNewPrivs"))
        expect(st.get("Seccomp") == "2", "%s: Seccomp 2 (filter)" % fn, st.get("Seccomp"))
        expect(st.get("CapEff") == "0000000000000000", "%s: no capabilities" % fn, st.get("CapEff"))
        seen.append((fn, pid, uid))
    expect(len({u for _, _, u in seen}) == len(seen), "every QEMU has a uid of its own", seen)
    return "; ".join("%s: pid %d uid/gid %d, NoNewPrivs 1, Seccomp 2" % s for s in seen)


def check_c(c):
    out = []
    for fn, vm_id, pid, uid in [(f, *v) for f, lst in sorted(vms_by_function(c).items())
                                for v in lst]:
        st = os.stat(os.path.join(S.run_dir, vm_id))
        expect(st.st_uid == uid and st.st_gid == uid and stat.S_IMODE(st.st_mode) == 0o700,
               "%s: VM directory owned by %d, 0700" % (fn, uid),
               (st.st_uid, st.st_gid, oct(st.st_mode)))
        out.append("%s %s: %d:%d 0700" % (fn, vm_id, st.st_uid, st.st_gid))
    return "; ".join(out)


def check_d(c):
    vms = vms_by_function(c)
    (_, pid_a, uid_a), (id_b, pid_b, uid_b) = vms[FN_A][0], vms[FN_B][0]
    dir_b = os.path.join(S.run_dir, id_b)
    cases = [("list", dir_b), ("read", os.path.join(dir_b, "console.log")),
             ("connect", os.path.join(dir_b, "qmp.sock")), ("read", "/proc/%d/maps" % pid_b)]
    got = []
    for what, path in cases:
        as_a = as_uid(uid_a, what, path)
        as_b = as_uid(uid_b, what, path)
        expect(as_a == "EACCES", "as A's uid %d: %s %s -> permission denied" % (uid_a, what, path),
               as_a)
        expect(as_b == "ok", "as B's uid %d: %s %s works" % (uid_b, what, path), as_b)
        got.append("%s %s: A %s, B %s" % (what, os.path.basename(path), as_a, as_b))
    for fn, m in snapshots().items():
        for uid in (uid_a, uid_b):
            r = as_uid(uid, "read", m["state_path"])
            expect(r == "EACCES", "uid %d cannot read %s's state file" % (uid, fn), r)
    return "; ".join(got) + "; state files: EACCES for both"


def check_e(c):
    out = []
    for fn, body in ((FN_A, BODY_A), (FN_B, BODY_B)):
        st, lease = c.http("POST", "/v1/functions/%s/acquire" % fn, {"timeout_ms": 20000},
                           timeout=30)
        expect(st == 200, "acquire %s -> %s" % (fn, st), lease)
        try:
            code, hdr, text = http_get(lease["address"])
        finally:
            c.http("POST", "/v1/leases/%s/release" % lease["lease_id"],
                   {"duration_ms": 5, "outcome": "ok"})
        expect(code == 200 and text.startswith(body), "GET %s -> 200 %r" % (fn, body), (code, text))
        expect(hdr.get("x-prewarm-instance") == lease["vm_id"], "X-Prewarm-Instance", hdr)
        out.append("%s at %s -> %r" % (fn, lease["address"], text.strip()))
    return "; ".join(out)


def check_f(c):
    # A settled host first: no restore in flight, every VM the scheduler lists is a QEMU.
    def settled():
        pools = [c.pool(fn) for fn in (FN_A, FN_B)]
        api = sorted(v["vm_id"] for v in c.vms(host=AGENT))
        ok = all(p.get("restoring") == 0 for p in pools) and api == sorted(our_qemus().values())
        return ok, (pools, api, our_qemus())
    wait_until(settled, 30, "no restore in flight, the scheduler's VMs == the QEMUs")
    before = vms_by_function(c)
    uids_before = sorted(u for lst in before.values() for _, _, u in lst)
    agent = c.agents[AGENT].process
    agent.kill(signal.SIGKILL)
    time.sleep(0.3)
    logged = len(agent.log_text())
    c.start_agent(AGENT)
    wait_until(lambda: ("hello accepted" in agent.log_text()[logged:], None), 30,
               "the restarted agent's hello accepted")
    n = len(uids_before)

    def adopted():
        api = sorted(v["vm_id"] for v in c.vms(host=AGENT))
        return len(api) == n and api == sorted(our_qemus().values()), (api, our_qemus())
    wait_until(adopted, 30, "all %d VMs adopted" % n)
    text = agent.log_text()[logged:]
    expect(text.count("adopted from an earlier agent: pid") == n, "%d adoptions logged" % n,
           text[-1500:])
    kept = sorted(u for lst in vms_by_function(c).values() for _, _, u in lst)
    expect(kept == uids_before, "the adopted QEMUs kept their uids", (uids_before, kept))
    # More VMs than before: each must get a uid no running QEMU has.
    have_a = len(vms_by_function(c).get(FN_A, []))
    st, p = c.http("PUT", "/v1/functions/%s/pool" % FN_A, {"min": have_a + 2})
    expect(st == 200, "PUT pool min=%d -> %s" % (have_a + 2, st), p)
    wait_idle(c, FN_A, have_a + 2, 60)
    after = vms_by_function(c)
    uids = [u for lst in after.values() for _, _, u in lst]
    expect(len(uids) == n + 2 and len(set(uids)) == len(uids),
           "%d VMs, %d different uids" % (n + 2, n + 2), after)
    new = sorted(set(uids) - set(uids_before))
    expect(len(new) == 2 and all(UID_BASE <= u < UID_BASE + UIDS for u in uids),
           "the new VMs have uids of their own in the range", after)
    return "%d VMs adopted with their uids %s; 2 new VMs got uids %s" % (n, uids_before, new)


def check_g(c):
    for fn in (FN_A, FN_B):
        st, p = c.http("PUT", "/v1/functions/%s/pool" % fn, {"min": 0, "keepalive_ms": 300})
        expect(st == 200, "PUT %s pool min=0 -> %s" % (fn, st), p)
    wait_until(lambda: (not c.vms(), c.vms()), 30, "no VM in GET /v1/vms")
    wait_until(lambda: (not our_qemus(), our_qemus()), 15, "no QEMU process of ours")
    wait_until(lambda: (not vm_dirs(), vm_dirs()), 10, "no VM directory")
    reap(list(S.seen_pids))
    return "all VMs and their directories gone"


def check_h(c):
    tmp = tempfile.mkdtemp(prefix="pwiso-nr-", dir="/tmp")
    os.chmod(tmp, 0o777)
    try:
        r = subprocess.run([AGENT_BIN, "--id", "nr", "--driver", "qemu", "--scheduler",
                            "tcp://127.0.0.1:1", "--qemu-run-dir", tmp + "/run",
                            "--qemu-mem-dir", tmp + "/mem", "--qemu-accel", "tcg",
                            "--qemu-uid-base", str(UID_BASE), "--qemu-uids", str(UIDS)],
                           user=65534, group=65534, extra_groups=[], capture_output=True,
                           text=True, timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    expect(r.returncode != 0 and "needs the agent to run as root" in r.stderr,
           "a non-root agent refuses --qemu-uids", (r.returncode, r.stderr[-600:]))
    return "exit %d: %s" % (r.returncode, r.stderr.strip().splitlines()[-1][:160])


# ---- main ---------------------------------------------------------------------------------------
def cleanup():
    for pid in our_qemus():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and our_qemus():
        time.sleep(0.05)
    reap(list(S.seen_pids))
    for d in (S.run_dir, S.mem_dir):
        if d:
            shutil.rmtree(d, ignore_errors=True)


def main():
    t_start = time.monotonic()
    if shutil.which("qemu-system-x86_64") is None:
        return qemu_skip_or_fail("test_isolation",
                                 "no qemu-system-x86_64 in PATH (apt-get install qemu-system-x86)")
    if os.geteuid() != 0:
        return qemu_skip_or_fail("test_isolation", "VM isolation needs root (uid switching)")
    checks = Checks("test_isolation: PostgreSQL + prewarmd + 1 agent (qemu driver, --qemu-uids)")
    try:
        S.img_a = build_guest_image(FN_A, "--static", BODY_A)
        S.img_b = build_guest_image(FN_B, "--static", BODY_B)
    except (HarnessError, subprocess.SubprocessError, OSError) as e:
        if os.environ.get("PREWARM_REQUIRE_QEMU") == "1":
            checks.fail("guest images", str(e))
            return checks.finish()
        return qemu_skip_or_fail("test_isolation", "guest images could not be built: %s" % e)
    if not become_subreaper():
        log("note: not a subreaper; QEMUs orphaned by the SIGKILL are reaped by PID 1 (or not)")
    # mkdtemp makes 0700 directories: the agent must make the run directory searchable itself.
    S.run_dir = tempfile.mkdtemp(prefix="pwiso-", dir="/tmp")
    S.mem_dir = tempfile.mkdtemp(prefix="pwiso-", dir="/dev/shm")
    agent = Agent(AGENT, None, driver="qemu",
                  extra_args=["--qemu-accel", "auto", "--qemu-probe-image", S.img_a,
                              "--qemu-run-dir", S.run_dir, "--qemu-mem-dir", S.mem_dir,
                              "--qemu-uid-base", str(UID_BASE), "--qemu-uids", str(UIDS),
                              "--vcpu-overcommit", "16"])
    cluster = Cluster(agents=[agent], heartbeat_ms=HEARTBEAT_MS, name="isolation")
    cluster.add_stop_hook(cleanup)
    with checks.setup_guard(cleanup=cleanup):
        with cluster as c:
            log("cluster up: http 127.0.0.1:%d, run dir %s (%.1f s)"
                % (c.http_port, S.run_dir, time.monotonic() - t_start))
            c.wait_adopt_grace()
            for name, fn in (("(a) golden snapshots hold private RAM, root's only", check_a),
                             ("(b) each QEMU: own uid/gid, no groups, NoNewPrivs, seccomp", check_b),
                             ("(c) each VM directory: its uid, 0700", check_c),
                             ("(d) VM A's uid cannot reach VM B's files; B's can", check_d),
                             ("(e) the guests answer HTTP", check_e),
                             ("(f) SIGKILL + restart: uids recovered, a new VM a new uid", check_f),
                             ("(g) pool min 0: everything gone", check_g),
                             ("(h) a non-root agent refuses --qemu-uids", check_h)):
                if not checks.check(name, fn, c) and name.startswith("(a)"):
                    break
            checks.done_with(c)
    log("test_isolation took %.1f s" % (time.monotonic() - t_start))
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
