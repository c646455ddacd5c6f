"""GET/POST /projects, GET/POST /api-keys, DELETE /api-keys/{key_id}."""
import json
import os
import time

import pytest
import requests

from support import (KEY_ID_RE, KEY_RE, Api, assert_422, assert_detail,
                     assert_json_ct, assert_recent, assert_ts, conn, uid)

PROJECT_FIELDS = {"project_id", "name", "description", "created_at"}
NEW_KEY_FIELDS = {"key", "key_id", "project_id", "environment", "created_at"}
LISTED_KEY_FIELDS = {"key_id", "key", "project_id", "environment", "created_at",
                     "last_used_at", "revoked"}


def mask(key):
    secret = key[len("tlm_sk_"):]
    return "tlm_sk_" + secret[:2] + "\u2026" + secret[-4:]


def check_created(body, name, env, description=""):
    assert set(body) == {"project", "api_key"}, body
    p, k = body["project"], body["api_key"]
    assert set(p) == PROJECT_FIELDS, p
    assert p["name"] == name and p["description"] == description
    assert_recent(p["created_at"])
    assert set(k) == NEW_KEY_FIELDS, k
    assert KEY_RE.match(k["key"]), k["key"]
    assert KEY_ID_RE.match(k["key_id"]), k["key_id"]
    assert k["project_id"] == p["project_id"] and k["environment"] == env
    assert_recent(k["created_at"])
    return p, k


# ---- POST /projects ---------------------------------------------------------

def test_create_with_query(api):
    name = f"Support Bot {uid()}"
    r = api.post("/projects", params={"name": name, "environment": "production",
                                      "description": "desc é"})
    assert r.status_code == 201, r.text
    p, k = check_created(r.json(), name, "production", "desc é")
    assert p["project_id"] == name.lower().replace(" ", "-")


def test_create_with_json_body(api):
    name = f"Json Proj {uid()}"
    r = api.post("/projects", json={"name": name, "environment": "dev"})
    assert r.status_code == 201, r.text
    p, k = check_created(r.json(), name, "dev")
    assert p["project_id"] == name.lower().replace(" ", "-")


def test_json_body_wins_over_query(api):
    name = f"Body Wins {uid()}"
    r = api.post("/projects", params={"name": "Query " + uid(), "environment": "q"},
                 json={"name": name, "environment": "b"})
    assert r.status_code == 201, r.text
    check_created(r.json(), name, "b")


def test_full_key_works_for_ingest(api):
    body = api.create_project(environment="keyenv")
    key = body["api_key"]["key"]
    t = api.ingest_ok(key, {"prompt": "x"})
    assert t["project_id"] == body["project"]["project_id"]
    assert t["environment"] == "keyenv"


@pytest.mark.parametrize("fmt,expected", [
    ("Support Bot {u}", "support-bot-{u}"),
    ("  Hello--World!! {u} ", "hello-world-{u}"),
    ("Café Bot {u}", "caf-bot-{u}"),
    ("ÀB {u}", "b-{u}"),
    ("UPPER_lower.{u}", "upper-lower-{u}"),
    ("{u}!!!", "{u}"),
    ("a/b\\c {u}", "a-b-c-{u}"),
    ("x 2 ? 3 {u}", "x-2-3-{u}"),
])
def test_slug(api, fmt, expected):
    u = uid(8)
    name = fmt.format(u=u)
    body = api.create_project(name=name)
    assert body["project"]["project_id"] == expected.format(u=u)
    assert body["project"]["name"] == name


def test_slug_cafe_bot_exact(api):
    # exactly the contract's example (only once per database)
    r = api.post("/projects", params={"name": "Café Bot", "environment": "x"})
    if r.status_code == 409:
        pytest.skip("already created")
    assert r.status_code == 201
    assert r.json()["project"]["project_id"] == "caf-bot"


def random_cjk(n=6):
    return "".join(chr(0x4E00 + b) for b in os.urandom(n))


@pytest.mark.parametrize("name_fn", [lambda: random_cjk(),
                                     lambda: "¡" + random_cjk(3) + " — ☃",
                                     lambda: "--- " + random_cjk(2) + " !!!"])
def test_slug_without_ascii_alnum(api, name_fn):
    name = name_fn()
    body = api.create_project(name=name)
    pid = body["project"]["project_id"]
    assert len(pid) == len("project-") + 6 and pid.startswith("project-"), pid
    assert all(c in "0123456789abcdef" for c in pid[8:]), pid
    assert body["project"]["name"] == name


