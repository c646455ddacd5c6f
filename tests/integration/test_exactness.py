"""Exactness: every figure GET /analytics, GET /failures and GET /traces
report equals a full recomputation, in Python, from the server's SQLite
database file itself -- and that file holds exactly what the test sent.

A private server gets ~3000 traces from three projects (seeded, so every
run sends the same latencies): explicit and inferred statuses, latencies
made to stress the p95's latency histogram (lognormal values rounded to 2
decimals, many exact duplicates, 0, tiny values, exact powers of two and
the doubles just below and above them, a few huge ones), tokens, retries,
explicit and inferred slow flags, created_at over the last 30 hours with
many shared instants (so the seq tie-break decides the order). Then ~200
traces are re-sent with new values: each must count once, as re-sent.

The database file is read read-only (sqlite3, mode=ro) and every scope --
no filter, each project, each environment, each (project, environment)
pair, one that matches nothing -- is recomputed and compared.
"""
import datetime as dt
import math
import random
import sqlite3
from collections import Counter, namedtuple
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import finish_server, start_server
from support import Api, uid, utcnow

SEED = 20240531
ENVS = ("production", "staging", "dev")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5", "Llama-3", "mistral")
SLOW_MS = 1500.0                 # the default TraceLLMSlowThreshold
HOUR_US = 3600 * 10**6
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

up = lambda v: math.nextafter(v, math.inf)
down = lambda v: math.nextafter(v, 0.0)
POW2 = (512.0, 1024.0, 2048.0)
EDGES = tuple(v for p in POW2 for v in (down(p), p, up(p)))
DUPS = (100.0, 250.5, 42.42, 999.99, 1499.99, 1500.0)
TINY = (0.001, 0.002, 0.01)
HUGE = (1e6, 1e6 + 0.25, 2.0 ** 20)

# Deterministic small scopes of project C, made for the nearest rank:
# n = 40: index ceil(0.95 * 40) - 1 = 37, a lone 2048.0 between 512.0s
# (and the double below 512) and two huge ones.
EDGE40 = ([0.0] * 5 + [0.001] * 5 + [100.0] * 10 + [down(512.0)] * 8
          + [512.0] * 9 + [2048.0] + [1e6] * 2)
# n = 21: index ceil(0.95 * 21) - 1 = 19, the second largest: 2064.0, the
# very first double of its histogram bucket (2048 * (1 + 1/128)), with
# 2063.99 (the bucket below) under it and 2064.01 (its own bucket) above.
EDGE21 = ([float(i * 37 % 101) + 0.25 for i in range(17)]
          + [2063.98, 2063.99, 2064.0, 2064.01])

Row = namedtuple("Row", "seq trace_id project_id environment model_name "
                        "status latency token_count retry_count slow "
                        "created_at")
ROW_SQL = ("SELECT seq, trace_id, project_id, environment, model_name, "
           "status, latency, token_count, retry_count, slow, created_at "
           "FROM traces")


# ---- generating what is sent -------------------------------------------

def gen_latency(rng):
    r = rng.random()
    if r < 0.40:
        return round(rng.lognormvariate(5.0, 1.1), 2)
    if r < 0.55:
        return rng.choice(DUPS)
    if r < 0.60:
        return 0.0
    if r < 0.65:
        return rng.choice(TINY)
    if r < 0.85:
        return rng.choice(EDGES)
    if r < 0.99:
        return round(rng.lognormvariate(7.3, 0.45), 2)
    return rng.choice(HUGE)


def us_of(t):
    return (t - EPOCH) // dt.timedelta(microseconds=1)


