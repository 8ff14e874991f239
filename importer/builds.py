"""A collection's build: its recorded identity checked at run start (``settle_identity``) and,
with ``--rebuild``, a new version filled beside the current one (``importer.versions``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from eio_common.contract import BuildState, Checkpoint
from importer.identity import (
    BuildIdentity,
    differences,
    from_payload,
    from_settings,
    mismatch_message,
    to_payload,
)
from importer.settings import ConfigError, Settings
from importer.sink import Patience, PatientClient, Sink
from importer.versions import EdgeVersions, Plan, ServerVersions, Versions, finish, plan

if TYPE_CHECKING:
    from importer.model import ModelInfo

log = logging.getLogger("importer")


def stored_differences(sink: Sink, wanted: BuildIdentity) -> list[str] | None:
    """How the collection's recorded identity differs from ``wanted`` ([] : not at all);
    None when it has none recorded."""
    raw = sink.read_identity()
    if raw is None:
        return None
    stored = from_payload(raw)
    if stored is None:
        return ["build identity unreadable (written by another importer version?)"]
    return differences(stored, wanted)


def settle_identity(sink: Sink, wanted: BuildIdentity, collection: str) -> None:
    """At run start: record the identity of a new collection, adopt a collection built before
    identities were recorded, refuse (ConfigError, exit 78) one built with other settings."""
    diffs = stored_differences(sink, wanted)
    if diffs:
        raise ConfigError(mismatch_message(collection, diffs))
    if diffs is None:
        if sink.count() > 0 or next(iter(sink.load_manifest(lambda _sid: True)), None):
            log.warning(
                "adopting collection %s: built before build identity was recorded; "
                "recording current settings",
                collection,
            )
        sink.write_identity(to_payload(wanted))
        sink.sync()


def identity_of(s: Settings, info: ModelInfo) -> BuildIdentity:
    """The identity a fresh import with ``s`` and the loaded model records."""
    from importer.model import model_sha256

    return from_settings(s, info.dim, info.max_tokens, model_sha256(str(info.path)))


def wanted_identity(s: Settings) -> BuildIdentity:
    """The identity a fresh import with ``s`` would record (loads the model, embeds nothing)."""
    from importer.model import Embedder

    return identity_of(s, Embedder(s.model, s.model_dir, s.cache_dir, s.threads).info)


def versions_of(s: Settings, patience: Patience | None = None) -> Versions:
    if s.qdrant_url:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=s.qdrant_url, api_key=s.qdrant_api_key, timeout=60)
        waiting = PatientClient(client, s.qdrant_url, patience or Patience())
        return ServerVersions(waiting, s.collection)
    return EdgeVersions(s.qdrant_path, s.collection, patience or Patience())


def start_rebuild(
    s: Settings, wanted: BuildIdentity, patience: Patience, cp: Checkpoint
) -> Plan | None:
    """``--rebuild``: the version to fill (None: no ``--rebuild``, or the active version has
    these settings already: the run imports into it as without ``--rebuild``). Records the
    build state (``cp.build``: active version, version filled, differences) for the operator."""
    if not s.rebuild:
        return None
    if s.qdrant_url and s.shard_pair[1] > 1:
        raise ConfigError(
            f"--rebuild with a Qdrant server and {s.shard_pair[1]} shards is not supported: "
            "the first shard to finish would switch every reader to a version the others are "
            "still filling; rebuild with one shard (--shard 0/1) or import into another "
            "--collection"
        )
    p = plan(versions_of(s, patience), wanted)
    cp.build = BuildState(
        active=p.active or p.collection,
        target=p.target if p.switching else None,
        differences=list(p.differences) if p.switching else [],
        switched_at=cp.build.switched_at if cp.build else None,
    )
    return p if p.switching else None


def switch(sink: Sink, p: Plan, s: Settings, cp: Checkpoint) -> None:
    """The new version is complete or caught up: readers see it from now on; the old
    versions beyond ``--keep-old-versions`` are deleted."""
    sink.sync()
    sink.activate()
    cp.build = BuildState(active=p.target, switched_at=datetime.now(UTC))
    gone = finish(versions_of(s), p, s.keep_old_versions)
    log.info(
        "rebuild of %s complete: readers now see version %s%s",
        p.collection,
        p.target,
        f"; deleted {', '.join(gone)}" if gone else "",
    )
