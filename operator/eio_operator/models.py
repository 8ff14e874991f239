"""The EmbeddingImport API as pydantic models: spec (what the user asks) and status (what we saw).

One module, frozen models with camelCase aliases and ``Annotated`` bounds, mirroring
``crds/eio.dev_embeddingimports.yaml`` field for field (a unit test keeps the two in step).
The API server enforces the CRD schema and its CEL rules at apply time; parsing here enforces
them again, so an object stored before a rule existed (or on a server without CEL) still gets
a clear ``InvalidSpec`` condition instead of a broken pod.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypedDict, TypeVar, Unpack

from pydantic import (
    AfterValidator,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from eio_common import quantity

# --------------------------------------------------------------------------------------------
# Names the operator sets in importer pods; spec.importer.env must not override them.
# --------------------------------------------------------------------------------------------
RESERVED_ENV: Final = frozenset(
    {
        "IMPORTER_SOURCE",
        "IMPORTER_FORMAT",
        "IMPORTER_JSONL_FIELD",
        "IMPORTER_COLLECTION",
        "IMPORTER_CREATE_COLLECTION",
        "IMPORTER_QDRANT_URL",
        "IMPORTER_QDRANT_API_KEY",
        "IMPORTER_QDRANT_PATH",
        "IMPORTER_MODEL",
        "IMPORTER_MODEL_DIR",
        "IMPORTER_CHECKPOINT",
        "IMPORTER_MEMORY_THRESHOLD",
        "IMPORTER_RECYCLE_EVERY_FILES",
        "IMPORTER_BATCH_SIZE",
        "IMPORTER_TOKEN_BUDGET",
        "IMPORTER_CHUNK_SIZE",
        "IMPORTER_CHUNK_OVERLAP",
        "IMPORTER_SHARD",
        "IMPORTER_ATTEMPT",
        "IMPORTER_POD_NAME",
        "IMPORTER_METRICS_PORT",
        "IMPORTER_THREADS",
        "IMPORTER_FOLLOW",
        "IMPORTER_ON_DELETE",
        "IMPORTER_POLL_INTERVAL",
        "IMPORTER_SETTLE_SECONDS",
        "IMPORTER_INCLUDE_TOOLS",
        "IMPORTER_READ_ADDRESS",
        "IMPORTER_READ_PEERS",
        "IMPORTER_VERIFY_INTERVAL_SECONDS",
    }
)
MAX_IMPORT_NAME: Final = 63  # the name is a label value (eio.dev/import)

MemoryQuantity = Annotated[str | int, Field(union_mode="left_to_right")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class _Model(BaseModel):
    """Base of every API model: frozen, camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        frozen=True,
        populate_by_name=True,
        alias_generator=AliasGenerator(alias=to_camel),
        extra="ignore",  # the API server prunes unknown fields; tests check CRD/model parity
    )


_M = TypeVar("_M", bound=BaseModel)


def _evolve(model: _M, changes: Mapping[str, object]) -> _M:
    """``model`` with ``changes``; the typed ``evolve`` methods call it with a TypedDict of
    their model's fields. Unlike a bare ``model_copy(update=...)``, which silently keeps an
    unknown key out of the model, an unknown field is an error here too."""
    unknown = set(changes) - set(type(model).model_fields)
    if unknown:
        raise TypeError(f"{type(model).__name__} has no field(s) {sorted(unknown)}")
    return model.model_copy(update=changes)


_I = TypeVar("_I")


def _each(items: list[_I], problem: Callable[[_I], str | None]) -> list[_I]:
    """A list validator: ``items`` unchanged, or a ValueError with the first item's problem."""
    for item in items:
        if (why := problem(item)) is not None:
            raise ValueError(why)
    return items


def _path_problem(p: str) -> str | None:
    if p.startswith("/") or ".." in p.split("/"):
        return f"{p!r} must be relative to the source volume's root and must not contain '..'"
    return None


