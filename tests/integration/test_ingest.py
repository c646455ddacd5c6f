"""POST /traces: auth, single and batch ingest, normalization, body errors."""
import datetime as dt
import json
import os
import sqlite3
from urllib.parse import quote

import pytest
import requests

from support import (UUID4_RE, assert_422, assert_detail, assert_recent,
                     assert_trace_shape, assert_ts, conn, env_name, iso,
                     out_ts, uid, utcnow)


# ---- auth ------------------------------------------------------------------

def test_bearer_and_x_api_key(api, project):
    pid, key = project
    t1 = api.ingest(key, {"prompt": "a"}, via="bearer")
    assert t1.status_code == 201, t1.text
    t2 = api.ingest(key, {"prompt": "b"}, via="x-api-key")
    assert t2.status_code == 201, t2.text
    assert t1.json()["project_id"] == pid == t2.json()["project_id"]


def test_missing_key_401(api):
    assert_detail(api.ingest(None, {"prompt": "x"}), 401, "Missing API key")


@pytest.mark.parametrize("via", ["bearer", "x-api-key"])
def test_unknown_key_401(api, via):
    bogus = "tlm_sk_" + "A" * 32
    assert_detail(api.ingest(bogus, {"prompt": "x"}, via=via), 401,
                  "Invalid API key")
    assert_detail(api.ingest("garbage", {"prompt": "x"}, via=via), 401,
                  "Invalid API key")


def test_payload_api_key_is_not_auth(api, project):
    pid, key = project
    # a valid key in the payload, none in the headers: 401
    assert_detail(api.ingest(None, {"prompt": "x", "api_key": key}), 401,
                  "Missing API key")
    # a bogus key in the payload with a good header: ignored
    t = api.ingest_ok(key, {"prompt": "x", "api_key": "tlm_sk_" + "B" * 32})
    assert t["api_key"] is None
    assert api.trace(t["trace_id"])["api_key"] is None
    for item in api.traces(project_id=pid)["items"]:
        assert item["api_key"] is None


def test_key_never_echoed(api, project):
    pid, key = project
    r = api.ingest(key, {"prompt": "p", "api_key": key})
    assert r.status_code == 201
    assert key not in r.text
    assert key not in api.get("/traces", params={"project_id": pid}).text
    assert key[7:] not in api.get("/traces", params={"project_id": pid}).text


# ---- single trace defaults ----------------------------------------------------

def test_single_defaults(api):
    env = env_name()
    pid, key = api.project(environment=env)
    r = api.ingest(key, {})
    assert r.status_code == 201, r.text
    t = r.json()
    assert_trace_shape(t)
    assert UUID4_RE.match(t["trace_id"]), t["trace_id"]
    assert t["prompt"] == ""
    assert t["response"] is None
    assert t["latency"] == 0
    assert t["token_count"] == 0
    assert t["model_name"] == "unknown"
    assert t["project_id"] == pid
    assert t["project_name"] is None
    assert t["api_key"] is None
    assert t["environment"] == env
    assert t["status"] == "success"
    assert t["steps"] == []
    assert t["retry_count"] == 0
    assert t["slow_request"] is False
    assert t["failure_reason"] is None
    assert_recent(t["created_at"])
    assert_recent(t["updated_at"])
    # GET shows the same stored trace
    assert api.trace(t["trace_id"]) == t


def test_nulls_count_as_not_given(api, project):
    pid, key = project
    t = api.ingest_ok(key, {
        "trace_id": None, "prompt": None, "response": None, "latency": None,
        "token_count": None, "model_name": None, "model": None,
        "project_id": None, "project_name": None, "environment": None,
        "status": None, "steps": None, "retry_count": None,
        "slow_request": None, "failure_reason": None, "created_at": None,
        "timestamp": None})
    assert UUID4_RE.match(t["trace_id"])
    assert t["prompt"] == "" and t["response"] is None
    assert t["latency"] == 0 and t["token_count"] == 0
    assert t["model_name"] == "unknown"
    assert t["project_id"] == pid and t["environment"] == "test"
    assert t["status"] == "success" and t["steps"] == []
    assert t["retry_count"] == 0 and t["slow_request"] is False
    assert t["failure_reason"] is None
    assert_recent(t["created_at"])


