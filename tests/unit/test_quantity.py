"""Kubernetes quantities: one parser (``kubernetes.utils.parse_quantity`` behind
``eio_common.quantity``) for the operator and the dev cluster's node agent, and the project's
helpers around it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from devcluster import podspec
from eio_common import quantity


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("1Gi", 2**30),
        ("1.5G", 1_500_000_000),
        ("1.5Gi", 3 * 2**29),
        ("500M", 500 * 10**6),
        ("128Mi", 128 * 2**20),
        ("100k", 100_000),
        ("100m", Decimal("0.1")),
        ("250m", Decimal("0.25")),
        ("1e3", 1000),
        (" 2 ", 2),
        (3, 3),
        ("0", 0),
    ],
)
def test_parse_quantity(q: str | int, expected: object) -> None:
    assert quantity.parse_quantity(q) == Decimal(str(expected))


@pytest.mark.parametrize(
    "bad", ["", "80%", "12 parsecs", "1ki", "1Ki2", "NaN", "inf", "Mi", True, None]
)
def test_parse_quantity_rejects_what_is_not_a_quantity_and_names_it(bad: object) -> None:
    with pytest.raises(ValueError, match="not a quantity") as err:
        quantity.parse_quantity(bad)  # type: ignore[arg-type]
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("bad", ["-1", "-1Gi", -3])
def test_parse_quantity_rejects_negative_values(bad: str | int) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        quantity.parse_quantity(bad)


def test_the_node_agent_parses_with_the_same_function() -> None:
    assert podspec.parse_quantity is quantity.parse_quantity
    assert podspec.memory_limit_bytes({"resources": {"limits": {"memory": "1.5G"}}}) == 1.5e9
    assert podspec.memory_limit_bytes({"resources": {"limits": {"memory": "100m"}}}) == 1


@pytest.mark.parametrize(
    ("text", "value"), [("1Gi", 2**30), ("1.5G", 1_500_000_000), ("500M", 500_000_000)]
)
def test_memory_bytes(text: str, value: int) -> None:
    assert quantity.memory_bytes(text) == value


@pytest.mark.parametrize("bad", ["100m", "80%", "1.5 Gi", "-1Gi"])
def test_memory_bytes_rejects_fractions_of_a_byte_and_non_quantities(bad: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        quantity.memory_bytes(bad)


@pytest.mark.parametrize(
    ("threshold", "limit", "expected"),
    [("80%", 1000, 800), ("100%", 2**30, 2**30), ("400Mi", 2**30, 400 * 2**20), ("0", 10, None)],
)
def test_threshold_bytes(threshold: str, limit: int, expected: int | None) -> None:
    assert quantity.threshold_bytes(threshold, limit) == expected


@pytest.mark.parametrize("bad", ["0%", "101%", "80 %", "lots"])
def test_validate_threshold_rejects_with_a_hint(bad: str) -> None:
    with pytest.raises(ValueError, match="neither a percentage"):
        quantity.validate_threshold(bad)


@pytest.mark.parametrize(
    ("num", "rounded"),
    [(1, 2**20), (2**20, 2**20), (2**20 + 1, 2**21), (Decimal("1.5") * 2**20, 2**21)],
)
def test_round_up_mi(num: int | Decimal, rounded: int) -> None:
    assert quantity.round_up_mi(num) == rounded
