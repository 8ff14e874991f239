"""Settings: threshold/shard/size parsing, env vs CLI precedence, one-line config errors."""

from __future__ import annotations

import pytest

from importer.settings import (
    ConfigError,
    Threshold,
    load_settings,
    parse_shard,
    parse_threshold,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("85%", Threshold(percent=85)),
        ("400Mi", Threshold(bytes=400 * 1024**2)),
        ("1e9", Threshold(bytes=10**9)),
        ("2E9", Threshold(bytes=2 * 10**9)),
        (".5Gi", Threshold(bytes=512 * 1024**2)),
        ("512M", Threshold(bytes=512 * 10**6)),
        ("16Mi", Threshold(bytes=16 * 1024**2)),
        (" 1G ", Threshold(bytes=10**9)),
        ("123456789", Threshold(bytes=123456789)),
        ("0", Threshold()),
    ],
)
def test_parse_threshold_kubernetes_quantities(text: str, expected: Threshold) -> None:
    """The importer reads a threshold with the CRD's grammar (Kubernetes quantities)."""
    assert parse_threshold(text) == expected


def test_threshold_resolves_against_the_limit() -> None:
    assert parse_threshold("0").off
    assert parse_threshold("50%").resolve(1000) == 500
    assert parse_threshold("400Mi").resolve(10) == 400 * 1024**2
    assert not parse_threshold("85%").off
    assert str(parse_threshold("85%")) == "85%"
    assert str(parse_threshold("400Mi")) == "400Mi"


# "12", "1000", "512k" and "10Mi" are below the 16Mi floor (the CRD refuses them too, by CEL);
# "500MB" and "64 mib" are not Kubernetes quantities; "0%" is not a percentage of 1-100.
@pytest.mark.parametrize(
    "text", ["150%", "-1%", "x%", "0%", "85.5%", "12", "1000", "512k", "10Mi", "lots",
             "500MB", "64 mib", "-5Mi", "1.2.3M", ""],
)  # fmt: skip
def test_parse_threshold_rejects(text: str) -> None:
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
