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
 (d) a 20 MiB answer from a function's VM (more than the gateway's old 8 MiB buffering cap)
     passes through intact (sha256), with the gateway's resident memory staying far below the
     answer's size
 (e) streaming against a fake prewarmd and a fake VM (Python, in this process), because the
     guest runner buffers a command's whole output before answering (agents/guest/runner/
     handler): the first line of a slow answer reaches the client ~1 s before its end; a VM
     that cuts its answer leaves the client a truncated answer and a closed connection, and
     the lease is released with outcome "error"; a client that stops reading pauses the VM
     (bounded gateway memory) and later gets every byte; a client that leaves mid-stream gets
     the VM connection closed and the lease released "ok"
Skips loudly without QEMU, or fails when PREWARM_REQUIRE_QEMU=1 (as test_microvm.py).
"""

import hashlib
import http.client
import http.server
import json
import os
import shutil
import socketserver
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (BINARY_DIR, REPO, Agent, Checks, Cluster, HarnessError,  # noqa: E402
                     become_subreaper, build_guest_image, qemu_skip_or_fail,
                     expect, is_error_body, start_gateway, wait_until)

AGENT = "qg"
FN_A, FN_B, FN_BIG = "gw-a", "gw-b", "gw-big"
BODY_A = "hello from gw-a"
# The big answer: LINE repeated, cut at BIG_SIZE bytes (busybox yes and head in the guest).
BIG_LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
BIG_SIZE = 20 * 1024 * 1024
MIB = 1024 * 1024


class S:
    run_dir = mem_dir = fake_dir = None
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


def put_fn(c, name, image, pool, memory_mb=128):
    st, fn = c.http("PUT", "/v1/functions/" + name,
                    {"image": image, "memory_mb": memory_mb, "vcpus": 1, "pool": pool})
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



# ---- (d) a big answer from a real VM ---------------------------------------------------------

def sanitized_build():
    """True when BINARY_DIR is a sanitizer build: ASan's quarantine keeps freed blocks resident,
    so resident memory says little about what the gateway holds there."""
    try:
        with open(os.path.join(BINARY_DIR, "CMakeCache.txt")) as f:
            return any(ln.strip().upper() in ("PW_SANITIZE:BOOL=ON", "PW_SANITIZE:BOOL=TRUE") for ln in f)
    except OSError:
        return False


def proc_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise HarnessError("no %s in /proc/%d/status" % (field, pid))


class RssSampler:
    """Samples a process's VmRSS every 10 ms in a thread; .max_kib is the largest seen."""

    def __init__(self, pid):
        self.pid = pid
        self.max_kib = proc_kib(pid, "VmRSS")
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_ev.wait(0.01):
            try:
                self.max_kib = max(self.max_kib, proc_kib(self.pid, "VmRSS"))
            except (OSError, HarnessError):
                return

    def __enter__(self):
        self.th.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.th.join(2)


def big_expected():
    n = BIG_SIZE // len(BIG_LINE) + 1
    return hashlib.sha256((BIG_LINE * n)[:BIG_SIZE]).hexdigest()


