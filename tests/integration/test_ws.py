"""Live events through the real httpd: /ws tunnelled by mod_proxy_wstunnel
to tracellm-eventd, which the module starts, restarts and stops (API.md,
"WS /ws"). The event process's own edge cases (slow clients, frame limits,
UTF-8) are in tests/eventd, against the process directly."""
import asyncio
import json
import os
import socket
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import websockets

from conftest import finish_server, start_server
from httpd import REPO, apxs_q, free_port
from support import Api

EVENTD = os.environ.get("TLLM_EVENTD") or str(REPO / "tracellm-eventd")
CONNECTED = {"type": "system.connected", "status": "connected",
             "message": "TraceLLM websocket active"}


def eventd_conf(data_dir, port, eventd=EVENTD):
    text = (REPO / "conf" / "eventd-private.conf.in").read_text()
    for k, v in (("@DATA@", data_dir), ("@EVENTD_PORT@", str(port)),
                 ("@MODDIR@", apxs_q("LIBEXECDIR")), ("@EVENTD@", eventd)):
        text = text.replace(k, v)
    return text


class WsServer:
    """A TllmServer whose extra config turns live events on."""

    def __init__(self, extra_conf="", eventd_args=""):
        from httpd import new_data_dir
        d = new_data_dir("ws")
        self.eventd_port = free_port()
        self.srv = None
        self._data = d
        self._extra = extra_conf
        self._eventd = EVENTD
        if eventd_args:
            # The module starts what TraceLLMEventdBinary names with its
            # own arguments; a wrapper appends these (the last wins).
            self._eventd = os.path.join(d, "eventd-wrapper")
            with open(self._eventd, "w") as f:
                f.write(f'#!/bin/sh\nexec "{EVENTD}" "$@" {eventd_args}\n')
            os.chmod(self._eventd, 0o755)

    def start(self):
        from httpd import TllmServer
        from conftest import _require_module
        _require_module()
        self.srv = TllmServer(self._data,
                              extra_conf=eventd_conf(self._data,
                                                     self.eventd_port,
                                                     self._eventd)
                              + self._extra)
        self.srv.start()
        wait_for(lambda: eventd_pids(self._data), 10, "eventd to start")
        return self

    @property
    def ws(self):
        return f"ws://127.0.0.1:{self.srv.port}/ws"


def eventd_pids(data_dir):
    out = subprocess.run(["pgrep", "-f", f"tracellm-eventd --db {data_dir}/"],
                         stdout=subprocess.PIPE, text=True).stdout
    return [int(p) for p in out.split()]


