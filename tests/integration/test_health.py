"""GET / — health."""
import requests

from support import JSON_CT, assert_json_ct


def test_health_body(api):
    r = api.get("/")
    assert r.status_code == 200
    assert r.json() == {"message": "TraceLLM backend running",
                        "storage_type": "sqlite", "database": "ok"}


def test_health_content_type_exact(server):
    r = requests.get(server.base + "/", timeout=30)
    assert r.headers["Content-Type"] == JSON_CT


def test_health_ignores_query(api):
    r = api.get("/", params={"foo": "bar"})
    assert r.status_code == 200
    assert r.json()["database"] == "ok"
