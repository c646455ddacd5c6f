"""Events from the database: live, replayed with ?since=, filtered,
replaced traces, and the poll that finds rows nobody announced."""
import json

from eventd_support import event_text, events, open_client, run, silent


def test_three_traces_three_events_in_order(eventd):
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(1) + d.store.add(1) + d.store.add(1)
        got = await events(ws, 3, timeout=2)
        assert [t for _, t in got] == [event_text(s, b) for s, b in rows]
        assert [s for s, _ in got] == sorted(s for s, _ in got)
        await silent(ws, 0.3)
        await ws.close()
    run(go())


def test_event_shape(eventd):
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        (seq, body), = d.store.add(1, pad=100)
        (_, text), = await events(ws, 1)
        msg = json.loads(text)
        assert list(msg) == ["type", "seq", "trace"]
        assert msg["type"] == "trace.created" and msg["seq"] == seq
        assert msg["trace"] == json.loads(body)
        assert text == event_text(seq, body)   # the stored JSON verbatim
        await ws.close()
    run(go())


def test_a_batch_arrives_whole_and_in_order(eventd):
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(350)         # several store pages in one read
        got = await events(ws, 350)
        assert [t for _, t in got] == [event_text(s, b) for s, b in rows]
        await ws.close()
    run(go())


def test_no_events_before_connect_without_since(eventd):
    d = eventd()

    async def go():
        # Once a live probe has them, the daemon's cursor is past them.
        probe = await open_client(d.url)
        d.store.add(3)
        await events(probe, 3)
        await probe.close()
        ws = await open_client(d.url)
        await silent(ws, 0.5)
        rows = d.store.add(1)
        assert [t for _, t in await events(ws, 1)] == \
            [event_text(*rows[0])]
        await ws.close()
    run(go())


def test_since_replays_the_missed_then_live(eventd):
    d = eventd()
    rows = d.store.add(5)

    async def go():
        since = rows[1][0]
        ws = await open_client(f"{d.url}?since={since}")
        got = await events(ws, 3)
        assert [t for _, t in got] == [event_text(*r) for r in rows[2:]]
        await silent(ws, 0.3)
        more = d.store.add(2)
        got = await events(ws, 2)
        assert [t for _, t in got] == [event_text(*r) for r in more]
        await silent(ws, 0.3)
        await ws.close()
    run(go())


def test_since_zero_and_since_the_end(eventd):
    d = eventd()
    rows = d.store.add(4)

    async def go():
        ws = await open_client(f"{d.url}?since=0")
        assert [t for _, t in await events(ws, 4)] == \
            [event_text(*r) for r in rows]
        await silent(ws, 0.3)
        last = await open_client(f"{d.url}?since={rows[-1][0]}")
        await silent(last, 0.3)
        # an empty since counts as absent: live from now
        empty = await open_client(f"{d.url}?since=")
        await silent(empty, 0.3)
        more = d.store.add(1)
        for w in (ws, last, empty):
            assert [t for _, t in await events(w, 1)] == \
                [event_text(*more[0])]
            await w.close()
    run(go())


def test_since_beyond_the_log_waits_for_it(eventd):
    d = eventd()
    rows = d.store.add(2)

    async def go():
        ahead = rows[-1][0] + 3
        ws = await open_client(f"{d.url}?since={ahead}")
        first = d.store.add(3)          # seqs up to ahead: not news
        await silent(ws, 0.5)
        later = d.store.add(2)
        got = await events(ws, 2)
        assert [t for _, t in got] == [event_text(*r) for r in later]
        assert all(s > ahead for s, _ in got)
        assert first[-1][0] == ahead
        await ws.close()
    run(go())


def test_replay_while_inserting_has_no_gap_and_no_duplicate(eventd):
    # A small queue makes the replay take many pages, so that the inserts
    # land while it is in progress and the switch to live happens late.
    d = eventd("--queue", "16")
    before = d.store.add(300, pad=2000)

    async def go():
        ws = await open_client(f"{d.url}?since=0")
        during = []
        got = []
        for i in range(10):
            during += d.store.add(5)
            got += await events(ws, 20)
        expected = before + during
        got += await events(ws, len(expected) - len(got), timeout=20)
        seqs = [s for s, _ in got]
        assert seqs == sorted(set(seqs))
        assert [t for _, t in got] == [event_text(*r) for r in expected]
        await silent(ws, 0.3)
        after = d.store.add(3)
        assert [t for _, t in await events(ws, 3)] == \
            [event_text(*r) for r in after]
        await ws.close()
    run(go())


