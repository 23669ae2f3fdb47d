#!/usr/bin/env bash
# `make bench`: throughput and cost per row on the local stack (issue 6).
# Builds the release binary, starts its own moto and PostgreSQL
# (scripts/stack.sh), runs the scenarios of scripts/bench.py, prints the
# table and writes target/bench/results.json.
# Everything it started is stopped on exit, success or failure.
#
# moto runs split (stack.sh's default): SQS in one process, DynamoDB in the
# other, so the two use both cores. Measured with BENCH_ROWS=1000, before
# the cheaper clock below, split against STACK_MOTO_SPLIT=0: emulator
# ceiling 92 against 82 rows/s, s1 58 against 54, s3 29 against 19, s4 59
# against 39 rows/s.
#
#   BENCH_ROWS=3000         rows per scenario (about 100 rows/s here: 3,000 keep a
#                           clean-clone run, release build included, under 10 min)
#   BENCH_CEILING_ROWS=300  rows of each emulator-ceiling run
#   BENCH_ONLY=follow       only the following runs (scripts/bench_follow.py)
#   BENCH_FOLLOW=0          leave the following runs out
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
# moto's SQS reads the clock through two datetime objects for every message
# of the queue it scans (several scans per request); with four relays that
# alone overloaded it (sends past the relay's 4 s timeout, rows stranded
# until their lease ended). The bench, ceiling included, runs moto with a
# cheaper clock of the same values (scripts/moto_server_fast_clock.py).
export STACK_MOTO_FAST_CLOCK=${STACK_MOTO_FAST_CLOCK:-1}
trap stack_down EXIT INT TERM
started=$(date +%s)

echo "== tools (.venv: moto, waitress)"
scripts/tools.sh
# waitress serves moto with kept-alive connections for scenario s5 (see
# bench.py); without it (no PyPI) that scenario is left out.
.venv/bin/python -c "import waitress" 2>/dev/null ||
  .venv/bin/pip install -q "waitress==3.0.2" || echo "make bench: no waitress; s5 left out" >&2
for tool in /usr/bin/time psql; do
  command -v "$tool" >/dev/null || {
    echo "make bench: $tool is needed (apt-get install time postgresql-client)" >&2; exit 1; }
done

echo "== release build"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
cargo build --release --bin outbox-relay
export BENCH_BUILD_SECONDS=$(( ($(ms) - t0) / 1000 ))
echo "== release build took ${BENCH_BUILD_SECONDS}s"

echo "== local stack"
STACK_TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-relay-bench.XXXXXX"); chmod 755 "$STACK_TMP"; STACK_DIRS+=("$STACK_TMP")
start_moto
export MOTO_PIDS="${STACK_MOTO_PIDS[*]}"
start_postgres

if [[ ${BENCH_ONLY:-} != follow ]]; then
  echo "== scenarios"
  BENCH_STARTED=$started BENCH_TMP=$STACK_TMP .venv/bin/python scripts/bench.py
fi
# Following: latency while a producer inserts, NOTIFY against polling,
# beside one drain a minute (scripts/bench_follow.py; its settings there).
# BENCH_ONLY=follow runs this part alone, BENCH_FOLLOW=0 leaves it out.
if [[ ${BENCH_FOLLOW:-1} != 0 ]]; then
  echo "== following"
  .venv/bin/python scripts/bench_follow.py
fi
echo "== make bench finished in $(( $(date +%s) - started ))s"