def ts_of(us):
    """How the server prints the instant us (microseconds UTC)."""
    t = EPOCH + dt.timedelta(microseconds=us)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class Sender:
    """Makes trace payloads and remembers, per trace_id, what the server
    must store for it (the contract's normalization applied)."""

    def __init__(self, rng, now):
        self.rng = rng
        self.now = now
        self.expected = {}          # trace_id -> Row without seq
        # shared instants: many traces created at the very same microsecond
        self.pool = [now - dt.timedelta(microseconds=rng.randrange(
            30 * HOUR_US)) for _ in range(40)]

    def created(self):
        if self.rng.random() < 0.25:
            return self.rng.choice(self.pool)
        return self.now - dt.timedelta(
            microseconds=self.rng.randrange(1, 30 * HOUR_US))

    def payload(self, pid, key_env, envs, tid, latency=None, env=None,
                status=None, created=None):
        rng = self.rng
        p = {"trace_id": tid, "prompt": "q", "response": "a"}
        lat = gen_latency(rng) if latency is None else latency
        p["latency"] = lat
        r = rng.random()
        if r < 0.8:
            retry = 0
            p["retry_count"] = 0
        elif r < 0.9:
            retry = 0                           # inferred: no steps
        else:
            retry = rng.randint(1, 4)
            p["retry_count"] = retry
        if status is None and rng.random() < 0.15:
            status = "warning" if retry > 0 else "success"   # inferred
        else:
            status = status or rng.choices(
                ("success", "failed", "warning"), (70, 18, 12))[0]
            p["status"] = rng.choice((status, status.upper(),
                                      status.capitalize()))
        r = rng.random()
        if r < 0.1:
            tokens = 0                          # default
        elif r < 0.4:
            tokens = rng.choice((0, 128, 512, 1000, 4096))
            p["token_count"] = tokens
        else:
            tokens = rng.randint(0, 5000)
            p["token_count"] = tokens
        if rng.random() < 0.15:
            slow = rng.random() < 0.5
            p["slow_request"] = slow
        else:
            slow = lat >= SLOW_MS
        if env is None:
            if rng.random() < 0.25:
                env = key_env                   # the key's environment
            else:
                env = rng.choice(envs)
                p["environment"] = env
        else:
            p["environment"] = env
        r = rng.random()
        if r < 0.1:
            model = "unknown"
        elif r < 0.2:
            model = rng.choice(MODELS)
            p["model"] = model
        else:
            model = rng.choice(MODELS)
            p["model_name"] = model
        created = created or self.created()
        p["created_at"] = created.isoformat()   # ...+00:00
        self.expected[tid] = Row(None, tid, pid, env, model, status, lat,
                                 tokens, retry, int(slow), us_of(created))
        return p


def post_batch(api, key, traces):
    for i in range(0, len(traces), 1000):
        chunk = traces[i:i + 1000]
        body = api.batch_ok(key, chunk)
        assert body["trace_ids"] == [t["trace_id"] for t in chunk]


# ---- the data set --------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    srv = start_server("exact")
    try:
        api = Api(srv.base)
        rng = random.Random(SEED)
        send = Sender(rng, utcnow())
        projects = []                   # (pid, key, key_env, envs, size)
        for key_env, envs, n in (("production", ENVS, 1300),
                                 ("staging", ENVS, 1000),
                                 # C never uses dev: (C, dev) is empty
                                 ("production", ENVS[:2], 640)):
            body = api.create_project(name=f"Exact {uid()}",
                                      environment=key_env)
            projects.append((body["project"]["project_id"],
                             body["api_key"]["key"], key_env, envs, n))
        by_project = {}
        for pid, key, key_env, envs, n in projects:
            traces = [send.payload(pid, key_env, envs, f"x-{pid}-{i:05d}")
                      for i in range(n)]
            by_project[pid] = [t["trace_id"] for t in traces]
            post_batch(api, key, traces)
        # project C's deterministic small scopes
        pid_c, key_c, env_c, envs_c, _ = projects[2]
        edge = []
        for env, lats in (("edge-40", EDGE40), ("edge-21", EDGE21)):
            lats = list(lats)
            rng.shuffle(lats)
            edge += [send.payload(pid_c, env_c, envs_c,
                                  f"e-{env}-{i:03d}", latency=v, env=env)
                     for i, v in enumerate(lats)]
        post_batch(api, key_c, edge)

        # ~200 re-sends with a new latency, status and environment
        replaced = {}
        for pid, key, key_env, envs, n in projects:
            share = {0: 90, 1: 70, 2: 40}[len(replaced)]
            ids = rng.sample(by_project[pid], share)
            batch = []
            for tid in ids:
                old = send.expected[tid]
                lat = gen_latency(rng)
                while lat == old.latency:
                    lat = gen_latency(rng)
                status = rng.choice([s for s in ("success", "failed",
                                                 "warning")
                                     if s != old.status])
                env = rng.choice([e for e in envs if e != old.environment])
                created = (EPOCH + dt.timedelta(microseconds=old.created_at)
                           if rng.random() < 0.8 else None)
                batch.append(send.payload(pid, key_env, envs, tid,
                                          latency=lat, env=env,
                                          status=status, created=created))
            if len(replaced) == 0:
                # the same trace_id twice in one batch: the later one wins
                batch.insert(0, dict(batch[0], latency=31337.0,
                                     status="failed", slow_request=True))
            if len(replaced) == 1:
                # one re-sent alone (201), after the batch
                single = batch.pop()
                post_batch(api, key, batch)
                r = api.ingest(key, single)
                assert r.status_code == 201, r.text
                assert r.json()["latency"] == single["latency"]
            else:
                post_batch(api, key, batch)
            replaced[pid] = ids
        rows = read_rows(Path(srv.data_dir) / "tracellm.db")
        yield {"api": api, "projects": [p[0] for p in projects],
               "by_project": by_project, "replaced": replaced,
               "expected": send.expected, "rows": rows}
    finally:
        finish_server(srv)


