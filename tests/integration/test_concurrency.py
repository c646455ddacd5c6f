"""Many clients at once: every ingest stored exactly once, counts exact."""
import concurrent.futures as cf
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import requests

from conftest import finish_server, start_server
from httpd import free_port
from support import Api, uid


def _ingest(base, key, payload):
    r = requests.post(base + "/traces", data=json.dumps(payload), timeout=60,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json"})
    return r.status_code, r.text


def test_parallel_ingest_and_reads(server, api):
    pid, key = api.project()
    singles = [{"trace_id": f"par-{i}-{uid()}", "latency": i, "token_count": 1}
               for i in range(160)]
    batches = [[{"token_count": 2} for _ in range(20)] for _ in range(8)]
    with cf.ThreadPoolExecutor(32) as ex:
        futs = [ex.submit(_ingest, server.base, key, t) for t in singles]
        futs += [ex.submit(_ingest, server.base, key, b) for b in batches]
        reads = [ex.submit(requests.get, server.base + "/analytics",
                           params={"project_id": pid}, timeout=60)
                 for _ in range(20)]
        for f in futs:
            status, text = f.result()
            assert status in (200, 201), text
        for f in reads:
            assert f.result().status_code == 200
    body = api.traces(project_id=pid, limit=200)
    assert body["total"] == 160 + 160
    s = api.get("/analytics", params={"project_id": pid}).json()["summary"]
    assert s["total_traces"] == 320
    assert s["total_token_usage"] == 160 * 1 + 160 * 2


def test_parallel_resend_same_trace(server, api):
    pid, key = api.project()
    tid = "same-" + uid()
    with cf.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(_ingest, server.base, key,
                          {"trace_id": tid, "token_count": 7, "latency": 10})
                for _ in range(48)]
        for f in futs:
            status, text = f.result()
            assert status == 201, text
    assert api.traces(project_id=pid)["total"] == 1
    s = api.get("/analytics", params={"project_id": pid}).json()["summary"]
    assert s["total_traces"] == 1 and s["total_token_usage"] == 7
    assert api.get("/failures", params={"project_id": pid}).json()["totals"] == {
        "failed_traces": 0, "retries": 0, "slow_requests": 0}


def test_group_commit_answers_each_request_with_its_own_result():
    """Concurrent POSTs of one child share write transactions
    (group_commit.c): each still gets its own answer - 201, 409 for a
    trace_id of another project, 422 - and exactly the acknowledged traces
    are stored."""
    srv = start_server("group", extra_conf="LogLevel warn tracellm:debug")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        other_pid, other_key = api.project()
        taken = "taken-" + uid()
        status, text = _ingest(srv.base, other_key, {"trace_id": taken})
        assert status == 201, text
        payloads = []
        for i in range(240):
            if i % 40 == 7:
                payloads.append(("conflict", {"trace_id": taken}))
            elif i % 40 == 13:
                payloads.append(("invalid", {"latency": -1}))
            elif i % 40 == 21:
                payloads.append(("batch", [{"trace_id": f"gb-{i}-{k}-{uid()}",
                                            "token_count": 2}
                                           for k in range(5)]
                                 + [{"trace_id": taken}]))
            else:
                payloads.append(("one", {"trace_id": f"g-{i}-{uid()}",
                                         "token_count": 1, "latency": i}))
        with cf.ThreadPoolExecutor(48) as ex:
            futs = [(kind, body, ex.submit(_ingest, srv.base, key, body))
                    for kind, body in payloads]
        stored = set()
        for kind, body, fut in futs:
            status, text = fut.result()
            if kind == "one":
                assert status == 201, text
                assert json.loads(text)["trace_id"] == body["trace_id"]
                stored.add(body["trace_id"])
            elif kind == "conflict":
                assert status == 409, text
                assert taken in json.loads(text)["detail"]
            elif kind == "invalid":
                assert status == 422, text
            else:
                assert status == 200, text
                out = json.loads(text)
                assert out["accepted"] == 5
                assert out["trace_ids"] == [t["trace_id"] for t in body[:5]]
                assert [r["status"] for r in out["rejected"]] == [409]
                stored.update(out["trace_ids"])
        listed = api.traces(project_id=pid, limit=200)
        assert listed["total"] == len(stored) == 222 + 6 * 5
        s = api.get("/analytics", params={"project_id": pid}).json()
        assert s["summary"]["total_traces"] == len(stored)
        assert s["summary"]["total_token_usage"] == 222 + 6 * 5 * 2
        other = api.get("/analytics", params={"project_id": other_pid}).json()
        assert other["summary"]["total_traces"] == 1
        groups = [int(m) for m in re.findall(
            r"TLLM0015: committed (\d+) request", srv.error_log_text())]
        assert groups and max(groups) > 1, groups[:20]
        # Every request that reached the store, once: the first trace, the
        # singles, the conflicts and the batches (the 422s never did).
        assert sum(groups) == 1 + 222 + 6 + 6
    finally:
        finish_server(srv, allowed=[r"TLLM0015: committed"])


