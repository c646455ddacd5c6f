"""Many clients at once: every ingest stored exactly once, counts exact."""
import concurrent.futures as cf
import json

import requests

from support import uid


def _ingest(base, key, payload):
    r = requests.post(base + "/traces", data=json.dumps(payload), timeout=60,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json"})
    return r.status_code, r.text


def test_parallel_ingest_and_reads(server, api):
    pid, key = api.project()
    singles = [{"trace_id": f"par-{i}-{uid()}", "latency": i, "token_count": 1}
               for i in range(160)]
    batches = [[{"token_count": 2} for _ in range(20)] for _ in range(8)]
    with cf.ThreadPoolExecutor(32) as ex:
        futs = [ex.submit(_ingest, server.base, key, t) for t in singles]
        futs += [ex.submit(_ingest, server.base, key, b) for b in batches]
        reads = [ex.submit(requests.get, server.base + "/analytics",
                           params={"project_id": pid}, timeout=60)
                 for _ in range(20)]
        for f in futs:
            status, text = f.result()
            assert status in (200, 201), text
        for f in reads:
            assert f.result().status_code == 200
    body = api.traces(project_id=pid, limit=200)
    assert body["total"] == 160 + 160
    s = api.get("/analytics", params={"project_id": pid}).json()["summary"]
    assert s["total_traces"] == 320
    assert s["total_token_usage"] == 160 * 1 + 160 * 2


def test_parallel_resend_same_trace(server, api):
    pid, key = api.project()
    tid = "same-" + uid()
    with cf.ThreadPoolExecutor(16) as ex:
        futs = [ex.submit(_ingest, server.base, key,
                          {"trace_id": tid, "token_count": 7, "latency": 10})
                for _ in range(48)]
        for f in futs:
            status, text = f.result()
            assert status == 201, text
    assert api.traces(project_id=pid)["total"] == 1
    s = api.get("/analytics", params={"project_id": pid}).json()["summary"]
    assert s["total_traces"] == 1 and s["total_token_usage"] == 7
    assert api.get("/failures", params={"project_id": pid}).json()["totals"] == {
        "failed_traces": 0, "retries": 0, "slow_requests": 0}
