#!/usr/bin/env bash
# smoke-test.sh — builds the guest base and two function images and runs them for real under
# QEMU (microvm, TCG):
#   - cold-boots "hello-a" (static) and "hello-b" (command), each to its ready line;
#   - GETs both through the hostfwd port and checks they answer differently (curl, Python's
#     http.client and a raw HTTP/1.0 socket);
#   - snapshots both (stop, x-ignore-shared, migrate to a file), restores hello-a once and
#     hello-b twice at the same time, gives each restored VM its identity on the console and
#     checks the answers carry it (instance id, MAC, clock) and that the console does not echo;
#   - removes every process and file it made (QEMU processes, /dev/shm RAM files, sockets).
# Prints the measured timings. Exits non-zero on any failure.
#
#   bash agents/guest/smoke-test.sh [--cache DIR] [--deadline SECONDS]
#
# --cache is passed to build-guest.sh; --deadline bounds each cold boot (default 90).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ARGS=()
DEADLINE=90
while [ $# -gt 0 ]; do
    case $1 in
    --cache)
        [ $# -ge 2 ] || { echo "smoke-test.sh: --cache needs a directory" >&2; exit 2; }
        CACHE_ARGS=(--cache "$2")
        shift 2
        ;;
    --deadline)
        [ $# -ge 2 ] || { echo "smoke-test.sh: --deadline needs seconds" >&2; exit 2; }
        DEADLINE=$2
        shift 2
        ;;
    -h | --help)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "smoke-test.sh: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
done

for c in qemu-system-x86_64 python3 curl; do
    command -v "$c" >/dev/null || {
        echo "smoke-test.sh: '$c' not found (apt-get install qemu-system-x86 python3 curl)" >&2
        exit 1
    }
done

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b - a}'; }

echo "== build" >&2
t0=$(now)
BASE=$(bash "$HERE/build-guest.sh" base "${CACHE_ARGS[@]}")
t1=$(now)
IMG_A=$(bash "$HERE/build-guest.sh" function hello-a --static hello-a "${CACHE_ARGS[@]}")
t2=$(now)
IMG_B=$(bash "$HERE/build-guest.sh" function hello-b "${CACHE_ARGS[@]}" \
    --command 'echo hello-b; date +%s; cat /sys/class/net/eth0/address; echo "path=$PREWARM_PATH"')
t3=$(now)
BUILD_TIMES="base $(secs "$t0" "$t1") s, hello-a $(secs "$t1" "$t2") s, hello-b $(secs "$t2" "$t3") s"
echo "build: $BUILD_TIMES" >&2
echo "base:    $BASE" >&2
echo "hello-a: $IMG_A" >&2
echo "hello-b: $IMG_B" >&2

python3 - "$IMG_A" "$IMG_B" "$DEADLINE" "$BUILD_TIMES" <<'PYEOF'
import http.client, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time

IMG_A, IMG_B, DEADLINE, BUILD_TIMES = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]

class Fail(Exception):
    pass

def check(cond, what):
    if not cond:
        raise Fail(what)
    print("ok   " + what, file=sys.stderr)

def tsc_khz():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return int(round(float(line.split(":")[1]) * 1000))
    raise Fail("no 'cpu MHz' in /proc/cpuinfo")

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def connect_unix(path, deadline):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise Fail("cannot connect to " + path)
            time.sleep(0.002)

WORK = tempfile.mkdtemp(prefix="prewarm-guest-smoke.")
SHM = []          # RAM files in /dev/shm we made
VMS = []          # every VM started
KHZ = tsc_khz()

