#!/usr/bin/env bash
# The local stack for `make run`, `make test`, `make chaos` and `make bench`,
# on free loopback ports: AWS's own DynamoDB Local (AWS_ENDPOINT_URL_DYNAMODB),
# LocalStack's SQS (AWS_ENDPOINT_URL_SQS), moto for Secrets Manager
# (AWS_ENDPOINT_URL), PostgreSQL, and MariaDB/MySQL when one can be had.
# docs/testing.md says why these stand-ins and what they measured.
#
# STACK_SQS=moto / STACK_DYNAMODB=moto put moto back in either place (to
# compare; moto's conditional writes are not atomic and its FIFO
# deduplication forgets deleted messages).
#
#   source scripts/stack.sh && stack_up     # exports the TEST_*/AWS_* variables
#   stack_down                              # stops what stack_up started
#
# PostgreSQL: $TEST_DATABASE_URL if set, else 127.0.0.1:5432 if it answers,
# else a throwaway cluster (initdb/pg_ctl, as the postgres user when root).
# MySQL: $TEST_MYSQL_URL if set, else 127.0.0.1:3306 if it answers, else a
# throwaway mariadbd if the binaries are installed, else the MySQL tests are
# skipped and say so. STACK_THROWAWAY=1 forces throwaway servers (to try a
# fresh machine's path). Nothing started here outlives stack_down.

STACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK_PIDS=()
STACK_DIRS=()

