"""Switchyard workers in Python: declare typed operations and serve them over NATS JetStream.

The protocol is docs/worker-protocol.md of the Switchyard repository; this package is one
implementation of it on nats-py.
"""

from .errors import DeclarationRefused, JobError, PermanentError, RetryableError
from .worker import PROTOCOL, JobContext, Operation, Worker, backoff

__all__ = [
    "PROTOCOL",
    "DeclarationRefused",
    "JobContext",
    "JobError",
    "Operation",
    "PermanentError",
    "RetryableError",
    "Worker",
    "backoff",
]
