"""Kubernetes resource quantities: the project's one grammar for them (the operator, the
importer and the dev cluster's node agent): parsing is ``kubernetes.utils.parse_quantity``;
here are only the project's helpers around it (bytes of a memory quantity, a memory threshold
as a percentage of the limit or a quantity, rounding to MiB, formatting a limit the way a
person writes it) and the patterns the CRD uses.

Pure functions, no I/O. The CRD validates the same syntax with the patterns below and the
threshold's floor with CEL's quantity functions, so that a threshold ``kubectl apply`` accepts
is one the importer runs with (the operator checks again when it parses a spec).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
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
# The smallest absolute threshold: below it a number is a mistake (bytes meant as MiB), not a
# memory budget. The CRD enforces the same floor (CEL) at `kubectl apply`.
THRESHOLD_FLOOR: Final = 16 * MI


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
    for suffix, factor in (
        ("Ei", 2**60),
        ("Pi", 2**50),
        ("Ti", 2**40),
        ("Gi", 2**30),
        ("Mi", 2**20),
        ("Ki", 2**10),
    ):
        if num >= factor and num % factor == 0:
            return f"{num // factor}{suffix}"
    return str(num)


def round_up_mi(num: float | Decimal | int) -> int:
    """Round a byte count up to a whole MiB (grown limits read well and stay stable)."""
    return math.ceil(Decimal(num) / MI) * MI


def is_percent(threshold: str | int) -> bool:
    return isinstance(threshold, str) and threshold.strip().endswith("%")


@dataclass(frozen=True)
class Threshold:
    """A memory threshold: off, a number of bytes, or a percentage of the limit in force."""

    bytes: int = 0
    percent: int = 0  # 1-100, of the limit

    @property
    def off(self) -> bool:
        return self.bytes == 0 and self.percent == 0

    def resolve(self, limit_bytes: int) -> int:
        """The threshold in bytes given the memory limit that applies (0 = off)."""
        if self.percent:
            return limit_bytes * self.percent // 100
        return self.bytes

    def __str__(self) -> str:
        if self.off:
            return "off"
        return f"{self.percent}%" if self.percent else format_bytes(self.bytes)


def parse_threshold(value: str | int) -> Threshold:
    """``85%`` of the limit, a memory quantity of at least 16Mi (``400Mi``, ``1e9``, ``.5Gi``)
    or ``0`` (off); anything else raises a ``ValueError`` that says what to write instead."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"not a memory threshold: {value!r}")
    text = str(value).strip()
    if not _THRESHOLD.match(text):
        raise ValueError(
            f"memory threshold {value!r} is neither a percentage of the limit (1%-100%, "
            "e.g. 85%) nor a memory quantity (e.g. 400Mi, 1G, 1e9); use 0 to turn it off"
        )
    if text.endswith("%"):
        return Threshold(percent=int(text[:-1]))
    num = memory_bytes(text)
    if 0 < num < THRESHOLD_FLOOR:
        raise ValueError(
            f"memory threshold {value!r} is below {format_bytes(THRESHOLD_FLOOR)}: a number "
            "without a unit is bytes; give a unit such as 400Mi, or 0 to turn it off"
        )
    return Threshold(bytes=num)


def validate_threshold(value: str | int) -> str | int:
    """``value`` normalised (stripped) if it is a threshold ``parse_threshold`` accepts."""
    parse_threshold(value)
    return value.strip() if isinstance(value, str) else value


def threshold_bytes(threshold: str | int, limit_bytes: int) -> int | None:
    """The threshold in bytes for a container limited to ``limit_bytes``; None when off."""
    return parse_threshold(threshold).resolve(limit_bytes) or None
