#!/usr/bin/env python
"""Deterministic synthetic corpus of Claude Code conversation JSONL files.

Shape (per file, seed-determined): one ``summary`` line, then a session of ``turns`` exchanges
(log-normal, median 12, 4-200). Each exchange is a ``user`` line (5-80 words of text), an
``assistant`` line with a text block (10-300 words, log-uniform) and, in 60% of exchanges, a
``tool_use`` block (Bash/Read/Edit) answered by a ``user`` line carrying a ``tool_result``
(20-600 words of tool output). Lines carry the usual envelope fields (uuid, parentUuid,
sessionId, cwd, timestamp, version, gitBranch, usage). The importer embeds only the text of
user/assistant messages; tool blocks are read and skipped, as in real sessions.

    python bench/corpus.py DIR [--files 200] [--seed 1] [--prose]

``--prose`` (the demo's corpus): the same shape, but session N is about one standard-library
module and its user and assistant lines are real prose, questions about the module and its
functions answered with their documentation (``module_talk``), so a search can be judged:
the shape's ``topics`` says which file is about which module.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import random
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Talk:
    """What one session says: drawn when the session is written, in this order, so that the
    random-word corpus of a seed stays byte for byte what it was."""

    summary: Callable[[], str]
    turns: Callable[[], int]
    user: Callable[[int], str]  # the text of exchange i's user line
    assistant: Callable[[int], str]  # ... and of its assistant reply
    filler: Callable[[int, int], str]  # tool inputs and outputs, lo-hi words (not embedded)


def random_talk(rng: random.Random, vocab: list[str], draw: Any, median: int) -> Talk:
    def words(lo: int, hi: int) -> str:
        return _text(rng, vocab, draw, lo, hi)

    return Talk(
        summary=lambda: words(4, 12),
        turns=lambda: turns_for(rng, median),
        user=lambda _i: words(5, 80),
        assistant=lambda _i: words(10, 300),
        filler=words,
    )


def write_file(path: Path, rng: random.Random, talk: Talk) -> int:
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
        {"type": "summary", "summary": talk.summary(), "leafUuid": session}
    ]
    parent = None
    n = talk.turns()

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

    for i in range(n):
        line("user", {"role": "user", "content": talk.user(i)})
        content: list[dict[str, Any]] = [{"type": "text", "text": talk.assistant(i)}]
        tool = rng.random() < 0.6
        tool_id = f"toolu_{rng.getrandbits(64):016x}"
        if tool:
            name = rng.choice(TOOLS)
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": name,
                    "input": {"command": talk.filler(2, 12)},
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
                            "content": talk.filler(20, 600),
                        }
                    ],
                },
            )
    with open(path, "w", encoding="utf-8") as fh:
        for obj in lines:
            fh.write(json.dumps(obj) + "\n")
    return n


# ---------------------------------------------------------------------------------------------
# Real prose: one standard-library module per session, in the words of its documentation
# ---------------------------------------------------------------------------------------------
# Modules whose documentation says clearly what they are for; session i is about MODULES[i].
MODULES = (
    "heapq", "json", "calendar", "datetime", "csv", "timeit", "sqlite3", "zipfile", "tarfile",
    "argparse", "logging", "decimal", "fractions", "random", "statistics", "textwrap",
    "difflib", "shutil", "tempfile", "subprocess", "threading", "queue", "socket", "base64",
    "hashlib", "secrets", "uuid", "gzip", "pickle", "shelve", "copy", "functools",
    "itertools", "collections", "contextlib", "unittest", "doctest", "struct", "weakref",
    "configparser", "smtplib", "sched", "ipaddress", "plistlib", "shlex", "getopt", "wave",
    "array",
)  # fmt: skip

# The search that ends hack/demo.sh: a question about one session's topic, in other words than
# its text; the top hit must come from that session (tests/importer/test_demo_search.py).
DEMO_TOPIC = "calendar"
DEMO_QUERY = "How do I print a month as a calendar and find out which weekday a date falls on?"

QUESTIONS = (
    "How does {q} work?",
    "What does {q} do, and when would I use it?",
    "Can you explain {q}?",
    "I keep running into {q} in this code. What is it for?",
    "What should I know before I call {q}?",
)


def _clip(doc: str, words: int) -> str:
    """Whole paragraphs of ``doc`` up to about ``words`` words (at least the first one,
    itself cut at ``words``), each paragraph on one line."""
    out: list[str] = []
    n = 0
    for para in doc.split("\n\n"):
        ws = para.split()
        if not ws:
            continue
        if out and n + len(ws) > words:
            break
        out.append(" ".join(ws[: words - n]))
        n += len(ws)
    return "\n\n".join(out)


def module_docs(module: str) -> tuple[str, list[tuple[str, str]]]:
    """``module``'s docstring, and (qualified name, docstring) of its public classes and
    functions that have a docstring of some length, sorted by name."""
    mod = importlib.import_module(module)
    members = []
    for name in sorted(getattr(mod, "__all__", None) or dir(mod)):
        obj = getattr(mod, name, None)
        kind = inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)
        if name.startswith("_") or not kind:
            continue
        if not str(getattr(obj, "__module__", "") or module).lstrip("_").startswith(module):
            continue  # imported from elsewhere (os.path in shutil, ...)
        doc = inspect.getdoc(obj) or ""
        if len(doc) >= 120:
            members.append((f"{module}.{name}", doc))
    return inspect.getdoc(mod) or "", members


def module_talk(module: str, rng: random.Random, median: int, filler: Any) -> Talk:
    """A session about ``module``: what it is for (its docstring), then questions about some
    of its functions and classes answered with their docstrings."""
    doc, members = module_docs(module)
    exchanges = [(f"I'm using the {module} module in Python. What is it for?", _clip(doc, 220))]
    picked = rng.sample(members, min(len(members), max(2, turns_for(rng, median, 2, 12) - 1)))
    for name, mdoc in picked:
        exchanges.append((rng.choice(QUESTIONS).format(q=name), f"{name}: {_clip(mdoc, 180)}"))
    return Talk(
        summary=lambda: f"Questions about Python's {module} module",
        turns=lambda: len(exchanges),
        user=lambda i: exchanges[i][0],
        assistant=lambda i: exchanges[i][1],
        filler=filler,
    )


def topic_file(shape: dict[str, Any], module: str) -> str:
    """The file (relative to the corpus directory) of the prose session about ``module``."""
    return next(f for f, m in sorted(shape["topics"].items()) if m == module)


def generate(
    directory: Path, files: int = 200, seed: int = 1, median_turns: int = 12, prose: bool = False
) -> dict[str, Any]:
    """Write the corpus (idempotent: reuses a complete one made with the same arguments,
    replaces any other) and return its shape. ``prose``: each session discusses one
    standard-library module, in the words of its documentation (module_talk)."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / ".shape.json"
    kind = "prose" if prose else "random words"
    if marker.exists():
        shape: dict[str, Any] = json.loads(marker.read_text())
        if (shape["files"], shape["seed"], shape.get("text", "random words")) == (
            files, seed, kind
        ):  # fmt: skip
            return shape
        for old in directory.rglob("*.jsonl"):
            old.unlink()
    rng = random.Random(seed)
    vocab = list(c.vocabulary())
    rng.shuffle(vocab)
    draw = c._zipf_sampler(rng, len(vocab))
    turns = []
    topics: dict[str, str] = {}
    for i in range(files):
        sub = directory / f"-home-user-src-project-{i % 8}"
        sub.mkdir(exist_ok=True)
        path = sub / f"session-{i:05d}.jsonl"
        if prose:
            module = MODULES[i % len(MODULES)]
            filler = random_talk(rng, vocab, draw, median_turns).filler
            talk = module_talk(module, rng, median_turns, filler)
            topics[str(path.relative_to(directory))] = module
        else:
            talk = random_talk(rng, vocab, draw, median_turns)
        turns.append(write_file(path, rng, talk))
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
        "text": kind,
    }
    if prose:
        shape["topics"] = topics  # file (relative to the directory) -> the module it is about
    marker.write_text(json.dumps(shape))
    return shape


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--prose",
        action="store_true",
        help="real prose: session N discusses one standard-library module, in its docs' words",
    )
    a = ap.parse_args()
    print(json.dumps(generate(a.dir, a.files, a.seed, prose=a.prose), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
