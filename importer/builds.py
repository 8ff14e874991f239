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
    digest,
    from_payload,
    from_settings,
    mismatch_message,
    to_payload,
)
from importer.settings import ConfigError, Settings
from importer.sink import Builds, Patience, PatientClient, Sink
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
    build state (``cp.build``: active version, version filled, differences, digest of the
    version written, old versions still to retire) for the operator."""
    if not s.rebuild:
        return None
    if s.qdrant_url and s.shard_pair[1] > 1 and not s.switch_on_order:
        raise ConfigError(
            f"--rebuild with a Qdrant server and {s.shard_pair[1]} shards needs "
            "--switch-on-order (IMPORTER_SWITCH_ON_ORDER): else the first shard to finish "
            "would switch every reader to a version the others are still filling; or rebuild "
            "with one shard (--shard 0/1), or import into another --collection"
        )
    p = plan(versions_of(s, patience), wanted)
    prev = cp.build
    cp.build = BuildState(
        active=p.active or p.collection,
        target=p.target if p.switching else None,
        differences=list(p.differences) if p.switching else [],
        switched_at=prev.switched_at if prev else None,
        digest=digest(wanted),  # the target's, or the active's: it has these settings
        retiring=[] if p.switching else carried_retiring(prev, p.target),
    )
    return p if p.switching else None


def builds_of(s: Settings, cp: Checkpoint, p: Plan | None) -> Builds:
    """The digests of the versions a sink opened for this run holds, for pinned reads."""
    written = cp.build.digest if cp.build else None
    return Builds(written, p.active_digest if p else None, s.switch_on_order)


def carried_retiring(prev: BuildState | None, active: str) -> list[str]:
    """The old versions a restarted shard still has to retire: those of its last checkpoint,
    and the version it switched from when it stopped between the switch and its checkpoint."""
    if prev is None:
        return []
    if prev.target == active and prev.active != active:
        return [prev.active, *prev.retiring]
    return list(prev.retiring) if prev.active == active else []


def switch(
    sink: Sink, p: Plan, s: Settings, cp: Checkpoint, keep_old: bool = False, leader: bool = True
) -> None:
    """The new version is complete or caught up: readers see it from now on (``leader``:
    this shard moves the pointer or alias; the others of a server only record it); the old
    versions beyond ``--keep-old-versions`` are deleted, or with ``keep_old`` kept open and
    listed in ``cp.build.retiring`` until ``retire``."""
    sink.sync()
    if leader:
        sink.activate(keep_old)
    old = [p.active] if keep_old and p.active and p.active != p.target else []
    digest_ = cp.build.digest if cp.build else None
    cp.build = BuildState(
        active=p.target, switched_at=datetime.now(UTC), digest=digest_, retiring=old
    )
    gone = [] if keep_old else finish(versions_of(s), p, s.keep_old_versions)
    log.info(
        "rebuild of %s complete: readers now see version %s%s%s",
        p.collection,
        p.target,
        f"; deleted {', '.join(gone)}" if gone else "",
        f"; {', '.join(old)} kept open until the retire order" if old else "",
    )


def retire(sink: Sink, s: Settings, cp: Checkpoint, leader: bool = True) -> list[str]:
    """The retire order: close the versions switched from and (``leader``) delete the old
    versions beyond ``--keep-old-versions``; returns the deleted ones."""
    assert cp.build is not None
    sink.close_old()
    active = cp.build.active
    keep = s.keep_old_versions
    gone = finish(versions_of(s), Plan(s.collection, active, active), keep) if leader else []
    cp.build.retiring = []
    log.info(
        "retired the versions of %s before %s%s",
        s.collection,
        active,
        f": deleted {', '.join(gone)}" if gone else "",
    )
    return gone
