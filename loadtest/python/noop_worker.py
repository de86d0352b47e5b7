#!/usr/bin/env python3
"""A no-op worker on the Python SDK, for the `python-worker` benchmark.

Kind `pybench`, one operation, `pybench.noop`, which answers with its input.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from switchyard_worker import JobContext, Worker

OBJECT = {"type": "object", "additionalProperties": True}


def build(concurrency: int) -> Worker:
    worker = Worker(
        "pybench", description="No-op jobs, for benchmarks", concurrency=concurrency
    )

    @worker.operation("pybench.noop", input=OBJECT, output=OBJECT)
    async def noop(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
        return data

    return worker


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--creds", help="credentials of the role worker-pybench")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(build(args.concurrency).run(args.nats, args.creds))
