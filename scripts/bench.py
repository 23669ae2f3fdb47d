#!/usr/bin/env python3
"""The scenarios of `make bench` (issue 6). scripts/bench.sh builds the
release binary, starts moto and PostgreSQL, and runs this with the stack's
settings in the environment; this prints the table and writes
target/bench/results.json.

Every relay is a real process of the release binary (`outbox-relay drain
--stats`) wrapped in /usr/bin/time (CPU, peak RSS). A consumer drains the
queue while the relays run (receive + delete), which keeps moto's queue
short and gives the insert-to-receive latency. Costs per row come from the
relays' own counters (the SDK interceptor and the SQL round-trip counter
printed by --stats), never from estimates.

Settings (environment): BENCH_ROWS (rows per scenario, default 3000),
BENCH_CEILING_ROWS (rows of each ceiling run, default 300).

moto comes from scripts/stack.sh: AWS_ENDPOINT_URL (DynamoDB, Secrets
Manager), AWS_ENDPOINT_URL_SQS when SQS runs in a moto process of its own,
MOTO_PIDS (the moto processes, whose CPU is summed). moto_server answers
every request with `Connection: close` (werkzeug's development server), so
a client opens one TCP connection per request, which AWS does not make it
do. Scenario s5 therefore runs s1 again against the same moto application
served by waitress (PyPI), which keeps connections alive: s1 and s5 side
by side show what the emulator's connection handling costs the relay.

`bench.py proxy <upstream> <sqs-upstream> <latency-ms>` runs the latency
proxy of scenario 4 on its own (a port of tests/proxy/mod.rs's latency
setting): it prints its URL, forwards every request after the delay (SQS
requests, `X-Amz-Target: AmazonSQS.*`, to <sqs-upstream>, the rest to
<upstream>), and on SIGTERM (or when its stdin closes) prints the requests
it forwarded per operation as one JSON line.

`bench.py moto-keepalive` serves moto's application through waitress on a
free loopback port, prints its URL and runs until killed.

`bench.py null-aws` answers the four calls the relay makes at once with
fixed replies (every claim wins, every send and mark succeeds), prints its
URL and runs until killed. Against it the relay never waits on a backend:
the "null backend" line is the relay's own CPU per row, nothing else, and
says nothing about throughput or correctness.
"""

import asyncio
import hashlib
import http.client
import http.server
import json
import os
import platform
import queue
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/outbox-relay"
OUT = ROOT / "target/bench/results.json"
ROWS = int(os.environ.get("BENCH_ROWS", "3000"))
CEILING_ROWS = int(os.environ.get("BENCH_CEILING_ROWS", "300"))
CEILING_CONCURRENCY = (8, 16, 32)
LOGS = ROOT / "target/bench/logs"
GROUPS = 100
PROXY_LATENCY_MS = 10
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "")
DB_NAME = "outbox_relay_bench"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
TICK = os.sysconf("SC_CLK_TCK")
RUN_ID = str(int(time.time()))