ONE_CHILD = ("StartServers 1\nServerLimit 1\nMaxRequestWorkers 256\n"
             "MaxSpareThreads 256\n")


def _aggregate_burst(concurrency):
    """24 clients read /analytics and /failures at once, 15 times each,
    from a server whose children compute `concurrency` of them at once
    (None: the default). Every answer must be the one an unloaded server
    gives. Returns the error log (TLLM0026 and the TLLM0027 waits)."""
    # one child, so that every read meets the others at its gate
    conf = ("LogLevel warn tracellm:trace1\n" + ONE_CHILD)
    if concurrency is not None:
        conf += f"TraceLLMAggregateConcurrency {concurrency}\n"
    srv = start_server("gate", extra_conf=conf)
    try:
        api = Api(srv.base)
        pid, key = api.project()
        traces = [{"token_count": i, "latency": 10 * i,
                   "model": f"m{i % 4}",
                   "status": "failed" if i % 5 == 0 else "success"}
                  for i in range(200)]
        status, text = _ingest(srv.base, key, traces)
        assert status == 200, text
        paths = [f"/failures?project_id={pid}&limit=20", "/failures",
                 f"/analytics?project_id={pid}"]

        def answers(client):
            out = []
            for path in paths:
                r = client.get(path)
                assert r.status_code == 200, r.text
                body = r.json()
                body.pop("charts", None)    # hourly buckets move
                out.append(body)
            return out

        expected = answers(api)

        def read(_):
            client = Api(srv.base)
            return all(answers(client) == expected for _ in range(15))

        with cf.ThreadPoolExecutor(24) as ex:
            assert all(ex.map(read, range(24)))
        return srv.error_log_text()
    finally:
        finish_server(srv, allowed=[r"\[tracellm:(debug|trace1)"])


def _waits(log):
    return [(int(t), int(a)) for t, a in re.findall(
        r"TLLM0027: waited for a turn \(of (\d+)\) behind (\d+) others",
        log)]


def test_aggregate_reads_wait_their_turn():
    """With one turn per child, aggregate reads that arrive while another
    computes wait (TLLM0027), and each answers exactly as unloaded; with
    no limit none waits. By default a child has a turn per online CPU."""
    waits = _waits(_aggregate_burst(1))
    assert waits, "no read waited for a turn of 1 with 24 clients"
    assert {t for t, _ in waits} == {1}
    assert _waits(_aggregate_burst(0)) == []
    log = _aggregate_burst(None)
    assert re.search(r"TLLM0026: this child computes at most %d aggregate "
                     r"reads at once" % os.cpu_count(), log), log[-2000:]
    assert {t for t, _ in _waits(log)} <= {os.cpu_count()}


