"""A thin JSON layer over the ``kubernetes`` client: raw dicts in, raw dicts out.

The node agent works on objects in their API JSON shape (as in YAML manifests); the client
provides the connection, TLS and authentication from a kubeconfig.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client, watch

from importer import kubeapi

JSON = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class Kube:
    def __init__(self, kubeconfig: str | None = None) -> None:
        self.api: Any = kubeapi.api_client(kubeconfig)
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

    def watch_pods(
        self, field_selector: str, resource_version: str, timeout_seconds: int = 60
    ) -> Iterator[JSON]:
        """Pod events ``{"type": ..., "object": {...}}`` (the object as API JSON) from
        ``resource_version`` on, through ``kubernetes.watch.Watch``; ends after the timeout.
        A 410 (resource version too old) is raised as ``ApiException``: relist."""
        core = client.CoreV1Api(self.api)
        for ev in watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_pod_for_all_namespaces,
            field_selector=field_selector,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=(10, timeout_seconds + 10),
        ):
            # raw_object: the API JSON the agent works on (deserialize=False would be cheaper,
            # but then Watch cannot read an ERROR event: it looks for raw_object)
            yield {"type": ev["type"], "object": ev["raw_object"]}