def _env_problem(var: EnvVar) -> str | None:
    # upper(): the importer must never see a variant of a reserved name either
    if var.name.upper() in RESERVED_ENV:
        return (
            f"{var.name} is set by the operator from the spec; set the matching spec field instead"
        )
    return None


def _relative_paths(paths: list[str]) -> list[str]:
    return _each(paths, _path_problem)


def _not_reserved(env: list[EnvVar]) -> list[EnvVar]:
    return _each(env, _env_problem)


def _check_memory(value: str | int) -> str | int:
    try:
        quantity.memory_bytes(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return value


# --------------------------------------------------------------------------------------------
# spec
# --------------------------------------------------------------------------------------------
class HostPathSource(_Model):
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/")]
    type: Literal["", "Directory", "DirectoryOrCreate", "File", "FileOrCreate"] = "Directory"


class PersistentVolumeClaimSource(_Model):
    claim_name: Name


class ConfigMapSource(_Model):
    name: Name


SourcePath = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class SourcesSpec(_Model):
    host_path: HostPathSource | None = None
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    config_map: ConfigMapSource | None = None
    paths: Annotated[
        list[SourcePath], Field(min_length=1, max_length=64), AfterValidator(_relative_paths)
    ] = ["."]
    format: Literal["auto", "claude", "jsonl", "text"] = "auto"
    jsonl_field: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "text"
    on_delete: Literal["Keep", "Delete"] = "Keep"
    poll_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = 10
    settle_seconds: Annotated[int, Field(ge=0, le=3600)] = 5
    include_tools: bool = False

    @model_validator(mode="after")
    def _one_volume(self) -> SourcesSpec:
        kinds = [self.host_path, self.persistent_volume_claim, self.config_map]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError(
                "sources: set exactly one of hostPath, persistentVolumeClaim or configMap"
            )
        if self.include_tools and self.format not in ("auto", "claude"):
            raise ValueError(
                f"sources: includeTools applies to Claude conversations only; format "
                f"{self.format!r} has no tool calls (use format auto or claude, or drop it)"
            )
        return self


class ChunkingSpec(_Model):
    size: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    overlap: Annotated[int, Field(ge=0, le=1_000_000)] | None = None

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSpec:
        if self.size is not None and self.overlap is not None and self.overlap >= self.size:
            raise ValueError(
                f"chunking: overlap ({self.overlap}) must be smaller than size ({self.size})"
            )
        return self


class EmbeddingSpec(_Model):
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    model_dir: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    token_budget: Annotated[int, Field(ge=1, le=10_000_000)] = 8192
    threads: Annotated[int, Field(ge=0, le=256)] = 0


class SecretKeyRef(_Model):
    name: Name
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]


class PersistentVolumeClaimStorage(_Model):
    claim_name: Name


class HostPathStorage(_Model):
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^/")]
    type: Literal["", "Directory", "DirectoryOrCreate"] = "DirectoryOrCreate"


class EmbeddedQdrantSpec(_Model):
    host_path: HostPathStorage | None = None
    persistent_volume_claim: PersistentVolumeClaimStorage | None = None

    @model_validator(mode="after")
    def _one_volume(self) -> EmbeddedQdrantSpec:
        if (self.host_path is None) == (self.persistent_volume_claim is None):
            raise ValueError(
                "qdrant.embedded: set exactly one of hostPath or persistentVolumeClaim"
            )
        return self


class QdrantSpec(_Model):
    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://.+")] | None = None
    embedded: EmbeddedQdrantSpec | None = None
    api_key_secret_ref: SecretKeyRef | None = None
    collection: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.\-]+$")
    ]
    create_collection: bool = True
    keep_old_versions: Annotated[int, Field(ge=0, le=100)] = 0

    @model_validator(mode="after")
    def _url_or_embedded(self) -> QdrantSpec:
        if (self.url is None) == (self.embedded is None):
            raise ValueError(
                "qdrant: set exactly one of url (a Qdrant server) or embedded (a local "
                "Qdrant directory on a hostPath or PVC)"
            )
        if self.api_key_secret_ref is not None and self.url is None:
            raise ValueError("qdrant.apiKeySecretRef needs qdrant.url (embedded has no API key)")
        return self


