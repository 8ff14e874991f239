"""Batches are bounded by count and token budget; length sorting cuts padding."""

from __future__ import annotations

import random

import pytest

from importer.batching import padded, padding_ratio, plan_batches


def _tok(x: int) -> int:
    return x


@pytest.mark.parametrize("seed", range(5))
def test_bounds_hold(seed: int) -> None:
    rnd = random.Random(seed)
    items = [rnd.randint(1, 126) for _ in range(500)]
    batches = plan_batches(items, batch_size=32, token_budget=2048, max_tokens=128, key=_tok)
    assert sorted(x for b in batches for x in b) == sorted(items)
    for b in batches:
        assert len(b) <= 32
        assert len(b) * max(padded(x, 128) for x in b) <= 2048


def test_single_oversized_item_still_batched() -> None:
    batches = plan_batches([500], batch_size=8, token_budget=64, max_tokens=512, key=_tok)
    assert batches == [[500]]


def test_unsorted_keeps_order() -> None:
    items = [5, 1, 4, 2]
    batches = plan_batches(
        items, batch_size=2, token_budget=10_000, max_tokens=128, key=_tok, sort=False
    )
    assert batches == [[5, 1], [4, 2]]


def test_sorting_reduces_padding() -> None:
    rnd = random.Random(0)
    items = [rnd.choice([rnd.randint(3, 20), rnd.randint(100, 126)]) for _ in range(512)]
    unsorted = plan_batches(items, 32, 8192, 128, key=_tok, sort=False)
    srt = plan_batches(items, 32, 8192, 128, key=_tok, sort=True)
    assert padding_ratio(srt, 128, _tok) < 0.1
    assert padding_ratio(unsorted, 128, _tok) > 0.3
