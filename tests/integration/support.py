"""Helpers shared by the integration tests: an HTTP client that checks
every response against the OpenAPI document (status, Content-Type, body
schema), project/trace helpers, and the contract's formats."""
import datetime as dt
import http.client
import json
import re
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import requests
from jsonschema import Draft202012Validator

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


# ---- the OpenAPI document: every response is checked against it ----------

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# The document is registered under this URI so that its internal "#/..."
# references resolve; nothing is ever fetched from it.
OPENAPI_URI = "https://tracellm.invalid/openapi.json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch",
                "trace")


def _pointer_escape(token):
    return token.replace("~", "~0").replace("/", "~1")


def _make_validator(doc, pointer):
    """A Draft 2020-12 validator for the schema at `pointer` inside doc,
    resolving $refs against the whole document: with `referencing` where
    jsonschema has it (>= 4.18), else with RefResolver (Debian bookworm's
    4.10)."""
    schema = {"$ref": OPENAPI_URI + "#" + pointer}
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        from jsonschema import RefResolver
        return Draft202012Validator(
            schema, resolver=RefResolver(OPENAPI_URI, doc))
    resource = Resource(contents=doc, specification=DRAFT202012)
    registry = Registry().with_resource(OPENAPI_URI, resource)
    return Draft202012Validator(schema, registry=registry)


def _media_type(content_type):
    return (content_type or "").split(";")[0].strip().lower()


class OpenApiContract:
    """The OpenAPI document as the suite's oracle: which operation a
    request reached, which statuses it may answer, and each response's
    Content-Type and body schema."""

    def __init__(self, path=OPENAPI_FILE):
        with open(path, encoding="utf-8") as f:
            self.doc = json.load(f)
        self._validators = {}

    # -- locating the operation ------------------------------------------

    @staticmethod
    def _segments(path):
        """Segments of a path below the mount, as the module sees it: a
        single trailing slash is dropped ("/traces/" is "/traces")."""
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        return path.split("/")

    def path_template(self, path):
        """The document's path template that path matches, or None. A
        literal template wins over one with parameters."""
        want = self._segments(path)
        best = None
        for template in self.doc["paths"]:
            have = template.split("/")
            if len(have) != len(want):
                continue
            params = 0
            for h, w in zip(have, want):
                if h.startswith("{") and h.endswith("}"):
                    if not w:
                        break
                    params += 1
                elif h != w:
                    break
            else:
                if best is None or params < best[1]:
                    best = (template, params)
        return best[0] if best else None

    def methods(self, template):
        item = self.doc["paths"][template]
        return {m.upper() for m in item if m in HTTP_METHODS}

    def _resolve(self, obj, pointer):
        """Follow a local $ref (e.g. to components/responses); returns the
        object and its JSON pointer in the document."""
        while "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), f"non-local $ref {ref}"
            pointer = ref[1:]
            obj = self.doc
            for token in pointer[1:].split("/"):
                obj = obj[token.replace("~1", "/").replace("~0", "~")]
        return obj, pointer

    def expected_response(self, method, path, status):
        """(description of the case, response object, its pointer) for a
        request; AssertionError if the document does not allow status."""
        template = self.path_template(path)
        method = "GET" if method.upper() == "HEAD" else method.upper()
        if template is None:
            where = f"{method} {path} (no path of the document)"
            allowed = {404: "NotFound"}
        elif method not in self.methods(template):
            where = f"{method} {template} (not an operation)"
            allowed = {405: "MethodNotAllowed"}
        else:
            where = f"{method} {template}"
            pointer = (f"/paths/{_pointer_escape(template)}/"
                       f"{method.lower()}/responses")
            responses = self.doc["paths"][template][method.lower()][
                "responses"]
            assert str(status) in responses, (
                f"{where} answered {status}, a status the OpenAPI document "
                f"does not list for it (documented: {sorted(responses)})")
            response, pointer = self._resolve(
                responses[str(status)], f"{pointer}/{status}")
            return where, template, response, pointer
        assert status in allowed, (
            f"{where} answered {status}; the document says "
            f"{sorted(allowed)}")
        name = allowed[status]
        pointer = f"/components/responses/{name}"
        return where, template, self.doc["components"]["responses"][name], \
            pointer

    # -- checking a response ---------------------------------------------

    def validator(self, pointer):
        if pointer not in self._validators:
            self._validators[pointer] = _make_validator(self.doc, pointer)
        return self._validators[pointer]

    def check(self, method, path, status, headers, body):
        """Check one response (headers: a case-insensitive mapping, body:
        bytes) against the document. path is below the mount and may carry
        a query string."""
        path = urlsplit(path).path or "/"
        where, template, response, pointer = self.expected_response(
            method, path, status)
        if status == 405:
            self._check_allow(where, template, headers.get("Allow"))
        content = response.get("content")
        ct = headers.get("Content-Type")
        if not content:
            assert not body, f"{where} -> {status}: a body where none is " \
                             f"documented: {body[:200]!r}"
            return
        media = _media_type(ct)
        assert media in content, (
            f"{where} -> {status}: Content-Type {ct!r}, documented "
            f"{sorted(content)}; body {body[:300]!r}")
        if media != "application/json":
            return              # the /docs page: no schema to hold it to
        assert norm_ct(ct) == norm_ct(JSON_CT), (
            f"{where} -> {status}: Content-Type {ct!r}, not {JSON_CT!r}")
        if method.upper() == "HEAD":
            return
        try:
            value = json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise AssertionError(f"{where} -> {status}: not JSON ({e}): "
                                 f"{body[:300]!r}")
        schema_pointer = (f"{pointer}/content/"
                          f"{_pointer_escape(media)}/schema")
        errors = sorted(self.validator(schema_pointer).iter_errors(value),
                        key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}"
                     f": {e.message[:300]}" for e in errors[:8]]
            raise AssertionError(
                f"{where} -> {status}: the body does not match the OpenAPI "
                f"schema at #{schema_pointer}:\n" + "\n".join(lines)
                + f"\nbody: {body[:500]!r}")

    def _check_allow(self, where, template, allow):
        assert allow is not None, f"{where} -> 405 without Allow"
        got = {m.strip() for m in allow.split(",") if m.strip()}
        assert got - {"HEAD", "OPTIONS"} == self.methods(template), (
            f"{where} -> 405: Allow {allow!r}, the document has "
            f"{sorted(self.methods(template))}")


