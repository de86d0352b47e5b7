#!/usr/bin/env python3
"""A Switchyard worker in plain nats-py, written from docs/worker-protocol.md alone.

Kind `textstats`, one operation, `textstats.count`: counts the words and sentences of a
text and lists its most frequent words. It declares the operation, pulls jobs, publishes
each result (waiting for the PubAck) before acknowledging, dead-letters what it cannot do,
and stops cleanly on SIGTERM.

    python3 plain_worker.py --nats nats://127.0.0.1:4222 --creds worker-textstats.creds
"""

import argparse
import asyncio
import base64
import json
import re
import signal
import time
from collections import Counter
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NoMessages

KIND = "textstats"
DECLARATION = {
    "protocol": 1,
    "kind": KIND,
    "operations": [
        {
            "name": "textstats.count",
            "version": 1,
            "description": "Words, sentences and the most frequent words of a text.",
            "input": {
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": {"type": "string"},
                    "top": {"type": "integer", "minimum": 1, "default": 3},
                },
            },
            "output": {
                "type": "object",
                "required": ["words", "sentences", "top"],
                "properties": {
                    "words": {"type": "integer"},
                    "sentences": {"type": "integer"},
                    "top": {"type": "array", "items": {"type": "string"}},
                },
            },
        }
    ],
}


def count(job_input: dict[str, Any]) -> dict[str, Any]:
    text = str(job_input["text"])
    words = re.findall(r"[a-z']+", text.lower())
    sentences = [s for s in re.split(r"[.!?]+", text) if s.strip()]
    top = [w for w, _ in Counter(words).most_common(int(job_input.get("top", 3)))]
    return {"words": len(words), "sentences": len(sentences), "top": top}


async def dead_letter(js: Any, msg: Msg, reason: str, why: str, worker_id: str) -> None:
    seq = msg.metadata.sequence.stream
    letter: dict[str, Any] = {"kind": KIND, "subject": msg.subject, "reason": reason}
    letter["error"] = why
    letter |= {"payload": base64.b64encode(msg.data).decode(), "stream_sequence": seq}
    letter |= {"attempts": msg.metadata.num_delivered, "worker_id": worker_id}
    headers = {
        "Content-Type": "application/json",
        "Nats-Msg-Id": f"dlq-JOBS_TEXTSTATS-{seq}",
    }
    await js.publish(f"dlq.{KIND}", json.dumps(letter).encode(), headers=headers)
    await msg.term()


async def answer(js: Any, msg: Msg, worker_id: str) -> None:
    try:
        job = json.loads(msg.data)
        to = job.get("reply_subject") or f"wf.result.{job['instance_id']}"
    except (ValueError, KeyError, AttributeError) as e:
        return await dead_letter(js, msg, "decode", f"not a job: {e!r}", worker_id)
    result = {k: job.get(k, "") for k in ("job_id", "tenant", "instance_id", "step_id")}
    result |= {"operation": job.get("operation", ""), "worker_id": worker_id}
    result |= {"correlation_id": job.get("correlation_id", ""), "started_at_ms": now()}
    result["attempts"] = msg.metadata.num_delivered
    error = None
    if job.get("operation") != "textstats.count":
        error = ("unknown_operation", f"{job.get('operation')!r} is not served here")
    else:
        try:
            result |= {"status": "succeeded", "output": count(job.get("input") or {})}
        except (KeyError, TypeError, ValueError) as e:
            error = ("permanent", f"cannot count: {e!r}")
    if error:
        result |= {"status": "failed", "error": {"code": error[0], "message": error[1]}}
    result["finished_at_ms"] = now()
    headers = {"Content-Type": "application/json", "Switchyard-Tenant": job["tenant"]}
    headers["Nats-Msg-Id"] = f"result-{job['job_id']}"
    await js.publish(
        to, json.dumps(result).encode(), headers=headers
    )  # waits for the PubAck
    if error:
        return await dead_letter(js, msg, error[0], error[1], worker_id)
    await msg.ack()


def now() -> int:
    return int(time.time() * 1000)


async def run(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.nats, user_credentials=args.creds)
    reply = await nc.request(
        f"svc.orchestrator.operations.declare.{KIND}",
        json.dumps(DECLARATION).encode(),
        timeout=10,
    )
    if reply.headers and "Nats-Service-Error-Code" in reply.headers:
        raise SystemExit(f"declaration refused: {reply.data.decode()}")
    print(f"declared: {reply.data.decode()}", flush=True)
    js = nc.jetstream()
    jobs = await js.pull_subscribe_bind(f"worker-{KIND}", stream=f"JOBS_{KIND.upper()}")
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    while not stopping.is_set():
        try:
            batch = await jobs.fetch(1, timeout=1)
        except NoMessages:
            continue
        for msg in batch:
            await answer(js, msg, args.worker_id)
    await nc.drain()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="A Switchyard worker in plain nats-py."
    )
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--creds", help="credentials of the role worker-textstats")
    parser.add_argument("--worker-id", default="textstats-1")
    asyncio.run(run(parser.parse_args()))
