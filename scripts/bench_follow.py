#!/usr/bin/env python3
"""`make bench`, following: insert-to-receive latency of `outbox-relay
follow` (release build) while a producer inserts at a steady rate, beside
scheduled mode (one drain per minute). scripts/bench.sh starts the stack
(DynamoDB Local, LocalStack, PostgreSQL) and runs this after scripts/bench.py; it prints a table
and writes target/bench/follow.json.

Every run gets a fresh database (infra/sql/postgres.sql, plus
infra/sql/postgres-notify.sql for the NOTIFY runs), queue and ledger. The
producer is one psql session fed single-row INSERTs (each its own
transaction, so each commit notifies) at the rate asked; every payload
carries the time it was written to psql, so "insert -> receive" includes the
insert's own round trip. A consumer of four threads long-polls the queue
(1 s waits), deletes what it receives, and notes, per message, insert ->
receive and insert -> SentTimestamp (SQS accepted it). "rows left" is the
outbox's row count when the producer stops; "max backlog" the largest count
sampled once a second while it ran.

The stack's stand-ins (scripts/stack.sh) bound what a run can show: past
their ceiling rows queue up in the emulator, not in the relay. The 1,000
rows/s runs therefore also go against the null backend (`bench.py
null-aws`: every claim wins, every send succeeds, nothing can be received),
where insert -> delete (a trigger on the outbox notes each row's delete) is
the latency and the backlog says whether the relay keeps up.

The idle lines follow an empty table for BENCH_FOLLOW_IDLE_SECONDS and count
the SQL statements the relay sent (its --stats), and its CPU.

Settings (environment):
  BENCH_FOLLOW_SECONDS=60        producer duration of each run
  BENCH_FOLLOW_RATES=100,1000    rows per second
  BENCH_FOLLOW_IDLE_SECONDS=20   length of each idle run
  BENCH_FOLLOW_SCHEDULED=1       0 leaves the scheduled-mode run out
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3

import benchlib
from benchlib import QueueConsumer, create_ledger_table, drop_queue_and_table, logger
from benchlib import percentile_rounded_index as percentile

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/outbox-relay"
OUT = ROOT / "target/bench/follow.json"
LOGS = ROOT / "target/bench/logs"
SECONDS = float(os.environ.get("BENCH_FOLLOW_SECONDS", "60"))
RATES = [int(r) for r in os.environ.get("BENCH_FOLLOW_RATES", "100,1000").split(",") if r]
IDLE_SECONDS = float(os.environ.get("BENCH_FOLLOW_IDLE_SECONDS", "20"))
SCHEDULED = os.environ.get("BENCH_FOLLOW_SCHEDULED", "1") != "0"
SCHEDULE_PERIOD = 60.0
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "")
DB_NAME = "outbox_relay_bench_follow"
DB_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + DB_NAME
CHANNEL = "outbox_relay"
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "")
SQS_ENDPOINT = os.environ.get("AWS_ENDPOINT_URL_SQS") or ENDPOINT
DDB_ENDPOINT = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or ENDPOINT
RUN_ID = str(int(time.time()))

log = logger("bench-follow")


def psql(*sql, url=None, capture=False):
    return benchlib.psql(url or DB_URL, *sql, capture=capture)


def setup_database(trigger, delete_log=False):
    files = ["infra/sql/postgres.sql"] + (["infra/sql/postgres-notify.sql"] if trigger else [])
    benchlib.recreate_database(ADMIN_URL, DB_NAME, DB_URL, files)
    if delete_log:
        # The null backend receives nothing: a row's delete is its delivery.
        psql("CREATE TABLE bench_done (id BIGINT, t_ms DOUBLE PRECISION, done_ms DOUBLE PRECISION)",
             """CREATE FUNCTION bench_done() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  INSERT INTO bench_done VALUES (OLD.id, (OLD.payload::json->>'t')::float8,
                    extract(epoch FROM clock_timestamp()) * 1000);
                  RETURN NULL;
                END $$""",
             "CREATE TRIGGER bench_done AFTER DELETE ON outbox FOR EACH ROW EXECUTE FUNCTION bench_done()")


def outbox_count():
    return int(psql("SELECT count(*) FROM outbox", capture=True))


def aws(service, endpoint):
    return boto3.client(service, endpoint_url=endpoint)


def make_aws(name):
    sqs, ddb = aws("sqs", SQS_ENDPOINT), aws("dynamodb", DDB_ENDPOINT)
    url = sqs.create_queue(QueueName=f"follow-{name}-{RUN_ID}")["QueueUrl"]
    return url, create_ledger_table(ddb, f"follow-{name}-{RUN_ID}")


def drop_aws(url, table):
    drop_queue_and_table(aws("sqs", SQS_ENDPOINT), aws("dynamodb", DDB_ENDPOINT), url, table)


class Producer:
    """Single-row INSERTs (each its own transaction) at `rate` rows/s for
    `seconds`, spread over one psql session per 100 rows/s: one session
    commits a few hundred rows a second here, fewer with the NOTIFY trigger
    (commits that notify take turns on the notification queue). Each row's
    time is the server's clock_timestamp() as the INSERT runs, just before
    its commit, so a session that falls behind does not count as relay
    latency."""

    def __init__(self, rate, seconds):
        self.rate, self.seconds, self.sent = rate, seconds, 0

    def run(self):
        sessions = max(1, self.rate // 100)
        ps = [subprocess.Popen(["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", DB_URL],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
              for _ in range(sessions)]
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= self.seconds:
                break
            due = int(elapsed * self.rate) + 1
            lines = [[] for _ in ps]
            while self.sent < due:
                lines[self.sent % sessions].append(
                    "INSERT INTO outbox (payload) SELECT json_build_object("
                    f"'n', {self.sent}, 't', extract(epoch FROM clock_timestamp()) * 1000)::text;\n")
                self.sent += 1
            for p, text in zip(ps, lines):
                if text:
                    p.stdin.write("".join(text))
                    p.stdin.flush()
            time.sleep(min(0.005, 1.0 / self.rate))
        self.written = time.monotonic() - start
        for p in ps:
            p.stdin.close()
        for p in ps:
            p.wait()
        # Committed rows over the time until the last commit.
        self.elapsed = time.monotonic() - start


class Sampler(threading.Thread):
    """The outbox's row count once a second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.counts = threading.Event(), []
        self.start()

    def run(self):
        while not self.stop.wait(1.0):
            try:
                self.counts.append(outbox_count())
            except subprocess.CalledProcessError:
                pass


