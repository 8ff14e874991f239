"""Embedding batches bounded by a count and a token budget (batch x padded tokens).

ONNX Runtime's memory high-water mark follows the largest batch *shape* it has seen
(texts x padded sequence length), so the budget bounds memory. Within a window of several
batches the chunks are sorted by length, so a batch holds texts of similar length and
little of each batch is padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

SPECIAL_TOKENS = 2  # [CLS] and [SEP]


T = TypeVar("T")


def padded(tokens: int, max_tokens: int) -> int:
    return min(tokens + SPECIAL_TOKENS, max_tokens)


def plan_batches(
    items: Sequence[T],
    batch_size: int,
    token_budget: int,
    max_tokens: int,
    key: Callable[[T], int],
    sort: bool = True,
) -> list[list[T]]:
    """Split ``items`` into batches of at most ``batch_size`` items whose
    ``len(batch) * longest padded length`` stays within ``token_budget``; ``key`` gives an
    item's token count (without special tokens).

    With ``sort``, items are ordered by length first (stable), so lengths in a batch are close.
    A single item always forms a batch, whatever its length.
    """
    order = sorted(items, key=key) if sort else list(items)
    batches: list[list[T]] = []
    cur: list[T] = []
    longest = 0
    for item in order:
        p = padded(key(item), max_tokens)
        new_longest = max(longest, p)
        if cur and (len(cur) + 1 > batch_size or (len(cur) + 1) * new_longest > token_budget):
            batches.append(cur)
            cur, new_longest = [], p
        cur.append(item)
        longest = new_longest
    if cur:
        batches.append(cur)
    return batches


def padding_ratio(
    batches: Sequence[Sequence[T]], max_tokens: int, key: Callable[[T], int]
) -> float:
    """Fraction of the token slots in the batches that are padding."""
    real = slots = 0
    for b in batches:
        longest = max(padded(key(c), max_tokens) for c in b)
        slots += longest * len(b)
        real += sum(padded(key(c), max_tokens) for c in b)
    return 1 - real / slots if slots else 0.0
