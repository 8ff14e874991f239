"""Spec validation (what a user gets told when the spec is wrong) and status handling."""

from __future__ import annotations

from typing import get_type_hints

import pytest
from eio_operator.models import (
    EmbeddingImportStatus,
    InvalidSpecError,
    RestartCause,
    RestartCounts,
    ShardChanges,
    ShardStatus,
    StatusChanges,
    merge_patch,
    parse_spec,
    parse_status,
)
from operator_testlib import spec_dict
from pydantic import BaseModel

from eio_common import quantity


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
        ({"sources.settleSeconds": -1}, "spec.sources.settleSeconds"),
        ({"sources.settleSeconds": 3601}, "spec.sources.settleSeconds"),
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
        {"mode": "Continuous", "sources.settleSeconds": 0},
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
    assert src.settle_seconds == 5  # the importer's own default: the same behaviour either way


# --------------------------------------------------------------------------------------------
# typed state updates
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "changes"),
    [
        (ShardStatus, ShardChanges),
        (EmbeddingImportStatus, StatusChanges),
    ],
)
def test_changes_typeddict_names_every_field(model: type[BaseModel], changes: type) -> None:
    # evolve(**changes) is checked by mypy against the TypedDict: it must list exactly the
    # model's fields, with the same types, or a field could not be changed (or a gone one could).
    hints = get_type_hints(changes)
    assert set(hints) == set(model.model_fields)
    for name, info in model.model_fields.items():
        assert hints[name] == info.annotation, name


def test_evolve_changes_fields_and_rejects_an_unknown_one() -> None:
    h = ShardStatus(index=0)
    assert h.evolve(attempt=2, reason="Started").attempt == 2
    with pytest.raises(TypeError, match="fails_without_progress"):
        h.evolve(**{"fails_without_progress": 1})  # type: ignore[typeddict-unknown-key]


def test_restart_counts_add_counts_each_cause_in_its_own_field() -> None:
    counts = RestartCounts()
    for cause in RestartCause:
        counts = counts.add(cause)
    assert counts.total == len(RestartCause)
    assert all(v == 1 for v in counts.model_dump().values() if v != counts.total)


# --------------------------------------------------------------------------------------------
# parse_status: an unreadable status is reported, and what is readable kept
# --------------------------------------------------------------------------------------------
def test_readable_and_absent_status_have_no_problem() -> None:
    assert parse_status(None) == (EmbeddingImportStatus(), None)
    st, problem = parse_status({"phase": "Running", "shards": [{"index": 0, "attempt": 2}]})
    assert problem is None
    assert st.shard(0).attempt == 2


def test_unreadable_shard_starts_afresh_in_place_and_the_others_keep_their_history() -> None:
    raw = {
        "phase": "Running",
        "shards": [
            {"index": 0, "attempt": 4, "failuresWithoutProgress": 2},
            {"index": 1, "attempt": "four", "failuresWithoutProgress": 3},
        ],
    }
    st, problem = parse_status(raw)
    assert problem is not None
    assert "shards.1.attempt" in problem
    assert st.shards == [
        ShardStatus(index=0, attempt=4, failures_without_progress=2),
        ShardStatus(index=1),
    ]
    assert st.phase == "Running"


def test_unreadable_field_takes_its_default_and_says_so() -> None:
    st, problem = parse_status({"restarts": {"total": "many"}, "shards": [{"index": 0}]})
    assert problem is not None
    assert "restarts.total" in problem
    assert st.restarts == RestartCounts()
    assert st.shards == [ShardStatus(index=0)]


@pytest.mark.parametrize("raw", ["text", ["a"], {"shards": "none"}])
def test_status_of_the_wrong_shape_is_reported(raw: object) -> None:
    st, problem = parse_status(raw)
    assert problem
    assert st.shards == []


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {"a": 1}, {"a": 1}),
        ({"a": 1, "b": 2}, {"a": 1}, {"a": 1, "b": None}),  # gone: null, or the server keeps it
        ({"build": {"active": "c", "target": "c--v1"}}, {"build": {"active": "c--v1"}},
         {"build": {"active": "c--v1", "target": None}}),
        ({"build": {"target": "c--v1"}}, {}, {"build": None}),
        ({"shards": [1, 2]}, {"shards": [1]}, {"shards": [1]}),  # lists are replaced whole
        (None, {"a": {"b": 1}}, {"a": {"b": 1}}),  # no status yet
    ],
)  # fmt: skip
def test_merge_patch_nulls_what_the_new_status_no_longer_has(
    old: object, new: dict[str, object], patch: dict[str, object]
) -> None:
    assert merge_patch(old, new) == patch