class Consumer(QueueConsumer):
    """Long-polls (1 s), deletes, and notes each message's latencies."""

    def __init__(self, url, threads=4):
        super().__init__(url, lambda: aws("sqs", SQS_ENDPOINT), threads,
                         receive_args={"AttributeNames": ["SentTimestamp"]},
                         # moto busy: try again
                         on_receive_error=lambda e: log(f"receive failed: {e}"))
        self.seen, self.duplicates = set(), 0
        self.to_receive, self.to_send = [], []
        self.start_threads()

    def note(self, msgs, received):
        for m in msgs:
            body = json.loads(m["Body"])
            if body["n"] in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(body["n"])
            self.to_receive.append(received - body["t"])
            self.to_send.append(float(m["Attributes"]["SentTimestamp"]) - body["t"])

    def wait_for(self, n, timeout):
        end = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < end:
            time.sleep(0.2)
        self.join()


def relay_env(queue_url, table, notify, endpoint=None):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": DB_URL, "QUEUE_URL": queue_url, "CLAIMS_TABLE": table,
        "OUTBOX_TABLE": "outbox", "OUTBOX_DEAD_LETTER_TABLE": "outbox_dead_letter",
        "AWS_ENDPOINT_URL": endpoint or ENDPOINT, "AWS_ENDPOINT_URL_SQS": endpoint or SQS_ENDPOINT,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint or DDB_ENDPOINT,
        "RUST_LOG": "info",
    })
    for k in ("OUTBOX_NOTIFY_CHANNEL", "POLL_INTERVAL_MS", "FOLLOW_SECONDS", "MAX_PASS_SECONDS"):
        env.pop(k, None)
    if notify:
        env["OUTBOX_NOTIFY_CHANNEL"] = CHANNEL
    return env


