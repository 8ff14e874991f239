"""The shared test helpers in devcluster/testing.py that need no cluster."""

from __future__ import annotations

import itertools

import pytest

from devcluster.testing import wait_for, with_paths


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "ready", "later"])
    assert wait_for(lambda: next(values), 5, "a value", interval=0) == "ready"


def test_wait_for_says_what_it_waited_for_and_the_last_value() -> None:
    calls = itertools.count(1)
    with pytest.raises(TimeoutError, match=r"waiting for the answer; last=0") as e:
        wait_for(lambda: 0 * next(calls), 0.05, "the answer", interval=0.01)
    assert "timed out after" in str(e.value)
    assert next(calls) > 2  # it polled more than once


def test_wait_for_looks_once_more_at_the_deadline() -> None:
    # a zero timeout still calls fn once: a fact that already holds is not a timeout
    assert wait_for(lambda: "now", 0, "a fact that already holds") == "now"


def test_wait_for_lets_the_condition_fail_the_wait() -> None:
    def broken() -> bool:
        raise AssertionError("the operator died")

    with pytest.raises(AssertionError, match="the operator died"):
        wait_for(broken, 5, "anything")


def test_with_paths_sets_nested_keys_and_leaves_the_base_alone() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    out = with_paths(base, {"a.b": 10, "x.y.z": "new", "a.c": None})
    assert out == {"a": {"b": 10}, "d": [1], "x": {"y": {"z": "new"}}}
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}
    out["d"].append(2)
    assert base["d"] == [1]  # a deep copy


def test_wait_for_adds_the_diagnosis_to_a_timeout() -> None:
    with pytest.raises(TimeoutError, match="--- operator log ---\nboom"):
        wait_for(lambda: None, 0, "Succeeded", diagnose=lambda: "--- operator log ---\nboom")
