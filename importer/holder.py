"""Finding and asking the importer that holds an embedded store, with the standard library only
(``search`` through a holder loads neither qdrant-client nor the model: it answers in well under
a second, docs/importer.md "Reading a store while it is imported").

The holder writes its read API's address to ``<store>/.eio-reads.json`` (``ADDRESS_FILE``) and
answers ``/readyz`` with the store's real path in ``STORE_HEADER``, so a stale file or a port
reused by another process is not taken for it. A query may carry text instead of a vector, in
the shape of Qdrant's inference object (``{"text": ..., "model": ...}``): the holder embeds it
with the import's own model (``Router``, ``importer.readapi``)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ADDRESS_FILE = ".eio-reads.json"
STORE_HEADER = "X-Eio-Store"


def holder_url(store: str, api_key: str | None = None, timeout: float = 1.0) -> str | None:
    """The URL of the read API of the importer that holds the embedded store at ``store``, if
    one answers; None when nobody holds it (no address file, or a stale one)."""
    try:
        url = str(json.loads((Path(store) / ADDRESS_FILE).read_text())["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not url.startswith("http://"):
        return None
    req = urllib.request.Request(url + "/readyz")  # noqa: S310 - http only, checked above
    if api_key:
        req.add_header("api-key", api_key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            mine = resp.headers.get(STORE_HEADER) == os.path.realpath(store)
            return url if resp.status == 200 and mine else None
    except OSError:
        return None


def query_text(
    url: str, api_key: str | None, collection: str, text: str, model: str | None, limit: int
) -> list[dict[str, Any]]:
    """The ``limit`` points nearest to ``text``, embedded by the holder at ``url`` (``model``:
    the model the caller expects, checked by the holder; None: the import's). Each point as
    Qdrant's REST answer has it (``id``, ``score``, ``payload``)."""
    document: dict[str, Any] = {"text": text} | ({"model": model} if model else {})
    body = {"query": document, "limit": limit, "with_payload": True}
    try:
        found = post(url, f"/collections/{collection}/points/query", body, api_key, {}, 60)
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:500]
        raise RuntimeError(f"the importer holding the store answered {e.code}: {detail}") from None
    return list(found["points"])


def post(
    url: str,
    path: str,
    body: dict[str, Any],
    api_key: str | None,
    headers: dict[str, str],
    timeout: float,
) -> Any:
    """POST ``body`` as JSON to a read API (the holder's, or a peer shard's); the answer's
    ``result``. urllib's errors (``HTTPError``, ``OSError``) and a malformed answer's
    (``ValueError``, ``KeyError``) propagate: each caller says what they mean."""
    req = urllib.request.Request(  # noqa: S310 - read APIs are http:// addresses
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    if api_key:
        req.add_header("api-key", api_key)
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        return json.loads(resp.read())["result"]
