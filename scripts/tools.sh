#!/usr/bin/env bash
# Installs the Python-side tools into .venv (moto, cargo-lambda, cfn-lint,
# SAM CLI) once; later calls are a quick no-op. Pinned so every machine gets
# the versions docs/design.md measured.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.tools-v2
PACKAGES=(
  'moto[server]==5.2.5'
  'cargo-lambda==1.9.2'
  # The Python consumer recipe of examples/python-consumer and its test.
  'aws-lambda-powertools==3.37.0'
)
if [[ "${1:-}" == "--deploy" ]]; then
  STAMP=$VENV/.deploy-tools-v1
  PACKAGES+=('cfn-lint==1.58.0' 'cfn-lint-serverless==0.3.6' 'aws-sam-cli==1.170.0')
elif [[ "${1:-}" == "--build" ]]; then
  # Cross builds (arm64 from x86_64 and back) link with zig.
  STAMP=$VENV/.build-tools-v1
  PACKAGES+=('ziglang')
fi

[[ -f $STAMP ]] && exit 0
PY=$(command -v python3 || true)
if [[ -z $PY ]]; then
  echo "outbox-relay: python3 is needed for the local stack (moto, cargo-lambda); install it (e.g. apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [[ ! -x $VENV/bin/pip ]]; then
  "$PY" -m venv "$VENV" || {
    echo "outbox-relay: cannot create $VENV; install python3-venv" >&2
    exit 1
  }
fi
echo "outbox-relay: installing ${PACKAGES[*]} into $VENV (once)" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
touch "$STAMP"
