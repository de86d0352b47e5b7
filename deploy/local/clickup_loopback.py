"""A loopback ClickUp for local runs without the internet: the part of ClickUp's API v2 the
integration worker calls (GET /api/v2/user, POST /api/v2/list/{list_id}/task,
PUT /api/v2/task/{task_id}), answering in ClickUp's shapes and refusing what ClickUp refuses
(a wrong token, a blank task name, a bad priority, an unknown task) in its error shape
(`{"err", "ECODE"}`). Tasks live in memory for the life of the process.

Usage: python3 clickup_loopback.py TOKEN
Prints the port it listens on (127.0.0.1, chosen by the system), then serves until killed.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a write does with the id in its path and its JSON body: a status and a reply.
Action = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]

TASK = re.compile(r"^/api/v2/task/([A-Za-z0-9_-]+)$")
LIST_TASKS = re.compile(r"^/api/v2/list/([A-Za-z0-9_-]+)/task$")


class ClickUp:
    """The tasks created so far, by id, with their status."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.ids = itertools.count(0x86A0000)
        self.tasks: dict[str, dict[str, Any]] = {}

    def create(self, list_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return 400, {"err": "Task name invalid", "ECODE": "INPUT_005"}
        priority = body.get("priority")
        if priority is not None and priority not in (1, 2, 3, 4):
            return 400, {"err": "Priority invalid", "ECODE": "INPUT_003"}
        assignees = body.get("assignees", [])
        if not isinstance(assignees, list) or not all(
            isinstance(a, int) for a in assignees
        ):
            return 400, {"err": "Assignees invalid", "ECODE": "INPUT_004"}
        with self.lock:
            task_id = format(next(self.ids), "x")
            task = {
                "id": task_id,
                "name": name,
                "list": {"id": list_id},
                "status": {"status": "to do"},
                "url": f"https://app.clickup.com/t/{task_id}",
            }
            self.tasks[task_id] = task
        return 200, task

    def set_status(
        self, task_id: str, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        status = body.get("status")
        if not isinstance(status, str) or not status.strip():
            return 400, {"err": "Status invalid", "ECODE": "INPUT_002"}
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return 404, {"err": "Task not found, deleted", "ECODE": "ITEM_013"}
            task["status"] = {"status": status}
            return 200, task


def handler(clickup: ClickUp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                value = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return None
            return value if isinstance(value, dict) else None

        def authorized(self) -> bool:
            if self.headers.get("Authorization") == clickup.token:
                return True
            self.reply(401, {"err": "Token invalid", "ECODE": "OAUTH_025"})
            return False

        def do_GET(self) -> None:
            if not self.authorized():
                return
            if self.path == "/api/v2/user":
                self.reply(200, {"user": {"id": 1, "username": "loopback"}})
            else:
                self.reply(404, {"err": "Route not found", "ECODE": "APP_001"})

        def write(self, route: re.Pattern[str], action: Action) -> None:
            if not self.authorized():
                return
            found = route.match(self.path)
            body = self.body()
            if found is None:
                self.reply(404, {"err": "Route not found", "ECODE": "APP_001"})
            elif body is None:
                self.reply(
                    400, {"err": "Body is not a JSON object", "ECODE": "INPUT_001"}
                )
            else:
                self.reply(*action(found.group(1), body))

        def do_POST(self) -> None:
            self.write(LIST_TASKS, clickup.create)

        def do_PUT(self) -> None:
            self.write(TASK, clickup.set_status)

    return Handler


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: clickup_loopback.py TOKEN")
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(ClickUp(sys.argv[1])))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