_contract = None


def contract():
    """The document, loaded once per session."""
    global _contract
    if _contract is None:
        _contract = OpenApiContract()
    return _contract


def check_response(r, path):
    """Check a requests response to a request for path (below the mount)
    against the OpenAPI document."""
    contract().check(r.request.method, path, r.status_code, r.headers,
                     r.content)


class Api:
    """requests against the mount point. Every response must be one the
    OpenAPI document lists for the operation (or the document's 404/405 for
    a path or method it does not have), with its Content-Type
    (application/json; charset=utf-8 for JSON) and a body its schema
    accepts."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.s = requests.Session()

    def request(self, method, path, **kw):
        kw.setdefault("timeout", 60)
        r = self.s.request(method, self.base + path, **kw)
        check_response(r, path)
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


def raw_http(port, data, timeout=10, read_after=True, mount=""):
    """Send raw bytes to the server; return (status, headers dict, body
    bytes) of the response. Tolerates the server closing early. The
    response is checked against the OpenAPI document (the request line
    names the operation; mount is the server's mount point)."""
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
        status, headers, body = read_response(sock)
    finally:
        sock.close()
    first = data[0] if isinstance(data, (list, tuple)) else data
    method, url = first.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
    contract().check(method, _below_mount(url, mount), status,
                     _Headers(headers), body)
    return status, headers, body


class _Headers(dict):
    """raw_http's lower-cased header dict, read as the checker reads
    headers (any case)."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)


def _below_mount(url, mount):
    mount = mount.rstrip("/")
    assert url.startswith(mount), f"{url} is not under the mount {mount}"
    return url[len(mount):] or "/"


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


class _CheckedResponse(http.client.HTTPResponse):
    """Checked against the OpenAPI document once its whole body is read."""
    checked_path = None

    def read(self, amt=None):
        data = super().read(amt)
        if amt is None and self.checked_path is not None:
            contract().check(self._method, self.checked_path, self.status,
                             self.msg, data)
        return data


class _CheckedConnection(http.client.HTTPConnection):
    response_class = _CheckedResponse
    mount = ""

    def putrequest(self, method, url, *args, **kw):
        self._checked_path = _below_mount(url, self.mount)
        return super().putrequest(method, url, *args, **kw)

    def getresponse(self):
        r = super().getresponse()
        r.checked_path = self._checked_path
        return r


def conn(port, timeout=30, mount=""):
    """An HTTP connection whose responses are checked against the OpenAPI
    document when read whole."""
    c = _CheckedConnection("127.0.0.1", port, timeout=timeout)
    c.mount = mount
    return c