def test_a_slow_reader_does_not_hold_an_aggregate_turn():
    """A read gives its turn back once computed, before its answer is
    written: with one turn and one child, a client that does not read a
    large /failures answer (the server is stuck writing it) does not hold
    up the next /analytics."""
    srv = start_server("slowreader", extra_conf=(
        ONE_CHILD + "SendBufferSize 4096\nTraceLLMAggregateConcurrency 1\n"))
    try:
        api = Api(srv.base)
        pid, key = api.project()
        traces = [{"prompt": "p" * 4000, "status": "failed",
                   "error_message": "e" * 4000} for _ in range(100)]
        status, text = _ingest(srv.base, key, traces)
        assert status == 200, text
        host, port = srv.base.split("//")[1].split("/")[0].split(":")
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, int(port)))
        slow.sendall(f"GET /failures?project_id={pid}&limit=100 HTTP/1.1\r\n"
                     f"Host: {host}\r\n\r\n".encode())
        # Its answer has started: the read was computed, and the rest
        # (hundreds of KB) waits for this client.
        assert slow.recv(100, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")
        r = requests.get(srv.base + "/analytics", params={"project_id": pid},
                         timeout=10)
        assert r.status_code == 200
        assert r.json()["summary"]["total_traces"] == 100
        slow.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := slow.recv(65536):
            raw += chunk
        slow.close()
        head, body = raw.split(b"\r\n\r\n", 1)
        assert len(body) > 400000
        assert json.loads(body)["totals"]["failed_traces"] == 100
    finally:
        finish_server(srv)


def _lock_dir():
    """A directory for the write mutex's lock file (`Mutex flock:DIR`).
    The children, running as httpd's User, reopen the file: not under
    pytest's tmp_path, which only root may enter."""
    lock_dir = Path(tempfile.mkdtemp(prefix="tllm-mutex-"))
    os.chmod(lock_dir, 0o777)
    return lock_dir


def _ingest_behind_the_write_lock(lock_dir, sends):
    """Hold the flock of the write mutex (this test is "another process
    writing"), send every (base, key, batch) of sends at once, check that
    none is answered while the lock is held, release it, and return the
    answers."""
    files = [p for p in lock_dir.iterdir()
             if p.name.startswith("tracellm-write")]
    assert len(files) == 1, list(lock_dir.iterdir())
    # (the file closes first on the way out, so a failed assertion does
    # not leave the requests waiting for the lock)
    with cf.ThreadPoolExecutor(len(sends)) as ex, \
            open(files[0], "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        futs = [ex.submit(_ingest, base, key, batch)
                for base, key, batch in sends]
        # every request reaches the queue (a leader waits for the lock; no
        # answer can come before it is released)
        time.sleep(2)
        assert not any(f.done() for f in futs)
        fcntl.flock(held, fcntl.LOCK_UN)
        return [f.result() for f in futs]


def _groups(srv):
    return [int(m) for m in re.findall(r"TLLM0015: committed (\d+) request",
                                       srv.error_log_text())]


def test_a_group_gathers_while_another_process_writes():
    """A leader takes its group only once it holds the write lock
    (group_commit.c): the requests that arrive while another process
    writes join that group instead of waiting for the next."""
    lock_dir = _lock_dir()
    srv = None
    try:
        srv = start_server("gather", extra_conf=(
            "LogLevel warn tracellm:debug\n" + ONE_CHILD
            + f"Mutex flock:{lock_dir} tracellm-write\n"))
        api = Api(srv.base)
        pid, key = api.project()
        # the key's first use is written (last_used_at), not the next ones'
        status, text = _ingest(srv.base, key, {"trace_id": "first-" + uid()})
        assert status == 201, text
        clients = 8
        answers = _ingest_behind_the_write_lock(lock_dir, [
            (srv.base, key, [{"trace_id": f"gather-{i}-{k}-{uid()}"}
                             for k in range(10)])
            for i in range(clients)])
        assert all(status == 200 for status, _ in answers), answers
        assert api.traces(project_id=pid)["total"] == 1 + clients * 10
        assert _groups(srv) == [1, clients], _groups(srv)
    finally:
        if srv:
            finish_server(srv, allowed=[r"TLLM0015: committed"])
        shutil.rmtree(lock_dir, ignore_errors=True)


def test_a_group_holds_one_database():
    """Two virtual hosts of one child, each with its own database: their
    ingests, waiting in the same queue, are never committed together, and
    each trace is stored in its own host's database only."""
    lock_dir = _lock_dir()
    other_port = free_port()
    other_db = lock_dir / "other.db"
    srv = None
    try:
        srv = start_server("twodb", extra_conf=(
            "LogLevel warn tracellm:debug\n" + ONE_CHILD
            + f"Mutex flock:{lock_dir} tracellm-write\n"
            + f"Listen 127.0.0.1:{other_port}\n"
            + f"<VirtualHost 127.0.0.1:{other_port}>\n"
            + f'  DBDriver sqlite3\n  DBDParams "{other_db}"\n'
            + "</VirtualHost>\n"))
        other_base = f"http://127.0.0.1:{other_port}"
        hosts = [(srv.base, *Api(srv.base).project()),
                 (other_base, *Api(other_base).project())]
        sends = []
        for base, _, key in hosts:
            # the key's first use is written (last_used_at), not the next
            status, text = _ingest(base, key, {"trace_id": "k-" + uid()})
            assert status == 201, text
        for i in range(8):
            base, _, key = hosts[i % 2]
            sends.append((base, key, [{"trace_id": f"db{i % 2}-{i}-{k}"}
                                      for k in range(5)]))
        answers = _ingest_behind_the_write_lock(lock_dir, sends)
        assert all(status == 200 for status, _ in answers), answers
        for n, (base, pid, _) in enumerate(hosts):
            ids = {t["trace_id"] for t in
                   Api(base).traces(project_id=pid, limit=200)["items"]}
            want = {f"db{n}-{i}-{k}" for i in range(n, 8, 2)
                    for k in range(5)}
            assert want <= ids and len(ids) == len(want) + 1, (n, ids)
        # the first ingests, then the queue in arrival order, split
        # wherever the database changes: no group holds both
        groups = _groups(srv)
        assert sum(groups) == 2 + 8 and len(groups) >= 2 + 2, groups
    finally:
        if srv:
            finish_server(srv, allowed=[r"TLLM0015: committed"])
        shutil.rmtree(lock_dir, ignore_errors=True)
