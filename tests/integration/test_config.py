"""Directive validation at `httpd -t`."""
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import finish_server, start_server
from httpd import httpd_t, module_path
from support import Api, uid

pytestmark = pytest.mark.skipif(not os.path.isfile(module_path()),
                                reason="module not built")


def test_default_config_ok():
    rc, out = httpd_t("")
    assert rc == 0, out


@pytest.mark.parametrize("directive", [
    "TraceLLMSlowThreshold 1500", "TraceLLMSlowThreshold 250.5",
    "TraceLLMMaxBody 4096", "TraceLLMMaxBody 1048576", "TraceLLMMaxBody 1",
])
@pytest.mark.parametrize("where", ["server", "location"])
def test_good_values(directive, where):
    rc, out = (httpd_t(directive) if where == "server"
               else httpd_t(location_conf=directive))
    assert rc == 0, out


@pytest.mark.parametrize("directive", [
    "TraceLLMSlowThreshold abc", "TraceLLMSlowThreshold -5",
    "TraceLLMMaxBody 0", "TraceLLMMaxBody xyz", "TraceLLMMaxBody -1",
])
@pytest.mark.parametrize("where", ["server", "location"])
def test_bad_values(directive, where):
    rc, out = (httpd_t(directive) if where == "server"
               else httpd_t(location_conf=directive))
    assert rc != 0, out
    name = directive.split()[0]
    # the message names the directive (not only as part of the echoed line)
    msg_lines = [l for l in out.splitlines() if "Syntax error" not in l]
    assert any(name in l for l in msg_lines), out


@pytest.mark.parametrize("directive", ["TraceLLMSlowThreshold", "TraceLLMMaxBody",
                                       "TraceLLMMaxBody 1 2"])
def test_wrong_arity(directive):
    rc, out = httpd_t(directive)
    assert rc != 0, out
    assert directive.split()[0] in out, out


@pytest.mark.parametrize("directive", [
    "TraceLLMEventd maybe", "TraceLLMEventdListen 10.0.0.1:8001",
    "TraceLLMEventdListen 127.0.0.1", "TraceLLMEventdListen 127.0.0.1:0",
    "TraceLLMEventdQueue 0", "TraceLLMEventdQueue lots",
])
def test_bad_event_process_values(directive):
    rc, out = httpd_t(directive)
    assert rc != 0, out
    name = directive.split()[0]
    msg_lines = [l for l in out.splitlines() if "Syntax error" not in l]
    assert any(name in l for l in msg_lines), out


@pytest.mark.parametrize("directive", [
    "TraceLLMEventd Off", "TraceLLMEventdListen 127.0.0.1:9001",
    "TraceLLMEventdListen [::1]:9001", "TraceLLMEventdQueue 16",
])
def test_good_event_process_values(directive):
    rc, out = httpd_t(directive)
    assert rc == 0, out


def test_event_directives_only_at_server_level():
    rc, out = httpd_t(location_conf="TraceLLMEventdQueue 16")
    assert rc != 0 and "TraceLLMEventdQueue" in out, out


def test_write_mutex_mechanism_can_be_chosen():
    """The write lock is httpd's "tracellm-write" mutex: Mutex sets its
    mechanism like any other (an unknown mutex name is refused, so the
    first check is not vacuous), and ingest works with it."""
    rc, out = httpd_t("Mutex sem tracellm-nosuch")
    assert rc != 0, out
    rc, out = httpd_t("Mutex sem tracellm-write")
    assert rc == 0, out
    srv = start_server("mutex", extra_conf="Mutex sem tracellm-write")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        r = api.post("/traces", headers={"X-API-Key": key},
                     json=[{"token_count": 3} for _ in range(5)])
        assert r.status_code == 200, r.text
        assert api.traces(project_id=pid)["total"] == 5
    finally:
        finish_server(srv)


@pytest.mark.parametrize("directive,value,ok", [
    ("TraceLLMCacheMemory", "0", True), ("TraceLLMCacheMemory", "16", True),
    ("TraceLLMCacheMemory", "1048576", True),
    ("TraceLLMCacheMemory", "-1", False),
    ("TraceLLMCacheMemory", "lots", False),
    ("TraceLLMCacheMemory", "1048577", False),
    ("TraceLLMCacheMemory", "", False),
    ("TraceLLMAggregateConcurrency", "0", True),
    ("TraceLLMAggregateConcurrency", "1", True),
    ("TraceLLMAggregateConcurrency", "100000", True),
    ("TraceLLMAggregateConcurrency", "-1", False),
    ("TraceLLMAggregateConcurrency", "many", False),
    ("TraceLLMAggregateConcurrency", "100001", False),
    ("TraceLLMAggregateConcurrency", "2.5", False),
])
def test_per_child_number_values(directive, value, ok):
    rc, out = httpd_t(f"{directive} {value}".strip())
    assert (rc == 0) == ok, out
    if not ok:
        assert directive in out, out