stack_log() { echo "stack: $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # host port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

as_db_user() { # runs a server tool as postgres/mysql when we are root
  local user=$1; shift
  if [[ $(id -u) == 0 ]]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

pg_bin() {
  local b
  for b in "$(dirname "$(command -v initdb 2>/dev/null || echo /x/x)")" /usr/lib/postgresql/*/bin; do
    [[ -x $b/initdb && -x $b/pg_ctl ]] && { echo "$b"; return 0; }
  done
  return 1
}

moto_on_free_port() { # name: starts one moto_server, sets MOTO_URL
  local port; port=$(free_port)
  "$STACK_ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$STACK_TMP/moto-$1.log" 2>&1 &
  STACK_PIDS+=($!)
  STACK_MOTO_PIDS+=($!)
  if ! wait_port 127.0.0.1 "$port" 30; then
    stack_log "moto_server ($1) did not start; see $STACK_TMP/moto-$1.log"; return 1
  fi
  MOTO_URL="http://127.0.0.1:$port"
}

# DynamoDB Local in memory; -sharedDb, or it keeps one database per access
# key and region and a test's second client would not see its tables.
start_dynamodb_local() {
  command -v java >/dev/null || {
    stack_log "DynamoDB Local needs Java 17+ and java is not installed (apt-get install openjdk-17-jre-headless)"; return 1; }
  local dir="$STACK_ROOT/.local/dynamodb-local-2.9.30" port; port=$(free_port)
  (cd "$dir" && exec java -Xms256m -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar \
    -inMemory -sharedDb -port "$port") >"$STACK_TMP/dynamodb-local.log" 2>&1 &
  STACK_PIDS+=($!)
  STACK_AWS_PIDS+=($!)
  wait_port 127.0.0.1 "$port" 60 || {
    stack_log "DynamoDB Local did not start; see $STACK_TMP/dynamodb-local.log"; return 1; }
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$port"
}

# LocalStack's SQS on the host (no Docker): ready when ListQueues answers.
start_localstack() {
  local venv="$STACK_ROOT/.local/localstack-2026.3.0" port; port=$(free_port)
  mkdir -p "$STACK_TMP/localstack"
  env OVERRIDE_IN_DOCKER=0 SERVICES=sqs EAGER_SERVICE_LOADING=1 \
    GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" \
    SQS_ENDPOINT_STRATEGY=off DISABLE_EVENTS=1 SQS_DISABLE_CLOUDWATCH_METRICS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 FILESYSTEM_ROOT="$STACK_TMP/localstack" \
    "$venv/bin/python" -m localstack.runtime.main >"$STACK_TMP/localstack.log" 2>&1 &
  STACK_PIDS+=($!)
  STACK_AWS_PIDS+=($!)
  local i
  for ((i = 0; i < 600; i++)); do
    if curl -sf -o /dev/null -X POST -H 'Content-Type: application/x-amz-json-1.0' \
      -H 'X-Amz-Target: AmazonSQS.ListQueues' -d '{}' "http://127.0.0.1:$port/"; then
      export AWS_ENDPOINT_URL_SQS="http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  stack_log "LocalStack (SQS) did not answer in 60 s; see $STACK_TMP/localstack.log"; return 1
}

# moto serves Secrets Manager (AWS_ENDPOINT_URL: every service without an
# endpoint of its own), and SQS or DynamoDB when STACK_SQS / STACK_DYNAMODB
# say moto (a process of their own: moto answers one request at a time).
start_aws() {
  "$STACK_ROOT/scripts/tools.sh" || return 1
  "$STACK_ROOT/scripts/tools.sh" --stand-ins || return 1
  STACK_MOTO_PIDS=()
  STACK_AWS_PIDS=()
  moto_on_free_port main || return 1
  export AWS_ENDPOINT_URL=$MOTO_URL
  unset AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_DYNAMODB
  if [[ ${STACK_DYNAMODB:-local} == moto ]]; then
    moto_on_free_port dynamodb || return 1
    export AWS_ENDPOINT_URL_DYNAMODB=$MOTO_URL
  else
    start_dynamodb_local || return 1
  fi
  if [[ ${STACK_SQS:-localstack} == moto ]]; then
    moto_on_free_port sqs || return 1
    export AWS_ENDPOINT_URL_SQS=$MOTO_URL
  else
    start_localstack || return 1
  fi
  STACK_AWS_PIDS+=("${STACK_MOTO_PIDS[@]}")
  export AWS_REGION=${AWS_REGION:-us-east-1}
  export AWS_DEFAULT_REGION=$AWS_REGION
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
  export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
  export AWS_EC2_METADATA_DISABLED=true
  stack_log "DynamoDB ($(stand_in "${STACK_DYNAMODB:-local}")) at $AWS_ENDPOINT_URL_DYNAMODB, SQS ($(stand_in "${STACK_SQS:-localstack}")) at $AWS_ENDPOINT_URL_SQS, Secrets Manager (moto) at $AWS_ENDPOINT_URL"
}

stand_in() {
  case $1 in local) echo "DynamoDB Local" ;; localstack) echo "LocalStack" ;; *) echo "$1" ;; esac
}

start_postgres() {
  if [[ -n ${TEST_DATABASE_URL:-} ]]; then
    stack_log "PostgreSQL from TEST_DATABASE_URL"; return 0
  fi
  if [[ -z ${STACK_THROWAWAY:-} ]] && wait_port 127.0.0.1 5432 1; then
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    stack_log "PostgreSQL at 127.0.0.1:5432"; return 0
  fi
  local bin; bin=$(pg_bin) || {
    stack_log "no PostgreSQL answers on 127.0.0.1:5432 and initdb is not installed (apt-get install postgresql); set TEST_DATABASE_URL to use another server"
    return 1
  }
  local dir="$STACK_TMP/pg" port; port=$(free_port)
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown postgres "$dir" "$STACK_TMP"
  as_db_user postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$STACK_TMP/initdb.log" 2>&1 || {
    stack_log "initdb failed; see $STACK_TMP/initdb.log"; return 1
  }
  as_db_user postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null || {
    stack_log "pg_ctl start failed; see $dir/log"; return 1
  }
  STACK_PG="$bin/pg_ctl -D $dir/data"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  stack_log "throwaway PostgreSQL on 127.0.0.1:$port"
}

start_mysql() {
  if [[ -n ${TEST_MYSQL_URL:-} ]]; then
    stack_log "MySQL from TEST_MYSQL_URL"; return 0
  fi
  if [[ -z ${STACK_THROWAWAY:-} ]] && wait_port 127.0.0.1 3306 1; then
    export TEST_MYSQL_URL="mysql://root@127.0.0.1:3306/mysql"
    stack_log "MySQL/MariaDB at 127.0.0.1:3306"; return 0
  fi
  local mysqld; mysqld=$(command -v mariadbd || command -v mysqld || ls /usr/sbin/mariadbd 2>/dev/null || true)
  local install; install=$(command -v mariadb-install-db || command -v mysql_install_db || true)
  if [[ -z $mysqld || -z $install ]]; then
    stack_log "no MySQL/MariaDB answers on 127.0.0.1:3306 and mariadbd is not installed: the MySQL tests will be SKIPPED (apt-get install mariadb-server to run them)"
    export TEST_MYSQL_URL=skip; return 0
  fi
  local dir="$STACK_TMP/mysql" port; port=$(free_port)
  mkdir -p "$dir"
  [[ $(id -u) == 0 ]] && chown mysql "$dir"
  as_db_user mysql "$install" --datadir="$dir/data" --auth-root-authentication-method=normal >"$STACK_TMP/mysql-install.log" 2>&1 || {
    stack_log "mariadb-install-db failed; see $STACK_TMP/mysql-install.log"; return 1
  }
  as_db_user mysql "$mysqld" --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/sock" --innodb-flush-log-at-trx-commit=0 >"$dir/log" 2>&1 &
  STACK_PIDS+=($!)
  STACK_MYSQL_DIR="$dir/data"
  wait_port 127.0.0.1 "$port" 30 || { stack_log "mariadbd did not start; see $dir/log"; return 1; }
  export TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/mysql"
  stack_log "throwaway MariaDB on 127.0.0.1:$port"
}

stack_up() {
  STACK_TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-relay-stack.XXXXXX")
  chmod 755 "$STACK_TMP"
  STACK_DIRS+=("$STACK_TMP")
  start_aws && start_postgres && start_mysql
}

stack_down() {
  local pid
  for pid in "${STACK_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STACK_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n ${STACK_MYSQL_DIR:-} ]]; then
    # runuser does not pass our signal on: stop the server by its data dir.
    pkill -TERM -f -- "--datadir=$STACK_MYSQL_DIR" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      pgrep -f -- "--datadir=$STACK_MYSQL_DIR" >/dev/null || break
      sleep 0.1
    done
    STACK_MYSQL_DIR=
  fi
  if [[ -n ${STACK_PG:-} ]]; then
    as_db_user postgres $STACK_PG -m immediate stop >/dev/null 2>&1 || true
    STACK_PG=
  fi
  local d
  for d in "${STACK_DIRS[@]}"; do rm -rf "$d"; done
  STACK_PIDS=()
  STACK_DIRS=()
}
