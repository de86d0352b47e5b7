"""How a handler says a job failed, and what the worker raises when it cannot start."""

from __future__ import annotations


class JobError(Exception):
    """A handler's failure; the subclass decides whether the job is tried again."""

    code = "permanent"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RetryableError(JobError):
    """A failure that may pass (a timeout, a 503, a rate limit): the job is delivered again
    after a backoff, while the step's attempts last. `retry_after` (seconds) is the least
    delay, e.g. from a `Retry-After` header."""

    code = "retries_exhausted"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(JobError):
    """A failure that will not pass (bad data, refused by the other side): the step fails at
    once and the job goes to the dead-letter queue. `field` names the offending input field."""

    code = "permanent"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DeclarationRefused(Exception):
    """The engine refused the worker's declaration of its operations."""

    def __init__(self, status: str, reply: str) -> None:
        super().__init__(f"the engine refused the declaration ({status}): {reply}")
        self.status = status
        self.reply = reply
