"""Where points go: a Qdrant server (qdrant-client) or the embedded store (Qdrant Edge).

Both sinks offer the same small interface to the import loop: upsert points, delete points by
ID, and keep the per-file *manifest* (one point per source file, in a second collection named
``<collection>-files``), so that per-file progress is durable exactly when and where the points
are. ``sync()`` makes everything acknowledged so far durable; the runner calls it before every
checkpoint write, so a checkpoint never counts points a crash could lose.

- Server: ``wait=True`` on every write; transient errors (connection, 5xx, 429) are waited out
  with backoff, forever unless the run is asked to stop (``Stop``).
- Embedded: Qdrant Edge (Qdrant's engine in process) under ``--qdrant-path``, one shard
  directory per collection, vectors on disk (``Memory.Cold``: reopen does not read every vector
  page), write-ahead log on. ``update()`` returns after the WAL write (safe against a process
  kill); ``sync()`` flushes (safe against a machine crash). A store held by another process is
  waited for with backoff, not a configuration error. While it holds the store, the importer
  answers reads of it over HTTP (``importer.readapi``); every call on a shard takes ``lock``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from eio_common.contract import (
    IDENTITY_POINT_ID,
    FileState,
    Known,
    manifest_collection,
    manifest_point_id,
)
from eio_common.retry import Stop, retry
from importer.settings import ConfigError
from importer.versions import edge_active

if TYPE_CHECKING:
    from importer.readapi import Collection, ReadAPI, TextModel

log = logging.getLogger(__name__)
T = TypeVar("T")
SCROLL_PAGE = 512


@dataclass(frozen=True)
class StoredPoint:
    id: str
    vector: list[float] | None
    payload: dict[str, Any]
    score: float = 0.0


class Sink(Protocol):
    where: str

    def upsert(
        self, ids: Sequence[str], vectors: Sequence[Sequence[float]], payloads: list[dict[str, Any]]
    ) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def sync(self) -> None: ...

    def load_manifest(self, keep: Callable[[str], bool]) -> dict[str, Known]: ...

    def save_manifest(self, states: Sequence[FileState]) -> None: ...

    def drop_manifest(self, sids: Sequence[str]) -> None: ...

    def read_identity(self) -> dict[str, Any] | None: ...

    def write_identity(self, payload: dict[str, Any]) -> None: ...

    def activate(self, keep_old: bool = False) -> None: ...

    def offer_target(self) -> None: ...

    def close_old(self) -> None: ...

    def scroll(self, with_vectors: bool = True) -> Iterator[StoredPoint]: ...

    def scroll_manifest(self) -> Iterator[StoredPoint]: ...

    def search(self, vector: Sequence[float], limit: int) -> list[StoredPoint]: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def _entry(state: FileState) -> tuple[str, list[float], dict[str, Any]]:
    """A manifest point: the file's state as JSON in the payload (and, beside it, the fields a
    scan compares, so loading needs no JSON parsing), a 1-dim placeholder vector."""
    payload = {
        "sid": state.sid,
        "state": state.model_dump_json(),
        "size": state.size,
        "mtime_ns": state.mtime_ns,
        "complete": state.complete,
        "chunks": state.chunks,
    }
    return manifest_point_id(state.sid), [1.0], payload


def _known(payload: dict[str, Any] | None) -> tuple[str, Known] | None:
    p = payload or {}
    try:
        k = Known(
            int(p["size"]),
            int(p["mtime_ns"]),
            bool(p["complete"]),
            int(p["chunks"]),
            str(p["state"]),
        )
        return str(p["sid"]), k
    except (KeyError, TypeError, ValueError) as e:
        log.warning("manifest entry unreadable (%s): that file is imported again", e)
        return None


def _first_line(e: Exception) -> str:
    text = str(e)
    return text.splitlines()[0][:200] if text else ""


# --------------------------------------------------------------------------------------------
# Qdrant server
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Builds:
    """The build digests (``importer.identity.digest``) of an embedded store's versions, for
    reads pinned to one build (``importer.fanout``): ``written`` the version this sink writes,
    ``served`` the one readers see during a rebuild (None: none recorded); ``pin``
    (``--switch-on-order``): a read this shard fans out asks its peers for the build it answers
    from."""

    written: str | None = None
    served: str | None = None
    pin: bool = False


@dataclass(frozen=True)
class Patience:
    """How a sink waits for an unreachable or held store: ``should_stop`` ends the wait,
    ``on_retry`` hears why it waits (``None`` once the store answers again)."""

    should_stop: Callable[[], bool] = lambda: False
    on_retry: Callable[[str | None], None] = lambda _why: None


class _Collections:
    """What both stores do the same way over their own three primitives (``_upsert``,
    ``_delete``, ``_scroll`` on a collection handle): the points in ``self.points``, the
    per-file manifest in ``self.files``."""

    points: Any
    files: Any

    def _upsert(self, where: Any, ids: Sequence[str], vectors: Any, payloads: list[Any]) -> None:
        raise NotImplementedError

    def _delete(self, where: Any, ids: list[Any]) -> None:
        raise NotImplementedError

    def _scroll(self, where: Any, with_vectors: bool) -> Iterator[StoredPoint]:
        raise NotImplementedError

    def _get(self, where: Any, pid: str) -> dict[str, Any] | None:
        """The payload of point ``pid`` (None: no such point)."""
        raise NotImplementedError

    def read_identity(self) -> dict[str, Any] | None:
        """The payload of the manifest's build identity entry (None: none recorded)."""
        return self._get(self.files, IDENTITY_POINT_ID)

    def write_identity(self, payload: dict[str, Any]) -> None:
        self._upsert(self.files, [IDENTITY_POINT_ID], [[1.0]], [payload])

    def upsert(
        self, ids: Sequence[str], vectors: Sequence[Sequence[float]], payloads: list[dict[str, Any]]
    ) -> None:
        self._upsert(self.points, ids, vectors, payloads)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._delete(self.points, list(ids))

    def scroll(self, with_vectors: bool = True) -> Iterator[StoredPoint]:
        return self._scroll(self.points, with_vectors)

    def scroll_manifest(self) -> Iterator[StoredPoint]:
        """Every manifest entry as stored (``verify`` also looks at unreadable ones)."""
        return self._scroll(self.files, False)

    def load_manifest(self, keep: Callable[[str], bool]) -> dict[str, Known]:
        """The states of the files for which ``keep(source id)`` (this shard's)."""
        return _states(self._scroll(self.files, False), keep)

    def save_manifest(self, states: Sequence[FileState]) -> None:
        if states:
            ids, vecs, pays = zip(*(_entry(s) for s in states), strict=True)
            self._upsert(self.files, ids, vecs, list(pays))

    def drop_manifest(self, sids: Sequence[str]) -> None:
        if sids:
            self._delete(self.files, [manifest_point_id(s) for s in sids])


