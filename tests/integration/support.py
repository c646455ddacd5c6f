"""Helpers shared by the integration tests: an HTTP client that checks
every response's Content-Type, project/trace helpers, and the contract's
formats."""
import datetime as dt
import http.client
import json
import re
import socket
import uuid

import requests

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
KEY_RE = re.compile(r"^tlm_sk_[A-Za-z0-9]{32}$")
KEY_ID_RE = re.compile(r"^key_[0-9a-f]{16}$")
UUID4_RE = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
JSON_CT = "application/json; charset=utf-8"

ERROR_TYPES = {"missing", "int_parsing", "float_parsing", "string_type",
               "bool_type", "greater_than_equal", "less_than_equal", "enum",
               "string_too_long", "datetime_parsing", "value_error"}

TRACE_FIELDS = {"trace_id", "prompt", "response", "latency", "token_count",
                "model_name", "project_id", "project_name", "api_key",
                "environment", "status", "steps", "retry_count",
                "slow_request", "failure_reason", "created_at", "updated_at"}
STEP_FIELDS = {"step_id", "tool_name", "input", "output", "duration",
               "success", "timestamp"}


def uid(n=10):
    return uuid.uuid4().hex[:n]


def env_name():
    return "env-" + uid(12)


def norm_ct(value):
    return (value or "").replace(" ", "").lower()


def assert_json_ct(r):
    ct = r.headers.get("Content-Type")
    assert norm_ct(ct) == norm_ct(JSON_CT), (
        f"{r.request.method} {r.url} -> {r.status_code}: Content-Type {ct!r}, "
        f"body {r.text[:300]!r}")


def assert_ts(v, what="timestamp"):
    assert isinstance(v, str) and TS_RE.match(v), f"{what}: {v!r}"


def parse_ts(v):
    assert_ts(v)
    return dt.datetime.fromisoformat(v)


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def iso(t):
    """A client-side timestamp with Z."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def out_ts(t):
    """How the server must print the instant t."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def assert_recent(v, slack=120):
    t = parse_ts(v)
    now = utcnow()
    assert abs((now - t).total_seconds()) < slack, f"{v} is not about now ({now})"


def assert_trace_shape(t):
    assert isinstance(t, dict), t
    missing = TRACE_FIELDS - set(t)
    assert not missing, f"trace lacks {missing}: {t}"
    assert isinstance(t["trace_id"], str)
    assert isinstance(t["prompt"], str)
    assert t["response"] is None or isinstance(t["response"], str)
    assert isinstance(t["latency"], (int, float)) and not isinstance(t["latency"], bool)
    assert t["latency"] >= 0
    assert isinstance(t["token_count"], int) and not isinstance(t["token_count"], bool)
    assert t["token_count"] >= 0
    assert isinstance(t["model_name"], str)
    assert isinstance(t["project_id"], str)
    assert t["project_name"] is None or isinstance(t["project_name"], str)
    assert t["api_key"] is None, "api_key must always be null in output"
    assert isinstance(t["environment"], str)
    assert t["status"] in ("success", "warning", "failed")
    assert isinstance(t["steps"], list)
    assert isinstance(t["retry_count"], int) and t["retry_count"] >= 0
    assert isinstance(t["slow_request"], bool)
    assert t["failure_reason"] is None or isinstance(t["failure_reason"], str)
    assert_ts(t["created_at"], "created_at")
    assert_ts(t["updated_at"], "updated_at")
    for s in t["steps"]:
        assert not (STEP_FIELDS - set(s)), f"step lacks fields: {s}"
        assert isinstance(s["step_id"], str)
        assert isinstance(s["tool_name"], str)
        assert isinstance(s["input"], dict)
        assert isinstance(s["output"], dict)
        assert isinstance(s["duration"], (int, float)) and s["duration"] >= 0
        assert isinstance(s["success"], bool)
        assert_ts(s["timestamp"], "step timestamp")


