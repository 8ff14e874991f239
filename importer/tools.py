"""``embedding-importer search`` and ``export``: use what was imported, move it elsewhere."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import IO, Any, cast

from importer.settings import DEFAULT_MODEL, ConfigError
from importer.sink import Sink, StoredPoint, dumps_point, open_sink

BATCH = 256
log = logging.getLogger("importer")


def _api_key() -> str | None:
    return os.environ.get("IMPORTER_QDRANT_API_KEY") or None


def _source(args: argparse.Namespace) -> Sink:
    return open_sink(args.qdrant_url, _api_key(), args.qdrant_path or "", args.collection, False, 0)


def search(args: argparse.Namespace) -> int:
    """Print the ``--limit`` chunks nearest to the query, with source and score. An embedded
    store held by an importer is searched through it, which embeds the query with its model:
    neither qdrant-client nor the model is loaded here."""
    hits = None if args.qdrant_url else _search_holder(args)
    if hits is None:
        hits = _search_here(args)
    for h in hits:
        if args.json:
            print(json.dumps({"id": h.id, "score": h.score, "payload": h.payload}))
            continue
        p = h.payload
        where = f"{p.get('source', '?')}#{p.get('chunk_index', '?')}"
        extra = " ".join(f"{k}={p[k]}" for k in ("project", "session", "time_from") if k in p)
        text = " ".join(str(p.get("text", "")).split())
        print(f"{h.score:.3f}  {where}  {extra}".rstrip())
        print(f"       {text[:300]}{'...' if len(text) > 300 else ''}")
    return 0


def _search_holder(args: argparse.Namespace) -> list[StoredPoint] | None:
    """The hits from the importer holding the embedded store (None: nobody holds it)."""
    from importer.holder import holder_url, query_text

    url = holder_url(args.qdrant_path, _api_key())
    if url is None:
        return None
    log.info("embedded store %s is held: searching through its importer, %s", args.qdrant_path, url)
    try:
        found = query_text(url, _api_key(), args.collection, args.query, args.model, args.limit)
    except RuntimeError as e:
        raise ConfigError(str(e)) from None
    return [StoredPoint(str(p["id"]), None, dict(p.get("payload") or {}), float(p["score"]))
            for p in found]  # fmt: skip


def _search_here(args: argparse.Namespace) -> list[StoredPoint]:
    """The hits of a store opened here (a server, or an embedded store nobody holds)."""
    from importer.model import Embedder

    sink = _source(args)
    try:
        embedder = Embedder(args.model or DEFAULT_MODEL, args.model_dir, None, 0)
        return sink.search(embedder.embed([args.query])[0].tolist(), args.limit)
    finally:
        sink.close()


def _local_mode_points(path: str, collection: str) -> Iterator[StoredPoint]:
    """Every point of a qdrant-client local-mode collection (the former embedded store)."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=path)
    try:
        if not client.collection_exists(collection):
            raise ConfigError(f"no collection {collection!r} in the local-mode store at {path}")
        offset: Any = None
        while True:
            page, offset = client.scroll(
                collection, limit=BATCH, offset=offset, with_payload=True, with_vectors=True
            )
            for r in page:
                vec = cast(list[float], r.vector) if isinstance(r.vector, list) else None
                yield StoredPoint(str(r.id), vec, dict(r.payload or {}))
            if offset is None:
                return
    finally:
        client.close()


def _batches(points: Iterator[StoredPoint]) -> Iterator[list[StoredPoint]]:
    batch: list[StoredPoint] = []
    for p in points:
        batch.append(p)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def export(args: argparse.Namespace) -> int:
    """Copy every point with its vector and payload: to JSONL, a server or another store."""
    source: Sink | None = None
    if args.local_path:
        points = _local_mode_points(args.local_path, args.collection)
    else:
        source = _source(args)
        points = source.scroll(with_vectors=True)
    n = 0
    try:
        if args.to:
            with _output(args.to) as out:
                for p in points:
                    out.write(dumps_point(p) + "\n")
                    n += 1
        else:
            n = _copy(points, args)
    finally:
        if source is not None:
            source.close()
    print(f"exported {n} points of {args.collection}", file=sys.stderr)
    return 0


def _copy(points: Iterator[StoredPoint], args: argparse.Namespace) -> int:
    n = 0
    target: Sink | None = None
    try:
        for batch in _batches(points):
            if target is None:
                dim = len(batch[0].vector or [])
                target = open_sink(
                    args.to_url, _api_key(), args.to_path or "", args.collection, True, dim
                )
            target.upsert(
                [p.id for p in batch], [p.vector or [] for p in batch], [p.payload for p in batch]
            )
            n += len(batch)
        if target is not None:
            target.sync()
    finally:
        if target is not None:
            target.close()
    return n


@contextlib.contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as f:
        yield f
