"""The write-ahead log: commits leave it to grow to its bound, then the
committing connection copies it back into the database file (store.c,
wal_committed)."""
import base64
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import finish_server, start_server
from httpd import module_path
from support import Api

pytestmark = pytest.mark.skipif(not os.path.isfile(module_path()),
                                reason="module not built")

# store.c: TLLM_CHECKPOINT_MIN_PAGES, the bound of a small database's WAL;
# the bound is a quarter of the database (TLLM_CHECKPOINT_DB_FRACTION) in
# pages, of 8 KiB in a new database (TLLM_PAGE_SIZE), so it grows from
# 125 MiB of database on.
MIN_PAGES = 4000
PAGE_BYTES = 8192
LARGE_DB_BYTES = MIN_PAGES * 4 * PAGE_BYTES
WAL_HEADER, FRAME_HEADER = 32, 24


def page_size(db):
    """From the database file's header (big-endian at offset 16)."""
    with open(db, "rb") as f:
        head = f.read(18)
    return int.from_bytes(head[16:18], "big")


def wal_files(srv):
    """The database file, its WAL, and the bytes of one WAL frame."""
    db = Path(srv.data_dir) / "tracellm.db"
    return db, db.with_name(db.name + "-wal"), page_size(db) + FRAME_HEADER


