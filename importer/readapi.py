"""The read API of an embedded store: its holder answers Qdrant's REST read calls.

Qdrant Edge lets one process open a store. The importer that holds it (one-shot or following)
serves reads of its collections over HTTP in the shapes a Qdrant server answers, so that
``embedding-importer search``/``export`` and users' own Qdrant clients
(``QdrantClient(url=...)``, and tools built on it) read while it imports:

- ``GET /``, ``/healthz``, ``/readyz``, ``/livez``; ``GET /collections``,
  ``/collections/{name}``, ``/collections/{name}/exists``;
- ``POST /collections/{name}/points/query`` (nearest, with filter, limit, offset, score
  threshold), ``.../points/scroll``, ``.../points/count``,
  ``POST /collections/{name}/points`` (retrieve) and ``GET /collections/{name}/points/{id}``.

In a sharded import each shard's importer holds its own store; given the other shards' read
APIs (``IMPORTER_READ_PEERS``), the point reads above cover every shard (``importer.fanout``).
With ``--switch-on-order`` such a read is pinned to one build: the shard asked names the build
digest of the version it answers from (``BUILD_HEADER``), and each peer answers from its open
version of that build (the active one, the one being filled once it is complete or caught up,
or an old one kept open until the retire order), or 503 when it has none: through a
coordinated switch every answer comes from one build, never a mix.

Anything else that would write is refused with 403 and a message; a request the embedded store
cannot answer gets 400 naming what. Where an API key is configured (``IMPORTER_QDRANT_API_KEY``),
every call needs it (``api-key`` header or ``Authorization: Bearer``), as on a Qdrant server.

Reads and the importer's writes go through one lock (``EdgeSink.lock``): a read waits at most for
the batch being written. The listening address is written to ``<store>/.eio-reads.json`` for the
CLI to find (``importer.holder``); the holder removes it when it closes the store.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from importer.edgequery import Reads, Unsupported
from importer.fanout import BUILD_HEADER, LOCAL_HEADER, PeerDown, fan_out
from importer.holder import ADDRESS_FILE, STORE_HEADER

if TYPE_CHECKING:
    from importer.model import Embedder

log = logging.getLogger(__name__)

# The REST shapes answered are those of the qdrant-client models that parse the requests, so
# that is the API version reported (qdrant-client warns on a major/minor mismatch).
QDRANT_API_VERSION = importlib.metadata.version("qdrant-client")
_POINTS = re.compile(r"^/collections/([^/]+)/points(?:/([^/]+))?$")
_COLLECTION = re.compile(r"^/collections/([^/]+)(/exists)?$")
_READS = ("query", "scroll", "count", "retrieve")  # the methods of ``Reads`` a POST reaches


@dataclass(frozen=True)
class Collection:
    shard: Any
    dim: int
    digest: str | None = None  # the build digest of the version (None: none recorded)


@dataclass(frozen=True)
class TextModel:
    """The import's model, for queries by text: ``embed`` one text into a query vector."""

    name: str
    embed: Callable[[str], list[float]]

    @classmethod
    def of(cls, embedder: Embedder) -> TextModel:
        """The import's loaded model (ONNX Runtime runs one session from several threads)."""
        return cls(embedder.info.name, lambda text: [float(x) for x in embedder.embed([text])[0]])

    def vector(self, document: dict[str, Any]) -> list[float]:
        """The vector of Qdrant's inference object ``{"text": ..., "model": ...}`` (``model``
        optional: it must name the import's model, with or without its organisation)."""
        text, model = document.get("text"), document.get("model")
        if not isinstance(text, str) or not isinstance(model, str | None):
            raise HttpError(400, "a query by text needs 'text' and optionally 'model' (strings)")
        if model and _short(model) != _short(self.name):
            raise HttpError(
                400,
                f"this import embeds with {self.name}, not {model}: send that model's name "
                "or a vector",
            )
        return self.embed(text)


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Router:
    """Maps a method and path to a read of the store (pure of HTTP; the caller holds no lock).
    With ``peers`` (the other shards' read APIs), a point read covers every shard
    (``importer.fanout``) unless the request is itself a peer's (``local``). ``builds``: the
    open versions by build digest, for reads pinned to a build (``build``); ``pin``: the reads
    this shard fans out are pinned to the build it answers from."""

    def __init__(
        self,
        collections: dict[str, Collection],
        lock: threading.RLock,
        peers: Sequence[str] = (),
        api_key: str | None = None,
        builds: dict[str, dict[str, Collection]] | None = None,
        pin: bool = False,
        text: TextModel | None = None,
    ) -> None:
        self.text = text
        self.collections = collections
        self.lock = lock
        self.peers = list(peers)
        self.api_key = api_key
        self.builds = builds if builds is not None else {}
        self.pin = pin

    def _collection(self, name: str) -> Collection:
        found = self.collections.get(name)
        if found is None:
            raise HttpError(404, f"Not found: Collection `{name}` doesn't exist!")
        return found

    def _resolve(self, name: str, build: str | None) -> Collection:
        """The collection ``name`` of the version of ``build`` (None: the one readers see)."""
        if build is None:
            return self._collection(name)
        found = self.builds.get(build, {}).get(name)
        if found is None:
            self._collection(name)  # 404 for a name this store does not have at all
            raise HttpError(
                503,
                f"this shard has no open version of build {build} of `{name}` (it is switching "
                "versions, or not caught up with it yet); retry",
            )
        return found

    def get(self, path: str, local: bool = False, build: str | None = None) -> Any:
        if path in ("", "/"):
            return {"title": "qdrant - vector search engine", "version": QDRANT_API_VERSION}
        if path == "/collections":
            return {"collections": [{"name": n} for n in sorted(self.collections)]}
        if m := _COLLECTION.match(path):
            if m.group(2):
                return {"exists": m.group(1) in self.collections}
            with self.lock:
                c = self._resolve(m.group(1), build)
                info = Reads(c.shard).info(c.dim)
            if self.peers and not local:  # the whole import's points, not this shard's
                info["points_count"] = self.post(f"{path}/points/count", {}, False, build)["count"]
            return info
        if (m := _POINTS.match(path)) and m.group(2):
            pid: int | str = int(m.group(2)) if m.group(2).isdigit() else m.group(2)
            body = {"ids": [pid], "with_payload": True, "with_vector": True}
            found = self.post(f"/collections/{m.group(1)}/points", body, local, build)
            if not found:
                raise HttpError(404, f"Not found: No point with id {m.group(2)} found")
            return found[0]
        raise HttpError(404, f"no such endpoint: GET {path}")

    def _with_vector(self, body: dict[str, Any]) -> dict[str, Any]:
        """A query by text with the text embedded here, by the import's model (once: the
        shards asked next get the vector)."""
        document = _document(body.get("query"))
        if document is None:
            return body
        if self.text is None:
            raise HttpError(400, "this read API has no model to embed text with: send a vector")
        return {**body, "query": self.text.vector(document)}

    def post(
        self, path: str, body: dict[str, Any], local: bool = False, build: str | None = None
    ) -> Any:
        m = _POINTS.match(path)
        if m is None:
            raise _refused("POST", path)
        name, op = m.group(1), m.group(2) or "retrieve"
        with self.lock:
            seen = self._resolve(name, build)
        if op not in _READS:
            raise _refused("POST", path)
        if op == "query":
            body = self._with_vector(body)
        # a fanned-out read names the build this shard answers from, so every peer does too
        pin = build or (seen.digest if self.pin and not local and self.peers else None)

        def here(b: dict[str, Any]) -> Any:
            with self.lock:  # the collection looked up under the lock: a rebuild's switch
                # (``EdgeSink.activate``) changes what a name maps to under it
                call: Callable[[dict[str, Any]], Any] = getattr(
                    Reads(self._resolve(name, pin).shard), op
                )
                return call(b)

        if local or not self.peers:
            return here(body)
        try:
            return fan_out(op, path, body, here, self.peers, self.api_key, pin)
        except PeerDown as e:
            raise HttpError(503, f"a shard of this import is not answering ({e}); retry") from None


