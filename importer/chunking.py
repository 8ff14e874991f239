"""Chunking in *tokens* of the model's own tokenizer, deterministic and resumable.

A file is a sequence of units (records: conversation turns, JSONL records, paragraphs). Chunks
are built greedily from consecutive units of the same group (a conversation session; a JSONL
record is its own group) while their token count stays within ``size``. The next chunk starts
with the trailing whole units of the previous chunk that fit in ``overlap`` tokens. A unit longer
than ``size`` is split into token windows of ``size`` with ``overlap`` tokens in common, each a
chunk of its own.

Every chunk carries a *resume cursor* (the position of a record, the next chunk index and, inside
a split record, the pieces done): starting a fresh reader and chunker there reproduces exactly
the chunks that follow. That is what makes a resumed run produce the same point IDs and texts as
an uninterrupted one. Chunk boundaries only depend on what comes before them, so appending
records to a file changes only its last chunk (which may grow) and adds new ones: every chunk
but the last is *sealed* (``sealed``). Following a file that is still being written, its last
chunk is embedded only once it is sealed or the file has settled (``settled``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from importer.sources import Pos, Unit

# Texts longer than this are tokenized block by block (bounded tokenizer memory).
TOKENIZE_BLOCK_CHARS = 16 * 1024


@dataclass
class Chunk:
    chunk_index: int
    text: str
    tokens: int
    first_record: int
    last_record: int
    resume: Pos  # cursor after this chunk: a fresh start at this record ...
    resume_chunk: int  # ... with this chunk index reproduces what follows,
    resume_piece: int = 0  # ... after skipping this many pieces of a split record
    roles: list[str] = field(default_factory=list)
    session: str | None = None
    times: list[str] = field(default_factory=list)  # timestamps of its records


class TokenCounter:
    """Counts and splits text with a ``tokenizers.Tokenizer`` (no truncation, no padding)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def count(self, text: str) -> int:
        total = 0
        for block in _blocks(text):
            total += len(self.tok.encode(block, add_special_tokens=False).ids)
        return total

    def windows(self, text: str, size: int, overlap: int) -> Iterator[tuple[str, int]]:
        """(text, tokens) windows of at most ``size`` tokens, ``overlap`` tokens shared."""
        step = max(1, size - overlap)
        for block in _blocks(text):
            enc = self.tok.encode(block, add_special_tokens=False)
            offs = enc.offsets
            n = len(offs)
            start = 0
            while start < n:
                end = min(n, start + size)
                yield block[offs[start][0] : offs[end - 1][1]], end - start
                if end == n:
                    break
                start += step