class ServerSink(_Collections):
    def __init__(
        self,
        url: str,
        api_key: str | None,
        collection: str,
        create: bool,
        dim: int,
        patience: Patience = Patience(),
        physical: str | None = None,
    ) -> None:
        """``physical``: the collection that holds the points (a version of ``collection``,
        ``importer.versions``); default: the one the alias ``collection`` names, if any."""
        from qdrant_client import QdrantClient

        from importer.versions import server_active

        self.collection = collection
        self.where = url
        self.patience = patience
        self.client = QdrantClient(url=url, api_key=api_key, timeout=60)
        if physical is None:
            physical = self._retry(lambda: server_active(self.client, collection), "read")
        self.points = physical
        self.files = manifest_collection(physical)
        if dim:
            self._ensure(self.points, dim, create)
            self._ensure(self.files, 1, True)

    def activate(self, keep_old: bool = False) -> None:
        """Readers of the collection's name see this sink's version from now on (the old
        versions stay on the server until ``versions.finish``: ``keep_old`` changes nothing)."""
        from importer.versions import switch_alias

        self._retry(lambda: switch_alias(self.client, self.collection, self.points), "switch")

    def offer_target(self) -> None:
        """Nothing to do: readers of a server ask it directly, no read is pinned here."""

    def close_old(self) -> None:
        """Nothing to do: this sink holds no old version open."""

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return patiently(fn, self.where, what, self.patience)

    def _ensure(self, name: str, dim: int, create: bool) -> None:
        from qdrant_client import models

        if self._retry(lambda: self.client.collection_exists(name), "check"):
            info: Any = self._retry(lambda: self.client.get_collection(name), "read")
            size = getattr(info.config.params.vectors, "size", None)
            if size is not None and size != dim:
                raise ConfigError(
                    f"collection {name!r} has vectors of size {size}, the model makes {dim}: "
                    "use another collection or model"
                )
            return
        if not create:
            raise ConfigError(
                f"collection {name!r} does not exist and --no-create-collection is set"
            )
        params = models.VectorParams(size=dim, distance=models.Distance.COSINE)
        try:
            self._retry(
                lambda: self.client.create_collection(name, vectors_config=params), "create"
            )
        except Exception:  # several shards of a rebuild create its version at once: one wins
            if not self._retry(lambda: self.client.collection_exists(name), "check"):
                raise
            return
        log.info("created collection %s (dim %d, cosine) in %s", name, dim, self.where)

    def _upsert(self, name: str, ids: Sequence[str], vectors: Any, payloads: list[Any]) -> None:
        from qdrant_client import models

        batch = models.Batch(ids=list(ids), vectors=[list(v) for v in vectors], payloads=payloads)
        self._retry(lambda: self.client.upsert(name, points=batch, wait=True), "upsert")

    def _delete(self, name: str, ids: list[Any]) -> None:
        from qdrant_client import models

        sel = models.PointIdsList(points=list(ids))
        self._retry(lambda: self.client.delete(name, points_selector=sel, wait=True), "delete")

    def sync(self) -> None:
        """Nothing to do: every write waited for the server's acknowledgement."""

    def _get(self, name: str, pid: str) -> dict[str, Any] | None:
        found = self._retry(
            lambda: self.client.retrieve(name, [pid], with_payload=True, with_vectors=False),
            "read",
        )
        return dict(found[0].payload or {}) if found else None

    def _scroll(self, name: str, with_vectors: bool) -> Iterator[StoredPoint]:
        offset: Any = None
        while True:

            def page_from(at: Any = offset) -> Any:
                return self.client.scroll(
                    name, limit=SCROLL_PAGE, offset=at, with_payload=True, with_vectors=with_vectors
                )

            page, offset = self._retry(page_from, "scroll")
            for r in page:
                vec = list(r.vector) if with_vectors and r.vector is not None else None
                yield StoredPoint(str(r.id), vec, dict(r.payload or {}))
            if offset is None:
                return

    def search(self, vector: Sequence[float], limit: int) -> list[StoredPoint]:
        res = self._retry(
            lambda: self.client.query_points(
                self.points, query=list(vector), limit=limit, with_payload=True
            ),
            "search",
        )
        return [StoredPoint(str(p.id), None, dict(p.payload or {}), p.score) for p in res.points]

    def count(self) -> int:
        return int(self._retry(lambda: self.client.count(self.points).count, "count"))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort on shutdown
            self.client.close()


