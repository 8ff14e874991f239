"""Qdrant's REST read requests, answered from a Qdrant Edge shard.

The request bodies are parsed with qdrant-client's own REST models (``qdrant_client.http.models``:
the shapes a Qdrant server accepts), then translated to Qdrant Edge's request types; results are
returned in the shapes a Qdrant server answers (``ScoredPoint``, ``Record``). What the embedded
store cannot answer (fusion, prefetch, recommend, geo conditions, named vectors) is refused with
``Unsupported``, which the read API turns into a 400 that names it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from qdrant_client.http import models as rest


class Unsupported(ValueError):
    """A request the embedded store's read API does not answer (HTTP 400)."""


# ---------------------------------------------------------------------------- filters
_MATCHES: dict[type[Any], tuple[str, str]] = {
    rest.MatchValue: ("MatchValue", "value"),
    rest.MatchText: ("MatchText", "text"),
    rest.MatchTextAny: ("MatchTextAny", "text_any"),
    rest.MatchPhrase: ("MatchPhrase", "phrase"),
    rest.MatchPrefix: ("MatchPrefix", "prefix"),
    rest.MatchSubstring: ("MatchSubstring", "substring"),
    rest.MatchAny: ("MatchAny", "any"),
    rest.MatchExcept: ("MatchExcept", "except_"),
}


def _match(m: Any) -> Any:
    import qdrant_edge as q

    kind, attr = _MATCHES[type(m)]
    return getattr(q, kind)(getattr(m, attr))


def _range(r: Any) -> Any:
    import qdrant_edge as q

    bounds = {k: getattr(r, k) for k in ("gt", "gte", "lt", "lte")}
    if isinstance(r, rest.DatetimeRange):
        return q.RangeDateTime(**bounds)
    return q.RangeFloat(**bounds)


def _field(c: rest.FieldCondition) -> Any:
    import qdrant_edge as q

    if c.geo_bounding_box or c.geo_radius or c.geo_polygon or c.values_count:
        raise Unsupported(f"condition on {c.key!r}: geo and values_count are not supported")
    return q.FieldCondition(
        c.key,
        match=_match(c.match) if c.match is not None else None,
        range=_range(c.range) if c.range is not None else None,
        is_empty=c.is_empty,
        is_null=c.is_null,
    )


def _condition(c: Any) -> Any:
    import qdrant_edge as q

    if isinstance(c, rest.FieldCondition):
        return _field(c)
    if isinstance(c, rest.Filter):
        return edge_filter(c)
    if isinstance(c, rest.IsEmptyCondition):
        return q.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, rest.IsNullCondition):
        return q.IsNullCondition(c.is_null.key)
    if isinstance(c, rest.HasIdCondition):
        return q.HasIdCondition({point_id(i) for i in c.has_id})
    if isinstance(c, rest.NestedCondition):
        return q.NestedCondition(c.nested.key, edge_filter(c.nested.filter))
    raise Unsupported(f"filter condition {type(c).__name__} is not supported")


def _conditions(cs: Any) -> list[Any] | None:
    if cs is None:
        return None
    return [_condition(c) for c in (cs if isinstance(cs, list) else [cs])]


def edge_filter(f: rest.Filter | None) -> Any:
    """A Qdrant Edge ``Filter`` for a REST filter (None for None)."""
    import qdrant_edge as q

    if f is None:
        return None
    min_should = None
    if f.min_should is not None:
        min_should = q.MinShould(_conditions(f.min_should.conditions) or [], f.min_should.min_count)
    return q.Filter(
        must=_conditions(f.must),
        should=_conditions(f.should),
        must_not=_conditions(f.must_not),
        min_should=min_should,
    )


# ---------------------------------------------------------------------------- ids and results
def point_id(value: Any) -> Any:
    """A REST point ID (an unsigned integer or a UUID string) as Qdrant Edge takes it."""
    if isinstance(value, int):
        return value
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise Unsupported(f"point id {value!r} is neither an unsigned integer nor a UUID") from None


def _json_id(value: Any) -> int | str:
    return value if isinstance(value, int) else str(value)


def _payload(payload: Any, selector: Any) -> dict[str, Any] | None:
    """The payload as ``with_payload`` asks: all, none, or only/except some keys."""
    if selector is False or selector is None:
        return None
    full = dict(payload or {})
    if selector is True:
        return full
    if isinstance(selector, list):
        return {k: v for k, v in full.items() if k in selector}
    if isinstance(selector, rest.PayloadSelectorInclude):
        return {k: v for k, v in full.items() if k in selector.include}
    if isinstance(selector, rest.PayloadSelectorExclude):
        return {k: v for k, v in full.items() if k not in selector.exclude}
    raise Unsupported(f"with_payload {selector!r} is not supported")


def _vector(vector: Any, wanted: Any) -> list[float] | None:
    if not wanted or vector is None:
        return None
    return [float(x) for x in vector]


def record(r: Any, with_payload: Any, with_vector: Any) -> dict[str, Any]:
    """A ``Record`` as a Qdrant server answers it."""
    return {
        "id": _json_id(r.id),
        "payload": _payload(r.payload, with_payload),
        "vector": _vector(r.vector, with_vector),
        "shard_key": None,
        "order_value": None,
    }


