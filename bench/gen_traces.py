#!/usr/bin/python3
"""bench/gen_traces.py - the synthetic trace mix of scripts/bench.

Deterministic for a seed and a "now". Traces come out as batch bodies of
100 (a JSON array each), one batch per line of a file, each batch for one
project (an API key belongs to one project), in created_at order over the
last 48 hours (as live ingest would send them), shuffled within a batch.

The mix:
  projects     5, Zipf-like shares 40/25/15/12/8 %
  environment  production 70 %, staging 20 %, development 10 % (in the
               payload; the keys are production keys)
  models       gpt-4o 30, gpt-4o-mini 30, claude-3-5-sonnet 15,
               claude-3-haiku 10, llama-3.1-70b 8, mistral-large 7 %
  latency      lognormal, median 650 ms, sigma 0.7 (about 11 % >= 1500 ms,
               the slow threshold); 1 % are ten times that (timeouts)
  tokens       lognormal, median 700
  prompt       lognormal length, median 300 characters; response median
               500 (capped at 6000); 2 % of responses null
  steps        0-6 (30/20/18/14/9/6/3 %), distinct tools from 8 names,
               8 % of multi-step traces repeat a tool (an inferred retry),
               1.5 % of steps fail with output.error (inferred failed)
  explicit     1.5 % status "failed" with a failure_reason and no steps,
               1 % status "warning" with a failure_reason
Run as a program it prints a summary of a small sample.
"""
import datetime
import json
import math
import random

PROJECTS = [  # (name, share)
    ("Support Bot", 40), ("Search Assistant", 25), ("Code Review", 15),
    ("Sales Agent", 12), ("Doc Summarizer", 8)]
ENVIRONMENTS = [("production", 70), ("staging", 20), ("development", 10)]
MODELS = [("gpt-4o", 30), ("gpt-4o-mini", 30), ("claude-3-5-sonnet", 15),
          ("claude-3-haiku", 10), ("llama-3.1-70b", 8), ("mistral-large", 7)]
STEP_COUNTS = [(0, 30), (1, 20), (2, 18), (3, 14), (4, 9), (5, 6), (6, 3)]
TOOLS = ["search", "retriever", "calculator", "web_browse", "sql_query",
         "code_exec", "summarize", "rerank"]
FAIL_REASONS = ["rate_limit_exceeded", "context_length_exceeded",
                "upstream_timeout", "invalid_tool_arguments"]
WARN_REASONS = ["content_filter", "truncated_output", "fallback_model"]
STEP_ERRORS = ["timeout after 30s", "HTTP 502 from tool backend",
               "rate limited", "schema validation failed"]
HOURS = 48
BATCH = 100

WORDS = ("the a of to and in is for on that with as by this be are from at "
         "or an it not which have can will your all more about use when "
         "customer order refund account invoice shipping delivery product "
         "error latency model token prompt response context retrieval query "
         "database report summary analysis table chart metric quarter revenue "
         "please explain why how what list compare write code function test "
         "python api request user support ticket escalate policy document "
         "section paragraph translate email draft meeting schedule").split()