# The targets: (key, text, unit, test on a value).
TARGETS = [
    ("sqs_per_row", "SQS requests/row <= 0.11", lambda v: v <= 0.11),
    ("ddb_per_row", "DynamoDB requests/row <= 1.1", lambda v: v <= 1.1),
    ("wcu_per_row", "DynamoDB WCU/row <= 2", lambda v: v <= 2.0),
    ("sql_per_row", "SQL round trips/row <= 0.05", lambda v: v <= 0.05),
    ("cpu_s_per_10k", "relay CPU <= 1 s/10k rows", lambda v: v <= 1.0),
    ("peak_rss_mb", "peak RSS <= 64 MB", lambda v: v <= 64.0),
]


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def psql(url, *sql, capture=False):
    cmd = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", "-tA", url]
    for s in sql:
        cmd += ["-c", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout.strip() if capture else None


class Moto:
    """Where moto answers: `endpoint` for DynamoDB (and Secrets Manager),
    `sqs_endpoint` for SQS (the same URL when one process serves all);
    `pids` are its processes, `server` names the HTTP server in front."""

    def __init__(self, endpoint, sqs_endpoint, pids, server):
        self.endpoint, self.sqs_endpoint = endpoint, sqs_endpoint or endpoint
        self.pids, self.server = pids, server

    def url(self, service):
        return self.sqs_endpoint if service == "sqs" else self.endpoint

    def client(self, service):
        return boto3.client(service, endpoint_url=self.url(service))

    def cpu_seconds(self):
        return sum(proc_cpu_seconds(pid) for pid in self.pids)

    def split(self):
        return self.sqs_endpoint != self.endpoint


# The stack's moto (scripts/stack.sh), served by werkzeug.
STACK = Moto(os.environ.get("AWS_ENDPOINT_URL", ""), os.environ.get("AWS_ENDPOINT_URL_SQS"),
             [int(p) for p in os.environ.get("MOTO_PIDS", "").split()], "werkzeug")


def percentile(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


# ---------------------------------------------------------------- CPU probes

def cpu_busy_seconds():
    """Whole machine: busy CPU seconds so far (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def self_cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class CpuWatch:
    """CPU used by moto (all its processes), this driver (consumer) and the
    whole machine."""

    def __init__(self, moto):
        self.moto_procs = moto
        self.t, self.all, self.moto, self.me = (
            time.monotonic(), cpu_busy_seconds(), moto.cpu_seconds(), self_cpu_seconds())

    def done(self, relay_cpu):
        """`relay_cpu`: CPU seconds of the processes under test (relays, proxy)."""
        wall = time.monotonic() - self.t
        moto = self.moto_procs.cpu_seconds() - self.moto
        me = self_cpu_seconds() - self.me
        total = cpu_busy_seconds() - self.all
        return {
            "moto_cores": moto / wall,
            "consumer_cores": me / wall,
            "relay_cores": relay_cpu / wall,
            # PostgreSQL, and anything else running on the machine.
            "other_cores": max(0.0, total - moto - me - relay_cpu) / wall,
            "machine_busy_cores": total / wall,
        }


# ------------------------------------------------------------ AWS resources

def make_queue(moto, name, fifo=False):
    attrs = {"FifoQueue": "true"} if fifo else {}
    qname = f"bench-{name}-{RUN_ID}" + (".fifo" if fifo else "")
    return moto.client("sqs").create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]


def make_table(moto, name):
    table = f"bench-{name}-{RUN_ID}"
    moto.client("dynamodb").create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    return table


def drop_aws(moto, queue_url, table):
    # Keeps moto's memory (and its per-request scans) small between scenarios.
    moto.client("sqs").delete_queue(QueueUrl=queue_url)
    moto.client("dynamodb").delete_table(TableName=table)


# ----------------------------------------------------------------- database

def setup_database():
    psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)", f"CREATE DATABASE {DB_NAME}")
    subprocess.run(["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", DB_URL, "-f",
                    str(ROOT / "infra/sql/postgres.sql")], check=True, capture_output=True)


def drop_database():
    psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def seed(rows):
    """`rows` rows, ~200-byte JSON payloads carrying their insert time,
    spread round-robin over GROUPS groups (used by the FIFO scenario)."""
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


# ----------------------------------------------------------------- consumer

class Consumer:
    """Receives and deletes in a loop, noting for each message the insert
    time from its body and SQS's SentTimestamp. Four threads: moto's
    SendMessage costs grow with the queue's length, so the consumer must
    not fall behind. Long polls of 1 s: short polls (0 s, 0.1 s pause when
    empty) were tried and let the queue grow (s1 send->receive p50 9.2 s
    against 0.65 s, 45 against 58 rows/s)."""

    def __init__(self, moto, queue_url, threads=4):
        self.moto, self.url = moto, queue_url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen = set()
        self.duplicates = 0
        self.insert_to_receive = []
        self.send_to_receive = []
        self.last_receive = time.monotonic()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self):
        sqs = self.moto.client("sqs")
        while not self.stop.is_set():
            got = sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                VisibilityTimeout=300, AttributeNames=["SentTimestamp"]).get("Messages", [])
            if not got:
                continue
            now_ms = time.time() * 1000
            with self.lock:
                self.last_receive = time.monotonic()
                for m in got:
                    body = json.loads(m["Body"])
                    if body["n"] in self.seen:
                        self.duplicates += 1
                        continue
                    self.seen.add(body["n"])
                    if body.get("t_ms"):
                        self.insert_to_receive.append(now_ms - body["t_ms"])
                    self.send_to_receive.append(now_ms - int(m["Attributes"]["SentTimestamp"]))
            sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])

    def finish(self, expected, idle_seconds=15):
        """Waits until `expected` distinct messages came (or nothing came for
        `idle_seconds`), then stops the threads."""
        while True:
            with self.lock:
                if len(self.seen) >= expected or time.monotonic() - self.last_receive > idle_seconds:
                    break
            time.sleep(0.1)
        self.stop.set()
        for t in self.threads:
            t.join()

    def latency(self):
        return {
            "received": len(self.seen),
            "duplicates": self.duplicates,
            "insert_to_receive_p50_ms": percentile(self.insert_to_receive, 50),
            "insert_to_receive_p99_ms": percentile(self.insert_to_receive, 99),
            "send_to_receive_p50_ms": percentile(self.send_to_receive, 50),
            "send_to_receive_p99_ms": percentile(self.send_to_receive, 99),
        }


# ------------------------------------------------------------------- relays

def relay_env(queue_url, table, endpoint, sqs_endpoint, group_column=None):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": DB_URL,
        "QUEUE_URL": queue_url,
        "CLAIMS_TABLE": table,
        "OUTBOX_TABLE": "outbox",
        "OUTBOX_DEAD_LETTER_TABLE": "outbox_dead_letter",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_SQS": sqs_endpoint,
    })
    env.pop("OUTBOX_GROUP_COLUMN", None)
    if group_column:
        env["OUTBOX_GROUP_COLUMN"] = group_column
    return env


class RelayFailed(Exception):
    pass


def run_relays(n, env, workdir):
    """Starts `n` relay processes at once and waits for all; returns the
    wall time and each one's summary, counters and rusage."""
    procs = []
    started = time.monotonic()
    for i in range(n):
        files = {k: workdir / f"relay{i}.{k}" for k in ("out", "err", "time")}
        p = subprocess.Popen(
            ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(files["time"]),
             str(BIN), "drain", "--stats"],
            env=env, stdout=open(files["out"], "w"), stderr=open(files["err"], "w"))
        procs.append((p, files))
    results = []
    for p, files in procs:
        code = p.wait()
        (LOGS / workdir.name).mkdir(parents=True, exist_ok=True)
        for f in files.values():
            (LOGS / workdir.name / f.name).write_bytes(f.read_bytes())
        out = files["out"].read_text().strip().splitlines()
        err = files["err"].read_text().strip().splitlines()
        stats = next((json.loads(line) for line in reversed(err)
                      if line.startswith("{") and '"sql_round_trips"' in line), None)
        timing = files["time"].read_text().strip().splitlines()
        if code != 0 or stats is None or not timing:
            for other, _ in procs:  # the other relays of this scenario
                other.kill()
                other.wait()
            raise RelayFailed(f"relay {files['out'].stem} exited with {code} after "
                              f"{time.monotonic() - started:.1f}s; stderr tail: " + " | ".join(err[-5:]))
        wall, user, sys_, rss_kb = timing[-1].split()
        results.append({
            "exit": code,
            "summary": json.loads(out[-1]),
            "stats": stats,
            "cpu_s": float(user) + float(sys_),
            "max_rss_mb": int(rss_kb) / 1024,
            "wall_s": float(wall),
        })
    return time.monotonic() - started, results


def scenario(name, title, relays=1, fifo=False, latency_ms=0, workdir=None, moto=STACK):
    log(f"scenario {name}: {title}")
    (workdir / name).mkdir(exist_ok=True)
    queue_url, table = make_queue(moto, name, fifo), make_table(moto, name)
    seed(ROWS)
    proxy = None
    endpoint, sqs_endpoint = moto.endpoint, moto.sqs_endpoint
    if latency_ms:
        proxy = subprocess.Popen([sys.executable, __file__, "proxy", moto.endpoint, moto.sqs_endpoint,
                                  str(latency_ms)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # Both services through the proxy; it sends each to its moto.
        endpoint = sqs_endpoint = proxy.stdout.readline().strip()
    env = relay_env(queue_url, table, endpoint, sqs_endpoint, "group_key" if fifo else None)
    load = os.getloadavg()[0]
    consumer = Consumer(moto, queue_url)
    cpu = CpuWatch(moto)
    try:
        wall, results = run_relays(relays, env, workdir / name)
    except RelayFailed:
        consumer.stop.set()
        if proxy:
            proxy.kill()
            proxy.wait()
        drop_aws(moto, queue_url, table)
        raise
    relay_cpu = sum(r["cpu_s"] for r in results)
    proxy_cpu = proc_cpu_seconds(proxy.pid) if proxy else 0.0
    cores = cpu.done(relay_cpu + proxy_cpu)
    cores["relay_cores"], cores["proxy_cores"] = relay_cpu / wall, proxy_cpu / wall
    proxy_counts = None
    if proxy:
        proxy.terminate()
        proxy_counts = json.loads(proxy.stdout.readline())
        proxy.wait()
    sent = sum(r["summary"]["sent"] for r in results)
    consumer.finish(sent)
    left = outbox_count()
    drop_aws(moto, queue_url, table)

    requests = {}
    for r in results:
        for op, count in r["stats"]["aws_requests"].items():
            requests[op] = requests.get(op, 0) + count
    sql = sum(r["stats"]["sql_round_trips"] for r in results)
    # Costs are per row delivered: rows left behind (see `stranded`) do
    # not count as done.
    deleted = sum(r["summary"]["deleted"] for r in results)
    rows = deleted or 1
    ddb = sum(v for k, v in requests.items() if k.startswith("DynamoDB."))
    batch_items = {}
    for r in results:
        for op, count in r["stats"].get("aws_batch_items", {}).items():
            batch_items[op] = batch_items.get(op, 0) + count
    batch_marked = batch_items.get("DynamoDB.BatchWriteItem", 0)
    # Every ledger item is well under 1 KB: one write unit per UpdateItem
    # (conditional failures included) and per item of a BatchWriteItem.
    wcu = batch_marked + sum(v for k, v in requests.items()
                             if k in ("DynamoDB.UpdateItem", "DynamoDB.PutItem", "DynamoDB.DeleteItem"))
    skipped = sum(r["summary"]["skipped"] for r in results)
    claimed = sum(r["summary"]["claimed"] for r in results)
    # UpdateItems are claims, or marks of rows the batch path left out.
    claim_writes = requests.get("DynamoDB.UpdateItem", 0) - (sent - batch_marked)
    res = {
        "name": name,
        "title": title,
        "relays": relays,
        "rows_seeded": ROWS,
        "rows": deleted,
        "queue": "fifo" if fifo else "standard",
        "moto_server": moto.server,
        "moto_split": moto.split(),
        "aws_latency_ms": latency_ms,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "sent": sent,
        "deleted": deleted,
        "rows_left_in_outbox": left,
        "aws_requests": requests,
        "aws_requests_per_row": {k: v / rows for k, v in requests.items()},
        "proxy_forwarded": proxy_counts,
        "sqs_per_row": sum(v for k, v in requests.items() if k.startswith("SQS.")) / rows,
        "ddb_per_row": ddb / rows,
        "wcu_per_row": wcu / rows,
        "sql_round_trips": sql,
        "sql_per_row": sql / rows,
        "relay_cpu_s": relay_cpu,
        "cpu_s_per_10k": relay_cpu / rows * 10_000,
        "peak_rss_mb": max(r["max_rss_mb"] for r in results),
        "skipped": skipped,
        # Claim writes that did not win: claims lost to another relay.
        "wasted_claims": claim_writes - claimed,
        "wasted_claims_pct": 100 * (claim_writes - claimed) / ROWS,
        # Claims won but not sent in the pass: those rows wait for the lease.
        "stranded_claims": claimed - sent,
        "summaries": [r["summary"] for r in results],
        "loadavg_1m_before": load,
        "cpu_cores_used": cores,
        **consumer.latency(),
    }
    log(f"  {deleted} rows in {wall:.1f}s = {res['rows_per_s']:.0f} rows/s; "
        f"moto {cores['moto_cores']:.2f} cores, other {cores['other_cores']:.2f}")
    if left or consumer.latency()["received"] < ROWS or sent < ROWS:
        log(f"  WARNING: {left} rows left in the outbox, {len(consumer.seen)} received, "
            f"{sent} sent; relay logs in {(LOGS / name).relative_to(ROOT)}")
    return res


class RawAws:
    """Bare HTTP requests to moto in the relay's wire format (awsJson1_0,
    as the Rust SDK speaks it for both services). Much cheaper on the
    client side than boto3, so the ceiling measures moto, not the driver.
    moto checks no signature; the Authorization header only names the
    account (access key) and region."""

    AUTH = ("AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/{}/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=0")

    def __init__(self, moto):
        self.moto = moto
        self.conns = {}  # service -> open connection, while the server keeps it

    def call(self, service, target, body):
        payload = json.dumps(body)
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": target,
                   "Authorization": self.AUTH.format(service)}
        for attempt in (1, 2):
            try:
                conn = self.conns.get(service)
                if conn is None:
                    host, port = self.moto.url(service).split("//", 1)[1].rstrip("/").split(":")
                    conn = self.conns[service] = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", "/", payload, headers)
                r = conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    del self.conns[service]
                return r.status, data
            except (http.client.HTTPException, ConnectionError):
                self.conns.pop(service, None)
                if attempt == 2:
                    raise


def claim_request(table, pk, owner, sha, now_ms):
    """ledger.rs `write_claim`, first form: the conditional claim."""
    lease = now_ms + 60_000
    return {
        "TableName": table, "Key": {"pk": {"S": pk}},
        "UpdateExpression": "SET #s = :claimed, #o = :me, #l = :lease, #h = :sha, #e = :exp "
                            "ADD #a :one REMOVE #m",
        "ConditionExpression": "attribute_not_exists(pk) OR (#s = :claimed AND #l < :now)",
        "ExpressionAttributeNames": {"#s": "state", "#o": "owner", "#l": "lease_until_ms",
                                     "#h": "payload_sha256", "#e": "expires_at",
                                     "#a": "attempts", "#m": "message_id"},
        "ExpressionAttributeValues": {
            ":claimed": {"S": "CLAIMED"}, ":me": {"S": owner}, ":lease": {"N": str(lease)},
            ":sha": {"S": sha}, ":exp": {"N": str(lease // 1000 + 7 * 86400)},
            ":one": {"N": "1"}, ":now": {"N": str(now_ms)}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def batch_mark_request(table, rows, owner, now_ms):
    """ledger.rs `put_sent`: the SENT items of up to 25 rows, one call."""
    return {"RequestItems": {table: [
        {"PutRequest": {"Item": {
            "pk": {"S": pk}, "state": {"S": "SENT"}, "owner": {"S": owner},
            "lease_until_ms": {"N": str(now_ms + 60_000)}, "payload_sha256": {"S": sha},
            "message_id": {"S": message_id}, "attempts": {"N": "1"},
            "expires_at": {"N": str(now_ms // 1000 + 7 * 86400)}}}}
        for pk, sha, message_id in rows]}}


def send_request(queue_url, rows):
    """queue.rs `send_batch`: ten entries with the two message attributes."""
    return {"QueueUrl": queue_url, "Entries": [
        {"Id": str(i), "MessageBody": body,
         "MessageAttributes": {"outbox-id": {"DataType": "String", "StringValue": str(n)},
                               "outbox-source": {"DataType": "String", "StringValue": "outbox"}}}
        for i, (n, body) in enumerate(rows)]}


def ceiling():
    """The emulator's ceiling: the best of `ceiling_run` over a few
    concurrencies (more is not always faster: moto serialises on one core,
    and a starved consumer lets the queue, and with it the cost of every
    SendMessage, grow)."""
    runs = [ceiling_run(c) for c in CEILING_CONCURRENCY]
    best = max(runs, key=lambda r: r["rows_per_s"])
    return {**best, "runs": runs}


def ceiling_run(concurrency):
    """The relay's mix of calls fired raw, no database in between: per row
    the conditional claim, per ten rows one SendMessageBatch of ten, per 25
    rows one BatchWriteItem marking them SENT; `concurrency` requests in
    flight; the consumer drains the queue as in the scenarios."""
    log(f"emulator ceiling: {CEILING_ROWS} rows, {concurrency} in flight")
    queue_url, table = make_queue(STACK, f"ceiling{concurrency}"), make_table(STACK, f"ceiling{concurrency}")
    consumer = Consumer(STACK, queue_url)
    work = queue.Queue()
    # Work items of 50 rows: the relay's batch is 100 and marks 25 at once.
    for first in range(1, CEILING_ROWS + 1, 50):
        work.put([(n, json.dumps({"n": n, "t_ms": 0, "pad": "x" * 150}))
                  for n in range(first, min(first + 50, CEILING_ROWS + 1))])
    counts = {"DynamoDB.UpdateItem": 0, "SQS.SendMessageBatch": 0, "DynamoDB.BatchWriteItem": 0}
    errors = []
    lock = threading.Lock()

    def worker():
        # A worker takes 50 rows at a time: a claim per row, a send per ten
        # claimed rows, a batch mark per 25 sent rows, one request at a
        # time, so `concurrency` workers keep that many requests outstanding.
        aws_ = RawAws(STACK)
        while True:
            try:
                rows = work.get_nowait()
            except queue.Empty:
                return
            now = int(time.time() * 1000)
            unsent, unmarked = [], []
            for i, (n, body) in enumerate(rows):
                pk = f"outbox#{n}"
                sha = hashlib.sha256(body.encode()).hexdigest()
                calls = [("dynamodb", "DynamoDB_20120810.UpdateItem",
                          claim_request(table, pk, "ceiling", sha, now))]
                unsent.append((n, body))
                unmarked.append((pk, sha, f"m-{n}"))
                last = i == len(rows) - 1
                if len(unsent) == 10 or last:
                    calls.append(("sqs", "AmazonSQS.SendMessageBatch", send_request(queue_url, unsent)))
                    unsent = []
                if len(unmarked) == 25 or last:
                    calls.append(("dynamodb", "DynamoDB_20120810.BatchWriteItem",
                                  batch_mark_request(table, unmarked, "ceiling", now)))
                    unmarked = []
                for service, target, req in calls:
                    status, data = aws_.call(service, target, req)
                    ok = status == 200 and (service != "sqs" or not json.loads(data).get("Failed"))
                    with lock:
                        op = ("DynamoDB." if service == "dynamodb" else "SQS.") + target.split(".")[-1]
                        counts[op] += 1
                        if not ok:
                            errors.append(f"{target} {status} {data[:200]!r}")

    cpu = CpuWatch(STACK)
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    cores = cpu.done(0.0)
    consumer.finish(CEILING_ROWS)
    drop_aws(STACK, queue_url, table)
    res = {"rows": CEILING_ROWS, "concurrency": concurrency, "seconds": seconds,
           "rows_per_s": CEILING_ROWS / seconds,
           "requests_per_s": sum(counts.values()) / seconds, "aws_requests": counts,
           "errors": len(errors), "first_error": errors[0] if errors else None,
           "cpu_cores_used": cores}
    log(f"  {res['rows_per_s']:.0f} rows/s ({res['requests_per_s']:.0f} requests/s); "
        f"moto {cores['moto_cores']:.2f} cores, errors {len(errors)}")
    if errors:
        log(f"  first error: {errors[0]}")
    return res


# --------------------------------------------------------- Lambda cold start

class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """A stand-in for the Lambda runtime API that notes when the first
    `GET /2018-06-01/runtime/invocation/next` arrives and answers nothing."""
    first_poll = None
    polled = threading.Event()

    def do_GET(self):
        if self.path.startswith("/2018-06-01/runtime/invocation/next") and not RuntimeApi.polled.is_set():
            RuntimeApi.first_poll = time.monotonic()
            RuntimeApi.polled.set()
        self.close_connection = True

    do_POST = do_GET

    def log_message(self, *args):
        pass


def lambda_start(runs=10):
    log(f"Lambda start to first poll: {runs} runs")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = relay_env("http://127.0.0.1:1/000000000000/none", "none", STACK.endpoint, STACK.sqs_endpoint)
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "outbox-relay",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    })
    times = []
    for _ in range(runs):
        RuntimeApi.polled.clear()
        started = time.monotonic()
        p = subprocess.Popen([str(BIN)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = RuntimeApi.polled.wait(10)
        p.kill()
        p.wait()
        if not ok:
            raise SystemExit("the Lambda binary never polled the runtime API")
        times.append((RuntimeApi.first_poll - started) * 1000)
    server.shutdown()
    return {"runs_ms": times, "median_ms": sorted(times)[len(times) // 2]}


# ------------------------------------------------------------------- report

def machine():
    info = {"nproc": len(os.sched_getaffinity(0)), "arch": platform.machine()}
    with open("/proc/cpuinfo") as f:
        info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    info["kernel"] = platform.release()
    info["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def cmd(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"
    info["git_commit"] = cmd("git", "rev-parse", "--short", "HEAD") + (
        "-dirty" if cmd("git", "status", "--porcelain", "--untracked-files=no") else "")
    info["rustc"] = cmd("rustc", "-V")
    info["postgres"] = psql(ADMIN_URL, "SHOW server_version", capture=True)
    info["moto"] = cmd(sys.executable, "-c", "import moto; print(moto.__version__)")
    return info


def fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def report(results):
    sc = results["scenarios"]
    ceil = results["ceiling"]["rows_per_s"]
    head = ["metric"] + [f"{s['name']}: {s['title']}" for s in sc]
    ops = sorted({op for s in sc for op in s["aws_requests"]})
    rows = [
        ["rows delivered/seeded (relays)"] + [f"{s['rows']:,}/{s['rows_seeded']:,} ({s['relays']})" for s in sc],
        ["rows/s"] + [fmt(s["rows_per_s"], 0) for s in sc],
        # The ceiling was measured on the stack's moto (werkzeug) only.
        ["share of emulator ceiling"] + [f"{100 * s['rows_per_s'] / ceil:.0f} %"
                                         if s["moto_server"] == STACK.server else "-" for s in sc],
    ]
    rows += [[f"{op} /row"] + [fmt(s["aws_requests_per_row"].get(op, 0.0), 4) for s in sc] for op in ops]
    rows += [
        ["SQS requests/row"] + [fmt(s["sqs_per_row"], 3) for s in sc],
        ["DynamoDB requests/row"] + [fmt(s["ddb_per_row"], 3) for s in sc],
        ["DynamoDB WCU/row"] + [fmt(s["wcu_per_row"], 3) for s in sc],
        ["SQL round trips/row"] + [fmt(s["sql_per_row"], 3) for s in sc],
        ["relay CPU s/10k rows"] + [fmt(s["cpu_s_per_10k"], 2) for s in sc],
        ["peak RSS MB (per relay)"] + [fmt(s["peak_rss_mb"], 1) for s in sc],
        ["insert->receive p50/p99 s"] + [
            f"{s['insert_to_receive_p50_ms'] / 1000:.1f} / {s['insert_to_receive_p99_ms'] / 1000:.1f}"
            if s["insert_to_receive_p50_ms"] is not None else "-" for s in sc],
        ["send->receive p50/p99 ms"] + [
            f"{s['send_to_receive_p50_ms']:.0f} / {s['send_to_receive_p99_ms']:.0f}"
            if s["send_to_receive_p50_ms"] is not None else "-" for s in sc],
        ["wasted claims"] + [f"{s['wasted_claims']} ({s['wasted_claims_pct']:.1f} %)" for s in sc],
        ["claims stranded (wait for lease)"] + [f"{s['stranded_claims']}" for s in sc],
        ["rows left in outbox"] + [f"{s['rows_left_in_outbox']}" for s in sc],
        ["CPU cores: moto/relay/other"] + [
            "{moto_cores:.2f}/{relay_cores:.2f}/{other_cores:.2f}".format(**s["cpu_cores_used"]) for s in sc],
    ]
    out = [table(head, rows), ""]
    servers = {s["moto_server"] for s in sc}
    if len(servers) > 1:
        out.append("moto: " + "; ".join(
            f"{' '.join(s['name'] for s in sc if s['moto_server'] == srv)} under {srv}"
            + (" (answers every request with Connection: close: one TCP connection per AWS call)"
               if srv == "werkzeug" else " (keeps connections alive, as AWS does)")
            for srv in sorted(servers, key=lambda v: v != STACK.server)))

    c = results["ceiling"]
    sweep = ", ".join(f"{r['concurrency']} in flight {r['rows_per_s']:.0f}" for r in c["runs"])
    out.append(f"Emulator ceiling (the relay's AWS calls fired raw, {c['rows']:,} rows per run; rows/s: {sweep}): "
               f"best {c['rows_per_s']:.0f} rows/s = {c['requests_per_s']:.0f} requests/s, "
               f"moto at {c['cpu_cores_used']['moto_cores']:.2f} cores "
               f"({'SQS in a moto process of its own' if STACK.split() else 'one moto process'})")
    nb = results["null_backend"]
    out.append(f"Relay CPU against the null backend (instant canned AWS answers, real PostgreSQL; "
               f"the relay's own cost, no emulator): {nb['cpu_s_per_10k']:.2f} s/10k rows "
               f"(median of {len(nb['runs'])} runs of {nb['rows']:,} rows: "
               + ", ".join(f"{r['cpu_s_per_10k']:.2f}" for r in nb["runs"]) + ")")
    out.append(f"Lambda start to first poll: median {results['lambda_start']['median_ms']:.1f} ms of "
               f"{len(results['lambda_start']['runs_ms'])}; release binary {results['binary_mb']:.1f} MB; "
               f"release build {results['build_seconds']:.0f} s")
    out.append("")

    verdicts = []
    for key, text, ok in TARGETS:
        vals = [s[key] for s in sc]
        bad = [s["name"] for s in sc if not ok(s[key])]
        verdicts.append([text, " ".join(fmt(v, 3) for v in vals), "PASS" if not bad else "MISS (" + ",".join(bad) + ")"])
    s1, s3 = sc[0], next(s for s in sc if s["relays"] > 1)
    share = s1["rows_per_s"] / ceil
    verdicts.append([">= 80 % of emulator ceiling (s1)", f"{100 * share:.0f} %", "PASS" if share >= 0.8 else "MISS"])
    speedup = s3["rows_per_s"] / s1["rows_per_s"]
    headroom = share < 0.8 / 3
    verdicts.append([f"{s3['name']} >= 3x one relay (if headroom)", f"{speedup:.2f}x",
                     ("PASS" if speedup >= 3 else "MISS") if headroom else
                     f"n/a (s1 at {100 * share:.0f} % of ceiling: no 3x headroom)"])
    verdicts.append([f"{s3['name']} wasted claims < 5 %", f"{s3['wasted_claims_pct']:.2f} %",
                     "PASS" if s3["wasted_claims_pct"] < 5 else "MISS"])
    ls = results["lambda_start"]["median_ms"]
    verdicts.append(["Lambda start to first poll <= 50 ms", f"{ls:.1f} ms", "PASS" if ls <= 50 else "MISS"])
    verdicts.append(["release binary <= 20 MB", f"{results['binary_mb']:.1f} MB",
                     "PASS" if results["binary_mb"] <= 20 else "MISS"])
    results["verdicts"] = [{"target": t, "measured": m, "verdict": v} for t, m, v in verdicts]
    names = " ".join(s["name"] for s in sc)
    out.append(table(["target", f"measured ({names})", "verdict"], verdicts))
    m = results["machine"]
    out.append("")
    out.append(f"Machine: {m['nproc']} cores {m['cpu']}, {m['memory_gb']} GB, {m['kernel']}; "
               f"{m['postgres'] and 'PostgreSQL ' + m['postgres']}, moto {m['moto']}, {m['rustc']}; "
               f"commit {m['git_commit']}, {m['date']}")
    busy = max(s["cpu_cores_used"]["other_cores"] for s in sc)
    if busy > 0.6:
        out.append(f"NOTE: up to {busy:.2f} cores went to other processes during a scenario "
                   f"(PostgreSQL counts here too): numbers may be noisy.")
    return "\n".join(out)


# -------------------------------------------------------- the latency proxy

async def proxy_main(upstream, sqs_upstream, latency_ms):
    """Forwards HTTP/1.1 requests unchanged (request line, headers with
    Host, body), each after `latency_ms`, and the answers back: SQS requests
    (`X-Amz-Target: AmazonSQS.*`) to `sqs_upstream`, the others to
    `upstream` (the same URL when one moto serves all). moto closes its
    connection after every answer (werkzeug), so the proxy opens one
    upstream connection per request; towards the relay it keeps connections
    alive, as AWS endpoints do."""
    def host_port(url):
        host, port = url.split("//", 1)[1].rstrip("/").split(":")
        return host, int(port)
    main_up, sqs_up = host_port(upstream), host_port(sqs_upstream)
    counts = {}

    async def read_message(reader):
        head = await reader.readuntil(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if b"content-length" in fields:
            body = await reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size_line = await reader.readuntil(b"\r\n")
                chunk = await reader.readexactly(int(size_line.split(b";")[0], 16) + 2)
                body += size_line + chunk
                if size_line.strip() == b"0":
                    break
        elif head.startswith(b"HTTP/"):
            body = await reader.read()  # an answer delimited by closing
        else:
            body = b""
        return head, fields, body

    async def serve(client_r, client_w):
        try:
            while True:
                head, fields, body = await read_message(client_r)
                target = fields.get(b"x-amz-target", b"?.unknown").decode()
                op = target.rsplit(".", 1)[-1]
                await asyncio.sleep(latency_ms / 1000)
                up_r, up_w = await asyncio.open_connection(
                    *(sqs_up if target.startswith("AmazonSQS.") else main_up))
                up_w.write(head + body)
                await up_w.drain()
                rhead, rfields, rbody = await read_message(up_r)
                up_w.close()
                counts[op] = counts.get(op, 0) + 1
                # Unlike moto, keep the relay's connection open, as AWS
                # does: the relay then pays no connect per request.
                keep = b"content-length" in rfields
                if keep:
                    rhead = rhead.replace(b"Connection: close\r\n", b"Connection: keep-alive\r\n")
                client_w.write(rhead + rbody)
                await client_w.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            client_w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Also stop when the driver goes away (our stdin, its pipe, closes).
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()
    await stop.wait()
    server.close()
    print(json.dumps(counts), flush=True)


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


def null_backend(workdir, runs=3):
    """One relay against the null backend, `runs` times over
    max(BENCH_ROWS, 5000) rows (enough CPU for /usr/bin/time's 10 ms
    resolution); the median run counts."""
    rows = max(ROWS, 5000)
    log(f"null backend: {rows} rows, {runs} runs")
    server = subprocess.Popen([sys.executable, __file__, "null-aws"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    out = []
    try:
        for i in range(runs):
            seed(rows)
            (workdir / f"null{i}").mkdir(exist_ok=True)
            env = relay_env(f"{url}/000000000000/null", "null-ledger", url, url)
            _, [r] = run_relays(1, env, workdir / f"null{i}")
            done = r["summary"]["deleted"]
            out.append({"rows": done, "cpu_s": r["cpu_s"], "wall_s": r["wall_s"],
                        "cpu_s_per_10k": r["cpu_s"] / max(done, 1) * 10_000,
                        "aws_requests": r["stats"]["aws_requests"]})
            log(f"  {done} rows, CPU {r['cpu_s']:.2f} s = {out[-1]['cpu_s_per_10k']:.2f} s/10k rows")
    finally:
        server.terminate()
        server.wait()
    median = sorted(out, key=lambda r: r["cpu_s_per_10k"])[len(out) // 2]
    return {"runs": out, "rows": rows, "cpu_s_per_10k": median["cpu_s_per_10k"]}


# ------------------------------------------------- moto with keep-alive

def moto_keepalive_main():
    """moto's own WSGI application (what moto_server runs under werkzeug)
    served by waitress, which keeps HTTP/1.1 connections alive. One
    process, threads like werkzeug's: the same moto, another HTTP server."""
    import logging
    from moto.server import DomainDispatcherApplication, create_backend_app
    import waitress
    if os.environ.get("STACK_MOTO_FAST_CLOCK") == "1":
        # The same clock as the stack's moto (scripts/moto_server_fast_clock.py).
        sys.path.insert(0, str(ROOT / "scripts"))
        import moto_server_fast_clock
        moto_server_fast_clock.patch()
    logging.getLogger("waitress").setLevel(logging.ERROR)
    server = waitress.create_server(DomainDispatcherApplication(create_backend_app),
                                    host="127.0.0.1", port=0, threads=8, ident=None,
                                    asyncore_use_poll=True, connection_limit=1000)
    print(f"http://127.0.0.1:{server.effective_port}", flush=True)
    server.run()


def start_keepalive_moto(split):
    """Starts moto under waitress, split like the stack's moto; returns a
    Moto, or None when waitress is not installed."""
    try:
        import waitress  # noqa: F401
    except ImportError:
        log("waitress is not installed: no keep-alive scenario (scripts/bench.sh installs it)")
        return None, []
    procs = [subprocess.Popen([sys.executable, __file__, "moto-keepalive"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2 if split else 1)]
    urls = [p.stdout.readline().strip() for p in procs]
    return Moto(urls[0], urls[-1], [p.pid for p in procs], "waitress"), procs


def main():
    workdir = Path(os.environ.get("BENCH_TMP", "/tmp"))
    results = {
        "rows_per_scenario": ROWS,
        "build_seconds": float(os.environ.get("BENCH_BUILD_SECONDS", "nan")),
        "binary_mb": BIN.stat().st_size / 1024 / 1024,
        "machine": None,
    }
    shutil.rmtree(LOGS, ignore_errors=True)
    phases = results["phase_seconds"] = {}

    def timed(name, fn, *args, **kw):
        t = time.monotonic()
        out = fn(*args, **kw)
        phases[name] = round(time.monotonic() - t, 1)
        return out

    setup_database()
    try:
        results["machine"] = machine()
        results["ceiling"] = timed("ceiling", ceiling)
        results["failures"] = failures = []

        def attempt(name, *args, **kw):
            # A relay that dies (exit code, signal) is reported, and the
            # scenario run once more: the table shows the second run.
            for _ in range(2):
                try:
                    return timed(name, scenario, name, *args, workdir=workdir, **kw)
                except RelayFailed as e:
                    log(f"  FAILED: {e}")
                    failures.append(f"{name}: {e}")
            raise SystemExit(f"scenario {name} failed twice; logs in {LOGS.relative_to(ROOT)}")

        results["scenarios"] = [
            attempt("s1", "1 relay, standard"),
            attempt("s2", f"1 relay, FIFO {GROUPS} groups", fifo=True),
            attempt("s3", "4 relays, standard", relays=4),
            attempt("s4", f"1 relay, +{PROXY_LATENCY_MS} ms/AWS call", latency_ms=PROXY_LATENCY_MS),
        ]
        keepalive, procs = start_keepalive_moto(STACK.split())
        try:
            if keepalive:
                results["scenarios"].append(
                    attempt("s5", "s1, moto kept alive (waitress)", moto=keepalive))
        finally:
            for p in procs:
                p.terminate()
                p.wait()
        results["null_backend"] = timed("null_backend", null_backend, workdir)
        results["lambda_start"] = timed("lambda_start", lambda_start)
    finally:
        drop_database()
    text = report(results)
    started = os.environ.get("BENCH_STARTED")
    if started:
        results["elapsed_s_before_teardown"] = time.time() - int(started)
    results["table"] = text
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(text)
    print(f"\nresults: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["proxy"]:
        asyncio.run(proxy_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1:2] == ["moto-keepalive"]:
        moto_keepalive_main()
    elif sys.argv[1:2] == ["null-aws"]:
        asyncio.run(null_aws_main())
    else:
        main()
