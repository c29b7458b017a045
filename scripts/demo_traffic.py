#!/usr/bin/env python3
"""demo_traffic.py — replay a slice of the Azure Functions 2019 trace against prewarmd.

Picks a few functions from the trace (by default the 3 busiest in the chosen window among
those with 200..5000 invocations in the day), registers one prewarmd function per trace
function (fn-<first 8 hex of the hash>, memory from memory_mb.csv clamped to 128..2048 MB,
fixed pool min=1 max=20 keep-alive 10 s), then replays the window sped up: each trace
minute's arrivals are spread uniformly over the minute with a seeded RNG, and each invocation
is acquire -> hold for the function's average duration (divided by the speed-up, at least
5 ms) -> release. Prints one status line a second and a summary at the end.

With real microVMs (--guest-builder), each function gets its own guest image built with
agents/guest/build-guest.sh (a static handler answering with the function's name), the replay
waits until every pool is warm, and each invocation sends an HTTP GET to the VM it acquired
(its answer must come from that function) before it holds and releases it.

  python3 scripts/demo_traffic.py --url http://127.0.0.1:8080
  python3 scripts/demo_traffic.py --plan          # show the selected slice, send nothing

Standard library only. Talks to 127.0.0.1 only. Runtime is bounded by --max-runtime.
"""

import argparse
import collections
import concurrent.futures
import csv
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_TRACE = os.environ.get("PW_TRACE_DIR") or os.path.join(REPO, "..", "shared", "data", "azure2019")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("PW_URL", "http://127.0.0.1:8080"),
                    help="prewarmd HTTP API (127.0.0.1 only; default %(default)s)")
    ap.add_argument("--trace", default=DEFAULT_TRACE,
                    help="trace directory (default: $PW_TRACE_DIR or <repo>/../shared/data/azure2019)")
    ap.add_argument("--functions", type=int, default=3, help="how many trace functions (default 3)")
    ap.add_argument("--min-daily", type=int, default=200, help="min invocations/day to qualify (200)")
    ap.add_argument("--max-daily", type=int, default=5000, help="max invocations/day to qualify (5000)")
    ap.add_argument("--start-minute", type=int, default=600, help="first trace minute, 1..1440 (600)")
    ap.add_argument("--minutes", type=int, default=30, help="trace minutes to replay (30)")
    ap.add_argument("--speed", type=float, default=60.0,
                    help="speed-up; 60 = one trace minute per second (default 60)")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed for arrival times (1)")
    ap.add_argument("--concurrency", type=int, default=32, help="worker threads (32)")
    ap.add_argument("--acquire-timeout-ms", type=int, default=5000, help="acquire deadline (5000)")
    ap.add_argument("--max-runtime", type=float, default=45.0,
                    help="hard bound on the whole replay in seconds (45)")
    ap.add_argument("--pool-min", type=int, default=1)
    ap.add_argument("--pool-max", type=int, default=20)
    ap.add_argument("--keepalive-ms", type=int, default=10000)
    ap.add_argument("--plan", action="store_true", help="print the selected slice and exit")
    ap.add_argument("--guest-builder", metavar="PATH",
                    help="real microVMs: build each function's guest image with this "
                         "build-guest.sh, and send an HTTP GET to every VM acquired")
    ap.add_argument("--memory-mb", type=int, default=0,
                    help="guest memory of every function instead of the trace's (0: the trace's)")
    ap.add_argument("--wait-ready", type=float, default=90.0,
                    help="with --guest-builder: seconds to wait for the pools to be warm (90)")
    a = ap.parse_args(argv)
    if not 1 <= a.start_minute <= 1440:
        ap.error("--start-minute must be in 1..1440")
    if a.minutes < 1 or a.start_minute + a.minutes - 1 > 1440:
        ap.error("--minutes must be >= 1 and stay within the day")
    if not 0.1 <= a.speed <= 100000:
        ap.error("--speed must be in 0.1..100000")
    if not 1 <= a.concurrency <= 256:
        ap.error("--concurrency must be in 1..256")
    if a.functions < 1 or a.functions > 50:
        ap.error("--functions must be in 1..50")
    if not 1 <= a.max_runtime <= 3600:
        ap.error("--max-runtime must be in 1..3600 s")
    if a.memory_mb and not 64 <= a.memory_mb <= 4096:
        ap.error("--memory-mb must be 0 or in 64..4096")
    if a.guest_builder and not os.path.isfile(a.guest_builder):
        ap.error("--guest-builder: no such file: %s" % a.guest_builder)
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost") or not u.port:
        ap.error("--url must be http://127.0.0.1:PORT")
    a.host, a.port = "127.0.0.1", u.port
    return a


