"""The client side of API.md's "WS /ws": the first message, ping/pong,
malformed messages and the frame limits."""
import json

import pytest

from eventd_support import (CONNECTED, closed_with, connect, recv_json,
                            recv_text, run, silent)


@pytest.mark.parametrize("path", ["/", "/ws", "/any/path/at/all",
                                  "/ws?unknown=1&x"])
def test_connected_is_first(eventd, path):
    d = eventd()

    async def go():
        async with connect(f"ws://127.0.0.1:{d.port}{path}") as ws:
            assert await recv_text(ws) == CONNECTED
            await silent(ws, 0.3)
    run(go())


# ts values and the exact text the pong must carry.
PING_CASES = [
    ("123", "123"),
    ("-7", "-7"),
    ("1.5", "1.5"),
    ("1e3", "1e3"),
    ("-0", "-0"),
    ("123456789012345678901234567890", "123456789012345678901234567890"),
    ('"2024-01-01T00:00:00Z"', '"2024-01-01T00:00:00Z"'),
    ('"caf\\u00e9 \\" \\\\ /"', '"caf\\u00e9 \\" \\\\ /"'),
    ("null", "null"),
    ("true", "true"),
    ("false", "false"),
    ("[1,\"}\",{\"a\":[]}]", "[1,\"}\",{\"a\":[]}]"),
    ('{"nested":{"ts":1},"b":"]"}', '{"nested":{"ts":1},"b":"]"}'),
    ("[ 1 , 2 ]", "[ 1 , 2 ]"),
    ("1e999", "1e999"),
]


@pytest.mark.parametrize("raw,echo", PING_CASES)
def test_ping_echoes_ts_as_sent(eventd, raw, echo):
    d = eventd()

    async def go():
        async with connect(d.url) as ws:
            assert await recv_text(ws) == CONNECTED
            await ws.send('{"type":"ping","ts":%s}' % raw)
            text = await recv_text(ws)
            assert text == '{"type":"system.pong","timestamp":%s}' % echo
            assert (json.loads(text)["timestamp"]
                    == json.loads('{"ts":%s}' % raw)["ts"])
    run(go())


def test_ping_variants(eventd):
    d = eventd()

    async def go():
        async with connect(d.url) as ws:
            await recv_text(ws)
            # no ts: null
            await ws.send('{"type":"ping"}')
            assert await recv_json(ws) == {"type": "system.pong",
                                           "timestamp": None}
            # members in any order, whitespace around
            await ws.send(' { "ts" : 42 , "type" : "ping" } ')
            assert await recv_text(ws) == \
                '{"type":"system.pong","timestamp":42}'
            # a repeated ts: the last counts, as in most JSON readers
            await ws.send('{"type":"ping","ts":1,"ts":2}')
            assert await recv_json(ws) == {"type": "system.pong",
                                           "timestamp": 2}
            # ts spelled with an escape is still ts
            await ws.send('{"type":"ping","t\\u0073":"x"}')
            assert await recv_json(ws) == {"type": "system.pong",
                                           "timestamp": "x"}
            # many pings, answered in order
            for i in range(50):
                await ws.send(json.dumps({"type": "ping", "ts": i}))
            for i in range(50):
                assert (await recv_json(ws))["timestamp"] == i
    run(go())


MALFORMED = [
    ("not json", "message is not valid JSON"),
    ("", "message is not valid JSON"),
    ("{", "message is not valid JSON"),
    ('{"type":"ping"} extra', "message is not valid JSON"),
    ("{'type':'ping'}", "message is not valid JSON"),
    ('{"type":"ping",}', "message is not valid JSON"),
    ("NaN", "message is not valid JSON"),
    ('{"type":"ping","ts":NaN}', "message is not valid JSON"),
    ('{"type":"ping","ts":[1,{"a":-Infinity}]}', "message is not valid JSON"),
    ('{"type":"ping","ts":Infinity}', "message is not valid JSON"),
    ("5", "message must be a JSON object"),
    ('"ping"', "message must be a JSON object"),
    ('[{"type":"ping"}]', "message must be a JSON object"),
    ("null", "message must be a JSON object"),
    ("{}", "message needs a string member type"),
    ('{"type":1}', "message needs a string member type"),
    ('{"type":null,"ts":1}', "message needs a string member type"),
    ('{"type":"pong"}', "unknown message type (only ping is understood)"),
    ('{"type":"PING"}', "unknown message type (only ping is understood)"),
    ('{"type":"subscribe","project_id":"x"}',
     "unknown message type (only ping is understood)"),
    ("[" * 200 + "]" * 200, "message is not valid JSON"),
    ('{"type":"ping","ts":"a\u0000b"}', "message is not valid JSON"),
    ('{"type":"ping","ts":"a\\u0000b"}', None),   # an escaped NUL is fine
    ('{"type":"ping"}\u0000', "message is not valid JSON"),
]