class PatientClient:
    """A Qdrant client whose every call waits out an unreachable server as the sinks do
    (retries with backoff, logged, ``patience`` to stop): for the version bookkeeping of
    ``--rebuild``, which talks to the server before any sink is open."""

    def __init__(self, client: Any, where: str, patience: Patience) -> None:
        self._client, self._where, self._patience = client, where, patience

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return patiently(lambda: method(*args, **kwargs), self._where, name, self._patience)

        return call


def patiently(fn: Callable[[], T], where: str, what: str, patience: Patience) -> T:
    """Call ``fn`` against the Qdrant server at ``where``, waiting out transient failures
    with backoff (logged as unreachable for ``what``) until ``patience`` says stop."""
    return retry(
        fn,
        _transient,
        lambda e: (
            f"Qdrant at {where} unreachable for {what} ({type(e).__name__}: {_first_line(e)})"
        ),
        patience.should_stop,
        patience.on_retry,
    )


def _transient(e: Exception) -> bool:
    """Worth retrying, by an explicit list: Qdrant answered 5xx or 429; or there was no answer
    (a connection, read or timeout error of httpx or the OS; gRPC UNAVAILABLE, DEADLINE_EXCEEDED,
    RESOURCE_EXHAUSTED or ABORTED). Anything else (400 bad request, 404, a bug) is raised."""
    import grpc  # type: ignore[import-untyped]
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(e, UnexpectedResponse):
        code = e.status_code or 0
        return code >= 500 or code == 429
    if isinstance(e, grpc.RpcError):
        code_of = getattr(e, "code", None)
        return callable(code_of) and getattr(code_of(), "name", None) in _GRPC_TRANSIENT
    # OSError covers ConnectionError and TimeoutError
    return isinstance(e, ResponseHandlingException | httpx.TransportError | OSError)


_GRPC_TRANSIENT: Final = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
)