# ---- trace ----------------------------------------------------------------------------------
class TraceFunction:
    def __init__(self, hash_, daily, window):
        self.hash = hash_
        self.daily = daily
        self.window = window          # invocations per minute over the replay window
        self.avg_ms = 100.0
        self.memory_mb = 128
        self.name = "fn-" + hash_[:8]
        self.image = "azure2019/%s" % hash_[:16]  # opaque to the sim; a guest image dir for real VMs

    def answer(self):
        """What the function's guest answers (real microVMs)."""
        return "%s: trace function %s" % (self.name, self.hash[:12])

    def peak_concurrency(self):
        """Concurrent invocations in the busiest minute of the window (rate x duration)."""
        return max(self.window or [0]) * self.avg_ms / 60000.0


def load_trace(a):
    inv_path = os.path.join(a.trace, "invocations_per_minute.csv")
    if not os.path.exists(inv_path):
        raise SystemExit("demo_traffic: trace not found: %s (set PW_TRACE_DIR or --trace)" % inv_path)
    first = a.start_minute - 1
    candidates = []
    with open(inv_path, newline="") as f:
        rd = csv.reader(f)
        header = next(rd)
        if header[:3] != ["HashFunction", "HashApp", "HashOwner"] or len(header) < 3 + 1440:
            raise SystemExit("demo_traffic: unexpected header in %s" % inv_path)
        for row in rd:
            if len(row) < 3 + 1440:
                continue
            try:
                counts = [int(x or 0) for x in row[3:3 + 1440]]
            except ValueError:
                continue
            daily = sum(counts)
            if a.min_daily <= daily <= a.max_daily:
                window = counts[first:first + a.minutes]
                candidates.append(TraceFunction(row[0], daily, window))
    by_hash = {t.hash: t for t in candidates}
    dur_path = os.path.join(a.trace, "durations_ms.csv")
    if os.path.exists(dur_path):
        with open(dur_path, newline="") as f:
            for row in csv.DictReader(f):
                t = by_hash.get(row.get("HashFunction"))
                if t:
                    try:
                        t.avg_ms = max(1.0, float(row["Average"]))
                    except (KeyError, ValueError):
                        pass
    mem_path = os.path.join(a.trace, "memory_mb.csv")
    if os.path.exists(mem_path):
        with open(mem_path, newline="") as f:
            for row in csv.DictReader(f):
                # memory is per application; in this sample HashApp == HashFunction
                t = by_hash.get(row.get("HashApp"))
                if t:
                    try:
                        t.memory_mb = int(min(2048, max(128, float(row["AverageAllocatedMb"]))))
                    except (KeyError, ValueError):
                        pass
    # The busiest in the window (ties: busiest in the day, then hash for determinism) whose
    # peak concurrency (busiest minute x average duration) fits in 3/4 of the pool's max.
    candidates.sort(key=lambda t: (-sum(t.window), -t.daily, t.hash))
    chosen = [t for t in candidates if sum(t.window) > 0 and t.peak_concurrency() <= 0.75 * a.pool_max]
    chosen = chosen[:a.functions]
    if not chosen:
        raise SystemExit("demo_traffic: no function with %d..%d invocations/day is active in minutes "
                         "%d..%d" % (a.min_daily, a.max_daily, a.start_minute, a.start_minute + a.minutes - 1))
    names = set()
    for t in chosen:
        n = 8
        while t.name in names and n < len(t.hash):
            n += 2
            t.name = "fn-" + t.hash[:n]
        names.add(t.name)
    return chosen


