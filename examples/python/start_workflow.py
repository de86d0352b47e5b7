#!/usr/bin/env python3
"""Start a Switchyard workflow straight over NATS and follow it to the end.

Uses only nats-py (pip install nats-py) and JSON: the start message goes to
wf.start.<tenant>.<workflow> with `Content-Type: application/json`, progress is followed on
wf.events.<tenant>.<instance>.> (the event type is the subject's last token), and the final
status comes from the orchestrator's request/reply endpoint svc.orchestrator.instance.get.

    python3 start_workflow.py --nats nats://127.0.0.1:4333 --tenant demo \
        --creds .switchyard/bus/creds/operator.creds \
        --workflow hello --input '{"name": "Ada"}'

The bus asks for credentials: pass a creds file. A tenant's publisher credentials (from
`switchyard bus tenant-credentials <tenant>`) may start, cancel and signal that tenant's
workflows and read their events; replies come back under the inbox prefix `_INBOX_<tenant>`,
the only one they may read. The final status query needs credentials allowed to call
svc.orchestrator.* (an operator's); with a tenant's, pass --no-status.

Exits 0 when the instance completed, 1 when it failed or was cancelled, 2 on a timeout.
"""

import argparse
import asyncio
import json
import sys
import uuid

import nats
from nats.aio.msg import Msg

TERMINAL = ("completed", "failed", "cancelled")


async def run(args: argparse.Namespace) -> int:
    # Replies come back under the tenant's own inbox prefix, the only one its credentials
    # may read.
    inbox_prefix = f"_INBOX_{args.tenant}".encode()
    if args.creds:
        nc = await nats.connect(
            args.nats, user_credentials=args.creds, inbox_prefix=inbox_prefix
        )
    else:
        nc = await nats.connect(args.nats, inbox_prefix=inbox_prefix)
    js = nc.jetstream()
    instance = str(uuid.uuid4())
    finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_event(msg: Msg) -> None:
        event_type = msg.subject.rsplit(".", 1)[-1]
        print(f"event {event_type}", flush=True)
        if event_type in TERMINAL and not finished.done():
            finished.set_result(event_type)

    # Subscribe first, so no event is missed.
    await nc.subscribe(f"wf.events.{args.tenant}.{instance}.>", cb=on_event)
    start = {
        "instance_id": instance,
        "input": json.loads(args.input),
        "correlation_id": f"py-{instance}",
    }
    ack = await js.publish(
        f"wf.start.{args.tenant}.{args.workflow}",
        json.dumps(start).encode(),
        headers={"Content-Type": "application/json", "Nats-Msg-Id": instance},
    )
    print(
        f"accepted: instance {instance} (stream {ack.stream}, sequence {ack.seq})",
        flush=True,
    )

    try:
        outcome = await asyncio.wait_for(finished, args.timeout)
    except TimeoutError:
        print(
            f"instance {instance} did not finish within {args.timeout}s",
            file=sys.stderr,
        )
        await nc.drain()
        return 2
    if args.no_status:
        print(json.dumps({"status": outcome}))
        await nc.drain()
        return 0 if outcome == "completed" else 1
    query = {"tenant": args.tenant, "instance_id": instance}
    reply = await nc.request(
        "svc.orchestrator.instance.get", json.dumps(query).encode(), timeout=5
    )
    status = json.loads(reply.data)
    print(
        json.dumps(
            {
                "status": status["status"],
                "output": status.get("output"),
                "error": status.get("error"),
            }
        )
    )
    await nc.drain()
    return 0 if outcome == "completed" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nats", default="nats://127.0.0.1:4222", help="NATS server URL"
    )
    parser.add_argument(
        "--creds", help="a NATS creds file (the bus asks for credentials)"
    )
    parser.add_argument("--tenant", default="demo")
    parser.add_argument(
        "--no-status",
        action="store_true",
        help="print only the outcome (for a tenant's credentials)",
    )
    parser.add_argument("--workflow", default="hello")
    parser.add_argument(
        "--input", default="{}", help="the workflow input, a JSON object"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