def _states(points: Iterator[StoredPoint], keep: Callable[[str], bool]) -> dict[str, Known]:
    out: dict[str, Known] = {}
    for p in points:
        if p.id == IDENTITY_POINT_ID:
            continue
        entry = _known(p.payload)
        if entry is not None and keep(entry[0]):
            out[entry[0]] = entry[1]
    return out


# --------------------------------------------------------------------------------------------
# Embedded: Qdrant Edge
# --------------------------------------------------------------------------------------------
def local_mode_store(path: str) -> bool:
    """Does ``path`` hold a qdrant-client local-mode store (this project's embedded store
    before Qdrant Edge)? Those have a ``meta.json`` and ``collection/<name>/storage.sqlite``."""
    return os.path.isfile(os.path.join(path, "meta.json")) and os.path.isdir(
        os.path.join(path, "collection")
    )


def _held(e: Exception) -> bool:
    """The shard is open in another process (its WAL lock is taken)."""
    return "WouldBlock" in str(e)


class EdgeSink(_Collections):
    def __init__(
        self,
        path: str,
        collection: str,
        create: bool,
        dim: int,
        patience: Patience = Patience(),
        manifest: bool = False,
        physical: str | None = None,
        serve: str | None = None,
        builds: Builds = Builds(),
    ) -> None:
        """``physical``: the directory of the points (a version of ``collection``,
        ``importer.versions``); default: the active one. ``serve``: a rebuild: the version
        readers see under the plain name until ``activate`` (None: none yet). ``builds``: the
        versions' digests, for pinned reads."""
        if local_mode_store(path):
            raise ConfigError(
                f"{path} holds a qdrant-client local-mode store (the embedded store before "
                f"Qdrant Edge): copy it with `embedding-importer export --local-path {path} "
                f"--collection {collection} --to-path NEW_DIR` and use NEW_DIR, or re-import "
                "into an empty directory (point IDs are deterministic: the same points result)"
            )
        self.path = path
        self.where = f"embedded:{path}"
        self.patience = patience
        self.collection = collection
        self.dim = dim
        self.lock = threading.RLock()  # the read API's threads and the import's writes
        self.reads: ReadAPI | None = None
        self.served: dict[str, Collection] | None = None  # what the read API answers
        # ... and, by build digest, the versions a read pinned to a build may use
        self.pinned: dict[str, dict[str, Collection]] = {}
        self.builds = builds
        self.old: list[Any] = []  # --switch-on-order: the versions switched from, until retired
        self.physical = physical or edge_active(path, collection)
        self.shard: Any = self._open(os.path.join(path, self.physical), dim, create)
        self.points = self.shard
        self.shards = [self.shard]
        self.files: Any = None
        if dim or manifest:  # importing (or verifying): the manifest lives beside the points
            where = os.path.join(path, manifest_collection(self.physical))
            self.files = self._open(where, 1, True)
            self.shards.append(self.files)
            _index_payload(self.shard)
        self.rebuilding = serve is not None or self.physical != edge_active(path, collection)
        self.current: list[Any] = [] if serve is None else self._open_current(serve)

    def _open_current(self, name: str) -> list[Any]:
        """The active version's points and manifest, for reads during a rebuild."""
        opened = [self._open(os.path.join(self.path, name), self.dim, False)]
        files = os.path.join(self.path, manifest_collection(name))
        if os.path.isdir(files):
            opened.append(self._open(files, 1, False))
        return opened

    def _named(self, opened: Sequence[Any], digest: str | None) -> dict[str, Collection]:
        """The read API's names of a version's points and manifest (``opened``)."""
        from importer.readapi import Collection

        out = {self.collection: Collection(opened[0], self.dim, digest)}
        if len(opened) > 1 and opened[1] is not None:
            out[manifest_collection(self.collection)] = Collection(opened[1], 1, digest)
        return out

    def activate(self, keep_old: bool = False) -> None:
        """Readers of the collection's name see this sink's version from now on: the pointer
        file (atomic rename) and, in the same step under the lock, the read API's mapping.
        ``keep_old``: the version switched from stays open for reads pinned to its build
        until ``close_old`` (else it is closed now)."""
        from importer.versions import write_edge_pointer

        with self.lock:
            for s in self.shards:
                s.flush()
            write_edge_pointer(self.path, self.collection, self.physical)
            if self.served is not None:
                self.served.update(self._named([self.shard, self.files], self.builds.written))
            self.offer_target()
            old, self.current, self.rebuilding = self.current, [], False
            self.old += old
            if not keep_old:
                self.close_old()

    def offer_target(self) -> None:
        """The version written is complete or caught up: reads pinned to its build may use it
        (before, a peer's read of it would be partial)."""
        if self.builds.written is not None and self.served is not None:
            with self.lock:
                self.pinned[self.builds.written] = self._named(
                    [self.shard, self.files], self.builds.written
                )

    def close_old(self) -> None:
        """Close the version switched from (it is deleted next); pinned reads of it end."""
        with self.lock:
            if self.builds.served is not None and self.builds.served != self.builds.written:
                self.pinned.pop(self.builds.served, None)
            old, self.old = self.old, []
            for s in old:
                with contextlib.suppress(Exception):  # best effort: it is deleted next
                    s.close()

    def _open(self, where: str, dim: int, create: bool) -> Any:
        import qdrant_edge as q

        config = q.EdgeConfig(
            vectors=q.EdgeVectorParams(dim, distance=q.Distance.Cosine, memory=q.Memory.Cold),
            wal_enabled=True,
        )

        def attempt() -> Any:
            if os.path.isdir(where) and os.listdir(where):
                return q.EdgeShard.load(where)
            if not create:
                raise ConfigError(
                    f"collection at {where} does not exist and --no-create-collection is set"
                )
            os.makedirs(where, exist_ok=True)
            log.info("created embedded collection %s (dim %d, cosine)", where, dim)
            return q.EdgeShard.create(where, config)

        try:
            shard = retry(
                attempt,
                _held,
                lambda e: f"embedded store {where} is held by another process ({_first_line(e)})",
                self.patience.should_stop,
                self.patience.on_retry,
            )
        except (ConfigError, Stop):
            raise
        except OSError as e:
            raise ConfigError(f"embedded store {where} is not usable: {e}") from None
        except Exception as e:
            raise ConfigError(
                f"embedded store {where} cannot be opened: {_first_line(e)}"
            ) from None
        self._check_dim(shard, where, dim)
        return shard

    @staticmethod
    def _check_dim(shard: Any, where: str, dim: int) -> None:
        if not dim:
            return
        probe, _ = shard.scroll(_scroll_request(limit=1, with_vector=True))
        if probe and probe[0].vector is not None and len(probe[0].vector) != dim:
            raise ConfigError(
                f"collection at {where} has vectors of size {len(probe[0].vector)}, the model "
                f"makes {dim}: use another collection or model"
            )

    def serve_reads(
        self,
        address: tuple[str, int],
        api_key: str | None,
        peers: Sequence[str] = (),
        text: TextModel | None = None,
    ) -> str | None:
        """Answer Qdrant's REST reads of this store's collections until ``close``; with
        ``peers`` (the other shards' read APIs), reads of points cover every shard. An address
        that cannot be bound costs the reads, never the import: None then."""
        from importer.readapi import ReadAPI

        shown = self.current or ([] if self.rebuilding else [self.shard, self.files])
        # a rebuild's new version is not shown before it is complete
        digest = self.builds.served if self.current else self.builds.written
        collections = self._named(shown, digest) if shown else {}
        self.served = collections
        if shown and digest is not None:
            self.pinned[digest] = dict(collections)
        try:
            self.reads = ReadAPI(
                collections, self.lock, address, api_key, peers, self.pinned, self.builds.pin,
                text,
            )  # fmt: skip
        except OSError as e:
            log.warning(
                "cannot serve reads of %s at %s:%d (%s); the import goes on, reads "
                "of this store wait until it is released",
                self.path,
                *address,
                e,
            )
            return None
        url = self.reads.start(self.path)
        log.info("serving reads of %s at %s (Qdrant REST, read-only)", self.path, url)
        return url

    def _upsert(self, shard: Any, ids: Sequence[str], vectors: Any, payloads: list[Any]) -> None:
        import qdrant_edge as q

        points = [
            q.Point(i, [float(x) for x in v], p)
            for i, v, p in zip(ids, vectors, payloads, strict=True)
        ]
        with self.lock:
            shard.update(q.UpdateOperation.upsert_points(points))

    def _delete(self, shard: Any, ids: list[Any]) -> None:
        import qdrant_edge as q

        with self.lock:
            shard.update(q.UpdateOperation.delete_points(ids))

    def _scroll(self, shard: Any, with_vectors: bool) -> Iterator[StoredPoint]:
        return _edge_scroll(shard, with_vectors, self.lock)

    def _get(self, shard: Any, pid: str) -> dict[str, Any] | None:
        with self.lock:
            found = shard.retrieve([pid], True, False)
        return dict(found[0].payload or {}) if found else None

    def sync(self) -> None:
        with self.lock:
            for s in self.shards:
                s.flush()

    def search(self, vector: Sequence[float], limit: int) -> list[StoredPoint]:
        import qdrant_edge as q

        req = q.QueryRequest(
            limit=limit, query=q.Query.Nearest([float(x) for x in vector]), with_payload=True
        )
        with self.lock:
            hits = self.shard.query(req)
        return [StoredPoint(str(p.id), None, dict(p.payload or {}), float(p.score)) for p in hits]

    def count(self) -> int:
        import qdrant_edge as q

        with self.lock:
            return int(self.shard.count(q.CountRequest()))

    def close(self) -> None:
        if self.reads is not None:
            self.reads.stop()  # first: no read may reach a closed shard
        with self.lock:
            for s in self.shards + self.current + self.old:
                with contextlib.suppress(Exception):  # best effort on shutdown
                    s.flush()
                    s.close()


