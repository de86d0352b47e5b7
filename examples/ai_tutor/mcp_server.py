"""The AI Tutor's notes as an MCP server (the official Python SDK, PyPI `mcp`), spoken to over
stdio: how the workflow system calls the tutor over MCP. Configured for the `mcp` worker kind,
its tools become the steps `mcp.tutor.search_notes` and `mcp.tutor.summarize`.

    [mcp.servers.tutor]
    command = ["python3", "examples/ai_tutor/mcp_server.py"]

- `search_notes(query, limit)`: the paragraphs of the tutor's Markdown documents that best
  match a query (TF-IDF over paragraphs), with their document and score;
- `summarize(text, sentences)`: an extractive summary, the sentences whose words are most
  frequent in the text, in their original order.
"""

from __future__ import annotations

import math
from collections import Counter

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel
from tutor import DOCUMENTS, summarize_text, words

server = MCPServer(
    "ai-tutor",
    version="1.0.0",
    instructions="The AI Tutor's study notes: search them, summarise text.",
)


class Match(BaseModel):
    """One paragraph of the notes and how well it matches."""

    document: str
    title: str
    excerpt: str
    score: float


def paragraphs() -> list[tuple[str, str, str]]:
    """(document, title, paragraph) of every paragraph of the documents."""
    out = []
    for path in sorted(DOCUMENTS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip() if text else path.stem
        for block in text.split("\n\n"):
            block = " ".join(block.split())
            if block and not block.startswith("#"):
                out.append((path.name, title, block))
    return out


@server.tool()
def search_notes(query: str, limit: int = 3) -> list[Match]:
    """The paragraphs of the tutor's notes that best match `query`, best first."""
    wanted = set(words(query))
    if not wanted:
        raise ToolError("the query has no searchable words")
    found = paragraphs()
    df: Counter[str] = Counter()
    for _, _, text in found:
        df.update(set(words(text)))
    scored: list[Match] = []
    for document, title, text in found:
        tf = Counter(words(text))
        score = sum(
            tf[w] * (math.log((1 + len(found)) / (1 + df[w])) + 1) for w in wanted
        )
        if score > 0:
            score /= math.sqrt(sum(tf.values()) or 1)
            scored.append(
                Match(
                    document=document, title=title, excerpt=text, score=round(score, 4)
                )
            )
    scored.sort(key=lambda m: -m.score)
    return scored[: max(1, min(limit, 20))]


@server.tool()
def summarize(text: str, sentences: int = 2) -> str:
    """The `sentences` sentences of `text` whose words are most frequent in it, in order."""
    picked = summarize_text(text, max(1, min(sentences, 10)))
    if not picked:
        raise ToolError("the text has no sentences")
    return " ".join(picked)


if __name__ == "__main__":
    server.run()
