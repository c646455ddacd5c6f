"""Many clients, and clients that stop reading."""
import asyncio
import json

from eventd_support import (event_text, events, closed_with, open_client,
                            run, silent)

SLOW_LOG = r"^closing a client that fell \d+ messages behind \(1008\)$"


def pause(ws):
    """Stop reading this client's socket: once the kernel's buffers are
    full, the daemon's writes to it block. (A tiny SO_RCVBUF would fill
    them sooner but makes draining them later take many seconds.)"""
    ws.transport.pause_reading()


def test_slow_client_closed_1008_fast_client_gets_everything(eventd):
    d = eventd("--queue", "64", allowed_log=[SLOW_LOG])

    async def go():
        fast = await open_client(d.url)
        slow = await open_client(d.url)
        pause(slow)
        rows = []
        # 64 KiB traces in bursts the fast client keeps up with; far more
        # than the slow one's socket buffers and queue can hold.
        for _ in range(15):
            burst = d.store.add(20, pad=64 << 10)
            got = await events(fast, len(burst), timeout=20)
            assert [t for _, t in got] == [event_text(*r) for r in burst]
            rows += burst
        assert len(rows) == 300
        slow.transport.resume_reading()
        code, reason, got = await closed_with(slow, timeout=20)
        assert (code, reason) == (1008, "client too slow")
        # what it did get is a gapless prefix of the log
        assert 0 < len(got) < len(rows)
        assert got == [event_text(*r) for r in rows[:len(got)]]
        # and the fast one is still served
        more = d.store.add(1)
        assert [t for _, t in await events(fast, 1)] == \
            [event_text(*more[0])]
        await fast.close()
    run(go(), timeout=120)
    assert any("fell" in line for line in d.log_lines())


def test_paused_client_within_its_queue_loses_nothing(eventd):
    d = eventd("--queue", "1024")

    async def go():
        ws = await open_client(d.url)
        pause(ws)
        rows = d.store.add(200, pad=1000)
        await asyncio.sleep(1)
        ws.transport.resume_reading()
        got = await events(ws, 200)
        assert [t for _, t in got] == [event_text(*r) for r in rows]
        await silent(ws, 0.3)
        await ws.close()
    run(go())


def test_burst_larger_than_the_queue_closes_live_clients(eventd):
    # The bound is on queued messages: a burst beyond it cannot be
    # delivered in order to anybody who is live, so they are closed (and
    # may resume with since), rather than silently skipping events.
    d = eventd("--queue", "8", allowed_log=[SLOW_LOG])

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(50)
        code, reason, got = await closed_with(ws)
        assert (code, reason) == (1008, "client too slow")
        seqs = [json.loads(t)["seq"] for t in got]
        assert seqs == [s for s, _ in rows[:len(seqs)]]
        # resuming with since pages through what it missed
        again = await open_client(
            f"{d.url}?since={seqs[-1] if seqs else rows[0][0] - 1}")
        rest = await events(again, len(rows) - len(seqs))
        assert [t for _, t in rest] == \
            [event_text(*r) for r in rows[len(seqs):]]
        await again.close()
    run(go())


def test_500_clients_each_receive_every_event(eventd):
    d = eventd()
    n = 500

    async def go():
        # Once a live probe has these, the daemon's cursor is past them.
        probe = await open_client(d.url)
        old = d.store.add(2, pad=2000)
        await events(probe, 2)
        await probe.close()

        async def one(i):
            # all at once, as after a restart; every fifth one resuming
            q = "?since=0" if i % 5 == 0 else ""
            return await open_client(d.url + q, open_timeout=30)

        clients = await asyncio.gather(*(one(i) for i in range(n)))
        rows = d.store.add(3, pad=2000)
        results = await asyncio.gather(*(
            events(ws, 5 if i % 5 == 0 else 3, timeout=30)
            for i, ws in enumerate(clients)))
        for i, got in enumerate(results):
            want = (old + rows) if i % 5 == 0 else rows
            assert [t for _, t in got] == [event_text(*r) for r in want]
        await asyncio.gather(*(silent(ws, 0.2) for ws in clients))
        await asyncio.gather(*(ws.close() for ws in clients))
    run(go(), timeout=180)
