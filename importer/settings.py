"""Importer settings: every setting is an ``IMPORTER_*`` env var and a CLI flag of ``run``.

The table in ``docs/decisions.md`` is the contract; CLI flags override the environment.
Everything that can be checked before the model loads is checked here, so that a bad
configuration ends in exit 78 (``contract.EXIT_CONFIG``) with one line that says what to fix.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from eio_common.contract import ENV_PREFIX
from eio_common.quantity import Threshold, parse_threshold

Format = Literal["auto", "claude", "jsonl", "text"]
FORMATS: tuple[str, ...] = ("auto", "claude", "jsonl", "text")
DEFAULT_MODEL = "paraphrase-MiniLM-L3-v2"
# Chunks are measured in tokens of the model's own tokenizer (see docs/importer.md).
# paraphrase-MiniLM-L3-v2 was trained with 128-token inputs ([CLS] + 126 + [SEP]).
DEFAULT_CHUNK_SIZE = 120
DEFAULT_CHUNK_OVERLAP = 20


class ConfigError(Exception):
    """A configuration problem the user must fix; the CLI turns it into exit 78."""


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"shard must be I/N, got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def parse_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (port 0 = any free port) or ``off``; raises ValueError otherwise."""
    text = text.strip()
    if text.lower() in ("off", "", "none"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"read address {text!r} is not HOST:PORT (e.g. 127.0.0.1:6333) or off")
    return host.strip("[]") or "127.0.0.1", int(port)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


