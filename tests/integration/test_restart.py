"""Data, keys and revocations survive a restart on the same data directory."""
import pytest

from conftest import finish_server
from httpd import TllmServer, new_data_dir
from support import Api, assert_detail


def test_restart_keeps_everything():
    import conftest
    conftest._require_module()
    d = new_data_dir("restart")
    srv = TllmServer(d)
    srv.start()
    try:
        api = Api(srv.base)
        body = api.create_project(name="Restart Me")
        pid, key = body["project"]["project_id"], body["api_key"]["key"]
        r = api.post("/api-keys", params={"project_id": pid, "environment": "x"})
        k2 = r.json()["api_key"]
        t = api.ingest_ok(key, {"prompt": "before", "latency": 12.5})
        assert api.delete("/api-keys/" + k2["key_id"]).status_code == 204
    finally:
        srv.stop()
    srv2 = TllmServer(d)          # same data, new port
    srv2.start()
    try:
        api = Api(srv2.base)
        assert api.trace(t["trace_id"]) == t
        assert_detail(api.ingest(k2["key"], {}), 401, "API key revoked")
        assert api.ingest_ok(key, {"prompt": "after"})["project_id"] == pid
        assert api.traces(project_id=pid)["total"] == 2
        r = api.post("/projects", params={"name": "Restart Me", "environment": "x"})
        assert_detail(r, 409, "Project already exists")
    finally:
        finish_server(srv2)
