#!/usr/bin/env python3
"""test_limits.py — every limit of prewarmd's API refuses with a clear error and is counted in
prewarm_limit_refusals_total{limit}: functions (--max-functions), waiters (--max-waiters, with
restores slow enough that acquires queue), request body (--max-body-bytes), headers (16 KiB),
malformed requests, and connections (--max-connections). After each refusal the state is
unchanged and the server keeps serving.
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Agent, Checks, Cluster, expect, wait_until  # noqa: E402


class S:
    c = None


def refusals():
    st, text = S.c.http("GET", "/metrics")
    out = {}
    for ln in text.splitlines():
        if ln.startswith("prewarm_limit_refusals_total{"):
            out[ln.split('limit="')[1].split('"')[0]] = float(ln.rsplit(" ", 1)[1])
    return out


def raw(data, read=True):
    s = socket.create_connection(("127.0.0.1", S.c.http_port), timeout=5)
    try:
        s.sendall(data)
        if not read:
            return b""
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        s.close()


def check_functions():
    for i in range(3):
        st, body = S.c.http("PUT", "/v1/functions/f%d" % i, {"image": "i", "pool": {"policy": "fixed", "min": 0}})
        expect(st == 200, "PUT f%d" % i, body)
    st, body = S.c.http("PUT", "/v1/functions/f3", {"image": "i"})
    expect(st == 429 and body["error"]["code"] == "limit_reached" and "--max-functions" in body["error"]["message"],
           "a 4th function is refused", body)
    st, body = S.c.http("PUT", "/v1/functions/f1", {"image": "i2", "pool": {"policy": "fixed", "min": 0}})
    expect(st == 200 and body["image"] == "i2", "an existing function can still change", body)
    st, body = S.c.http("GET", "/v1/functions")
    expect(sorted(f["name"] for f in body["functions"]) == ["f0", "f1", "f2"], "nothing added", body)
    expect(refusals().get("functions") == 1, "counted: functions", refusals())


def check_waiters():
    # f0 has no idle VM and restores take 3 s: acquires wait; beyond 2 waiting one is refused.
    results = []

    def acq():
        results.append(S.c.http("POST", "/v1/functions/f0/acquire", {"timeout_ms": 8000}, timeout=15))
    ts = [threading.Thread(target=acq) for _ in range(2)]
    for t in ts:
        t.start()
    wait_until(lambda: S.c.pool("f0").get("waiters", 0) == 2, 5, "two acquires waiting")
    st, body = S.c.http("POST", "/v1/functions/f0/acquire", {"timeout_ms": 8000})
    expect(st == 429 and body["error"]["code"] == "limit_reached", "a third waiter is refused", body)
    for t in ts:
        t.join(20)
    expect(sorted(r[0] for r in results) == [200, 200], "the two waiters got VMs", results)
    for st, lease in results:
        S.c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 1})
    expect(refusals().get("waiters", 0) >= 1, "counted: waiters", refusals())


def check_body_headers_malformed():
    st, hdrs, body = S.c.http_raw("PUT", "/v1/functions/f2", b'{"image":"' + b"x" * 4096 + b'"}')
    expect(st == 413 and body["error"]["code"] == "body_too_large", "body over --max-body-bytes: 413", body)
    big = b"GET /v1/functions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    out = raw(big)
    expect(out.startswith(b"HTTP/1.1 431"), "headers over 16 KiB: 431", out[:200])
    out = raw(b"NOT HTTP AT ALL\r\n\r\n")
    expect(out.startswith(b"HTTP/1.1 400"), "not HTTP: 400", out[:200])
    r = refusals()
    expect(r.get("http_body", 0) >= 1 and r.get("http_headers", 0) >= 1 and r.get("http_malformed", 0) >= 1,
           "counted: http_body, http_headers, http_malformed", r)
    st, body = S.c.http("GET", "/v1/functions/f2")
    expect(st == 200 and body["image"] == "i", "f2 unchanged", body)


def check_connections():
    before = refusals().get("http_connections", 0)
    held = []
    try:
        # Up to the limit (8) open connections; those beyond are closed at once.
        for _ in range(12):
            held.append(socket.create_connection(("127.0.0.1", S.c.http_port), timeout=5))
        time.sleep(0.3)
        closed = 0
        for s in held:
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except socket.timeout:
                pass
            except ConnectionResetError:
                closed += 1
        expect(closed >= 4, "connections beyond --max-connections are closed", closed)
    finally:
        for s in held:
            s.close()
    wait_until(lambda: S.c.http("GET", "/livez")[0] == 200, 5, "serving again once they are gone")
    expect(refusals().get("http_connections", 0) >= before + 4, "counted: http_connections", refusals())


def main():
    checks = Checks("limits: clear errors and prewarm_limit_refusals_total")
    with Cluster(agents=[Agent("a1", "2node")], sim_restore_ms=3000, name="limits",
                 scheduler_args=["--max-functions", "3", "--max-waiters", "2", "--max-body-bytes", "2048",
                                 "--max-connections", "8"]) as c:
        S.c = c
        for name, fn in [("functions: --max-functions", check_functions),
                         ("waiters: --max-waiters per function", check_waiters),
                         ("body, headers, malformed", check_body_headers_malformed),
                         ("connections: --max-connections", check_connections)]:
            checks.check(name, fn)
        checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
