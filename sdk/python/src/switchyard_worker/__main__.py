"""`python -m switchyard_worker MODULE:ATTR`: runs the `Worker` that MODULE defines as ATTR."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys

from .worker import Worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m switchyard_worker",
        description="Run a Switchyard worker defined with switchyard_worker.Worker: it "
        "declares its operations to the engine, then serves jobs until SIGTERM.",
    )
    parser.add_argument(
        "target", help="where the worker is, as MODULE:ATTR (e.g. tutor.worker:worker)"
    )
    parser.add_argument(
        "--nats",
        default=os.environ.get("SWITCHYARD_NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server URL(s), comma-separated (env SWITCHYARD_NATS_URL)",
    )
    parser.add_argument(
        "--creds",
        default=os.environ.get("SWITCHYARD_NATS__CREDENTIALS"),
        help="credentials of the role worker-<kind> (env SWITCHYARD_NATS__CREDENTIALS)",
    )
    parser.add_argument("--concurrency", type=int, help="jobs run at once")
    parser.add_argument("--worker-id", help="this replica's name in results and $SRV")
    args = parser.parse_args(argv)

    module_name, _, attr = args.target.partition(":")
    if not attr:
        parser.error("the target must be MODULE:ATTR")
    sys.path.insert(0, os.getcwd())
    worker = getattr(importlib.import_module(module_name), attr)
    if not isinstance(worker, Worker):
        parser.error(f"{args.target} is not a switchyard_worker.Worker")
    if args.concurrency:
        worker.concurrency = args.concurrency
    if args.worker_id:
        worker.worker_id = args.worker_id
    logging.basicConfig(
        level=os.environ.get("SWITCHYARD_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(worker.run(args.nats, args.creds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
