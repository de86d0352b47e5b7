#!/usr/bin/env python3
"""The AI Tutor of the product spec, as an outside service on the Switchyard worker SDK.

Worker kind `tutor`, three operations that do real work offline:

- `tutor.research` (capability `research`): ranks the paragraphs of a folder of Markdown
  documents against a topic (TF-IDF) and reports the best sentences and their sources;
- `tutor.summarize` (capability `summarize`): an extractive summary, the sentences whose
  words are most frequent in the text, in their original order;
- `tutor.knowledge_graph` (capability `knowledge_graph`): the named entities of a text as
  nodes and, for each sentence naming two of them, an edge labelled with the words between.

    python3 examples/ai_tutor/tutor.py --nats nats://127.0.0.1:4222 --creds tutor.creds
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from switchyard_worker import JobContext, PermanentError, Worker

DOCUMENTS = Path(__file__).with_name("documents")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "were",
        "which",
        "with",
        "without",
    ]
)
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")

worker = Worker(
    "tutor", description="The AI Tutor: research, summaries, knowledge graphs"
)

STRING = {"type": "string"}
SOURCE = {
    "type": "object",
    "required": ["title", "location", "snippet", "score"],
    "properties": {
        "title": STRING,
        "location": STRING,
        "snippet": STRING,
        "score": {"type": "number"},
    },
}


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text) if w.lower() not in STOPWORDS]


def sentences(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", re.sub(r"^#.*$", "", text, flags=re.MULTILINE)).strip()
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", flat) if s.strip()]


def summarize_text(text: str, count: int) -> list[str]:
    found = sentences(text)
    frequency = Counter(words(text))

    def weight(sentence: str) -> float:
        ws = words(sentence)
        return sum(frequency[w] for w in ws) / math.sqrt(len(ws) or 1)

    best = sorted(range(len(found)), key=lambda i: -weight(found[i]))[:count]
    return [found[i] for i in sorted(best)]


@worker.operation(
    "tutor.summarize",
    description="An extractive summary: the most representative sentences, in order.",
    capabilities=("summarize",),
    input={
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "sentences": {"type": "integer", "minimum": 1, "default": 3},
        },
    },
    output={
        "type": "object",
        "required": ["summary", "sentences"],
        "properties": {
            "summary": STRING,
            "sentences": {"type": "array", "items": STRING},
        },
    },
)
async def summarize(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    picked = summarize_text(str(data["text"]), int(data.get("sentences", 3)))
    if not picked:
        raise PermanentError("the text has no sentences", field="text")
    await ctx.usage("tutor_characters", len(str(data["text"])), "char")
    return {"summary": " ".join(picked), "sentences": picked}


@worker.operation(
    "tutor.research",
    description="Research over the tutor's documents: best passages and their sources.",
    capabilities=("research",),
    input={
        "type": "object",
        "required": ["topic"],
        "properties": {
            "topic": {"type": "string", "minLength": 1},
            "max_sources": {"type": "integer", "minimum": 1, "default": 3},
        },
    },
    output={
        "type": "object",
        "required": ["summary", "key_points", "sources"],
        "properties": {
            "summary": STRING,
            "key_points": {"type": "array", "items": STRING},
            "sources": {"type": "array", "items": SOURCE},
            "found": {"type": "boolean"},
        },
    },
)
async def research(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    query = set(words(str(data["topic"])))
    documents = {
        p: p.read_text(encoding="utf-8") for p in sorted(DOCUMENTS.glob("*.md"))
    }
    df: Counter[str] = Counter()
    for text in documents.values():
        df.update(set(words(text)))

    def idf(w: str) -> float:
        return math.log((1 + len(documents)) / (1 + df[w])) + 1

    scored = []
    for path, text in documents.items():
        tf = Counter(words(text))
        score = sum(tf[w] * idf(w) for w in query) / math.sqrt(sum(tf.values()) or 1)
        if score > 0:
            scored.append((score, path, text))
    scored.sort(key=lambda s: -s[0])
    best = scored[: int(data.get("max_sources", 3))]
    if not best:
        topic = data["topic"]
        return {
            "summary": f"The tutor's documents say nothing about {topic}.",
            "key_points": [],
            "sources": [],
            "found": False,
        }
    points = []
    sources = []
    for score, path, text in best:
        ranked = sorted(sentences(text), key=lambda s: -len(query & set(words(s))))
        points.append(ranked[0])
        title = text.splitlines()[0].lstrip("# ").strip() or path.stem
        snippet = ranked[0]
        sources.append(
            {"title": title, "location": path.name, "snippet": snippet, "score": score}
        )
    await ctx.usage("tutor_documents", len(best), "document")
    summary = " ".join(summarize_text(best[0][2], 2))
    return {"summary": summary, "key_points": points, "sources": sources, "found": True}


ENTITY = re.compile(r"\b([A-Z][a-z]+(?:[ -](?:[A-Z][a-z]+|[A-Z]+))*|[A-Z]{2,})\b")


@worker.operation(
    "tutor.knowledge_graph",
    description="Named entities of a text as nodes, and how sentences relate them as edges.",
    capabilities=("knowledge_graph",),
    input={
        "type": "object",
        "required": ["text"],
        "properties": {"text": {"type": "string", "minLength": 1}},
    },
    output={
        "type": "object",
        "required": ["nodes", "edges"],
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "label", "mentions"],
                    "properties": {
                        "id": STRING,
                        "label": STRING,
                        "mentions": {"type": "integer"},
                    },
                },
            },
            "edges": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["source", "target", "relation"],
                    "properties": {
                        "source": STRING,
                        "target": STRING,
                        "relation": STRING,
                    },
                },
            },
        },
    },
)
async def knowledge_graph(ctx: JobContext, data: dict[str, Any]) -> dict[str, Any]:
    mentions: Counter[str] = Counter()
    edges = []
    for sentence in sentences(str(data["text"])):
        found = [
            (m.start(), m.end(), m.group(1))
            for m in ENTITY.finditer(sentence)
            if m.group(1).lower() not in STOPWORDS
        ]
        mentions.update(label for _, _, label in found)
        for (_, end, a), (start, _, b) in itertools.pairwise(found):
            between = " ".join(words(sentence[end:start])) or "related to"
            if a != b:
                edges.append(
                    {"source": slug(a), "target": slug(b), "relation": between}
                )
    if not mentions:
        raise PermanentError("the text names no entities", field="text")
    nodes = [
        {"id": slug(label), "label": label, "mentions": n}
        for label, n in sorted(mentions.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return {"nodes": nodes, "edges": edges}


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The AI Tutor, a Switchyard worker.")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--creds", help="credentials of the role worker-tutor")
    parser.add_argument("--worker-id", help="this replica's name")
    args = parser.parse_args()
    if args.worker_id:
        worker.worker_id = args.worker_id
    asyncio.run(worker.run(args.nats, args.creds))