def test_full_explicit_trace(api, project):
    pid, key = project
    tid = "tr-" + uid(16)
    payload = {
        "trace_id": tid, "prompt": "What is 2+2?", "response": "4",
        "latency": 123.5, "token_count": 42, "model_name": "gpt-4o",
        "project_id": pid, "project_name": "My Project",
        "environment": "staging_2", "status": "warning",
        "retry_count": 3, "slow_request": True,
        "failure_reason": "flaky tool",
        "created_at": "2025-03-04T05:06:07.891011Z",
        "steps": [{"step_id": "s-a", "tool_name": "calc",
                   "input": {"q": "2+2"}, "output": {"a": 4},
                   "duration": 12.25, "success": True,
                   "timestamp": "2025-03-04T05:06:07Z"}],
    }
    t = api.ingest_ok(key, payload)
    assert t["trace_id"] == tid
    assert t["prompt"] == "What is 2+2?" and t["response"] == "4"
    assert t["latency"] == 123.5 and t["token_count"] == 42
    assert t["model_name"] == "gpt-4o"
    assert t["project_id"] == pid and t["project_name"] == "My Project"
    assert t["environment"] == "staging_2"
    assert t["status"] == "warning" and t["retry_count"] == 3
    assert t["slow_request"] is True and t["failure_reason"] == "flaky tool"
    assert t["created_at"] == "2025-03-04T05:06:07.891011+00:00"
    assert_recent(t["updated_at"])
    assert t["steps"] == [{"step_id": "s-a", "tool_name": "calc",
                           "input": {"q": "2+2"}, "output": {"a": 4},
                           "duration": 12.25, "success": True,
                           "timestamp": "2025-03-04T05:06:07.000000+00:00"}]
    assert api.trace(tid) == t


def test_id_as_trace_id(api, project):
    pid, key = project
    tid = "id-" + uid()
    assert api.ingest_ok(key, {"id": tid})["trace_id"] == tid
    tid2 = "tid-" + uid()
    assert api.ingest_ok(key, {"id": "other-" + uid(), "trace_id": tid2})["trace_id"] == tid2


def test_model_legacy_key(api, project):
    pid, key = project
    assert api.ingest_ok(key, {"model": "claude-x"})["model_name"] == "claude-x"
    assert api.ingest_ok(key, {"model": "a", "model_name": "b"})["model_name"] == "b"


def test_response_null_stays_null(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"prompt": "p", "response": None})
    assert t["response"] is None
    assert api.trace(t["trace_id"])["response"] is None
    items = api.traces(project_id=pid)["items"]
    assert [i["response"] for i in items if i["trace_id"] == t["trace_id"]] == [None]
    t2 = api.ingest_ok(key, {"response": ""})
    assert t2["response"] == ""


def test_environment_payload_and_key_default(api):
    pid, key = api.project(environment="prod-1")
    assert api.ingest_ok(key, {})["environment"] == "prod-1"
    assert api.ingest_ok(key, {"environment": "Dev_2-x"})["environment"] == "Dev_2-x"
    assert api.ingest_ok(key, {"environment": "e" * 32})["environment"] == "e" * 32


@pytest.mark.parametrize("env", ["has space", "e" * 33, "semi;colon", "é", ""])
def test_environment_invalid(api, project, env):
    pid, key = project
    if env == "":
        # empty counts like absent? not stated for environment: only require
        # that it is either rejected or defaulted, never stored empty
        r = api.ingest(key, {"environment": env})
        if r.status_code == 201:
            assert r.json()["environment"] == "test"
        else:
            assert_422(r, (None, ["body", "environment"]))
        return
    assert_422(api.ingest(key, {"environment": env}), (None, ["body", "environment"]))


def test_project_id_same_project_ok(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"project_id": pid, "project_name": "n"})
    assert t["project_id"] == pid and t["project_name"] == "n"


def test_project_id_other_project_403(api, project):
    pid, key = project
    other, _ = api.project()
    r = api.ingest(key, {"project_id": other, "prompt": "x"})
    assert_detail(r, 403, f"API key is not valid for project '{other}'")
    r = api.ingest(key, {"project_id": "no-such-project-" + uid()})
    assert r.status_code == 403
    assert api.traces(project_id=pid)["total"] == 0
    assert api.traces(project_id=other)["total"] == 0


# ---- steps -----------------------------------------------------------------