def cpu_seconds(pid):
    return benchlib.proc_cpu_seconds(pid, children=False)


class Follower:
    """`outbox-relay follow --stats`, stopped with SIGTERM."""

    def __init__(self, env, name):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.err_path = LOGS / f"follow-{name}.stderr"
        self.err = open(self.err_path, "w")
        self.p = subprocess.Popen([str(BIN), "follow", "--stats"], env=env, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True)
        end = time.monotonic() + 30
        while "waiting for new rows" not in self.err_path.read_text():
            if time.monotonic() > end or self.p.poll() is not None:
                raise RuntimeError(f"follow did not start; see {self.err_path}")
            time.sleep(0.05)
        self.cpu0 = cpu_seconds(self.p.pid)

    def stop(self):
        cpu = cpu_seconds(self.p.pid) - self.cpu0
        self.p.terminate()
        out, _ = self.p.communicate(timeout=60)
        self.err.close()
        if self.p.returncode != 0:
            raise RuntimeError(f"follow exited {self.p.returncode}; see {self.err_path}")
        stats = [json.loads(l) for l in self.err_path.read_text().splitlines()
                 if l.startswith("{") and "sql_round_trips" in l][-1]
        return json.loads(out.strip().splitlines()[-1]), stats, cpu


def scheduled_drains(env, stop, name):
    """`outbox-relay drain` every SCHEDULE_PERIOD seconds until `stop`, and
    once more at the first period after it (the next minute's schedule)."""
    start = time.monotonic()
    k = 1
    while True:
        at = start + k * SCHEDULE_PERIOD
        time.sleep(max(0.0, at - time.monotonic()))
        with open(LOGS / f"drain-{name}-{k}.stderr", "w") as err:
            subprocess.run([str(BIN), "drain"], env=env, stdout=subprocess.DEVNULL, stderr=err, check=True)
        k += 1
        if stop.is_set():
            return


def latency_line(values):
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99), "max_ms": max(values)}


def run(mode, rate, seconds=SECONDS):
    """mode: notify | poll (follow), scheduled (a drain a minute), null (follow +
    NOTIFY against the null backend)."""
    name = f"{mode}-{rate}"
    log(f"{name}: {rate} rows/s for {seconds:.0f} s")
    null = None
    if mode == "null":
        null = subprocess.Popen([sys.executable, str(ROOT / "scripts/bench.py"), "null-aws"],
                                stdout=subprocess.PIPE, text=True)
        endpoint = null.stdout.readline().strip()
        url, table = f"{endpoint}/000000000000/null", "null-ledger"
    else:
        endpoint = None
        url, table = make_aws(name)
    setup_database(trigger=mode in ("notify", "null"), delete_log=mode == "null")
    env = relay_env(url, table, notify=mode in ("notify", "null"), endpoint=endpoint)
    consumer = Consumer(url) if mode != "null" else None
    follower = Follower(env, name) if mode != "scheduled" else None
    stop = threading.Event()
    drains = None
    if mode == "scheduled":
        drains = threading.Thread(target=scheduled_drains, args=(env, stop, name), daemon=True)
        drains.start()
    sampler = Sampler()
    producer = Producer(rate, seconds)
    producer.run()
    left = outbox_count()
    sampler.stop.set()
    stop.set()
    result = {"mode": mode, "rate": rate, "seconds": seconds, "inserted": producer.sent,
              "achieved_rate": producer.sent / producer.elapsed, "rows_left": left,
              "max_backlog": max(sampler.counts or [left])}
    if drains:
        drains.join()
    if consumer:
        consumer.wait_for(producer.sent, timeout=120)
        result.update(received=len(consumer.seen), duplicates=consumer.duplicates,
                      insert_to_receive=latency_line(consumer.to_receive),
                      insert_to_send=latency_line(consumer.to_send))
    else:
        end = time.monotonic() + 120
        while outbox_count() > 0 and time.monotonic() < end:
            time.sleep(0.5)
        done = [float(x) for x in psql("SELECT done_ms - t_ms FROM bench_done", capture=True).split()]
        result.update(received=len(done), insert_to_delete=latency_line(done))
    if follower:
        summary, stats, cpu = follower.stop()
        result.update(summary=summary, sql_round_trips=stats["sql_round_trips"], cpu_s=cpu)
    if null:
        null.terminate()
        null.wait()
    else:
        drop_aws(url, table)
    log(f"  {json.dumps(result)}")
    return result


