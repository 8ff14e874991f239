"""Source files: discovery, shard partition, format detection and streaming record readers.

Identity: a file's *source id* is its path relative to the common root of all source specs
(a directory spec's root is the directory; a glob's root is its leading non-glob directory; a
file's root is its parent). Progress is keyed by source id (see ``importer.filestate``), never by
a position in a list, so new or deleted files leave the others' progress alone.

Readers never hold a whole file: they read one bounded line at a time (``max_line_bytes``) from
a byte position on, and every problem with a line or a file is counted by reason and skipped,
never fatal. A last line without its newline is a line still being written: it is read only
once the file has settled (``complete_tail``).
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


@dataclass(frozen=True)
class Pos:
    """A position in a file at the start of a line: byte offset, line number, record number."""

    offset: int = 0
    line: int = 0
    record: int = 0


@dataclass
class Unit:
    """One record's text: a conversation turn, a JSONL record or a paragraph."""

    record: int
    text: str
    group: str  # units of different groups never share a chunk
    role: str | None = None
    session: str | None = None
    time: str | None = None  # the record's timestamp (conversations)
    start: Pos = Pos()  # where the record's first line starts
    next: Pos = Pos()  # where reading goes on after it


class Skips:
    """Skipped items by reason. Items before ``floor`` (a byte offset) were counted by an
    earlier run already (a file read again from its last chunk) and are not counted twice."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.floor = 0
        self.at = 0  # offset of the line being read

    def add(self, reason: str, n: int = 1) -> None:
        if self.at >= self.floor:
            self.counts[reason] += n


@dataclass(frozen=True)
class ReadOptions:
    """How records become text (settings that change chunks, hence point contents)."""

    max_line_bytes: int = 8 * 1024 * 1024
    jsonl_field: str = "text"
    include_tools: bool = False
    tool_max_chars: int = 2000


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


def discover(specs: list[str], allow_empty: bool = False) -> list[SourceFile]:
    """All files of the source specs, deduplicated, sorted by source id.

    Raises ConfigError when a spec matches nothing (an unreadable source spec), unless
    ``allow_empty`` (follow mode: a directory that exists may be empty for now).
    """
    found: list[tuple[str, str]] = []  # (abs path, root)
    roots_seen: set[str] = set()
    for spec in specs:
        if GLOB_CHARS & set(spec):
            root = _spec_root(spec)
            roots_seen.add(root)
            matches = [m for m in glob.glob(spec, recursive=True) if os.path.isfile(m)]
            if not matches and not (allow_empty and os.path.isdir(root)):
                raise ConfigError(f"source {spec!r} matches no files")
            found.extend((os.path.abspath(m), root) for m in matches)
        elif os.path.isdir(spec):
            root = os.path.abspath(spec)
            roots_seen.add(root)
            found.extend((p, root) for p in _walk(root))
        elif os.path.isfile(spec):
            root = os.path.dirname(os.path.abspath(spec))
            roots_seen.add(root)
            found.append((os.path.abspath(spec), root))
        else:
            raise ConfigError(f"source {spec!r} does not exist or is not readable")
    if not found and not allow_empty:
        raise ConfigError(f"sources {specs!r} contain no files")
    roots = sorted({r for _, r in found} or roots_seen)
    common = os.path.commonpath(roots) if roots else "/"
    seen: dict[str, SourceFile] = {}
    for path, _ in found:
        sid = os.path.relpath(path, common).replace(os.sep, "/")
        seen.setdefault(sid, SourceFile(path=path, source_id=sid))
    return [seen[k] for k in sorted(seen)]


def source_roots(specs: list[str]) -> list[str]:
    """Directories to watch for changes (follow mode)."""
    out: set[str] = set()
    for spec in specs:
        if GLOB_CHARS & set(spec):
            out.add(_spec_root(spec))
        elif os.path.isdir(spec):
            out.add(os.path.abspath(spec))
        else:
            out.add(os.path.dirname(os.path.abspath(spec)))
    return sorted(out)


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

    Lines that are not JSON (a partial write, a corrupt line) are looked past: a conversation
    if any JSON line among the first ones is a Claude Code record; JSONL if the JSON lines are
    objects (or the extension says so); text if no line is JSON at all.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext in TEXT_EXTENSIONS:
        return "text"
    objs: list[Any] = []
    bad = 0
    for raw in (ln for ln in lines if ln.strip()):
        try:
            objs.append(json.loads(raw))
        except ValueError:
            bad += 1
    if not objs:
        return "jsonl" if ext in JSONL_EXTENSIONS else "text"
    if any(_looks_claude(o) for o in objs):
        return "claude"
    if ext in JSONL_EXTENSIONS or (isinstance(objs[0], dict) and len(objs) >= bad):
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
# Bounded line reading from a position on
# --------------------------------------------------------------------------------------------
class LineReader:
    """Lines of a binary file from ``start`` on, at most ``max_bytes`` + 1 bytes held at once.

    ``pos`` is always the position after the last *complete* line read. A last line without
    its newline is left unread (a writer is still writing it) unless ``complete_tail``.
    """

    def __init__(
        self, f: IO[bytes], start: Pos, max_bytes: int, skips: Skips, complete_tail: bool
    ) -> None:
        self.f = f
        self.max_bytes = max_bytes
        self.skips = skips
        self.complete_tail = complete_tail
        self.pos = start
        f.seek(start.offset)

    def lines(self) -> Iterator[tuple[Pos, bytes | None]]:
        """Yield (position of the line, its bytes) per line; an over-long line yields None."""
        while True:
            at = self.pos
            self.skips.at = at.offset
            line = self.f.readline(self.max_bytes + 1)
            if not line:
                return
            size = len(line)
            if not line.endswith(b"\n"):
                if size > self.max_bytes:  # over-long: discard the rest without holding it
                    while True:
                        rest = self.f.readline(1024 * 1024)
                        size += len(rest)
                        if not rest or rest.endswith(b"\n"):
                            break
                    if not rest and not self.complete_tail:
                        return  # still being written: decide once it is complete
                    self.pos = Pos(at.offset + size, at.line + 1, at.record)
                    self.skips.add("line_too_long")
                    yield at, None
                    continue
                if not self.complete_tail:
                    return
            self.pos = Pos(at.offset + size, at.line + 1, at.record)
            yield at, line


# --------------------------------------------------------------------------------------------
# Record readers: yield Units from a position on
# --------------------------------------------------------------------------------------------
def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more]"


def _tool_text(block: dict[str, Any], limit: int) -> str:
    """A tool call or result as text, truncated to ``limit`` characters."""
    if block.get("type") == "tool_use":
        args = json.dumps(block.get("input"), ensure_ascii=False, sort_keys=True)
        return _clip(f"[tool {block.get('name', '?')}] {args}", limit)
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(
            c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text"
        )
    return _clip(f"[tool result] {content if isinstance(content, str) else ''}", limit)


def _claude_text(content: Any, skips: Skips, opts: ReadOptions) -> str:
    """Text of a Claude Code message: a string, or the ``text`` blocks of a block list.

    ``tool_use`` and ``tool_result`` blocks are included (truncated) only with
    ``include_tools``; ``thinking`` and other blocks (images) are dropped and counted.
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
            elif kind in ("tool_use", "tool_result") and opts.include_tools:
                parts.append(_tool_text(block, opts.tool_max_chars))
            else:
                skips.add(f"claude_{kind if isinstance(kind, str) else 'unknown'}_block")
    return "\n".join(p for p in parts if p.strip())


