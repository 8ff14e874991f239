"""Source files: discovery, shard partition, format detection and streaming record readers.

Identity: a file's *source id* is its path relative to the common root of all source specs
(a directory spec's root is the directory; a glob's root is its leading non-glob directory; a
file's root is its parent). The shard's file list is sorted by source id, and positions in that
list are what the checkpoint's ``done`` ranges refer to.

Readers never hold a whole file: they read one bounded line at a time (``max_line_bytes``), and
every problem with a line or a file is counted by reason and skipped, never fatal.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from importer.contract import files_digest
from importer.settings import ConfigError

GLOB_CHARS = set("*?[")
TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".rst", ".text"}
JSONL_EXTENSIONS = {".jsonl", ".ndjson"}
SNIFF_BYTES = 8192
# A text-format record (paragraph) is emitted when it reaches this many characters.
MAX_PARAGRAPH_CHARS = 16 * 1024


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute path
    source_id: str  # relative path: identity used in point IDs


@dataclass
class Unit:
    """One record's text: a conversation turn, a JSONL record or a paragraph."""

    record: int
    text: str
    group: str  # units of different groups never share a chunk
    role: str | None = None
    session: str | None = None


class Skips:
    """Skipped items by reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n


# --------------------------------------------------------------------------------------------
# Discovery and sharding
# --------------------------------------------------------------------------------------------
def _spec_root(spec: str) -> str:
    parts = Path(spec).parts
    keep: list[str] = []
    for p in parts:
        if GLOB_CHARS & set(p):
            break
        keep.append(p)
    root = os.path.join(*keep) if keep else "."
    return os.path.abspath(root)


def _walk(directory: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith("."):
                yield os.path.join(dirpath, f)


def discover(specs: list[str]) -> list[SourceFile]:
    """All files of the source specs, deduplicated, sorted by source id.

    Raises ConfigError when a spec matches nothing (an unreadable source spec).
    """
    found: list[tuple[str, str]] = []  # (abs path, root)
    for spec in specs:
        if GLOB_CHARS & set(spec):
            root = _spec_root(spec)
            matches = [m for m in glob.glob(spec, recursive=True) if os.path.isfile(m)]
            if not matches:
                raise ConfigError(f"source {spec!r} matches no files")
            found.extend((os.path.abspath(m), root) for m in matches)
        elif os.path.isdir(spec):
            root = os.path.abspath(spec)
            found.extend((p, root) for p in _walk(root))
        elif os.path.isfile(spec):
            found.append((os.path.abspath(spec), os.path.dirname(os.path.abspath(spec))))
        else:
            raise ConfigError(f"source {spec!r} does not exist or is not readable")
    if not found:
        raise ConfigError(f"sources {specs!r} contain no files")
    roots = sorted({r for _, r in found})
    common = os.path.commonpath(roots) if roots else "/"
    seen: dict[str, SourceFile] = {}
    for path, _ in found:
        sid = os.path.relpath(path, common).replace(os.sep, "/")
        seen.setdefault(sid, SourceFile(path=path, source_id=sid))
    return [seen[k] for k in sorted(seen)]


def files_digest_of(files: list[SourceFile]) -> str:
    return files_digest(f.source_id for f in files)


def shard_of(source_id: str, shards: int) -> int:
    """Shard of a file: a hash of its source id, so adding files does not move others."""
    if shards == 1:
        return 0
    h = hashlib.sha256(source_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(h[:8], "big") % shards


def partition(files: list[SourceFile], shard: int, shards: int) -> list[SourceFile]:
    return [f for f in files if shard_of(f.source_id, shards) == shard]


# --------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------
CLAUDE_KEYS = ("sessionId", "message", "uuid", "leafUuid", "parentUuid")
SNIFF_LINES = 20  # JSON lines looked at to tell a conversation from plain JSONL
SNIFF_LINE_BYTES = 1024 * 1024


def _looks_claude(obj: Any) -> bool:
    """A Claude Code session record: ``type`` plus one of its identifying keys. Sessions may
    start with ``summary`` records (``{type, summary, leafUuid}``)."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("type"), str)
        and any(k in obj for k in CLAUDE_KEYS)
    )


def sniff(head: bytes) -> str | None:
    """Reason to skip the file from its first bytes (``binary``, ``non_utf8``), else None."""
    if b"\0" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut at the sniff boundary is fine
        if e.start < len(head) - 4:
            return "non_utf8"
    return None


def detect_format(path: str, lines: list[bytes]) -> str:
    """``claude``, ``jsonl`` or ``text`` for format ``auto``, from the file's first lines.

    A conversation if any of the first JSON lines is a Claude Code record; JSONL if the first
    non-empty line is a JSON object (or the extension says so); text otherwise.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext in TEXT_EXTENSIONS:
        return "text"
    objs: list[Any] = []
    for raw in (ln for ln in lines if ln.strip()):
        try:
            objs.append(json.loads(raw))
        except ValueError:
            if not objs:  # the first non-empty line is not JSON
                return "jsonl" if ext in JSONL_EXTENSIONS else "text"
    if not objs:
        return "jsonl" if ext in JSONL_EXTENSIONS else "text"
    if any(_looks_claude(o) for o in objs):
        return "claude"
    if isinstance(objs[0], dict) or ext in JSONL_EXTENSIONS:
        return "jsonl"
    return "text"


def _first_lines(f: IO[bytes]) -> list[bytes]:
    out: list[bytes] = []
    f.seek(0)
    for _ in range(SNIFF_LINES):
        line = f.readline(SNIFF_LINE_BYTES)
        if not line:
            break
        out.append(line)
    return out


# --------------------------------------------------------------------------------------------
# Bounded line reading
# --------------------------------------------------------------------------------------------
def iter_lines(f: IO[bytes], max_bytes: int, skips: Skips) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, bytes) for every line; an over-long line yields None (skipped).

    At most ``max_bytes`` + 1 bytes of a line are held at a time.
    """
    n = 0
    while True:
        line = f.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            # discard the rest of the over-long line without holding it
            while True:
                rest = f.readline(1024 * 1024)
                if not rest or rest.endswith(b"\n"):
                    break
            skips.add("line_too_long")
            yield n, None
        else:
            yield n, line
        n += 1


