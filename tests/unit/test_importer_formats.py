"""Formats: Claude Code JSONL, JSONL, text; sniffing and skip reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from importer.settings import ConfigError
from importer.sources import (
    Pos,
    ReadOptions,
    Skips,
    SourceFile,
    detect_format,
    discover,
    open_units,
    sniff,
)


def _open(
    path: Path, fmt: str = "auto", start: int = 0, max_bytes: int = 1 << 20, field: str = "text"
) -> tuple[str | None, list, Skips]:
    """Units of a file from line ``start`` on (a JSON record's number is its line number)."""
    skips = Skips()
    offset = (
        sum(len(x) for x in path.read_bytes().splitlines(keepends=True)[:start]) if start else 0
    )
    at = Pos(offset, start, start)
    opts = ReadOptions(max_line_bytes=max_bytes, jsonl_field=field)
    opened = open_units(SourceFile(str(path), path.name), fmt, at, opts, skips, True)
    if opened is None:
        return None, [], skips
    return opened.fmt, list(opened.units), skips


def _claude_line(kind: str, content: object, session: str = "S1") -> str:
    return json.dumps(
        {
            "type": kind,
            "sessionId": session,
            "uuid": "u",
            "message": {"role": kind, "content": content},
        }
    )


def test_claude(tmp_path: Path) -> None:
    p = tmp_path / "conv.jsonl"
    lines = [
        _claude_line("user", "hello there"),
        _claude_line(
            "assistant",
            [
                {"type": "thinking", "thinking": "secret"},
                {"type": "text", "text": "general kenobi"},
                {"type": "tool_use", "name": "Bash", "input": {"cmd": "ls"}},
            ],
        ),
        _claude_line("user", [{"type": "tool_result", "content": "file listing"}]),
        "{not json",
        json.dumps({"type": "summary", "summary": "a summary"}),
        _claude_line("assistant", [{"type": "text", "text": "bye"}]),
    ]
    p.write_text("\n".join(lines) + "\n")
    fmt, units, skips = _open(p)
    assert fmt == "claude"
    assert [(u.record, u.role, u.text) for u in units] == [
        (0, "user", "hello there"),
        (1, "assistant", "general kenobi"),
        (5, "assistant", "bye"),
    ]
    assert all(u.session == "S1" for u in units)
    assert skips.counts == {
        "claude_thinking_block": 1,
        "claude_tool_use_block": 1,
        "claude_tool_result_block": 1,
        "malformed_line": 1,
        "claude_non_message": 1,
    }
    # resuming at a record skips what came before
    _, units, _ = _open(p, start=2)
    assert [u.record for u in units] == [5]


def test_jsonl_field_and_skips(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(
        "\n".join(
            [
                json.dumps({"body": {"t": "one"}}),
                json.dumps({"other": 1}),
                "[1, 2",
                json.dumps({"body": {"t": "two"}}),
            ]
        )
        + "\n"
    )
    fmt, units, skips = _open(p, field="body.t")
    assert fmt == "jsonl"
    assert [(u.record, u.text) for u in units] == [(0, "one"), (3, "two")]
    assert units[0].group != units[1].group
    assert skips.counts == {"no_text_field": 1, "malformed_line": 1}


def test_text_paragraphs(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    p.write_text("# Title\n\npara one\nline two\n\n\npara three\n")
    fmt, units, _ = _open(p)
    assert fmt == "text"
    assert [(u.record, u.text) for u in units] == [
        (0, "# Title"),
        (1, "para one\nline two"),
        (2, "para three"),
    ]


def test_over_long_line_skipped(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(
        "\n".join(
            [
                json.dumps({"text": "ok"}),
                json.dumps({"text": "x" * 5000}),
                json.dumps({"text": "after"}),
            ]
        )
        + "\n"
    )
    _, units, skips = _open(p, max_bytes=1024)
    assert [u.text for u in units] == ["ok", "after"]
    assert [u.record for u in units] == [0, 2]
    assert skips.counts == {"line_too_long": 1}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02binary" * 10, "binary"),
        ("caf\xe9 latin-1 text ".encode("latin-1") * 10, "non_utf8"),
    ],
)
def test_whole_file_skips(tmp_path: Path, content: bytes, reason: str) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(content)
    fmt, _, skips = _open(p)
    assert fmt is None
    assert skips.counts == {reason: 1}


def test_vanished_file(tmp_path: Path) -> None:
    fmt, _, skips = _open(tmp_path / "gone.txt")
    assert fmt is None
    assert skips.counts == {"vanished": 1}


def test_non_utf8_line_in_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "fine"}\n' * 600 + b'{"text": "caf\xe9"}\n{"text": "end"}\n')
    _, units, skips = _open(p)
    assert len(units) == 601
    assert skips.counts == {"non_utf8_line": 1}


def test_detect_format() -> None:
    assert detect_format("x.md", [b'{"type": "user"}']) == "text"
    claude = b'{"type":"user","sessionId":"s","message":{}}'
    assert detect_format("x.jsonl", [claude]) == "claude"
    assert detect_format("x.jsonl", [b'{"text":"a"}\n']) == "jsonl"
    assert detect_format("x.log", [b'{"text":"a"}\n']) == "jsonl"
    assert detect_format("x.log", [b"plain words\n"]) == "text"
    assert detect_format("x.jsonl", []) == "jsonl"
    assert sniff(b"ok \xe2\x82") is None  # a character cut at the sniff boundary is fine


def test_claude_session_starting_with_summaries(tmp_path: Path) -> None:
    # Claude Code writes `summary` records ({type, summary, leafUuid}) first in a session
    p = tmp_path / "session.jsonl"
    lines = [
        json.dumps({"type": "summary", "summary": "Fixing a leak", "leafUuid": "u1"}),
        json.dumps({"type": "summary", "summary": "Another", "leafUuid": "u2"}),
        _claude_line("user", "why does memory grow?"),
        _claude_line("assistant", [{"type": "text", "text": "the arena keeps its peak"}]),
    ]
    p.write_text("\n".join(lines) + "\n")
    fmt, units, skips = _open(p)
    assert fmt == "claude"
    assert [u.role for u in units] == ["user", "assistant"]
    assert skips.counts == {"claude_non_message": 2}


def test_claude_detected_behind_a_long_first_line(tmp_path: Path) -> None:
    p = tmp_path / "session.jsonl"
    first = _claude_line("user", "x " * 10_000)  # 20 kB: longer than the 8 KiB sniff
    p.write_text(first + "\n" + _claude_line("assistant", "ok") + "\n")
    fmt, units, _ = _open(p)
    assert fmt == "claude"
    assert len(units) == 2


def test_discover_sorted_relative_ids(tmp_path: Path) -> None:
    for rel in ["b/z.md", "a.md", "b/a.txt", ".hidden/x.md", "c/.dot.md"]:
        f = tmp_path / "src" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    files = discover([str(tmp_path / "src")])
    assert [f.source_id for f in files] == ["a.md", "b/a.txt", "b/z.md"]
    files = discover([str(tmp_path / "src" / "b" / "*.md"), str(tmp_path / "src" / "a.md")])
    assert [f.source_id for f in files] == ["a.md", "b/z.md"]
    with pytest.raises(ConfigError):
        discover([str(tmp_path / "nothing-*.md")])
    with pytest.raises(ConfigError):
        discover([str(tmp_path / "missing")])


# --------------------------------------------------------------------------------------------
# Live files: positions, lines still being written, detection past bad lines, tools
# --------------------------------------------------------------------------------------------
START = Pos()


def _read(path: Path, start: Pos = START, complete_tail: bool = False, **kw: object) -> tuple:
    skips = Skips()
    opts = ReadOptions(**kw)  # type: ignore[arg-type]
    opened = open_units(SourceFile(str(path), path.name), "auto", start, opts, skips, complete_tail)
    assert opened is not None
    units = list(opened.units)
    return units, opened.reader.pos, skips


def test_a_line_without_newline_waits_until_complete(tmp_path: Path) -> None:
    p = tmp_path / "live.jsonl"
    first = _claude_line("user", "one") + "\n"
    p.write_text(first + _claude_line("assistant", "two")[:-5])  # second line half written
    units, end, skips = _read(p)
    assert [u.text for u in units] == ["one"]
    assert end == Pos(len(first), 1, 0)  # the half line is not consumed ...
    assert not skips.counts  # ... and not counted as malformed
    p.write_text(first + _claude_line("assistant", "two") + "\n")
    units, end, _ = _read(p, start=end)
    assert [(u.record, u.text) for u in units] == [(1, "two")]
    assert end.offset == p.stat().st_size


def test_a_settled_last_line_without_newline_is_read(tmp_path: Path) -> None:
    p = tmp_path / "notes.md"
    p.write_text("first paragraph\n\nlast line, no newline")
    units, end, _ = _read(p, complete_tail=True)
    assert [u.text for u in units] == ["first paragraph", "last line, no newline"]
    assert end.offset == p.stat().st_size
    units, _, _ = _read(p, complete_tail=False)
    assert [u.text for u in units] == ["first paragraph"]


def test_units_know_where_they_start_and_where_reading_goes_on(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    lines = [_claude_line("user", "a"), json.dumps({"type": "summary"}), _claude_line("user", "b")]
    p.write_text("\n".join(lines) + "\n")
    units, _, _ = _read(p)
    data = p.read_bytes()
    for u in units:
        assert data[u.start.offset :].startswith(lines[u.record].encode())
    # reading from a unit's next position yields exactly the units after it
    again, _, _ = _read(p, start=units[0].next)
    assert [u.record for u in again] == [2]


def test_auto_detection_looks_past_a_malformed_first_line(tmp_path: Path) -> None:
    p = tmp_path / "session.jsonl"
    lines = [
        '{"type": "user", "message": {"content": "cut off',
        *[_claude_line("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(24)],
    ]
    p.write_text("\n".join(lines) + "\n")
    fmt, units, skips = _open(p)
    assert fmt == "claude"
    assert len(units) == 24
    assert skips.counts == {"malformed_line": 1}


def test_tool_calls_and_results_are_indexed_only_on_request(tmp_path: Path) -> None:
    p = tmp_path / "tools.jsonl"
    content = [
        {"type": "text", "text": "let me look"},
        {"type": "tool_use", "name": "Bash", "input": {"command": "ls -la"}},
    ]
    result = [{"type": "tool_result", "content": [{"type": "text", "text": "x" * 5000}]}]
    p.write_text(_claude_line("assistant", content) + "\n" + _claude_line("user", result) + "\n")
    units, _, skips = _read(p)
    assert [u.text for u in units] == ["let me look"]
    assert skips.counts == {"claude_tool_use_block": 1, "claude_tool_result_block": 1}
    units, _, skips = _read(p, include_tools=True, tool_max_chars=100)
    assert units[0].text == 'let me look\n[tool Bash] {"command": "ls -la"}'
    assert units[1].text.startswith("[tool result] xxx")
    assert len(units[1].text) < 130
    assert units[1].text.endswith("more]")
    assert not skips.counts


def test_conversation_timestamps_reach_the_units(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    rec = {
        "type": "user",
        "sessionId": "S",
        "timestamp": "2026-12-01T10:00:00Z",
        "message": {"role": "user", "content": "hi"},
    }
    p.write_text(json.dumps(rec) + "\n")
    units, _, _ = _read(p)
    assert units[0].time == "2026-12-01T10:00:00Z"