def test_step_defaults(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{}, {"tool_name": "x"}]})
    s1, s2 = t["steps"]
    assert s1["step_id"] == "step_1" and s2["step_id"] == "step_2"
    assert s1["tool_name"] == "agent" and s2["tool_name"] == "x"
    for s in (s1, s2):
        assert s["input"] == {} and s["output"] == {}
        assert s["duration"] == 0 and s["success"] is True
        assert_recent(s["timestamp"])


def test_step_legacy_keys(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{
        "step_type": "retriever", "input_data": {"q": 1},
        "output_data": {"docs": [1, 2]}, "created_at": "2025-01-01T00:00:00+01:00"}]})
    s = t["steps"][0]
    assert s["tool_name"] == "retriever"
    assert s["input"] == {"q": 1} and s["output"] == {"docs": [1, 2]}
    assert s["timestamp"] == "2024-12-31T23:00:00.000000+00:00"


def test_step_new_keys_win(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{
        "tool_name": "a", "step_type": "b", "input": {"x": 1},
        "input_data": {"y": 2}, "output": {}, "output_data": {"z": 3},
        "timestamp": "2025-01-01T00:00:00Z", "created_at": "2020-01-01T00:00:00Z"}]})
    s = t["steps"][0]
    assert s["tool_name"] == "a"
    assert s["input"] == {"x": 1}
    assert s["output"] == {}, "{} counts as given"
    assert s["timestamp"] == "2025-01-01T00:00:00.000000+00:00"


def test_step_null_input_falls_back(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{"input": None, "input_data": {"a": 1},
                                       "output": None, "output_data": "txt"}]})
    s = t["steps"][0]
    assert s["input"] == {"a": 1}
    assert s["output"] == {"value": "txt"}


@pytest.mark.parametrize("v", ["", 0, "text", [1, 2], 3.5, True, False, ["a"]])
def test_step_non_object_wrapped(api, project, v):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{"input": v, "output_data": v}]})
    s = t["steps"][0]
    assert s["input"] == {"value": v}
    assert s["output"] == {"value": v}
    assert type(s["input"]["value"]) is type(v)


def test_retry_count_inferred(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{"tool_name": "search"}, {"tool_name": "search"},
                                      {"tool_name": "llm"}, {"tool_name": "search"},
                                      {"step_type": "llm"}]})
    assert t["retry_count"] == 3
    assert t["status"] == "warning"
    assert t["failure_reason"] is None
    # default tool names count too
    t = api.ingest_ok(key, {"steps": [{}, {}]})
    assert t["retry_count"] == 1 and t["status"] == "warning"


def test_retry_count_explicit_wins(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"retry_count": 0,
                            "steps": [{"tool_name": "a"}, {"tool_name": "a"}]})
    assert t["retry_count"] == 0 and t["status"] == "success"
    t = api.ingest_ok(key, {"retry_count": 2})
    assert t["retry_count"] == 2 and t["status"] == "warning"


def test_status_failed_from_step(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [
        {"tool_name": "ok"},
        {"tool_name": "db", "success": False, "output": {"message": "m1", "x": 1}},
        {"tool_name": "other", "success": False, "output": {"error": "e2"}}]})
    assert t["status"] == "failed"
    assert t["failure_reason"] == "m1"


def test_failure_reason_sources(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"steps": [{"tool_name": "db", "success": False,
                                       "output": {"error": "boom", "message": "m"}}]})
    assert t["failure_reason"] == "boom"
    t = api.ingest_ok(key, {"steps": [{"step_type": "db", "success": False,
                                       "output_data": {"error": "legacy"}}]})
    assert t["failure_reason"] == "legacy"
    t = api.ingest_ok(key, {"steps": [{"tool_name": "fetcher", "success": False}]})
    assert t["failure_reason"] == "fetcher"
    t = api.ingest_ok(key, {"steps": [{"tool_name": "fetcher2", "success": False,
                                       "output": "oops"}]})
    assert t["failure_reason"] == "fetcher2"
    assert t["steps"][0]["output"] == {"value": "oops"}
    t = api.ingest_ok(key, {"steps": [{"success": False}]})
    assert t["failure_reason"] == "agent"
    # explicit wins
    t = api.ingest_ok(key, {"failure_reason": "mine", "steps": [
        {"tool_name": "db", "success": False, "output": {"error": "boom"}}]})
    assert t["failure_reason"] == "mine" and t["status"] == "failed"