class Settings(BaseSettings):
    """All settings of ``embedding-importer run`` (env prefix ``IMPORTER_``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True, validate_default=True
    )

    source: Annotated[list[str], NoDecode] = Field(default_factory=list)
    format: str = "auto"
    jsonl_field: str = "text"
    collection: str = ""
    create_collection: bool = True
    qdrant_url: str | None = None
    qdrant_api_key: str | None = Field(default=None, repr=False)
    qdrant_path: str = "./qdrant-data"
    model: str = DEFAULT_MODEL
    model_dir: str | None = None
    checkpoint: str = "file:./checkpoint.json"
    memory_threshold: str = "85%"
    recycle_every_files: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1, le=4096)
    token_budget: int = Field(8192, ge=16)
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=8)
    chunk_overlap: int = Field(DEFAULT_CHUNK_OVERLAP, ge=0)
    shard: str = "0/1"
    attempt: int | None = Field(None, ge=0)
    pod_name: str | None = None
    metrics_port: int = Field(0, ge=0, le=65535)
    threads: int = Field(0, ge=0)
    fault_hold_mb_per_file: int = Field(0, ge=0)
    # TEST HOOK: exit 137 (as a SIGKILL would) just before deleting the points a shrunk file
    # left beyond its new end, after its lower state was saved (tests/importer)
    fault_exit_before_stale_delete: bool = False
    # Additions beyond the decisions table (documented in docs/importer.md):
    checkpoint_interval: float = Field(5.0, gt=0, description="seconds between mid-file writes")
    max_line_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    sort_window: int = Field(4, ge=1, description="batches per length-sorting window")
    cache_dir: str | None = None
    progress: Literal["auto", "bar", "plain", "off"] = "auto"
    # Live sources (docs/live-sources.md):
    follow: bool = Field(False, description="keep watching the source after catching up")
    poll_interval: float = Field(5.0, gt=0, description="seconds between scans when polling")
    watch: Literal["auto", "inotify", "poll"] = "auto"
    on_delete: Literal["keep", "delete"] = "keep"
    settle_seconds: float = Field(
        5.0,
        ge=0,
        description="follow mode: a file's open end (a last line without newline, its unsealed"
        " last chunk) is read and embedded once the file is unchanged this long; 0: at once",
    )
    include_tools: bool = False
    # Build identity and versions (docs/live-sources.md, "When settings change"):
    rebuild: bool = Field(False, description="build a new version, switch when complete")
    keep_old_versions: int = Field(0, ge=0, description="old versions kept after a switch")
    switch_on_order: bool = Field(
        False, description="--rebuild: switch and retire on the operator's orders"
    )
    tool_max_chars: int = Field(2000, ge=16)
    report: str | None = None
    # Verify the own store (importer.selfcheck): at the end of a one-shot run, and every so
    # many seconds while following and caught up; 0 = never
    verify_interval_seconds: float = Field(3600.0, ge=0)
    # Embedded store: where its holder answers Qdrant REST reads (importer/readapi.py)
    read_address: str = "127.0.0.1:0"
    # ... and the other shards' read APIs, so that a read covers the whole import
    read_peers: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("read_address")
    @classmethod
    def _read_address(cls, v: str) -> str:
        parse_address(v)  # HOST:PORT or off; raises ValueError with what to write
        return v.strip()

    @property
    def read_address_pair(self) -> tuple[str, int] | None:
        return parse_address(self.read_address)

    @field_validator("source", "read_peers", mode="before")
    @classmethod
    def _sources(cls, v: object) -> object:
        return _split_commas(v)

    @field_validator("read_peers")
    @classmethod
    def _peers(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith("http://"):
                raise ValueError(f"read peer {url!r} is not an http:// URL")
        return v

    # ----- derived views (validated in validate()) -----
    @property
    def threshold(self) -> Threshold:
        return parse_threshold(self.memory_threshold)

    @property
    def shard_pair(self) -> tuple[int, int]:
        return parse_shard(self.shard)

    def validate_all(self) -> None:
        """Semantic checks; raises ConfigError with a one-line message."""
        if not self.source:
            raise ConfigError("no source given: set --source PATH_OR_GLOB or IMPORTER_SOURCE")
        if self.format not in FORMATS:
            raise ConfigError(
                f"unknown format {self.format!r}: use one of {', '.join(FORMATS)} "
                "(--format / IMPORTER_FORMAT)"
            )
        if not self.collection:
            raise ConfigError("no collection given: set --collection or IMPORTER_COLLECTION")
        try:
            self.threshold  # noqa: B018 - parse for validation
        except ValueError as e:
            raise ConfigError(
                f"bad memory threshold: {e} (--memory-threshold / IMPORTER_MEMORY_THRESHOLD)"
            ) from None
        try:
            self.shard_pair  # noqa: B018
        except ValueError as e:
            raise ConfigError(f"bad shard: {e} (--shard / IMPORTER_SHARD)") from None
        if self.chunk_overlap >= self.chunk_size:
            raise ConfigError(
                f"chunk overlap {self.chunk_overlap} must be smaller than chunk size "
                f"{self.chunk_size} (--chunk-overlap / IMPORTER_CHUNK_OVERLAP)"
            )
        if self.token_budget < self.chunk_size + 2:
            raise ConfigError(
                f"token budget {self.token_budget} cannot hold one chunk of {self.chunk_size} "
                "tokens: raise --token-budget / IMPORTER_TOKEN_BUDGET"
            )
        if not (self.checkpoint.startswith("file:") or self.checkpoint.startswith("configmap:")):
            raise ConfigError(
                f"bad checkpoint location {self.checkpoint!r}: use file:PATH or "
                "configmap:NAMESPACE/NAME (--checkpoint / IMPORTER_CHECKPOINT)"
            )
        if self.checkpoint.startswith("configmap:"):
            ns, _, name = self.checkpoint[len("configmap:") :].partition("/")
            if not ns or not name:
                raise ConfigError(
                    f"bad checkpoint location {self.checkpoint!r}: use configmap:NAMESPACE/NAME"
                )
        if self.model_dir is not None:
            d = self.model_dir
            if not os.path.isdir(d) or not os.access(d, os.R_OK | os.X_OK):
                raise ConfigError(
                    f"model dir {d!r} is not a readable directory (--model-dir / "
                    "IMPORTER_MODEL_DIR)"
                )
            for f in ("model.onnx", "tokenizer.json", "tokenizer_config.json"):
                p = os.path.join(d, f)
                if not os.access(p, os.R_OK):
                    raise ConfigError(
                        f"model dir {d!r} has no readable {f} (needs model.onnx, tokenizer.json,"
                        " tokenizer_config.json)"
                    )


def describe_validation_error(err: ValidationError) -> str:
    """One line from a pydantic ValidationError, naming the env var/flag to fix."""
    first = err.errors()[0]
    loc = str(first["loc"][0]) if first["loc"] else "?"
    flag = "--" + loc.replace("_", "-")
    env = ENV_PREFIX + loc.upper()
    extra = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"bad setting {flag} / {env}: {first['msg']} (got {first.get('input')!r}){extra}"


def load_settings(cli: dict[str, object]) -> Settings:
    """Env first, CLI overrides; raises ConfigError on any problem."""
    # pydantic-settings matches env names case-insensitively, and in a pod the last of
    # IMPORTER_SHARD and importer_shard would win: refuse any spelling but the upper-case one,
    # so a user's variant can never silently override what the operator set.
    odd = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX) and k != k.upper())
    if odd:
        raise ConfigError(
            f"environment variable {odd[0]}: importer settings are read only from upper-case "
            f"names; rename it to {odd[0].upper()} (or remove it)"
        )
    try:
        s = Settings(**cli)  # type: ignore[arg-type]
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e)) from None
    s.validate_all()
    return s
