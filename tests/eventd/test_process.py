"""The process: startup checks, the wake socket, signals, and never
outliving its parent."""
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from conftest import BINARY, free_port, port_open, wait_for
from eventd_support import (closed_with, event_text, events, open_client,
                            recv_json, run)


def test_wake_socket_is_owner_only(eventd):
    d = eventd()
    st = os.lstat(d.wake_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_sigterm_closes_clients_and_cleans_up(eventd):
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        d.proc.send_signal(signal.SIGTERM)
        code, reason, _ = await closed_with(ws)
        assert (code, reason) == (1001, "server shutting down")
    run(go())
    assert d.proc.wait(10) == 0
    assert not os.path.exists(d.wake_path)
    assert d.log_lines()[-1] == "stopped"


def test_sigint_exits_cleanly(eventd):
    d = eventd()
    d.proc.send_signal(signal.SIGINT)
    assert d.proc.wait(10) == 0
    assert not os.path.exists(d.wake_path)


def test_sigterm_with_many_clients(eventd):
    d = eventd()

    async def go():
        clients = [await open_client(d.url) for _ in range(50)]
        d.proc.send_signal(signal.SIGTERM)
        for ws in clients:
            code, _, _ = await closed_with(ws)
            assert code == 1001
    run(go())
    assert d.proc.wait(10) == 0


def test_exits_when_its_parent_is_gone(tmp_path):
    # A middle process starts the daemon and is then killed: the daemon
    # must not be left running as an orphan.
    port = free_port()
    wake = str(tmp_path / "w.sock")
    middle = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "p = subprocess.Popen(sys.argv[1:])\n"
         "print(p.pid, flush=True)\n"
         "time.sleep(600)\n",
         BINARY, "--db", str(tmp_path / "t.db"),
         "--listen", f"127.0.0.1:{port}", "--wake", wake],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        pid = int(middle.stdout.readline())
        assert wait_for(lambda: port_open(port) and os.path.exists(wake))
        middle.kill()
        middle.wait()

        def gone():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a zombie waiting for init counts as gone
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")
        assert wait_for(gone, timeout=5)
        assert wait_for(lambda: not port_open(port), timeout=5)
        assert not os.path.exists(wake)
    finally:
        if middle.poll() is None:
            middle.kill()
        middle.stdout.close()


def test_stale_wake_socket_is_replaced(eventd, tmp_path):
    d = eventd()
    d.terminate()
    # leave a socket behind, as a crash would
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(d.wake_path)
    s.close()
    assert os.path.exists(d.wake_path)
    d.start()
    rows = d.store.add(1)

    async def go():
        ws = await open_client(f"{d.url}?since=0")
        assert [t for _, t in await events(ws, 1)] == [event_text(*rows[0])]
        await ws.close()
    run(go())


