#!/usr/bin/env python3
"""test_predictive — prewarmd sizes a 'predictive' pool from its forecast.

A real PostgreSQL, a real prewarmd with the shipped model and one real agent (sim driver).
Traffic in one wall-clock minute is forecast at the next minute boundary: the forecast
endpoint then shows a rate, the model and its top feature contributions, and the pool holds
the floor the forecast asked for, with no acquire waiting. Takes about a minute (forecasts
run once per wall-clock minute)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Agent, Checks, Cluster, expect, wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(REPO, "models", "default.json")
FN = "busy"


def check_setup(c):
    st, body = c.http("PUT", "/v1/functions/" + FN,
                      {"memory_mb": 128, "pool": {"policy": "predictive", "min": 0, "max": 40,
                                                  "keepalive_ms": 5000, "quantile": 0.99}})
    expect(st == 200 and body.get("pool", {}).get("policy") == "predictive"
           and body["pool"].get("quantile") == 0.99, "PUT predictive pool -> %s" % st, body)
    st, body = c.http("PUT", "/v1/functions/%s/pool" % FN, {"quantile": 1.5})
    expect(st == 400, "quantile 1.5 refused -> %s" % st, body)
    st, body = c.http("GET", "/v1/functions/%s/forecast" % FN)
    expect(st == 404 and body.get("error", {}).get("code") == "no_forecast_yet",
           "no forecast before the first minute closes -> %s" % st, body)
    st, ready = c.http("GET", "/readyz")
    expect(st == 200 and ready.get("model_loaded") is True, "readyz reports the model loaded", ready)


def check_traffic_then_forecast(c):
    # Traffic until the next wall-clock minute boundary has passed: about 3 invocations a second.
    start_minute = int(time.time() // 60)
    sent = 0
    deadline = time.monotonic() + 75
    while int(time.time() // 60) == start_minute and time.monotonic() < deadline:
        st, lease = c.http("POST", "/v1/functions/%s/acquire" % FN, {"timeout_ms": 5000})
        expect(st == 200, "acquire -> %s" % st, lease)
        st, body = c.http("POST", "/v1/leases/%s/release" % lease["lease_id"], {"duration_ms": 50})
        expect(st == 200, "release -> %s" % st, body)
        sent += 1
        time.sleep(0.3)
    expect(sent > 0, "sent traffic")

    def forecast():
        st, f = c.http("GET", "/v1/functions/%s/forecast" % FN)
        return st == 200 and f.get("minute", 0) > start_minute, f
    f = wait_until(forecast, 20.0, "a forecast for the minute after the traffic")
    if isinstance(f, tuple):
        f = f[1]
    st, f = c.http("GET", "/v1/functions/%s/forecast" % FN)
    expect(f.get("lambda_per_min", 0) > 0.5, "forecast rate > 0.5/min after %d invocations" % sent, f)
    reg = c.get_json("/v1/models")
    shipped = [m for m in reg["models"] if m["path"].endswith(os.path.join("models", "default.json"))]
    expect(len(shipped) == 1 and shipped[0]["source"] == "file" and shipped[0]["active"]
           and f.get("model") == shipped[0]["version"] == reg["in_use"],
           "the shipped model made it (registered as the active file model)", {"forecast": f, "registry": reg})
    contribs = f.get("contributions", [])
    expect(len(contribs) >= 3 and all("feature" in x and "contribution" in x for x in contribs),
           "top feature contributions listed", f)
    expect(f.get("floor", 0) >= 1, "a floor of at least one VM for a busy function", f)

    def pool_at_floor():
        st, p = c.http("GET", "/v1/functions/%s/pool" % FN)
        live = p.get("idle", 0) + p.get("leased", 0) + p.get("restoring", 0)
        return p.get("floor") == f["floor"] and live >= f["floor"] and p.get("idle", 0) >= 1, p
    wait_until(pool_at_floor, 5.0, "the pool holds the forecast's floor (%s VMs)" % f.get("floor"))
    return "%d invocations in minute %d -> %.2f/min, floor %d" % (sent, start_minute, f["lambda_per_min"],
                                                                  f["floor"])


def main():
    checks = Checks("test_predictive: prewarmd + shipped model + 1 agent (sim)")
    with checks.setup_guard():
        with Cluster(agents=[Agent("agent-p", "2node")], heartbeat_ms=500,
                     scheduler_args=["--model", MODEL], name="predictive") as c:
            checks.check("predictive pool registered, no forecast yet, model loaded", check_setup, c)
            checks.check("traffic -> forecast with contributions -> pool at its floor",
                         check_traffic_then_forecast, c)
            checks.done_with(c)
    return checks.finish()


if __name__ == "__main__":
    sys.exit(main())
