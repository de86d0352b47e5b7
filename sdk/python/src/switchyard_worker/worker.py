"""The worker: declares its operations, pulls jobs, runs handlers, settles every message.

It follows docs/worker-protocol.md of the Switchyard repository: JSON jobs from the durable
consumer `worker-<kind>` on `JOBS_<KIND>`, one result per job published (PubAck awaited)
before the message is acknowledged, retries by delayed redelivery, dead letters with the
original payload, cancellation by the engine's events, a `$SRV` micro service per replica,
and a clean stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.micro import add_service
from nats.micro.service import ServiceConfig

from .errors import DeclarationRefused, JobError, PermanentError, RetryableError

PROTOCOL = 1
"""The worker protocol version this SDK speaks."""

PULL_EXPIRY = 1.0
"""Seconds a pull request stays open on the server when no job comes."""

Json = dict[str, Any]
Handler = Callable[["JobContext", Json], Coroutine[Any, Any, Json]]

log = logging.getLogger("switchyard_worker")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Operation:
    """One operation a kind serves, with the schemas the engine checks workflows against."""

    name: str
    version: int
    input: Json
    output: Json
    handler: Handler
    description: str = ""
    capabilities: tuple[str, ...] = ()

    def declaration(self) -> Json:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "input": self.input,
            "output": self.output,
            "capabilities": list(self.capabilities),
        }


@dataclass
class JobContext:
    """What a handler knows about its job, and how it reports usage and progress."""

    job: Json
    attempt: int
    worker_id: str
    _js: JetStreamContext
    _seq: int = field(default=0)

    @property
    def job_id(self) -> str:
        return str(self.job.get("job_id", ""))

    @property
    def tenant(self) -> str:
        return str(self.job.get("tenant", ""))

    @property
    def instance_id(self) -> str:
        return str(self.job.get("instance_id", ""))

    @property
    def step_id(self) -> str:
        return str(self.job.get("step_id", ""))

    @property
    def operation(self) -> str:
        return str(self.job.get("operation", ""))

    async def usage(
        self, meter: str, quantity: float, unit: str, key: str | None = None
    ) -> None:
        """Publishes a usage event for billing. Its id comes from the job (and `key`, when
        one job counts several things), so a redelivered job is counted once."""
        if key is None:
            self._seq += 1
            key = str(self._seq)
        event_id = f"{self.job_id}-{meter}-{key}"
        event = {
            "event_id": event_id,
            "tenant": self.tenant,
            "meter": meter,
            "quantity": quantity,
            "unit": unit,
            "instance_id": self.instance_id,
            "step_id": self.step_id,
            "operation": self.operation,
            "at_ms": now_ms(),
        }
        await self._js.publish(
            f"usage.{self.tenant}.{meter}",
            json.dumps(event).encode(),
            headers=_headers(self.tenant, event_id),
        )

    async def progress(self, data: Json) -> None:
        """Tells whoever follows the instance how the job is getting on (best effort)."""
        if not self.instance_id:
            return
        self._seq += 1
        event_id = f"{self.job_id}-{self.attempt}-step_progress-{self._seq}"
        event = {
            "event_id": event_id,
            "tenant": self.tenant,
            "instance_id": self.instance_id,
            "type": "step_progress",
            "step_id": self.step_id,
            "data": data,
            "at_ms": now_ms(),
            "correlation_id": self.job.get("correlation_id", ""),
        }
        subject = f"wf.events.{self.tenant}.{self.instance_id}.step_progress"
        await self._js.publish(
            subject, json.dumps(event).encode(), headers=_headers(self.tenant, event_id)
        )


def _headers(tenant: str, msg_id: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Nats-Msg-Id": msg_id}
    if tenant:
        headers["Switchyard-Tenant"] = tenant
    return headers


def backoff(attempt: int, retry: Json, retry_after: float | None) -> float:
    """Seconds before delivery `attempt + 1`: exponential from the job's retry policy, with
    jitter, at least `retry_after`."""
    initial = float(retry.get("initial_delay_ms") or 1000) / 1000
    cap = float(retry.get("max_delay_ms") or 60000) / 1000
    multiplier = float(retry.get("multiplier") or 2.0)
    delay = min(cap, initial * multiplier ** max(0, attempt - 1))
    delay = delay * random.uniform(0.8, 1.2)
    return max(delay, retry_after or 0.0)


class Worker:
    """The replicas of one worker kind.

    ```python
    worker = Worker("tutor")

    @worker.operation("tutor.summarize", input={...}, output={...})
    async def summarize(ctx: JobContext, data: dict) -> dict:
        return {"summary": ...}

    asyncio.run(worker.run())
    ```
    """

    def __init__(
        self,
        kind: str,
        *,
        description: str = "",
        concurrency: int = 8,
        worker_id: str | None = None,
        grace: float = 30.0,
        progress_every: float = 10.0,
    ) -> None:
        self.kind = kind
        self.description = description or f"Switchyard worker kind {kind}"
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{kind}-{socket.gethostname()}-{os.getpid()}"
        self.grace = grace
        self.progress_every = progress_every
        self.operations: dict[str, Operation] = {}
        self._running: dict[tuple[str, str], set[asyncio.Task[Json]]] = {}
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    def operation(
        self,
        name: str,
        *,
        input: Json,
        output: Json,
        version: int = 1,
        description: str = "",
        capabilities: tuple[str, ...] = (),
    ) -> Callable[[Handler], Handler]:
        """Declares the decorated async function as the handler of operation `name`."""
        if not name.startswith(f"{self.kind}."):
            raise ValueError(f"operation {name!r} must be named '{self.kind}.<op>'")

        def register(handler: Handler) -> Handler:
            self.operations[name] = Operation(
                name=name,
                version=version,
                input=input,
                output=output,
                handler=handler,
                description=description or (handler.__doc__ or "").strip(),
                capabilities=capabilities,
            )
            return handler

        return register

    def declaration(self) -> Json:
        return {
            "protocol": PROTOCOL,
            "kind": self.kind,
            "operations": [op.declaration() for op in self.operations.values()],
        }

    async def connect(self, servers: str, credentials: str | None = None) -> None:
        self._nc = await nats.connect(
            servers,
            user_credentials=credentials,
            name=f"switchyard-{self.kind}-{self.worker_id}",
            max_reconnect_attempts=-1,
        )
        self._js = self._nc.jetstream()

    async def declare(self, patience: float = 60.0) -> Json:
        """Declares the operations; retries while no engine answers, up to `patience` s."""
        nc = self._require_nc()
        body = json.dumps(self.declaration()).encode()
        subject = f"svc.orchestrator.operations.declare.{self.kind}"
        deadline = time.monotonic() + patience
        delay = 0.2
        while True:
            try:
                reply = await nc.request(subject, body, timeout=5)
                break
            except (NoRespondersError, NatsTimeout):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        status = (reply.headers or {}).get("Nats-Service-Error-Code")
        if status:
            raise DeclarationRefused(status, reply.data.decode())
        answer: Json = json.loads(reply.data)
        return answer

    async def run(
        self,
        servers: str = "nats://127.0.0.1:4222",
        credentials: str | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Connects, declares, and serves jobs until `stop` is set or SIGTERM/SIGINT."""
        if not self.operations:
            raise ValueError("the worker declares no operations")
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await self.connect(servers, credentials)
        nc = self._require_nc()
        try:
            declared = await self.declare()
            log.info("declared %s", declared)
            service = await add_service(
                nc,
                ServiceConfig(
                    name=f"switchyard-{self.kind}",
                    version="0.1.0",
                    description=self.description,
                    metadata={
                        "kind": self.kind,
                        "operations": ",".join(self.operations),
                        "worker_id": self.worker_id,
                    },
                ),
            )
            for ending in ("cancelled", "failed"):
                await nc.subscribe(f"wf.events.*.*.{ending}", cb=self._on_instance_end)

            async def leave() -> None:
                # Out of the registry as soon as stopping begins, so that new work (a
                # capability's routing) goes elsewhere while the jobs in hand finish.
                await stop.wait()
                await service.stop()

            leaving = asyncio.create_task(leave())
            try:
                await self._serve(stop)
            finally:
                stop.set()
                await leaving
        finally:
            # Every job is settled by now (results awaited, acks and naks sent): flush what
            # is buffered and close. A drain would wait on the pull subscription's queue.
            if nc.is_connected:
                try:
                    await nc.flush(timeout=5)
                finally:
                    await nc.close()

    def _require_nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("not connected: call connect() or run() first")
        return self._nc

    def _require_js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("not connected: call connect() or run() first")
        return self._js

    async def _serve(self, stop: asyncio.Event) -> None:
        js = self._require_js()
        jobs = await js.pull_subscribe_bind(
            f"worker-{self.kind}", stream=f"JOBS_{self.kind.upper()}"
        )
        inflight: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            free = self.concurrency - len(inflight)
            if free <= 0:
                await asyncio.wait(
                    inflight, timeout=1, return_when=asyncio.FIRST_COMPLETED
                )
                continue
            try:
                batch = await jobs.fetch(free, timeout=PULL_EXPIRY)
            except (TimeoutError, NatsTimeout):
                # No job in time (nats-py raises either, depending on where it waited).
                continue
            for msg in batch:
                task = asyncio.create_task(self._handle(msg))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        # Stopping: no more pulls (an open pull subscription would hold up the drain);
        # running jobs get the grace period, the rest go back.
        await jobs.unsubscribe()
        if inflight:
            _, pending = await asyncio.wait(inflight, timeout=self.grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_instance_end(self, msg: Msg) -> None:
        parts = msg.subject.split(".")
        if len(parts) != 5:
            return
        for task in self._running.get((parts[2], parts[3]), set()):
            task.cancel()

    async def _handle(self, msg: Msg) -> None:
        js = self._require_js()
        try:
            job = json.loads(msg.data)
            if not isinstance(job, dict) or not job.get("job_id"):
                raise ValueError("a job is a JSON object with a job_id")
        except ValueError as e:
            await self._dead_letter(msg, "decode", f"not a job: {e}", {})
            await msg.term()
            return
        attempt = msg.metadata.num_delivered
        started = now_ms()
        op = self.operations.get(str(job.get("operation", "")))
        if op is None:
            why = f"{job.get('operation')!r} is not an operation of kind {self.kind}"
            await self._fail(msg, job, attempt, started, "unknown_operation", why)
            return
        deadline_ms = int(job.get("deadline_ms") or 0)
        if deadline_ms and now_ms() >= deadline_ms:
            why = "the step's deadline passed before the job ran"
            await self._fail(msg, job, attempt, started, "deadline_exceeded", why)
            return

        ctx = JobContext(job=job, attempt=attempt, worker_id=self.worker_id, _js=js)
        task = asyncio.create_task(op.handler(ctx, job.get("input") or {}))
        key = (str(job.get("tenant", "")), str(job.get("instance_id", "")))
        self._running.setdefault(key, set()).add(task)
        try:
            await self._watch(msg, task, deadline_ms)
        except asyncio.CancelledError:
            # The replica is stopping and the grace period ran out: another replica runs it.
            task.cancel()
            # Delayed past this replica's last pull request, which the server may still hold
            # open: handed back at once, the job would be delivered to that request again.
            await msg.nak(delay=PULL_EXPIRY * 1.5)
            raise
        finally:
            running = self._running.get(key)
            if running is not None:
                running.discard(task)
                if not running:
                    del self._running[key]

        if task.cancelled():
            if deadline_ms and now_ms() >= deadline_ms:
                why = "the step's deadline passed while the job ran"
                await self._fail(msg, job, attempt, started, "deadline_exceeded", why)
            else:
                await self._publish_result(
                    msg, job, attempt, started, status="cancelled"
                )
                await msg.ack()
            return
        error = task.exception()
        if error is None:
            output = task.result()
            await self._publish_result(msg, job, attempt, started, output=output)
            await msg.ack()
        elif isinstance(error, PermanentError):
            await self._fail(
                msg, job, attempt, started, "permanent", error.message, error.field
            )
        else:
            retry_after = (
                error.retry_after if isinstance(error, RetryableError) else None
            )
            message = error.message if isinstance(error, JobError) else repr(error)
            if not isinstance(error, JobError):
                log.warning("job %s raised %r; retrying", job["job_id"], error)
            retry = job.get("retry") or {}
            max_attempts = int(retry.get("max_attempts") or 1)
            if attempt < max_attempts:
                await msg.nak(delay=backoff(attempt, retry, retry_after))
            else:
                why = f"gave up after {attempt} attempts: {message}"
                await self._fail(msg, job, attempt, started, "retries_exhausted", why)

    async def _watch(
        self, msg: Msg, task: asyncio.Task[Json], deadline_ms: int
    ) -> None:
        """Waits for the handler, telling JetStream it is still at work, and cancels it at
        the deadline."""
        while not task.done():
            wait = self.progress_every
            if deadline_ms:
                wait = min(wait, max(0.0, (deadline_ms - now_ms()) / 1000))
            await asyncio.wait({task}, timeout=wait)
            if task.done():
                break
            if deadline_ms and now_ms() >= deadline_ms:
                task.cancel()
                await asyncio.wait({task})
                break
            await msg.in_progress()

    async def _fail(
        self,
        msg: Msg,
        job: Json,
        attempt: int,
        started: int,
        code: str,
        why: str,
        field: str | None = None,
    ) -> None:
        error: Json = {"code": code, "message": why}
        if field:
            error["field"] = field
        await self._publish_result(msg, job, attempt, started, error=error)
        await self._dead_letter(msg, code, why, job)
        await msg.term()

    async def _publish_result(
        self,
        msg: Msg,
        job: Json,
        attempt: int,
        started: int,
        *,
        output: Json | None = None,
        error: Json | None = None,
        status: str | None = None,
    ) -> None:
        result: Json = {
            k: job.get(k, "")
            for k in (
                "job_id",
                "tenant",
                "instance_id",
                "step_id",
                "operation",
                "correlation_id",
            )
        }
        result |= {
            "status": status or ("failed" if error else "succeeded"),
            "attempts": attempt,
            "worker_id": self.worker_id,
            "started_at_ms": started,
            "finished_at_ms": now_ms(),
        }
        if error:
            result["error"] = error
        elif output is not None:
            result["output"] = output
        to = job.get("reply_subject") or f"wf.result.{job.get('instance_id', '')}"
        headers = _headers(str(job.get("tenant", "")), f"result-{job['job_id']}")
        await self._publish(msg, to, json.dumps(result).encode(), headers)

    async def _dead_letter(self, msg: Msg, reason: str, why: str, job: Json) -> None:
        seq = msg.metadata.sequence.stream
        stream = msg.metadata.stream
        letter = {
            "kind": self.kind,
            "subject": msg.subject,
            "payload": base64.b64encode(msg.data).decode(),
            "headers": dict(msg.headers or {}),
            "reason": reason,
            "error": why,
            "attempts": msg.metadata.num_delivered,
            "stream_sequence": seq,
            "job_id": job.get("job_id", ""),
            "failed_at_ms": now_ms(),
            "worker_id": self.worker_id,
        }
        headers = _headers(str(job.get("tenant", "")), f"dlq-{stream}-{seq}")
        await self._publish(
            msg, f"dlq.{self.kind}", json.dumps(letter).encode(), headers
        )

    async def _publish(
        self, msg: Msg, subject: str, payload: bytes, headers: dict[str, str]
    ) -> None:
        """A JetStream publish, retried while the bus does not take it (a leader election),
        with progress acks so the job is not delivered to another replica meanwhile."""
        js = self._require_js()
        delay = 0.2
        for _ in range(8):
            try:
                await js.publish(subject, payload, headers=headers, timeout=5)
                return
            except (NatsTimeout, NoRespondersError) as e:
                log.warning("publishing to %s failed (%r); trying again", subject, e)
                await msg.in_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await js.publish(subject, payload, headers=headers, timeout=5)