def test_conflict_same_name_and_same_slug(api):
    name = f"Dup Name {uid()}"
    api.create_project(name=name)
    r = api.post("/projects", params={"name": name, "environment": "other"})
    assert_detail(r, 409, "Project already exists")
    slug_twin = name.lower().replace(" ", "-")
    r = api.post("/projects", params={"name": slug_twin, "environment": "x"})
    assert_detail(r, 409, "Project already exists")
    r = api.post("/projects", json={"name": name.upper() + "!", "environment": "x"})
    assert_detail(r, 409, "Project already exists")


@pytest.mark.parametrize("params,missing", [
    ({"environment": "x"}, "name"),
    ({"name": "n"}, "environment"),
    ({}, None),
])
def test_create_missing_query(api, params, missing):
    r = api.post("/projects", params=params)
    if missing:
        items = assert_422(r, ("missing", ["query", missing]))
        assert len(items) == 1
    else:
        items = assert_422(r, ("missing", ["query", "name"]),
                           ("missing", ["query", "environment"]))
        assert len(items) == 2


@pytest.mark.parametrize("body,missing", [
    ({"environment": "x"}, "name"),
    ({"name": "n" + "x" * 3}, "environment"),
])
def test_create_missing_body(api, body, missing):
    r = api.post("/projects", json=body)
    assert_422(r, ("missing", ["body", missing]))


def test_create_wrong_types_body(api):
    r = api.post("/projects", json={"name": 5, "environment": "x"})
    assert_422(r, ("string_type", ["body", "name"]))
    r = api.post("/projects", json={"name": "n" + uid(), "environment": "x",
                                    "description": ["a"]})
    assert_422(r, ("string_type", ["body", "description"]))