class ResourceList(_Model):
    memory: MemoryQuantity | None = None
    cpu: (
        Annotated[str, StringConstraints(pattern=quantity.CPU_PATTERN)]
        | Annotated[int, Field(ge=0)]
        | None
    ) = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | int | None) -> str | int | None:
        return None if value is None else _check_memory(value)


class LimitList(ResourceList):
    memory: MemoryQuantity  # required: the whole point is a known memory ceiling


class ImporterResources(_Model):
    requests: ResourceList = ResourceList()
    limits: LimitList


class EnvVar(_Model):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    ]
    value: Annotated[str, StringConstraints(max_length=32768)] = ""


class Toleration(_Model):
    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0, le=86400)] | None = None


class DisruptionBudget(_Model):
    max_unavailable: Annotated[int, Field(ge=0, le=1)] = 0


class ImporterSpec(_Model):
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: ImporterResources
    env: Annotated[list[EnvVar], Field(max_length=64), AfterValidator(_not_reserved)] = []
    service_account_name: Name | None = None
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9090
    priority_class_name: Name | None = None
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    pod_disruption_budget: DisruptionBudget | None = None

    @model_validator(mode="after")
    def _request_below_limit(self) -> ImporterSpec:
        req = self.resources.requests.memory
        if req is not None and quantity.memory_bytes(req) > self.limit_bytes:
            raise ValueError(
                f"importer.resources: requests.memory ({req}) is above limits.memory "
                f"({self.resources.limits.memory})"
            )
        return self

    @property
    def limit_bytes(self) -> int:
        return quantity.memory_bytes(self.resources.limits.memory)


class MemoryPolicy(_Model):
    threshold: MemoryQuantity = "85%"
    recycle_every_files: Annotated[int, Field(ge=0, le=1_000_000_000)] = 0
    grow_factor: Annotated[float, Field(ge=1.0, le=4.0)] = 1.5
    max_memory_limit: MemoryQuantity | None = None
    ooms_before_grow: Annotated[int, Field(ge=1, le=100)] = 2
    retry_budget: Annotated[int, Field(ge=0, le=1000)] = 3
    backoff_seconds: Annotated[int, Field(ge=0, le=86400)] = 10
    max_backoff_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    stall_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    over_threshold_grace_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    keep_terminated_pods: Annotated[int, Field(ge=0, le=100)] = 2
    node_lost_seconds: Annotated[int, Field(ge=0, le=86400)] = 60

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: str | int) -> str | int:
        return quantity.validate_threshold(value)

    @field_validator("max_memory_limit")
    @classmethod
    def _ceiling(cls, value: str | int | None) -> str | int | None:
        return None if value is None else _check_memory(value)

    @model_validator(mode="after")
    def _backoff_order(self) -> MemoryPolicy:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError(
                f"memoryPolicy: maxBackoffSeconds ({self.max_backoff_seconds}) must not be "
                f"below backoffSeconds ({self.backoff_seconds})"
            )
        return self


class Parallelism(_Model):
    shards: Annotated[int, Field(ge=1, le=64)] = 1


class VerifySpec(_Model):
    """The importer verifies its store at the end of a Once import and every
    ``interval_seconds`` while a Continuous import is caught up (0: never)."""

    interval_seconds: Annotated[int, Field(ge=0, le=604800)] = 3600


