"""A stand-in Qdrant *server* for fault tests: the handful of REST endpoints the importer uses,
served over real HTTP and stored in qdrant-client's embedded (local) mode.

There is no Qdrant server binary on this machine. This shim is NOT Qdrant: it implements
``GET /``, ``GET /collections/{c}/exists``, ``GET /collections/{c}``, ``PUT /collections/{c}``,
``PUT /collections/{c}/points`` (batch or list form), ``POST .../points/delete`` (by IDs) and
``POST .../points/scroll`` (the per-file manifest) and nothing else, with the real
qdrant-client models on both sides, so the importer's real server-mode code (qdrant-client's
REST client, its retries and backoff) runs against a real socket that can refuse connections,
accept them again, fail with 503, and check the ``api-key`` header.

Its storage outlives ``stop()``/``start()`` (an outage loses nothing that was acknowledged),
like a server process that is unreachable for a while.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class QdrantShim:
    def __init__(self, port: int, storage: Path, api_key: str | None = None) -> None:
        from qdrant_client import QdrantClient

        self.port = port
        self.storage = storage
        self.api_key = api_key
        self.client: Any = QdrantClient(path=str(storage))
        self.lock = threading.Lock()
        self.keys_seen: set[str | None] = set()
        self.requests = 0
        self.upserted = 0
        self.fail_with: int | None = None  # answer every request with this status (e.g. 503)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ----------------------------------------------------------------------------------------
    def start(self) -> QdrantShim:
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _reply(self, code: int, result: Any, bare: bool = False) -> None:
                raw = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
                if bare:
                    raw = json.dumps(result).encode()
                if code >= 400:
                    raw = json.dumps({"status": {"error": f"shim: {code}"}, "time": 0.0}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self, method: str) -> None:
                body = self._body()
                with shim.lock:
                    shim.requests += 1
                    shim.keys_seen.add(self.headers.get("api-key"))
                    if shim.fail_with is not None:
                        return self._reply(shim.fail_with, None)
                    if shim.api_key is not None and self.headers.get("api-key") != shim.api_key:
                        return self._reply(401, None)
                    try:
                        code, result = shim.dispatch(method, urlparse(self.path).path, body)
                    except Exception as e:  # a bug in the shim: say so loudly
                        code, result = 500, None
                        print(f"qdrant shim: {method} {self.path}: {e!r}", flush=True)
                return self._reply(code, result, bare=self.path == "/")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket: new connections are refused, storage is kept."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.stop()
        self.client.close()

    def points(self, collection: str) -> dict[str, tuple[Any, dict[str, Any]]]:
        """Every stored point: id -> (vector as float32 array, payload)."""
        import numpy as np

        out: dict[str, tuple[Any, dict[str, Any]]] = {}
        offset = None
        while True:
            page, offset = self.client.scroll(
                collection, limit=1000, offset=offset, with_payload=True, with_vectors=True
            )
            for p in page:
                out[str(p.id)] = (np.asarray(p.vector, dtype=np.float32), dict(p.payload or {}))
            if offset is None:
                return out

    # ----------------------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        from qdrant_client import models

        parts = [p for p in path.split("/") if p]
        if method == "GET" and not parts:
            return 200, {"title": "qdrant shim", "version": "1.15.0"}
        if method == "GET" and parts == ["aliases"]:
            return 200, self.client.get_aliases().model_dump(mode="json", exclude_none=True)
        if method == "POST" and parts == ["collections", "aliases"]:
            ops = models.ChangeAliasesOperation(**(body or {})).actions
            return 200, self.client.update_collection_aliases(change_aliases_operations=ops)
        if method == "GET" and parts == ["collections"]:
            return 200, self.client.get_collections().model_dump(mode="json", exclude_none=True)
        if len(parts) >= 2 and parts[0] == "collections":
            name = parts[1]
            rest = parts[2:]
            found = self._points_read(method, name, rest, body or {})
            if found is not None:
                return found
            if method == "DELETE" and not rest:
                return 200, self.client.delete_collection(name)
            if method == "GET" and rest == ["exists"]:
                return 200, {"exists": self.client.collection_exists(name)}
            if method == "GET" and not rest:
                if not self.client.collection_exists(name):
                    return 404, None
                info = self.client.get_collection(name)
                return 200, info.model_dump(mode="json", exclude_none=True)
            if method == "PUT" and not rest:
                vectors = (body or {}).get("vectors") or {}
                self.client.create_collection(name, vectors_config=models.VectorParams(**vectors))
                return 200, True
            if method == "PUT" and rest == ["points"]:
                if "batch" in body:
                    points: Any = models.Batch(**body["batch"])
                    n = len(points.ids)
                else:
                    points = [models.PointStruct(**p) for p in body["points"]]
                    n = len(points)
                self.client.upsert(name, points=points, wait=True)
                self.upserted += n
                return 200, {"operation_id": self.upserted, "status": "completed"}
            if method == "POST" and rest == ["points", "delete"]:
                ids = (body or {}).get("points") or []
                self.client.delete(name, points_selector=models.PointIdsList(points=ids))
                return 200, {"operation_id": self.upserted, "status": "completed"}
            if method == "POST" and rest == ["points", "scroll"]:
                b = body or {}
                page, nxt = self.client.scroll(
                    name,
                    limit=b.get("limit") or 10,
                    offset=b.get("offset"),
                    with_payload=b.get("with_payload", True),
                    with_vectors=b.get("with_vector", False),
                )
                pts = [p.model_dump(mode="json", exclude_none=True) for p in page]
                return 200, {"points": pts, "next_page_offset": nxt}
        return 404, None

    def _points_read(self, method: str, name: str, rest: list[str], b: Any) -> Any:
        """``retrieve`` (POST /collections/C/points) and ``count``; None for anything else."""
        if method == "POST" and rest == ["points"]:
            pts = self.client.retrieve(
                name,
                b.get("ids") or [],
                with_payload=b.get("with_payload", True),
                with_vectors=b.get("with_vector", False),
            )
            return 200, [p.model_dump(mode="json", exclude_none=True) for p in pts]
        if method == "POST" and rest == ["points", "count"]:
            return 200, {"count": self.client.count(name, exact=True).count}
        return None
