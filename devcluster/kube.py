"""The node agent's API client: the ``kubernetes`` package's typed clients, JSON dicts out.

The node agent works on objects in their API JSON shape (as in YAML manifests), so every call
asks for the raw answer (``_preload_content=False``) and returns it parsed; the connection,
TLS and authentication come from the kubeconfig through ``eio_common.kubeapi``, the project's one
config loader. Watches go through ``kubernetes.watch.Watch``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from eio_common import kubeapi

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


class Kube:
    """``call(kube.core.read_namespaced_config_map, name, ns, not_found_ok=True)`` and so on:
    the typed method says which object; this says how (timeout, raw JSON, 404 as None)."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        self.api: Any = kubeapi.api_client(kubeconfig)
        self.api.user_agent = "devcluster-nodeagent/0.1"
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        not_found_ok: bool = False,
        timeout: float = 30,
        **kwargs: Any,
    ) -> Any:
        """``fn(*args, **kwargs)`` (a typed client method) as JSON; None for a 404 when
        ``not_found_ok``; any other error answer as ``ApiError``. For a ``patch_*`` method
        pass ``_content_type=MERGE_PATCH`` (the client would pick JSON Patch)."""
        try:
            resp = fn(*args, **kwargs, _preload_content=False, _request_timeout=timeout)
        except ApiException as e:
            if e.status == 404 and not_found_ok:
                return None
            raise ApiError(int(e.status or 0), str(e.body or e.reason), fn.__name__) from e
        try:
            data = resp.data
        finally:
            resp.release_conn()
        return json.loads(data) if data else None

    def watch_pods(
        self, field_selector: str, resource_version: str, timeout_seconds: int = 60
    ) -> Iterator[JSON]:
        """Pod events ``{"type": ..., "object": {...}}`` (the object as API JSON) from
        ``resource_version`` on, through ``kubernetes.watch.Watch``; ends after the timeout.
        A 410 (resource version too old) is raised as ``ApiException``: relist."""
        for ev in watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.core.list_pod_for_all_namespaces,
            field_selector=field_selector,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=(10, timeout_seconds + 10),
        ):
            # raw_object: the API JSON the agent works on (deserialize=False would be cheaper,
            # but then Watch cannot read an ERROR event: it looks for raw_object)
            yield {"type": ev["type"], "object": ev["raw_object"]}