def scored(p: Any, with_payload: Any, with_vector: Any) -> dict[str, Any]:
    """A ``ScoredPoint`` as a Qdrant server answers it."""
    return {
        "id": _json_id(p.id),
        "version": int(p.version),
        "score": float(p.score),
        "payload": _payload(p.payload, with_payload),
        "vector": _vector(p.vector, with_vector),
        "shard_key": None,
        "order_value": None,
    }


# ---------------------------------------------------------------------------- requests
def _nearest_vector(query: Any, retrieve: Callable[[Any], Sequence[float]]) -> list[float]:
    """The vector a REST query asks for: a vector, ``{"nearest": ...}`` or a point ID."""
    if isinstance(query, rest.NearestQuery):
        query = query.nearest
    if isinstance(query, list) and all(isinstance(x, int | float) for x in query):
        return [float(x) for x in query]
    if isinstance(query, int | str):
        return [float(x) for x in retrieve(point_id(query))]
    raise Unsupported(
        f"query {type(query).__name__} is not supported: send a vector or a point id "
        "(nearest search)"
    )


def _check_plain(using: str | None, prefetch: Any = None, lookup_from: Any = None) -> None:
    if using:
        raise Unsupported(f"named vector {using!r}: the collection has one unnamed vector")
    if prefetch or lookup_from:
        raise Unsupported("prefetch and lookup_from are not supported")


class Reads:
    """Qdrant's read requests against one open Qdrant Edge shard (the caller holds its lock)."""

    def __init__(self, shard: Any) -> None:
        self.shard = shard

    def _vector_of(self, pid: Any) -> Sequence[float]:
        found = self.shard.retrieve([pid], False, True)
        if not found or found[0].vector is None:
            raise Unsupported(f"no point {pid} to query with")
        return list(found[0].vector)

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        import qdrant_edge as q

        req = rest.QueryRequest.model_validate(body)
        _check_plain(req.using, req.prefetch, req.lookup_from)
        if req.query is None:
            raise Unsupported("a query without 'query' (scroll with an order) is not supported")
        vector = _nearest_vector(req.query, self._vector_of)
        with_payload = req.with_payload if req.with_payload is not None else False
        hits = self.shard.query(
            q.QueryRequest(
                limit=req.limit or 10,
                offset=req.offset or 0,
                query=q.Query.Nearest(vector),
                filter=edge_filter(req.filter),
                with_payload=with_payload is not False,
                with_vector=bool(req.with_vector),
                score_threshold=req.score_threshold,
            )
        )
        return {"points": [scored(p, with_payload, req.with_vector) for p in hits]}

    def scroll(self, body: dict[str, Any]) -> dict[str, Any]:
        import qdrant_edge as q

        req = rest.ScrollRequest.model_validate(body)
        if req.order_by is not None:
            raise Unsupported("order_by is not supported")
        with_payload = req.with_payload if req.with_payload is not None else True
        page, next_offset = self.shard.scroll(
            q.ScrollRequest(
                offset=point_id(req.offset) if req.offset is not None else None,
                limit=req.limit or 10,
                filter=edge_filter(req.filter),
                with_payload=with_payload is not False,
                with_vector=bool(req.with_vector),
            )
        )
        return {
            "points": [record(r, with_payload, req.with_vector) for r in page],
            "next_page_offset": None if next_offset is None else _json_id(next_offset),
        }

    def retrieve(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        req = rest.PointRequest.model_validate(body)
        with_payload = req.with_payload if req.with_payload is not None else True
        found = self.shard.retrieve(
            [point_id(i) for i in req.ids], with_payload is not False, bool(req.with_vector)
        )
        return [record(r, with_payload, req.with_vector) for r in found]

    def count(self, body: dict[str, Any]) -> dict[str, Any]:
        import qdrant_edge as q

        req = rest.CountRequest.model_validate(body)
        exact = True if req.exact is None else bool(req.exact)
        return {"count": int(self.shard.count(q.CountRequest(exact, edge_filter(req.filter))))}

    def info(self, dim: int) -> dict[str, Any]:
        """A ``CollectionInfo`` for the collection (one unnamed cosine vector of ``dim``)."""
        info = self.shard.info()
        return {
            "status": "green",
            "optimizer_status": "ok",
            "points_count": int(info.points_count),
            "indexed_vectors_count": int(info.indexed_vectors_count),
            "segments_count": int(info.segments_count),
            "config": {
                "params": {
                    "vectors": {"size": dim, "distance": "Cosine", "on_disk": True},
                    "shard_number": 1,
                    "replication_factor": 1,
                    "write_consistency_factor": 1,
                    "on_disk_payload": True,
                },
                "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                "optimizer_config": {
                    "deleted_threshold": 0.2,
                    "vacuum_min_vector_number": 1000,
                    "default_segment_number": 0,
                    "flush_interval_sec": 5,
                },
                "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            },
            "payload_schema": {},
        }
