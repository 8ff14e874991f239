"""importer.identity: what built a collection, and how two builds differ (pure)."""

from __future__ import annotations

from importer.identity import (
    PAYLOAD_LAYOUT_VERSION,
    BuildIdentity,
    differences,
    from_payload,
    from_settings,
    to_payload,
)
from importer.settings import Settings


def _ident(**settings: object) -> BuildIdentity:
    s = Settings(source=["x"], collection="c", **settings)  # type: ignore[arg-type]
    return from_settings(s, 384, 128, "ab" * 32)


def test_same_settings_same_identity() -> None:
    assert differences(_ident(), _ident()) == []
    assert _ident().layout == PAYLOAD_LAYOUT_VERSION


def test_each_difference_is_named_with_both_values() -> None:
    a = _ident(chunk_size=120)
    assert differences(a, _ident(chunk_size=60)) == ["chunk size 120 -> 60"]
    assert differences(a, _ident(chunk_size=120, include_tools=True)) == ["include tools off -> on"]
    assert differences(a, _ident(chunk_size=120, jsonl_field="body")) == [
        "jsonl field text -> body"
    ]
    b = _ident(chunk_size=60, chunk_overlap=10, tool_max_chars=500, format="jsonl")
    assert differences(a, b) == [
        "chunk size 120 -> 60",
        "chunk overlap 20 -> 10",
        "format auto -> jsonl",
        "tool max chars 2000 -> 500",
    ]


def test_model_differences_same_dimension() -> None:
    a = _ident()
    other = a.model_copy(update={"model": "m2", "model_sha256": "cd" * 32})
    assert differences(a, other) == ["model paraphrase-MiniLM-L3-v2 -> m2",
                                     f"model files (sha256) {'ab' * 6} -> {'cd' * 6}"]  # fmt: skip
    assert differences(a, a.model_copy(update={"max_tokens": 256})) == [
        "model input truncation (tokens) 128 -> 256"
    ]
    assert differences(a, a.model_copy(update={"layout": 2})) == ["payload layout version 1 -> 2"]


def test_payload_round_trip_and_unreadable() -> None:
    a = _ident()
    assert from_payload(to_payload(a)) == a
    assert "sid" not in to_payload(a)  # never read as a file's state
    assert from_payload(None) is None
    assert from_payload({"build_identity": {"model": "x"}}) is None
    assert from_payload({"sid": "a.txt"}) is None
