"""TraceLLMMaxBody (413), on a server with TraceLLMMaxBody 4096."""
import json
import time

import pytest

from support import assert_detail, raw_http

LIMIT = 4096
DETAIL = f"Request body too large (limit {LIMIT} bytes)"


def body_of_size(n):
    """A valid single-trace JSON body of exactly n bytes."""
    base = json.dumps({"prompt": ""}).encode()
    b = json.dumps({"prompt": "x" * (n - len(base))}).encode()
    assert len(b) == n
    return b


def req_head(key, path="/traces", extra=""):
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"{extra}").encode()


def test_at_limit_accepted(small_api):
    pid, key = small_api.project()
    r = small_api.ingest(key, body_of_size(LIMIT))
    assert r.status_code == 201, r.text[:300]


def test_over_limit_413(small_api):
    pid, key = small_api.project()
    r = small_api.ingest(key, body_of_size(LIMIT + 1))
    assert_detail(r, 413, DETAIL)
    r = small_api.ingest(key, body_of_size(50000))
    assert_detail(r, 413, DETAIL)
    assert small_api.traces(project_id=pid)["total"] == 0


def test_declared_length_refused_before_reading(small_server, small_api):
    """A huge Content-Length is refused from the headers: the server answers
    413 although only a few bytes of the body were ever sent."""
    pid, key = small_api.project()
    head = req_head(key, extra="Content-Length: 50000000\r\nConnection: close\r\n\r\n")
    t0 = time.time()
    status, headers, body = raw_http(small_server.port, [head, b'{"prompt":"'],
                                     timeout=15)
    assert status == 413, body
    assert headers["content-type"].replace(" ", "").lower() == "application/json;charset=utf-8"
    assert json.loads(body) == {"detail": DETAIL}
    assert time.time() - t0 < 15


def _chunked(parts):
    out = b""
    for p in parts:
        out += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    return out + b"0\r\n\r\n"


def test_chunked_over_limit_413(small_server, small_api):
    pid, key = small_api.project()
    payload = body_of_size(LIMIT + 500)
    parts = [payload[i:i + 1000] for i in range(0, len(payload), 1000)]
    head = req_head(key, extra="Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, headers, body = raw_http(small_server.port, [head, _chunked(parts)])
    assert status == 413, body
    assert json.loads(body) == {"detail": DETAIL}
    assert small_api.traces(project_id=pid)["total"] == 0


def test_chunked_at_limit_ok(small_server, small_api):
    pid, key = small_api.project()
    payload = body_of_size(LIMIT)
    parts = [payload[i:i + 1000] for i in range(0, len(payload), 1000)]
    head = req_head(key, extra="Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, headers, body = raw_http(small_server.port, [head, _chunked(parts)])
    assert status == 201, body
    assert small_api.traces(project_id=pid)["total"] == 1


def test_chunked_with_requests_generator_over_limit(small_api):
    pid, key = small_api.project()
    payload = body_of_size(LIMIT * 3)

    def gen():
        for i in range(0, len(payload), 512):
            yield payload[i:i + 512]
    try:
        r = small_api.post("/traces", data=gen(), headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    except Exception as e:  # the server may close while we still send
        pytest.skip(f"client could not read the early answer: {e!r}")
    assert_detail(r, 413, DETAIL)


def test_projects_body_over_limit(small_api):
    body = json.dumps({"name": "big", "environment": "x",
                       "description": "d" * (LIMIT + 10)}).encode()
    r = small_api.post("/projects", data=body,
                       headers={"Content-Type": "application/json"})
    assert_detail(r, 413, DETAIL)