def read_rows(path):
    assert path.is_file(), path
    con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        cols = [c[1] for c in con.execute("PRAGMA table_info(traces)")]
        assert set(Row._fields) <= set(cols), cols
        return [Row(*r) for r in con.execute(ROW_SQL)]
    finally:
        con.close()


# ---- recomputation -------------------------------------------------------

def scoped(rows, pid=None, env=None):
    return [r for r in rows if (pid is None or r.project_id == pid)
            and (env is None or r.environment == env)]


def newest_first(rows):
    return sorted(rows, key=lambda r: (r.created_at, r.seq), reverse=True)


def flagged(r):
    return not (r.status == "success" and r.slow == 0 and r.retry_count <= 0)


def p95_rounded(lats):
    s = sorted(lats)
    n = len(s)
    k = (95 * n + 99) // 100 - 1             # ceil(0.95 n) - 1, exactly
    return round(s[k], 2)


def breakdown(values):
    c = Counter(values)
    return [{"key": k, "count": v}
            for k, v in sorted(c.items(), key=lambda kv: (-kv[1],
                                                          kv[0].encode()))]


def expected_summary(rows):
    n = len(rows)
    if not n:
        return {"total_traces": 0, "success_rate": 0, "average_latency": 0,
                "p95_latency": 0, "total_token_usage": 0, "failed_traces": 0,
                "warning_traces": 0, "retries": 0, "slow_requests": 0}
    st = Counter(r.status for r in rows)
    return {
        "total_traces": n,
        # the exact rate's nearest double (100 s is exact), then rounded
        "success_rate": round(100 * st["success"] / n, 2),
        "average_latency": None,             # checked by check_mean
        "p95_latency": p95_rounded([r.latency for r in rows]),
        "total_token_usage": sum(r.token_count for r in rows),
        "failed_traces": st["failed"],
        "warning_traces": st["warning"],
        "retries": sum(r.retry_count for r in rows),
        "slow_requests": sum(r.slow for r in rows),
    }


def check_mean(got, lats, what):
    """got must be round(mean, 2) for the exact mean of lats. Only when the
    exact mean sits (within 1e-12, relative) on a tie of the second decimal
    does the rounding depend on the last bit of the float sum, which the
    contract does not fix: then either neighbour is accepted."""
    if not lats:
        assert got == 0, what
        return
    exact = sum(map(Fraction, lats), Fraction(0)) / len(lats)
    want = round(float(exact), 2)
    if got == want:
        return
    scaled = exact * 100
    lo = math.floor(scaled)
    tie = abs(scaled - lo - Fraction(1, 2)) <= abs(scaled) / 10**12
    assert tie and got in (round(lo / 100, 2), round((lo + 1) / 100, 2)), (
        f"{what}: average {got}, exact mean {float(exact)!r} -> {want} "
        f"(n={len(lats)})")


def check_item(item, row, what):
    """A listed trace is the database's row."""
    got = (item["trace_id"], item["project_id"], item["environment"],
           item["model_name"], item["status"], item["latency"],
           item["token_count"], item["retry_count"], item["slow_request"],
           item["created_at"])
    want = (row.trace_id, row.project_id, row.environment, row.model_name,
            row.status, row.latency, row.token_count, row.retry_count,
            bool(row.slow), ts_of(row.created_at))
    assert got == want, f"{what}: item {got} != row {want}"
    assert item["api_key"] is None


def ids(rows):
    return [r.trace_id for r in rows]


def scope_params(pid, env):
    p = {}
    if pid is not None:
        p["project_id"] = pid
    if env is not None:
        p["environment"] = env
    return p


