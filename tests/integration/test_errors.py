"""Routes, methods, the error shape, and mounting at a non-root Location."""
import pytest
import requests

from conftest import start_server, finish_server
from support import Api, assert_detail, assert_json_ct, assert_trace_shape


@pytest.mark.parametrize("path", ["/nope", "/traces/a/b", "/trace", "/projects/x",
                                  "/api-keys/key_0123456789abcdef/x",
                                  "/analyticsx", "/index.html"])
def test_unknown_route_json_404(api, path):
    r = api.get(path)
    assert_detail(r, 404, "Not Found")
    assert b"<html" not in r.content.lower()


def test_unknown_route_other_methods(api):
    for m in ("POST", "DELETE", "PUT"):
        r = api.request(m, "/definitely-not-a-route")
        assert_detail(r, 404, "Not Found")


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/traces", {"GET", "POST"}),
    ("PUT", "/traces", {"GET", "POST"}),
    ("POST", "/", {"GET"}),
    ("DELETE", "/", {"GET"}),
    ("POST", "/analytics", {"GET"}),
    ("PATCH", "/failures", {"GET"}),
    ("DELETE", "/projects", {"GET", "POST"}),
    ("PUT", "/api-keys", {"GET", "POST"}),
    ("GET", "/api-keys/key_0123456789abcdef", {"DELETE"}),
    ("POST", "/traces/some-id", {"GET"}),
    ("DELETE", "/traces/some-id", {"GET"}),
])
def test_wrong_method_405(api, method, path, allowed):
    r = api.request(method, path)
    assert_detail(r, 405, "Method Not Allowed")
    allow = r.headers.get("Allow")
    assert allow is not None, "405 without Allow"
    got = {m.strip() for m in allow.split(",") if m.strip()}
    # HEAD may accompany GET, OPTIONS may be listed; the route's methods must be.
    assert allowed <= got, f"Allow: {allow}"
    assert got - allowed <= {"HEAD", "OPTIONS"}, f"Allow: {allow}"


def test_trailing_slash_tolerated_or_json(api):
    # Whatever the module does with /traces/, it answers JSON.
    r = api.get("/traces/")
    assert r.status_code in (200, 404)


def test_404_trace_shape(api):
    assert_detail(api.get("/traces/does-not-exist-" + "x" * 10), 404,
                  "Trace not found")


@pytest.fixture(scope="module")
def mounted():
    srv = start_server("mount", mount="/tracellm",
                       location_conf="TraceLLMSlowThreshold 200")
    yield srv
    finish_server(srv)


def test_mount_at_subpath(mounted):
    api = Api(mounted.base)
    assert mounted.base.endswith("/tracellm")
    r = api.get("/")
    assert r.status_code == 200
    assert r.json()["message"] == "TraceLLM backend running"
    pid, key = api.project()
    t = api.ingest_ok(key, {"prompt": "mounted", "latency": 200})
    assert t["project_id"] == pid
    # TraceLLMSlowThreshold inside the <Location> applies
    assert t["slow_request"] is True
    t2 = api.ingest_ok(key, {"prompt": "mounted", "latency": 199.9})
    assert t2["slow_request"] is False
    assert api.trace(t["trace_id"])["prompt"] == "mounted"
    body = api.traces(project_id=pid)
    assert body["total"] == 2
    r = api.get("/analytics", params={"project_id": pid})
    assert r.status_code == 200 and r.json()["summary"]["total_traces"] == 2
    r = api.get("/failures", params={"project_id": pid})
    assert r.status_code == 200 and r.json()["totals"]["slow_requests"] == 1
    r = api.get("/api-keys", params={"project_id": pid})
    assert r.status_code == 200 and len(r.json()) == 1
    assert_detail(api.get("/nope"), 404, "Not Found")
    assert_detail(api.post("/analytics"), 405, "Method Not Allowed")


def test_mount_outside_location_not_served(mounted):
    # /traces is outside <Location /tracellm>: not the API
    r = requests.get(mounted.origin + "/traces", timeout=30)
    assert r.status_code == 404
    assert '"items"' not in r.text


def test_mount_with_only_sethandler():
    """A <Location /llm> holding nothing but SetHandler tracellm (and a
    nested section that sets no core directive) is mounted at /llm."""
    srv = start_server("mount-bare", mount="/llm")
    try:
        api = Api(srv.base)
        assert api.get("/").json()["message"] == "TraceLLM backend running"
        assert api.get("/projects").status_code == 200
        assert_detail(api.get("/traces/x"), 404, "Trace not found")
        r = requests.get(srv.origin + "/llmx/projects", timeout=30)
        assert r.status_code == 404 and "[" not in r.text[:1]
    finally:
        finish_server(srv)