def run_bad(args, timeout=10):
    p = subprocess.run([BINARY] + args, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stderr


def test_refuses_a_non_socket_at_the_wake_path(tmp_path):
    wake = tmp_path / "not-a-socket"
    wake.write_text("keep me")
    rc, err = run_bad(["--db", str(tmp_path / "t.db"), "--listen",
                       f"127.0.0.1:{free_port()}", "--wake", str(wake)])
    assert rc == 1
    assert "exists and is not a socket" in err
    assert wake.read_text() == "keep me"


def test_refuses_a_port_in_use(eventd, tmp_path):
    d = eventd()
    rc, err = run_bad(["--db", str(tmp_path / "t.db"), "--listen",
                       f"127.0.0.1:{d.port}", "--wake", d.wake_path])
    assert rc == 1
    assert "cannot listen on 127.0.0.1 port" in err
    # the running copy keeps its wake socket
    assert os.path.exists(d.wake_path)


@pytest.mark.parametrize("listen", ["0.0.0.0:8001", "10.1.2.3:8001",
                                    "example.com:8001", "127.0.0.1",
                                    "127.0.0.1:0", "127.0.0.1:70000",
                                    "127.0.0.1:x"])
def test_refuses_a_bad_listen_address(tmp_path, listen):
    rc, err = run_bad(["--db", str(tmp_path / "t.db"), "--listen", listen,
                       "--wake", str(tmp_path / "w.sock")])
    assert rc == 1
    assert err.startswith("tracellm-eventd: --listen")
    assert not os.path.exists(tmp_path / "w.sock")


@pytest.mark.parametrize("listen", ["localhost", "[::1]", "127.0.0.2"])
def test_other_loopback_addresses(tmp_path, listen):
    if listen == "[::1]" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port()
    p = subprocess.Popen([BINARY, "--db", str(tmp_path / "t.db"),
                          "--listen", f"{listen}:{port}",
                          "--wake", str(tmp_path / "w.sock")],
                         stderr=subprocess.PIPE, text=True)
    try:
        host = {"localhost": "127.0.0.1", "[::1]": "::1"}.get(listen, listen)

        def up():
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return True
            except OSError:
                return False
        if not wait_for(lambda: up() or p.poll() is not None):
            pytest.fail("not listening")
        if p.poll() is not None and listen == "[::1]":
            pytest.skip("IPv6 loopback unavailable: " + p.stderr.read())
        assert p.poll() is None
    finally:
        p.terminate()
        assert p.wait(10) == 0


@pytest.mark.parametrize("args", [
    [], ["--db"], ["--listen", "127.0.0.1:1"], ["--bogus"],
    ["--db", "x", "--listen", "127.0.0.1:1", "--wake", "w", "extra"],
])
def test_usage(args):
    rc, err = run_bad(args)
    assert rc == 2
    assert "usage: tracellm-eventd" in err


@pytest.mark.parametrize("opt,value", [
    ("--poll-ms", "0"), ("--poll-ms", "x"), ("--queue", "0"),
    ("--queue", "-5"), ("--max-message", "10"), ("--max-message", "1k"),
])
def test_refuses_bad_numbers(tmp_path, opt, value):
    rc, err = run_bad(["--db", str(tmp_path / "t.db"), "--listen",
                       f"127.0.0.1:{free_port()}", "--wake",
                       str(tmp_path / "w.sock"), opt, value])
    assert rc == 1
    assert f"tracellm-eventd: {opt} must be a whole number" in err


def test_refuses_an_unusable_database(tmp_path):
    rc, err = run_bad(["--db", str(tmp_path / "no" / "such" / "t.db"),
                       "--listen", f"127.0.0.1:{free_port()}", "--wake",
                       str(tmp_path / "w.sock")])
    assert rc == 1
    assert err.startswith("tracellm-eventd: cannot open")
    assert not os.path.exists(tmp_path / "w.sock")


def test_migrates_a_new_database(eventd):
    import sqlite3
    d = eventd()
    db = sqlite3.connect(d.db_path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_many_datagrams_do_not_hold_the_loop(eventd):
    d = eventd()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setblocking(False)
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        try:
            s.sendto(b"1", d.wake_path)
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
    s.close()
    assert sent > 0

    async def go():
        ws = await open_client(d.url)
        await ws.send('{"type":"ping","ts":1}')
        assert (await recv_json(ws))["type"] == "system.pong"
        await ws.close()
    run(go())


def test_kill9_then_a_new_copy_serves_the_same_port(eventd):
    # What httpd does when its event process dies: start another at once.
    d = eventd()

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(2)
        got = await events(ws, 2)
        d.proc.kill()
        d.proc.wait()
        code, _, _ = await closed_with(ws)
        assert code == 1006                 # no close frame: it was killed
        assert os.path.exists(d.wake_path)  # left behind
        missed = d.store.add(3, wake=False)
        t0 = time.monotonic()
        d.start()
        assert time.monotonic() - t0 < 2
        ws = await open_client(f"{d.url}?since={got[-1][0]}")
        assert [t for _, t in await events(ws, 3)] == \
            [event_text(*r) for r in missed]
        more = d.store.add(1)
        assert [t for _, t in await events(ws, 1)] == [event_text(*more[0])]
        assert rows[-1][0] == got[-1][0]
        await ws.close()
    run(go())


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1])
def test_httpd_restart_signals_are_ignored(eventd, sig):
    # httpd sends these to its whole process group when it restarts.
    d = eventd()
    d.proc.send_signal(sig)
    time.sleep(0.3)
    assert d.proc.poll() is None

    async def go():
        ws = await open_client(d.url)
        rows = d.store.add(1)
        assert [t for _, t in await events(ws, 1)] == [event_text(*rows[0])]
        await ws.close()
    run(go())
