"""The contract between the operator and the importer: exit codes, names and the checkpoint.

This module is the only one the operator imports from the ``importer`` package. It depends on
pydantic and the standard library only (no fastembed, no qdrant-client, no kubernetes), so the
operator image stays small. Change it only together with both sides.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

# --------------------------------------------------------------------------------------------
# Exit codes (DESIGN.md, "Importer exit codes")
# --------------------------------------------------------------------------------------------
EXIT_OK: Final = 0  # all assigned work done, checkpoint says complete
EXIT_TEMPFAIL: Final = 75  # EX_TEMPFAIL: threshold / recycle point reached, checkpoint saved
EXIT_CONFIG: Final = 78  # EX_CONFIG: bad configuration or unreadable source spec; do not retry
EXIT_OOM_KILLED: Final = 137  # 128 + SIGKILL: what a kernel OOM kill looks like from outside

# --------------------------------------------------------------------------------------------
# Names shared by the operator (writer of manifests) and the importer (reader of its env)
# --------------------------------------------------------------------------------------------
API_GROUP: Final = "eio.dev"
API_VERSION: Final = "v1alpha1"
KIND: Final = "EmbeddingImport"
PLURAL: Final = "embeddingimports"
LABEL_PREFIX: Final = "eio.dev"
LABEL_IMPORT: Final = f"{LABEL_PREFIX}/import"
LABEL_SHARD: Final = f"{LABEL_PREFIX}/shard"
LABEL_ATTEMPT: Final = f"{LABEL_PREFIX}/attempt"
CHECKPOINT_KEY: Final = "checkpoint.json"  # data key inside the checkpoint ConfigMap
ENV_PREFIX: Final = "IMPORTER_"  # every importer setting is also an env var with this prefix
POINT_NAMESPACE: Final = uuid.UUID("6f1c1e9e-5b7a-4c1e-9a53-0c5e1d8b6a10")  # for UUIDv5 IDs


def checkpoint_configmap_name(import_name: str, shard: int) -> str:
    """ConfigMap that holds shard ``shard``'s checkpoint of import ``import_name``."""
    return _dns_name(f"{import_name}-ckpt-{shard}")


def pod_name(import_name: str, shard: int, attempt: int) -> str:
    """Deterministic pod name for one shard attempt (at most 63 characters)."""
    return _dns_name(f"{import_name}-s{shard}-a{attempt}")


def _dns_name(name: str, limit: int = 63) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def point_id(source_id: str, chunk_index: int) -> str:
    """Deterministic point ID: UUIDv5 of the source identity and the chunk's position.

    ``source_id`` is the file's path relative to its source root (stable across pods and
    machines); ``chunk_index`` is the chunk's position within that file.
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{source_id}#{chunk_index}"))


# --------------------------------------------------------------------------------------------
# Compact index sets: "0-99,105,200-300" over positions in the shard's sorted file list
# --------------------------------------------------------------------------------------------
def encode_ranges(indices: Iterable[int]) -> str:
    """Encode a set of non-negative ints as sorted inclusive ranges, e.g. ``"0-3,7,9-10"``."""
    out: list[str] = []
    start = prev = -2
    for i in sorted(set(indices)):
        if i == prev + 1:
            prev = i
            continue
        if start >= 0:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = i
    if start >= 0:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ",".join(out)


def iter_ranges(encoded: str) -> Iterator[int]:
    """Inverse of :func:`encode_ranges`."""
    for part in filter(None, encoded.split(",")):
        lo, _, hi = part.partition("-")
        yield from range(int(lo), int(hi or lo) + 1)


def count_ranges(encoded: str) -> int:
    total = 0
    for part in filter(None, encoded.split(",")):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


# --------------------------------------------------------------------------------------------
# Checkpoint: a small cursor, never a list of point IDs
# --------------------------------------------------------------------------------------------
class Heartbeat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    memory_bytes: int = Field(0, alias="memoryBytes", ge=0)
    pod: str | None = None
    waiting: str | None = Field(
        None, description="why the importer makes no progress right now (e.g. Qdrant down)"
    )


class Counters(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    files: int = Field(0, ge=0, description="files finished (done or skipped)")
    records: int = Field(0, ge=0)
    chunks: int = Field(0, ge=0)
    points: int = Field(0, ge=0, description="points acknowledged by Qdrant")
    skipped: dict[str, int] = Field(default_factory=dict, description="skipped items by reason")


class Checkpoint(BaseModel):
    """Progress of one shard. Stored as JSON in a ConfigMap (key ``checkpoint.json``) or a file.

    ``done`` holds positions in the shard's deterministically sorted file list (compact ranges);
    ``offsets`` holds, for files started but not finished, the index of the next unprocessed
    record. ``files_digest`` identifies the file list so a changed source is noticed.
    Only advanced after Qdrant acknowledged the points (``wait=True``).
    """

    model_config = ConfigDict(populate_by_name=True)

    version: int = 1
    shard: int = Field(0, ge=0)
    shards: int = Field(1, ge=1)
    files_total: int = Field(0, alias="filesTotal", ge=0)
    files_digest: str = Field("", alias="filesDigest")
    done: str = ""
    offsets: dict[int, int] = Field(default_factory=dict)
    chunk_offsets: dict[int, int] = Field(
        default_factory=dict,
        alias="chunkOffsets",
        description="importer-internal: for files in offsets, the index of the next chunk",
    )
    piece_offsets: dict[int, int] = Field(
        default_factory=dict,
        alias="pieceOffsets",
        description="importer-internal: for files in offsets whose next record is longer than "
        "a chunk, the number of its token windows already done",
    )
    counters: Counters = Field(default_factory=Counters)
    attempt: int = Field(0, ge=0, description="number of the run that wrote this checkpoint")
    peak_memory_bytes: int = Field(0, alias="peakMemoryBytes", ge=0)
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    complete: bool = False
    last_exit: str | None = Field(
        None, alias="lastExit", description="why the last run stopped: complete/threshold/..."
    )

    @property
    def files_done(self) -> int:
        return count_ranges(self.done)

    def progress_mark(self) -> tuple[int, int]:
        """A monotonically increasing measure of work: (files done, records in started files).

        The operator compares marks across attempts to tell whether work advanced.
        """
        return (self.files_done, sum(self.offsets.values()))

    def work_mark(self) -> tuple[int, int, int]:
        """Like :meth:`progress_mark`, plus the chunks done in started files.

        Finer: it also grows while a run only gets through part of one long record (a record
        longer than a chunk is split into token windows, and a run may stop between them),
        where ``progress_mark`` stays the same.
        """
        return (self.files_done, sum(self.offsets.values()), sum(self.chunk_offsets.values()))

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        return cls.model_validate(json.loads(text))


def files_digest(relative_paths: Iterable[str]) -> str:
    """Digest of a sorted file list; stored in the checkpoint to notice a changed source."""
    h = hashlib.sha256()
    for p in relative_paths:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:16]
