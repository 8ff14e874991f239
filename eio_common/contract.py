"""The contract between the operator and the importer: exit codes, names and the checkpoint.

This module is the only one the operator imports from the ``importer`` package. It depends on
pydantic and the standard library only (no fastembed, no qdrant-client, no kubernetes), so the
operator image stays small. Change it only together with both sides.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
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
# A newer attempt of the shard exists (the checkpoint's fence, FENCE_ANNOTATION, is above this
# run's attempt): the importer stopped without writing anything. Not a failure: the operator
# never counts it against the budget. Outside the sysexits range on purpose.
EXIT_SUPERSEDED: Final = 79

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
# The fence: annotation on the checkpoint ConfigMap with the shard's current attempt. The
# operator raises it to M before it creates attempt M's pod; an importer writes its points,
# file states and checkpoint only while the fence is not above its own attempt.
FENCE_ANNOTATION: Final = f"{LABEL_PREFIX}/current-attempt"
# On an importer pod: a hash of the spec fields that change how points are built; the operator
# ends a pod whose hash is not the spec's (a new version of the collection is filled).
BUILD_HASH_ANNOTATION: Final = f"{LABEL_PREFIX}/build-hash"
# The coordinated switch of a rebuild with several shards (importer ``--switch-on-order``): each
# shard fills its new version and reports it ready (``BuildState.ready_at``, ``digest``); once
# every shard is ready with the same digest, the operator sets SWITCH_ANNOTATION to that digest
# on every shard's checkpoint ConfigMap and the shards switch readers to the new version. Old
# versions stay open (a fan-out read pinned to them still answers) until every shard reports the
# digest active; then the operator sets RETIRE_ANNOTATION to the digest and the shards delete
# the old versions beyond ``keepOldVersions``. Values: ``BuildState.digest``.
SWITCH_ANNOTATION: Final = f"{LABEL_PREFIX}/switch-build"
RETIRE_ANNOTATION: Final = f"{LABEL_PREFIX}/retire-build"
ENV_PREFIX: Final = "IMPORTER_"  # every importer setting is also an env var with this prefix
POINT_NAMESPACE: Final = uuid.UUID("6f1c1e9e-5b7a-4c1e-9a53-0c5e1d8b6a10")  # for UUIDv5 IDs


def checkpoint_configmap_name(import_name: str, shard: int) -> str:
    """ConfigMap that holds shard ``shard``'s checkpoint of import ``import_name``."""
    return _dns_name(f"{import_name}-ckpt-{shard}")


def fence_of(annotations: dict[str, str] | None) -> int | None:
    """The fence stored in a checkpoint ConfigMap's annotations; None if unset or unreadable
    (an unreadable fence fences nobody: the operator rewrites it before the next pod)."""
    raw = (annotations or {}).get(FENCE_ANNOTATION)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def superseded_by(fence: int | None, attempt: int | None) -> int | None:
    """The newer attempt that supersedes ``attempt``, or None while ``attempt`` may write.

    ``attempt`` None (a standalone run, no ``--attempt``) is never fenced; neither is any
    attempt while the fence is unset."""
    if fence is None or attempt is None or fence <= attempt:
        return None
    return fence


def pod_name(import_name: str, shard: int, attempt: int) -> str:
    """Deterministic pod name for one shard attempt (at most 63 characters)."""
    return _dns_name(f"{import_name}-s{shard}-a{attempt}")


READ_PORT: Final = 6333  # an embedded store's read API in a pod (Qdrant's REST port)


def read_service_name(import_name: str, shard: int | None = None) -> str:
    """The Service to the read APIs of an import's pods (embedded store): every shard's pods,
    or one shard's (the peers a read fans out to)."""
    suffix = "-reads" if shard is None else f"-reads-{shard}"
    return _dns_name(f"{import_name}{suffix}")


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
# Per-file state: progress keyed by a file's identity, never by its position in a list
# --------------------------------------------------------------------------------------------
HEAD_BYTES: Final = 1024  # a file's fingerprint covers at most this many leading bytes


def head_hash(data: bytes) -> str:
    """Fingerprint of a file's head (its first ``len(data)`` bytes)."""
    return hashlib.sha256(data).hexdigest()[:16]


