"""GET /analytics."""
import datetime as dt
import math

import pytest

from support import assert_ts, env_name, iso, out_ts, uid, utcnow

ZERO_SUMMARY = {"total_traces": 0, "success_rate": 0, "average_latency": 0,
                "p95_latency": 0, "total_token_usage": 0, "failed_traces": 0,
                "warning_traces": 0, "retries": 0, "slow_requests": 0}


def hour_start(t):
    return t.replace(minute=0, second=0, microsecond=0)


def get(api, **params):
    r = api.get("/analytics", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"summary", "charts", "status_breakdown",
                         "model_breakdown", "project_breakdown",
                         "recent_failures"}, body
    return body


def p95(values):
    s = sorted(values)
    return s[math.ceil(0.95 * len(s)) - 1]


def build(api):
    """Ingest a known set relative to the current hour H; returns
    (project_id, H, ids, expectations)."""
    H = hour_start(utcnow())
    env = env_name()
    pid, key = api.project(environment=env)
    hrs = lambda k, extra=0: iso(H - dt.timedelta(hours=k) + dt.timedelta(seconds=extra))
    ids = {n: f"{n}-{uid()}" for n in ("t1", "t2", "t3", "t4", "t5", "t6", "t7")}
    traces = [
        # current hour (exactly its start)
        {"trace_id": ids["t1"], "latency": 100, "token_count": 10,
         "model_name": "alpha", "created_at": hrs(0)},
        # 1 hour ago, mid-hour
        {"trace_id": ids["t2"], "latency": 200, "token_count": 20,
         "model_name": "beta", "created_at": hrs(1, 1800)},
        {"trace_id": ids["t3"], "latency": 300.5, "token_count": 30,
         "model_name": "alpha", "created_at": hrs(1, 1200),
         "steps": [{"tool_name": "db", "success": False,
                    "output": {"error": "down"}}]},
        # 5 hours ago: explicit success, retried, slow
        {"trace_id": ids["t4"], "latency": 2000, "token_count": 40,
         "model_name": "alpha", "status": "success", "retry_count": 2,
         "created_at": hrs(5, 60)},
        # the oldest bucket's very start: warning
        {"trace_id": ids["t5"], "latency": 50, "token_count": 5,
         "model_name": "gamma", "failure_reason": "meh", "created_at": hrs(23)},
        # one second before the oldest bucket: in the summary, not the charts
        {"trace_id": ids["t6"], "latency": 120.333, "token_count": 0,
         "model_name": "Zeta", "created_at": hrs(23, -1)},
        # long ago
        {"trace_id": ids["t7"], "latency": 10, "token_count": 1,
         "model_name": "beta", "created_at": hrs(100)},
    ]
    api.batch_ok(key, traces)
    return pid, env, H, ids


@pytest.fixture(scope="module")
def known(api):
    for _ in range(3):
        pid, env, H, ids = build(api)
        body = get(api, project_id=pid)
        if hour_start(utcnow()) == H:
            return pid, env, H, ids, body
    pytest.fail("the hour kept changing")


def test_summary_exact(known):
    pid, env, H, ids, body = known
    lat = [100, 200, 300.5, 2000, 50, 120.333, 10]
    assert body["summary"] == {
        "total_traces": 7,
        "success_rate": 71.43,                          # 5 / 7
        "average_latency": 397.26,                      # 2780.833 / 7
        "p95_latency": p95(lat),                        # 2000
        "total_token_usage": 106,
        "failed_traces": 1,
        "warning_traces": 1,
        "retries": 2,
        "slow_requests": 1,
    }
    assert body["summary"]["average_latency"] == 397.26


def test_charts(known):
    pid, env, H, ids, body = known
    charts = body["charts"]
    assert len(charts) == 24
    for i, c in enumerate(charts):
        start = H - dt.timedelta(hours=23 - i)
        assert set(c) == {"label", "start", "latency", "tokens", "traces"}, c
        assert c["label"] == start.strftime("%H:00")
        assert_ts(c["start"])
        assert c["start"] == out_ts(start)
    by_age = {23 - i: c for i, c in enumerate(charts)}
    expect = {0: (100, 10, 1), 1: (250.25, 50, 2), 5: (2000, 40, 1), 23: (50, 5, 1)}
    for age, c in by_age.items():
        lat, tok, n = expect.get(age, (0, 0, 0))
        assert (c["latency"], c["tokens"], c["traces"]) == (lat, tok, n), (age, c)


def test_breakdowns(known):
    pid, env, H, ids, body = known
    assert body["status_breakdown"] == [
        {"key": "success", "count": 5}, {"key": "failed", "count": 1},
        {"key": "warning", "count": 1}]
    assert body["model_breakdown"] == [
        {"key": "alpha", "count": 3}, {"key": "beta", "count": 2},
        {"key": "Zeta", "count": 1}, {"key": "gamma", "count": 1}]
    assert body["project_breakdown"] == [{"key": pid, "count": 7}]