class Console:
    """Reads the guest's serial console (a unix socket) into lines; writes lines to it."""
    def __init__(self, sock):
        self.sock = sock
        self.lines = []            # (monotonic time, text)
        self.cv = threading.Condition()
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                with self.cv:
                    self.closed = True
                    self.cv.notify_all()
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("utf-8", "replace").rstrip("\r")
                with self.cv:
                    self.lines.append((time.monotonic(), text))
                    self.cv.notify_all()

    def wait(self, pred, deadline, start=0):
        """Index of the first line at or after start matching pred; Fail on deadline/EOF."""
        with self.cv:
            i = start
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i][1]):
                        return i
                    i += 1
                if self.closed:
                    raise Fail("console closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Fail("deadline passed")
                self.cv.wait(left)

    def write_line(self, text):
        self.sock.sendall(text.encode() + b"\n")

class QMP:
    def __init__(self, path, deadline):
        self.sock = connect_unix(path, deadline)
        self.f = self.sock.makefile("rwb", buffering=0)
        greeting = json.loads(self.f.readline())
        if "QMP" not in greeting:
            raise Fail("bad QMP greeting")
        self.cmd("qmp_capabilities")

    def cmd(self, name, args=None, eof_ok=False):
        msg = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        while True:
            line = self.f.readline()
            if not line:
                if eof_ok:
                    return None
                raise Fail("QMP closed during " + name)
            r = json.loads(line)
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise Fail("QMP %s: %s" % (name, r["error"]))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

class VM:
    def __init__(self, tag, image, mem_path, share, incoming):
        with open(os.path.join(image, "image.json")) as f:
            self.meta = json.load(f)
        self.tag = tag
        self.port = free_port()
        self.con_path = os.path.join(WORK, tag + ".con")
        self.qmp_path = os.path.join(WORK, tag + ".qmp")
        self.log_path = os.path.join(WORK, tag + ".log")
        append = "%s tsc_early_khz=%d" % (self.meta["cmdline"], KHZ)
        argv = [
            "qemu-system-x86_64",
            "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on,memory-backend=mem0",
            "-m", "128M", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
            "-object", "memory-backend-file,id=mem0,size=128M,mem-path=%s,share=%s"
                       % (mem_path, "on" if share else "off"),
            "-chardev", "socket,id=con0,path=%s,server=on,wait=off" % self.con_path,
            "-serial", "chardev:con0",
            "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path,
            "-kernel", os.path.join(image, self.meta["kernel"]),
            "-initrd", os.path.join(image, self.meta["initrd"]),
            "-append", append,
            "-accel", "tcg", "-cpu", "max",
            "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-:%d" % (self.port, self.meta["http_port"]),
            "-device", "virtio-net-device,netdev=n0",
        ]
        if incoming:
            argv += ["-incoming", "defer"]
        self.t_start = time.monotonic()
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        VMS.append(self)
        deadline = self.t_start + 10
        self.console = Console(connect_unix(self.con_path, deadline))
        self.qmp = QMP(self.qmp_path, deadline)

    def since(self, t):
        return t - self.t_start

    def stop(self):
        """quit over QMP, reap; kill by PID if it does not exit in time."""
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit", eof_ok=True)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.qmp.close()
        try:
            self.console.sock.close()
        except OSError:
            pass
        self.log.close()

def http_get(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()

def raw_get(port, path, timeout=10):
    """HTTP/1.0 over a plain socket, read to EOF: what a minimal C client does."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n\r\n" % path).encode())
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdr = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdr[k.strip().lower()] = v.strip()
    return lines[0], hdr, body

def curl_get(port, path):
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-i", "http://127.0.0.1:%d%s" % (port, path)],
                       capture_output=True, timeout=20)
    if r.returncode != 0:
        raise Fail("curl failed: " + r.stderr.decode())
    return r.stdout

def cold_boot(tag, image, name):
    mem = "/dev/shm/prewarm-smoke-%d-%s.mem" % (os.getpid(), tag)
    SHM.append(mem)
    vm = VM(tag, image, mem, share=True, incoming=False)
    vm.mem = mem
    ready = "PREWARM-READY " + name
    try:
        i = vm.console.wait(lambda l: l == ready or l.startswith("PREWARM-FAILED"),
                            vm.t_start + DEADLINE)
    except Fail as e:
        raise Fail("%s: no ready line (%s); console tail: %s" % (tag, e, [l for _, l in vm.console.lines[-10:]]))
    t, line = vm.console.lines[i]
    check(line == ready, "%s: ready line %r" % (tag, line))
    vm.t_ready = t
    return vm

def snapshot(vm, state):
    t0 = time.monotonic()
    vm.qmp.cmd("stop")
    vm.qmp.cmd("migrate-set-capabilities",
               {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
    vm.qmp.cmd("migrate", {"uri": "exec:cat > %s" % state})
    while True:
        st = vm.qmp.cmd("query-migrate").get("status")
        if st == "completed":
            break
        if st in ("failed", "cancelled"):
            raise Fail("snapshot of %s: migrate %s" % (vm.tag, st))
        time.sleep(0.001)
    t1 = time.monotonic()
    vm.stop()
    return t1 - t0

def restore(tag, image, mem, state):
    vm = VM(tag, image, mem, share=False, incoming=True)
    vm.qmp.cmd("migrate-set-capabilities",
               {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
    vm.qmp.cmd("migrate-incoming", {"uri": "exec:cat %s" % state})
    while True:
        st = vm.qmp.cmd("query-migrate").get("status")
        if st == "completed":
            break
        if st in ("failed", "cancelled"):
            raise Fail("restore %s: migrate-incoming %s" % (tag, st))
        time.sleep(0.001)
    check(vm.qmp.cmd("query-status")["status"] in ("paused", "prelaunch", "inmigrate"),
          "%s: paused before cont" % tag)
    vm.qmp.cmd("cont")
    vm.t_cont = time.monotonic()
    return vm

def give_identity(vm, inst, mac):
    n0 = len(vm.console.lines)
    vm.console.write_line("PREWARM-ID %s %s %d" % (inst, mac, int(time.time())))
    i = vm.console.wait(lambda l: l.startswith("PREWARM-ID-"), time.monotonic() + 10, n0)
    line = vm.console.lines[i][1]
    check(line == "PREWARM-ID-OK " + inst, "%s: identity acknowledged (%r)" % (vm.tag, line))
    check(not any(l.startswith("PREWARM-ID ") for _, l in vm.console.lines[n0:]),
          "%s: the console does not echo the identity line" % vm.tag)
    vm.t_id = vm.console.lines[i][0]

def first_http(vm, path, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = http_get(vm.port, path, timeout=max(0.5, deadline - time.monotonic()))
            return r, time.monotonic()
        except (ConnectionError, socket.timeout, http.client.HTTPException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)

def ms(x):
    return "%.0f ms" % (x * 1000)

timings = []
try:
    # --- cold boots -----------------------------------------------------------------------
    a = cold_boot("a", IMG_A, "hello-a")
    timings.append(("cold boot hello-a: start -> ready line", "%.2f s" % a.since(a.t_ready)))
    b = cold_boot("b", IMG_B, "hello-b")
    timings.append(("cold boot hello-b: start -> ready line", "%.2f s" % b.since(b.t_ready)))

    st, h, body = http_get(a.port, "/")
    check(st == 200 and body == b"hello-a", "hello-a: GET / -> 200 %r" % body)
    check(h.get("x-prewarm-function") == "hello-a" and h.get("x-prewarm-instance") == "golden",
          "hello-a: X-Prewarm-Function hello-a, X-Prewarm-Instance golden")
    check(h.get("content-length") == "7" and h.get("connection") == "close",
          "hello-a: Content-Length 7, Connection: close")
    st, h, body = http_get(a.port, "/any/path?q=1")
    check(st == 200 and body == b"hello-a", "hello-a: any path answers the same")
    status, h, body = raw_get(a.port, "/")
    check(status.startswith("HTTP/1.") and " 200 " in status + " " and body == b"hello-a",
          "hello-a: raw HTTP/1.0 socket client reads the answer to EOF")
    out = curl_get(a.port, "/")
    check(out.endswith(b"\r\n\r\nhello-a") and b"X-Prewarm-Instance: golden" in out,
          "hello-a: curl reads the answer")

    st, h, body = http_get(b.port, "/foo/bar?x=1")
    lines = body.decode().split("\n")
    check(st == 200 and lines[0] == "hello-b", "hello-b: GET -> 200, body starts with hello-b")
    check(lines[3] == "path=/foo/bar", "hello-b: command sees PREWARM_PATH (%r)" % lines[3])
    check(h.get("x-prewarm-function") == "hello-b" and h.get("x-prewarm-exit") == "0",
          "hello-b: X-Prewarm-Function hello-b, X-Prewarm-Exit 0")
    check(int(h["content-length"]) == len(body), "hello-b: Content-Length matches the body")
    golden_mac = lines[2]
    t_req = time.monotonic()
    for _ in range(5):
        http_get(b.port, "/")
    timings.append(("warm request to the command function (cold-booted VM), mean",
                    ms((time.monotonic() - t_req) / 5)))
    out = curl_get(b.port, "/")
    check(b"hello-b" in out and b"hello-a" not in out, "the two functions answer differently")

    # --- snapshots ------------------------------------------------------------------------
    state_a = os.path.join(WORK, "a.state")
    state_b = os.path.join(WORK, "b.state")
    timings.append(("snapshot hello-a: stop + migrate completed", ms(snapshot(a, state_a))))
    timings.append(("snapshot hello-b: stop + migrate completed", ms(snapshot(b, state_b))))
    check(os.path.getsize(state_b) > 0, "state file written (%d bytes)" % os.path.getsize(state_b))

    # --- restores -------------------------------------------------------------------------
    # hello-a: identity first, then the first answer (what an agent does).
    ra = restore("ra", IMG_A, a.mem, state_a)
    give_identity(ra, "vm-a1", "52:54:00:aa:00:01")
    (st, h, body), t = first_http(ra, "/")
    check(st == 200 and body == b"hello-a" and h.get("x-prewarm-instance") == "vm-a1",
          "restored hello-a answers as vm-a1")
    timings.append(("restore hello-a: start -> cont returned", ms(ra.since(ra.t_cont))))
    timings.append(("restore hello-a: start -> PREWARM-ID-OK", ms(ra.since(ra.t_id))))
    timings.append(("restore hello-a: start -> first HTTP answer (after identity)", ms(ra.since(t))))

    # hello-b: two restores from one golden snapshot, side by side; an answer before the
    # identity (still "golden"), then each gets its own.
    rb1 = restore("rb1", IMG_B, b.mem, state_b)
    rb2 = restore("rb2", IMG_B, b.mem, state_b)
    (st, h, body), t = first_http(rb1, "/")
    check(st == 200 and h.get("x-prewarm-instance") == "golden",
          "restored hello-b answers before its identity, as golden")
    timings.append(("restore hello-b: start -> cont returned", ms(rb1.since(rb1.t_cont))))
    timings.append(("restore hello-b: start -> first HTTP answer (no identity yet)", ms(rb1.since(t))))
    give_identity(rb1, "vm-b1", "52:54:00:bb:00:01")
    give_identity(rb2, "vm-b2", "52:54:00:bb:00:02")
    for vm, inst, mac in ((rb1, "vm-b1", "52:54:00:bb:00:01"), (rb2, "vm-b2", "52:54:00:bb:00:02")):
        (st, h, body), t = first_http(vm, "/p")
        lines = body.decode().split("\n")
        check(st == 200 and h.get("x-prewarm-instance") == inst and lines[0] == "hello-b",
              "%s answers as %s" % (vm.tag, inst))
        check(lines[2] == mac and mac != golden_mac, "%s: eth0 MAC is %s (golden %s)" % (vm.tag, mac, golden_mac))
        check(abs(int(lines[1]) - time.time()) < 5, "%s: guest clock set from the identity line" % vm.tag)
        if vm is rb2:
            timings.append(("restore hello-b #2 (started after #1, runs beside it): start -> cont",
                            ms(vm.since(vm.t_cont))))
            timings.append(("restore hello-b #2: start -> first HTTP answer (after #1's work)",
                            ms(vm.since(t))))
    # A bad identity line changes nothing.
    n0 = len(rb2.console.lines)
    rb2.console.write_line("PREWARM-ID bad/id 52:54:00:bb:00:09")
    i = rb2.console.wait(lambda l: l.startswith("PREWARM-ID-"), time.monotonic() + 10, n0)
    check(rb2.console.lines[i][1] == "PREWARM-ID-ERR bad/id bad-instance-id", "bad identity line refused")
    st, h, body = http_get(rb2.port, "/")
    check(h.get("x-prewarm-instance") == "vm-b2", "identity unchanged after a refused line")

    for vm in (ra, rb1, rb2):
        vm.stop()
    ok = True
except Fail as e:
    print("FAIL " + str(e), file=sys.stderr)
    for vm in VMS:
        print("--- console of %s (last 15 lines)" % vm.tag, file=sys.stderr)
        for _, l in vm.console.lines[-15:]:
            print("    " + l, file=sys.stderr)
    ok = False
finally:
    for vm in VMS:
        try:
            vm.stop()
        except Exception as e:
            print("cleanup %s: %s" % (vm.tag, e), file=sys.stderr)
            try:
                os.kill(vm.proc.pid, signal.SIGKILL)
                vm.proc.wait()
            except ProcessLookupError:
                pass
    for m in SHM:
        try:
            os.unlink(m)
        except FileNotFoundError:
            pass
    shutil.rmtree(WORK, ignore_errors=True)

alive = [vm.tag for vm in VMS if vm.proc.poll() is None]
left = [m for m in SHM if os.path.exists(m)]
if alive or left or os.path.exists(WORK):
    print("FAIL leftovers: processes %s, files %s" % (alive, left), file=sys.stderr)
    ok = False
else:
    print("ok   no QEMU process, RAM file or socket left", file=sys.stderr)

print("\ntimings (TCG, 128 MiB, 1 vCPU):")
print("  %-72s %s" % ("build (base, hello-a, hello-b)", BUILD_TIMES))
for k, v in timings:
    print("  %-72s %s" % (k, v))
print("\nsmoke test: " + ("PASSED" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PYEOF