def listening(port):
    """1 if something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return 1
    except OSError:
        return 0


def wait_for(cond, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def ws_server():
    s = WsServer().start()
    yield s
    s.srv.stop()
    # No orphan: the event process stops with httpd.
    wait_for(lambda: not eventd_pids(s._data), 10, "eventd to stop")
    finish_server(s.srv, allowed=[r"tracellm-eventd"])


@pytest.fixture
def ws_api(ws_server):
    return Api(ws_server.srv.base)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def recv_json(ws, timeout=5):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def connect(url, **kw):
    ws = await websockets.connect(url, max_size=None, **kw)
    assert await recv_json(ws) == CONNECTED
    return ws


async def events(ws, n, timeout=5):
    out = []
    for _ in range(n):
        m = await recv_json(ws, timeout)
        assert m["type"] == "trace.created", m
        out.append(m)
    return out


async def nothing_more(ws, wait=0.5):
    try:
        m = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {m}")


def ingest(api, key, n, **fields):
    ids = []
    for i in range(n):
        body = {"prompt": f"p{i}", **fields}
        r = api.ingest(key, json.dumps(body))
        assert r.status_code == 201, r.text
        ids.append(r.json()["trace_id"])
    return ids


def test_connect_ping_pong(ws_server):
    async def go():
        ws = await connect(ws_server.ws)
        for ts in (123, "2026-01-01T00:00:00Z", {"a": [1, None]}, None, 1.5):
            await ws.send(json.dumps({"type": "ping", "ts": ts}))
            assert await recv_json(ws) == {"type": "system.pong",
                                           "timestamp": ts}
        await ws.send("not json")
        m = await recv_json(ws)
        assert m["type"] == "system.error" and m["detail"]
        await ws.send(json.dumps({"type": "ping", "ts": 7}))
        assert (await recv_json(ws))["timestamp"] == 7   # still open
        await ws.close()
    run(go())


def test_three_traces_three_events_in_order(ws_server, ws_api):
    pid, key = ws_api.project()

    async def go():
        ws = await connect(ws_server.ws + f"?project_id={pid}")
        ids = ingest(ws_api, key, 3)
        got = await events(ws, 3, timeout=1)
        assert [m["trace"]["trace_id"] for m in got] == ids
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        for m in got:
            stored = ws_api.trace(m["trace"]["trace_id"])
            assert m["trace"] == stored
        await nothing_more(ws)
        await ws.close()
    run(go())


def test_commits_wake_the_event_process():
    """Events come from the module's wake-up after each commit, not from
    the event process's poll: with a poll of a minute, concurrent single
    POSTs (committed in groups) and a batch all reach a client within
    seconds."""
    s = WsServer(eventd_args="--poll-ms 60000").start()
    api = Api(s.srv.base)
    pid, key = api.project()

    def post_one(i):
        r = api.ingest(key, json.dumps({"prompt": f"woken {i}"}))
        assert r.status_code == 201, r.text
        return r.json()["trace_id"]

    async def go():
        ws = await connect(s.ws + f"?project_id={pid}")
        for _ in range(3):
            with ThreadPoolExecutor(10) as pool:   # Api pools 10
                ids = set(await asyncio.get_running_loop().run_in_executor(
                    None, lambda: list(pool.map(post_one, range(48)))))
            got = await events(ws, len(ids), timeout=10)
            assert {m["trace"]["trace_id"] for m in got} == ids
        r = api.post("/traces", headers={"X-API-Key": key},
                     json=[{"prompt": f"batch {i}"} for i in range(20)])
        assert r.status_code == 200, r.text[:300]
        got = await events(ws, 20, timeout=10)
        assert [m["trace"]["trace_id"] for m in got] == r.json()["trace_ids"]
        await nothing_more(ws)
        await ws.close()
    try:
        assert all("--poll-ms 60000" in open(f"/proc/{p}/cmdline").read()
                   .replace("\0", " ") for p in eventd_pids(s._data))
        run(go(), timeout=120)
    finally:
        s.srv.stop()
        wait_for(lambda: not eventd_pids(s._data), 10, "eventd to stop")
        finish_server(s.srv, allowed=[r"tracellm-eventd"])


def test_since_replays_exactly_the_missed_events(ws_server, ws_api):
    pid, key = ws_api.project()

    async def go():
        ws = await connect(ws_server.ws + f"?project_id={pid}")
        first = await events(ws, 1) if ingest(ws_api, key, 1) else None
        last_seen = first[0]["seq"]
        await ws.close()
        missed = ingest(ws_api, key, 4)
        ws = await connect(ws_server.ws +
                           f"?project_id={pid}&since={last_seen}")
        got = await events(ws, 4)
        assert [m["trace"]["trace_id"] for m in got] == missed
        live = ingest(ws_api, key, 1)
        got = await events(ws, 1)
        assert got[0]["trace"]["trace_id"] == live[0]
        await nothing_more(ws)
        await ws.close()
    run(go())


def test_filters(ws_server, ws_api):
    pa, ka = ws_api.project()
    pb, kb = ws_api.project()

    async def go():
        only_a = await connect(ws_server.ws + f"?project_id={pa}")
        only_b_env = await connect(ws_server.ws +
                                   f"?project_id={pb}&environment=blue")
        ingest(ws_api, ka, 1)
        ingest(ws_api, kb, 1, environment="red")
        blue = ingest(ws_api, kb, 1, environment="blue")
        got = await events(only_a, 1)
        assert got[0]["trace"]["project_id"] == pa
        got = await events(only_b_env, 1)
        assert got[0]["trace"]["trace_id"] == blue[0]
        await nothing_more(only_a)
        await nothing_more(only_b_env)
        await only_a.close()
        await only_b_env.close()
    run(go())


def test_replaced_trace_is_announced_again(ws_server, ws_api):
    pid, key = ws_api.project()

    async def go():
        ws = await connect(ws_server.ws + f"?project_id={pid}")
        tid = "replace-" + pid
        ingest(ws_api, key, 1, trace_id=tid)
        # Awaited before the re-send: a version replaced before the event
        # process reads it is rightly never announced (the log holds each
        # trace's current version only).
        a, = await events(ws, 1)
        ingest(ws_api, key, 1, trace_id=tid, model_name="v2")
        b, = await events(ws, 1)
        assert b["seq"] > a["seq"]
        assert b["trace"]["model_name"] == "v2"
        await ws.close()
        # A replay holds the current version only, once.
        ws = await connect(ws_server.ws + f"?project_id={pid}&since=0")
        got = await events(ws, 1)
        assert got[0]["seq"] == b["seq"]
        await nothing_more(ws)
        await ws.close()
    run(go())


def test_killed_eventd_is_replaced_and_resume_misses_nothing(ws_server,
                                                             ws_api):
    pid, key = ws_api.project()
    data = ws_server._data

    async def go():
        ws = await connect(ws_server.ws + f"?project_id={pid}")
        ingest(ws_api, key, 1)
        last = (await events(ws, 1))[0]["seq"]
        old = eventd_pids(data)
        assert len(old) == 1
        os.kill(old[0], signal.SIGKILL)
        # Ingest goes on while no event process runs.
        missed = ingest(ws_api, key, 3)
        new = wait_for(lambda: [p for p in eventd_pids(data)
                                if p not in old], 3, "a new eventd")
        assert len(new) == 1
        # A process is not yet a listener: on a slow host a connect in
        # between was refused (503, and the proxy's error in the log).
        wait_for(lambda: listening(ws_server.eventd_port), 5,
                 "the new eventd to listen")
        ws2 = await connect(ws_server.ws + f"?project_id={pid}&since={last}")
        got = await events(ws2, 3)
        assert [m["trace"]["trace_id"] for m in got] == missed
        await nothing_more(ws2)
        await ws2.close()
    run(go())


def test_graceful_restart_with_a_connected_client(ws_server, ws_api):
    pid, key = ws_api.project()
    data = ws_server._data
    srv = ws_server.srv

    async def go():
        ws = await connect(ws_server.ws + f"?project_id={pid}")
        ingest(ws_api, key, 1)
        last = (await events(ws, 1))[0]["seq"]
        p = subprocess.run(["apache2", "-f", srv.conf, "-k", "graceful"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stdout
        # The old generation's event process goes; exactly one serves.
        wait_for(lambda: requests.get(srv.base + "/").status_code == 200,
                 10, "httpd after graceful")
        time.sleep(1)
        assert len(eventd_pids(data)) == 1
        missed = ingest(ws_api, key, 2)
        ws2 = await connect(ws_server.ws + f"?project_id={pid}&since={last}")
        got = await events(ws2, 2)
        assert [m["trace"]["trace_id"] for m in got] == missed
        await ws2.close()
        try:
            await ws.close()
        except Exception:
            pass
    run(go())


def test_200_clients_each_receive_an_event(ws_server, ws_api):
    pid, key = ws_api.project()

    async def go():
        clients = await asyncio.gather(*[
            connect(ws_server.ws + f"?project_id={pid}")
            for _ in range(200)])
        ids = ingest(ws_api, key, 1)
        got = await asyncio.gather(*[events(c, 1, timeout=10)
                                     for c in clients])
        assert all(g[0]["trace"]["trace_id"] == ids[0] for g in got)
        await asyncio.gather(*[c.close() for c in clients])
    run(go(), timeout=120)


def test_slow_client_closed_while_a_reading_one_keeps_up():
    """Through httpd's tunnel: a client that stops reading is closed with
    1008 once it is TraceLLMEventdQueue events behind; a reading client
    gets every event meanwhile."""
    s = WsServer("TraceLLMEventdQueue 64\n").start()
    api = Api(s.srv.base)
    pid, key = api.project()
    pad = "x" * (64 << 10)

    async def go():
        url = s.ws + f"?project_id={pid}"
        fast = await connect(url)
        slow = await connect(url)
        slow.transport.pause_reading()
        sent = []
        # Far more than the slow client's socket buffers, httpd's tunnel
        # and its queue hold together.
        for _ in range(60):
            r = api.post("/traces", headers={"X-API-Key": key},
                         json=[{"prompt": pad} for _ in range(10)])
            assert r.status_code == 200, r.text[:300]
            ids = r.json()["trace_ids"]
            got = await events(fast, len(ids), timeout=20)
            assert [m["trace"]["trace_id"] for m in got] == ids
            sent += ids
        slow.transport.resume_reading()
        received = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                m = await recv_json(slow, timeout=20)
                if m["type"] == "trace.created":
                    received.append(m["trace"]["trace_id"])
        assert closed.value.code == 1008, closed.value
        assert 0 < len(received) < len(sent)
        assert received == sent[:len(received)]    # a gapless prefix
        await fast.close()
    try:
        run(go(), timeout=240)
    finally:
        s.srv.stop()
        wait_for(lambda: not eventd_pids(s._data), 10, "eventd to stop")
        finish_server(s.srv, allowed=[r"tracellm-eventd"])