class EmbeddingImportSpec(_Model):
    sources: SourcesSpec
    chunking: ChunkingSpec = ChunkingSpec()
    embedding: EmbeddingSpec = EmbeddingSpec()
    qdrant: QdrantSpec
    importer: ImporterSpec
    memory_policy: MemoryPolicy = MemoryPolicy()
    parallelism: Parallelism = Parallelism()
    verify: VerifySpec = VerifySpec()
    suspend: bool = False
    mode: Literal["Once", "Continuous"] = "Once"

    @model_validator(mode="after")
    def _poll_below_stall(self) -> EmbeddingImportSpec:
        stall, poll = self.memory_policy.stall_seconds, self.sources.poll_interval_seconds
        if self.continuous and stall and poll >= stall:
            raise ValueError(
                f"sources.pollIntervalSeconds ({poll}) must be below "
                f"memoryPolicy.stallSeconds ({stall}) in mode Continuous: an idle importer "
                "would look stalled and be deleted (or set stallSeconds to 0)"
            )
        return self

    @model_validator(mode="after")
    def _memory_rules(self) -> EmbeddingImportSpec:
        limit = self.importer.limit_bytes
        policy = self.memory_policy
        if not quantity.is_percent(policy.threshold):
            threshold = quantity.memory_bytes(policy.threshold)
            if threshold and threshold >= limit:
                raise ValueError(
                    f"memoryPolicy.threshold ({policy.threshold}) must be below "
                    f"importer.resources.limits.memory ({self.importer.resources.limits.memory})"
                    ": the importer exits gracefully at the threshold, before the kernel kills "
                    "it at the limit; use a percentage such as 85% to follow the limit"
                )
        if policy.max_memory_limit is not None:
            ceiling = quantity.memory_bytes(policy.max_memory_limit)
            if ceiling < limit:
                raise ValueError(
                    f"memoryPolicy.maxMemoryLimit ({policy.max_memory_limit}) must not be "
                    f"below importer.resources.limits.memory "
                    f"({self.importer.resources.limits.memory})"
                )
        return self

    @property
    def shards(self) -> int:
        return self.parallelism.shards

    @property
    def continuous(self) -> bool:
        """One pod per shard follows its source for good (importer --follow); never Succeeded."""
        return self.mode == "Continuous"

    @property
    def build_fields(self) -> dict[str, object]:
        """The fields that change how points are built: a change fills a new version of the
        collection (docs/live-sources.md, "When settings change")."""
        e, c, src = self.embedding, self.chunking, self.sources
        return {
            "model": e.model, "modelDir": e.model_dir, "chunkSize": c.size,
            "chunkOverlap": c.overlap, "format": src.format, "jsonlField": src.jsonl_field,
            "includeTools": src.include_tools,
        }  # fmt: skip

    @property
    def build_hash(self) -> str:
        """A short hash of :attr:`build_fields` (pod annotation; ``ShardStatus.build_hash``)."""
        raw = json.dumps(self.build_fields, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    @property
    def switch_on_order(self) -> bool:
        """A rebuild's shards wait for the operator's switch order (``contract.SWITCH_ANNOTATION``)
        instead of each switching alone: with several shards, so that a search never combines
        old and new versions (embedded stores) and one shard never moves a server's alias
        for all (``eio_operator.switch``)."""
        return self.shards > 1

    @property
    def ceiling_bytes(self) -> int:
        """Highest memory limit the operator may grow to (the spec limit when none is set)."""
        limit = self.importer.limit_bytes
        ceiling = self.memory_policy.max_memory_limit
        return max(limit, quantity.memory_bytes(ceiling)) if ceiling is not None else limit


class InvalidSpecError(ValueError):
    """The spec cannot be acted on; the message says what to change."""


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, with the camelCase field path a user sees in the YAML."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        last = loc.rsplit(".", 1)[-1]
        if last and msg.startswith(f"{last}: "):
            msg = msg[len(last) + 2 :]
        lines.append(f"spec.{loc}: {msg}" if loc else f"spec: {msg}")
    return "; ".join(lines)


def parse_spec(spec: Any, name: str = "") -> EmbeddingImportSpec:
    """Parse ``body['spec']`` once; raise InvalidSpecError with a message a user can act on."""
    if len(name) > MAX_IMPORT_NAME:
        raise InvalidSpecError(
            f"metadata.name is {len(name)} characters long; at most {MAX_IMPORT_NAME} are "
            "allowed because it is used as the eio.dev/import label value"
        )
    if not isinstance(spec, dict):
        raise InvalidSpecError("spec is missing")
    try:
        return EmbeddingImportSpec.model_validate(spec)
    except ValidationError as exc:
        raise InvalidSpecError(format_validation_error(exc)) from None


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------
class RestartCause(StrEnum):
    """Why a shard's pod ended and a new one was (or will be) started. Metric label values."""

    THRESHOLD = "threshold"  # exit 75: planned roll at the memory threshold or recycle point
    OOM_KILLED = "oomKilled"  # the kernel killed the container at its memory limit
    OVER_THRESHOLD = "overThreshold"  # operator health check: heartbeat memory above threshold
    STALLED = "stalled"  # operator health check: heartbeat older than stallSeconds
    EVICTED = "evicted"  # evicted, preempted or deleted by someone else
    KILLED = "killed"  # exit 137 without reason OOMKilled: a SIGKILL from outside the kernel
    EXITED = "exited"  # Continuous: the importer exited 0, which a following importer never does
    CRASH = "crash"  # any other exit code


class ShardPhase(StrEnum):
    PENDING = "Pending"  # a pod is being created or waits to be scheduled/started
    RUNNING = "Running"
    TERMINATING = "Terminating"  # the operator stopped the pod and waits for it to go
    BACKING_OFF = "BackingOff"  # next pod not before status.notBefore
    SUSPENDED = "Suspended"
    STOPPED = "Stopped"  # another shard failed the import
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ImportPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INVALID = "Invalid"
    SYNCED = "Synced"  # Continuous: every shard caught up (condition Synced True)
    CATCHING_UP = "CatchingUp"  # Continuous: some change not imported yet (Synced False)


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int = 0


class ProgressMark(_Model):
    """``Checkpoint.work_mark()`` at the last accounted ending (compared lexicographically)."""

    files: int = 0
    records: int = 0
    chunks: int = 0

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.files, self.records, self.chunks)


