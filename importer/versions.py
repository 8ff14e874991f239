"""Versions of a collection for ``run --rebuild``: where each version is, which one readers
see, and which to resume, start or delete (names in ``eio_common.contract``).

A rebuild fills version N+1 (``C--vN+1``) beside the active one while searches keep reading
the active one under the plain name ``C``; when it is complete (one-shot) or caught up
(``--follow``), the sink switches readers to it in one atomic step (``EdgeSink.activate``,
``ServerSink.activate``) and ``finish`` deletes the old versions beyond ``--keep-old-versions``.

- Embedded store: the pointer file ``C.eio-active.json`` in the store directory, written to a
  temporary file, fsynced and renamed over the old one (``os.replace``); no pointer = the
  collection directory ``C`` from before versions.
- Qdrant server: ``C`` is an alias of the active version; no alias = the real collection ``C``
  from before versions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from eio_common.contract import (
    active_pointer_file,
    collection_version,
    manifest_collection,
    version_collection,
)
from importer.identity import BuildIdentity, differences, digest, from_payload
from importer.settings import ConfigError

if TYPE_CHECKING:
    from importer.sink import Patience

log = logging.getLogger("importer")


class Versions(Protocol):
    collection: str

    def active(self) -> str: ...

    def names(self) -> dict[int, str]: ...

    def identity(self, physical: str) -> dict[str, Any] | None: ...

    def drop(self, physical: str) -> None: ...


@dataclass(frozen=True)
class Plan:
    """``target``: the physical collection this run writes; ``active``: the one readers see
    until the switch (None: there is none yet). ``target == active``: nothing to rebuild.
    ``differences``: how ``target``'s settings differ from ``active``'s (empty: none, or
    nothing to compare with). ``active_digest``: the digest of ``active``'s recorded identity
    (None: none recorded), the build a read pinned to the version readers see names."""

    collection: str
    active: str | None
    target: str
    differences: tuple[str, ...] = ()
    active_digest: str | None = None

    @property
    def switching(self) -> bool:
        return self.target != self.active


def _recorded(
    v: Versions, physical: str, wanted: BuildIdentity
) -> tuple[list[str] | None, str | None]:
    """How ``physical``'s recorded identity differs from ``wanted`` (None: none recorded) and
    its digest (None: none recorded, or unreadable)."""
    raw = v.identity(physical)
    if raw is None:
        return None, None
    stored = from_payload(raw)
    if stored is None:
        return ["unreadable"], None
    return differences(stored, wanted), digest(stored)


def _diffs(v: Versions, physical: str, wanted: BuildIdentity) -> list[str] | None:
    return _recorded(v, physical, wanted)[0]


def plan(v: Versions, wanted: BuildIdentity) -> Plan:
    """Resume an unfinished version built with ``wanted`` (dropping unfinished ones built
    otherwise), or start the next one. Nothing to rebuild (``target == active``) when the
    active version already has ``wanted`` (so a restarted ``--rebuild --follow`` does not start
    over), when it has no identity recorded (a collection from before identities: adopted,
    the run records ``wanted``, as without ``--rebuild``), or when there is no collection at
    all (a new import fills the plain name, readers see it grow)."""
    c, names, active = v.collection, v.names(), v.active()
    current = collection_version(c, active) or 0
    have_active = names.get(current) == active
    if not names:
        return Plan(c, c, c)
    pending = sorted((n for n in names if n > current), reverse=True)
    diffs, active_digest = _recorded(v, active, wanted) if have_active else (None, None)
    if have_active and not diffs:
        for n in pending:
            v.drop(names[n])
        why = "has no identity recorded (adopted)" if diffs is None else "has these settings"
        log.info("rebuild of %s: its active version %s %s", c, active, why)
        return Plan(c, active, active, (), active_digest)
    target = None
    for n in pending:
        if target is None and not _diffs(v, names[n], wanted):
            target = n
            log.info("rebuild of %s: resuming version %s", c, names[n])
        else:
            log.info("rebuild of %s: deleting unfinished version %s (other settings)", c, names[n])
            v.drop(names[n])
    if target is None:
        target = max([current, *names]) + 1
        log.info("rebuild of %s: building version %s", c, version_collection(c, target))
    live = active if have_active else None
    return Plan(c, live, version_collection(c, target), tuple(diffs or ()), active_digest)


def finish(v: Versions, p: Plan, keep: int) -> list[str]:
    """After the switch: delete the versions older than the new one, but the ``keep``
    newest; returns the deleted physical collections."""
    target = collection_version(p.collection, p.target) or 0
    names = v.names()
    old = sorted((n for n in names if n < target), reverse=True)
    gone = [names[n] for n in old[keep:]]
    for name in gone:
        v.drop(name)
    return gone


# --------------------------------------------------------------------------------------------
# Embedded store
# --------------------------------------------------------------------------------------------
def edge_active(path: str, collection: str) -> str:
    """The physical collection readers of ``collection`` see in the embedded store."""
    f = Path(path) / active_pointer_file(collection)
    try:
        name = json.loads(f.read_text())["active"]
    except FileNotFoundError:
        return collection
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"active-version pointer {f} is unreadable ({e}): fix or remove it"
        ) from None
    if not isinstance(name, str) or not collection_version(collection, name):
        raise ConfigError(f"active-version pointer {f} names {name!r}, no version of it")
    return name


def write_edge_pointer(path: str, collection: str, physical: str) -> None:
    """Point readers of ``collection`` at ``physical``: a new file renamed over the old one
    (atomic: a reader sees the old pointer or the new one), durable before it returns."""
    f = Path(path) / active_pointer_file(collection)
    tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps({"collection": collection, "active": physical}))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, f)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EdgeVersions:
    def __init__(self, path: str, collection: str, patience: Patience) -> None:
        self.path, self.collection, self.patience = path, collection, patience

    def active(self) -> str:
        return edge_active(self.path, self.collection)

    def names(self) -> dict[int, str]:
        out: dict[int, str] = {}
        if os.path.isdir(self.path):
            for name in os.listdir(self.path):
                n = collection_version(self.collection, name)
                if n is not None and os.path.isdir(os.path.join(self.path, name)):
                    out[n] = name
        return out

    def identity(self, physical: str) -> dict[str, Any] | None:
        from importer.sink import EdgeSink

        if not os.path.isdir(os.path.join(self.path, manifest_collection(physical))):
            return None
        sink = EdgeSink(
            self.path, self.collection, False, 0, self.patience, manifest=True, physical=physical
        )
        try:
            return sink.read_identity()
        finally:
            sink.close()

    def drop(self, physical: str) -> None:
        for name in (physical, manifest_collection(physical)):
            shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
        log.info("deleted version %s of %s from %s", physical, self.collection, self.path)


# --------------------------------------------------------------------------------------------
# Qdrant server
# --------------------------------------------------------------------------------------------
def server_active(client: Any, collection: str) -> str:
    """The collection the alias ``collection`` names, or ``collection`` itself (no alias)."""
    for a in client.get_aliases().aliases:
        if a.alias_name == collection:
            return str(a.collection_name)
    return collection


def switch_alias(client: Any, collection: str, physical: str) -> None:
    """Point the alias ``collection`` at ``physical`` in one ``update_collection_aliases``
    call (its delete and create actions are applied together). A real collection named
    ``collection`` (from before versions) must go first: between its deletion and the alias,
    reads of ``collection`` find nothing (a gap of one request to the server)."""
    from qdrant_client import models

    ops: list[Any] = []
    if server_active(client, collection) != collection:
        ops.append(
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=collection))
        )
    elif client.collection_exists(collection):
        log.warning(
            "replacing the collection %s from before versions by an alias of %s: reads of %s "
            "fail until the alias exists (the next request)",
            collection,
            physical,
            collection,
        )
        client.delete_collection(collection)
        client.delete_collection(manifest_collection(collection))
    ops.append(
        models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=physical, alias_name=collection)
        )
    )
    client.update_collection_aliases(change_aliases_operations=ops)


class ServerVersions:
    def __init__(self, client: Any, collection: str) -> None:
        self.client, self.collection = client, collection

    def active(self) -> str:
        return server_active(self.client, self.collection)

    def names(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for c in self.client.get_collections().collections:
            n = collection_version(self.collection, c.name)
            if n is not None:
                out[n] = str(c.name)
        return out

    def identity(self, physical: str) -> dict[str, Any] | None:
        from eio_common.contract import IDENTITY_POINT_ID

        files = manifest_collection(physical)
        if not self.client.collection_exists(files):
            return None
        found = self.client.retrieve(files, [IDENTITY_POINT_ID], with_payload=True)
        return dict(found[0].payload or {}) if found else None

    def drop(self, physical: str) -> None:
        for name in (physical, manifest_collection(physical)):
            if self.client.collection_exists(name):
                self.client.delete_collection(name)
        log.info("deleted version %s of %s", physical, self.collection)
