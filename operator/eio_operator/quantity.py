"""Kubernetes resource quantities: the project's one place for them (the operator and the dev
cluster's node agent): parsing is ``kubernetes.utils.parse_quantity``; here are only the
project's helpers around it (bytes of a memory quantity, a "%"-of-the-limit threshold, rounding
to MiB, formatting a limit the way a person writes it) and the patterns the CRD uses.

Pure functions, no I/O. The CRD validates the same syntax with the patterns below (the API
server cannot compare two quantities without CEL, so the operator checks again).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Final

# Memory quantities: non-negative, no milli/micro/nano suffixes (a fraction of a byte is
# never meant), decimal exponents allowed as in Kubernetes.
MEMORY_PATTERN: Final = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE][0-9]+)?$"
# CPU quantities: as Kubernetes, including millicores ("500m").
CPU_PATTERN: Final = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([m]|[kMGTPE]|[eE][0-9]+)?$"
# A memory threshold: a percentage of the limit (1-100%) or a memory quantity ("0" = off).
THRESHOLD_PATTERN: Final = (
    r"^((100|[1-9][0-9]?)%|([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE][0-9]+)?)$"
)

_MEMORY = re.compile(MEMORY_PATTERN)
_THRESHOLD = re.compile(THRESHOLD_PATTERN)

MI: Final = 2**20


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ("512Mi", "1G", "250m", "1e9", 1024) as a Decimal (bytes or
    cores), parsed by ``kubernetes.utils.parse_quantity``; negative, infinite or NaN values and
    anything else that is not a quantity raise a ``ValueError`` that names the value."""
    from kubernetes.utils import parse_quantity as k8s_parse

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"not a quantity: {value!r}")
    text = value.strip() if isinstance(value, str) else str(value)
    try:
        parsed = k8s_parse(text) if text else None  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        parsed = None
    if not isinstance(parsed, Decimal) or not parsed.is_finite():
        raise ValueError(f"not a quantity: {value!r} (use e.g. 512Mi, 1G, 250m or 1e9)")
    if parsed < 0:
        raise ValueError(f"quantity must not be negative: {value!r}")
    return parsed


def memory_bytes(value: str | int) -> int:
    """A memory quantity in whole bytes (rounded up, as Kubernetes does)."""
    if isinstance(value, str) and not _MEMORY.match(value.strip()):
        raise ValueError(
            f"not a memory quantity: {value!r} (use e.g. 512Mi, 2Gi, 1G or a number of bytes)"
        )
    return math.ceil(parse_quantity(value))


def format_bytes(num: int) -> str:
    """Format bytes the way a person would write a limit: 2Gi, 768Mi, 1000Ki or 12345."""
    for suffix, factor in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30),
                           ("Mi", 2**20), ("Ki", 2**10)):
        if num >= factor and num % factor == 0:
            return f"{num // factor}{suffix}"
    return str(num)


def round_up_mi(num: float | Decimal | int) -> int:
    """Round a byte count up to a whole MiB (grown limits read well and stay stable)."""
    return math.ceil(Decimal(num) / MI) * MI


def is_percent(threshold: str | int) -> bool:
    return isinstance(threshold, str) and threshold.strip().endswith("%")


def validate_threshold(value: str | int) -> str | int:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("memory threshold must not be negative")
        return value
    if not _THRESHOLD.match(value.strip()):
        raise ValueError(
            f"memory threshold {value!r} is neither a percentage of the limit (1%-100%, "
            "e.g. 85%) nor a memory quantity (e.g. 400Mi); use 0 to turn it off"
        )
    return value.strip()


def threshold_bytes(threshold: str | int, limit_bytes: int) -> int | None:
    """The threshold in bytes for a container limited to ``limit_bytes``; None when off."""
    if is_percent(threshold):
        pct = Decimal(str(threshold).strip()[:-1])
        return int(Decimal(limit_bytes) * pct / 100)
    value = memory_bytes(threshold)
    return value or None