def schedule(a, funcs):
    """[(real_time_s, func)] sorted: each minute's arrivals uniform within the minute."""
    rng = random.Random(a.seed)
    events = []
    for t in funcs:
        for i, n in enumerate(t.window):
            for _ in range(n):
                trace_s = i * 60.0 + rng.random() * 60.0
                events.append((trace_s / a.speed, t))
    events.sort(key=lambda e: (e[0], e[1].name))
    return events


# ---- HTTP -----------------------------------------------------------------------------------
class Client:
    """Keep-alive HTTP connection per thread; reconnects once on a broken connection."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.local.conn = c
        return c

    def request(self, method, path, body=None, timeout=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            c = self._conn()
            try:
                if timeout is not None and c.sock is not None:
                    c.sock.settimeout(timeout)
                elif timeout is not None:
                    c.timeout = timeout
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                payload = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    self.local.conn = None
                try:
                    obj = json.loads(payload) if payload else None
                except ValueError:
                    obj = payload.decode("utf-8", "replace")
                return r.status, obj
            except (http.client.HTTPException, OSError):
                c.close()
                self.local.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")


# ---- replay ---------------------------------------------------------------------------------
class Stats:
    def __init__(self, funcs):
        self.lock = threading.Lock()
        self.c = collections.Counter()
        self.per_fn = {t.name: collections.Counter() for t in funcs}
        self.wait_ms = []
        self.http_ms = []
        self.errors = []

    def http(self, ms, ok):
        with self.lock:
            self.c["http_ok" if ok else "http_err"] += 1
            if ok:
                self.http_ms.append(ms)

    def add(self, fn, key, n=1):
        with self.lock:
            self.c[key] += n
            self.per_fn[fn][key] += n

    def error(self, msg):
        with self.lock:
            self.c["errors"] += 1
            if len(self.errors) < 10:
                self.errors.append(msg)


def invoke(client, a, stats, t, stop):
    if stop.is_set():
        stats.add(t.name, "skipped")
        return
    stats.add(t.name, "invocations")
    try:
        st, body = client.request("POST", "/v1/functions/%s/acquire" % t.name,
                                  {"timeout_ms": a.acquire_timeout_ms},
                                  timeout=a.acquire_timeout_ms / 1000.0 + 5)
    except (OSError, http.client.HTTPException) as e:
        stats.error("acquire %s: %s" % (t.name, e))
        return
    if st == 503:
        stats.add(t.name, "timeouts")
        return
    if st == 429:
        stats.add(t.name, "rejected")
        return
    if st != 200 or not isinstance(body, dict):
        stats.error("acquire %s -> %s %s" % (t.name, st, str(body)[:200]))
        return
    stats.add(t.name, "cold" if body.get("start") == "cold" else "warm")
    with stats.lock:
        if isinstance(body.get("wait_ms"), (int, float)):
            stats.wait_ms.append(body["wait_ms"])
    hold = max(0.005, t.avg_ms / a.speed / 1000.0)
    t0 = time.monotonic()
    if a.guest_builder:
        ok, why = call_vm(body.get("address", ""), t)
        stats.http((time.monotonic() - t0) * 1000.0, ok)
        if not ok:
            stats.error("GET %s (%s): %s" % (body.get("address"), t.name, why))
        hold = max(0.0, hold - (time.monotonic() - t0))
    stop.wait(min(hold, 30.0))
    held_ms = int((time.monotonic() - t0) * 1000)
    try:
        st, body = client.request("POST", "/v1/leases/%s/release" % body.get("lease_id"),
                                  {"duration_ms": held_ms, "outcome": "ok"}, timeout=10)
    except (OSError, http.client.HTTPException) as e:
        stats.error("release %s: %s" % (t.name, e))
        return
    if st != 200:
        stats.error("release %s -> %s %s" % (t.name, st, str(body)[:200]))
        return
    stats.add(t.name, "released")


def call_vm(address, t, timeout=10):
    """GET / on the VM; (True, "") when the answer is 200 and comes from function t."""
    host, _, port = address.partition(":")
    if host != "127.0.0.1" or not port.isdigit():
        return False, "not a local address: %r" % address
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
        c.request("GET", "/invoke")
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
        fn = r.getheader("X-Prewarm-Function", "")
        c.close()
    except (OSError, http.client.HTTPException) as e:
        return False, str(e)
    if r.status != 200 or fn != t.name or text != t.answer():
        return False, "status %s, function %r, body %r" % (r.status, fn, text[:80])
    return True, ""


def build_images(a, funcs):
    """Build each function's guest image (cached by build-guest.sh) and use it as the image."""
    import subprocess
    for t in funcs:
        t0 = time.monotonic()
        r = subprocess.run(["bash", a.guest_builder, "function", t.name, "--static", t.answer()],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1800)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("/")]
        if r.returncode != 0 or not lines:
            raise SystemExit("demo_traffic: building the guest image of %s failed:\n%s"
                             % (t.name, r.stderr[-2000:]))
        t.image = lines[-1]
        print("image %s: %s (%.1f s)" % (t.name, t.image, time.monotonic() - t0), flush=True)


