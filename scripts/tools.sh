#!/usr/bin/env bash
# Installs the tools the local stack and the deploy targets need, once;
# later calls are a quick no-op. Pinned so every machine gets the versions
# docs/testing.md measured.
#
#   scripts/tools.sh              .venv: moto (Secrets Manager), cargo-lambda
#   scripts/tools.sh --deploy     + cfn-lint, SAM CLI; .local/: cfn-guard
#                                 (AWS's prebuilt binary from npm,
#                                 checksum-pinned)
#   scripts/tools.sh --build      + ziglang (cross builds)
#   scripts/tools.sh --stand-ins  .local/: AWS's DynamoDB Local (from npm,
#                                 checksum-pinned) and LocalStack's SQS (a
#                                 venv on Python >= 3.13, constraints-pinned)
set -euo pipefail
cd "$(dirname "$0")/.."

# DynamoDB Local as the npm package amplify-dynamodb-simulator ships it
# (emulator/DynamoDBLocal.jar 1.25.1 and its SQLite library): the tarball's
# sha256, checked before anything of it is unpacked.
DDB_LOCAL_PACKAGE=amplify-dynamodb-simulator@2.9.30
DDB_LOCAL_SHA256=3503ffac19f183407909fecdacf4db51ab1fdad1da7b2f177016670b2d80e4b9
DDB_LOCAL_DIR=.local/dynamodb-local-2.9.30
# LocalStack's SQS provider, run as a plain Python process (no Docker). Every
# package pinned by scripts/localstack-constraints.txt: unpinned installs
# pull releases it no longer starts with. 2026.3.0 imports
# warnings.deprecated, which is Python 3.13's.
LOCALSTACK_VENV=.local/localstack-2026.3.0

