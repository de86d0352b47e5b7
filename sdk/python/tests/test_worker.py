"""The worker against a real nats-server: every way a job can end, as docs/worker-protocol.md
says it must."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from switchyard_worker import (
    DeclarationRefused,
    JobContext,
    PermanentError,
    RetryableError,
    Worker,
    backoff,
)

from .conftest import KIND, Bus, job, wait_for

OBJECT = {"type": "object"}


def demo_worker(**options: Any) -> tuple[Worker, dict[str, int]]:
    worker = Worker(KIND, worker_id="py-test", **options)
    calls: dict[str, int] = {}

    def count(ctx: JobContext) -> int:
        calls[ctx.job_id] = calls.get(ctx.job_id, 0) + 1
        return calls[ctx.job_id]

    @worker.operation(
        "demo.upper", input=OBJECT, output=OBJECT, capabilities=("shout",)
    )
    async def upper(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        """Upper-cases a text."""
        count(ctx)
        await ctx.usage("characters", len(data["text"]), "char")
        return {"text": str(data["text"]).upper()}

    @worker.operation("demo.flaky", input=OBJECT, output=OBJECT)
    async def flaky(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        n = count(ctx)
        if n <= int(data["fail_times"]):
            raise RetryableError(f"failure {n}")
        return {"calls": n}

    @worker.operation("demo.refuse", input=OBJECT, output=OBJECT)
    async def refuse(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        raise PermanentError("the text is not allowed", field="text")

    @worker.operation("demo.slow", input=OBJECT, output=OBJECT)
    async def slow(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        count(ctx)
        await asyncio.sleep(float(data["seconds"]))
        return {"slept": data["seconds"], "by": ctx.worker_id}

    return worker, calls


async def running(worker: Worker, bus: Bus) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(bus.url, stop=stop))
    await wait_for(lambda: len(bus.declarations) >= 1 and worker._js is not None)
    return stop, task


async def test_a_job_is_answered_before_it_is_acknowledged_and_usage_is_counted(
    bus: Bus,
) -> None:
    worker, calls = demo_worker()
    stop, task = await running(worker, bus)
    declared = bus.declarations[0]
    assert declared["protocol"] == 1 and declared["kind"] == KIND
    upper = next(o for o in declared["operations"] if o["name"] == "demo.upper")
    assert upper["capabilities"] == ["shout"]
    assert upper["description"] == "Upper-cases a text."

    await bus.publish_job(job("demo.upper", {"text": "hello"}, "j1"))
    result = await bus.next_result()
    assert result["status"] == "succeeded"
    assert result["output"] == {"text": "HELLO"}
    assert result["job_id"] == "j1" and result["instance_id"] == "i-j1"
    assert result["worker_id"] == "py-test" and result["attempts"] == 1
    assert result["_headers"]["Nats-Msg-Id"] == "result-j1"
    assert result["_headers"]["Content-Type"] == "application/json"
    # Acknowledged: the work queue is empty.
    await wait_for(lambda: calls.get("j1") == 1)
    await asyncio.sleep(0.2)
    assert await bus.messages(f"JOBS_{KIND.upper()}") == 0
    last = await bus.js.get_last_msg("USAGE", "usage.acme.characters")
    usage = json.loads(last.data or b"")
    assert usage["event_id"] == "j1-characters-1" and usage["quantity"] == 5
    stop.set()
    await task


async def test_a_retryable_failure_is_delivered_again_with_a_delay(bus: Bus) -> None:
    worker, _ = demo_worker()
    stop, task = await running(worker, bus)
    await bus.publish_job(job("demo.flaky", {"fail_times": 2}, "j2", max_attempts=3))
    result = await bus.next_result()
    assert result["status"] == "succeeded", result
    assert result["output"] == {"calls": 3} and result["attempts"] == 3
    stop.set()
    await task


async def test_used_up_attempts_fail_the_step_and_dead_letter_the_job(bus: Bus) -> None:
    worker, calls = demo_worker()
    stop, task = await running(worker, bus)
    await bus.publish_job(job("demo.flaky", {"fail_times": 9}, "j3", max_attempts=2))
    result = await bus.next_result()
    assert result["status"] == "failed"
    assert result["error"]["code"] == "retries_exhausted"
    assert "failure 2" in result["error"]["message"]
    letter = await bus.next_dead_letter()
    assert letter["reason"] == "retries_exhausted" and letter["job_id"] == "j3"
    assert calls["j3"] == 2
    stop.set()
    await task


async def test_a_permanent_error_fails_at_once_with_the_original_payload_in_the_dlq(
    bus: Bus,
) -> None:
    worker, _ = demo_worker()
    stop, task = await running(worker, bus)
    sent = job("demo.refuse", {"text": "no"}, "j4")
    await bus.publish_job(sent)
    result = await bus.next_result()
    assert result["status"] == "failed" and result["attempts"] == 1
    assert result["error"] == {
        "code": "permanent",
        "message": "the text is not allowed",
        "field": "text",
    }
    letter = await bus.next_dead_letter()
    assert letter["kind"] == KIND and letter["reason"] == "permanent"
    assert json.loads(base64.b64decode(letter["payload"])) == sent
    assert letter["subject"] == "jobs.demo.refuse"
    assert (
        letter["_headers"]["Nats-Msg-Id"]
        == f"dlq-JOBS_DEMO-{letter['stream_sequence']}"
    )
    stop.set()
    await task


async def test_what_is_not_a_job_or_not_served_here_goes_to_the_dlq(bus: Bus) -> None:
    worker, _ = demo_worker()
    stop, task = await running(worker, bus)
    await bus.js.publish("jobs.demo.upper", b"not json")
    letter = await bus.next_dead_letter()
    assert (
        letter["reason"] == "decode"
        and base64.b64decode(letter["payload"]) == b"not json"
    )
    await bus.publish_job(job("demo.unknown", {}, "j5"))
    result = await bus.next_result()
    assert result["error"]["code"] == "unknown_operation"
    stop.set()
    await task


async def test_a_cancelled_instance_stops_its_running_job(bus: Bus) -> None:
    worker, calls = demo_worker()
    stop, task = await running(worker, bus)
    await bus.publish_job(job("demo.slow", {"seconds": 30}, "j6"))
    await wait_for(lambda: calls.get("j6") == 1)
    await bus.nc.publish("wf.events.acme.i-j6.cancelled", b"{}")
    result = await bus.next_result(timeout=5)
    assert result["status"] == "cancelled" and result["job_id"] == "j6"
    stop.set()
    await task


async def test_a_job_past_its_deadline_fails_with_deadline_exceeded(bus: Bus) -> None:
    worker, _ = demo_worker()
    stop, task = await running(worker, bus)
    await bus.publish_job(job("demo.slow", {"seconds": 30}, "j7", deadline_ms=1))
    result = await bus.next_result()
    assert result["error"]["code"] == "deadline_exceeded"
    stop.set()
    await task


async def test_stopping_hands_unfinished_jobs_to_another_replica(bus: Bus) -> None:
    first, first_calls = demo_worker(grace=0.2)
    stop_first, first_task = await running(first, bus)
    # Longer than the first replica's grace period and its last pull's wait together.
    await bus.publish_job(job("demo.slow", {"seconds": 4}, "j8", max_attempts=1))
    await wait_for(lambda: first_calls.get("j8") == 1)
    stop_first.set()
    await first_task

    second = Worker(KIND, worker_id="py-second")
    second.operations = dict(first.operations)
    stop_second, second_task = await running(second, bus)
    result = await bus.next_result()
    assert result["status"] == "succeeded", result
    assert result["output"]["by"] == "py-second"
    stop_second.set()
    await second_task


async def pings(bus: Bus) -> int:
    """How many `switchyard-demo` replicas answer `$SRV.PING` within half a second."""
    inbox = bus.nc.new_inbox()
    answers = await bus.nc.subscribe(inbox)
    await bus.nc.publish(f"$SRV.PING.switchyard-{KIND}", b"", reply=inbox)
    count = 0
    try:
        while True:
            msg = await answers.next_msg(timeout=0.5)
            if msg.data:
                count += 1
    except TimeoutError:
        return count
    finally:
        await answers.unsubscribe()


async def test_stopping_leaves_the_registry_before_the_jobs_in_hand_finish(
    bus: Bus,
) -> None:
    worker, calls = demo_worker(grace=5)
    stop, task = await running(worker, bus)
    await wait_for_pings(bus, 1)
    await bus.publish_job(job("demo.slow", {"seconds": 1.5}, "j9"))
    await wait_for(lambda: calls.get("j9") == 1)
    stop.set()
    # Gone from $SRV at once, so no new work is routed here, while the job still runs.
    await wait_for_pings(bus, 0)
    assert not task.done()
    result = await bus.next_result()
    assert result["status"] == "succeeded", result
    await task


async def wait_for_pings(bus: Bus, count: int) -> None:
    for _ in range(20):
        if await pings(bus) == count:
            return
    raise AssertionError(f"never {count} replicas answering $SRV.PING")


async def test_a_refused_declaration_stops_the_worker_with_the_reason(bus: Bus) -> None:
    bus.refuse = "demo.upper version 1 is already declared with other schemas"
    worker, _ = demo_worker()
    with pytest.raises(DeclarationRefused) as refused:
        await worker.run(bus.url)
    assert refused.value.status == "409"
    assert "other schemas" in str(refused.value)


def test_backoff_grows_to_its_cap_and_honours_retry_after() -> None:
    policy = {"initial_delay_ms": 100, "max_delay_ms": 1000, "multiplier": 2.0}
    assert 0.08 <= backoff(1, policy, None) <= 0.12
    assert 0.32 <= backoff(3, policy, None) <= 0.48
    assert 0.8 <= backoff(10, policy, None) <= 1.2
    assert backoff(1, policy, 5.0) == 5.0


def test_an_operation_must_belong_to_the_kind() -> None:
    with pytest.raises(ValueError, match="demo.<op>"):
        Worker(KIND).operation("other.x", input=OBJECT, output=OBJECT)
