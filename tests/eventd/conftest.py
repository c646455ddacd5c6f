"""Fixtures for tracellm-eventd run on its own, without httpd.

- eventd: a factory; eventd(**options) starts the daemon on a free loopback
  port with a fresh database and wake socket in tmp_path, and returns an
  Eventd. Every daemon started is stopped at the end of the test and its
  stderr checked: lines other than the expected ones fail the test.

The binary comes from $TLLM_EVENTD, else <repo>/tracellm-eventd (built by
make). Tests need /usr/bin/python3 with python3-websockets (10.x) and
python3-pytest from Debian.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

from eventd_support import Store

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BINARY = os.environ.get("TLLM_EVENTD", os.path.join(TOP, "tracellm-eventd"))

# stderr lines a normal run writes (regexes, after "tracellm-eventd: ").
EXPECTED_LOG = [
    r"^listening on \S+ port \d+ from seq \d+; wake socket \S+$",
    r"^stopped$",
]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Poll predicate until it is true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Eventd:
    """One daemon process and its database."""

    def __init__(self, tmp_path, name, extra_args=(), allowed_log=()):
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.db_path = str(self.dir / "tracellm.db")
        self.wake_path = str(self.dir / "eventd.sock")
        self.stderr_path = str(self.dir / "stderr.log")
        self.port = free_port()
        self.args = [BINARY, "--db", self.db_path,
                     "--listen", f"127.0.0.1:{self.port}",
                     "--wake", self.wake_path] + list(extra_args)
        self.allowed_log = list(EXPECTED_LOG) + list(allowed_log)
        self.proc = None
        self._store = None

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, wait=True):
        if self.proc is not None:
            self.stderr.close()
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr, stderr=self.stderr)
        if wait:
            ok = wait_for(lambda: self.proc.poll() is not None
                          or (os.path.exists(self.wake_path)
                              and port_open(self.port)))
            if not ok or self.proc.poll() is not None:
                raise AssertionError(f"eventd did not start:\n{self.log()}")
        return self

    @property
    def store(self):
        if self._store is None:
            self._store = Store(self.db_path, self.wake_path)
        return self._store

    def log(self):
        try:
            with open(self.stderr_path, encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_lines(self):
        prefix = "tracellm-eventd: "
        out = []
        for line in self.log().splitlines():
            assert line.startswith(prefix), f"unprefixed stderr: {line!r}"
            out.append(line[len(prefix):])
        return out

    def unexpected_log(self):
        import re
        pats = [re.compile(p) for p in self.allowed_log]
        return [line for line in self.log_lines()
                if not any(p.search(line) for p in pats)]

    def terminate(self, timeout=10):
        """SIGTERM; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def close(self):
        if self._store is not None:
            self._store.close()
        if self.proc is not None and self.proc.poll() is None:
            self.terminate()
        if self.proc is not None:
            self.stderr.close()


@pytest.fixture
def eventd(tmp_path):
    if not os.access(BINARY, os.X_OK):
        pytest.exit(f"tracellm-eventd not built: {BINARY} (run make, or "
                    "set TLLM_EVENTD)", returncode=2)
    started = []

    def start(*extra_args, allowed_log=(), wait=True):
        d = Eventd(tmp_path, f"eventd{len(started)}", extra_args,
                   allowed_log)
        started.append(d)
        return d.start(wait=wait)

    yield start
    problems = []
    for d in started:
        d.close()
        bad = d.unexpected_log()
        if bad:
            problems.append(f"{d.stderr_path}:\n" + "\n".join(bad))
    if problems:
        raise AssertionError("unexpected stderr lines:\n"
                             + "\n".join(problems))