class CheckpointRef(_Model):
    name: str
    key: str = "checkpoint.json"


class ShardStatus(_Model):
    """Per-shard history: everything the roll decision needs besides what it observes."""

    index: int
    phase: ShardPhase = ShardPhase.PENDING
    attempt: int = 0  # attempt of the newest pod started (0 = none yet)
    handled_attempt: int = 0  # newest attempt whose ending was accounted for
    pod: str | None = None
    pod_uid: str | None = None  # set once the pod was observed; empty = created, not yet seen
    checkpoint_ref: CheckpointRef | None = None
    files_done: int = 0
    files_total: int = 0
    memory_limit: str | None = None  # in force for the newest pod (grows after repeated OOMs)
    ooms_without_progress: int = 0
    failures_without_progress: int = 0
    progress_mark: ProgressMark = ProgressMark()
    not_before: datetime | None = None
    over_threshold_since: datetime | None = None
    failed_generation: int | None = None
    build_hash: str | None = None  # EmbeddingImportSpec.build_hash of the newest pod
    restarts: int = 0
    reason: str = ""
    message: str = ""

    def evolve(self, **changes: Unpack[ShardChanges]) -> ShardStatus:
        """A copy with ``changes``; mypy checks each field's name and type."""
        return _evolve(self, changes)

    def reopened(self) -> ShardStatus:
        """Back to Pending with a fresh budget: a failed shard after a spec change, or a
        finished shard of an import switched to mode Continuous."""
        return self.evolve(
            phase=ShardPhase.PENDING,
            failed_generation=None,
            failures_without_progress=0,
            ooms_without_progress=0,
            not_before=None,
        )


class ShardChanges(TypedDict, total=False):
    """Every field of :class:`ShardStatus` (a unit test keeps the two in step)."""

    index: int
    phase: ShardPhase
    attempt: int
    handled_attempt: int
    pod: str | None
    pod_uid: str | None
    checkpoint_ref: CheckpointRef | None
    files_done: int
    files_total: int
    memory_limit: str | None
    ooms_without_progress: int
    failures_without_progress: int
    progress_mark: ProgressMark
    not_before: datetime | None
    over_threshold_since: datetime | None
    failed_generation: int | None
    build_hash: str | None
    restarts: int
    reason: str
    message: str