def transactions():
    """Transactions the server counted for the bench database (a probe is
    one: an autocommit SELECT)."""
    return int(psql("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()", capture=True))


def idle(mode):
    """An empty table followed for IDLE_SECONDS: the statements the server
    saw per second (its own count: the start-up's checks and first drain
    are left out) and the relay's CPU over the same window."""
    url, table = make_aws(f"idle-{mode}")
    setup_database(trigger=mode == "notify")
    follower = Follower(relay_env(url, table, notify=mode == "notify"), f"idle-{mode}")
    time.sleep(3)  # PostgreSQL publishes its counters about once a second
    x0, c0, t0 = transactions(), cpu_seconds(follower.p.pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    time.sleep(1)
    x1, c1, t1 = transactions(), cpu_seconds(follower.p.pid), time.monotonic()
    summary, stats, _ = follower.stop()
    drop_aws(url, table)
    # Less the one transaction of the first transactions() call.
    per_s = (x1 - x0 - 1) / (t1 - t0)
    result = {"mode": mode, "seconds": t1 - t0, "statements_per_s": per_s,
              "cpu_share": (c1 - c0) / (t1 - t0), "summary": summary}
    log(f"idle {mode}: {json.dumps(result)}")
    return result


def fmt(v):
    return "-" if v is None else (f"{v:.0f}" if v >= 10 else f"{v:.1f}")


def report(runs, idles):
    lines = ["", "Following: insert -> receive latency (ms), rows left when the producer stopped",
             f"{'mode':<34} {'rows/s':>7} {'p50':>7} {'p99':>7} {'max':>7} {'left':>6} {'max backlog':>12}"]
    titles = {"notify": "follow, NOTIFY trigger", "poll": "follow, polling only (250 ms)",
              "scheduled": f"scheduled (a drain every {SCHEDULE_PERIOD:.0f} s)",
              "null": "follow, NOTIFY, null backend (-> delete)"}
    for r in runs:
        lat = r.get("insert_to_receive") or r.get("insert_to_delete")
        lines.append(f"{titles[r['mode']]:<34} {r['achieved_rate']:>7.0f} {fmt(lat['p50_ms']):>7} "
                     f"{fmt(lat['p99_ms']):>7} {fmt(lat['max_ms']):>7} {r['rows_left']:>6} {r['max_backlog']:>12}")
    lines.append("")
    lines.append("Idle (empty table): SQL statements per second and relay CPU")
    for i in idles:
        lines.append(f"  {i['mode']:<8} {i['statements_per_s']:.2f} statements/s, "
                     f"CPU {i['cpu_share'] * 100:.2f} % of a core")
    return "\n".join(lines)


def main():
    if not BIN.exists():
        sys.exit(f"{BIN} missing: cargo build --release (scripts/bench.sh does)")
    runs, idles = [], []
    # Untimed: the stand-ins' first requests (a JVM's, LocalStack's) are
    # slow by seconds, which is start-up, not following.
    log("warm-up (not reported)")
    run("notify", 50, seconds=3)
    for mode in ("notify", "poll"):
        idles.append(idle(mode))
    for rate in RATES:
        for mode in ("notify", "poll"):
            runs.append(run(mode, rate))
        if rate >= 1000:
            runs.append(run("null", rate))
    if SCHEDULED:
        runs.append(run("scheduled", RATES[0]))
    psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)", url=ADMIN_URL)
    text = report(runs, idles)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"runs": runs, "idle": idles, "table": text}, indent=2) + "\n")
    print(text)
    print(f"\nresults: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