def test_status_warning_from_failure_reason(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"failure_reason": "partial"})
    assert t["status"] == "warning" and t["failure_reason"] == "partial"


@pytest.mark.parametrize("given,expected", [
    ("success", "success"), ("FAILED", "failed"), ("Warning", "warning"),
    ("", None)])
def test_status_explicit(api, project, given, expected):
    pid, key = project
    t = api.ingest_ok(key, {"status": given, "steps": [
        {"tool_name": "x", "success": False}]})
    # explicit wins over inference; empty = not given (inferred: failed)
    assert t["status"] == (expected or "failed")


def test_status_explicit_success_with_failed_step(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"status": "success", "steps": [
        {"tool_name": "x", "success": False, "output": {"error": "e"}}]})
    assert t["status"] == "success"
    assert t["failure_reason"] == "e"


def test_slow_request_inferred_default_threshold(api, project):
    pid, key = project
    assert api.ingest_ok(key, {"latency": 1500})["slow_request"] is True
    assert api.ingest_ok(key, {"latency": 1499.99})["slow_request"] is False
    assert api.ingest_ok(key, {"latency": 99999})["slow_request"] is True
    assert api.ingest_ok(key, {"latency": 5000, "slow_request": False})["slow_request"] is False
    assert api.ingest_ok(key, {"latency": 1, "slow_request": True})["slow_request"] is True


def test_slow_request_configured_threshold(small_api):
    pid, key = small_api.project()
    assert small_api.ingest_ok(key, {"latency": 1000})["slow_request"] is True
    assert small_api.ingest_ok(key, {"latency": 999.5})["slow_request"] is False


# ---- timestamps --------------------------------------------------------------

@pytest.mark.parametrize("given,expected", [
    ("2025-01-02T03:04:05Z", "2025-01-02T03:04:05.000000+00:00"),
    ("2025-01-02T03:04:05.123456Z", "2025-01-02T03:04:05.123456+00:00"),
    ("2025-01-02T03:04:05", "2025-01-02T03:04:05.000000+00:00"),
    ("2025-01-02T03:04:05.5+02:00", "2025-01-02T01:04:05.500000+00:00"),
    ("2025-01-02T03:04:05-05:30", "2025-01-02T08:34:05.000000+00:00"),
    ("2025-01-02T00:30:00+01:00", "2025-01-01T23:30:00.000000+00:00"),
    ("2025-06-30T12:00:00.000001+00:00", "2025-06-30T12:00:00.000001+00:00"),
])
def test_created_at_normalized(api, project, given, expected):
    pid, key = project
    t = api.ingest_ok(key, {"created_at": given, "steps": [{"timestamp": given}]})
    assert t["created_at"] == expected
    assert t["steps"][0]["timestamp"] == expected
    assert api.trace(t["trace_id"])["created_at"] == expected


def test_timestamp_as_created_at(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"timestamp": "2024-02-29T23:59:59Z"})
    assert t["created_at"] == "2024-02-29T23:59:59.000000+00:00"
    t = api.ingest_ok(key, {"timestamp": "2024-02-29T23:59:59Z",
                            "created_at": "2024-01-01T00:00:00Z"})
    assert t["created_at"] == "2024-01-01T00:00:00.000000+00:00"
    assert_recent(t["updated_at"])


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00Z", "", "12:00",
                                 "2025-01-01T25:00:00Z"])
def test_created_at_unparseable(api, project, bad):
    pid, key = project
    r = api.ingest(key, {"created_at": bad})
    if bad == "" and r.status_code == 201:
        pytest.fail("an empty created_at string is not an ISO 8601 timestamp")
    assert_422(r, ("datetime_parsing", ["body", "created_at"]))


def test_timestamp_wrong_type(api, project):
    pid, key = project
    r = api.ingest(key, {"created_at": 1700000000})
    assert_422(r, (None, ["body", "created_at"]))
    r = api.ingest(key, {"steps": [{"timestamp": "nope"}]})
    assert_422(r, ("datetime_parsing", ["body", "steps", 0, "timestamp"]))


# ---- strict types and bounds ------------------------------------------------------

