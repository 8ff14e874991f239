"""Spec validation: what a user gets told when the spec is wrong."""

from __future__ import annotations

import pytest
from eio_operator import quantity
from eio_operator.models import InvalidSpecError, parse_spec
from operator_testlib import spec_dict


def error_of(**patch: object) -> str:
    with pytest.raises(InvalidSpecError) as exc:
        parse_spec(spec_dict(**patch), "imp")
    return str(exc.value)


def test_valid_base_spec() -> None:
    spec = parse_spec(spec_dict(), "imp")
    assert spec.importer.limit_bytes == 2**30
    assert spec.ceiling_bytes == 2 * 2**30
    assert spec.shards == 1


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"embedding.batchSize": -1}, "spec.embedding.batchSize: Input should be greater than"),
        ({"embedding.batchSize": 0}, "spec.embedding.batchSize"),
        (
            {"importer.resources.limits": {}},
            "spec.importer.resources.limits.memory: Field required",
        ),
        ({"importer.resources": {}}, "spec.importer.resources.limits: Field required"),
        ({"memoryPolicy.threshold": "2Gi"}, "memoryPolicy.threshold (2Gi) must be below"),
        ({"memoryPolicy.threshold": "1Gi"}, "must be below importer.resources.limits.memory"),
        ({"memoryPolicy.threshold": "150%"}, "neither a percentage"),
        ({"memoryPolicy.threshold": "lots"}, "neither a percentage"),
        ({"memoryPolicy.maxMemoryLimit": "512Mi"}, "maxMemoryLimit (512Mi) must not be below"),
        ({"importer.resources.limits.memory": "1Gb"}, "not a memory quantity: '1Gb'"),
        ({"importer.resources.limits.memory": "100m"}, "not a memory quantity"),
        ({"importer.resources.requests": {"memory": "2Gi"}}, "requests.memory (2Gi) is above"),
        ({"sources.configMap": {"name": "x"}}, "exactly one of hostPath, persistentVolumeClaim"),
        ({"sources.hostPath": None}, "exactly one of hostPath, persistentVolumeClaim"),
        ({"sources.paths": ["/etc/passwd"]}, "must be relative"),
        ({"sources.paths": ["a/../../etc"]}, "must not contain '..'"),
        ({"sources.paths": []}, "spec.sources.paths"),
        ({"qdrant.url": "http://q:6333"}, "exactly one of url"),
        ({"qdrant.embedded": None}, "exactly one of url"),
        ({"qdrant.embedded": {}}, "exactly one of hostPath or persistentVolumeClaim"),
        ({"qdrant.apiKeySecretRef": {"name": "s", "key": "k"}}, "apiKeySecretRef needs"),
        ({"qdrant.collection": "a/b"}, "spec.qdrant.collection"),
        ({"chunking": {"size": 100, "overlap": 100}}, "overlap (100) must be smaller"),
        ({"importer.env": [{"name": "IMPORTER_SHARD", "value": "0/9"}]}, "IMPORTER_SHARD is set"),
        ({"importer.env": [{"name": "importer_shard", "value": "0/9"}]}, "importer_shard is set"),
        (
            {"memoryPolicy.backoffSeconds": 600, "memoryPolicy.maxBackoffSeconds": 60},
            "maxBackoffSeconds (60) must not be below backoffSeconds (600)",
        ),
        ({"parallelism.shards": 0}, "spec.parallelism.shards"),
        ({"memoryPolicy.growFactor": 0.5}, "spec.memoryPolicy.growFactor"),
        ({"sources.format": "pdf"}, "spec.sources.format"),
        ({"mode": "Forever"}, "spec.mode: Input should be 'Once' or 'Continuous'"),
        ({"sources.onDelete": "delete"}, "spec.sources.onDelete: Input should be 'Keep' or"),
        ({"sources.pollIntervalSeconds": 0}, "spec.sources.pollIntervalSeconds: Input should be"),
        ({"sources.pollIntervalSeconds": 86401}, "spec.sources.pollIntervalSeconds"),
        (
            {"sources.includeTools": True, "sources.format": "jsonl"},
            "includeTools applies to Claude conversations only",
        ),
        (
            {"mode": "Continuous", "sources.pollIntervalSeconds": 300},
            "pollIntervalSeconds (300) must be below memoryPolicy.stallSeconds (300)",
        ),
    ],
)
def test_invalid_spec_messages(patch: dict[str, object], expected: str) -> None:
    assert expected in error_of(**patch)


def test_several_problems_are_reported_together() -> None:
    msg = error_of(**{"embedding.batchSize": -1, "parallelism.shards": 100})
    assert "batchSize" in msg
    assert "shards" in msg


def test_name_too_long_for_a_label() -> None:
    with pytest.raises(InvalidSpecError, match="at most 63"):
        parse_spec(spec_dict(), "x" * 64)


def test_missing_spec() -> None:
    with pytest.raises(InvalidSpecError, match="spec is missing"):
        parse_spec(None, "imp")


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        ("85%", int(2**30 * 0.85)),
        ("100%", 2**30),
        ("512Mi", 2**29),
        (0, None),
        ("0", None),
        (500_000_000, 500_000_000),
    ],
)
def test_threshold_bytes(threshold: str | int, expected: int | None) -> None:
    spec = parse_spec(spec_dict(**{"memoryPolicy.threshold": threshold}), "imp")
    assert quantity.threshold_bytes(spec.memory_policy.threshold, 2**30) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30),
        ("512Mi", 2**29),
        ("1G", 10**9),
        ("1e3", 1000),
        (1024, 1024),
        ("1.5Gi", 3 * 2**29),
        ("100k", 100_000),
    ],
)
def test_memory_quantities(text: str | int, value: int) -> None:
    assert quantity.memory_bytes(text) == value


@pytest.mark.parametrize(
    ("num", "text"),
    [(2**30, "1Gi"), (3 * 2**29, "1536Mi"), (1000, "1000"), (2**20 * 1024 * 3, "3Gi")],
)
def test_format_bytes(num: int, text: str) -> None:
    assert quantity.format_bytes(num) == text


@pytest.mark.parametrize(
    "patch",
    [
        {"mode": "Continuous"},
        {"mode": "Continuous", "sources.pollIntervalSeconds": 299},
        {"mode": "Continuous", "sources.pollIntervalSeconds": 900, "memoryPolicy.stallSeconds": 0},
        {"mode": "Once", "sources.pollIntervalSeconds": 900},  # only a follower polls
        {"sources.includeTools": True, "sources.format": "auto"},
        {"sources.includeTools": False, "sources.format": "text"},
        {"sources.onDelete": "Delete"},
    ],
)
def test_live_source_options_accepted(patch: dict[str, object]) -> None:
    parse_spec(spec_dict(**patch), "imp")


def test_live_source_defaults() -> None:
    spec = parse_spec(spec_dict(), "imp")
    assert (spec.mode, spec.continuous) == ("Once", False)
    src = spec.sources
    assert (src.on_delete, src.poll_interval_seconds, src.include_tools) == ("Keep", 10, False)
