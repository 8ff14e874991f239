"""One search over every shard of an import: a read asked of one shard's read API is asked of
its peers too (the other shards' read APIs, ``IMPORTER_READ_PEERS``), and the answers merge as
one collection would answer:

- query: each shard is asked for ``offset + limit`` nearest points; the merge keeps the best
  scores, then applies offset and limit;
- scroll: each shard is asked for ``limit + 1`` points from the offset, in point-ID order (the
  order Qdrant scrolls in); the merge takes the first ``limit`` and the next one is the offset
  of the next page;
- count: the sum; retrieve: the union.

The requests to peers carry ``LOCAL_HEADER`` so that a peer answers from its own store only,
and, when the read is pinned (``--switch-on-order``), ``BUILD_HEADER`` with the build digest of
the version the asked shard answers from: the peer answers from its version of that build, or
503 when it has none open (``importer.readapi``). A
peer that does not answer (its pod is being rolled) makes the whole read fail with 503, which a
client retries: a partial answer would look like a complete one.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from importer.holder import post

LOCAL_HEADER = "X-Eio-Shard-Local"
BUILD_HEADER = "X-Eio-Build"
PEER_TIMEOUT = 30.0


class PeerDown(Exception):
    """A peer shard's read API did not answer."""


def _id_key(pid: Any) -> tuple[int, int]:
    """Qdrant's point-ID order: unsigned integers first, then UUIDs by their 128-bit value."""
    if isinstance(pid, int):
        return (0, pid)
    return (1, uuid.UUID(str(pid)).int)


def shard_body(op: str, body: dict[str, Any]) -> dict[str, Any]:
    """What to ask each shard for so that the merge of their answers is exact."""
    out = dict(body)
    if op == "query":
        out["limit"] = int(body.get("limit") or 10) + int(body.get("offset") or 0)
        out["offset"] = 0
    elif op == "scroll":
        out["limit"] = int(body.get("limit") or 10) + 1
    return out


def merge(op: str, body: dict[str, Any], answers: Sequence[Any]) -> Any:
    """One answer from every shard's answer to ``shard_body(op, body)``."""
    if op == "count":
        return {"count": sum(int(a["count"]) for a in answers)}
    if op == "retrieve":
        return [p for a in answers for p in a]
    if op == "query":
        offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 10)
        points = sorted((p for a in answers for p in a["points"]), key=lambda p: -p["score"])
        return {"points": points[offset : offset + limit]}
    if op == "scroll":
        limit = int(body.get("limit") or 10)
        points = sorted((p for a in answers for p in a["points"]), key=lambda p: _id_key(p["id"]))
        nxt = points[limit]["id"] if len(points) > limit else None
        return {"points": points[:limit], "next_page_offset": nxt}
    raise ValueError(f"no merge for {op!r}")


def ask_peer(
    url: str, path: str, body: dict[str, Any], api_key: str | None, build: str | None = None
) -> Any:
    """POST ``body`` to one peer's read API (asking for the version of ``build``: None, the
    one its readers see); its ``result``, or ``PeerDown``."""
    headers = {LOCAL_HEADER: "1"} | ({BUILD_HEADER: build} if build else {})
    try:
        return post(url, path, body, api_key, headers, PEER_TIMEOUT)
    except urllib.error.HTTPError as e:  # a bad request fails here first, before any peer
        raise PeerDown(f"{url}: HTTP {e.code} {e.read()[:300]!r}") from None
    except (OSError, ValueError, KeyError) as e:
        raise PeerDown(f"{url}: {e}") from None


def fan_out(
    op: str,
    path: str,
    body: dict[str, Any],
    local: Callable[[dict[str, Any]], Any],
    peers: Sequence[str],
    api_key: str | None,
    build: str | None = None,
) -> Any:
    """Ask this shard (``local``) and every peer, in parallel, and merge the answers (all of
    the version of ``build`` when given)."""
    asked = shard_body(op, body)
    with ThreadPoolExecutor(max_workers=len(peers) or 1) as pool:
        remote = [pool.submit(ask_peer, url, path, asked, api_key, build) for url in peers]
        answers = [local(asked)] + [f.result() for f in remote]
    return merge(op, body, answers)
