"""moto_server, unchanged but for how moto's SQS reads the clock (make test,
make chaos, make bench).

moto's SQS decides whether each message is visible or delayed by reading the
time through `moto.core.utils.unix_time_millis`, which builds two datetime
objects per call (about 4.4 us here). It does so for every message in the
queue several times per request (a receive computes all queue attributes,
three scans of the queue, three times for each message it hands out), so at
8 relays x 10,000 rows the emulator's SQS stopped answering within the
relay's timeouts. This reads the same UTC epoch time from `time.time()`
(about 0.1 us): same values, same behaviour, some thirty times less CPU per
scan.

One fidelity fix besides: moto's SendMessageBatch drops each entry's
MessageSystemAttributes (AWSTraceHeader), which SQS keeps and hands to the
consumer like SendMessage does; here the batch passes them on to moto's own
send_message. Everything else is moto_server as installed.

    python scripts/moto_server_fast_clock.py -H 127.0.0.1 -p PORT
"""

import sys
import threading
import time

import moto.core.utils as core_utils
import moto.sqs.models as sqs_models
from moto.server import main

_unix_time = core_utils.unix_time


def unix_time(dt=None):
    """Seconds since the epoch, UTC, as moto's unix_time returns them."""
    return time.time() if dt is None else _unix_time(dt)


def unix_time_millis(dt=None):
    return unix_time(dt) * 1000.0


_send_message_batch = sqs_models.SQSBackend.send_message_batch
_send_message = sqs_models.SQSBackend.send_message
# moto serves requests on threads: each batch's pending entries are its own.
_batch = threading.local()


def send_message_batch(self, queue_name, entries):
    """moto's batch send, each entry's MessageSystemAttributes kept (its
    loop calls send_message once per entry, in order)."""
    _batch.pending = [e.get("MessageSystemAttributes") for e in entries.values()]
    try:
        return _send_message_batch(self, queue_name, entries)
    finally:
        _batch.pending = None


def send_message(self, *args, **kwargs):
    pending = getattr(_batch, "pending", None)
    if pending:
        kwargs.setdefault("system_attributes", pending.pop(0))
    return _send_message(self, *args, **kwargs)


def patch():
    """Points moto's SQS at the cheaper clock, after checking it agrees."""
    assert abs(unix_time() - _unix_time()) < 0.5, "clock replacement disagrees with moto"
    sqs_models.unix_time = unix_time
    sqs_models.unix_time_millis = unix_time_millis
    sqs_models.SQSBackend.send_message_batch = send_message_batch
    sqs_models.SQSBackend.send_message = send_message


if __name__ == "__main__":
    patch()
    sys.argv[0] = "moto_server"
    sys.exit(main())