@pytest.mark.parametrize("field,value,typ", [
    ("prompt", 5, "string_type"),
    ("prompt", ["a"], "string_type"),
    ("response", 5, "string_type"),
    ("model_name", 1, "string_type"),
    ("model", True, "string_type"),
    ("trace_id", 12, "string_type"),
    ("failure_reason", {}, "string_type"),
    ("project_name", 3, "string_type"),
    ("latency", "12", None),
    ("latency", True, None),
    ("token_count", 1.5, None),
    ("token_count", "3", None),
    ("token_count", False, None),
    ("retry_count", 2.5, None),
    ("slow_request", "yes", "bool_type"),
    ("slow_request", 1, "bool_type"),
    ("status", "bogus", "enum"),
    ("status", 1, None),
    ("steps", "nope", None),
    ("steps", {"a": 1}, None),
    ("latency", -1, "greater_than_equal"),
    ("token_count", -1, "greater_than_equal"),
    ("retry_count", -1, "greater_than_equal"),
])
def test_field_type_errors(api, project, field, value, typ):
    pid, key = project
    r = api.ingest(key, {"prompt": "ok", field: value})
    assert_422(r, (typ, ["body", field]))
    assert api.traces(project_id=pid)["total"] == 0


@pytest.mark.parametrize("field,value,typ", [
    ("duration", -0.5, "greater_than_equal"),
    ("duration", "3", None),
    ("success", "false", "bool_type"),
    ("tool_name", 7, "string_type"),
    ("step_id", 7, "string_type"),
])
def test_step_type_errors(api, project, field, value, typ):
    pid, key = project
    r = api.ingest(key, {"steps": [{}, {field: value}]})
    assert_422(r, (typ, ["body", "steps", 1, field]))


def test_step_not_object(api, project):
    pid, key = project
    r = api.ingest(key, {"steps": [{}, 5]})
    assert_422(r, (None, ["body", "steps", 1]))


def test_whole_numbers_as_floats_ok(api, project):
    pid, key = project
    t = api.ingest_ok(key, {"latency": 12, "token_count": 7})
    assert t["latency"] == 12 and t["token_count"] == 7


def test_multiple_problems_reported(api, project):
    pid, key = project
    r = api.ingest(key, {"prompt": 1, "latency": -3})
    items = assert_422(r, ("string_type", ["body", "prompt"]),
                       ("greater_than_equal", ["body", "latency"]))
    assert len(items) >= 2


@pytest.mark.parametrize("body", ['"just a string"', "5", "true", "null"])
def test_body_not_object_or_array(api, project, body):
    pid, key = project
    r = api.ingest(key, body)
    assert_422(r, ("value_error", ["body"]))


# ---- unicode -------------------------------------------------------------------

def test_unicode_round_trip(api, project):
    pid, key = project
    text = "héllo 世界 🚀"
    t = api.ingest_ok(key, {"prompt": text, "response": text + "!",
                            "model_name": "modèle-🚀",
                            "steps": [{"tool_name": "outil-é", "input": {"k": text}}]})
    r = api.get("/traces/" + t["trace_id"])
    raw = r.content
    assert text.encode("utf-8") in raw
    assert b"\\u" not in raw, "responses must not be ASCII-escaped"
    got = r.json()
    assert got["prompt"] == text and got["response"] == text + "!"
    assert got["model_name"] == "modèle-🚀"
    assert got["steps"][0]["tool_name"] == "outil-é"
    assert got["steps"][0]["input"] == {"k": text}
    r = api.get("/traces", params={"project_id": pid})
    assert text.encode("utf-8") in r.content and b"\\u" not in r.content
    r = api.get("/traces", params={"project_id": pid, "model": "modèle-🚀"})
    assert r.json()["total"] == 1


def test_escapes_in_strings(api, project):
    pid, key = project
    s = 'quote " backslash \\ newline \n tab \t nul-free \u0001 end'
    t = api.ingest_ok(key, {"prompt": s})
    assert t["prompt"] == s
    assert api.trace(t["trace_id"])["prompt"] == s


