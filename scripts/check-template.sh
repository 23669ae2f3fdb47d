#!/usr/bin/env bash
# `make check-template`: the offline checks of template.yaml.
#   1. cfn-lint template.yaml
#   2. cfn-lint with the serverless rules (cfn-lint-serverless)
#   3. sam validate --lint --region us-east-1
#   4. cfn-guard test: the cases of infra/guard/tests/ against the rules
#   5. cfn-guard validate --rules infra/guard on template.yaml and on the
#      infra/iam/*.json policies of the cargo-lambda deploy: no `*` IAM
#      action or resource (but the two reviewed ones), no NotAction or
#      NotResource, no managed policy or SAM policy template, a Role on
#      every function
#   6. the same rules on the template after the SAM transform (the roles
#      SAM generates), which scripts/check_template_wildcards.py writes
#   7. scripts/check_template_wildcards.py (self-test, then the template):
#      each parameter an IAM resource refers to has an AllowedPattern that
#      rejects wildcard values, the one check Guard cannot express
# Runs every check even when one fails, then exits non-zero if any failed.
# Needs no AWS account, credentials or network once the tools are installed
# (scripts/tools.sh --deploy, which is a no-op after the first run); safe
# with CI=true and no stdin.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! scripts/tools.sh --deploy </dev/null; then
  echo "check-template: installing the tools failed (scripts/tools.sh --deploy)" >&2
  exit 1
fi

VENV_BIN=$PWD/.venv/bin
# Installed by scripts/tools.sh --deploy, the version pinned there.
CFN_GUARD=$PWD/.local/cfn-guard-$(sed -n 's/^CFN_GUARD_VERSION=//p' scripts/tools.sh)/bin/cfn-guard
export PATH="$VENV_BIN:$PATH"
# Offline and non-interactive: no telemetry, no update check, no prompts,
# and a region so nothing looks for an AWS config.
export SAM_CLI_TELEMETRY=0
export SAM_CLI_DISABLE_UPDATE_CHECK=1
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_REGION=${AWS_REGION:-$AWS_DEFAULT_REGION}
export AWS_EC2_METADATA_DISABLED=true
export PYTHONDONTWRITEBYTECODE=1

TEMPLATE=template.yaml
failed=()

run() {
  local name=$1
  shift
  echo "== $name"
  echo "\$ $*"
  if "$@" </dev/null; then
    echo "-- $name: ok"
  else
    echo "-- $name: FAILED (exit $?)" >&2
    failed+=("$name")
  fi
  echo
}

# The rules' own cases (infra/guard/tests/): the whole report only when a
# case fails, else the count.
guard_tests() {
  local out rc=0
  out=$("$CFN_GUARD" test --dir infra/guard 2>&1) || rc=$?
  if ((rc)) || grep -q "FAIL Rules" <<<"$out"; then
    echo "$out"
    return $((rc ? rc : 1))
  fi
  echo "$(grep -c '^Test Case #' <<<"$out") cases, each rule as expected"
}

# The rules on the template as SAM transforms it, offline.
# (Guard reads a data file by its extension: one without is silently skipped.)
guard_transformed() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/outbox-relay-sam.XXXXXX") || return 1
  "$VENV_BIN/python" scripts/check_template_wildcards.py --transform "$dir/transformed.json" "$TEMPLATE" &&
    "$CFN_GUARD" validate --rules infra/guard --data "$dir/transformed.json"
  local rc=$?
  rm -rf "$dir"
  return $rc
}

started=$(date +%s)
# cfn-lint exits 0 only when there is no finding at all (errors, warnings
# and informational alike); suppressions live in the template, with reasons.
run "cfn-lint" "$VENV_BIN/cfn-lint" "$TEMPLATE"
# The template comes first: --append-rules takes several values and would
# swallow a file name that follows it.
run "cfn-lint serverless rules" "$VENV_BIN/cfn-lint" "$TEMPLATE" --append-rules cfn_lint_serverless.rules
run "sam validate --lint" "$VENV_BIN/sam" validate --lint --region "$AWS_DEFAULT_REGION" --template-file "$TEMPLATE"
run "cfn-guard test (the rules' own cases)" guard_tests
run "cfn-guard IAM rules" "$CFN_GUARD" validate --rules infra/guard --data "$TEMPLATE" --data infra/iam
run "cfn-guard IAM rules after the SAM transform" guard_transformed
run "parameter pattern check self-test" "$VENV_BIN/python" scripts/check_template_wildcards.py --self-test
run "parameter pattern check" "$VENV_BIN/python" scripts/check_template_wildcards.py "$TEMPLATE"

elapsed=$(($(date +%s) - started))
if ((${#failed[@]})); then
  echo "check-template: FAILED: ${failed[*]} (${elapsed}s)" >&2
  exit 1
fi
echo "check-template: all 8 checks passed (${elapsed}s)"
