"""Runs a Switchyard workflow as an MCP tool, with the official MCP SDK for Python (PyPI `mcp`).

    python examples/python/mcp_client.py http://127.0.0.1:8080/mcp "$TOKEN" hello '{"name": "Ada"}'

The gateway's MCP endpoint lists the token's tenant's workflows as tools; calling one starts
the workflow and answers with its output once it finishes (within `gateway.mcp_wait`), with a
progress notification for each step that finishes meanwhile.
"""

from __future__ import annotations

import json
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent


async def on_progress(
    progress: float, total: float | None, message: str | None
) -> None:
    of = "?" if total is None else f"{total:g}"
    print(f"  progress {progress:g}/{of}: {message}")


async def main(url: str, token: str, tool: str, arguments: dict[str, object]) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30.0, read=120.0)
        ) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        print(f"connected, protocol {client.protocol_version}")
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(t.name for t in tools))
        result = await client.call_tool(tool, arguments, progress_callback=on_progress)
        text = "".join(c.text for c in result.content if isinstance(c, TextContent))
        print(
            json.dumps(result.structured_content, indent=2)
            if result.structured_content
            else text
        )
        return 1 if result.is_error else 0


if __name__ == "__main__":
    given = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    sys.exit(anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], given))