def text_hash(text: str) -> str:
    """Hash of a chunk's text: an unchanged chunk is never embedded again."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Cursor(BaseModel):
    """Where a fresh reader + chunker restarts: the first line of a record, the record's
    number, the index of the chunk that starts there and, inside a record longer than a chunk,
    the number of its token windows already done."""

    offset: int = Field(0, ge=0, description="byte offset of the record's first line")
    line: int = Field(0, ge=0)
    record: int = Field(0, ge=0)
    chunk: int = Field(0, ge=0)
    piece: int = Field(0, ge=0)


class FileState(BaseModel):
    """Progress of one source file (importer-internal, stored in the manifest).

    ``size`` bytes (whole lines) were read; points ``0..chunks-1`` exist. ``cursor`` is where
    reading goes on: after the last stored chunk while the file is being read, and at the start
    of its last chunk once the file was read to the end (that chunk may still grow when lines
    are appended). ``last`` is the start of chunk ``chunks-1`` and ``tail`` its text's hash.
    """

    sid: str
    head: str = ""
    head_len: int = Field(0, ge=0)
    size: int = Field(0, ge=0)
    mtime_ns: int = Field(0, ge=0, description="modification time when it was last read")
    fmt: str = ""
    chunks: int = Field(0, ge=0)
    cursor: Cursor = Field(default_factory=Cursor)
    last: Cursor = Field(default_factory=Cursor)
    tail: str = ""
    complete: bool = False


@dataclass(slots=True)
class Known:
    """A file's state as kept in memory between scans: the few fields a scan compares, and the
    rest as the JSON it is stored as (parsed only for a file that changed). About 0.5 KB a
    file instead of several KB for a parsed model: 100,000 files stay a few tens of MB."""

    size: int
    mtime_ns: int
    complete: bool
    chunks: int
    raw: str

    @classmethod
    def of(cls, st: FileState) -> Known:
        return cls(st.size, st.mtime_ns, st.complete, st.chunks, st.model_dump_json())

    def state(self) -> FileState:
        return FileState.model_validate_json(self.raw)

    def unchanged(self, size: int, mtime_ns: int) -> bool:
        """Read to its end, and neither its size nor its modification time changed since."""
        return self.complete and size == self.size and mtime_ns == self.mtime_ns


def manifest_point_id(source_id: str) -> str:
    """ID of a file's entry in the manifest collection (one point per source file)."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{source_id}#manifest"))


def manifest_collection(collection: str) -> str:
    """The collection that holds the per-file manifest of ``collection``'s import."""
    return f"{collection}-files"


# Versions of a collection (``run --rebuild``, docs/live-sources.md "When settings change"):
# version N of collection C is the physical collection ``C--vN`` (its manifest ``C--vN-files``).
# Readers name C: on a Qdrant server C is an alias of the active version; in an embedded store
# the file ``C.eio-active.json`` beside the collection directories names it ({"active":
# "C--vN"}, replaced atomically). A C with neither is a collection from before versions
# (version 0: the physical collection C itself).
VERSION_MARK: Final = "--v"
ACTIVE_POINTER_SUFFIX: Final = ".eio-active.json"


def version_collection(collection: str, version: int) -> str:
    """The physical collection holding version ``version`` (>= 1) of ``collection``."""
    return f"{collection}{VERSION_MARK}{version}"


def collection_version(collection: str, physical: str) -> int | None:
    """The version number ``physical`` holds of ``collection`` (0: the unversioned collection
    itself), or None when it is no version of it."""
    if physical == collection:
        return 0
    prefix = collection + VERSION_MARK
    rest = physical[len(prefix) :] if physical.startswith(prefix) else ""
    return int(rest) if rest.isdigit() and not rest.startswith("0") else None


def active_pointer_file(collection: str) -> str:
    """Name of the file, in an embedded store's directory, naming ``collection``'s active
    version."""
    return f"{collection}{ACTIVE_POINTER_SUFFIX}"


# The manifest's one entry that is not a file: the collection's build identity (what model and
# settings made its points; importer/identity.py). A source ID is a relative path, which never
# holds a NUL character, so no file's entry can have this ID.
IDENTITY_NAME: Final = "\x00build-identity"
IDENTITY_POINT_ID: Final = manifest_point_id(IDENTITY_NAME)


# --------------------------------------------------------------------------------------------
# Checkpoint: a small summary and cursor, never a list of point IDs or of files
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
    """Work done by all runs together (only ever grows)."""

    model_config = ConfigDict(populate_by_name=True)

    files: int = Field(0, ge=0, description="files (or changes to files) finished")
    records: int = Field(0, ge=0)
    chunks: int = Field(0, ge=0, description="chunks embedded")
    points: int = Field(0, ge=0, description="points acknowledged by Qdrant")
    deleted: int = Field(0, ge=0, description="stale points deleted")
    skipped: dict[str, int] = Field(default_factory=dict, description="skipped items by reason")


class Lag(BaseModel):
    """What the importer has seen in its source but not imported yet (at the last write)."""

    model_config = ConfigDict(populate_by_name=True)

    files: int = Field(0, ge=0, description="files new or changed, not yet imported")
    bytes: int = Field(0, ge=0, description="bytes of those changes")
    oldest: datetime | None = Field(
        None, description="modification time of the oldest change not yet imported"
    )