def _json_records(reader: LineReader) -> Iterator[tuple[Pos, Pos, Any]]:
    """(start, next position, parsed JSON) of each non-empty line; a record's number is its
    line number. Lines that are not UTF-8 or not JSON are skipped and counted."""
    skips = reader.skips
    for at, raw in reader.lines():
        if raw is None or not raw.strip():
            continue
        start = Pos(at.offset, at.line, at.line)
        nxt = Pos(reader.pos.offset, reader.pos.line, reader.pos.line)
        try:
            yield start, nxt, json.loads(raw)
        except UnicodeDecodeError:
            skips.add("non_utf8_line")
        except ValueError:
            skips.add("malformed_line")


def read_claude(reader: LineReader, opts: ReadOptions) -> Iterator[Unit]:
    skips = reader.skips
    for start, nxt, obj in _json_records(reader):
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
        text = _claude_text(msg.get("content"), skips, opts)
        if not text.strip():
            continue
        role = msg.get("role") if isinstance(msg.get("role"), str) else kind
        session = obj.get("sessionId") if isinstance(obj.get("sessionId"), str) else None
        ts = obj.get("timestamp") if isinstance(obj.get("timestamp"), str) else None
        yield Unit(start.record, text, f"s:{session}", role, session, ts, start, nxt)