@pytest.mark.parametrize("directive", ["TraceLLMCacheMemory 16",
                                       "TraceLLMAggregateConcurrency 2"])
def test_per_child_numbers_only_in_the_main_server(directive):
    """A child applies one value, so neither may vary by location or
    virtual host."""
    name = directive.split()[0]
    rc, out = httpd_t(location_conf=directive)
    assert rc != 0 and name in out, out
    rc, out = httpd_t(f"<VirtualHost 127.0.0.1:80>\n{directive}\n"
                      "</VirtualHost>")
    assert rc != 0 and "cannot occur within <VirtualHost>" in out, out


def _child_memory_log(extra, until="TLLM0018"):
    """Start a server with extra config, serve a few requests, and return
    its error_log once the trimming thread has logged until."""
    srv = start_server("memory", extra_conf="LogLevel tracellm:trace1\n"
                       + extra)
    try:
        api = Api(srv.base)
        pid, key = api.project()
        for _ in range(3):
            r = api.post("/traces", headers={"X-API-Key": key},
                         json=[{"token_count": 3} for _ in range(50)])
            assert r.status_code == 200, r.text
            assert api.get("/failures").status_code == 200
        deadline = time.monotonic() + 15
        while until not in srv.error_log_text():
            assert time.monotonic() < deadline, srv.error_log_text()[-2000:]
            time.sleep(0.2)
        return srv.error_log_text()
    finally:
        finish_server(srv, allowed=[r"TLLM00(1[5-9]|22)", r"\[tracellm:trace"])


def test_children_bound_sqlite_memory_and_trim_the_heap(monkeypatch):
    """Each child sets SQLite's soft heap limit (TLLM0017 reads it back
    from SQLite), makes its allocator for requests' bulk bytes (TLLM0022),
    fixes glibc's trim and mmap thresholds and caps its arenas at two per
    CPU (TLLM0023, from mallopt's answers), and its trimming thread runs
    after requests (TLLM0018), with the busy trim threshold set."""
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    default = _child_memory_log("")
    limits = set(re.findall(r"TLLM0017: SQLite memory of this child "
                            r"limited to (\d+) bytes", default))
    assert limits == {str(64 << 20)}, limits
    assert len(re.findall(r"TLLM0022: requests' bulk bytes come from one "
                          r"allocator per child, keeping up to 8192 KiB",
                          default)) == len(re.findall("TLLM0017", default))
    arenas = 2 * os.sysconf("SC_NPROCESSORS_ONLN")
    assert len(re.findall(r"TLLM0023: malloc thresholds fixed: trim 128 KiB "
                          r"\(64 MiB while busy\), mmap 512 KiB, no fast "
                          r"bins; arenas: at most %d$" % arenas, default,
                          re.M)) == len(re.findall("TLLM0017", default))
    assert re.search(r"TLLM0018: heap trimmed \(.*\), trim threshold busy",
                     default), default[-2000:]
    custom = _child_memory_log("TraceLLMCacheMemory 8")
    assert set(re.findall(r"limited to (\d+) bytes", custom)) == {
        str(8 << 20)}
    unlimited = _child_memory_log("TraceLLMCacheMemory 0")
    assert set(re.findall(r"limited to (\d+) bytes", unlimited)) == {"0"}


