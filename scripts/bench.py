#!/usr/bin/env python3
"""The scenarios of `make bench`: the relay side by side with a naive
per-row relay, in one run, on the local stack that scripts/bench.sh starts
(DynamoDB Local, LocalStack's SQS, PostgreSQL). It prints the table and
writes target/bench/results.json; docs/performance.md explains the figures.

Every relay is a real process of a release build wrapped in /usr/bin/time
(CPU, peak RSS): the relay is `outbox-relay drain --stats`, the baseline
`examples/naive_relay.rs` (claim -> SendMessage -> mark -> delete, one row at
a time, same contract and stack). A consumer drains the queue while they
run (long polls, receive + delete), as production has. Costs per row come
from the relay's own counters (`--stats`: the SDK interceptor and the SQL
round-trip counter), never from estimates.

Scenarios: each queue kind (standard, FIFO with 100 groups) on the stack
as it is ("faithful"), and through `examples/latency_proxy.rs` (the tests'
fault proxy with only its latency on) adding BENCH_LATENCY_MS (default 8)
to every AWS call ("AWS-like"), with kept-alive connections as AWS has.

Settings (environment): BENCH_ROWS (relay rows per scenario, default
3000), BENCH_NAIVE_ROWS (baseline rows per scenario, default 400: it runs
at a steady per-row rate, so fewer rows measure it as well),
BENCH_LATENCY_MS, BENCH_AWS_PIDS (the stand-ins' processes, whose CPU is
reported as theirs).

`bench.py null-aws` answers the relay's calls at once with fixed replies
(every claim wins, every send and mark succeeds), prints its URL and runs
until killed: against it the relay never waits on a backend
(scripts/bench_follow.py uses it for the relay's own latency).
"""

import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import boto3

from benchlib import (QueueConsumer, cpu_busy_seconds, create_ledger_table, drop_queue_and_table,
                      logger, psql, recreate_database)
from benchlib import percentile_nearest_rank as percentile
from benchlib import proc_cpu_seconds as _proc_cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
RELAY = ROOT / "target/release/outbox-relay"
NAIVE = ROOT / "target/release/examples/naive_relay"
PROXY = ROOT / "target/release/examples/latency_proxy"
OUT = ROOT / "target/bench/results.json"
LOGS = ROOT / "target/bench/logs"
ROWS = int(os.environ.get("BENCH_ROWS", "3000"))
NAIVE_ROWS = int(os.environ.get("BENCH_NAIVE_ROWS", "400"))
LATENCY_MS = int(os.environ.get("BENCH_LATENCY_MS", "8"))
GROUPS = 100
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "")
DB_NAME = "outbox_relay_bench"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
RUN_ID = str(int(time.time()))
AWS_PIDS = [int(p) for p in os.environ.get("BENCH_AWS_PIDS", "").split()]

# Targets: (key, text, test), on every scenario's relay run.
TARGETS = [
    ("sqs_per_row", "SQS requests/row <= 0.101", lambda s: s["sqs_per_row"] <= 0.101),
    ("ddb_per_row", "DynamoDB requests/row <= 1.04", lambda s: s["ddb_per_row"] <= 1.04),
    ("wcu_per_row", "DynamoDB WCU/row <= 2", lambda s: s["wcu_per_row"] <= 2.0),
]
RATIO_TARGET = {"faithful": 10.0, "aws-like": 30.0}


log = logger("bench")


def proc_cpu_seconds(pid):
    """CPU of a process and its reaped children (the JVM's, Python's threads)."""
    try:
        return _proc_cpu_seconds(pid, children=True)
    except FileNotFoundError:
        return 0.0


def stand_ins_cpu():
    return sum(proc_cpu_seconds(p) for p in AWS_PIDS)


# ------------------------------------------------------ stack resources

def make_queue(name, fifo):
    attrs = {"FifoQueue": "true"} if fifo else {}
    qname = f"bench-{name}-{RUN_ID}" + (".fifo" if fifo else "")
    return boto3.client("sqs").create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]


def make_table(name):
    return create_ledger_table(boto3.client("dynamodb"), f"bench-{name}-{RUN_ID}")


def drop_aws(queue_url, table):
    drop_queue_and_table(boto3.client("sqs"), boto3.client("dynamodb"), queue_url, table)


def setup_database():
    recreate_database(ADMIN_URL, DB_NAME, DB_URL, ["infra/sql/postgres.sql"])


def drop_database():
    psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def seed(rows):
    """`rows` rows, ~200-byte JSON payloads carrying their insert time,
    round-robin over GROUPS groups (the FIFO scenarios' group column)."""
    psql(DB_URL,
         "TRUNCATE outbox, outbox_dead_letter",
         f"""INSERT INTO outbox (payload, group_key)
             SELECT json_build_object('n', i,
                      't_ms', (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                      'pad', repeat('x', 150))::text,
                    'g' || (i % {GROUPS})
             FROM generate_series(1, {rows}) AS i""",
         "ANALYZE outbox")