# ---- batches --------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [False, True])
def test_batch_accepts_and_rejects(api, project, wrap):
    pid, key = project
    ids = ["b-" + uid() for _ in range(3)]
    traces = [{"trace_id": ids[0], "prompt": "zero"},
              {"trace_id": ids[1], "prompt": 123},
              {"trace_id": ids[2], "prompt": "two"}]
    payload = {"traces": traces} if wrap else traces
    r = api.ingest(key, payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 2
    assert body["trace_ids"] == [ids[0], ids[2]]
    assert len(body["rejected"]) == 1
    rej = body["rejected"][0]
    assert rej["index"] == 1 and rej["status"] == 422
    assert isinstance(rej["detail"], list)
    assert any(d["loc"] == ["body", 1, "prompt"] and d["type"] == "string_type"
               for d in rej["detail"]), rej
    for d in rej["detail"]:
        assert d["loc"][:2] == ["body", 1]
    assert api.trace(ids[0])["prompt"] == "zero"
    assert api.trace(ids[2])["prompt"] == "two"
    assert_detail(api.get("/traces/" + ids[1]), 404, "Trace not found")
    assert api.traces(project_id=pid)["total"] == 2


def test_batch_all_valid(api, project):
    pid, key = project
    r = api.ingest(key, [{"prompt": f"p{i}"} for i in range(5)])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 5 and body["rejected"] == []
    assert len(body["trace_ids"]) == 5 and len(set(body["trace_ids"])) == 5
    for tid in body["trace_ids"]:
        assert UUID4_RE.match(tid)
        assert api.trace(tid)["project_id"] == pid


def test_batch_empty(api, project):
    pid, key = project
    for payload in ([], {"traces": []}):
        r = api.ingest(key, payload)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 0, "trace_ids": [], "rejected": []}


def test_batch_item_not_object(api, project):
    pid, key = project
    r = api.ingest(key, [{"prompt": "a"}, "str", 5, None, [1]])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    rej = {x["index"]: x for x in body["rejected"]}
    assert set(rej) == {1, 2, 3, 4}
    for i, x in rej.items():
        assert x["status"] == 422
        assert any(d["type"] == "value_error" and d["loc"] == ["body", i]
                   for d in x["detail"]), x


def test_batch_403_other_project(api, project):
    pid, key = project
    other, _ = api.project()
    r = api.ingest(key, [{"prompt": "mine"}, {"project_id": other, "prompt": "theirs"}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [{"index": 1, "status": 403,
                                 "detail": f"API key is not valid for project '{other}'"}]
    assert api.traces(project_id=other)["total"] == 0
    assert api.traces(project_id=pid)["total"] == 1


def test_trace_id_of_other_project_409(api):
    pa, ka = api.project()
    pb, kb = api.project()
    tid = "shared-" + uid()
    api.ingest_ok(ka, {"trace_id": tid, "prompt": "A's"})
    assert_detail(api.ingest(kb, {"trace_id": tid, "prompt": "B's"}), 409,
                  f"Trace '{tid}' belongs to another project")
    r = api.ingest(kb, [{"prompt": "ok"}, {"trace_id": tid}])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [{"index": 1, "status": 409,
                                 "detail": f"Trace '{tid}' belongs to another project"}]
    t = api.trace(tid)
    assert t["prompt"] == "A's" and t["project_id"] == pa
    assert api.traces(project_id=pb)["total"] == 1


def test_resend_replaces(api):
    env = env_name()
    pid, key = api.project(environment=env)
    tid = "re-" + uid()
    t1 = api.ingest_ok(key, {"trace_id": tid, "prompt": "v1", "latency": 100,
                             "token_count": 10, "status": "failed"})
    t2 = api.ingest_ok(key, {"trace_id": tid, "prompt": "v2", "latency": 300,
                             "token_count": 5})
    assert t2["prompt"] == "v2"
    got = api.trace(tid)
    assert got["prompt"] == "v2" and got["latency"] == 300 and got["status"] == "success"
    assert parse(got["updated_at"]) >= parse(t1["updated_at"])
    lst = api.traces(project_id=pid)
    assert lst["total"] == 1 and [i["trace_id"] for i in lst["items"]] == [tid]
    an = api.get("/analytics", params={"project_id": pid}).json()
    s = an["summary"]
    assert s["total_traces"] == 1 and s["failed_traces"] == 0
    assert s["average_latency"] == 300 and s["total_token_usage"] == 5
    assert s["success_rate"] == 100
    assert an["status_breakdown"] == [{"key": "success", "count": 1}]
    fl = api.get("/failures", params={"project_id": pid}).json()
    assert fl["totals"]["failed_traces"] == 0
    assert api.traces(environment=env)["total"] == 1


def test_duplicate_in_batch_later_wins(api, project):
    pid, key = project
    tid = "dup-" + uid()
    r = api.ingest(key, [{"trace_id": tid, "prompt": "first"},
                         {"trace_id": tid, "prompt": "second"}])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2 and body["rejected"] == []
    assert api.trace(tid)["prompt"] == "second"
    assert api.traces(project_id=pid)["total"] == 1


def test_batch_limit_1000(api):
    pid, key = api.project()
    r = api.ingest(key, [{} for _ in range(1001)])
    assert_422(r, ("value_error", ["body"]))
    assert api.traces(project_id=pid)["total"] == 0
    r = api.ingest(key, {"traces": [{} for _ in range(1001)]})
    assert_422(r, ("value_error", ["body"]))
    assert api.traces(project_id=pid)["total"] == 0
    r = api.ingest(key, [{"token_count": 1} for _ in range(1000)])
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 1000
    assert api.traces(project_id=pid)["total"] == 1000


def test_single_trace_errors_are_the_response(api, project):
    pid, key = project
    r = api.ingest(key, {"prompt": 1})
    assert_422(r, ("string_type", ["body", "prompt"]))


def parse(v):
    return dt.datetime.fromisoformat(v)


# ---- body errors -------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"{", b"{\"a\":}", b"not json", b"[1,", b"{}}",
                                  b"\xff\xfe{}"])