def filler(n):
    """n characters that do not compress: the store packs bodies (LZ4,
    trace_body.h), and the WAL must grow by what a batch sends."""
    return base64.b64encode(os.urandom(n * 3 // 4 + 3)).decode()[:n]


def post_batch(api, key, tag, prompt_bytes):
    """Ingest 100 traces whose prompts hold prompt_bytes of filler."""
    r = api.post("/traces", headers={"X-API-Key": key}, json=[
        {"prompt": "%s-%d " % (tag, i) + filler(prompt_bytes),
         "latency": 100 + i, "token_count": i} for i in range(100)])
    assert r.status_code == 200, r.text


def test_wal_is_checkpointed_once_it_holds_its_bound():
    """Nothing reaches the database file until about 4,000 pages are in
    the WAL; then a checkpoint copies them back, and every trace is still
    there. Fails if the hook never checkpoints (the file would not grow)
    or checkpoints long before the bound."""
    srv = start_server("wal")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        db, wal, frame = wal_files(srv)
        assert frame - FRAME_HEADER == PAGE_BYTES
        start = db.stat().st_size
        sent = 0
        wal_bytes = 0
        for batch in range(800):
            post_batch(api, key, "p%d" % batch, 1500)
            sent += 100
            if db.stat().st_size > start:
                break
            wal_bytes = wal.stat().st_size
        else:
            pytest.fail("no checkpoint after %d traces; WAL %d bytes"
                        % (sent, wal_bytes))
        # Before the checkpoint the WAL held at least the bound.
        assert wal_bytes >= WAL_HEADER + (MIN_PAGES - 200) * frame, wal_bytes
        assert api.traces(project_id=pid)["total"] == sent
    finally:
        finish_server(srv)


def test_large_database_copies_the_wal_back_outside_the_write_lock():
    """Above 125 MiB of database, the WAL's bound grows with it, and from
    half the bound on a writer copies the WAL back after it has let go of
    the write lock (TLLM0020), so the checkpoint under the lock has little
    left. Fails if that never happens, or happens for a small database."""
    srv = start_server("wal-large",
                       extra_conf="LogLevel tracellm:debug\n")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        db = Path(srv.data_dir) / "tracellm.db"
        sent = 0
        small = True
        for batch in range(400):
            post_batch(api, key, "p%d" % batch, 8000)
            sent += 100
            log = srv.error_log_text()
            if "TLLM0020" in log:
                break
            small = db.stat().st_size <= LARGE_DB_BYTES
        else:
            pytest.fail("no early checkpoint after %d traces (%d bytes)"
                        % (sent, db.stat().st_size))
        # Before this batch the database was past 125 MiB: the early copy
        # is for large databases only.
        assert not small
        copied = [(int(c), int(w)) for c, w in re.findall(
            r"TLLM0020: WAL copied back outside the write lock: "
            r"(\d+) of (\d+) pages", log)]
        assert copied and all(0 < c <= w for c, w in copied), copied
        assert api.traces(project_id=pid)["total"] == sent
    finally:
        finish_server(srv, allowed=[r"TLLM00(15|20)"])


class SteadyReaders:
    """Two connections that take turns holding a read transaction on the
    database file, so at any moment one of them reads a snapshot from
    before the last commit: a dashboard's steady reads, made certain."""

    def __init__(self, db, hold=0.03):
        self.db, self.hold = db, hold
        self.stop = threading.Event()
        self.reads = 0
        self.threads = [threading.Thread(target=self._read, args=(i,))
                        for i in range(2)]

    def _read(self, i):
        con = sqlite3.connect(str(self.db), timeout=10,
                              isolation_level=None)
        time.sleep(i * self.hold / 2)
        while not self.stop.is_set():
            con.execute("BEGIN")
            con.execute("SELECT count(*) FROM projects").fetchone()
            time.sleep(self.hold)
            con.execute("COMMIT")
            self.reads += 1
        con.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def test_wal_starts_over_beside_readers_that_never_pause():
    """Readers that overlap without a gap must not keep the WAL from
    starting over. A passive checkpoint copies only the frames no reader
    still needs, and the WAL starts over only once all of it is copied:
    with a reader always in the middle of a snapshot, it grew without end
    (7.5 GB after soaks beside a 10 GB database). After three bounds' worth of
    pages have been copied into the database, the WAL file must be under
    one and a half bounds; every trace is still there. And no restart may
    have timed out: one attempt used to wait its whole 500 ms on a read
    slot that a reader had already moved to the WAL's end (store.c,
    TLLM_CHECKPOINT_ATTEMPT_MS), 1 to 7 times a run here, and the WAL
    went past its bound meanwhile (once over one and a half bounds in CI)."""
    srv = start_server("wal-readers", extra_conf="LogLevel tracellm:debug\n")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        db, wal, frame = wal_files(srv)
        bound_bytes = WAL_HEADER + MIN_PAGES * frame
        start = db.stat().st_size
        sent = 0
        with SteadyReaders(db) as readers:
            for batch in range(2500):
                post_batch(api, key, "r%d" % batch, 1500)
                sent += 100
                if db.stat().st_size - start > 3 * MIN_PAGES * frame:
                    break
            else:
                pytest.fail("the database grew by only %d bytes"
                            % (db.stat().st_size - start))
        assert readers.reads > 10
        restarts = re.findall(r"TLLM0025: .*", srv.error_log_text())
        assert restarts
        assert [r for r in restarts if "still read" in r] == []
        assert wal.stat().st_size < 1.5 * bound_bytes, (
            wal.stat().st_size, bound_bytes)
        assert api.traces(project_id=pid)["total"] == sent
    finally:
        finish_server(srv)


def test_requests_are_held_back_while_the_wal_starts_over():
    """In a child where a dozen requests read at once, every read slot of
    the WAL stays held without a gap, so the checkpoint at the bound holds
    new requests back until the readers already in have finished
    (wal_drain.c). Here a reader outside httpd keeps its snapshot past the
    checkpoint's deadline while requests keep coming: the checkpoint must
    report that it held requests back and that the WAL is still read. Once
    that reader lets go, a later checkpoint starts the WAL over. Fails if
    requests are not held back, or the WAL never starts over."""
    srv = start_server("wal-drain", extra_conf="LogLevel tracellm:debug\n")
    stop = threading.Event()

    def request_steadily():
        session = requests.Session()
        while not stop.is_set():
            assert session.get(srv.base + "/traces?limit=1").status_code \
                == 200

    def post_until(api, key, pattern):
        for batch in range(900):
            post_batch(api, key, "d%d" % batch, 1500)
            found = re.findall(pattern, srv.error_log_text())
            if found:
                return found, 100 * (batch + 1)
        pytest.fail("no %r in the log" % pattern)

    try:
        api = Api(srv.base)
        pid, key = api.project()
        db = wal_files(srv)[0]
        requesters = [threading.Thread(target=request_steadily)
                      for _ in range(4)]
        for t in requesters:
            t.start()
        try:
            reader = sqlite3.connect(str(db), isolation_level=None)
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM projects").fetchone()
            held, sent = post_until(api, key, r"TLLM0025: WAL at its bound "
                                    r"\(\d+ pages\) still read, not started "
                                    r"over after \d+ ms; (\d+) request")
            reader.execute("COMMIT")
            reader.close()
            over, more = post_until(api, key, r"TLLM0025: WAL at its bound "
                                    r"\(\d+ pages\) started over")
        finally:
            stop.set()
            for t in requesters:
                t.join()
        assert int(held[0]) > 0, held
        assert api.traces(project_id=pid)["total"] == sent + more
    finally:
        finish_server(srv)
