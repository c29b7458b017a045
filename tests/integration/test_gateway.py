#!/usr/bin/env python3
"""test_gateway.py — prewarm-gateway end to end with real microVMs: PostgreSQL, prewarmd, one
prewarm-agent with the qemu driver (guest images from agents/guest/build-guest.sh) and the
gateway in front.

Checks, in order:
 (a) curl through the gateway reaches each of two functions' handler in its VM (body and
     X-Prewarm-Function), and the lease is released afterwards (pool leased == 0)
 (b) a client that sends a request to a function that sleeps ~1 s and closes its socket before
     reading the answer still gets its lease released (leased back to 0 within a bound)
 (c) an unknown function is a 404 with a JSON error from the gateway, and so is a path outside
     /invoke/
Skips loudly without QEMU, or fails when PREWARM_REQUIRE_QEMU=1 (as test_microvm.py).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (REPO, Agent, Checks, Cluster, HarnessError, become_subreaper,  # noqa: E402
                     build_guest_image, qemu_skip_or_fail,
                     expect, is_error_body, start_gateway, wait_until)

AGENT = "qg"
FN_A, FN_B = "gw-a", "gw-b"
BODY_A = "hello from gw-a"


class S:
    run_dir = mem_dir = None
    gateway = None


def log(msg):
    print(msg, flush=True)





def curl(path, timeout=30):
    """GET through the gateway with curl: (status, headers lower-cased, body)."""
    url = "http://127.0.0.1:%d%s" % (S.gateway.port, path)
    r = subprocess.run(["curl", "-sS", "-i", "--max-time", str(timeout), url], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout + 5)
    expect(r.returncode == 0, "curl %s exits 0" % url, r.stderr.decode(errors="replace"))
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body.decode(errors="replace")


def put_fn(c, name, image, pool):
    st, fn = c.http("PUT", "/v1/functions/" + name,
                    {"image": image, "memory_mb": 128, "vcpus": 1, "pool": pool})
    expect(st == 200, "PUT /v1/functions/%s -> %s" % (name, st), fn)


def wait_idle(c, fn, n, timeout):
    def pred():
        p = c.pool(fn)
        return p.get("idle") >= n and p.get("restoring") == 0, {k: p.get(k) for k in
                                                                 ("idle", "leased", "restoring", "failed")}
    return wait_until(pred, timeout, "%s idle >= %d" % (fn, n), interval=0.1)


def wait_leased_zero(c, fn, timeout):
    t = time.monotonic()
    wait_until(lambda: (lambda p: (p.get("leased") == 0, p))(c.pool(fn)), timeout,
               "%s leased == 0" % fn, interval=0.02)
    return time.monotonic() - t


def check_a(c):
    notes = []
    for fn, want in ((FN_A, BODY_A), (FN_B, "hello from gw-b")):
        t = time.monotonic()
        st, hdr, body = curl("/invoke/%s/hello?x=1" % fn)
        ms = (time.monotonic() - t) * 1000
        expect(st == 200 and body.startswith(want), "curl /invoke/%s -> 200 %r" % (fn, want), (st, hdr, body))
        expect(hdr.get("x-prewarm-function") == fn, "X-Prewarm-Function %s" % fn, hdr)
        expect(len(hdr.get("x-prewarm-lease", "")) == 16, "X-Prewarm-Lease names the lease", hdr)
        took = wait_leased_zero(c, fn, 5)
        p = c.pool(fn)
        expect(p.get("acquires", 0) >= 1, "prewarmd counted the acquire", p)
        notes.append("%s: 200 %r in %.0f ms, leased 0 after %.0f ms" % (fn, body.strip(), ms, took * 1000))
    return "; ".join(notes)


def check_b(c):
    before = c.pool(FN_B).get("acquires", 0)
    s = socket.create_connection(("127.0.0.1", S.gateway.port), timeout=5)
    s.sendall(b"GET /invoke/%s/slow HTTP/1.1\r\nHost: gw\r\n\r\n" % FN_B.encode())

    def leased():
        p = c.pool(FN_B)
        return p.get("acquires", 0) > before and p.get("leased") == 1, p
    # Close only once the VM holds the request, so that the abort happens mid-invocation.
    wait_until(leased, 10, "%s leased == 1 (the request reached a VM)" % FN_B, interval=0.01)
    t = time.monotonic()
    s.close()
    wait_leased_zero(c, FN_B, 3)
    took = time.monotonic() - t
    text = S.gateway.log_text()
    expect("client left" in text, "the gateway logged the client leaving", S.gateway.tail(5))
    return "client closed mid-invocation; lease released %.0f ms later" % (took * 1000)


def check_c(c):
    st, hdr, body = curl("/invoke/no-such-fn/")
    expect(st == 404, "unknown function -> 404", (st, body))
    expect(is_error_body(json.loads(body), st), "JSON error body", body)
    st, hdr, body = curl("/elsewhere")
    expect(st == 404 and is_error_body(json.loads(body), st), "path outside /invoke/ -> 404 JSON", (st, body))
    return "404 %s" % body.strip()


def cleanup():
    for d in (S.run_dir, S.mem_dir):
        if d:
            shutil.rmtree(d, ignore_errors=True)


def main():
    t_start = time.monotonic()
    if shutil.which("qemu-system-x86_64") is None:
        return qemu_skip_or_fail("test_gateway", "no qemu-system-x86_64 in PATH (apt-get install qemu-system-x86)")
    if shutil.which("curl") is None:
        return qemu_skip_or_fail("test_gateway", "no curl in PATH")
    checks = Checks("test_gateway: PostgreSQL + prewarmd + 1 agent (qemu driver) + prewarm-gateway")
    try:
        img_a = build_guest_image(FN_A, "--static", BODY_A)
        img_b = build_guest_image(FN_B, "--command", 'sleep 1; echo "hello from gw-b"')
    except (HarnessError, subprocess.SubprocessError, OSError) as e:
        if os.environ.get("PREWARM_REQUIRE_QEMU") == "1":
            checks.fail("guest images", str(e))
            return checks.finish()
        return qemu_skip_or_fail("test_gateway", "guest images could not be built: %s" % e)
    become_subreaper()
    S.run_dir = tempfile.mkdtemp(prefix="pwgw-", dir="/tmp")
    S.mem_dir = tempfile.mkdtemp(prefix="pwgw-", dir="/dev/shm")
    agent = Agent(AGENT, None, driver="qemu",
                  extra_args=["--qemu-accel", "auto", "--qemu-probe-image", img_a,
                              "--qemu-run-dir", S.run_dir, "--qemu-mem-dir", S.mem_dir,
                              "--qemu-restore-timeout-ms", "30000", "--vcpu-overcommit", "16"])
    cluster = Cluster(agents=[agent], heartbeat_ms=500, name="gateway")
    cluster.add_stop_hook(cleanup)
    try:
        with cluster as c:
            c.wait_adopt_grace()
            S.gateway = start_gateway(c, ["--acquire-timeout-ms", "20000", "--vm-timeout-ms", "10000"])
            t = time.monotonic()
            put_fn(c, FN_A, img_a, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 60000})
            put_fn(c, FN_B, img_b, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 60000})
            wait_idle(c, FN_A, 1, 60)
            wait_idle(c, FN_B, 1, 60)
            log("cluster up, both pools warm (%.1f s after the PUTs)" % (time.monotonic() - t))
            for name, fn in (("(a) curl through the gateway reaches both functions; lease released", check_a),
                             ("(b) a client closing early still gets its lease released", check_b),
                             ("(c) unknown function / path -> 404 JSON", check_c)):
                checks.check(name, fn, c)
            checks.sanitizers_clean(c)
            c.failed = not checks.ok
    except HarnessError as e:
        checks.fail("cluster setup", str(e))
    except Exception as e:  # noqa: BLE001
        checks.fail("cluster setup", "%s: %s" % (type(e).__name__, e))
    finally:
        cleanup()
    log("test_gateway took %.1f s" % (time.monotonic() - t_start))
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
