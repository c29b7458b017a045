#!/usr/bin/env python3
"""test_tls.py — the agent link over NNG tls+tcp:// with mutual authentication, against real
processes (PostgreSQL, prewarmd, sim agents) and a throwaway CA made with openssl.

Checked: an agent with a certificate naming its id registers and gets VMs; one presenting
another agent's certificate passes TLS but its hello is refused (the certificate does not name
it) and it never appears; one with a certificate from another CA, and one with no certificate
(plain tcp://), cannot connect at all; the refusals are counted; the good agent is undisturbed;
and misconfigurations (TLS URL without a CA, --tls-cert without a TLS URL) stop at start with
exit 2 and a clear error. No private key is ever logged.
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (AGENT, PREWARMD, Agent, Checks, Cluster, Process, expect,  # noqa: E402
                     free_ports, wait_until)


class S:
    c = None
    d = None


def openssl(*args):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stderr[-500:]))


def make_ca(d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", crt, "-subj", "/CN=" + name, "-days", "2")
    return key, crt


def make_cert(d, ca, cn, name):
    """A certificate for cn signed by ca, with its key, in one PEM file (what NNG and the agent
    take)."""
    key, csr, crt = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".crt"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
            "-out", csr, "-subj", "/CN=" + cn)
    openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial", "-out", crt,
            "-days", "2")
    both = os.path.join(d, name + ".pem")
    with open(both, "w") as f:
        f.write(open(crt).read() + open(key).read())
    return both


def hosts():
    return S.c.hosts()


def start_extra_agent(agent_id, cert, url=None, extra=()):
    argv = [AGENT, "--id", agent_id, "--scheduler", url or S.c.agents_url, "--driver", "sim",
            "--topology-root", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                                            "topology", "1node"),
            "--log-level", "debug", "--tls-server-name", "scheduler"]
    if cert is not None:
        argv += ["--tls-cert", cert, "--tls-ca", os.path.join(S.d, "ca.pem")]
    argv += list(extra)
    p = Process("agent-" + agent_id, argv, os.path.join(S.c.tmp, "agent-%s.log" % agent_id))
    p.start()
    S.c.extra_processes = getattr(S.c, "extra_processes", []) + [p]
    return p


def unauthenticated():
    st, text = S.c.http("GET", "/metrics")
    for ln in text.splitlines():
        if ln.startswith("prewarm_agent_messages_unauthenticated_total "):
            return float(ln.split()[1])
    return -1


def check_good_agent():
    h = hosts()
    expect("a1" in h and h["a1"]["state"] == "alive", "a1 with its own certificate is alive", h)
    st, body = S.c.http("PUT", "/v1/functions/fn", {"image": "i", "pool": {"policy": "fixed", "min": 2}})
    expect(st == 200, "PUT fn", body)
    wait_until(lambda: S.c.pool("fn").get("idle", 0) >= 2, 10, "two VMs on a1 over the TLS link")


def check_stolen_cert():
    before = unauthenticated()
    p = start_extra_agent("a2", os.path.join(S.d, "a1.pem"))
    wait_until(lambda: "not name agent a2" in S.c.scheduler.log_text(), 10, "the hello of a2 refused")
    time.sleep(1.0)
    expect("a2" not in hosts(), "a2 never registers", hosts())
    expect(unauthenticated() > before, "refusal counted", unauthenticated())
    expect("unauthenticated" in p.log_text(), "the agent is told why", p.tail(5))
    p.stop()


def check_other_ca():
    p = start_extra_agent("a3", os.path.join(S.d, "a3-rogue.pem"))
    time.sleep(3.0)
    expect("a3" not in hosts(), "a3 (another CA) never registers", hosts())
    expect("hello from \"a3\"" not in S.c.scheduler.log_text(), "a3 never gets as far as a hello")
    p.stop()


def check_no_cert():
    url = S.c.agents_url.replace("tls+tcp://", "tcp://")
    p = start_extra_agent("a4", None, url=url)
    time.sleep(3.0)
    expect("a4" not in hosts(), "a plain tcp:// agent never registers", hosts())
    p.stop()


def check_still_fine():
    h = hosts()
    expect(h["a1"]["state"] == "alive" and S.c.pool("fn").get("idle", 0) >= 2, "a1 undisturbed", h)
    for name in ("prewarmd", "agent-a1"):
        log = S.c.scheduler.log_text() if name == "prewarmd" else S.c.agents["a1"].process.log_text()
        expect("PRIVATE KEY" not in log, "no key in the %s log" % name)


def check_misconfig():
    http, agents = free_ports(2)
    r = subprocess.run([PREWARMD, "--http", "127.0.0.1:%d" % http, "--agents", "tls+tcp://127.0.0.1:%d" % agents,
                        "--pg", S.c.pg.conninfo, "--agents-tls-cert", os.path.join(S.d, "scheduler.pem")],
                       capture_output=True, text=True, timeout=20)
    out = r.stdout + r.stderr
    expect(r.returncode == 2 and "--agents-tls-ca" in out, "TLS URL without a CA: refused at start (exit 2)",
           (r.returncode, out[-300:]))
    r = subprocess.run([AGENT, "--id", "x", "--scheduler", "tcp://127.0.0.1:1", "--tls-cert",
                        os.path.join(S.d, "a1.pem"), "--tls-ca", os.path.join(S.d, "ca.pem")],
                       capture_output=True, text=True, timeout=20)
    expect(r.returncode == 2 and "tls+tcp://" in r.stderr, "--tls-cert without a TLS URL: exit 2",
           (r.returncode, r.stderr[-300:]))
    r = subprocess.run([AGENT, "--id", "x", "--scheduler", "tls+tcp://127.0.0.1:1"],
                       capture_output=True, text=True, timeout=20)
    expect(r.returncode == 2 and "--tls-cert" in r.stderr, "a TLS URL without a certificate: exit 2",
           (r.returncode, r.stderr[-300:]))


def main():
    checks = Checks("agent link over mutual TLS")
    d = tempfile.mkdtemp(prefix="pw-tls-")
    S.d = d
    try:
        ca = make_ca(d, "ca")
        rogue = make_ca(d, "rogue-ca")
        sched = make_cert(d, ca, "scheduler", "scheduler")
        a1 = make_cert(d, ca, "a1", "a1")
        make_cert(d, rogue, "a3", "a3-rogue")
    except (OSError, RuntimeError) as e:
        checks.fail("a throwaway CA with openssl", str(e))
        return checks.finish()
    c = Cluster(agents=[Agent("a1", "2node", extra_args=["--tls-cert", a1, "--tls-ca", ca[1],
                                                          "--tls-server-name", "scheduler"])],
                sim_restore_ms=20, name="tls",
                scheduler_args=["--agents-tls-cert", sched, "--agents-tls-ca", ca[1]])
    c.agents_scheme = "tls+tcp"
    with c:
        S.c = c
        for name, fn in [("an agent with its certificate registers and gets VMs", check_good_agent),
                         ("another agent's certificate: hello refused", check_stolen_cert),
                         ("a certificate from another CA: no connection", check_other_ca),
                         ("no certificate (plain tcp): no connection", check_no_cert),
                         ("the good agent is undisturbed; no key logged", check_still_fine),
                         ("misconfigurations stop at start", check_misconfig)]:
            checks.check(name, fn)
        checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