class RestartCounts(_Model):
    total: int = 0
    threshold: int = 0
    oom_killed: int = 0
    over_threshold: int = 0
    stalled: int = 0
    evicted: int = 0
    killed: int = 0
    exited: int = 0
    crash: int = 0

    def add(self, cause: RestartCause) -> RestartCounts:
        """One more restart of ``cause`` (typed constructor: mypy checks every field)."""

        def n(c: RestartCause) -> int:
            return 1 if c == cause else 0

        return RestartCounts(
            total=self.total + 1,
            threshold=self.threshold + n(RestartCause.THRESHOLD),
            oom_killed=self.oom_killed + n(RestartCause.OOM_KILLED),
            over_threshold=self.over_threshold + n(RestartCause.OVER_THRESHOLD),
            stalled=self.stalled + n(RestartCause.STALLED),
            evicted=self.evicted + n(RestartCause.EVICTED),
            killed=self.killed + n(RestartCause.KILLED),
            exited=self.exited + n(RestartCause.EXITED),
            crash=self.crash + n(RestartCause.CRASH),
        )


class LastRestart(_Model):
    reason: str
    time: datetime
    shard: int
    pod: str | None = None
    message: str = ""


class ProgressCounts(_Model):
    """Progress counters summed over the shards' checkpoints (descriptions as in the CRD)."""

    files_done: int = Field(0, description="Files finished.")
    files_total: int = Field(
        0, description="Files assigned to the shards (0 until each shard has reported)."
    )
    records: int = Field(0, description="Records read.")
    chunks: int = Field(0, description="Chunks embedded.")
    points: int = Field(0, description="Points acknowledged by Qdrant.")


class ImportLag(_Model):
    """What the importers have seen in their sources but not imported yet, summed over shards."""

    files: int = 0
    bytes: int = 0
    oldest: datetime | None = None  # modification time of the oldest change not imported yet


class VerifyCounts(_Model):
    """Damage the importers' last verifies found, by kind, summed over the shards."""

    missing_points: int = Field(0, description="Chunks the manifest counts that have no point.")
    extra_points: int = Field(
        0, description="Points of a file at or past its chunk count (e.g. left by a crash)."
    )
    orphan_points: int = Field(
        0, description="Points of no known file, or whose payload does not give their ID."
    )
    stale_manifest: int = Field(
        0, description="Manifest entries that disagree with their file or with themselves."
    )
    identity_mismatch: int = Field(
        0, description="Build settings (model, chunking, format) that differ from the spec's."
    )


class ImportVerify(_Model):
    """The shards' last verifies of their stores (each recorded in its checkpoint)."""

    time: datetime | None = Field(
        None, description="When the least recently verified shard was verified."
    )
    shards_verified: int = Field(0, description="Shards whose store was verified at least once.")
    damage: int = Field(0, description="Damaged points and entries, all kinds together.")
    counts: VerifyCounts = VerifyCounts()


class ImportBuild(_Model):
    """Which version of the collection searches read and which one a rebuild fills, from
    the shards' checkpoints (``Checkpoint.build``)."""

    active: str = Field("", description="The physical collection searches read.")
    target: str | None = Field(
        None, description="The version being filled (absent: no rebuild under way)."
    )
    differences: list[str] = Field(
        [], description="How the new settings differ (e.g. chunk size 120 -> 60)."
    )
    files_done: int = Field(0, description="Files imported into the new version so far.")
    files_total: int = Field(0, description="Files of the sources.")
    switched_at: datetime | None = Field(
        None, description="When searches last switched to a new version."
    )


class ShardCheckpointRef(_Model):
    shard: int
    name: str
    key: str = "checkpoint.json"