def _blocks(text: str) -> Iterator[str]:
    """Split text into blocks of at most TOKENIZE_BLOCK_CHARS, preferring whitespace."""
    if len(text) <= TOKENIZE_BLOCK_CHARS:
        yield text
        return
    i = 0
    while i < len(text):
        end = min(len(text), i + TOKENIZE_BLOCK_CHARS)
        if end < len(text):
            cut = text.rfind(" ", i + TOKENIZE_BLOCK_CHARS // 2, end)
            cut2 = text.rfind("\n", i + TOKENIZE_BLOCK_CHARS // 2, end)
            cut = max(cut, cut2)
            if cut > i:
                end = cut + 1
        yield text[i:end]
        i = end


def render(unit: Unit) -> str:
    return f"{unit.role}: {unit.text}" if unit.role else unit.text


@dataclass
class _Item:
    unit: Unit
    text: str
    tokens: int


class _Packer:
    """Packs units of one group into chunks of at most ``size`` tokens, numbering them."""

    def __init__(self, size: int, overlap: int, start_chunk: int) -> None:
        self.size = size
        self.overlap = overlap
        self.k = start_chunk
        self.buf: list[_Item] = []  # current packed chunk, all of one group, total <= size

    def emit(self, items: list[_Item], resume: Pos) -> Chunk:
        c = Chunk(
            chunk_index=self.k,
            text="\n".join(i.text for i in items),
            tokens=sum(i.tokens for i in items),
            first_record=items[0].unit.record,
            last_record=items[-1].unit.record,
            resume=resume,
            resume_chunk=self.k + 1,
            roles=[i.unit.role for i in items if i.unit.role],
            session=items[0].unit.session,
            times=[i.unit.time for i in items if i.unit.time],
        )
        self.k += 1
        return c

    def add(self, item: _Item) -> Iterator[Chunk]:
        """Append ``item``; first emit the buffer if it does not fit or the group changes."""
        buf, unit = self.buf, item.unit
        if not buf or (
            buf[0].unit.group == unit.group
            and sum(i.tokens for i in buf) + item.tokens <= self.size
        ):
            buf.append(item)
            return
        tail = self._overlap_tail() if buf[0].unit.group == unit.group else []
        # the tail plus the new unit must still fit, else drop the tail
        while tail and sum(i.tokens for i in tail) + item.tokens > self.size:
            tail.pop(0)
        yield self.emit(buf, tail[0].unit.start if tail else unit.start)
        self.buf = [*tail, item]

    def flush(self, resume: Pos | None = None) -> Iterator[Chunk]:
        if self.buf:
            yield self.emit(self.buf, self.buf[-1].unit.next if resume is None else resume)
            self.buf = []

    def oversized(self, unit: Unit, pieces: list[tuple[str, int]], skip: int) -> Iterator[Chunk]:
        """A unit longer than ``size``: one chunk per token window, from window ``skip`` on.
        The packed buffer goes first; the next chunk starts at this unit (no overlap carry)."""
        yield from self.flush(unit.start)
        for j, (ptext, ptok) in enumerate(pieces):
            if j < skip:
                continue
            last = j == len(pieces) - 1
            c = self.emit([_Item(unit, ptext, ptok)], unit.next if last else unit.start)
            if not last:
                c.resume_piece = j + 1  # mid-record: resume after this piece
            yield c

    def _overlap_tail(self) -> list[_Item]:
        items = self.buf
        if self.overlap <= 0 or len(items) < 2:
            return []
        tail: list[_Item] = []
        total = 0
        for item in reversed(items[1:]):  # never the first: the next chunk must move on
            if total + item.tokens > self.overlap:
                break
            tail.insert(0, item)
            total += item.tokens
        return tail


def chunk_units(
    units: Iterator[Unit],
    counter: TokenCounter | Callable[[str], int],
    size: int,
    overlap: int,
    start_chunk: int = 0,
    start_piece: int = 0,
) -> Iterator[Chunk]:
    """Chunks of ``units`` (which start at a resume cursor's record) from ``start_chunk`` on.

    ``start_piece`` > 0 resumes inside a record longer than ``size``: its first
    ``start_piece`` token windows were done already and are skipped.
    """
    count = counter.count if isinstance(counter, TokenCounter) else counter
    packer = _Packer(size, overlap, start_chunk)
    skip_pieces = start_piece
    for unit in units:
        skip, skip_pieces = skip_pieces, 0  # applies to the cursor's own record only
        text = render(unit)
        tokens = count(text)
        if tokens > size:
            yield from packer.oversized(unit, _split_unit(unit, counter, size, overlap), skip)
        else:
            yield from packer.add(_Item(unit, text, tokens))
    yield from packer.flush()


def _split_unit(
    unit: Unit, counter: TokenCounter | Callable[[str], int], size: int, overlap: int
) -> list[tuple[str, int]]:
    prefix = f"{unit.role}: " if unit.role else ""
    if not isinstance(counter, TokenCounter):  # a plain counting function: split by words
        words = unit.text.split()
        step = max(1, size - overlap)
        out = []
        for s in range(0, len(words), step):
            out.append((prefix + " ".join(words[s : s + size]), min(size, len(words) - s)))
            if s + size >= len(words):
                break
        return out
    ptok = counter.count(prefix) if prefix else 0
    room = max(1, size - ptok)
    return [
        (prefix + t, n + ptok) for t, n in counter.windows(unit.text, room, min(overlap, room - 1))
    ]


def sealed(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, bool]]:
    """Each chunk with whether it is sealed: a chunk is sealed once the next one started after
    it, so appending to the file can no longer change it. The last chunk is not sealed (its
    text may still grow). Looks one chunk ahead."""
    prev: Chunk | None = None
    for c in chunks:
        if prev is not None:
            yield prev, True
        prev = c
    if prev is not None:
        yield prev, False


def settled(follow: bool, settle_seconds: float, mtime_ns: int, now: float) -> bool:
    """Whether the open end of a file (a last line without newline, its unsealed last chunk)
    is read as final now: always in a one-shot run or with ``settle_seconds`` 0; following,
    once the file has not changed for ``settle_seconds`` (``now`` in epoch seconds)."""
    return not follow or settle_seconds <= 0 or now - mtime_ns / 1e9 >= settle_seconds
