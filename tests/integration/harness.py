"""harness.py — black-box integration test harness for Prewarm (Python 3, standard library only).

A Cluster starts a throwaway PostgreSQL (scripts/pgtmp.sh), a real prewarmd and N real
prewarm-agent processes on free 127.0.0.1 ports, talks to the HTTP API, and kills / restarts
processes. Everything it starts is stopped on every path (context manager + atexit); on failure
the tail of each process log is printed.

Environment:
  PW_BINARY_DIR     build directory holding scheduler/prewarmd and agents/prewarm-agent
                    (default <repo>/build)
  PW_SOURCE_DIR     repository root (default: two levels above this file)
  PW_PGTMP          path of the pgtmp.sh script (default <repo>/scripts/pgtmp.sh)
  PW_KEEP_LOGS=1    keep the temp dir with the logs even when everything passed
  PW_TIMEOUT_SCALE  multiply every wait_until timeout (default 1.0; e.g. 2 on a slow machine)

Checks: a test file makes a Checks object, runs check(name, fn) for each named check (one
line printed per check) and ends with checks.finish(), which prints "N passed, M failed" as the
last line and exits non-zero on any failure.
"""

import atexit
import contextlib
import ctypes
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.abspath(os.environ.get("PW_SOURCE_DIR")
                       or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BINARY_DIR = os.path.abspath(os.environ.get("PW_BINARY_DIR") or os.path.join(REPO, "build"))
TIMEOUT_SCALE = float(os.environ.get("PW_TIMEOUT_SCALE", "1") or "1")

PREWARMD = os.path.join(BINARY_DIR, "scheduler", "prewarmd")
AGENT = os.path.join(BINARY_DIR, "agents", "prewarm-agent")
FIXTURES = os.path.join(REPO, "tests", "fixtures", "topology")
PGTMP = os.environ.get("PW_PGTMP") or os.path.join(REPO, "scripts", "pgtmp.sh")

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


class HarnessError(Exception):
    pass


class WaitTimeout(HarnessError):
    pass


class ProcessDied(HarnessError):
    """Raised inside a wait_until predicate to stop waiting at once."""


def log(msg):
    print(msg, flush=True)


def free_port():
    """A TCP port that is free on 127.0.0.1 right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    ports = set()
    for _ in range(50 * n):
        if len(ports) == n:
            break
        ports.add(free_port())
    if len(ports) != n:
        raise HarnessError("could not find %d distinct free ports" % n)
    return sorted(ports)


def _short(v, limit=600):
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s)


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll predicate() until it returns a truthy value (returned) or timeout seconds pass.

    predicate may return a (ok, observed) tuple so that the last observed value is shown in the
    error; otherwise the return value itself is the observation. Exceptions raised by predicate
    count as "not yet" and are reported if the deadline passes."""
    timeout = timeout * TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    last = None
    polls = 0
    while True:
        polls += 1
        try:
            r = predicate()
            if isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], bool):
                ok, last = r
            else:
                ok, last = bool(r), r
            if ok:
                return last
        except ProcessDied:
            raise
        except Exception as e:  # noqa: BLE001 — observation failed; retry until the deadline
            last = "exception: %s: %s" % (type(e).__name__, e)
        if time.monotonic() >= deadline or polls > 100000:
            raise WaitTimeout("timed out after %.1fs waiting for %s; last observed: %s"
                              % (timeout, what, _short(last)))
        time.sleep(interval)


def _pdeathsig():
    """Child pre-exec: die with SIGKILL when the harness dies (even by SIGKILL from ctest)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 — best effort only
        pass


def become_subreaper():
    """Make this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER): a
    process whose parent dies (a QEMU whose agent was SIGKILLed) is reparented here instead of
    to PID 1, which in some containers never reaps. Reap such processes with reap(). Returns
    True when it took effect."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001 — not Linux, or no libc: callers check the result
        return False


def reap(pids):
    """Reap those of pids that are exited children of this process (zombies reparented here by
    become_subreaper). Never touches other children. Returns the pids reaped."""
    done = []
    for pid in pids:
        try:
            r, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if r == pid:
            done.append(pid)
    return done


