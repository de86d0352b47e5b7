#!/usr/bin/env python3
"""Start a Switchyard workflow straight over NATS and follow it to the end.

Uses only nats-py (pip install nats-py) and JSON: the start message goes to
wf.start.<tenant>.<workflow> with `Content-Type: application/json`, progress is followed on
wf.events.<tenant>.<instance>.> (the event type is the subject's last token), and the final
status comes from the orchestrator's request/reply endpoint svc.orchestrator.instance.get.

    python3 start_workflow.py --nats nats://127.0.0.1:4333 --tenant demo \
        --workflow hello --input '{"name": "Ada"}'

Exits 0 when the instance completed, 1 when it failed or was cancelled, 2 on a timeout.
"""

import argparse
import asyncio
import json
import sys
import uuid

import nats

TERMINAL = ("completed", "failed", "cancelled")


async def run(args: argparse.Namespace) -> int:
    nc = await nats.connect(args.nats)
    js = nc.jetstream()
    instance = str(uuid.uuid4())
    finished: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_event(msg) -> None:
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
    print(f"accepted: instance {instance} (stream {ack.stream}, sequence {ack.seq})", flush=True)

    try:
        outcome = await asyncio.wait_for(finished, args.timeout)
    except asyncio.TimeoutError:
        print(f"instance {instance} did not finish within {args.timeout}s", file=sys.stderr)
        await nc.drain()
        return 2
    query = {"tenant": args.tenant, "instance_id": instance}
    reply = await nc.request(
        "svc.orchestrator.instance.get", json.dumps(query).encode(), timeout=5
    )
    status = json.loads(reply.data)
    print(json.dumps({"status": status["status"], "output": status.get("output"),
                      "error": status.get("error")}))
    await nc.drain()
    return 0 if outcome == "completed" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server URL")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--workflow", default="hello")
    parser.add_argument("--input", default="{}", help="the workflow input, a JSON object")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