def outbox_count():
    return int(psql(DB_URL, "SELECT count(*) FROM outbox", capture=True))


# ------------------------------------------------------------- consumer

class Consumer(QueueConsumer):
    """Receives and deletes in a loop (four threads, 1 s long polls),
    noting each message's send -> receive time and duplicates by row."""

    def __init__(self, queue_url, threads=4):
        super().__init__(queue_url, lambda: boto3.client("sqs"), threads, receive_args={
            "VisibilityTimeout": 300, "AttributeNames": ["SentTimestamp"],
            "MessageAttributeNames": ["outbox-id"]})
        self.seen = set()
        self.duplicates = 0
        self.send_to_receive = []
        self.last_receive = time.monotonic()
        self.cpu0 = time.process_time()
        self.start_threads()

    def note(self, got, now_ms):
        self.last_receive = time.monotonic()
        for m in got:
            key = m["MessageAttributes"]["outbox-id"]["StringValue"]
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            self.send_to_receive.append(now_ms - int(m["Attributes"]["SentTimestamp"]))

    def finish(self, expected, idle_seconds=10):
        while True:
            with self.lock:
                if len(self.seen) >= expected or time.monotonic() - self.last_receive > idle_seconds:
                    break
            time.sleep(0.1)
        self.join()
        return {
            "received": len(self.seen),
            "duplicates_received": self.duplicates,
            "send_to_receive_p50_ms": percentile(self.send_to_receive, 50),
            "send_to_receive_p99_ms": percentile(self.send_to_receive, 99),
        }


# --------------------------------------------------------------- relays

class RelayFailed(Exception):
    pass


def run_timed(argv, env, logdir, name):
    """Runs one process under /usr/bin/time; its stdout, stderr, CPU, RSS."""
    logdir.mkdir(parents=True, exist_ok=True)
    files = {k: logdir / f"{name}.{k}" for k in ("out", "err", "time")}
    started = time.monotonic()
    code = subprocess.run(
        ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(files["time"]), *argv],
        env=env, stdout=open(files["out"], "w"), stderr=open(files["err"], "w")).returncode
    wall = time.monotonic() - started
    out = files["out"].read_text().strip().splitlines()
    err = files["err"].read_text().strip().splitlines()
    timing = files["time"].read_text().strip().splitlines()
    if code != 0 or not out or not timing:
        raise RelayFailed(f"{name} exited with {code} after {wall:.1f}s; stderr tail: "
                          + " | ".join(err[-5:]))
    _, user, sys_, rss_kb = timing[-1].split()
    stats = next((json.loads(line) for line in reversed(err)
                  if line.startswith("{") and '"sql_round_trips"' in line), None)
    return {"wall_s": wall, "summary": json.loads(out[-1]), "stats": stats,
            "cpu_s": float(user) + float(sys_), "peak_rss_mb": int(rss_kb) / 1024}


def env_for(queue_url, table, fifo, endpoint=None):
    env = dict(os.environ)
    env.update({"DATABASE_URL": DB_URL, "QUEUE_URL": queue_url, "CLAIMS_TABLE": table,
                "OUTBOX_TABLE": "outbox", "OUTBOX_DEAD_LETTER_TABLE": "outbox_dead_letter"})
    env.pop("OUTBOX_GROUP_COLUMN", None)
    if fifo:
        env["OUTBOX_GROUP_COLUMN"] = "group_key"
    if endpoint:
        for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB"):
            env[var] = endpoint
    return env


