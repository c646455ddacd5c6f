"""GET /failures."""
import datetime as dt
import json

import pytest

from support import (assert_422, assert_trace_shape, conn, env_name, iso,
                     uid, utcnow)


def get(api, **params):
    r = api.get("/failures", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"failed_traces", "retries", "slow_requests", "totals"}, body
    assert set(body["totals"]) == {"failed_traces", "retries", "slow_requests"}
    for k in ("failed_traces", "retries", "slow_requests"):
        for t in body[k]:
            assert_trace_shape(t)
    return body


@pytest.fixture(scope="module")
def known(api):
    env = env_name()
    pid, key = api.project(environment=env)
    base = utcnow() - dt.timedelta(hours=3)
    ids = {}
    spec = [
        # name, fields, minutes
        ("f1", {"status": "failed"}, 1),
        ("f2", {"steps": [{"tool_name": "x", "success": False}]}, 2),
        ("f3", {"status": "failed", "latency": 1500, "retry_count": 1}, 3),
        ("r1", {"retry_count": 1}, 4),
        ("r2", {"steps": [{"tool_name": "a"}, {"tool_name": "a"}]}, 5),
        ("s1", {"latency": 5000}, 6),
        ("s2", {"slow_request": True, "latency": 1}, 7),
        ("ok", {"latency": 100}, 8),
        ("ok2", {"latency": 9000, "slow_request": False}, 9),
    ]
    traces = []
    for name, fields, minutes in spec:
        ids[name] = f"{name}-{uid()}"
        traces.append(dict(fields, trace_id=ids[name],
                           created_at=iso(base + dt.timedelta(minutes=minutes))))
    api.batch_ok(key, traces[::-1])
    return pid, env, ids


def names(ids, lst):
    rev = {v: k for k, v in ids.items()}
    return [rev.get(t["trace_id"], "?") for t in lst]


def test_lists_and_totals(api, known):
    pid, env, ids = known
    body = get(api, project_id=pid)
    assert names(ids, body["failed_traces"]) == ["f3", "f2", "f1"]
    assert names(ids, body["retries"]) == ["r2", "r1", "f3"]
    assert names(ids, body["slow_requests"]) == ["s2", "s1", "f3"]
    assert body["totals"] == {"failed_traces": 3, "retries": 3, "slow_requests": 3}


def test_limit_caps_lists_not_totals(api, known):
    pid, env, ids = known
    body = get(api, project_id=pid, limit=1)
    assert names(ids, body["failed_traces"]) == ["f3"]
    assert names(ids, body["retries"]) == ["r2"]
    assert names(ids, body["slow_requests"]) == ["s2"]
    assert body["totals"] == {"failed_traces": 3, "retries": 3, "slow_requests": 3}
    body = get(api, project_id=pid, limit=2)
    assert names(ids, body["failed_traces"]) == ["f3", "f2"]


def test_environment_filter(api, known):
    pid, env, ids = known
    assert get(api, environment=env)["totals"] == {
        "failed_traces": 3, "retries": 3, "slow_requests": 3}
    body = get(api, project_id=pid, environment="other-" + uid())
    assert body == {"failed_traces": [], "retries": [], "slow_requests": [],
                    "totals": {"failed_traces": 0, "retries": 0, "slow_requests": 0}}


def test_empty_values(api, known):
    pid, env, ids = known
    assert get(api, project_id=pid, environment="", limit="") == get(api, project_id=pid)


def test_default_limit_25_max_100(api):
    pid, key = api.project()
    api.batch_ok(key, [{"status": "failed"} for _ in range(105)])
    body = get(api, project_id=pid)
    assert len(body["failed_traces"]) == 25
    assert body["totals"]["failed_traces"] == 105
    body = get(api, project_id=pid, limit=100)
    assert len(body["failed_traces"]) == 100


@pytest.mark.parametrize("value,typ,extra", [
    ("0", "greater_than_equal", {"ctx": {"ge": 1}, "input": "0",
                                 "msg": "Input should be greater than or equal to 1"}),
    ("101", "less_than_equal", {"ctx": {"le": 100}, "input": "101",
                                "msg": "Input should be less than or equal to 100"}),
    ("abc", "int_parsing", {"input": "abc"}),
    ("-5", "greater_than_equal", {"input": "-5"}),
])
def test_limit_422(api, value, typ, extra):
    items = assert_422(api.get("/failures", params={"limit": value}),
                       (typ, ["query", "limit"], extra))
    assert len(items) == 1


def test_spliced_responses_keep_their_length_on_one_connection(api, server,
                                                                known):
    """Lists of stored bodies are sent from where the store put them,
    between the response's own bytes: on one keep-alive connection every
    response's Content-Length is exactly its body, HEAD sends the same
    length and no body, and the next response still parses."""
    pid, env, ids = known
    paths = [f"/failures?project_id={pid}", f"/traces?project_id={pid}",
             f"/analytics?project_id={pid}",
             f"/failures?project_id={pid}&limit=1"]
    c = conn(server.port)
    try:
        for path in paths:
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            assert r.status == 200, body
            assert int(r.getheader("Content-Length")) == len(body)
            got, again = json.loads(body), api.get(path).json()
            if path.startswith("/analytics"):
                # The hourly charts move with the clock; the rest must not.
                got = {k: v for k, v in got.items() if k != "charts"}
                again = {k: v for k, v in again.items() if k != "charts"}
            assert got == again
            c.request("HEAD", path)
            h = c.getresponse()
            assert h.status == 200
            assert h.getheader("Content-Length") == r.getheader("Content-Length")
            assert h.read() == b""
    finally:
        c.close()
    assert names(ids, json.loads(body)["failed_traces"]) == ["f3"]