def _field(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def read_jsonl(reader: LineReader, opts: ReadOptions) -> Iterator[Unit]:
    for start, nxt, obj in _json_records(reader):
        text = _field(obj, opts.jsonl_field)
        if not isinstance(text, str):
            reader.skips.add("no_text_field")
            continue
        if not text.strip():
            continue
        yield Unit(start.record, text, f"r:{start.record}", start=start, next=nxt)


def read_text(reader: LineReader, start_record: int) -> Iterator[Unit]:
    """Paragraphs (separated by blank lines, at most MAX_PARAGRAPH_CHARS) are the records."""
    para: list[str] = []
    size = 0
    rec = start_record
    first: Pos | None = None

    def flush(end: Pos) -> Iterator[Unit]:
        nonlocal para, size, rec, first
        if para and first is not None:
            text = "".join(para).strip()
            if text:
                start = Pos(first.offset, first.line, rec)
                nxt = Pos(end.offset, end.line, rec + 1)
                yield Unit(rec, text, "t", start=start, next=nxt)
            rec += 1
        para, size, first = [], 0, None

    for at, raw in reader.lines():
        if raw is None:
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            reader.skips.add("non_utf8_line")
            continue
        if not line.strip():
            yield from flush(at)
            continue
        if first is None:
            first = at
        para.append(line)
        size += len(line)
        if size >= MAX_PARAGRAPH_CHARS:
            yield from flush(reader.pos)
    yield from flush(reader.pos)


def read_head(path: str, n: int) -> bytes | None:
    """The first ``n`` bytes of a file (fewer if it is shorter), or None if it is gone."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return None


@dataclass
class Opened:
    """An open source file: its format, its units from a position on, and the reader (whose
    ``pos`` says how far whole lines were read)."""

    fmt: str
    units: Iterator[Unit]
    reader: LineReader


def open_units(
    sf: SourceFile,
    fmt: str,
    start: Pos,
    opts: ReadOptions,
    skips: Skips,
    complete_tail: bool,
) -> Opened | None:
    """Open a file and return its units from ``start``, or None if the whole file is skipped
    (reason counted in ``skips``). ``fmt`` is a format or ``auto``. The iterator closes the
    file."""
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
        bad = None if head else "empty"
        bad = bad or sniff(head)
        actual = detect_format(sf.path, _first_lines(f)) if fmt == "auto" and not bad else fmt
    except OSError:
        bad = "unreadable"
    if bad:
        f.close()
        skips.add(bad)
        return None
    reader = LineReader(f, start, opts.max_line_bytes, skips, complete_tail)

    def gen() -> Iterator[Unit]:
        try:
            if actual == "claude":
                yield from read_claude(reader, opts)
            elif actual == "jsonl":
                yield from read_jsonl(reader, opts)
            else:
                yield from read_text(reader, start.record)
        except OSError:
            skips.add("read_error")
        finally:
            f.close()

    return Opened(actual, gen(), reader)