def one_run(kind, scenario, rows, fifo, latency_ms):
    """One relay (or baseline) run over `rows` fresh rows, fresh queue and
    ledger; returns its figures."""
    name = f"{scenario}-{kind}"
    queue_url, table = make_queue(name, fifo), make_table(name)
    seed(rows)
    proxy = None
    endpoint = None
    if latency_ms:
        proxy = subprocess.Popen([str(PROXY), str(latency_ms)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        endpoint = proxy.stdout.readline().strip()
    env = env_for(queue_url, table, fifo, endpoint)
    consumer = Consumer(queue_url)
    busy0, aws0 = cpu_busy_seconds(), stand_ins_cpu()
    argv = [str(RELAY), "drain", "--stats"] if kind == "relay" else [str(NAIVE)]
    try:
        run = run_timed(argv, env, LOGS / scenario, kind)
    finally:
        proxy_counts, proxy_cpu = None, 0.0
        if proxy:
            proxy_cpu = proc_cpu_seconds(proxy.pid)
            proxy.stdin.close()
            proxy_counts = json.loads(proxy.stdout.readline() or "null")
            proxy.wait()
    wall = run["wall_s"]
    busy, aws = cpu_busy_seconds() - busy0, stand_ins_cpu() - aws0
    sent = run["summary"]["sent"]
    received = consumer.finish(sent)
    consumer_cpu = time.process_time() - consumer.cpu0
    left = outbox_count()
    drop_aws(queue_url, table)
    res = {
        "kind": kind, "rows": rows, "sent": sent, "rows_left": left,
        "wall_s": wall, "rows_per_s": sent / wall if wall else 0.0,
        "cpu_s": run["cpu_s"], "cpu_s_per_10k": run["cpu_s"] / max(sent, 1) * 10_000,
        "peak_rss_mb": run["peak_rss_mb"], "proxy_forwarded": proxy_counts,
        # Where the time goes: cores each party kept busy over the run.
        "cores": {
            "relay": run["cpu_s"] / wall, "stand_ins": aws / wall, "proxy": proxy_cpu / wall,
            "other": max(0.0, busy - aws - run["cpu_s"] - proxy_cpu) / wall,
            "machine": busy / wall,
        },
        "consumer_cpu_s": consumer_cpu,
        **received,
    }
    if run["stats"]:
        res.update(costs(run["stats"], sent))
    log(f"  {name}: {sent} rows in {wall:.1f}s = {res['rows_per_s']:.0f} rows/s, "
        f"stand-ins {res['cores']['stand_ins']:.2f} cores, relay {res['cores']['relay']:.2f}")
    if left or sent < rows or received["received"] < sent:
        log(f"  WARNING {name}: {left} rows left, {sent} sent, {received['received']} received")
    return res


def costs(stats, sent):
    requests = stats["aws_requests"]
    rows = sent or 1
    batch_marked = stats.get("aws_batch_items", {}).get("DynamoDB.BatchWriteItem", 0)
    # Every ledger item is under 1 KB: one write unit per UpdateItem
    # (conditional failures included) and per item of a BatchWriteItem.
    wcu = batch_marked + sum(v for k, v in requests.items()
                             if k in ("DynamoDB.UpdateItem", "DynamoDB.PutItem", "DynamoDB.DeleteItem"))
    return {
        "aws_requests": requests,
        "sqs_per_row": sum(v for k, v in requests.items() if k.startswith("SQS.")) / rows,
        "ddb_per_row": sum(v for k, v in requests.items() if k.startswith("DynamoDB.")) / rows,
        "wcu_per_row": wcu / rows,
        "sql_per_row": stats["sql_round_trips"] / rows,
    }


def scenario(name, title, fifo, latency_ms):
    log(f"scenario {name}: {title}")
    relay = attempt(lambda: one_run("relay", name, ROWS, fifo, latency_ms))
    naive = attempt(lambda: one_run("naive", name, NAIVE_ROWS, fifo, latency_ms))
    ratio = relay["rows_per_s"] / naive["rows_per_s"] if naive["rows_per_s"] else None
    return {"name": name, "title": title, "queue": "fifo" if fifo else "standard",
            "stack": "aws-like" if latency_ms else "faithful", "latency_ms": latency_ms,
            "relay": relay, "naive": naive, "ratio": ratio}


FAILURES = []


def attempt(run):
    """A run whose process failed is reported and made once more."""
    for _ in range(2):
        try:
            return run()
        except RelayFailed as e:
            log(f"  FAILED: {e}")
            FAILURES.append(str(e))
    raise SystemExit(f"a run failed twice; logs in {LOGS.relative_to(ROOT)}")


# --------------------------------------------------------------- report

def machine():
    def cmd(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        mem = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "memory_gb": mem,
        "arch": platform.machine(), "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": cmd("git", "rev-parse", "--short", "HEAD"),
        "rustc": cmd("rustc", "-V"),
        "postgres": psql(ADMIN_URL, "SHOW server_version", capture=True),
    }


def fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])


