"""A thin JSON layer over the ``kubernetes`` client: raw dicts in, raw dicts out.

The node agent works on objects in their API JSON shape (as in YAML manifests); the client
provides the connection, TLS and authentication from a kubeconfig.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import config as k8s_config

JSON = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class Kube:
    def __init__(self, kubeconfig: str | None = None) -> None:
        self.api: Any = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        self.api.user_agent = "devcluster-nodeagent/0.1"

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: Any,
        content_type: str,
        timeout: float | tuple[float, float],
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        m, url, hdrs, b, post = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(m, url, hdrs, b, post, _request_timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
        not_found_ok: bool = False,
    ) -> Any:
        resp = self._send(method, path, query, body, content_type, timeout)
        data = resp.read()
        if resp.status == 404 and not_found_ok:
            return None
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, data.decode(errors="replace"), f"{method} {path}")
        return json.loads(data) if data else None

    def get(self, path: str) -> Any:
        return self.request("GET", path, not_found_ok=True)

    def merge_patch(self, path: str, patch: JSON) -> Any:
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def watch(
        self, path: str, query: list[tuple[str, str]], timeout_seconds: int = 60
    ) -> Iterator[JSON]:
        """Events ``{"type": ..., "object": {...}}`` of a watch (ends after the timeout)."""
        q = [*query, ("watch", "true"), ("timeoutSeconds", str(timeout_seconds)),
             ("allowWatchBookmarks", "true")]  # fmt: skip
        resp = self._send("GET", path, q, None, "", (10, timeout_seconds + 10))
        if resp.status != 200:
            raise ApiError(resp.status, resp.read().decode(errors="replace"), f"WATCH {path}")
        raw = resp.response
        buf = b""
        try:
            for chunk in raw.stream(None, decode_content=True):  # None: yield chunks as they come
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()