class EmbeddingImportStatus(_Model):
    observed_generation: int = 0
    phase: ImportPhase = ImportPhase.PENDING
    progress: str = ""
    counts: ProgressCounts = ProgressCounts()
    lag: ImportLag = ImportLag()
    last_sync_time: datetime | None = None
    restarts: RestartCounts = RestartCounts()
    last_restart: LastRestart | None = None
    current_pods: list[str] = []
    read_service: str | None = None
    verify: ImportVerify | None = None
    active_version: str | None = None
    build: ImportBuild | None = None
    checkpoint_refs: list[ShardCheckpointRef] = []
    shards: list[ShardStatus] = []
    conditions: list[Condition] = []

    def shard(self, index: int) -> ShardStatus:
        for s in self.shards:
            if s.index == index:
                return s
        return ShardStatus(index=index)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def patch_from(self, stored: Any) -> dict[str, Any]:
        """The merge patch (RFC 7386) that turns the ``stored`` status into this one: what this
        one no longer has is sent as null, since a merge patch keeps every key it omits (a
        rebuild's ``build.target`` would outlive the switch)."""
        return merge_patch(stored, self.to_wire())

    def evolve(self, **changes: Unpack[StatusChanges]) -> EmbeddingImportStatus:
        """A copy with ``changes``; mypy checks each field's name and type."""
        return _evolve(self, changes)


class StatusChanges(TypedDict, total=False):
    """Every field of :class:`EmbeddingImportStatus` (a unit test keeps the two in step)."""

    observed_generation: int
    phase: ImportPhase
    progress: str
    counts: ProgressCounts
    lag: ImportLag
    last_sync_time: datetime | None
    restarts: RestartCounts
    last_restart: LastRestart | None
    current_pods: list[str]
    read_service: str | None
    verify: ImportVerify | None
    active_version: str | None
    build: ImportBuild | None
    checkpoint_refs: list[ShardCheckpointRef]
    shards: list[ShardStatus]
    conditions: list[Condition]


def merge_patch(old: Any, new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from object ``old`` to ``new``: ``new`` with a null for
    every key of ``old`` that ``new`` lacks, object by object (lists are replaced whole)."""
    before = old if isinstance(old, dict) else {}
    out: dict[str, Any] = {k: None for k in before if k not in new}
    for k, v in new.items():
        b = before.get(k)
        out[k] = merge_patch(b, v) if isinstance(v, dict) and isinstance(b, dict) else v
    return out


def parse_status(raw: Any) -> tuple[EmbeddingImportStatus, str | None]:
    """The status this operator wrote, and what of it could not be read (None: all of it).

    An unreadable part is dropped, not the whole: a shard whose entry does not parse starts
    afresh (in its place) while the others keep their history and retry budget; an
    unreadable top-level field takes its default. The caller reports the problem (the budget
    of a dropped shard was reset)."""
    if raw is None:
        return EmbeddingImportStatus(), None
    if not isinstance(raw, dict):
        return EmbeddingImportStatus(), f"status is a {type(raw).__name__}, not an object"
    try:
        return EmbeddingImportStatus.model_validate(raw), None
    except ValidationError as exc:
        problem = "unreadable status dropped: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        kept = _without(raw, [e["loc"] for e in exc.errors()])
    try:
        return EmbeddingImportStatus.model_validate(kept), problem
    except ValidationError:
        return EmbeddingImportStatus(), f"{problem} (nothing of it could be kept)"


def _without(raw: dict[str, Any], locs: list[tuple[int | str, ...]]) -> dict[str, Any]:
    """``raw`` without the shards and top-level fields at the error locations ``locs``."""
    bad_shards = {loc[1] for loc in locs if len(loc) > 1 and loc[0] == "shards"}
    bad_fields = {loc[0] for loc in locs if loc} - ({"shards"} if bad_shards else set())
    kept = {k: v for k, v in raw.items() if k not in bad_fields}
    if bad_shards and isinstance(raw.get("shards"), list):
        # Written in index order: a fresh entry in place keeps the count (spec.parallelism
        # is checked against it) and the other shards' positions.
        kept["shards"] = [
            {"index": i} if i in bad_shards else s for i, s in enumerate(raw["shards"])
        ]
    return kept