def wait_warm(client, a, funcs):
    """Wait until every pool has its minimum idle (golden snapshots and restores take a while
    with real VMs)."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < a.wait_ready:
        line = pool_line(client, funcs)
        ready = True
        for t in funcs:
            try:
                st, p = client.request("GET", "/v1/functions/%s/pool" % t.name, timeout=2)
            except (OSError, http.client.HTTPException):
                st, p = 0, None
            ready = ready and st == 200 and isinstance(p, dict) and p.get("idle", 0) >= a.pool_min
        if ready:
            print("pools warm after %.1f s: %s" % (time.monotonic() - t0, line), flush=True)
            return True
        if line != last:
            print("waiting for warm pools (%.0f s): %s" % (time.monotonic() - t0, line), flush=True)
            last = line
        time.sleep(0.5)
    print("demo_traffic: pools not warm after %.0f s; replaying anyway" % a.wait_ready, flush=True)
    return False


def pool_line(client, funcs):
    parts = []
    for t in funcs:
        try:
            st, p = client.request("GET", "/v1/functions/%s/pool" % t.name, timeout=2)
        except (OSError, http.client.HTTPException):
            st, p = 0, None
        if st == 200 and isinstance(p, dict):
            parts.append("%s idle %s leased %s rest %s" % (t.name, p.get("idle"), p.get("leased"),
                                                           p.get("restoring")))
        else:
            parts.append("%s ?" % t.name)
    return " | ".join(parts)


def register(client, a, funcs):
    for t in funcs:
        body = {"image": t.image, "memory_mb": a.memory_mb or t.memory_mb, "vcpus": 1,
                "pool": {"policy": "fixed", "min": a.pool_min, "max": a.pool_max,
                         "keepalive_ms": a.keepalive_ms}}
        st, obj = client.request("PUT", "/v1/functions/" + t.name, body, timeout=10)
        if st != 200:
            raise SystemExit("demo_traffic: PUT /v1/functions/%s -> %s %s" % (t.name, st, obj))
        print("registered %s  (trace %s…, %d MB, avg %.0f ms, %d invocations in the window)"
              % (t.name, t.hash[:12], a.memory_mb or t.memory_mb, t.avg_ms, sum(t.window)),
              flush=True)


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    funcs = load_trace(a)
    events = schedule(a, funcs)
    span = a.minutes * 60.0 / a.speed
    print("trace %s: minutes %d..%d at %gx (%.0f s), %d functions, %d invocations, seed %d"
          % (os.path.basename(os.path.normpath(a.trace)), a.start_minute, a.start_minute + a.minutes - 1,
             a.speed, span, len(funcs), len(events), a.seed), flush=True)
    if a.plan:
        for t in funcs:
            print("  %s  daily %5d  window %4d  avg %7.0f ms  peak conc %4.1f  mem %4d MB  per-minute %s"
                  % (t.name, t.daily, sum(t.window), t.avg_ms, t.peak_concurrency(), t.memory_mb,
                     ",".join(str(x) for x in t.window)))
        return 0

    client = Client(a.host, a.port, timeout=10)
    if a.guest_builder:
        build_images(a, funcs)
    try:
        register(client, a, funcs)
        if a.guest_builder:
            wait_warm(client, a, funcs)
    except (OSError, http.client.HTTPException) as e:
        print("demo_traffic: cannot reach prewarmd at %s: %s" % (a.url, e), file=sys.stderr)
        return 2

    stats = Stats(funcs)
    stop = threading.Event()
    status_client = Client(a.host, a.port, timeout=2)
    t_start = time.monotonic()
    hard_deadline = t_start + a.max_runtime

    def reporter():
        tick = 0
        while not stop.wait(1.0) and tick < 100000:
            tick += 1
            el = time.monotonic() - t_start
            minute = a.start_minute + min(a.minutes - 1, int(el * a.speed / 60.0))
            with stats.lock:
                c = dict(stats.c)
            print("t=%4.0fs min %4d | inv %5d warm %5d cold %4d timeouts %3d err %d | %s"
                  % (el, minute, c.get("invocations", 0), c.get("warm", 0), c.get("cold", 0),
                     c.get("timeouts", 0), c.get("errors", 0), pool_line(status_client, funcs)),
                  flush=True)

    rep = threading.Thread(target=reporter, name="reporter", daemon=True)
    rep.start()
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=a.concurrency, thread_name_prefix="inv")
    submitted = 0
    try:
        for due, t in events:
            now = time.monotonic()
            if t_start + due > hard_deadline:
                break
            if t_start + due > now:
                time.sleep(min(t_start + due - now, a.max_runtime))
            ex.submit(invoke, client, a, stats, t, stop)
            submitted += 1
        # Let in-flight invocations finish, within the hard deadline.
        ex.shutdown(wait=False)
        while time.monotonic() < hard_deadline:
            with stats.lock:
                c = stats.c
                done = c["released"] + c["timeouts"] + c["rejected"] + c["errors"] + c["skipped"]
            if done >= submitted:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        stop.set()
        ex.shutdown(wait=True, cancel_futures=True)
        rep.join(timeout=3)

    elapsed = time.monotonic() - t_start
    c = stats.c
    started = c["warm"] + c["cold"]
    print("---- summary (%.1f s, %d of %d invocations sent) ----" % (elapsed, submitted, len(events)))
    for t in funcs:
        f = stats.per_fn[t.name]
        s = f["warm"] + f["cold"]
        print("%s  invocations %5d  warm %5d  cold %4d  warm%% %5.1f  timeouts %d"
              % (t.name, f["invocations"], f["warm"], f["cold"], 100.0 * f["warm"] / s if s else 0.0,
                 f["timeouts"]))
    p50, p99 = percentile(stats.wait_ms, 0.5), percentile(stats.wait_ms, 0.99)
    print("total: invocations %d, warm %d, cold starts %d, warm %.1f%%, timeouts %d, rejected %d, "
          "errors %d, acquire wait p50 %s ms p99 %s ms"
          % (c["invocations"], c["warm"], c["cold"], 100.0 * c["warm"] / started if started else 0.0,
             c["timeouts"], c["rejected"], c["errors"], p50, p99), flush=True)
    if a.guest_builder:
        h50, h99 = percentile(stats.http_ms, 0.5), percentile(stats.http_ms, 0.99)
        print("real microVMs: %d HTTP answers from the VMs (each from its own function), %d failed, "
              "GET p50 %s ms p99 %s ms"
              % (c["http_ok"], c["http_err"], "%.1f" % h50 if h50 is not None else "-",
                 "%.1f" % h99 if h99 is not None else "-"), flush=True)
    for e in stats.errors:
        print("  error: %s" % e)
    return 1 if c["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