# Payload fields that searches filter on (a project, a session, a source file): keyword
# indexes make a filtered query of 20,000 points take 0.7 ms instead of 34 ms (a full scan of
# the payloads on disk); see docs/benchmarks.md, "Reads through the importer".
INDEXED_FIELDS: Final = ("source", "project", "session")


def _index_payload(shard: Any) -> None:
    """Create the keyword indexes of ``INDEXED_FIELDS`` the shard does not have yet (once per
    store: they persist, and an existing store gets them at its next import)."""
    import qdrant_edge as q

    have = set(shard.info().payload_schema)
    for name in INDEXED_FIELDS:
        if name not in have:
            shard.update(q.UpdateOperation.create_field_index(name, q.PayloadSchemaType.Keyword))


def _scroll_request(offset: Any = None, limit: int = SCROLL_PAGE, with_vector: bool = False) -> Any:
    import qdrant_edge as q

    return q.ScrollRequest(offset=offset, limit=limit, with_payload=True, with_vector=with_vector)


def _edge_scroll(
    shard: Any, with_vectors: bool, lock: threading.RLock | None = None
) -> Iterator[StoredPoint]:
    offset: Any = None
    while True:
        with lock or contextlib.nullcontext():
            page, offset = shard.scroll(_scroll_request(offset, SCROLL_PAGE, with_vectors))
        for r in page:
            vec = [float(x) for x in r.vector] if with_vectors and r.vector is not None else None
            yield StoredPoint(str(r.id), vec, dict(r.payload or {}))
        if offset is None:
            return


