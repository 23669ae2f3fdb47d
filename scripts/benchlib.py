"""What scripts/bench.py and scripts/bench_follow.py share: psql, the
percentiles, CPU from /proc, the bench database, the queue and ledger, and
the consumer's receive/delete loop. Each script keeps what it measures."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
PSQL = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1"]


def logger(prefix):
    """A log function writing `prefix: msg` lines to stderr."""
    def log(msg):
        print(f"{prefix}: {msg}", file=sys.stderr, flush=True)
    return log


def psql(url, *sql, capture=False):
    """Runs each statement (psql -c) on `url`; with `capture`, returns the
    unaligned output."""
    cmd = [*PSQL, "-tA", url]
    for s in sql:
        cmd += ["-c", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout.strip() if capture else None


def recreate_database(admin_url, name, url, sql_files):
    """Drops and creates database `name` (at `url`), then loads the SQL
    files (paths relative to the repository)."""
    psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    for f in sql_files:
        subprocess.run([*PSQL, url, "-f", str(ROOT / f)], check=True, capture_output=True)


# ----------------------------------------------------------- percentiles
# The two scripts have always used different (both standard) definitions;
# each keeps its own so that its figures stay comparable with earlier runs.

def percentile_nearest_rank(values, p):
    """Nearest rank (bench.py's): the smallest value with at least p % of
    the values at or below it."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def percentile_rounded_index(values, p):
    """The value at the rounded index p % of the way through the sorted
    values (bench_follow.py's)."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ------------------------------------------------------------------- CPU

def cpu_busy_seconds():
    """Whole machine: busy CPU seconds so far (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def proc_cpu_seconds(pid, children=True):
    """CPU seconds of a process (user + system), with `children` also those
    of its reaped children (the JVM's, Python's threads). Raises
    FileNotFoundError once the process is gone."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15 if children else 13]) / TICK


# ----------------------------------------------------- queue and ledger

def create_ledger_table(ddb, table):
    """A claim ledger as the template's: pay per request, key `pk`."""
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    return table


def drop_queue_and_table(sqs, ddb, queue_url, table):
    sqs.delete_queue(QueueUrl=queue_url)
    ddb.delete_table(TableName=table)


# -------------------------------------------------------------- consumer

class QueueConsumer:
    """Threads that long-poll a queue (1 s waits, up to 10 messages),
    hand each batch to `self.note(messages, received_ms)` under `self.lock`,
    then delete it. A subclass sets its own fields, then calls
    `self.start_threads()`. `receive_args` are added to each
    ReceiveMessage; `on_receive_error`, when given, is called with a failed
    receive's exception and the loop goes on (else it propagates)."""

    def __init__(self, url, client, threads=4, receive_args=None, on_receive_error=None):
        self.url = url
        self.client = client
        self.receive_args = receive_args or {}
        self.on_receive_error = on_receive_error
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]

    def start_threads(self):
        for t in self.threads:
            t.start()

    def note(self, messages, received_ms):
        raise NotImplementedError

    def loop(self):
        sqs = self.client()
        while not self.stop.is_set():
            try:
                got = sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          **self.receive_args).get("Messages", [])
            except Exception as e:  # noqa: BLE001 - only when on_receive_error says so
                if self.on_receive_error is None:
                    raise
                self.on_receive_error(e)
                continue
            if not got:
                continue
            received_ms = time.time() * 1000
            with self.lock:
                self.note(got, received_ms)
            sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join()