VERIFY_DAMAGE: Final = (
    "missing_points",
    "extra_points",
    "orphan_points",
    "stale_manifest",
    "identity_mismatch",
)


class VerifyResult(BaseModel):
    """What the importer's last verify of its own store found (``importer.survey``): counts
    by kind, damage (``VERIFY_DAMAGE``) and not (files not imported yet, changed, gone)."""

    model_config = ConfigDict(populate_by_name=True)

    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    clean: bool = Field(True, description="no damage found")
    counts: dict[str, int] = Field(
        default_factory=dict, description="findings by kind (missing_points, extra_points, ...)"
    )
    files: int = Field(0, ge=0, description="files in the shard's tree")
    entries: int = Field(0, ge=0, description="files in the manifest")
    points: int = Field(0, ge=0, description="points of the shard")
    names: dict[str, list[str]] = Field(
        default_factory=dict, description="a few files of each damage kind"
    )

    @property
    def damage(self) -> int:
        return sum(self.counts.get(k, 0) for k in VERIFY_DAMAGE)


class BuildState(BaseModel):
    """Which version of the collection readers see and which one a rebuild fills
    (``run --rebuild``, docs/live-sources.md "When settings change")."""

    model_config = ConfigDict(populate_by_name=True)

    active: str = Field(..., description="the physical collection readers see")
    target: str | None = Field(
        None, description="the version being filled (None: no rebuild under way)"
    )
    differences: list[str] = Field(
        default_factory=list,
        description="how the target differs from the active (e.g. chunk size 120 -> 60)",
    )
    switched_at: datetime | None = Field(
        None, alias="switchedAt", description="when readers last switched to a new version"
    )
    digest: str | None = Field(
        None,
        description="short hash of the build identity of the target (while rebuilding), else of "
        "the active version: the value of the switch and retire orders",
    )
    ready_at: datetime | None = Field(
        None,
        alias="readyAt",
        description="--switch-on-order: when the target became complete (one-shot) or caught up "
        "(follow) and the shard began waiting for the operator's switch order",
    )
    retiring: list[str] = Field(
        default_factory=list,
        description="--switch-on-order: old versions kept open after the switch until the "
        "operator's retire order (then deleted beyond keepOldVersions)",
    )


class Checkpoint(BaseModel):
    """Progress of one shard. Stored as JSON in a ConfigMap (key ``checkpoint.json``) or a file.

    Version 2. Per-file progress (byte cursor, head fingerprint, chunk count) lives in the
    *manifest*, a collection in the same Qdrant store as the points, written through the same
    sink and acknowledged (and flushed) before this checkpoint is written. This object stays a
    few hundred bytes whatever the number of files. Written only after the store acknowledged
    everything it counts.
    """

    model_config = ConfigDict(populate_by_name=True)

    version: int = 2
    shard: int = Field(0, ge=0)
    shards: int = Field(1, ge=1)
    manifest: str = Field("", description="where per-file state lives (store and collection)")
    files_total: int = Field(0, alias="filesTotal", ge=0, description="files in the source")
    files_done: int = Field(
        0, alias="filesDone", ge=0, description="files imported up to their current end"
    )
    lag: Lag = Field(default_factory=Lag)
    follow: bool = Field(False, description="the importer keeps watching its source")
    synced: bool = Field(False, description="every change seen so far is imported")
    last_sync: datetime | None = Field(
        None, alias="lastSync", description="when the importer last caught up"
    )
    counters: Counters = Field(default_factory=Counters)
    attempt: int = Field(0, ge=0, description="number of the run that wrote this checkpoint")
    peak_memory_bytes: int = Field(0, alias="peakMemoryBytes", ge=0)
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    complete: bool = False
    last_exit: str | None = Field(
        None, alias="lastExit", description="why the last run stopped: complete/threshold/..."
    )
    verify: VerifyResult | None = Field(
        None, description="the last verify of the store (absent until one ran)"
    )
    build: BuildState | None = Field(
        None, description="active version and rebuild under way (absent: importer before versions)"
    )

    def work_mark(self) -> tuple[int, int, int]:
        """A monotonically increasing measure of work done: (files, records, chunks).

        The counters only ever grow, so the operator compares marks across attempts to tell
        whether work advanced (it also grows inside one long file).
        """
        c = self.counters
        return (c.files, c.records, c.chunks)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("version", 1) < 2:
            raise ValueError(
                "a version 1 checkpoint (positions in a file list): start the shard over; "
                "point IDs are deterministic, so nothing is duplicated"
            )
        return cls.model_validate(data)
