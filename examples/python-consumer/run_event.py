"""Runs consumer.handler on an SQS event read from stdin, as Lambda would,
and prints the response (the test in tests/python_consumer.rs drives it)."""

import json
import sys
from dataclasses import dataclass

import consumer


@dataclass
class Context:
    """The parts of the Lambda context Powertools reads."""

    function_name: str = "outbox-consumer"
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:outbox-consumer"
    aws_request_id: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


print(json.dumps(consumer.handler(json.load(sys.stdin), Context())))