def test_reconnect_with_since_misses_nothing(eventd):
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        first = d.store.add(3)
        got = await events(ws, 3)
        await ws.close()
        missed = d.store.add(4)
        ws = await open_client(f"{d.url}?since={got[-1][0]}")
        assert [t for _, t in await events(ws, 4)] == \
            [event_text(*r) for r in missed]
        assert first[-1][0] == got[-1][0]
        await ws.close()
    run(go())


def test_filters_live_and_replay(eventd):
    d = eventd()
    s = d.store
    old = s.put([
        {"trace_id": "a1", "project_id": "alpha", "environment": "prod"},
        {"trace_id": "b1", "project_id": "beta", "environment": "prod"},
        {"trace_id": "a2", "project_id": "alpha", "environment": "staging"},
        {"trace_id": "b2", "project_id": "beta", "environment": "staging"},
    ])

    def want(rows, keep):
        return [event_text(seq, body) for seq, body in rows
                if keep(json.loads(body))]

    cases = {
        "project_id=alpha": lambda t: t["project_id"] == "alpha",
        "environment=staging": lambda t: t["environment"] == "staging",
        "project_id=beta&environment=prod":
            lambda t: (t["project_id"], t["environment"]) == ("beta", "prod"),
        "project_id=nobody": lambda t: False,
        "project_id=&environment=": lambda t: True,       # empty: no filter
        "project_id=beta&project_id=alpha":               # the last counts
            lambda t: t["project_id"] == "alpha",
    }

    async def go():
        clients = {}
        for q in cases:
            clients[q] = await open_client(f"{d.url}?since=0&{q}")
        for q, keep in cases.items():
            w = want(old, keep)
            assert [t for _, t in await events(clients[q], len(w))] == w, q
        new = s.put([
            {"trace_id": "a3", "project_id": "alpha", "environment": "prod"},
            {"trace_id": "b3", "project_id": "beta", "environment": "prod"},
            {"trace_id": "b4", "project_id": "beta", "environment": "dev"},
            {"trace_id": "a4", "project_id": "alpha",
             "environment": "staging"},
        ])
        for q, keep in cases.items():
            w = want(new, keep)
            assert [t for _, t in await events(clients[q], len(w))] == w, q
        for q, ws in clients.items():
            await silent(ws, 0.2)
            await ws.close()
    run(go())


def test_replaced_trace_is_announced_again_and_replayed_once(eventd):
    d = eventd()
    s = d.store
    t = {"trace_id": "same-id", "project_id": "p", "environment": "e"}

    async def go():
        ws = await open_client(d.url)
        # Each event is awaited before the next write: a version replaced
        # before the daemon reads it is (rightly) never announced.
        first = s.put([t])
        got = await events(ws, 1)
        other = s.add(1, project_id="p", environment="e")
        got += await events(ws, 1)
        second = s.put([dict(t, pad=10)])      # replaced: delete + insert
        got += await events(ws, 1)
        assert [t for _, t in got] == [event_text(*r)
                                       for r in first + other + second]
        assert second[0][0] > other[0][0] > first[0][0]
        # the log holds the current version only, at its new seq
        again = await open_client(f"{d.url}?since=0")
        assert [t for _, t in await events(again, 2)] == \
            [event_text(*r) for r in other + second]
        await silent(again, 0.3)
        await ws.close()
        await again.close()
    run(go())


def test_poll_finds_rows_without_a_datagram(eventd):
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(2, wake=False)
        got = await events(ws, 2, timeout=2)
        assert [t for _, t in got] == [event_text(*r) for r in rows]
        await ws.close()
    run(go())


def test_poll_interval_option(eventd):
    d = eventd("--poll-ms", "50")

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(1, wake=False)
        got = await events(ws, 1, timeout=1)
        assert got[0][1] == event_text(*rows[0])
        await ws.close()
    run(go())


def test_restart_resumes_from_the_database(eventd, tmp_path):
    d = eventd()
    rows = d.store.add(3)
    d.store.close()
    d._store = None
    assert d.terminate() == 0
    d.start()

    async def go():
        ws = await open_client(f"{d.url}?since={rows[0][0]}")
        assert [t for _, t in await events(ws, 2)] == \
            [event_text(*r) for r in rows[1:]]
        new = d.store.add(1)
        assert [t for _, t in await events(ws, 1)] == \
            [event_text(*new[0])]
        await ws.close()
    run(go())