# Scopes, symbolically (projects are 0, 1, 2 = A, B, C).
SCOPES = ([("all", None, None)]
          + [(f"project{i}", i, None) for i in range(3)]
          + [(f"env-{e}", None, e) for e in ENVS + ("edge-40", "edge-21")]
          + [(f"project{i}-{e}", i, e) for i in range(3) for e in ENVS]
          + [("project2-edge-40", 2, "edge-40"),
             ("project2-edge-21", 2, "edge-21"),
             ("nothing", "none", None), ("no-env", None, "nope")])


def resolve(world, p, e):
    if p == "none":
        return "no-such-project", e
    return (world["projects"][p] if p is not None else None), e


# ---- the file holds what was sent -----------------------------------------

def test_file_is_what_was_sent(world):
    rows, expected = world["rows"], world["expected"]
    got = {r.trace_id: r._replace(seq=None) for r in rows}
    assert len(got) == len(rows), "a trace_id stored twice"
    assert len(rows) == len(expected) > 2900
    diff = [(tid, expected[tid], got.get(tid)) for tid in expected
            if got.get(tid) != expected[tid]]
    assert not diff, f"{len(diff)} rows differ from what was sent: {diff[:5]}"
    # per project: every trace sent once, re-sends counted once
    per = Counter(r.project_id for r in rows)
    pa, pb, pc = world["projects"]
    assert per == {pa: 1300, pb: 1000, pc: 640 + 40 + 21}
    assert sum(len(v) for v in world["replaced"].values()) == 200
    # re-sent traces are the most recently ingested ones
    seq = {r.trace_id: r.seq for r in rows}
    resent = {t for v in world["replaced"].values() for t in v}
    assert min(seq[t] for t in resent) > max(
        s for t, s in seq.items() if t not in resent)
    # the stress is really there
    lats = Counter(r.latency for r in rows)
    for v in EDGES + TINY + (0.0, 1e6):
        assert lats[v] > 0, v


# ---- GET /analytics ---------------------------------------------------------

