"""Many clients at once: every ingest stored exactly once, counts exact."""
import concurrent.futures as cf
import json
import re

import requests

from conftest import finish_server, start_server
from support import Api, uid


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


def test_group_commit_answers_each_request_with_its_own_result():
    """Concurrent POSTs of one child share write transactions
    (group_commit.c): each still gets its own answer - 201, 409 for a
    trace_id of another project, 422 - and exactly the acknowledged traces
    are stored."""
    srv = start_server("group", extra_conf="LogLevel warn tracellm:debug")
    try:
        api = Api(srv.base)
        pid, key = api.project()
        other_pid, other_key = api.project()
        taken = "taken-" + uid()
        status, text = _ingest(srv.base, other_key, {"trace_id": taken})
        assert status == 201, text
        payloads = []
        for i in range(240):
            if i % 40 == 7:
                payloads.append(("conflict", {"trace_id": taken}))
            elif i % 40 == 13:
                payloads.append(("invalid", {"latency": -1}))
            elif i % 40 == 21:
                payloads.append(("batch", [{"trace_id": f"gb-{i}-{k}-{uid()}",
                                            "token_count": 2}
                                           for k in range(5)]
                                 + [{"trace_id": taken}]))
            else:
                payloads.append(("one", {"trace_id": f"g-{i}-{uid()}",
                                         "token_count": 1, "latency": i}))
        with cf.ThreadPoolExecutor(48) as ex:
            futs = [(kind, body, ex.submit(_ingest, srv.base, key, body))
                    for kind, body in payloads]
        stored = set()
        for kind, body, fut in futs:
            status, text = fut.result()
            if kind == "one":
                assert status == 201, text
                assert json.loads(text)["trace_id"] == body["trace_id"]
                stored.add(body["trace_id"])
            elif kind == "conflict":
                assert status == 409, text
                assert taken in json.loads(text)["detail"]
            elif kind == "invalid":
                assert status == 422, text
            else:
                assert status == 200, text
                out = json.loads(text)
                assert out["accepted"] == 5
                assert out["trace_ids"] == [t["trace_id"] for t in body[:5]]
                assert [r["status"] for r in out["rejected"]] == [409]
                stored.update(out["trace_ids"])
        listed = api.traces(project_id=pid, limit=200)
        assert listed["total"] == len(stored) == 222 + 6 * 5
        s = api.get("/analytics", params={"project_id": pid}).json()
        assert s["summary"]["total_traces"] == len(stored)
        assert s["summary"]["total_token_usage"] == 222 + 6 * 5 * 2
        other = api.get("/analytics", params={"project_id": other_pid}).json()
        assert other["summary"]["total_traces"] == 1
        groups = [int(m) for m in re.findall(
            r"TLLM0015: committed (\d+) request", srv.error_log_text())]
        assert groups and max(groups) > 1, groups[:20]
        # Every request that reached the store, once: the first trace, the
        # singles, the conflicts and the batches (the 422s never did).
        assert sum(groups) == 1 + 222 + 6 + 6
    finally:
        finish_server(srv, allowed=[r"TLLM0015: committed"])