def check_d(c):
    pid = S.gateway.pid
    rss0 = proc_kib(pid, "VmRSS")
    h = hashlib.sha256()
    got = 0
    t = time.monotonic()
    with RssSampler(pid) as rs:
        conn = http.client.HTTPConnection("127.0.0.1", S.gateway.port, timeout=60)
        conn.request("GET", "/invoke/%s/big" % FN_BIG)
        resp = conn.getresponse()
        expect(resp.status == 200, "GET /invoke/%s -> 200" % FN_BIG, (resp.status, resp.getheaders()))
        t_head = time.monotonic()
        while True:
            b = resp.read(1024 * 1024)
            if not b:
                break
            h.update(b)
            got += len(b)
        conn.close()
    took = time.monotonic() - t
    hwm = proc_kib(pid, "VmHWM")
    expect(got == BIG_SIZE, "the whole answer arrived (%d bytes)" % BIG_SIZE, got)
    expect(h.hexdigest() == big_expected(), "the answer's sha256 matches", h.hexdigest())
    growth = (rs.max_kib - rss0) * 1024
    # Buffering the answer would take at least BIG_SIZE; streaming holds about 256 KiB + one read.
    bound = 16 * MIB if sanitized_build() else 8 * MIB
    expect(growth < bound, "gateway VmRSS grew by less than %d MiB" % (bound // MIB),
           {"rss_before_kib": rss0, "rss_max_kib": rs.max_kib, "hwm_kib": hwm})
    wait_leased_zero(c, FN_BIG, 5)
    return ("%d MiB in %.1f s (head after %.1f s), sha256 ok; gateway VmRSS %d -> max %d KiB (HWM %d KiB)%s"
            % (BIG_SIZE // MIB, took, t_head - t, rss0, rs.max_kib, hwm,
               "; sanitizer build: bound relaxed" if sanitized_build() else ""))


# ---- (e) streaming against a fake prewarmd and a fake VM -------------------------------------

def pattern(n):
    blk = bytes(range(256)) * 256
    return (blk * (n // len(blk) + 1))[:n]


class Fake:
    """The fake prewarmd (acquire -> a new lease on the fake VM; release recorded) and the fake
    VM's answers, by path."""
    lock = threading.Lock()
    releases = {}   # lease id -> release body
    nleases = 0
    vm_port = 0
    big_sent = 0
    endless_cut_at = None  # monotonic time a write to the gateway failed
    BIG = 64 * MIB


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeScheduler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.endswith("/acquire"):
            with Fake.lock:
                Fake.nleases += 1
                lease = "%016x" % (0xfa4e0000 + Fake.nleases)
            out = json.dumps({"lease_id": lease, "address": "127.0.0.1:%d" % Fake.vm_port}).encode()
        else:
            lease = self.path.split("/")[3]
            with Fake.lock:
                Fake.releases[lease] = json.loads(body)
            out = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class FakeVM(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def head(self, length=None, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.send_header("X-Prewarm-Function", "fake")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def do_GET(self):
        try:
            if self.path == "/slow":
                # No Content-Length: the answer ends with the connection (the gateway chunks it).
                self.head()
                self.wfile.write(b"first\n")
                self.wfile.flush()
                time.sleep(1.0)
                self.wfile.write(b"second\n")
            elif self.path == "/cut":
                self.head(MIB)
                self.wfile.write(b"x" * (256 * 1024))
                self.wfile.flush()
                time.sleep(0.2)
                self.connection.shutdown(socket.SHUT_RDWR)
            elif self.path == "/weird":
                self.send_response(799, "Weird")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            elif self.path == "/big":
                self.head(Fake.BIG, "application/octet-stream")
                data = pattern(Fake.BIG)
                for off in range(0, Fake.BIG, 64 * 1024):
                    self.wfile.write(data[off:off + 64 * 1024])
                    with Fake.lock:
                        Fake.big_sent = off + 64 * 1024
            elif self.path == "/endless":
                self.head()
                block = b"e" * (64 * 1024)
                t_end = time.monotonic() + 30
                while time.monotonic() < t_end:
                    self.wfile.write(block)
                    self.wfile.flush()
                    time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            if self.path == "/endless":
                Fake.endless_cut_at = time.monotonic()


def wait_release(lease, timeout=5):
    return wait_until(lambda: (lease in Fake.releases, sorted(Fake.releases)), timeout,
                      "release of %s" % lease, interval=0.02)


def fake_get(port, path, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    return conn, conn.getresponse()


def check_e(c):
    sched = ThreadingServer(("127.0.0.1", 0), FakeScheduler)
    vm = ThreadingServer(("127.0.0.1", 0), FakeVM)
    Fake.vm_port = vm.server_address[1]
    for srv in (sched, vm):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    notes = []
    try:
        ns = types.SimpleNamespace(http_port=sched.server_address[1], tmp=S.fake_dir, log_level="info")
        gw = start_gateway(ns, ["--vm-timeout-ms", "5000"])
        c.extra_processes = getattr(c, "extra_processes", []) + [gw]

        # 1. The first line arrives while the VM is still working on the second.
        t = time.monotonic()
        conn, resp = fake_get(gw.port, "/invoke/fake/slow")
        lease = resp.getheader("X-Prewarm-Lease")
        first = resp.readline()
        t_first = time.monotonic()
        rest = resp.read()
        t_end = time.monotonic()
        conn.close()
        expect(resp.status == 200 and first == b"first\n" and rest == b"second\n", "slow answer whole",
               (resp.status, first, rest))
        expect(resp.getheader("Transfer-Encoding") == "chunked", "no Content-Length from the VM -> chunked",
               resp.getheaders())
        expect(resp.getheader("X-Prewarm-Function") == "fake", "VM headers passed through", resp.getheaders())
        expect(t_end - t_first >= 0.7, "the first line came >= 0.7 s before the end",
               {"first_s": t_first - t, "end_s": t_end - t})
        wait_release(lease)
        expect(Fake.releases[lease]["outcome"] == "ok", "released ok", Fake.releases[lease])
        notes.append("first line after %.2f s, end after %.2f s" % (t_first - t, t_end - t))

        # 2. A VM that cuts its answer: the client sees it cut, never complete.
        conn, resp = fake_get(gw.port, "/invoke/fake/cut")
        lease = resp.getheader("X-Prewarm-Lease")
        expect(resp.status == 200 and resp.getheader("Content-Length") == str(MIB), "cut: head passed through",
               resp.getheaders())
        try:
            body = resp.read()
            expect(False, "reading a cut answer fails", len(body))
        except http.client.IncompleteRead as e:
            got = len(e.partial)
        conn.close()
        expect(got == 256 * 1024, "cut: the bytes before the cut arrived", got)
        wait_release(lease)
        expect(Fake.releases[lease]["outcome"] == "error", "cut: released with outcome error", Fake.releases[lease])
        notes.append("cut answer: %d of %d bytes then EOF, outcome error" % (got, MIB))

        # A status the gateway cannot pass on: its own 502, the VM blamed.
        conn, resp = fake_get(gw.port, "/invoke/fake/weird")
        body = resp.read()
        conn.close()
        expect(resp.status == 502 and json.loads(body)["error"]["code"] == "vm_bad_answer",
               "status 799 from the VM -> 502 vm_bad_answer", (resp.status, body))
        lease = "%016x" % (0xfa4e0000 + Fake.nleases)
        wait_release(lease)
        expect(Fake.releases[lease]["outcome"] == "error", "799: released with outcome error", Fake.releases[lease])

        # 3. A client that stops reading: the VM is paused, the gateway's memory stays bounded.
        rss0 = proc_kib(gw.pid, "VmRSS")
        with RssSampler(gw.pid) as rs:
            conn, resp = fake_get(gw.port, "/invoke/fake/big")
            lease = resp.getheader("X-Prewarm-Lease")
            time.sleep(2.0)
            with Fake.lock:
                sent_stalled = Fake.big_sent
            h = hashlib.sha256()
            got = 0
            while True:
                b = resp.read(MIB)
                if not b:
                    break
                h.update(b)
                got += len(b)
            conn.close()
        expect(got == Fake.BIG and h.hexdigest() == hashlib.sha256(pattern(Fake.BIG)).hexdigest(),
               "big answer intact after the stall", got)
        # Without backpressure the VM would have sent all 64 MiB at once; with it, only what
        # fits in socket buffers and the gateway's 256 KiB queue.
        expect(sent_stalled <= 40 * MIB, "the VM was paused while the client did not read",
               {"vm_sent_mib": sent_stalled / MIB})
        growth = (rs.max_kib - rss0) * 1024
        bound = 16 * MIB if sanitized_build() else 8 * MIB
        expect(growth < bound, "gateway VmRSS grew by less than %d MiB" % (bound // MIB),
               {"rss_before_kib": rss0, "rss_max_kib": rs.max_kib})
        wait_release(lease)
        expect(Fake.releases[lease]["outcome"] == "ok", "big: released ok", Fake.releases[lease])
        notes.append("stalled client: VM sent %.1f of %d MiB in 2 s, gateway VmRSS %d -> max %d KiB"
                     % (sent_stalled / MIB, Fake.BIG // MIB, rss0, rs.max_kib))

        # 4. A client that leaves mid-stream: the VM connection is closed, the lease released ok.
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"GET /invoke/fake/endless HTTP/1.1\r\nHost: gw\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        lease = [ln.split(b":")[1].strip().decode() for ln in head.split(b"\r\n")
                 if ln.lower().startswith(b"x-prewarm-lease:")][0]
        t = time.monotonic()
        s.close()
        wait_release(lease, 3)
        took = time.monotonic() - t
        expect(Fake.releases[lease]["outcome"] == "ok", "client abort: released ok", Fake.releases[lease])
        wait_until(lambda: (Fake.endless_cut_at is not None, None), 5, "the VM's connection closed")
        notes.append("client left mid-stream: released ok after %.0f ms, VM cut after %.0f ms"
                     % (took * 1000, (Fake.endless_cut_at - t) * 1000))
    finally:
        sched.shutdown()
        vm.shutdown()
    return "; ".join(notes)


def cleanup():
    for d in (S.run_dir, S.mem_dir, S.fake_dir):
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
        img_big = build_guest_image(FN_BIG, "--command",
                                    "yes %s | head -c %d" % (BIG_LINE.decode().strip(), BIG_SIZE))
    except (HarnessError, subprocess.SubprocessError, OSError) as e:
        if os.environ.get("PREWARM_REQUIRE_QEMU") == "1":
            checks.fail("guest images", str(e))
            return checks.finish()
        return qemu_skip_or_fail("test_gateway", "guest images could not be built: %s" % e)
    become_subreaper()
    S.run_dir = tempfile.mkdtemp(prefix="pwgw-", dir="/tmp")
    S.mem_dir = tempfile.mkdtemp(prefix="pwgw-", dir="/dev/shm")
    S.fake_dir = tempfile.mkdtemp(prefix="pwgw-fake-", dir="/tmp")
    agent = Agent(AGENT, None, driver="qemu",
                  extra_args=["--qemu-accel", "auto", "--qemu-probe-image", img_a,
                              "--qemu-run-dir", S.run_dir, "--qemu-mem-dir", S.mem_dir,
                              "--qemu-restore-timeout-ms", "30000", "--vcpu-overcommit", "16"])
    cluster = Cluster(agents=[agent], heartbeat_ms=500, name="gateway")
    cluster.add_stop_hook(cleanup)
    with checks.setup_guard(cleanup=cleanup):
        with cluster as c:
            c.wait_adopt_grace()
            S.gateway = start_gateway(c, ["--acquire-timeout-ms", "20000", "--vm-timeout-ms", "10000"])
            t = time.monotonic()
            put_fn(c, FN_A, img_a, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 60000})
            put_fn(c, FN_B, img_b, {"policy": "fixed", "min": 1, "max": 4, "keepalive_ms": 60000})
            put_fn(c, FN_BIG, img_big, {"policy": "fixed", "min": 1, "max": 2, "keepalive_ms": 60000})
            wait_idle(c, FN_A, 1, 60)
            wait_idle(c, FN_B, 1, 60)
            wait_idle(c, FN_BIG, 1, 60)
            log("cluster up, all pools warm (%.1f s after the PUTs)" % (time.monotonic() - t))
            for name, fn in (("(a) curl through the gateway reaches both functions; lease released", check_a),
                             ("(b) a client closing early still gets its lease released", check_b),
                             ("(c) unknown function / path -> 404 JSON", check_c),
                             ("(d) a 20 MiB answer streams through intact with bounded gateway memory",
                              check_d),
                             ("(e) streaming, backpressure, VM cut and client abort (fake prewarmd + VM)",
                              check_e)):
                checks.check(name, fn, c)
            checks.done_with(c)
    log("test_gateway took %.1f s" % (time.monotonic() - t_start))
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
