"""Every trace acknowledged with a 2xx survives the death of every httpd
process in the middle of ingest (SIGKILL: no shutdown, no flush, whatever
the WAL buffer, wal_buffer.c, still held), and the database is whole."""
import json
import os
import signal
import sqlite3
import threading
import time
import uuid

import requests

from conftest import finish_server
from httpd import TllmServer, new_data_dir

LOADERS = 4
BATCH = 50
LOAD_SECONDS = 3.0


def processes_of(data_dir):
    """Pids of the processes whose command line names data_dir: httpd's
    parent and children (-f DIR/httpd.conf) and the event process."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if data_dir in cmd:
            pids.append(int(name))
    return pids


def load(base, key, acked, errors, stop):
    """Batches until stop is set; the ids of every 200 go into acked."""
    s = requests.Session()
    headers = {"Authorization": f"Bearer {key}",
               "Content-Type": "application/json"}
    while not stop.is_set():
        batch = [{"trace_id": str(uuid.uuid4()),
                  "prompt": "p" * 1500, "response": "r" * 500,
                  "latency": 100.0 + i, "model_name": "gpt-4o",
                  "token_count": 10 + i} for i in range(BATCH)]
        try:
            r = s.post(base + "/traces", data=json.dumps(batch),
                       headers=headers, timeout=10)
        except requests.RequestException:
            return              # the server is gone
        if r.status_code != 200:
            errors.append(f"{r.status_code} {r.text[:200]}")
            return
        body = r.json()
        if body["accepted"] != BATCH or body["rejected"]:
            errors.append(repr(body)[:200])
            return
        acked.extend(t["trace_id"] for t in batch)


def test_acknowledged_traces_survive_sigkill():
    import conftest
    conftest._require_module()
    d = new_data_dir("crash")
    srv = TllmServer(d)
    srv.start()
    made = requests.post(srv.base + "/projects",
                         params={"name": "Crash Me", "environment": "x"})
    key = made.json()["api_key"]["key"]
    acked, errors, stop = [], [], threading.Event()
    loaders = [threading.Thread(target=load,
                                args=(srv.base, key, acked, errors, stop))
               for _ in range(LOADERS)]
    for t in loaders:
        t.start()
    time.sleep(LOAD_SECONDS)
    # Every process at once, while batches are being committed.
    pids = processes_of(srv.data_dir)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    stop.set()
    for t in loaders:
        t.join(timeout=30)
    assert not errors, errors[:3]
    assert len(acked) >= 10 * BATCH, "too little was ingested to test"
    deadline = time.time() + 10
    while processes_of(srv.data_dir) and time.time() < deadline:
        time.sleep(0.05)
    os.unlink(srv.pid_file)

    # SQLite's own VFS, as any other reader: it rebuilds the WAL's index
    # from the file if it must.
    db = sqlite3.connect(os.path.join(srv.data_dir, "tracellm.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in db.execute("SELECT trace_id FROM traces")}
    finally:
        db.close()
    lost = set(acked) - stored
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged traces lost"

    # And the server starts on it, with rollups that count every row.
    srv2 = TllmServer(srv.data_dir)
    srv2.start()
    try:
        total = requests.get(srv2.base + "/analytics").json()
        assert total["summary"]["total_traces"] == len(stored)
    finally:
        finish_server(srv2, allowed=[r"AH00098", r"Unclean shutdown"])
