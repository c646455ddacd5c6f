"""GET /traces (filters, bounds, ordering, limit, 422s) and GET /traces/{id}."""
import datetime as dt

import pytest

from support import (assert_422, assert_detail, env_name, iso, quote, uid,
                     utcnow)


@pytest.fixture(scope="module")
def dataset(api):
    """A project with a known set of traces, all with distinct created_at."""
    env_a, env_b = env_name(), env_name()
    pid, key = api.project(environment=env_a)
    base = dt.datetime(2025, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    spec = [
        # name, latency, tokens, model, status, env, minutes after base
        ("t1", 100.0, 10, "gpt-4o", "success", env_a, 1),
        ("t2", 200.0, 20, "gpt-4o-mini", "failed", env_a, 5),
        ("t3", 300.0, 30, "gpt-4o", "warning", env_b, 3),
        ("t4", 200.5, 0, "claude", "success", env_b, 2),
        ("t5", 0.0, 1000, "gpt-4o", "failed", env_a, 4),
    ]
    ids = {}
    traces = []
    for name, lat, tok, model, status, env, minutes in spec:
        tid = f"{name}-{uid()}"
        ids[name] = tid
        traces.append({"trace_id": tid, "latency": lat, "token_count": tok,
                       "model_name": model, "status": status, "environment": env,
                       "created_at": iso(base + dt.timedelta(minutes=minutes))})
    # ingested in an order different from created_at order
    api.batch_ok(key, traces)
    return {"pid": pid, "key": key, "ids": ids, "env_a": env_a, "env_b": env_b}


def names(dataset, body):
    rev = {v: k for k, v in dataset["ids"].items()}
    return [rev.get(t["trace_id"], t["trace_id"]) for t in body["items"]]


def q(api, dataset, **params):
    return api.traces(project_id=dataset["pid"], **params)


def test_all_newest_first(api, dataset):
    body = q(api, dataset)
    assert body["total"] == 5
    assert names(dataset, body) == ["t2", "t5", "t3", "t4", "t1"]


def test_items_are_full_traces(api, dataset):
    body = q(api, dataset)
    for t in body["items"]:
        assert t["project_id"] == dataset["pid"]
        assert t == api.trace(t["trace_id"])


@pytest.mark.parametrize("status,expected", [
    ("success", ["t4", "t1"]), ("FAILED", ["t2", "t5"]), ("Warning", ["t3"])])
def test_filter_status(api, dataset, status, expected):
    body = q(api, dataset, status=status)
    assert names(dataset, body) == expected and body["total"] == len(expected)


def test_filter_model_exact(api, dataset):
    assert names(dataset, q(api, dataset, model="gpt-4o")) == ["t5", "t3", "t1"]
    assert names(dataset, q(api, dataset, model="gpt-4o-mini")) == ["t2"]
    assert q(api, dataset, model="gpt")["total"] == 0
    assert q(api, dataset, model="GPT-4O")["total"] == 0


def test_filter_environment(api, dataset):
    assert names(dataset, q(api, dataset, environment=dataset["env_b"])) == ["t3", "t4"]
    body = api.traces(environment=dataset["env_b"])
    assert body["total"] == 2
    assert q(api, dataset, environment="nope-" + uid())["total"] == 0


def test_filter_project(api, dataset):
    assert api.traces(project_id="no-such-" + uid()) == {"total": 0, "items": []}


@pytest.mark.parametrize("params,expected", [
    ({"latency_min": "200"}, ["t2", "t3", "t4"]),
    ({"latency_min": "200.5"}, ["t3", "t4"]),
    ({"latency_max": "200"}, ["t2", "t5", "t1"]),
    ({"latency_min": "200", "latency_max": "200"}, ["t2"]),
    ({"latency_min": "0", "latency_max": "0"}, ["t5"]),
    ({"latency_min": "100", "latency_max": "200.5"}, ["t2", "t4", "t1"]),
    ({"latency_min": "1e2", "latency_max": "1.5e2"}, ["t1"]),
    ({"token_min": "20"}, ["t2", "t5", "t3"]),
    ({"token_max": "10"}, ["t4", "t1"]),
    ({"token_min": "10", "token_max": "30"}, ["t2", "t3", "t1"]),
    ({"token_min": "0", "token_max": "0"}, ["t4"]),
    ({"status": "failed", "model": "gpt-4o"}, ["t5"]),
    ({"latency_min": "301"}, []),
])
def test_bounds_inclusive(api, dataset, params, expected):
    body = q(api, dataset, **params)
    assert names(dataset, body) == expected
    assert body["total"] == len(expected)


def test_empty_values_are_no_filter(api, dataset):
    body = q(api, dataset, status="", model="", environment="", latency_min="",
             latency_max="", token_min="", token_max="", limit="")
    assert body["total"] == 5 and len(body["items"]) == 5
    body = api.traces(project_id="", environment=dataset["env_b"])
    assert body["total"] == 2


def test_limit_and_total(api, dataset):
    body = q(api, dataset, limit=2)
    assert body["total"] == 5
    assert names(dataset, body) == ["t2", "t5"]
    body = q(api, dataset, limit=1)
    assert body["total"] == 5 and len(body["items"]) == 1
    body = q(api, dataset, status="failed", limit=1)
    assert body["total"] == 2 and names(dataset, body) == ["t2"]


def test_unknown_params_ignored_last_value_wins(api, dataset):
    r = api.get("/traces?project_id=%s&foo=bar&limit=0&limit=2" % dataset["pid"])
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 2
    r = api.get("/traces?project_id=nope&project_id=%s&status=bogus&status=failed"
                % dataset["pid"])
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 2


def test_default_limit_50_max_200(api):
    pid, key = api.project()
    api.batch_ok(key, [{"prompt": str(i)} for i in range(205)])
    body = api.traces(project_id=pid)
    assert body["total"] == 205 and len(body["items"]) == 50
    body = api.traces(project_id=pid, limit=200)
    assert body["total"] == 205 and len(body["items"]) == 200
    # same created_at (now) differs; anyway all newest first
    ts = [t["created_at"] for t in body["items"]]
    assert ts == sorted(ts, reverse=True)


def test_ordering_ties_and_instants(api):
    pid, key = api.project()
    same = "2025-02-02T10:00:00Z"
    a, b, c, d = ("a-" + uid(), "b-" + uid(), "c-" + uid(), "d-" + uid())
    api.ingest_ok(key, {"trace_id": a, "created_at": same})
    api.ingest_ok(key, {"trace_id": b, "created_at": "2025-02-02T12:00:00+02:00"})
    api.ingest_ok(key, {"trace_id": c, "created_at": "2025-02-02T10:00:00"})
    # d's string sorts last, but as an instant it is the newest
    api.ingest_ok(key, {"trace_id": d, "created_at": "2025-02-02T05:00:01-05:00"})
    ids = [t["trace_id"] for t in api.traces(project_id=pid)["items"]]
    # d = 10:00:01Z; a, b, c all 10:00:00Z: most recently ingested first
    assert ids == [d, c, b, a]
    # re-sending a makes it the most recently ingested of the ties
    api.ingest_ok(key, {"trace_id": a, "created_at": same, "prompt": "again"})
    ids = [t["trace_id"] for t in api.traces(project_id=pid)["items"]]
    assert ids == [d, a, c, b]
    # in a batch: later items count as ingested later
    pid2, key2 = api.project()
    e, f = "e-" + uid(), "f-" + uid()
    api.batch_ok(key2, [{"trace_id": e, "created_at": same},
                        {"trace_id": f, "created_at": same}])
    ids = [t["trace_id"] for t in api.traces(project_id=pid2)["items"]]
    assert ids == [f, e]


def test_limit_422_exact(api):
    r = api.get("/traces", params={"limit": "0"})
    assert r.status_code == 422
    assert r.json() == {"detail": [{
        "type": "greater_than_equal", "loc": ["query", "limit"],
        "msg": "Input should be greater than or equal to 1", "input": "0",
        "ctx": {"ge": 1}}]}
    r = api.get("/traces", params={"limit": "201"})
    assert r.status_code == 422
    assert r.json() == {"detail": [{
        "type": "less_than_equal", "loc": ["query", "limit"],
        "msg": "Input should be less than or equal to 200", "input": "201",
        "ctx": {"le": 200}}]}


def test_limit_int_parsing(api):
    r = api.get("/traces", params={"limit": "abc"})
    items = assert_422(r, ("int_parsing", ["query", "limit"], {"input": "abc"}))
    assert len(items) == 1
    assert set(items[0]) <= {"type", "loc", "msg", "input", "ctx"}
    assert_422(api.get("/traces", params={"limit": "1.5"}),
               ("int_parsing", ["query", "limit"], {"input": "1.5"}))


def test_latency_min_negative(api):
    r = api.get("/traces", params={"latency_min": "-1"})
    assert r.status_code == 422
    assert r.json() == {"detail": [{
        "type": "greater_than_equal", "loc": ["query", "latency_min"],
        "msg": "Input should be greater than or equal to 0", "input": "-1",
        "ctx": {"ge": 0}}]}


def test_status_enum(api):
    r = api.get("/traces", params={"status": "bogus"})
    items = assert_422(r, ("enum", ["query", "status"], {"input": "bogus"}))
    assert len(items) == 1
    assert set(items[0]) <= {"type", "loc", "msg", "input", "ctx"}


@pytest.mark.parametrize("param,value,typ", [
    ("latency_min", "abc", "float_parsing"),
    ("latency_max", "x1", "float_parsing"),
    ("latency_max", "-0.5", "greater_than_equal"),
    ("token_min", "1.5", "int_parsing"),
    ("token_max", "ten", "int_parsing"),
    ("token_min", "-1", "greater_than_equal"),
    ("token_max", "-3", "greater_than_equal"),
])
def test_numeric_filters_422(api, param, value, typ):
    assert_422(api.get("/traces", params={param: value}),
               (typ, ["query", param], {"input": value}))


def test_several_problems_one_item_each(api):
    r = api.get("/traces", params={"limit": "0", "latency_min": "-1",
                                   "status": "nope"})
    items = assert_422(r, ("greater_than_equal", ["query", "limit"]),
                       ("greater_than_equal", ["query", "latency_min"]),
                       ("enum", ["query", "status"]))
    assert len(items) == 3


def test_get_one_404(api):
    assert_detail(api.get("/traces/" + uid()), 404, "Trace not found")


def test_get_one_odd_id(api, project):
    pid, key = project
    tid = "odd id é?&#" + uid()
    t = api.ingest_ok(key, {"trace_id": tid})
    assert t["trace_id"] == tid
    assert api.get("/traces/" + quote(tid)).json()["trace_id"] == tid
