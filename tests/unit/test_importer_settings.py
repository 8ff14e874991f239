"""Settings: threshold/shard/size parsing, env vs CLI precedence, one-line config errors."""

from __future__ import annotations

import pytest

from importer.settings import (
    ConfigError,
    Threshold,
    load_settings,
    parse_shard,
    parse_size,
    parse_threshold,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400Mi", 400 * 1024**2),
        ("500MB", 500 * 1000**2),
        ("1G", 1000**3),
        ("2Gi", 2 * 1024**3),
        ("123456789", 123456789),
        (" 64 mib ", 64 * 1024**2),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "12XB", "-5Mi", "1.2.3M"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_threshold_forms() -> None:
    assert parse_threshold("85%") == Threshold(fraction=0.85)
    assert parse_threshold("400Mi") == Threshold(bytes=400 * 1024**2)
    assert parse_threshold("0").off
    assert parse_threshold("0%").off
    assert parse_threshold("50%").resolve(1000) == 500
    assert parse_threshold("400Mi").resolve(10) == 400 * 1024**2
    assert not parse_threshold("85%").off


@pytest.mark.parametrize("text", ["150%", "-1%", "x%", "12", "1000", "lots"])
def test_parse_threshold_rejects(text: str) -> None:
    # "12" and "1000" are bytes: far too small to be meant, so they are rejected
    with pytest.raises(ValueError):
        parse_threshold(text)


def test_parse_shard() -> None:
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1/0", "a/b", "1", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_env_is_read_and_cli_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPORTER_SOURCE", "/a, /b/*.md")
    monkeypatch.setenv("IMPORTER_COLLECTION", "from-env")
    monkeypatch.setenv("IMPORTER_BATCH_SIZE", "7")
    monkeypatch.setenv("IMPORTER_CREATE_COLLECTION", "false")
    s = load_settings({})
    assert s.source == ["/a", "/b/*.md"]
    assert s.collection == "from-env"
    assert s.batch_size == 7
    assert s.create_collection is False
    s = load_settings({"collection": "from-cli", "batch_size": 9, "source": ["/c"]})
    assert (s.collection, s.batch_size, s.source) == ("from-cli", 9, ["/c"])


def test_api_key_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPORTER_QDRANT_API_KEY", "s3cr3t-key")
    s = load_settings({"source": ["/x"], "collection": "c"})
    assert s.qdrant_api_key == "s3cr3t-key"
    assert "s3cr3t-key" not in repr(s)


@pytest.mark.parametrize(
    ("cli", "needle"),
    [
        ({"collection": "c"}, "no source"),
        ({"source": ["/x"], "collection": "c", "format": "xml"}, "unknown format"),
        ({"source": ["/x"]}, "no collection"),
        ({"source": ["/x"], "collection": "c", "memory_threshold": "lots"}, "memory threshold"),
        ({"source": ["/x"], "collection": "c", "shard": "2/2"}, "shard"),
        ({"source": ["/x"], "collection": "c", "model_dir": "/nonexistent"}, "model dir"),
        ({"source": ["/x"], "collection": "c", "chunk_overlap": 500}, "overlap"),
        ({"source": ["/x"], "collection": "c", "batch_size": 0}, "--batch-size"),
        ({"source": ["/x"], "collection": "c", "checkpoint": "s3://x"}, "checkpoint"),
    ],
)
def test_bad_settings_one_line(cli: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(cli)
    msg = str(ei.value)
    assert needle in msg
    assert "\n" not in msg


def test_env_names_are_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator sets IMPORTER_SHARD; a user's importer_shard must not override it.
    monkeypatch.setenv("IMPORTER_SHARD", "0/1")
    monkeypatch.setenv("importer_shard", "1/2")
    with pytest.raises(ConfigError, match="rename it to IMPORTER_SHARD"):
        load_settings({"source": ["/x"], "collection": "c"})
