"""The write-ahead log: commits leave it to grow to its bound, then the
committing connection copies it back into the database file (store.c,
wal_committed)."""
import os
from pathlib import Path

import pytest

from conftest import finish_server, start_server
from httpd import module_path
from support import Api

pytestmark = pytest.mark.skipif(not os.path.isfile(module_path()),
                                reason="module not built")

# store.c: TLLM_CHECKPOINT_MIN_PAGES, the bound of a small database's WAL.
MIN_PAGES = 1000
WAL_HEADER, FRAME_HEADER = 32, 24


def page_size(db):
    """From the database file's header (big-endian at offset 16)."""
    with open(db, "rb") as f:
        head = f.read(18)
    return int.from_bytes(head[16:18], "big")


def test_wal_is_checkpointed_once_it_holds_its_bound():
    """Nothing reaches the database file until about 1,000 pages are in
    the WAL; then a checkpoint copies them back, and every trace is still
    there. Fails if the hook never checkpoints (the file would not grow)
    or checkpoints long before the bound."""
    srv = start_server("wal")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        db = Path(srv.data_dir) / "tracellm.db"
        wal = db.with_name(db.name + "-wal")
        frame = page_size(db) + FRAME_HEADER
        assert frame - FRAME_HEADER == 16384
        start = db.stat().st_size
        sent = 0
        wal_bytes = 0
        for batch in range(200):
            r = api.post("/traces", headers={"X-API-Key": key}, json=[
                {"prompt": "p%d-%d " % (batch, i) + "x" * 1500,
                 "latency": 100 + i, "token_count": i} for i in range(100)])
            assert r.status_code == 200, r.text
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
