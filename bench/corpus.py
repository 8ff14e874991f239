#!/usr/bin/env python
"""Deterministic synthetic corpus of Claude Code conversation JSONL files.

Shape (per file, seed-determined): one ``summary`` line, then a session of ``turns`` exchanges
(log-normal, median 12, 4-200). Each exchange is a ``user`` line (5-80 words of text), an
``assistant`` line with a text block (10-300 words, log-uniform) and, in 60% of exchanges, a
``tool_use`` block (Bash/Read/Edit) answered by a ``user`` line carrying a ``tool_result``
(20-600 words of tool output). Lines carry the usual envelope fields (uuid, parentUuid,
sessionId, cwd, timestamp, version, gitBranch, usage). The importer embeds only the text of
user/assistant messages; tool blocks are read and skipped, as in real sessions.

    python bench/corpus.py DIR [--files 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

TOOLS = ("Bash", "Read", "Edit", "Grep")


def _text(rng: random.Random, vocab: list[str], draw: Any, lo: int, hi: int) -> str:
    k = c.word_count(rng, lo, hi)
    words = []
    stop = rng.randint(8, 20)
    for _ in range(k):
        words.append(vocab[draw()])
        stop -= 1
        if stop == 0:
            words[-1] += rng.choice(".,.?!;:")
            stop = rng.randint(8, 20)
            if rng.random() < 0.1:
                words[-1] += "\n\n"
    return " ".join(words)


def turns_for(rng: random.Random, median: int = 12, lo: int = 4, hi: int = 200) -> int:
    return max(lo, min(hi, round(math.exp(rng.gauss(math.log(median), 0.7)))))


def write_file(path: Path, rng: random.Random, vocab: list[str], draw: Any, median: int) -> int:
    session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    t = datetime(2026, 9, 1, tzinfo=UTC) + timedelta(minutes=rng.randint(0, 100_000))
    env = {
        "isSidechain": False,
        "userType": "external",
        "cwd": f"/home/user/src/project-{rng.randint(1, 40)}",
        "sessionId": session,
        "version": "2.0.14",
        "gitBranch": "main",
    }
    lines: list[dict[str, Any]] = [
        {"type": "summary", "summary": _text(rng, vocab, draw, 4, 12), "leafUuid": session}
    ]
    parent = None
    n = turns_for(rng, median)

    def line(kind: str, message: dict[str, Any]) -> None:
        nonlocal parent, t
        uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        t += timedelta(seconds=rng.randint(2, 90))
        lines.append(
            {
                "parentUuid": parent,
                **env,
                "type": kind,
                "message": message,
                "uuid": uid,
                "timestamp": t.isoformat().replace("+00:00", "Z"),
            }
        )
        parent = uid

    for _ in range(n):
        line("user", {"role": "user", "content": _text(rng, vocab, draw, 5, 80)})
        content: list[dict[str, Any]] = [{"type": "text", "text": _text(rng, vocab, draw, 10, 300)}]
        tool = rng.random() < 0.6
        tool_id = f"toolu_{rng.getrandbits(64):016x}"
        if tool:
            name = rng.choice(TOOLS)
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": name,
                    "input": {"command": _text(rng, vocab, draw, 2, 12)},
                }
            )
        line(
            "assistant",
            {
                "id": f"msg_{rng.getrandbits(64):016x}",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": content,
                "stop_reason": "tool_use" if tool else "end_turn",
                "usage": {
                    "input_tokens": rng.randint(100, 9000),
                    "output_tokens": rng.randint(10, 900),
                },
            },
        )
        if tool:
            line(
                "user",
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": tool_id,
                            "content": _text(rng, vocab, draw, 20, 600),
                        }
                    ],
                },
            )
    with open(path, "w", encoding="utf-8") as fh:
        for obj in lines:
            fh.write(json.dumps(obj) + "\n")
    return n


def generate(
    directory: Path, files: int = 200, seed: int = 1, median_turns: int = 12
) -> dict[str, Any]:
    """Write the corpus (idempotent: reuses a complete one) and return its shape."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / ".shape.json"
    if marker.exists():
        return json.loads(marker.read_text())
    rng = random.Random(seed)
    vocab = list(c.vocabulary())
    rng.shuffle(vocab)
    draw = c._zipf_sampler(rng, len(vocab))
    turns = []
    for i in range(files):
        sub = directory / f"-home-user-src-project-{i % 8}"
        sub.mkdir(exist_ok=True)
        turns.append(write_file(sub / f"session-{i:05d}.jsonl", rng, vocab, draw, median_turns))
    sizes = sorted(p.stat().st_size for p in directory.rglob("*.jsonl"))
    ts = sorted(turns)
    shape = {
        "files": files,
        "seed": seed,
        "turns_median": ts[len(ts) // 2],
        "turns_min": ts[0],
        "turns_max": ts[-1],
        "bytes_total": sum(sizes),
        "bytes_median": sizes[len(sizes) // 2],
        "bytes_max": sizes[-1],
        "format": "Claude Code session JSONL (summary, user/assistant text, tool_use/tool_result)",
    }
    marker.write_text(json.dumps(shape))
    return shape


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps(generate(a.dir, a.files, a.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
