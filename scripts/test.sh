#!/usr/bin/env bash
# `make test`: every test, against a local stack this script starts and
# always stops (DynamoDB Local, LocalStack's SQS, moto for Secrets Manager,
# PostgreSQL, MariaDB when available; see scripts/stack.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
trap stack_down EXIT INT TERM
# The property tests (table shapes, the protocol model) draw from a fixed
# seed, so a run is reproducible; PROPTEST_RNG_SEED=<n> (and
# PROPTEST_CASES=<n>) explore further.
export PROPTEST_RNG_SEED=${PROPTEST_RNG_SEED:-20261203}

started=$(date +%s)
# TEST_QUICK=1 (a developer's loop with TEST_SUITES): no lints, no template check.
if [[ -z ${TEST_QUICK:-} ]]; then
  echo "== formatting and lints"
  cargo fmt --all -- --check
  cargo clippy --all-targets --features faults --quiet -- -D warnings

  echo "== SAM template: cfn-lint, sam validate --lint, IAM wildcard check"
  scripts/check-template.sh
fi

echo "== local stack"
stack_up

echo "== tests"
# Tests drive the real binary and cargo-lambda from the venv.
export PATH="$PWD/.venv/bin:$PATH"
set +e
threads=${TEST_THREADS:-4}
failed=0
# A step that fails is counted and the rest still run (--no-fail-fast).
run_tests() {
  cargo test --features faults --no-fail-fast "$@" 2>&1 | tee -a "$STACK_TMP/test.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || failed=$((failed + 1))
}

# TEST_SUITES="relay faults" runs just those suites of the integration
# binary (a word with `::` picks the tests whose names start with it:
# TEST_SUITES=faults::followers); otherwise the unit tests, the examples
# and the model run first.
if [[ -z ${TEST_SUITES:-} ]]; then
  run_tests --lib --bins --examples --test model -- --test-threads "$threads"
fi

# The integration tests are one binary (tests/it/). Each suite, a top-level
# module, runs in an invocation of its own, so the crash scenarios of
# `faults` never share the machine with the timing-sensitive suites.
listing=$(cargo test --features faults --test it -- --list --format terse) || exit 1
names=$(sed -n 's/: test$//p' <<<"$listing")
suites=${TEST_SUITES:-$(cut -d: -f1 <<<"$names" | sort -u)}
skipped=0
mysql_tests='mysql::|mariadb|shapes::mysql_'
for suite in $suites; do
  prefix=$suite
  [[ $suite == *::* ]] || prefix="$suite::"
  # The names that start with the prefix, taken literally.
  selected=$(awk -v p="$prefix" 'index($0, p) == 1' <<<"$names")
  # Without a MySQL/MariaDB server its tests are not run: they are counted
  # and reported as skipped below, never as passed.
  if [[ ${TEST_MYSQL_URL:-} == skip ]]; then
    kept=$(grep -vE "$mysql_tests" <<<"$selected" || true)
    skipped=$((skipped + $(grep -c . <<<"$selected") - $(grep -c . <<<"$kept")))
    selected=$kept
  fi
  [[ -n $selected ]] || continue
  echo "== suite $suite"
  # shellcheck disable=SC2086 # TEST_ARGS is a list of libtest flags
  run_tests --test it -- --exact --test-threads "$threads" ${TEST_ARGS:-} $selected
done

if [[ ${TEST_MYSQL_URL:-} == skip ]]; then
  echo "SKIPPED: $skipped MySQL/MariaDB tests did not run (no server reachable or installable; see 'stack:' lines above)."
fi
if grep -q "SKIPPED(mysql)" "$STACK_TMP/test.log"; then
  echo "NOTE: the MySQL/MariaDB variants were SKIPPED: no server was reachable or installable (see 'stack:' lines above)."
fi
status=$(( failed > 0 ))
echo "== make test finished in $(( $(date +%s) - started ))s"
exit "$status"