@pytest.mark.parametrize("name,p,e", SCOPES, ids=[s[0] for s in SCOPES])
def test_analytics_exact(world, name, p, e):
    api = world["api"]
    pid, env = resolve(world, p, e)
    rows = scoped(world["rows"], pid, env)
    if name in ("nothing", "no-env", "project2-dev"):
        assert not rows
    if name == "project2-edge-40":
        assert len(rows) == 40 and p95_rounded(
            [r.latency for r in rows]) == 2048.0
    if name == "project2-edge-21":
        assert len(rows) == 21 and p95_rounded(
            [r.latency for r in rows]) == 2064.0
    before = utcnow()
    resp = api.get("/analytics", params=scope_params(pid, env))
    after = utcnow()
    assert resp.status_code == 200, resp.text
    body = resp.json()

    s = dict(body["summary"])
    want = expected_summary(rows)
    check_mean(s["average_latency"], [r.latency for r in rows],
               f"{name} summary")
    s["average_latency"] = want["average_latency"] = None
    assert s == want, name

    assert body["status_breakdown"] == breakdown(r.status for r in rows)
    assert body["model_breakdown"] == breakdown(r.model_name for r in rows)
    assert body["project_breakdown"] == breakdown(r.project_id for r in rows)

    recent = newest_first([r for r in rows if flagged(r)])[:5]
    assert [t["trace_id"] for t in body["recent_failures"]] == ids(recent)
    for item, row in zip(body["recent_failures"], recent):
        check_item(item, row, f"{name} recent_failures")

    charts = body["charts"]
    if not rows:
        assert charts == []
        return
    assert len(charts) == 24
    last = us_of(dt.datetime.fromisoformat(charts[-1]["start"]))
    assert last in {us_of(before) // HOUR_US * HOUR_US,
                    us_of(after) // HOUR_US * HOUR_US}, charts[-1]
    by_hour = {}
    for row in rows:
        by_hour.setdefault(row.created_at // HOUR_US * HOUR_US,
                           []).append(row)
    for i, c in enumerate(charts):
        start = last - (23 - i) * HOUR_US
        hr = by_hour.get(start, [])
        what = f"{name} chart {c['start']}"
        assert c["start"] == ts_of(start), what
        assert c["label"] == ts_of(start)[11:13] + ":00", what
        assert (c["traces"], c["tokens"]) == (
            len(hr), sum(x.token_count for x in hr)), what
        check_mean(c["latency"], [x.latency for x in hr], what)


# ---- GET /failures ---------------------------------------------------------

@pytest.mark.parametrize("name,p,e", SCOPES, ids=[s[0] for s in SCOPES])
def test_failures_exact(world, name, p, e):
    api = world["api"]
    pid, env = resolve(world, p, e)
    rows = newest_first(scoped(world["rows"], pid, env))
    lists = {"failed_traces": [r for r in rows if r.status == "failed"],
             "retries": [r for r in rows if r.retry_count > 0],
             "slow_requests": [r for r in rows if r.slow == 1]}
    for limit in (100, 7):
        resp = api.get("/failures", params=dict(scope_params(pid, env),
                                                limit=limit))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["totals"] == {k: len(v) for k, v in lists.items()}, name
        for k, want in lists.items():
            got = body[k]
            assert [t["trace_id"] for t in got] == ids(want[:limit]), (
                name, k, limit)
            for item, row in zip(got, want):
                check_item(item, row, f"{name} {k}")


# ---- GET /traces -----------------------------------------------------------

def trace_filters(world):
    pa, pb, pc = world["projects"]
    return [
        # name, query, (min, max) matches the test requires
        ("all", {}, (2900, None)),
        ("latency>=0", {"latency_min": 0.0}, (2900, None)),
        ("A 100..2048", {"project_id": pa, "latency_min": 100.0,
                         "latency_max": 2048.0}, (300, None)),
        ("staging ==1024", {"environment": "staging", "latency_min": 1024.0,
                            "latency_max": 1024.0}, (1, None)),
        ("just inside 512..2048, gpt-4o, tokens", {
            "latency_min": up(512.0), "latency_max": down(2048.0),
            "model": "gpt-4o", "token_min": 100, "token_max": 3000},
         (1, None)),
        ("B dev mistral FAILED", {
            "project_id": pb, "environment": "dev", "model": "mistral",
            "status": "FAILED", "token_min": 0, "token_max": 2500,
            "latency_max": 2048.0}, (0, None)),
        ("zero latency", {"latency_max": 0.0}, (1, None)),
        ("huge", {"latency_min": 1e6}, (1, None)),
        ("C tiny", {"project_id": pc, "latency_min": 0.001,
                    "latency_max": 0.001}, (1, None)),
        ("failed, no tokens", {"status": "failed", "token_min": 0,
                               "token_max": 0}, (1, None)),
        ("just below 1024", {"latency_min": down(1024.0),
                             "latency_max": down(1024.0)}, (1, None)),
        ("just above 2048, staging", {"environment": "staging",
                                      "latency_min": up(2048.0),
                                      "latency_max": up(2048.0)}, (1, None)),
        ("A production slow-ish, tokens", {
            "project_id": pa, "environment": "production",
            "latency_min": 1500.0, "token_min": 1000}, (1, None)),
        ("edge-40 ==512 (few)", {"project_id": pc, "environment": "edge-40",
                                 "latency_min": 512.0,
                                 "latency_max": 512.0}, (9, 9)),
        ("C staging model claude tokens 128..4096", {
            "project_id": pc, "environment": "staging",
            "model": "claude-3-5", "token_min": 128, "token_max": 4096},
         (1, 100)),
    ]


def matches(row, q):
    return ((q.get("project_id") is None or row.project_id == q["project_id"])
            and (q.get("environment") is None
                 or row.environment == q["environment"])
            and (q.get("model") is None or row.model_name == q["model"])
            and (q.get("status") is None or row.status == q["status"].lower())
            and ("latency_min" not in q or row.latency >= q["latency_min"])
            and ("latency_max" not in q or row.latency <= q["latency_max"])
            and ("token_min" not in q or row.token_count >= q["token_min"])
            and ("token_max" not in q or row.token_count <= q["token_max"]))


def test_traces_filters_exact(world):
    api = world["api"]
    for name, q, (lo, hi) in trace_filters(world):
        want = newest_first([r for r in world["rows"] if matches(r, q)])
        assert len(want) >= lo and (hi is None or len(want) <= hi), (
            name, len(want))
        # floats as their shortest round-trip text: the bounds are exact
        params = {k: repr(v) if isinstance(v, float) else v
                  for k, v in q.items()}
        for limit in (200, 3):
            body = api.traces(limit=limit, **params)
            assert body["total"] == len(want), (name, limit)
            assert [t["trace_id"] for t in body["items"]] == ids(
                want[:limit]), (name, limit)
            for item, row in zip(body["items"], want):
                check_item(item, row, name)
