"""Build identity: what made a collection's points, so that a run with other settings never
adds points cut or embedded another way to it (docs/live-sources.md, "When settings change").

A collection's identity is every setting that changes a point's text or vector: the model (its
name, dimension and a hash of its files: two models of one dimension are two embedding spaces),
how text is chunked (size, overlap, the model's input truncation), the format options that
change which text is read (format, JSONL field, tool calls and their truncation, the longest
line read) and the layout of the payload. It is stored in the manifest collection as one
reserved entry (``contract.IDENTITY_POINT_ID``); this module is pure: it builds identities and
says how two differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

from importer.settings import Settings

# Bump when the payload of a point changes shape (fields added, renamed, meaning changed):
# collections built before then differ from a fresh import and are reported as such.
PAYLOAD_LAYOUT_VERSION: Final = 1

# Field -> how a difference is named to the user, in the order they are reported.
_LABELS: Final = {
    "model": "model",
    "dim": "model dimension",
    "model_sha256": "model files (sha256)",
    "chunk_size": "chunk size",
    "chunk_overlap": "chunk overlap",
    "max_tokens": "model input truncation (tokens)",
    "format": "format",
    "jsonl_field": "jsonl field",
    "include_tools": "include tools",
    "tool_max_chars": "tool max chars",
    "max_line_bytes": "max line bytes",
    "layout": "payload layout version",
}


class BuildIdentity(BaseModel):
    """What built a collection (stored as JSON in the manifest's reserved entry)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    model: str
    dim: int
    model_sha256: str
    chunk_size: int
    chunk_overlap: int
    max_tokens: int
    format: str
    jsonl_field: str
    include_tools: bool
    tool_max_chars: int
    max_line_bytes: int
    layout: int = PAYLOAD_LAYOUT_VERSION


def from_settings(s: Settings, dim: int, max_tokens: int, model_sha256: str) -> BuildIdentity:
    """The identity a fresh import with ``s`` and the loaded model would record."""
    return BuildIdentity(
        model=s.model,
        dim=dim,
        model_sha256=model_sha256,
        chunk_size=s.chunk_size,
        chunk_overlap=s.chunk_overlap,
        max_tokens=max_tokens,
        format=s.format,
        jsonl_field=s.jsonl_field,
        include_tools=s.include_tools,
        tool_max_chars=s.tool_max_chars,
        max_line_bytes=s.max_line_bytes,
    )


def _shown(field: str, value: Any) -> str:
    if field == "model_sha256":
        return str(value)[:12]
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def differences(stored: BuildIdentity, wanted: BuildIdentity) -> list[str]:
    """What differs, one human-readable item each: ``"chunk size 120 -> 60"``."""
    out = []
    for field, label in _LABELS.items():
        a, b = getattr(stored, field), getattr(wanted, field)
        if a != b:
            out.append(f"{label} {_shown(field, a)} -> {_shown(field, b)}")
    return out


def digest(ident: BuildIdentity) -> str:
    """A short, stable hash of ``ident`` (16 hex digits): the same settings and model give the
    same digest on every shard; the operator's switch and retire orders carry it."""
    raw = json.dumps(ident.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def to_payload(ident: BuildIdentity) -> dict[str, Any]:
    """The reserved manifest entry's payload (no ``sid``: never read as a file's state)."""
    return {"build_identity": ident.model_dump()}


def from_payload(payload: dict[str, Any] | None) -> BuildIdentity | None:
    """The identity in a reserved entry's payload; None when it cannot be read (an entry
    from a future layout with fields missing is treated as a difference, not a crash)."""
    raw = (payload or {}).get("build_identity")
    if not isinstance(raw, dict):
        return None
    try:
        return BuildIdentity.model_validate(raw)
    except ValidationError:
        return None


def mismatch_message(collection: str, diffs: list[str]) -> str:
    """The one message of exit 78 for a run whose settings differ from the collection's."""
    return (
        f"collection {collection!r} was built with other settings: {'; '.join(diffs)}. "
        "Its points would mix two ways of cutting or embedding text. Either run with "
        "--rebuild (IMPORTER_REBUILD=true: builds a new version beside this one and switches "
        "to it when complete), or import into another --collection, or go back to the "
        "settings it was built with"
    )
