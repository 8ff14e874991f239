"""What a point carries besides its vector: the chunk's text and fields to filter on.

- ``source`` (the file's source id) and ``chunk_index``: the point's identity;
- ``project``: for Claude Code conversations, the directory under ``projects/`` (or the first
  directory of the source id), so that a search can stay within one project;
- ``session``, ``role`` / ``roles``: the conversation and who spoke;
- ``time_from`` / ``time_to``: the first and last timestamp of the records in the chunk.
Everything here follows from the chunk alone, so a re-run produces identical points.
"""

from __future__ import annotations

from typing import Any

from importer.chunking import Chunk


def project_of(source_id: str) -> str | None:
    parts = source_id.split("/")[:-1]
    if "projects" in parts:
        i = len(parts) - 1 - parts[::-1].index("projects")
        return parts[i + 1] if i + 1 < len(parts) else None
    return parts[0] if parts else None


def chunk_payload(source_id: str, c: Chunk, fmt: str) -> dict[str, Any]:
    p: dict[str, Any] = {
        "text": c.text,
        "source": source_id,
        "chunk_index": c.chunk_index,
        "format": fmt,
    }
    if c.roles:
        p["role"] = c.roles[0] if len(set(c.roles)) == 1 else "mixed"
        p["roles"] = c.roles
    if c.session is not None:
        p["session"] = c.session
    if fmt == "claude":
        project = project_of(source_id)
        if project:
            p["project"] = project
    if c.times:
        p["time_from"], p["time_to"] = min(c.times), max(c.times)
    return p