def test_malformed_json_400(api, project, body):
    pid, key = project
    r = api.ingest(key, body)
    assert r.status_code == 400, r.text
    d = r.json()["detail"]
    assert isinstance(d, str) and d.startswith("Malformed JSON: ") and len(d) > 16


def _post_no_body(port, path, headers):
    c = conn(port)
    try:
        c.putrequest("POST", path)
        for k, v in headers.items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        c.close()


def test_no_body_411(server, project):
    pid, key = project
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, ct, body = _post_no_body(server.port, "/traces", hdrs)
    assert status == 411, body
    assert ct.replace(" ", "").lower() == "application/json;charset=utf-8"
    assert json.loads(body) == {"detail": "Length Required"}
    status, ct, body = _post_no_body(server.port, "/traces",
                                     dict(hdrs, **{"Content-Length": "0"}))
    assert status == 411, body
    assert json.loads(body) == {"detail": "Length Required"}


@pytest.mark.parametrize("ct", ["text/plain", "application/x-www-form-urlencoded",
                                "application/jsonx", None])
def test_non_json_content_type_415(api, project, ct):
    pid, key = project
    headers = {"Authorization": f"Bearer {key}"}
    if ct:
        headers["Content-Type"] = ct
    r = api.post("/traces", data=b'{"prompt":"x"}', headers=headers)
    assert_detail(r, 415, "Content-Type must be application/json")
    assert api.traces(project_id=pid)["total"] == 0


@pytest.mark.parametrize("ct", ["application/json; charset=utf-8",
                                "Application/JSON", "application/json;charset=UTF-8"])
def test_json_content_type_variants(api, project, ct):
    pid, key = project
    r = api.ingest(key, {"prompt": "x"}, headers={"Content-Type": ct})
    assert r.status_code == 201, r.text


