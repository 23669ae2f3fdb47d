"""An SQS consumer Lambda (Python) for outbox-relay's messages, made
idempotent with AWS Lambda Powertools, keyed on the row, not the message.

SQS may deliver a message twice, and the relay may send a row twice (a
crash between its send and its ledger mark, on a standard queue). Each
delivery has its own SQS ``messageId``, so keying idempotency on that lets
the duplicate through. Every message the relay sends carries the row key in
its ``outbox-id`` message attribute and the table in ``outbox-source``: the
pair names the row, whatever the delivery.

Environment:
    IDEMPOTENCY_TABLE  DynamoDB table for Powertools (partition key ``id``, string;
                       TTL on ``expiration``)
    EFFECTS_TABLE      this example's stand-in for your own side effect
"""

import os

import boto3
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

# The row: (table, row key), from the message attributes the relay sets.
ROW_KEY = '[messageAttributes."outbox-source".stringValue, messageAttributes."outbox-id".stringValue]'

persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
config = IdempotencyConfig(
    event_key_jmespath=ROW_KEY,
    # A message without the attributes is not the relay's: fail it rather
    # than process it without protection.
    raise_on_no_idempotency_key=True,
    # Longer than the relay's longest resend window (its lease plus a pass).
    expires_after_seconds=24 * 3600,
)
processor = BatchProcessor(event_type=EventType.SQS)
effects = boto3.resource("dynamodb").Table(os.environ["EFFECTS_TABLE"])


@idempotent_function(data_keyword_argument="message", config=config, persistence_store=persistence)
def apply(message: dict) -> dict:
    """The side effect, once per row: here, count it in EFFECTS_TABLE."""
    row = message["messageAttributes"]["outbox-id"]["stringValue"]
    effects.update_item(
        Key={"row": row},
        UpdateExpression="ADD applied :one SET body = :body",
        ExpressionAttributeValues={":one": 1, ":body": message["body"]},
    )
    return {"row": row}


def record_handler(record: SQSRecord) -> dict:
    return apply(message=record.raw_event)


def handler(event, context):
    config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
