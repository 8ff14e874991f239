"""Qdrant: a server (URL + API key) or embedded local mode (a directory), with retries."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from importer.settings import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Stop(Exception):
    """Raised while waiting for Qdrant when the run was asked to stop."""


class QdrantSink:
    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        path: str,
        collection: str,
        create: bool,
        dim: int,
        should_stop: Callable[[], bool],
        on_retry: Callable[[str | None], None] = lambda _why: None,
    ) -> None:
        from qdrant_client import QdrantClient

        self.collection = collection
        self.should_stop = should_stop
        self.on_retry = on_retry
        if url:
            self.where = url
            self.client = QdrantClient(url=url, api_key=api_key, timeout=60)
            self.local = False
        else:
            self.where = f"local:{path}"
            try:
                self.client = QdrantClient(path=path)
            except RuntimeError as e:  # directory locked by another process
                raise ConfigError(f"embedded Qdrant at {path}: {e}") from None
            except OSError as e:
                raise ConfigError(f"embedded Qdrant at {path} is not usable: {e}") from None
            self.local = True
        self._ensure_collection(create, dim)
        self._sqlite: Any = None
        if self.local:
            self._tune_local()

    def _tune_local(self) -> None:
        """Embedded mode: switch the collection's SQLite file to WAL + synchronous=NORMAL.

        qdrant-client's local mode commits every point in its own transaction, and with the
        default rollback journal each commit fsyncs: ~80-110 points/s here. With WAL and
        synchronous=NORMAL a commit survives a crash of the process (SIGKILL, OOM kill) but is
        only fsynced at a WAL checkpoint; :meth:`sync` forces one before every checkpoint
        write, so the importer's checkpoint never runs ahead of durable points even if the
        machine crashes. Measured: 81 -> 890 points/s. Reaches into qdrant-client internals,
        so any surprise leaves the default in place.
        """
        try:
            inner: Any = getattr(self.client, "_client", None)
            coll = inner.collections[self.collection]
            conn = coll.storage.storage
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._sqlite = conn
        except Exception as e:
            log.info("embedded Qdrant: keeping default SQLite settings (%s)", e)

    def sync(self) -> None:
        """Make every acknowledged point durable (embedded mode; a server syncs on its own)."""
        if self._sqlite is not None:
            self._sqlite.execute("PRAGMA wal_checkpoint(FULL)")

    def _ensure_collection(self, create: bool, dim: int) -> None:
        from qdrant_client import models

        exists = self._retry(lambda: self.client.collection_exists(self.collection), "check")
        if exists:
            info: Any = self._retry(lambda: self.client.get_collection(self.collection), "read")
            vectors = info.config.params.vectors
            size = getattr(vectors, "size", None)
            if size is not None and size != dim:
                raise ConfigError(
                    f"collection {self.collection!r} has vectors of size {size}, the model "
                    f"makes {dim}: use another collection or model"
                )
            return
        if not create:
            raise ConfigError(
                f"collection {self.collection!r} does not exist and --no-create-collection is set"
            )
        self._retry(
            lambda: self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            ),
            "create collection",
        )
        log.info("created collection %s (dim %d, cosine) in %s", self.collection, dim, self.where)

    def upsert(
        self, ids: list[str], vectors: NDArray[np.float32], payloads: list[dict[str, Any]]
    ) -> None:
        from qdrant_client import models

        points = models.Batch(ids=list(ids), vectors=vectors.tolist(), payloads=payloads)
        self._retry(lambda: self.client.upsert(self.collection, points=points, wait=True), "upsert")

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        """Call ``fn``; while Qdrant is unreachable or overloaded, wait and retry (forever,
        unless the run is asked to stop, which raises Stop). ``on_retry`` hears why it waits,
        and ``None`` once a call went through again."""
        delay = 0.5
        waited = False
        while True:
            try:
                result = fn()
            except Exception as e:
                if self.local or not _transient(e):
                    raise
                err = e
            else:
                if waited:
                    self.on_retry(None)
                return result
            why = (f"Qdrant at {self.where} unreachable for {what} ({type(err).__name__}: "
                   f"{str(err).splitlines()[0][:200] if str(err) else ''})")
            waited = True
            self.on_retry(why)
            log.warning("%s; retrying in %.1fs, no progress lost", why, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self.should_stop():
                    raise Stop(f"stopped while waiting for Qdrant ({what})") from err
                time.sleep(0.1)
            delay = min(delay * 2, 30.0)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort on shutdown
            self.client.close()


def _transient(e: Exception) -> bool:
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(e, UnexpectedResponse):
        code = e.status_code or 0
        return code >= 500 or code == 429
    if isinstance(e, ResponseHandlingException | ConnectionError | TimeoutError | OSError):
        return True
    mod = type(e).__module__
    return mod.startswith(("httpx", "httpcore", "grpc"))