def assert_detail(r, status, detail):
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    assert r.json() == {"detail": detail}, r.text[:500]


def assert_422(r, *expected):
    """expected: (type or None, loc list[, extra dict]) per problem; each
    must appear in the detail list. Returns the items."""
    assert r.status_code == 422, f"expected 422, got {r.status_code}: {r.text[:500]}"
    body = r.json()
    assert set(body) == {"detail"}, body
    items = body["detail"]
    assert isinstance(items, list) and items, body
    for it in items:
        assert isinstance(it, dict), it
        assert {"type", "loc", "msg"} <= set(it), f"422 item lacks keys: {it}"
        assert it["type"] in ERROR_TYPES, f"unknown error type: {it}"
        assert isinstance(it["loc"], list) and it["loc"], it
        assert it["loc"][0] in ("query", "body"), it
        assert isinstance(it["msg"], str) and it["msg"], it
    for exp in expected:
        typ, loc = exp[0], exp[1]
        extra = exp[2] if len(exp) > 2 else {}
        match = [it for it in items if it["loc"] == loc
                 and (typ is None or it["type"] == typ)]
        assert match, f"no 422 item {typ} at {loc} in {items}"
        for k, v in extra.items():
            assert match[0].get(k) == v, f"422 item {match[0]}: {k} != {v!r}"
    return items


class Api:
    """requests against the mount point; every response except 204 must be
    application/json; charset=utf-8."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.s = requests.Session()

    def request(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        r = self.s.request(method, self.base + path, **kw)
        if r.status_code != 204:
            assert_json_ct(r)
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    # -- domain helpers ------------------------------------------------

    def create_project(self, name=None, environment="test", description=None):
        """POST /projects (query parameters); returns the 201 body."""
        name = name or f"Proj {uid()}"
        params = {"name": name, "environment": environment}
        if description is not None:
            params["description"] = description
        r = self.post("/projects", params=params)
        assert r.status_code == 201, r.text
        return r.json()

    def project(self, environment="test"):
        """A fresh project: (project_id, key)."""
        body = self.create_project(environment=environment)
        return body["project"]["project_id"], body["api_key"]["key"]

    def ingest(self, key, payload, via="bearer", **kw):
        headers = {"Content-Type": "application/json"}
        if key is not None:
            if via == "bearer":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers["X-API-Key"] = key
        headers.update(kw.pop("headers", {}))
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        if isinstance(data, str):
            data = data.encode()
        return self.post("/traces", data=data, headers=headers, **kw)

    def ingest_ok(self, key, payload):
        r = self.ingest(key, payload)
        assert r.status_code == 201, r.text
        t = r.json()
        assert_trace_shape(t)
        return t

    def batch_ok(self, key, traces):
        r = self.ingest(key, traces)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rejected"] == [], body
        assert body["accepted"] == len(traces), body
        return body

    def traces(self, **params):
        r = self.get("/traces", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"total", "items"}, body
        for t in body["items"]:
            assert_trace_shape(t)
        return body

    def trace(self, trace_id):
        r = self.get("/traces/" + quote(trace_id))
        assert r.status_code == 200, r.text
        t = r.json()
        assert_trace_shape(t)
        return t


def quote(s):
    from urllib.parse import quote as q
    return q(s, safe="")


def raw_http(port, data, timeout=10, read_after=True):
    """Send raw bytes to the server; return (status, headers dict, body
    bytes) of the response. Tolerates the server closing early."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            if isinstance(data, (list, tuple)):
                for part in data:
                    sock.sendall(part)
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_response(sock)
    finally:
        sock.close()


def read_response(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines and lines[0].startswith("HTTP/"), f"no HTTP response: {buf[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        body = rest[:n]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        data = rest
        while True:
            while b"\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            while len(data) < size + 2:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
            body += data[:size]
            data = data[size + 2:]
    else:
        body = rest
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
        except socket.timeout:
            pass
    return status, headers, body


def conn(port, timeout=30):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