def open_sink(
    url: str | None,
    api_key: str | None,
    path: str,
    collection: str,
    create: bool,
    dim: int,
    patience: Patience = Patience(),
    reads: tuple[str, int] | None = None,
    peers: Sequence[str] = (),
    manifest: bool = False,
    physical: str | None = None,
    serve: str | None = None,
    builds: Builds = Builds(),
    text: TextModel | None = None,
) -> Sink:
    """A server sink when a URL is given, else the embedded store at ``path``. ``dim`` 0 opens
    an existing collection for reading (search, export) without creating anything: through the
    read API of the importer that holds the store when one does, else directly (``manifest``:
    its manifest too, which must exist). ``reads``: the address where an importer holding an
    embedded store answers reads of it (None: nowhere)."""
    if url:
        return ServerSink(url, api_key, collection, create, dim, patience, physical)
    if not dim:
        from importer.holder import holder_url

        held = holder_url(path, api_key)
        if held is not None:
            log.info("embedded store %s is held: reading through its importer, %s", path, held)
            # its read API answers the plain name with the active version
            return ServerSink(held, api_key, collection, False, 0, patience, collection)
        active = edge_active(path, collection)
        for name in (active, manifest_collection(active))[: 1 + manifest]:
            if not os.path.isdir(os.path.join(path, name)):
                raise ConfigError(f"no collection {name!r} in the embedded store at {path}")
    sink = EdgeSink(path, collection, create, dim, patience, manifest, physical, serve, builds)
    if dim and reads is not None:
        sink.serve_reads(reads, api_key, peers, text)
    return sink


def dumps_point(p: StoredPoint) -> str:
    return json.dumps({"id": p.id, "vector": p.vector, "payload": p.payload}, ensure_ascii=False)
