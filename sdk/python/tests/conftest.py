"""A real nats-server with JetStream per test, and the streams a worker kind needs.

The engine's side of the protocol (the declaration endpoint) is answered here by a small
responder that stores nothing; the Switchyard repository's Rust tests run this SDK against the
real engine. Everything else goes through the real server: pulls, acks, naks with delay,
PubAcks, dedup.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

KIND = "demo"


def nats_server_binary() -> str:
    found = os.environ.get("SWITCHYARD_NATS_SERVER") or shutil.which("nats-server")
    if not found:
        pytest.fail(
            "no nats-server: set SWITCHYARD_NATS_SERVER (deploy/local/test.sh installs one)"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    store = tempfile.mkdtemp(prefix="switchyard-sdk-")
    proc = subprocess.Popen(
        [nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("nats-server did not start")
            time.sleep(0.05)
    yield f"nats://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(store, ignore_errors=True)


@dataclass
class Bus:
    """A connection to the test server with the streams of kind `demo`, the results and the
    dead letters, and the declarations the engine's responder received."""

    nc: Client
    js: JetStreamContext
    url: str
    declarations: list[dict[str, Any]] = field(default_factory=list)
    refuse: str | None = None

    async def publish_job(self, job: dict[str, Any]) -> None:
        await self.js.publish(
            f"jobs.{job['operation']}",
            json.dumps(job).encode(),
            headers={"Content-Type": "application/json", "Nats-Msg-Id": job["job_id"]},
        )

    async def next_result(self, timeout: float = 10) -> dict[str, Any]:
        return await self._next("RESULTS", "wf.result.>", timeout)

    async def next_dead_letter(self, timeout: float = 10) -> dict[str, Any]:
        return await self._next("DLQ", "dlq.>", timeout)

    async def _next(self, stream: str, subject: str, timeout: float) -> dict[str, Any]:
        sub = await self.js.pull_subscribe(
            subject, durable=f"read-{stream}", stream=stream
        )
        try:
            msgs = await sub.fetch(1, timeout=timeout)
        finally:
            await sub.unsubscribe()
        await msgs[0].ack()
        value: dict[str, Any] = json.loads(msgs[0].data)
        value["_headers"] = dict(msgs[0].headers or {})
        return value

    async def messages(self, stream: str) -> int:
        info = await self.js.stream_info(stream)
        return int(info.state.messages)


@pytest.fixture
async def bus(server: str) -> AsyncIterator[Bus]:
    nc = await nats.connect(server)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=f"JOBS_{KIND.upper()}",
            subjects=[f"jobs.{KIND}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
        )
    )
    await js.add_consumer(
        f"JOBS_{KIND.upper()}",
        ConsumerConfig(
            durable_name=f"worker-{KIND}", ack_policy=AckPolicy.EXPLICIT, ack_wait=5
        ),
    )
    await js.add_stream(StreamConfig(name="RESULTS", subjects=["wf.result.>"]))
    await js.add_stream(StreamConfig(name="DLQ", subjects=["dlq.>"]))
    await js.add_stream(StreamConfig(name="USAGE", subjects=["usage.>"]))
    await js.add_stream(StreamConfig(name="EVENTS", subjects=["wf.events.>"]))
    b = Bus(nc=nc, js=js, url=server)

    async def declare(msg: Msg) -> None:
        b.declarations.append(json.loads(msg.data))
        assert msg.reply
        if b.refuse:
            refusal = {"error": {"code": "conflict", "message": b.refuse}}
            headers = {"Nats-Service-Error-Code": "409", "Nats-Service-Error": b.refuse}
            await nc.publish(msg.reply, json.dumps(refusal).encode(), headers=headers)
        else:
            reply = {"kind": KIND, "stream": f"JOBS_{KIND.upper()}", "operations": []}
            await nc.publish(msg.reply, json.dumps(reply).encode())

    await nc.subscribe(f"svc.orchestrator.operations.declare.{KIND}", cb=declare)
    await nc.flush()
    yield b
    await nc.close()


def job(
    op: str, data: dict[str, Any], job_id: str, max_attempts: int = 3, **extra: Any
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant": "acme",
        "instance_id": f"i-{job_id}",
        "step_id": "s",
        "operation": op,
        "input": data,
        "retry": {
            "max_attempts": max_attempts,
            "initial_delay_ms": 50,
            "max_delay_ms": 200,
            "multiplier": 2.0,
        },
        **extra,
    }


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