class Process:
    """One daemon process: fixed argv, stdout+stderr appended to a log file, restartable."""

    def __init__(self, name, argv, log_path, env=None):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc = None
        self.starts = 0

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running():
            raise HarnessError("%s is already running (pid %d)" % (self.name, self.proc.pid))
        if not os.access(self.argv[0], os.X_OK):
            raise HarnessError("%s: binary not found or not executable: %s" % (self.name, self.argv[0]))
        with open(self.log_path, "ab") as f:
            f.write(("\n=== harness: start #%d: %s\n" % (self.starts + 1, " ".join(self.argv))).encode())
            f.flush()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         env=self.env, preexec_fn=_pdeathsig, close_fds=True)
        self.starts += 1
        return self

    def send_signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, sig=signal.SIGKILL, timeout=10.0):
        """Send sig and wait (bounded) for the process to exit; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        rc = self.wait(timeout)
        if rc is None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.wait(5)
        return rc

    def stop(self, grace=5.0):
        """SIGTERM, then SIGKILL after grace seconds."""
        return self.kill(signal.SIGTERM, timeout=grace)

    def restart(self):
        """Start again with the same arguments (stops it first if still running)."""
        if self.running():
            self.kill(signal.SIGKILL)
        return self.start()

    def tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                lines = f.read().decode("utf-8", "replace").splitlines()
            return lines[-n:]
        except OSError as e:
            return ["(cannot read %s: %s)" % (self.log_path, e)]

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Postgres:
    """A throwaway PostgreSQL through scripts/pgtmp.sh (unix socket only, user postgres)."""

    def __init__(self):
        self.dir = None

    def _run(self, *args, timeout=60):
        if not os.path.exists(PGTMP):
            raise HarnessError("pgtmp script not found: %s" % PGTMP)
        r = subprocess.run(["bash", PGTMP] + list(args), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError("pgtmp.sh %s failed (rc %d): %s%s" % (" ".join(args), r.returncode,
                               r.stdout[-2000:], r.stderr[-2000:]))
        return r.stdout

    def start(self):
        out = self._run("start")
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        if not lines or not os.path.isdir(lines[-1]):
            raise HarnessError("pgtmp.sh start did not print a directory: %r" % out[-500:])
        self.dir = lines[-1]
        return self.dir

    def restart(self):
        self._run("restart", self.dir)

    def halt(self):
        """Stop the server (pgtmp.sh halt: -m fast, clients disconnected) but keep its data
        directory, to simulate an outage; resume() starts it again on the same data and socket.
        stop() still removes everything, halted or not."""
        self._run("halt", self.dir)

    def resume(self):
        """Start a halted server again on its data (pgtmp.sh restart)."""
        self._run("restart", self.dir)

    def stop(self):
        if self.dir:
            d, self.dir = self.dir, None
            self._run("stop", d)

    @property
    def conninfo(self):
        return "host=%s user=postgres dbname=postgres" % self.dir


class Agent:
    """What to run for one agent; the Cluster owns its Process.

    driver is the VMM driver ("sim" by default; "qemu" runs real microVMs and takes no
    --sim-* flags). fixture names a topology fixture, or None for the real host's topology.
    extra_args are appended to the command line."""

    def __init__(self, agent_id, fixture, labels=None, sim_restore_ms=None, extra_args=None,
                 driver="sim", wrapper=None):
        self.id = agent_id
        self.fixture = fixture
        self.labels = dict(labels or {})
        self.sim_restore_ms = sim_restore_ms
        self.extra_args = list(extra_args or [])
        self.driver = driver
        # wrapper: argv put in front of the agent's command line, e.g. ["ip", "netns", "exec",
        # NAME] to run it in a network namespace. It must exec the agent (same PID), so that
        # signals sent to the Process reach the agent itself.
        self.wrapper = list(wrapper or [])
        self.process = None


_LIVE_CLUSTERS = []


def _cleanup_all():
    for c in list(_LIVE_CLUSTERS):
        try:
            c.stop()
            log("harness: logs kept in %s" % c.tmp)
        except Exception as e:  # noqa: BLE001
            print("harness: cleanup error: %s" % e, file=sys.stderr)


atexit.register(_cleanup_all)


def _on_signal(signum, frame):
    _cleanup_all()
    sys.exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except (ValueError, OSError):
        pass


class Cluster:
    """PostgreSQL + prewarmd + agents. Use as a context manager:

        with Cluster(agents=[Agent("a1", "2node")], heartbeat_ms=500) as c:
            status, body = c.http("GET", "/v1/hosts")

    Set c.failed = True before leaving the block to get the log tails printed and kept."""

    def __init__(self, agents=(), heartbeat_ms=500, sim_restore_ms=200, lease_ttl_ms=None,
                 adopt_grace_ms=None, log_level="info", scheduler_args=(), name="cluster", token=None,
                 agent_listen_host="127.0.0.1"):
        self.agents = {a.id: a for a in agents}
        self.heartbeat_ms = heartbeat_ms
        self.sim_restore_ms = sim_restore_ms
        self.lease_ttl_ms = lease_ttl_ms
        self.adopt_grace_ms = adopt_grace_ms
        self.log_level = log_level
        self.scheduler_args = list(scheduler_args)
        self.tmp = tempfile.mkdtemp(prefix="pw-%s-" % name)
        self.pg = Postgres()
        self.scheduler = None
        self.http_port = None
        self.agent_port = None
        self.failed = False
        self.last_headers = {}
        self.scheduler_started_at = None
        self._stopped = False
        self._stop_hooks = []
        self.token = token  # a bearer token sent with every c.http() unless headers override it
        self.agents_scheme = "tcp"  # "tls+tcp": a TLS agent link (set before start; test_tls)
        # The address prewarmd listens on for agents (and the agents dial): loopback unless a
        # test needs agents elsewhere, e.g. a veth address towards a network namespace.
        self.agent_listen_host = agent_listen_host

    # ---- lifecycle -------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.failed = True
            self.stop()
            self.finalize()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.failed = True
        self.stop()
        self.finalize()
        return False

    def start(self):
        _LIVE_CLUSTERS.append(self)
        log("harness: logs in %s" % self.tmp)
        self.pg.start()
        self.http_port, self.agent_port = free_ports(2)
        self.start_scheduler()
        for a in self.agents.values():
            self.start_agent(a.id)
        self.wait_agents_alive(list(self.agents), timeout=10)

    @property
    def agents_url(self):
        return "%s://%s:%d" % (self.agents_scheme, self.agent_listen_host, self.agent_port)

    def _env(self):
        env = dict(os.environ)
        env["PGHOST"] = self.pg.dir or ""
        env["PGUSER"] = "postgres"
        env["PGDATABASE"] = "postgres"
        return env

    def start_scheduler(self, wait=True):
        if self.scheduler is None:
            argv = [PREWARMD,
                    "--http", "127.0.0.1:%d" % self.http_port,
                    "--agents", self.agents_url,
                    "--pg", self.pg.conninfo,
                    "--heartbeat-ms", str(self.heartbeat_ms),
                    "--log-level", self.log_level]
            if self.lease_ttl_ms is not None:
                argv += ["--lease-ttl-ms", str(self.lease_ttl_ms)]
            if self.adopt_grace_ms is not None:
                argv += ["--adopt-grace-ms", str(self.adopt_grace_ms)]
            if "--model-dir" not in self.scheduler_args:
                # Trained models stay with the run's logs, not in the working directory.
                argv += ["--model-dir", os.path.join(self.tmp, "models")]
            argv += self.scheduler_args
            self.scheduler = Process("prewarmd", argv, os.path.join(self.tmp, "prewarmd.log"),
                                     env=self._env())
        self.scheduler.start()
        self.scheduler_started_at = time.monotonic()
        if wait:
            self.wait_scheduler_ready()

    def wait_scheduler_ready(self, timeout=15):
        def check_alive():
            if not self.scheduler.running():
                raise ProcessDied("prewarmd exited with status %s (see its log)"
                                   % self.scheduler.proc.returncode)

        def live():
            check_alive()
            st, body = self.http("GET", "/livez", timeout=2)
            return st == 200, (st, body)

        def ready():
            check_alive()
            st, body = self.http("GET", "/readyz", timeout=2)
            return st == 200 and isinstance(body, dict) and body.get("ready") is True, (st, body)

        wait_until(live, timeout, "prewarmd /livez == 200", interval=0.05)
        wait_until(ready, timeout, "prewarmd /readyz == 200 ready:true", interval=0.1)

    @property
    def adopt_grace_s(self):
        ms = self.adopt_grace_ms if self.adopt_grace_ms is not None else 3 * self.heartbeat_ms
        return ms / 1000.0

    def wait_adopt_grace(self, slack=0.2):
        """Sleep until prewarmd has been up longer than its adoption grace (during which it
        waits for agents to report their VMs before it restores any)."""
        if self.scheduler_started_at is None:
            return
        left = self.scheduler_started_at + self.adopt_grace_s + slack - time.monotonic()
        if left > 0:
            time.sleep(min(left, 60.0))

    def kill_scheduler(self, sig=signal.SIGKILL):
        return self.scheduler.kill(sig)

    def restart_scheduler(self, sig=signal.SIGKILL, wait=True):
        """Kill prewarmd with sig (SIGKILL by default) and start it with the same arguments."""
        self.scheduler.kill(sig)
        self.start_scheduler(wait=wait)

    def start_agent(self, agent_id):
        a = self.agents[agent_id]
        if a.process is None:
            restore = a.sim_restore_ms if a.sim_restore_ms is not None else self.sim_restore_ms
            argv = [AGENT, "--id", a.id, "--scheduler", self.agents_url, "--driver", a.driver]
            if a.fixture is not None:
                argv += ["--topology-root", os.path.join(FIXTURES, a.fixture)]
            if a.driver == "sim":
                argv += ["--sim-restore-ms", str(restore)]
            argv += ["--log-level", self.log_level]
            for k, v in sorted(a.labels.items()):
                argv += ["--label", "%s=%s" % (k, v)]
            argv += a.extra_args
            argv = a.wrapper + argv
            a.process = Process("agent-" + a.id, argv, os.path.join(self.tmp, "agent-%s.log" % a.id),
                                env=self._env())
        a.process.start()
        return a.process

    def kill_agent(self, agent_id, sig=signal.SIGKILL):
        return self.agents[agent_id].process.kill(sig)

    def restart_agent(self, agent_id, sig=signal.SIGKILL):
        """Kill the agent with sig if it still runs, then start it with the same arguments."""
        p = self.agents[agent_id].process
        if p.running():
            p.kill(sig)
        return self.start_agent(agent_id)

    def restart_pg(self):
        self.pg.restart()

    def halt_pg(self):
        """PostgreSQL down, data kept (an outage); resume_pg() brings it back."""
        self.pg.halt()

    def resume_pg(self):
        self.pg.resume()

    def add_stop_hook(self, fn):
        """Run fn() in stop(), after every process is stopped (also on failure and at exit):
        for clean-ups of what the processes leave behind (files, orphaned VMs)."""
        self._stop_hooks.append(fn)

    def processes(self):
        ps = [self.scheduler] if self.scheduler else []
        ps += [a.process for a in self.agents.values() if a.process]
        return ps

    def stop(self, grace=5.0):
        """Stop agents, then prewarmd (SIGTERM, SIGKILL after grace), then PostgreSQL.
        Idempotent; logs stay until finalize()."""
        if self._stopped:
            return
        self._stopped = True
        try:
            for a in self.agents.values():
                if a.process:
                    a.process.stop(grace)
            if self.scheduler:
                self.scheduler.stop(grace)
        finally:
            for fn in self._stop_hooks:
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 — one failed hook must not stop the others
                    print("harness: stop hook failed: %s" % e, file=sys.stderr)
            try:
                self.pg.stop()
            except Exception as e:  # noqa: BLE001
                print("harness: stopping PostgreSQL failed: %s" % e, file=sys.stderr)
            if self in _LIVE_CLUSTERS:
                _LIVE_CLUSTERS.remove(self)

    def finalize(self):
        """After stop(): on failure print each log's tail and keep the logs; else remove them."""
        if self.failed:
            self.dump_logs()
            log("harness: logs kept in %s" % self.tmp)
        elif os.environ.get("PW_KEEP_LOGS"):
            log("harness: logs kept in %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def dump_logs(self, n=40):
        for p in self.processes():
            print("----- last %d lines of %s (%s) -----" % (n, p.name, p.log_path), file=sys.stderr)
            for line in p.tail(n):
                print("  " + line, file=sys.stderr)
        if self.pg.dir:
            print("----- PostgreSQL dir %s -----" % self.pg.dir, file=sys.stderr)
        sys.stderr.flush()

    def sanitizer_reports(self):
        """Lines from any process log that look like an ASan/LSan/UBSan report."""
        found = []
        for p in self.processes():
            for line in p.log_text().splitlines():
                if any(m in line for m in SANITIZER_MARKERS):
                    found.append("%s: %s" % (p.name, line.strip()))
        return found

    def print_sanitizer_reports(self, max_lines=80):
        """Print each sanitizer report in full (from its marker to its SUMMARY line, at most
        max_lines), so that a rare report is readable from the CI output alone."""
        for p in self.processes():
            lines = p.log_text().splitlines()
            i = 0
            while i < len(lines):
                if any(m in lines[i] for m in SANITIZER_MARKERS):
                    print("----- sanitizer report in %s -----" % p.name, file=sys.stderr)
                    j = i
                    while j < len(lines) and j - i < max_lines:
                        print("  " + lines[j], file=sys.stderr)
                        if lines[j].startswith("SUMMARY:"):
                            break
                        j += 1
                    i = j + 1
                else:
                    i += 1
        sys.stderr.flush()

    # ---- HTTP ------------------------------------------------------------------------------
    def http(self, method, path, body=None, raw=None, headers=None, timeout=10):
        """One request on a fresh connection. body is JSON-encoded; raw is sent as-is. With
        self.token set it goes as a bearer token; headers={"Authorization": None} leaves it out.
        Returns (status, parsed JSON or the text if it is not JSON). Headers of the last
        response are in self.last_headers (lower-case names)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            hdrs = {"Connection": "close"}
            data = None
            if raw is not None:
                data = raw if isinstance(raw, bytes) else raw.encode()
            elif body is not None:
                data = json.dumps(body).encode()
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            if self.token:
                hdrs["Authorization"] = "Bearer " + self.token
            hdrs.update(headers or {})
            hdrs = {k: v for k, v in hdrs.items() if v is not None}  # None: leave the header out
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            self.last_headers = {k.lower(): v for k, v in resp.getheaders()}
            return resp.status, _decode(payload)
        finally:
            conn.close()

    def http_raw(self, method, path, body, headers=None, timeout=10):
        """Send a request whose body the server may refuse before reading it all (e.g. 413):
        keeps reading while writing, so an early answer is not lost. Returns
        (status, headers, parsed body) or raises HarnessError if no answer came."""
        hdr = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n" \
              "Content-Length: %d\r\nConnection: close\r\n" % (method, path, self.http_port, len(body))
        for k, v in (headers or {}).items():
            hdr += "%s: %s\r\n" % (k, v)
        out = memoryview(hdr.encode() + b"\r\n" + body)
        sent = 0
        buf = b""
        deadline = time.monotonic() + timeout
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout)
        try:
            s.setblocking(False)
            eof = False
            while time.monotonic() < deadline and not eof:
                wl = [s] if sent < len(out) else []
                r, w, _ = select.select([s], wl, [], 0.2)
                if r:
                    try:
                        chunk = s.recv(65536)
                    except (ConnectionResetError, BlockingIOError):
                        chunk = b""
                        eof = True
                    if not chunk:
                        eof = True
                    buf += chunk
                    if _http_complete(buf):
                        break
                if w:
                    try:
                        sent += s.send(out[sent:sent + 65536])
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        sent = len(out)  # server closed its side: stop writing, keep reading
        finally:
            s.close()
        if not buf:
            raise HarnessError("no HTTP response to %s %s (%d of %d bytes sent)"
                               % (method, path, sent, len(out)))
        head, _, payload = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise HarnessError("malformed HTTP status line: %r" % lines[0])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs, _decode(payload)

    # ---- API helpers -----------------------------------------------------------------------
    def get_json(self, path, expect=200):
        st, body = self.http("GET", path)
        if st != expect:
            raise HarnessError("GET %s -> %s %s (expected %d)" % (path, st, _short(body), expect))
        return body

    def pool(self, fn):
        return self.get_json("/v1/functions/%s/pool" % fn)

    def vms(self, function=None, host=None):
        vms = self.get_json("/v1/vms").get("vms", [])
        return [v for v in vms if (function is None or v.get("function") == function)
                and (host is None or v.get("host") == host)]

    def hosts(self):
        return {h.get("id"): h for h in self.get_json("/v1/hosts").get("hosts", [])}

    def wait_agents_alive(self, ids, timeout=10):
        def pred():
            hs = self.hosts()
            states = {i: hs.get(i, {}).get("state") for i in ids}
            return all(s == "alive" for s in states.values()), states
        return wait_until(pred, timeout, "agents %s alive in GET /v1/hosts" % ", ".join(ids))


def _decode(payload):
    if not payload:
        return None
    text = payload.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _http_complete(buf):
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for ln in head.split(b"\r\n")[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            try:
                return len(body) >= int(v.strip())
            except ValueError:
                return False
    return False


# ---- real microVMs --------------------------------------------------------------------------
GUEST_BUILDER = os.path.join(REPO, "agents", "guest", "build-guest.sh")


def qemu_skip_or_fail(test, why):
    """A test that needs QEMU cannot run: fail loudly when PREWARM_REQUIRE_QEMU=1 (CI), else
    say loudly that it is skipped. Returns the exit code."""
    bar = "*" * 78
    if os.environ.get("PREWARM_REQUIRE_QEMU") == "1":
        log("%s\n** %s: FAILING: %s (PREWARM_REQUIRE_QEMU=1)\n%s" % (bar, test, why, bar))
        log("0 passed, 1 failed")
        return 1
    log("%s\n** %s: SKIPPING its real-microVM checks: %s\n"
        "** (set PREWARM_REQUIRE_QEMU=1 to make this a failure)\n%s" % (bar, test, why, bar))
    return 0


def build_guest_image(name, *args):
    """Builds (or finds in the cache) a function's guest image; returns its directory."""
    t = time.monotonic()
    r = subprocess.run(["bash", GUEST_BUILDER, "function", name] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise HarnessError("build-guest.sh function %s failed: %s" % (name, r.stderr[-1500:]))
    out = [ln for ln in r.stdout.splitlines() if ln.strip()]
    log("image %s: %s (%.1f s)" % (name, out[-1], time.monotonic() - t))
    return out[-1]


def is_hex_id(v):
    return isinstance(v, str) and len(v) == 16 and all(c in "0123456789abcdefABCDEF" for c in v)


def is_error_body(body, status):
    """A JSON error object {"error":{"code":"...","message":"..."}}."""
    return (isinstance(body, dict) and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("code"), str) and body["error"]["code"] != ""
            and isinstance(body["error"].get("message"), str)) and 400 <= status <= 599


class CheckFailed(AssertionError):
    pass


def expect(cond, msg, observed=None):
    if not cond:
        if observed is not None:
            msg = "%s; observed: %s" % (msg, _short(observed))
        raise CheckFailed(msg)


class Checks:
    """Runs named checks, one output line each, and a final "N passed, M failed" line."""

    def __init__(self, title):
        self.title = title
        self.passed = 0
        self.failed = 0
        self.t0 = time.monotonic()
        log("== %s" % title)

    def check(self, name, fn, *args, **kwargs):
        t = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 — any failure of a check is reported, not fatal
            self.failed += 1
            log("FAIL %s (%.2fs): %s: %s" % (name, time.monotonic() - t, type(e).__name__, e))
            if not isinstance(e, (CheckFailed, WaitTimeout, HarnessError)):
                traceback.print_exc(file=sys.stdout)
            return None
        self.passed += 1
        note = (" — %s" % result) if isinstance(result, str) and result else ""
        log("PASS %s (%.2fs)%s" % (name, time.monotonic() - t, note))
        return True

    def fail(self, name, msg):
        self.failed += 1
        log("FAIL %s: %s" % (name, msg))

    @property
    def ok(self):
        return self.failed == 0

    @contextlib.contextmanager
    def setup_guard(self, cleanup=None):
        """Around a test's cluster: an error outside the checks (the cluster did not start, a
        process it needs died) counts as one failed check, "cluster setup", not a traceback;
        cleanup, if given, runs last in any case."""
        try:
            yield
        except HarnessError as e:
            self.fail("cluster setup", str(e))
        except Exception as e:  # noqa: BLE001
            self.fail("cluster setup", "%s: %s" % (type(e).__name__, e))
        finally:
            if cleanup is not None:
                cleanup()

    def done_with(self, cluster):
        """After a cluster's checks: the sanitizer check, and keep its logs if anything failed."""
        self.sanitizers_clean(cluster)
        cluster.failed = not self.ok

    def sanitizers_clean(self, cluster):
        """After the checks passed: stop the cluster gracefully (so leak reports reach the logs)
        and count one more check that no process printed a sanitizer report."""
        if not self.ok:
            return
        cluster.stop()
        reports = cluster.sanitizer_reports()
        if reports:
            self.fail("no sanitizer reports in process logs", "; ".join(reports[:5]))
            cluster.failed = True  # keep the logs
            cluster.print_sanitizer_reports()
        else:
            self.passed += 1
            log("PASS no sanitizer reports in process logs")

    def finish(self):
        log("(%.1fs)" % (time.monotonic() - self.t0))
        log("%d passed, %d failed" % (self.passed, self.failed))
        sys.stdout.flush()
        return 0 if self.failed == 0 and self.passed > 0 else 1


# ---- prewarm-gateway -------------------------------------------------------------------------
GATEWAY = os.path.join(BINARY_DIR, "gateway", "prewarm-gateway")



def qemu_processes(run_dir):
    """{pid: (vm id hex, state letter, ppid)} of the QEMU processes (zombies included) whose
    command line names a path under run_dir and a -name prewarm-<id>: the agent's VMs."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                args = f.read().split(b"\0")
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        if b"-name" not in args or not any(run_dir.encode() in a for a in args):
            continue
        name = args[args.index(b"-name") + 1].decode()
        if not name.startswith("prewarm-"):
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        found[int(d)] = (name[len("prewarm-"):], rest[0], int(rest[1]))
    return found

def start_gateway(cluster, extra_args=(), timeout=10):
    """Start prewarm-gateway in front of cluster's prewarmd on a free port; returns the Process
    with .port set. It is registered with the cluster, so stop() stops it (before the agents)
    and its log is dumped and checked for sanitizer reports like the others'."""
    port = free_port()
    argv = [GATEWAY, "--listen", "127.0.0.1:%d" % port,
            "--scheduler-url", "http://127.0.0.1:%d" % cluster.http_port,
            "--log-level", cluster.log_level] + list(extra_args)
    p = Process("gateway", argv, os.path.join(cluster.tmp, "gateway.log"))
    p.port = port
    p.start()
    cluster.extra_processes = getattr(cluster, "extra_processes", []) + [p]

    def live():
        if not p.running():
            raise ProcessDied("prewarm-gateway exited with status %s" % p.proc.returncode)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/livez")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    wait_until(live, timeout, "prewarm-gateway /livez == 200")
    return p


_cluster_processes = Cluster.processes
_cluster_stop = Cluster.stop


def _processes_with_extra(self):
    return list(getattr(self, "extra_processes", [])) + _cluster_processes(self)


def _stop_with_extra(self, grace=5.0):
    if not self._stopped:
        for p in getattr(self, "extra_processes", []):
            p.stop(grace)
    return _cluster_stop(self, grace)


Cluster.processes = _processes_with_extra
Cluster.stop = _stop_with_extra