def test_recent_failures(known):
    pid, env, H, ids, body = known
    got = [t["trace_id"] for t in body["recent_failures"]]
    # failed (t3, 1h), slow+retried (t4, 5h), warning (t5, 23h)
    assert got == [ids["t3"], ids["t4"], ids["t5"]]
    for t in body["recent_failures"]:
        assert t["api_key"] is None and t["project_id"] == pid


def test_filter_environment(api, known):
    pid, env, H, ids, body = known
    assert get(api, environment=env) == body
    assert get(api, project_id=pid, environment=env) == body
    other = get(api, project_id=pid, environment="nope-" + uid())
    assert other["summary"] == ZERO_SUMMARY


def test_empty_values_no_filter(api, known):
    pid, env, H, ids, body = known
    assert get(api, project_id=pid, environment="") == body
    assert get(api, project_id="", environment=env) == body


def test_nothing_matches(api):
    body = get(api, project_id="none-" + uid())
    assert body["summary"] == ZERO_SUMMARY
    assert body["charts"] == []
    assert body["status_breakdown"] == []
    assert body["model_breakdown"] == []
    assert body["project_breakdown"] == []
    assert body["recent_failures"] == []


def test_only_old_traces_gives_zero_buckets(api):
    pid, key = api.project()
    api.ingest_ok(key, {"latency": 5, "created_at": iso(utcnow() - dt.timedelta(days=3))})
    body = get(api, project_id=pid)
    assert body["summary"]["total_traces"] == 1
    assert len(body["charts"]) == 24
    assert all(c["traces"] == 0 and c["tokens"] == 0 and c["latency"] == 0
               for c in body["charts"])


def test_environment_split_within_project(api):
    pid, key = api.project(environment="one")
    e2 = env_name()
    api.ingest_ok(key, {"latency": 10})
    api.ingest_ok(key, {"latency": 30, "environment": e2, "status": "failed"})
    api.ingest_ok(key, {"latency": 50, "environment": e2})
    s = get(api, project_id=pid, environment=e2)["summary"]
    assert s["total_traces"] == 2 and s["failed_traces"] == 1
    assert s["success_rate"] == 50 and s["average_latency"] == 40
    s = get(api, project_id=pid, environment="one")["summary"]
    assert s["total_traces"] == 1 and s["average_latency"] == 10
    s = get(api, project_id=pid)["summary"]
    assert s["total_traces"] == 3


def test_project_breakdown_multiple_projects(api):
    e = env_name()
    pa, ka = api.project(environment=e)
    pb, kb = api.project(environment=e)
    api.batch_ok(ka, [{}, {}])
    api.batch_ok(kb, [{}, {}])
    bd = get(api, environment=e)["project_breakdown"]
    assert bd == sorted([{"key": pa, "count": 2}, {"key": pb, "count": 2}],
                        key=lambda x: x["key"].encode())


def test_recent_failures_five_most_recent(api):
    pid, key = api.project()
    base = utcnow() - dt.timedelta(hours=2)
    ids = []
    for i in range(8):
        tid = f"rf{i}-{uid()}"
        ids.append(tid)
        kind = [{"status": "failed"}, {"retry_count": 1}, {"latency": 3000},
                {"status": "warning"}][i % 4]
        api.ingest_ok(key, dict(kind, trace_id=tid,
                                created_at=iso(base + dt.timedelta(minutes=i))))
    # a success in between does not count
    api.ingest_ok(key, {"created_at": iso(base + dt.timedelta(minutes=20))})
    body = get(api, project_id=pid)
    assert [t["trace_id"] for t in body["recent_failures"]] == ids[::-1][:5]


@pytest.mark.parametrize("n", [1, 2, 19, 20, 21, 40])
def test_p95_nearest_rank(api, n):
    pid, key = api.project()
    lat = [float((i * 37) % 101) + 0.25 for i in range(n)]
    api.batch_ok(key, [{"latency": v} for v in lat])
    s = get(api, project_id=pid)["summary"]
    assert s["p95_latency"] == round(p95(lat), 2)
    exact = sum(lat) / n
    assert abs(s["average_latency"] - exact) <= 0.005 + 1e-9
    assert s["average_latency"] == round(s["average_latency"], 2)
    assert s["total_traces"] == n


def test_rounding(api):
    pid, key = api.project()
    api.batch_ok(key, [{"latency": 1.111}, {"latency": 2.2222},
                       {"latency": 0.001, "status": "failed"}])
    s = get(api, project_id=pid)["summary"]
    assert s["average_latency"] == 1.11        # 3.3342 / 3 = 1.1114
    assert s["success_rate"] == 66.67
    assert s["p95_latency"] == 2.22