def test_chunked_body_under_limit(api, project):
    pid, key = project
    payload = json.dumps({"prompt": "chunked " + "x" * 3000}).encode()

    def gen():
        for i in range(0, len(payload), 700):
            yield payload[i:i + 700]

    r = api.post("/traces", data=gen(), headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 201, r.text
    assert r.json()["prompt"] == "chunked " + "x" * 3000


def test_long_trace_is_stored_packed_and_read_back_whole(server, api,
                                                          project):
    """A long trace's body is stored LZ4-packed (schema 8, trace_body.h):
    a BLOB in the database file, under half its JSON here. A failed one
    stays text, as /failures reads those. The same for a batch (whose
    bodies are packed before the write lock, api_ingest.c). GET
    /traces/{id}, a listing and /failures give back exactly the bytes
    ingest answered with. Fails if bodies are stored as they are, or come
    back packed or cut short."""
    pid, key = project
    prompt = " ".join("summarize report %d for the customer" % (i % 9)
                      for i in range(200))
    ok = api.ingest(key, {"prompt": prompt, "latency": 10})
    failed = api.ingest(key, {"prompt": prompt, "status": "failed",
                              "failure_reason": "upstream_timeout"})
    assert ok.status_code == 201 == failed.status_code, failed.text
    for r in (ok, failed):
        assert api.get("/traces/" + r.json()["trace_id"]).content == r.content
    ok, failed = ok.json(), failed.json()
    batch = api.ingest(key, [{"prompt": prompt + " again", "latency": 11},
                             {"prompt": prompt + " again", "status": "failed",
                              "failure_reason": "upstream_timeout"}])
    assert batch.status_code == 200 and batch.json()["accepted"] == 2, \
        batch.text
    items = api.traces(project_id=pid)["items"]
    assert items[2:] == [failed, ok]
    batch_ok, = [t for t in items[:2] if t["status"] == "success"]
    batch_failed, = [t for t in items[:2] if t["status"] == "failed"]
    bodies = {}
    for t in (ok, failed, batch_ok, batch_failed):
        r = api.get("/traces/" + t["trace_id"])
        assert r.json() == t
        bodies[t["trace_id"]] = r.content
    assert api.get("/failures", params={"project_id": pid}).json()[
        "failed_traces"] in ([batch_failed, failed], [failed, batch_failed])
    db = os.path.join(server.data_dir, "tracellm.db")
    con = sqlite3.connect("file:%s?mode=ro" % quote(db), uri=True)
    try:
        stored = {t: con.execute("SELECT typeof(body), length(body) FROM "
                                 "traces WHERE trace_id = ?", (t,)).fetchone()
                  for t in bodies}
    finally:
        con.close()
    for t in (ok, batch_ok):
        kind, length = stored[t["trace_id"]]
        assert kind == "blob"
        assert length < len(bodies[t["trace_id"]]) / 2, (stored, bodies)
    for t in (failed, batch_failed):
        assert stored[t["trace_id"]] == ("text", len(bodies[t["trace_id"]]))


def test_numbers_round_trip(api, project):
    pid, key = project
    for lat in (0.1, 1 / 3, 123456789.123, 1e-7, 5e15, 2.5):
        t = api.ingest_ok(key, {"latency": lat})
        assert t["latency"] == lat
        assert api.trace(t["trace_id"])["latency"] == lat
    t = api.ingest_ok(key, {"token_count": 2 ** 40, "retry_count": 2 ** 31})
    assert t["token_count"] == 2 ** 40 and t["retry_count"] == 2 ** 31


def test_step_json_preserved(api, project):
    pid, key = project
    inp = {"a": [1, 2.5, {"b": None}], "c": True, "d": "é🚀", "e": {}, "f": []}
    out = {"nested": {"deep": {"deeper": [[], [0]]}}, "n": -1.5e-3}
    t = api.ingest_ok(key, {"steps": [{"input": inp, "output": out}]})
    assert t["steps"][0]["input"] == inp and t["steps"][0]["output"] == out
    got = api.trace(t["trace_id"])["steps"][0]
    assert got["input"] == inp and got["output"] == out


def test_raw_utf8_input(api, project):
    pid, key = project
    text = "héllo 世界 🚀"
    body = json.dumps({"prompt": text}, ensure_ascii=False).encode("utf-8")
    r = api.ingest(key, body)
    assert r.status_code == 201, r.text
    assert text.encode() in r.content and b"\\u" not in r.content
    assert api.trace(r.json()["trace_id"])["prompt"] == text


def test_resend_moves_breakdowns(api):
    pid, key = api.project()
    tid = "mv-" + uid()
    api.ingest_ok(key, {"trace_id": tid, "model_name": "old-model", "status": "failed",
                        "latency": 5000})
    an = api.get("/analytics", params={"project_id": pid}).json()
    assert [t["trace_id"] for t in an["recent_failures"]] == [tid]
    api.ingest_ok(key, {"trace_id": tid, "model_name": "new-model", "latency": 5})
    an = api.get("/analytics", params={"project_id": pid}).json()
    assert an["model_breakdown"] == [{"key": "new-model", "count": 1}]
    assert an["status_breakdown"] == [{"key": "success", "count": 1}]
    assert an["recent_failures"] == []
    assert an["summary"]["slow_requests"] == 0 and an["summary"]["p95_latency"] == 5
    assert api.traces(project_id=pid, model="old-model")["total"] == 0
    fl = api.get("/failures", params={"project_id": pid}).json()
    assert fl["failed_traces"] == [] and fl["slow_requests"] == []