def test_malformed_messages_keep_the_connection(eventd):
    d = eventd()

    async def go():
        async with connect(d.url) as ws:
            await recv_text(ws)
            for text, detail in MALFORMED:
                await ws.send(text)
                msg = await recv_json(ws)
                if detail is None:
                    assert msg["type"] == "system.pong"
                    continue
                assert msg == {"type": "system.error", "detail": detail}, text
            # a binary frame is not a JSON text message
            await ws.send(b'{"type":"ping","ts":1}')
            assert await recv_json(ws) == {
                "type": "system.error",
                "detail": "messages must be JSON text frames"}
            # still open and answering
            await ws.send('{"type":"ping","ts":"still here"}')
            assert await recv_json(ws) == {"type": "system.pong",
                                           "timestamp": "still here"}
    run(go())


def test_fragmented_message_is_one_message(eventd):
    d = eventd()

    async def go():
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.send(iter(['{"type":', '"ping",', '"ts":', '"frag"}']))
            assert await recv_json(ws) == {"type": "system.pong",
                                           "timestamp": "frag"}
    run(go())


def test_oversized_message_closes_1009(eventd):
    d = eventd("--max-message", "1024")
    pad = 1024 - len('{"type":"ping","ts":""}')

    async def go():
        # exactly the limit is fine
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.send('{"type":"ping","ts":"%s"}' % ("x" * pad))
            assert (await recv_json(ws))["timestamp"] == "x" * pad
        # one byte more in one frame: 1009
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.send('{"type":"ping","ts":"%s"}' % ("x" * (pad + 1)))
            code, reason, got = await closed_with(ws)
            assert code == 1009 and got == []
        # a huge frame is refused from its header, not read to the end
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.send("y" * (8 << 20))
            code, _, _ = await closed_with(ws)
            assert code == 1009
        # too big over several fragments, each of them small
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.send(iter(["z" * 400] * 3))
            code, _, _ = await closed_with(ws)
            assert code == 1009
    run(go())


def test_invalid_utf8_closes_1007(eventd):
    d = eventd()

    async def go():
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.write_frame(True, 0x1, b'{"type":"ping","ts":"\xff\xfe"}')
            code, _, _ = await closed_with(ws)
            assert code == 1007
        # split across fragments: still caught
        async with connect(d.url) as ws:
            await recv_text(ws)
            await ws.write_frame(False, 0x1, b'{"ts":"\xe2\x82')
            await ws.write_frame(True, 0x0, b'"}')
            code, _, _ = await closed_with(ws)
            assert code == 1007
        # valid multibyte text split across fragments is fine
        async with connect(d.url) as ws:
            await recv_text(ws)
            data = '{"type":"ping","ts":"\u20ac"}'.encode()
            await ws.write_frame(False, 0x1, data[:22])
            await ws.write_frame(True, 0x0, data[22:])
            assert (await recv_json(ws))["timestamp"] == "\u20ac"
    run(go())


@pytest.mark.parametrize("since", ["abc", "-1", "1.5", "+3", "0x10",
                                   "99999999999999999999", "1%202"])
def test_invalid_since_is_an_error_then_1008(eventd, since):
    d = eventd()

    async def go():
        async with connect(f"{d.url}?since={since}") as ws:
            assert await recv_text(ws) == CONNECTED
            assert await recv_json(ws) == {
                "type": "system.error",
                "detail": "since must be a non-negative integer"}
            code, reason, got = await closed_with(ws)
            assert (code, reason, got) == (1008, "invalid query", [])
    run(go())


def test_plain_http_is_refused(eventd):
    import http.client
    d = eventd()
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    c.request("GET", "/ws")
    r = c.getresponse()
    assert r.status == 400
    r.read()
    c.close()