def report(results):
    sc = results["scenarios"]
    out = [f"make bench: relay ({ROWS} rows) beside the naive per-row relay ({NAIVE_ROWS} rows), "
           f"one run; AWS-like = +{LATENCY_MS} ms on every AWS call", ""]
    out.append(table(
        ["scenario", "relay rows/s", "naive rows/s", "relay / naive", "target",
         "SQS req/row", "DDB req/row", "WCU/row", "SQL/row", "relay CPU s/10k", "RSS MB"],
        [[s["title"], fmt(s["relay"]["rows_per_s"], 0), fmt(s["naive"]["rows_per_s"], 1),
          fmt(s["ratio"], 1), f">= {RATIO_TARGET[s['stack']]:.0f}"
          + (" ok" if s["ratio"] and s["ratio"] >= RATIO_TARGET[s["stack"]] else " MISSED"),
          fmt(s["relay"].get("sqs_per_row"), 3), fmt(s["relay"].get("ddb_per_row"), 3),
          fmt(s["relay"].get("wcu_per_row"), 3), fmt(s["relay"].get("sql_per_row"), 3),
          fmt(s["relay"]["cpu_s_per_10k"], 2), fmt(s["relay"]["peak_rss_mb"], 1)] for s in sc]))
    out += ["", "Where the time goes (cores busy during the relay's run; 2 = the whole machine):", ""]
    out.append(table(
        ["scenario", "relay", "stand-ins", "latency proxy", "other (PostgreSQL, consumer)",
         "machine", "send->receive p50/p99 ms", "duplicates received", "rows left"],
        [[s["title"], fmt(r["cores"]["relay"]), fmt(r["cores"]["stand_ins"]),
          fmt(r["cores"]["proxy"]), fmt(r["cores"]["other"]), fmt(r["cores"]["machine"]),
          f"{fmt(r['send_to_receive_p50_ms'], 0)}/{fmt(r['send_to_receive_p99_ms'], 0)}",
          r["duplicates_received"], r["rows_left"]]
         for s in sc for r in [s["relay"]]]))
    out.append("")
    for key, text, test in TARGETS:
        bad = [s["name"] for s in sc if key in s["relay"] and not test(s["relay"])]
        out.append(f"target {text}: " + ("met" if not bad else "MISSED in " + ", ".join(bad)))
    if FAILURES:
        out.append("runs that failed once and were made again: " + "; ".join(FAILURES))
    m = results["machine"]
    out.append(f"\nMachine: {m['nproc']} cores {m['cpu']}, {m['memory_gb']} GB, {m['kernel']}; "
               f"PostgreSQL {m['postgres']}, {m['rustc']}; commit {m['git_commit']}, {m['date']}")
    return "\n".join(out)


# ------------------------------------------------------ the null backend

async def null_aws_main():
    """See the module docstring: canned awsJson1_0 answers, keep-alive."""
    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                fields = {k.strip().lower(): v.strip() for k, v in
                          (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)}
                req = json.loads(await reader.readexactly(int(fields.get(b"content-length", b"0"))) or b"{}")
                op = fields.get(b"x-amz-target", b"").decode().rsplit(".", 1)[-1]
                status, out = "200 OK", None
                if op == "GetQueueAttributes":
                    out = {"Attributes": {"MaximumMessageSize": "1048576"}}
                elif op == "UpdateItem":  # the claim wins; UPDATED_NEW
                    values = req.get("ExpressionAttributeValues", {})
                    out = {"Attributes": {"attempts": {"N": "1"},
                                          "lease_until_ms": values.get(":lease", {"N": "0"})}}
                elif op == "SendMessageBatch":
                    out = {"Successful": [{"Id": e["Id"], "MessageId": f"null-{e['Id']}",
                                           "MD5OfMessageBody": hashlib.md5(e["MessageBody"].encode()).hexdigest()}
                                          for e in req["Entries"]], "Failed": []}
                elif op == "BatchWriteItem":
                    out = {"UnprocessedItems": {}}
                else:
                    status, out = "400 Bad Request", {"__type": "UnknownOperationException", "message": op}
                data = json.dumps(out).encode()
                writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main():
    setup_database()
    try:
        results = {"machine": machine(), "rows": ROWS, "naive_rows": NAIVE_ROWS,
                   "latency_ms": LATENCY_MS,
                   "build_seconds": float(os.environ.get("BENCH_BUILD_SECONDS", "nan"))}
        # A first run warms the stand-ins (DynamoDB Local's JIT, LocalStack's
        # caches): the first scenario would otherwise pay for it alone.
        log("warm-up run (not reported)")
        attempt(lambda: one_run("relay", "warm-up", min(ROWS, 1000), False, 0))
        results["scenarios"] = [
            scenario("faithful-standard", "faithful, standard", False, 0),
            scenario("faithful-fifo", f"faithful, FIFO {GROUPS} groups", True, 0),
            scenario("awslike-standard", f"+{LATENCY_MS} ms, standard", False, LATENCY_MS),
            scenario("awslike-fifo", f"+{LATENCY_MS} ms, FIFO {GROUPS} groups", True, LATENCY_MS),
        ]
        results["failures"] = FAILURES
    finally:
        drop_database()
    text = report(results)
    results["table"] = text
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"\nresults: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["null-aws"]:
        asyncio.run(null_aws_main())
    else:
        main()
