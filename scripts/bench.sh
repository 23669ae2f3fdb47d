#!/usr/bin/env bash
# `make bench`: the relay side by side with a naive per-row relay on the
# local stack (DynamoDB Local, LocalStack's SQS, PostgreSQL), faithful and
# with AWS-like latency. Builds the release binaries, starts the stack
# (scripts/stack.sh), runs scripts/bench.py, prints the table and writes
# target/bench/results.json. Everything it started is stopped on exit.
#
#   BENCH_ROWS=3000         relay rows per scenario
#   BENCH_NAIVE_ROWS=400    baseline rows per scenario
#   BENCH_LATENCY_MS=8      added to every AWS call in the AWS-like scenarios
#   BENCH_ONLY=follow       only the following runs (scripts/bench_follow.py)
#   BENCH_FOLLOW=0          leave the following runs out
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
trap stack_down EXIT INT TERM
started=$(date +%s)

for tool in /usr/bin/time psql; do
  command -v "$tool" >/dev/null || {
    echo "make bench: $tool is needed (apt-get install time postgresql-client)" >&2; exit 1; }
done

echo "== release build (relay, naive baseline, latency proxy)"
t0=$(date +%s)
cargo build --release --bin outbox-relay --example naive_relay --example latency_proxy
export BENCH_BUILD_SECONDS=$(( $(date +%s) - t0 ))

echo "== local stack"
STACK_TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-relay-bench.XXXXXX"); chmod 755 "$STACK_TMP"; STACK_DIRS+=("$STACK_TMP")
start_aws
export BENCH_AWS_PIDS="${STACK_AWS_PIDS[*]}"
start_postgres

if [[ ${BENCH_ONLY:-} != follow ]]; then
  echo "== scenarios"
  .venv/bin/python scripts/bench.py
fi
# Following: latency while a producer inserts, NOTIFY against polling,
# beside one drain a minute (scripts/bench_follow.py; its settings there).
# BENCH_ONLY=follow runs this part alone, BENCH_FOLLOW=0 leaves it out.
if [[ ${BENCH_FOLLOW:-1} != 0 ]]; then
  echo "== following"
  .venv/bin/python scripts/bench_follow.py
fi
echo "== make bench finished in $(( $(date +%s) - started ))s"
