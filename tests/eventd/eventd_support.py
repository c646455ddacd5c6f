"""Helpers for the tracellm-eventd tests: writing trace rows the way the
module's store does (python's sqlite3), waking the daemon, and WebSocket
clients (python3-websockets 10.x, asyncio)."""
import asyncio
import json
import socket
import sqlite3
import uuid

import websockets

CONNECTED = ('{"type":"system.connected","status":"connected",'
             '"message":"TraceLLM websocket active"}')

INSERT = ("INSERT INTO traces (trace_id, project_id, environment, model_name,"
          " status, latency, token_count, retry_count, slow, created_at, body)"
          " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def uid(n=12):
    return uuid.uuid4().hex[:n]


def trace_body(trace_id, project_id, environment, pad=0):
    """A TraceSchema-shaped JSON text (the daemon sends it verbatim)."""
    return json.dumps({
        "trace_id": trace_id, "prompt": "p" * pad, "response": "r",
        "latency": 12.5, "token_count": 7, "model_name": "gpt-test",
        "project_id": project_id, "project_name": project_id,
        "api_key": "tlm_sk_...abcd", "environment": environment,
        "status": "success", "steps": [], "retry_count": 0,
        "slow_request": False, "failure_reason": None,
        "created_at": "2024-01-01T00:00:00.000000+00:00",
        "updated_at": "2024-01-01T00:00:00.000000+00:00",
        "unicode": "caf\u00e9 \u2603 \U0001F600"}, ensure_ascii=False,
        separators=(",", ":"))


class Store:
    """Writes trace rows into the daemon's database, one transaction per
    call, and wakes the daemon with a datagram."""

    def __init__(self, db_path, wake_path):
        self.db = sqlite3.connect(db_path, timeout=10,
                                  isolation_level=None)
        self.wake_path = wake_path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def close(self):
        self.db.close()
        self.sock.close()

    def put(self, traces, wake=True):
        """traces: dicts with trace_id, project_id, environment (and pad).
        A trace_id already stored is replaced (delete + insert: a new seq).
        Returns [(seq, body)] in order."""
        out = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for t in traces:
                body = trace_body(t["trace_id"], t["project_id"],
                                  t["environment"], t.get("pad", 0))
                self.db.execute("DELETE FROM traces WHERE trace_id = ?",
                                (t["trace_id"],))
                cur = self.db.execute(INSERT, (
                    t["trace_id"], t["project_id"], t["environment"],
                    "gpt-test", "success", 12.5, 7, 0, 0,
                    1704067200000000, body))
                out.append((cur.lastrowid, body))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if wake:
            self.wake(out[-1][0] if out else 0)
        return out

    def add(self, n=1, project_id="proj-a", environment="production",
            wake=True, pad=0):
        """n new traces in one transaction; [(seq, body)]."""
        return self.put([{"trace_id": "tr-" + uid(), "project_id": project_id,
                          "environment": environment, "pad": pad}
                         for _ in range(n)], wake=wake)

    def wake(self, seq=0):
        # What the module sends: the last seq, as text. Any datagram will do.
        self.sock.sendto(str(seq).encode(), self.wake_path)


def event_text(seq, body):
    """The exact trace.created message for a stored row."""
    return '{"type":"trace.created","seq":%d,"trace":%s}' % (seq, body)


def run(coro, timeout=60):
    """Run a test coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(url, **kw):
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("ping_interval", None)    # no keepalive noise
    kw.setdefault("compression", None)
    kw.setdefault("max_size", None)
    return websockets.connect(url, **kw)


async def recv_text(ws, timeout=5):
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_json(ws, timeout=5):
    return json.loads(await recv_text(ws, timeout))


async def open_client(url, **kw):
    """A connected client whose system.connected has been read."""
    ws = await connect(url, **kw)
    assert await recv_text(ws) == CONNECTED
    return ws


async def events(ws, n, timeout=10):
    """The next n messages, which must be trace.created: [(seq, text)]."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(out) < n:
        text = await asyncio.wait_for(ws.recv(),
                                      max(0.01, deadline - loop.time()))
        msg = json.loads(text)
        assert msg["type"] == "trace.created", text
        out.append((msg["seq"], text))
    return out


async def silent(ws, seconds=0.5):
    """Assert that nothing arrives for a while."""
    try:
        text = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message: {text[:200]}")


async def closed_with(ws, timeout=10):
    """Read until the server closes; (code, reason, messages read)."""
    got = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            got.append(await asyncio.wait_for(
                ws.recv(), max(0.01, deadline - loop.time())))
    except websockets.ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason, got