def _corpus(rng, size=1 << 20):
    words = rng.choices(WORDS, k=size // 5)
    return " ".join(words)


def _weighted(rng, table):
    return rng.choices([v for v, _ in table], [w for _, w in table])[0]


class Mix:
    def __init__(self, seed, now=None):
        self.rng = random.Random(seed)
        self.corpus = _corpus(self.rng)
        self.now = now or datetime.datetime.now(datetime.timezone.utc)

    def text(self, median, cap):
        n = int(min(cap, max(8, self.rng.lognormvariate(math.log(median),
                                                           0.8))))
        start = self.rng.randrange(0, len(self.corpus) - n - 1)
        return self.corpus[start:start + n].strip() or "hello"

    def uuid(self):
        h = "%032x" % self.rng.getrandbits(128)
        return "%s-%s-4%s-a%s-%s" % (h[:8], h[8:12], h[13:16], h[17:20],
                                     h[20:])

    def trace(self, created):
        rng = self.rng
        latency = round(rng.lognormvariate(math.log(650), 0.7), 2)
        if rng.random() < 0.01:
            latency = round(latency * 10, 2)
        t = {
            "trace_id": self.uuid(),
            "prompt": self.text(300, 6000),
            "response": None if rng.random() < 0.02
            else self.text(500, 6000),
            "model": _weighted(rng, MODELS),
            "latency": latency,
            "token_count": int(rng.lognormvariate(math.log(700), 0.7)),
            "environment": _weighted(rng, ENVIRONMENTS),
            "created_at": created.isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
        }
        u = rng.random()
        if u < 0.015:
            t["status"] = "failed"
            t["failure_reason"] = rng.choice(FAIL_REASONS)
            return t
        if u < 0.025:
            t["status"] = "warning"
            t["failure_reason"] = rng.choice(WARN_REASONS)
        n = _weighted(rng, STEP_COUNTS)
        tools = rng.sample(TOOLS, n)
        if n >= 2 and rng.random() < 0.08:
            tools[-1] = tools[0]          # the same tool again: a retry
        steps = []
        at = created
        for i, tool in enumerate(tools):
            duration = round(rng.lognormvariate(math.log(120), 0.9), 2)
            ok = rng.random() >= 0.015
            step = {
                "step_id": "step_%d" % (i + 1),
                "tool_name": tool,
                "input": {"query": self.text(60, 400)},
                "output": {"result": self.text(120, 800)} if ok
                else {"error": rng.choice(STEP_ERRORS)},
                "duration": duration,
                "success": ok,
                "timestamp": at.isoformat(timespec="microseconds")
                .replace("+00:00", "Z"),
            }
            at += datetime.timedelta(milliseconds=duration)
            steps.append(step)
        if steps:
            t["steps"] = steps
        return t

    def batches(self, n):
        """Yield (project_index, [trace, ...]) batches covering n traces,
        oldest first, created_at spread evenly over the last 48 hours."""
        span = datetime.timedelta(hours=HOURS)
        start = self.now - span
        weights = [w for _, w in PROJECTS]
        done = 0
        while done < n:
            k = min(BATCH, n - done)
            project = self.rng.choices(range(len(PROJECTS)), weights)[0]
            items = []
            for i in range(k):
                frac = (done + i + self.rng.random()) / n
                items.append(self.trace(start + span * frac))
            self.rng.shuffle(items)
            done += k
            yield project, items


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def write_batches(path, n, seed, now=None):
    """Write the batches of n traces to path, one line each:
    "<project index>\\t<JSON array>". Returns a summary dict: json_bytes
    (the sum of the traces' compact JSON sizes), a typical trace id (two
    steps), and counts."""
    mix = Mix(seed, now)
    json_bytes = 0
    body_bytes = 0
    batches = 0
    typical = None
    with open(path, "w", encoding="utf-8") as f:
        for project, items in mix.batches(n):
            texts = [dumps(t) for t in items]
            json_bytes += sum(len(s.encode()) for s in texts)
            body = "[" + ",".join(texts) + "]"
            body_bytes += len(body.encode())
            f.write("%d\t%s\n" % (project, body))
            batches += 1
            if typical is None and batches * BATCH >= n // 2:
                for t in items:
                    if len(t.get("steps", ())) == 2 and "status" not in t:
                        typical = t["trace_id"]
                        break
    return {"traces": n, "batches": batches, "json_bytes": json_bytes,
            "body_bytes": body_bytes, "typical_trace_id": typical}


def single_trace_template(seed):
    """One typical trace (two steps) as JSON text with the trace_id left
    as the placeholder @ID@ and no created_at (the server's now)."""
    mix = Mix(seed)
    while True:
        t = mix.trace(mix.now)
        if len(t.get("steps", ())) == 2 and "status" not in t:
            break
    t["trace_id"] = "@ID@"
    del t["created_at"]
    for s in t["steps"]:
        del s["timestamp"]
    return dumps(t)


if __name__ == "__main__":
    import collections
    import sys
    mix = Mix(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    c = collections.Counter()
    size = 0
    for p, items in mix.batches(n):
        for t in items:
            c["project " + PROJECTS[p][0]] += 1
            c["steps %d" % len(t.get("steps", ()))] += 1
            c["slow"] += t["latency"] >= 1500
            c["explicit " + t.get("status", "none")] += 1
            c["failed step"] += any(not s["success"]
                                    for s in t.get("steps", ()))
            size += len(dumps(t).encode())
    for k in sorted(c):
        print("%-28s %6.2f %%" % (k, 100.0 * c[k] / n))
    print("mean JSON bytes per trace: %.0f" % (size / n))
