#!/usr/bin/env python3
"""test_train_pg — prewarm-train learns from the history prewarmd keeps in PostgreSQL.

A real PostgreSQL with prewarmd's schema (prewarmd applies the migrations), two functions whose
invocation minutes are written as prewarmd writes them, then `prewarm-train --pg`: it must save
a model (checked by shape: an XGBoost JSON with our feature names), and refuse with a clear line
and exit 1 when there is not enough activity."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BINARY_DIR, Checks, Cluster, expect  # noqa: E402

TRAIN = os.path.join(BINARY_DIR, "bench", "train", "prewarm-train")
PSQL = "/usr/lib/postgresql/15/bin/psql" if os.path.exists("/usr/lib/postgresql/15/bin/psql") else "psql"


def seed_history(c):
    for fn, mem in (("busy", 512), ("tick", 256)):
        st, body = c.http("PUT", "/v1/functions/" + fn, {"memory_mb": mem})
        expect(st == 200, "PUT %s -> %s" % (fn, st), body)
    sql = ("INSERT INTO invocation_minutes SELECT 'busy', m, 30 + (m % 7) FROM generate_series(29000000, 29000399) m;"
           "INSERT INTO invocation_minutes SELECT 'tick', m, 3 FROM generate_series(29000000, 29000399, 15) m;")
    r = subprocess.run([PSQL, "-h", c.pg.dir, "-U", "postgres", "-d", "postgres", "-q", "-c", sql],
                       capture_output=True, text=True, timeout=30)
    expect(r.returncode == 0, "psql insert", r.stderr[-300:])


def train(c, out, *extra):
    return subprocess.run([TRAIN, "--pg", c.pg.conninfo, "--out", out] + list(extra),
                          capture_output=True, text=True, timeout=120)


def check_trains(c):
    seed_history(c)
    out = os.path.join(tempfile.mkdtemp(prefix="pw-train-"), "model.json")
    r = train(c, out, "--min-rows", "100")
    expect(r.returncode == 0, "prewarm-train --pg exit 0", r.stdout[-500:] + r.stderr[-500:])
    expect("2 functions x 400 minutes" in r.stdout, "read both functions' 400 minutes", r.stdout[-300:])
    model = json.load(open(out))
    attrs = model.get("learner", {}).get("attributes", {})
    expect("pw_features" in attrs and "lag1" in attrs["pw_features"] and "pw_offset" in attrs,
           "a model with our features and offset", list(attrs))
    return r.stdout.strip().splitlines()[-2]


def check_refuses(c):
    r = train(c, os.path.join(tempfile.mkdtemp(prefix="pw-train-"), "model.json"), "--min-rows", "100000")
    expect(r.returncode == 1 and "not trained" in r.stderr, "too little activity: exit 1 with a reason",
           r.stderr[-300:])
    r = subprocess.run([TRAIN, "--pg", "host=/nonexistent user=postgres", "--out", "/tmp/x.json"],
                       capture_output=True, text=True, timeout=30)
    expect(r.returncode == 1 and "cannot connect" in r.stderr, "unreachable PostgreSQL: exit 1", r.stderr[-300:])
    r = subprocess.run([TRAIN, "--pg", c.pg.conninfo], capture_output=True, text=True, timeout=30)
    expect(r.returncode == 2, "--pg without --out: usage, exit 2", r.stderr[-300:])


def main():
    checks = Checks("test_train_pg: prewarm-train --pg on prewarmd's PostgreSQL history")
    with checks.setup_guard():
        with Cluster(agents=[], name="trainpg") as c:
            checks.check("trains and saves a model from invocation_minutes", check_trains, c)
            checks.check("refuses clearly: too little history, no database, no --out", check_refuses, c)
            checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