def _document(query: Any) -> dict[str, Any] | None:
    """The inference object of a query by text (alone or as ``nearest``), else None."""
    inner = query.get("nearest") if isinstance(query, dict) and "nearest" in query else query
    return inner if isinstance(inner, dict) and "text" in inner else None


def _refused(method: str, path: str) -> HttpError:
    return HttpError(
        403,
        f"{method} {path}: this is the read-only API of an embedded store held by an importer; "
        "points are written by the import only",
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("read API: " + format, *args)

    def _authorized(self) -> bool:
        key = self.server.api_key
        if not key:
            return True
        given = self.headers.get("api-key") or ""
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:]
        return hmac.compare_digest(given.encode(), key.encode())

    def _send(self, status: int, payload: dict[str, Any], started: float) -> None:
        payload["time"] = time.monotonic() - started
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header(STORE_HEADER, self.server.store)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            raise HttpError(400, f"Format error in JSON body: {e}") from None
        if not isinstance(body, dict):
            raise HttpError(400, "Format error in JSON body: expected an object")
        return body

    def _serve(self, method: str) -> None:
        started = time.monotonic()
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path in ("/healthz", "/livez", "/readyz"):
                self._send(200, {"result": "healthz check passed", "status": "ok"}, started)
                return
            if not self._authorized():
                raise HttpError(401, "Must provide an API key or an Authorization bearer token")
            router = self.server.router
            if method == "GET" and path == "/":  # not wrapped in "result", as on a server
                self._send(200, router.get(path), started)
                return
            local, build = bool(self.headers.get(LOCAL_HEADER)), self.headers.get(BUILD_HEADER)
            if method == "GET":
                result = router.get(path, local, build or None)
            elif method == "POST":
                result = router.post(path, self._body(), local, build or None)
            else:
                self._body()  # drain it: the connection stays usable
                raise _refused(method, path)
            self._send(200, {"result": result, "status": "ok"}, started)
        except HttpError as e:
            self._send(e.status, {"status": {"error": str(e)}}, started)
        except (Unsupported, ValidationError) as e:
            self._send(400, {"status": {"error": f"Bad request: {e}"}}, started)
        except Exception as e:  # a read must never take the importer down
            log.exception("read API: %s %s failed", method, path)
            self._send(500, {"status": {"error": f"Service internal error: {e}"}}, started)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    router: Router
    api_key: str | None
    store: str  # the store's real path, in every answer: a stale address file whose port
    # another process reuses is told apart by it


class ReadAPI:
    """The HTTP server; ``start`` binds and serves in a daemon thread, ``stop`` shuts it down
    and removes the address file it wrote."""

    def __init__(
        self,
        collections: dict[str, Collection],
        lock: threading.RLock,
        address: tuple[str, int],
        api_key: str | None = None,
        peers: Sequence[str] = (),
        builds: dict[str, dict[str, Collection]] | None = None,
        pin: bool = False,
        text: TextModel | None = None,
    ) -> None:
        self.server = _Server(address, _Handler)
        self.server.router = Router(collections, lock, peers, api_key, builds, pin, text)
        self.server.api_key = api_key
        self.server.store = ""
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="read-api", daemon=True
        )
        self.address_file: Path | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else str(host)  # noqa: S104
        return f"http://{shown}:{port}"

    def start(self, store: str | None = None) -> str:
        if store:
            self.server.store = os.path.realpath(store)
        self.thread.start()
        if store:
            self.address_file = Path(store) / ADDRESS_FILE
            tmp = self.address_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
            tmp.replace(self.address_file)
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.address_file is not None:
            try:
                if json.loads(self.address_file.read_text()).get("url") == self.url:
                    self.address_file.unlink()
            except (OSError, ValueError):
                pass