# npm_pack_verified WHAT PACKAGE SHA256 DIR [HINT]: `npm pack`s PACKAGE
# into DIR and checks the tarball's sha256 before anything of it is
# unpacked; prints the tarball's path. Says why on stderr (and returns 1)
# when it cannot; HINT ends the message when npm is missing.
npm_pack_verified() {
  local what=$1 package=$2 sha256=$3 dir=$4 hint=${5:-}
  command -v npm >/dev/null || {
    echo "outbox-relay: npm is needed once to fetch $what ($package); install Node.js (e.g. apt-get install npm)$hint" >&2
    return 1
  }
  (cd "$dir" && npm pack --silent "$package" >/dev/null) || {
    echo "outbox-relay: npm pack $package failed (no registry?)" >&2; return 1
  }
  local tgz; tgz=$(ls "$dir"/*.tgz)
  echo "$sha256  $tgz" | sha256sum --check --quiet - || {
    echo "outbox-relay: $package does not have the pinned sha256 $sha256; refusing it" >&2
    return 1
  }
  echo "$tgz"
}

install_dynamodb_local() {
  [[ -f $DDB_LOCAL_DIR/DynamoDBLocal.jar ]] && return 0
  echo "outbox-relay: installing DynamoDB Local ($DDB_LOCAL_PACKAGE) into $DDB_LOCAL_DIR (once)" >&2
  local tmp; tmp=$(mktemp -d)
  local tgz; tgz=$(npm_pack_verified "DynamoDB Local" "$DDB_LOCAL_PACKAGE" "$DDB_LOCAL_SHA256" "$tmp") || { rm -rf "$tmp"; return 1; }
  tar -xzf "$tgz" -C "$tmp" package/emulator
  mkdir -p "$(dirname "$DDB_LOCAL_DIR")"
  rm -rf "$DDB_LOCAL_DIR"
  mv "$tmp/package/emulator" "$DDB_LOCAL_DIR"
  rm -rf "$tmp"
}

# AWS CloudFormation Guard (the IAM rules of infra/guard) as the npm package
# @cdklabs/cdk-validator-cfnguard ships it: bin/<os>/<arch>/cfn-guard is the
# static Linux binary of cfn-guard 3.1.1, from AWS's own release. The
# tarball's sha256 is checked before anything of it is unpacked. (The other
# way, `cargo install cfn-guard`, compiles for many minutes.)
CFN_GUARD_PACKAGE=@cdklabs/cdk-validator-cfnguard@0.0.62
CFN_GUARD_SHA256=660c14562d4c79d524d0623d80d494e41797acae9da23ecb10915d7f66ada80c
CFN_GUARD_VERSION=3.1.1
CFN_GUARD_DIR=.local/cfn-guard-$CFN_GUARD_VERSION

install_cfn_guard() {
  [[ -x $CFN_GUARD_DIR/bin/cfn-guard ]] && return 0
  local arch
  case "$(uname -s)/$(uname -m)" in
    Linux/x86_64 | Linux/amd64) arch=ubuntu/x86_64 ;;
    Linux/aarch64 | Linux/arm64) arch=ubuntu/aarch64 ;;
    Darwin/x86_64) arch=macos/x86_64 ;;
    Darwin/arm64) arch=macos/aarch64 ;;
    *)
      echo "outbox-relay: no prebuilt cfn-guard for $(uname -s)/$(uname -m); install it with: cargo install cfn-guard --locked --version $CFN_GUARD_VERSION --root $CFN_GUARD_DIR" >&2
      return 1
      ;;
  esac
  echo "outbox-relay: installing cfn-guard $CFN_GUARD_VERSION ($CFN_GUARD_PACKAGE) into $CFN_GUARD_DIR (once)" >&2
  local tmp; tmp=$(mktemp -d)
  local tgz; tgz=$(npm_pack_verified cfn-guard "$CFN_GUARD_PACKAGE" "$CFN_GUARD_SHA256" "$tmp" \
    ", or: cargo install cfn-guard --locked --version $CFN_GUARD_VERSION --root $CFN_GUARD_DIR") || { rm -rf "$tmp"; return 1; }
  tar -xzf "$tgz" -C "$tmp" "package/bin/$arch/cfn-guard"
  local version; version=$("$tmp/package/bin/$arch/cfn-guard" --version 2>/dev/null) || version=
  [[ $version == "cfn-guard $CFN_GUARD_VERSION" ]] || {
    echo "outbox-relay: the cfn-guard in $CFN_GUARD_PACKAGE does not run here or is not $CFN_GUARD_VERSION (got: ${version:-nothing})" >&2
    rm -rf "$tmp"; return 1
  }
  mkdir -p "$CFN_GUARD_DIR/bin"
  mv "$tmp/package/bin/$arch/cfn-guard" "$CFN_GUARD_DIR/bin/cfn-guard"
  rm -rf "$tmp"
}

python313() { # prints a Python >= 3.13, from PATH or pyenv
  local p
  for p in "${LOCALSTACK_PYTHON:-}" python3.14 python3.13 python3 \
    "$HOME"/.pyenv/versions/3.1[3-9]*/bin/python3 /usr/local/bin/python3.1[3-9]; do
    [[ -n $p ]] && command -v "$p" >/dev/null 2>&1 || continue
    "$p" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null && { command -v "$p"; return 0; }
  done
  return 1
}

install_localstack() {
  [[ -f $LOCALSTACK_VENV/.installed ]] && return 0
  local py; py=$(python313) || {
    echo "outbox-relay: LocalStack's SQS needs Python >= 3.13 (apt-get install python3.13, pyenv install 3.13, or LOCALSTACK_PYTHON=/path/to/python3.13); STACK_SQS=moto runs on moto's SQS instead, whose FIFO deduplication is not AWS's" >&2
    return 1
  }
  echo "outbox-relay: installing LocalStack (SQS) into $LOCALSTACK_VENV with $py (once)" >&2
  "$py" -m venv "$LOCALSTACK_VENV"
  "$LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check \
    -c scripts/localstack-constraints.txt \
    'localstack-core[base-runtime]==2026.3.0' moto-ext==5.1.54 'cbor2<6' 'pyopenssl<26' localstack-twisted==25.5.0
  touch "$LOCALSTACK_VENV/.installed"
}

if [[ "${1:-}" == "--stand-ins" ]]; then
  install_dynamodb_local
  [[ ${STACK_SQS:-localstack} == moto ]] || install_localstack
  exit 0
fi

VENV=.venv
STAMP=$VENV/.tools-v2
PACKAGES=(
  'moto[server]==5.2.5'
  'cargo-lambda==1.9.2'
  # The Python consumer recipe of examples/python-consumer and its test.
  'aws-lambda-powertools==3.37.0'
)
if [[ "${1:-}" == "--deploy" ]]; then
  install_cfn_guard
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