# --------------------------------------------------------------------------------------------
# Record readers: yield Units from record ``start`` on
# --------------------------------------------------------------------------------------------
def _claude_text(content: Any, skips: Skips) -> str:
    """Text of a Claude Code message: a string, or the ``text`` blocks of a block list.

    ``tool_use``, ``tool_result``, ``thinking`` (and other non-text blocks such as images) are
    dropped and counted, since they are machine I/O or hidden reasoning, not conversation.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict):
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
            else:
                skips.add(f"claude_{kind if isinstance(kind, str) else 'unknown'}_block")
    return "\n".join(p for p in parts if p.strip())


def _json_records(
    f: IO[bytes], start: int, max_bytes: int, skips: Skips
) -> Iterator[tuple[int, Any]]:
    """(record number, parsed JSON) of each non-empty line from ``start`` on; lines that are
    not UTF-8 or not JSON are skipped and counted."""
    for n, raw in iter_lines(f, max_bytes, skips):
        if raw is None or n < start or not raw.strip():
            continue
        try:
            yield n, json.loads(raw)
        except UnicodeDecodeError:
            skips.add("non_utf8_line")
        except ValueError:
            skips.add("malformed_line")


def read_claude(f: IO[bytes], start: int, max_bytes: int, skips: Skips) -> Iterator[Unit]:
    for n, obj in _json_records(f, start, max_bytes, skips):
        if not isinstance(obj, dict):
            skips.add("malformed_line")
            continue
        kind = obj.get("type")
        if kind not in ("user", "assistant"):
            skips.add("claude_non_message")
            continue
        msg = obj.get("message")
        if not isinstance(msg, dict):
            skips.add("malformed_line")
            continue
        text = _claude_text(msg.get("content"), skips)
        if not text.strip():
            continue
        role = msg.get("role") if isinstance(msg.get("role"), str) else kind
        session = obj.get("sessionId") if isinstance(obj.get("sessionId"), str) else None
        yield Unit(record=n, text=text, group=f"s:{session}", role=role, session=session)


def _field(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def read_jsonl(
    f: IO[bytes], start: int, max_bytes: int, skips: Skips, field: str
) -> Iterator[Unit]:
    for n, obj in _json_records(f, start, max_bytes, skips):
        text = _field(obj, field)
        if not isinstance(text, str):
            skips.add("no_text_field")
            continue
        if not text.strip():
            continue
        yield Unit(record=n, text=text, group=f"r:{n}")


def read_text(f: IO[bytes], start: int, max_bytes: int, skips: Skips) -> Iterator[Unit]:
    """Paragraphs (separated by blank lines, at most MAX_PARAGRAPH_CHARS) are the records."""
    para: list[str] = []
    size = 0
    rec = 0

    def flush() -> Iterator[Unit]:
        nonlocal para, size, rec
        if para:
            text = "".join(para).strip()
            if rec >= start and text:
                yield Unit(record=rec, text=text, group="t")
            rec += 1
        para, size = [], 0

    for _, raw in iter_lines(f, max_bytes, skips):
        if raw is None:
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            skips.add("non_utf8_line")
            continue
        if not line.strip():
            yield from flush()
            continue
        para.append(line)
        size += len(line)
        if size >= MAX_PARAGRAPH_CHARS:
            yield from flush()
    yield from flush()


def open_units(
    sf: SourceFile,
    fmt: str,
    start: int,
    max_bytes: int,
    jsonl_field: str,
    skips: Skips,
) -> tuple[str, Iterator[Unit]] | None:
    """Open a file and return (its format, its units from record ``start``), or None if the
    whole file is skipped (reason counted in ``skips``). The iterator closes the file."""
    try:
        f = open(sf.path, "rb")  # noqa: SIM115 - closed by the generator
    except FileNotFoundError:
        skips.add("vanished")
        return None
    except IsADirectoryError:
        skips.add("not_a_file")
        return None
    except OSError:
        skips.add("unreadable")
        return None
    try:
        head = f.read(SNIFF_BYTES)
        if not head:
            f.close()
            skips.add("empty")
            return None
        bad = sniff(head)
        if bad:
            f.close()
            skips.add(bad)
            return None
        actual = detect_format(sf.path, _first_lines(f)) if fmt == "auto" else fmt
        f.seek(0)
    except OSError:
        f.close()
        skips.add("unreadable")
        return None

    def gen() -> Iterator[Unit]:
        try:
            if actual == "claude":
                yield from read_claude(f, start, max_bytes, skips)
            elif actual == "jsonl":
                yield from read_jsonl(f, start, max_bytes, skips, jsonl_field)
            else:
                yield from read_text(f, start, max_bytes, skips)
        except OSError:
            skips.add("read_error")
        finally:
            f.close()

    return actual, gen()
