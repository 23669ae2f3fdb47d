#!/usr/bin/env bash
# `make run`: the relay end to end on a local stack. Starts DynamoDB Local,
# LocalStack (SQS), moto (Secrets Manager) and
# PostgreSQL (see scripts/stack.sh), creates the queue, the ledger table and
# the outbox tables, inserts sample rows, runs the Lambda under
# `cargo lambda watch`, invokes it with an EventBridge scheduled event, and
# shows the summary, the messages on the queue and the dead letters.
# Everything it started is stopped on exit, success or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack.sh
WATCH_PID=
cleanup() {
  if [[ -n $WATCH_PID ]]; then kill -- -"$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; fi
  stack_down
}
trap cleanup EXIT INT TERM

STACK_TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-relay-run.XXXXXX"); chmod 755 "$STACK_TMP"; STACK_DIRS+=("$STACK_TMP")
start_aws
start_postgres
export PATH="$PWD/.venv/bin:$PATH"

command -v psql >/dev/null || { echo "make run: psql is needed to create the demo tables (apt-get install postgresql-client)" >&2; exit 1; }
ADMIN_URL=$TEST_DATABASE_URL
export DATABASE_URL="${ADMIN_URL%/*}/outbox_relay_demo"
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS outbox_relay_demo" -c "CREATE DATABASE outbox_relay_demo" >/dev/null
psql -q "$DATABASE_URL" -f infra/sql/postgres.sql >/dev/null
psql -q "$DATABASE_URL" >/dev/null <<'SQL'
INSERT INTO outbox (payload) VALUES
  ('{"event":"order.created","order_id":1001,"total":"42.00"}'),
  ('{"event":"order.paid","order_id":1001}'),
  ('{"event":"order.created","order_id":1002,"total":"7.50"}'),
  ('{"event":"customer.renamed","customer_id":77,"name":"Zoë"}'),
  (E'a poison row: \x01 is not allowed in an SQS message'),
  ('{"event":"order.shipped","order_id":1001}');
SQL
echo "== outbox before the pass"
psql -q "$DATABASE_URL" -c "SELECT id, left(payload, 60) AS payload FROM outbox ORDER BY id"

eval "$(.venv/bin/python - <<'PY'
import boto3
sqs = boto3.client("sqs"); ddb = boto3.client("dynamodb")
url = sqs.create_queue(QueueName="outbox-demo")["QueueUrl"]
ddb.create_table(TableName="outbox-demo-claims", BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
ddb.update_time_to_live(TableName="outbox-demo-claims",
    TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
print(f"export QUEUE_URL={url} CLAIMS_TABLE=outbox-demo-claims")
PY
)"
echo "== queue $QUEUE_URL, ledger table $CLAIMS_TABLE"

PORT=$(free_port)
echo "== building and starting the Lambda under cargo lambda watch (port $PORT)"
setsid cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$PORT" >"$STACK_TMP/watch.log" 2>&1 &
WATCH_PID=$!
wait_port 127.0.0.1 "$PORT" 600 || { echo "cargo lambda watch did not start; its log:" >&2; cat "$STACK_TMP/watch.log" >&2; exit 1; }

echo "== invoking with an EventBridge scheduled event"
cargo lambda invoke outbox-relay -A 127.0.0.1 -P "$PORT" --data-file tests/fixtures/eventbridge-scheduled-event.json | tee "$STACK_TMP/summary.json"
echo

echo "== messages now on the queue"
.venv/bin/python - "$QUEUE_URL" <<'PY'
import sys, boto3
sqs = boto3.client("sqs"); url = sys.argv[1]; seen = 0
while True:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=300).get("Messages", [])
    if not got: break
    for m in got:
        a = m.get("MessageAttributes", {})
        print(f'  outbox-id={a["outbox-id"]["StringValue"]:<4} outbox-source={a["outbox-source"]["StringValue"]}  {m["Body"]}')
        seen += 1
print(f"  ({seen} messages)")
PY
echo "== outbox after the pass (empty) and the dead-letter table"
psql -q "$DATABASE_URL" -c "SELECT count(*) AS rows_left FROM outbox" -c "SELECT id, reason FROM outbox_dead_letter"
echo "== done: the relay sent every good row once, moved the poison row aside, and emptied the outbox"