def test_create_malformed_body(api):
    r = api.post("/projects", data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("Malformed JSON: ")


def test_create_body_not_object(api):
    r = api.post("/projects", json=["a"])
    assert_422(r, ("value_error", ["body"]))


def test_create_non_json_body_415(api):
    r = api.post("/projects?name=x&environment=y", data=b"name=x",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_detail(r, 415, "Content-Type must be application/json")


def test_name_length(api):
    u = uid(8)
    ok = u + "n" * (100 - len(u))
    assert api.post("/projects", params={"name": ok, "environment": "x"}).status_code == 201
    bad = u + "m" * (101 - len(u))
    assert_422(api.post("/projects", params={"name": bad, "environment": "x"}),
               ("string_too_long", ["query", "name"]))
    # 100 characters, 200 bytes: fine
    accented = "é" * 50 + random_cjk(50)
    r = api.post("/projects", json={"name": accented, "environment": "x"})
    assert r.status_code == 201, r.text
    assert r.json()["project"]["name"] == accented
    assert_422(api.post("/projects", json={"name": accented + "é", "environment": "x"}),
               ("string_too_long", ["body", "name"]))


def test_description_length(api):
    r = api.post("/projects", json={"name": "d " + uid(), "environment": "x",
                                    "description": "d" * 1000})
    assert r.status_code == 201
    assert r.json()["project"]["description"] == "d" * 1000
    assert_422(api.post("/projects", json={"name": "d " + uid(), "environment": "x",
                                           "description": "d" * 1001}),
               ("string_too_long", ["body", "description"]))


@pytest.mark.parametrize("env", ["has space", "e" * 33, "a.b", "é", "x/y"])
def test_bad_environment(api, env):
    assert_422(api.post("/projects", params={"name": "e " + uid(), "environment": env}),
               (None, ["query", "environment"]))


@pytest.mark.parametrize("env", ["e" * 32, "Prod_1-a", "7"])
def test_good_environment(api, env):
    body = api.create_project(environment=env)
    assert body["api_key"]["environment"] == env


def test_list_projects(api):
    a = api.create_project(description="first")["project"]
    b = api.create_project()["project"]
    r = api.get("/projects")
    assert r.status_code == 200
    lst = r.json()
    assert isinstance(lst, list)
    for p in lst:
        assert set(p) == PROJECT_FIELDS, p
        assert_ts(p["created_at"])
    ids = [p["project_id"] for p in lst]
    assert a in lst and b in lst
    assert ids.index(a["project_id"]) < ids.index(b["project_id"])
    created = [p["created_at"] for p in lst]
    assert created == sorted(created), "oldest first"
    assert "tlm_sk_" not in r.text


# ---- API keys ----------------------------------------------------------------

def list_keys(api, **params):
    r = api.get("/api-keys", params=params)
    assert r.status_code == 200, r.text
    lst = r.json()
    assert isinstance(lst, list)
    for k in lst:
        assert set(k) == LISTED_KEY_FIELDS, k
        assert_ts(k["created_at"])
        assert k["last_used_at"] is None or assert_ts(k["last_used_at"]) is None
        assert isinstance(k["revoked"], bool)
        assert KEY_ID_RE.match(k["key_id"])
    return lst, r.text


def test_listing_masked(api):
    body = api.create_project(environment="mk")
    key = body["api_key"]["key"]
    pid = body["project"]["project_id"]
    lst, raw = list_keys(api, project_id=pid)
    assert len(lst) == 1
    k = lst[0]
    assert k["key"] == mask(key)
    assert k["key_id"] == body["api_key"]["key_id"]
    assert k["project_id"] == pid and k["environment"] == "mk"
    assert k["created_at"] == body["api_key"]["created_at"]
    assert k["last_used_at"] is None and k["revoked"] is False
    assert key not in raw and key[7:] not in raw
    # the mask is UTF-8, not escaped
    r = api.get("/api-keys", params={"project_id": pid})
    assert "\u2026".encode() in r.content and b"\\u" not in r.content
    all_keys, raw_all = list_keys(api)
    assert key not in raw_all and key[7:] not in raw_all
    assert mask(key) in [k["key"] for k in all_keys]


def test_create_key_and_newest_first(api):
    pid, key1 = api.project(environment="first")
    r = api.post("/api-keys", params={"project_id": pid, "environment": "second"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"api_key"}
    k2 = body["api_key"]
    assert set(k2) == NEW_KEY_FIELDS
    assert KEY_RE.match(k2["key"]) and KEY_ID_RE.match(k2["key_id"])
    assert k2["project_id"] == pid and k2["environment"] == "second"
    assert_recent(k2["created_at"])
    assert k2["key"] != key1
    r = api.post("/api-keys", json={"project_id": pid, "environment": "third"})
    assert r.status_code == 201, r.text
    k3 = r.json()["api_key"]
    lst, raw = list_keys(api, project_id=pid)
    assert [k["environment"] for k in lst] == ["third", "second", "first"]
    assert [k["key"] for k in lst[:2]] == [mask(k3["key"]), mask(k2["key"])]
    for full in (key1, k2["key"], k3["key"]):
        assert full not in raw
    # the new key ingests, with its own environment as default
    t = api.ingest_ok(k2["key"], {})
    assert t["project_id"] == pid and t["environment"] == "second"
    # the unfiltered list contains them all, newest first
    all_keys, raw_all = list_keys(api)
    ids = [k["key_id"] for k in all_keys]
    assert ids.index(k3["key_id"]) < ids.index(k2["key_id"])
    created = [k["created_at"] for k in all_keys]
    assert created == sorted(created, reverse=True)
    for k in all_keys:
        assert len(k["key"]) == len("tlm_sk_") + 2 + 1 + 4


def test_create_key_unknown_project(api):
    assert_detail(api.post("/api-keys", params={"project_id": "nope-" + uid(),
                                                "environment": "x"}),
                  404, "Project not found")
    assert_detail(api.post("/api-keys", json={"project_id": "nope-" + uid(),
                                              "environment": "x"}),
                  404, "Project not found")


def test_create_key_validation(api, project):
    pid, key = project
    assert_422(api.post("/api-keys", params={"project_id": pid}),
               ("missing", ["query", "environment"]))
    assert_422(api.post("/api-keys", params={"environment": "x"}),
               ("missing", ["query", "project_id"]))
    assert_422(api.post("/api-keys", json={"project_id": pid}),
               ("missing", ["body", "environment"]))
    assert_422(api.post("/api-keys", params={"project_id": pid, "environment": "bad env"}),
               (None, ["query", "environment"]))


def test_last_used_at(api):
    pid, key = api.project()
    lst, _ = list_keys(api, project_id=pid)
    assert lst[0]["last_used_at"] is None
    # reading does not use a key
    api.traces(project_id=pid)
    assert list_keys(api, project_id=pid)[0][0]["last_used_at"] is None
    api.ingest_ok(key, {})
    lu = list_keys(api, project_id=pid)[0][0]["last_used_at"]
    assert lu is not None
    assert_recent(lu)


def test_revoke(api):
    pid, key = api.project()
    r = api.post("/api-keys", params={"project_id": pid, "environment": "e2"})
    other = r.json()["api_key"]
    kid = [k for k in list_keys(api, project_id=pid)[0] if k["environment"] == "test"][0]["key_id"]
    r = api.delete("/api-keys/" + kid)
    assert r.status_code == 204
    assert r.content == b""
    lst, _ = list_keys(api, project_id=pid)
    by_id = {k["key_id"]: k for k in lst}
    assert by_id[kid]["revoked"] is True
    assert by_id[other["key_id"]]["revoked"] is False
    assert_detail(api.ingest(key, {}), 401, "API key revoked")
    assert_detail(api.ingest(key, {}, via="x-api-key"), 401, "API key revoked")
    # revoking again: 204
    assert api.delete("/api-keys/" + kid).status_code == 204
    # the other key of the project still works
    assert api.ingest_ok(other["key"], {})["project_id"] == pid


def test_revoke_unknown(api):
    assert_detail(api.delete("/api-keys/key_0000000000000000"), 404, "API key not found")
    assert_detail(api.delete("/api-keys/nonsense"), 404, "API key not found")


def _ingest_on(c, key):
    body = b"{}"
    c.request("POST", "/traces", body=body, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, r.read()


def test_revoked_refused_on_every_connection(server, api):
    """Keep-alive connections (likely spread over children) that used the
    key just before, and fresh connections: all refuse it right after the
    revocation."""
    pid, key = api.project()
    kid = list_keys(api, project_id=pid)[0][0]["key_id"]
    conns = [conn(server.port) for _ in range(12)]
    try:
        for c in conns:
            for _ in range(2):
                status, body = _ingest_on(c, key)
                assert status == 201, body
        s = requests.Session()
        for _ in range(3):
            r = s.post(server.base + "/traces", data=b"{}", timeout=30, headers={
                "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            assert r.status_code == 201
        # revoke through yet another connection
        assert requests.delete(server.base + "/api-keys/" + kid, timeout=30).status_code == 204
        for c in conns:
            status, body = _ingest_on(c, key)
            assert status == 401, body
            assert json.loads(body) == {"detail": "API key revoked"}
        r = s.post(server.base + "/traces", data=b"{}", timeout=30, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        assert r.status_code == 401 and r.json() == {"detail": "API key revoked"}
        for _ in range(20):
            c = conn(server.port)
            try:
                status, body = _ingest_on(c, key)
            finally:
                c.close()
            assert status == 401, body
            assert json.loads(body) == {"detail": "API key revoked"}
    finally:
        for c in conns:
            c.close()
    # nothing was stored after the revocation
    assert api.traces(project_id=pid)["total"] == 12 * 2 + 3


def _post_bodyless(port, path, content_length=None):
    c = conn(port)
    try:
        c.putrequest("POST", path)
        if content_length is not None:
            c.putheader("Content-Length", content_length)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


@pytest.mark.parametrize("cl", [None, "0"])
def test_create_project_and_key_without_body(server, api, cl):
    """POST /projects and POST /api-keys take their parameters from the
    query; no body at all (or an empty one) is fine."""
    name = "nobody-" + uid()
    status, ct, body = _post_bodyless(
        server.port, f"/projects?name={name}&environment=nb", cl)
    assert status == 201, body
    assert ct.replace(" ", "").lower() == "application/json;charset=utf-8"
    p = json.loads(body)["project"]
    assert p["project_id"] == name
    status, ct, body = _post_bodyless(
        server.port, f"/api-keys?project_id={name}&environment=nb2", cl)
    assert status == 201, body
    k = json.loads(body)["api_key"]
    assert k["project_id"] == name and k["environment"] == "nb2"
    assert KEY_RE.match(k["key"])


def test_query_plus_sign_and_percent(api):
    u = uid()
    r = api.post(f"/projects?name=Plus+Sign+{u}&environment=x&description=a%26b%3Dc")
    assert r.status_code == 201, r.text
    p = r.json()["project"]
    assert p["name"] == f"Plus Sign {u}" and p["description"] == "a&b=c"
    assert p["project_id"] == f"plus-sign-{u}"


def test_project_unicode_not_escaped(api):
    name = "Ünïcödé 世界 " + uid()
    api.create_project(name=name)
    r = api.get("/projects")
    assert name.encode() in r.content and b"\\u" not in r.content