def test_children_keep_an_arena_cap_from_httpds_environment(monkeypatch):
    """An administrator's MALLOC_ARENA_MAX in httpd's environment stays:
    the children do not set their own cap (TLLM0023)."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    log = _child_memory_log("")
    caps = re.findall(r"TLLM0023: .*; arenas: (.*)$", log, re.M)
    assert caps and set(caps) == {"as httpd's environment sets"}, caps


def _idle_answers(api, pid, tid):
    """What the fixed and the built (filtered) statements answer."""
    answers = {}
    for path in (f"/traces/{tid}",
                 f"/traces?project_id={pid}&status=failed&limit=5",
                 f"/traces?project_id={pid}&token_min=3&token_max=7",
                 f"/failures?project_id={pid}&limit=3",
                 f"/analytics?project_id={pid}"):
        r = api.get(path)
        assert r.status_code == 200, r.text
        body = r.json()
        if path.startswith("/analytics"):
            body.pop("charts")      # the hourly buckets move with the clock
        answers[path] = body
    return answers


def test_idle_children_hand_back_page_caches_and_statements(monkeypatch):
    """A child that has gone quiet after requests hands back the page
    caches and the prepared statements of its idle connections, and the
    blocks its bulk allocator kept, once (TLLM0019): SQLite's memory in
    the child drops, and short threads visit each of its malloc arenas
    (twice the cap) so that their tops go back too. The statements are
    prepared again on their next use: the same reads answer the same, and
    ingest still works."""
    # The arena cap is the module's own (two per CPU): it sets the visits.
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    # Connections that outlive the quiet spell (the private
    # configuration's DBDExptime 1 would close them first).
    srv = start_server("idle", extra_conf="LogLevel tracellm:debug\n"
                       "DBDExptime 300\n")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        tid = f"idle-{uid()}"
        traces = [{"trace_id": f"{tid}-{i}", "token_count": i,
                   "status": "failed" if i % 3 == 0 else "success"}
                  for i in range(10)]
        r = api.post("/traces", headers={"X-API-Key": key}, json=traces)
        assert r.status_code == 200, r.text
        before = _idle_answers(api, pid, f"{tid}-3")
        deadline = time.monotonic() + 15
        while "TLLM0019" not in srv.error_log_text():
            assert time.monotonic() < deadline, srv.error_log_text()[-2000:]
            time.sleep(0.2)
        time.sleep(2.5)             # every child that served has gone quiet
        log = srv.error_log_text()
        assert _idle_answers(api, pid, f"{tid}-3") == before
        r = api.post("/traces", headers={"X-API-Key": key},
                     json={"trace_id": f"{tid}-after", "token_count": 5})
        assert r.status_code == 201, r.text
        assert api.get(f"/traces/{tid}-after").status_code == 200
    finally:
        finish_server(srv, allowed=[r"TLLM00(1[5-9]|2[0-2])",
                                    r"\[tracellm:debug"])
    shrinks = [tuple(int(x) for x in m) for m in re.findall(
        r"TLLM0019: child idle: SQLite memory (\d+) -> (\d+) bytes, "
        r"(\d+) connection\(s\) shrunk, (\d+) statement\(s\) finalized, "
        r"(\d+) busy", log)]
    assert shrinks, log[-2000:]
    # The child that served the requests had pages and statements to give
    # back.
    assert any(after < before and shrunk >= 1 and statements >= 1
               for before, after, shrunk, statements, _ in shrinks), shrinks
    # No bulk pool was open: the allocator's kept blocks went back too.
    assert "closed by mod_dbd; bulk allocator renewed; " in log, log[-2000:]
    visits = {int(v) for v in re.findall(r"TLLM0019: .*; (\d+) arena "
                                         r"visit\(s\); heap", log)}
    assert visits == {2 * 2 * os.sysconf("SC_NPROCESSORS_ONLN")}, visits


def _closed_after_a_burst(exptime):
    """Open several connections in the children at once, go quiet, and
    return the counts TLLM0019 gives of connections mod_dbd closed."""
    srv = start_server("expiry", extra_conf="LogLevel tracellm:debug\n"
                       f"DBDExptime {exptime}\n")
    try:
        api = Api(srv.base)
        pid, _ = api.project()

        def read(_):
            # Each request in flight at once holds its own connection.
            client = Api(srv.base)
            for _ in range(20):
                assert client.get(
                    f"/failures?project_id={pid}").status_code == 200

        with ThreadPoolExecutor(24) as pool:
            list(pool.map(read, range(24)))
        # DBDExptime 1 has passed at the first quiet second; 300 has not
        # in any of the four.
        time.sleep(4.5)
        log = srv.error_log_text()
    finally:
        finish_server(srv, allowed=[r"TLLM00(1[5-9]|2[0-2])",
                                    r"\[tracellm:debug"])
    closed = [int(n) for n in re.findall(
        r"TLLM0019: child idle: .*, (\d+) closed by mod_dbd;", log)]
    assert closed, log[-2000:]
    return closed


def test_quiet_children_let_mod_dbd_close_idle_connections():
    """mod_dbd closes a connection idle for DBDExptime only when a request
    takes or gives one back. A child's trimming thread does that once the
    child has been quiet that long, so the connections a burst opened are
    closed (TLLM0019 counts them), not kept until the next request."""
    assert max(_closed_after_a_burst(1)) >= 2
    assert set(_closed_after_a_burst(300)) == {0}
