"""The few Kubernetes API calls the operator makes, behind one small interface.

``Kube`` is what handlers use; ``RestKube`` implements it over the ``kubernetes`` package's
``ApiClient`` (its config loading: in-cluster, else kubeconfig) with raw JSON in and out, and
one helper (``_call``) that treats 404 and 409 as expected outcomes rather than errors. Unit
tests pass an in-memory fake instead (tests/operator/operator_testlib.py): no ``patch()``
chains.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from importer import contract

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
REQUEST_TIMEOUT: Final = (5.0, 30.0)  # connect, read: fail fast while the API server restarts

# Where each kind lives: (API path prefix, plural).
_KINDS: Final[dict[str, tuple[str, str]]] = {
    "Pod": ("/api/v1", "pods"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    contract.KIND: (f"/apis/{contract.API_GROUP}/{contract.API_VERSION}", contract.PLURAL),
}


class ApiError(Exception):
    """An API call failed. ``status`` 0 means no HTTP answer (connection refused, timeout)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as is (server restarting, overloaded, conflicting write)."""
        return self.status in (0, 409, 429, 500, 502, 503, 504)


class Kube(Protocol):
    """The API calls of the operator. All bodies are plain JSON-like dicts."""

    def get_import(self, namespace: str, name: str) -> Manifest | None: ...

    def patch_import_status(
        self, namespace: str, name: str, status: Manifest, resource_version: str | None
    ) -> None:
        """Merge-patch ``.status``; ApiError(409) if ``resource_version`` is stale."""

    def list_imports(self, namespace: str | None) -> list[Manifest]:
        """EmbeddingImports in ``namespace``, or in all namespaces for None."""

    def list_pods(self, namespace: str, selector: str) -> list[Manifest]: ...

    def list_configmaps(self, namespace: str, selector: str) -> list[Manifest]: ...

    def create(self, manifest: Manifest) -> bool:
        """Create a namespaced object; False if it already exists (409)."""

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete a pod (graceful); False if it is already gone (404)."""


def _path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    prefix, plural = _KINDS[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name is not None:
        path += f"/{name}"
    if sub is not None:
        path += f"/{sub}"
    return path


class RestKube:
    """``Kube`` over the kubernetes package's ApiClient (auth, TLS, proxies from its config)."""

    def __init__(self, api_client: Any = None) -> None:
        if api_client is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        self.api = api_client

    # The one helper: every call goes through here; 404/409 come back as statuses.
    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        expected: tuple[int, ...] = (404, 409),
    ) -> tuple[int, Manifest]:
        import urllib3

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            request = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
            raw = response.read()
        except urllib3.exceptions.HTTPError as exc:
            raise ApiError(0, f"{method} {path}: {exc}") from exc
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int):
                if status in expected:
                    return status, {}
                raise ApiError(status, f"{method} {path}: {getattr(exc, 'reason', exc)}") from exc
            raise
        status = int(response.status)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if 200 <= status < 300 or status in expected:
            return status, data if isinstance(data, dict) else {}
        message = data.get("message") if isinstance(data, dict) else None
        raise ApiError(status, f"{method} {path}: {message or response.reason}")

    def get_import(self, namespace: str, name: str) -> Manifest | None:
        status, data = self._call("GET", _path(contract.KIND, namespace, name), expected=(404,))
        return None if status == 404 else data

    def patch_import_status(
        self, namespace: str, name: str, status: Manifest, resource_version: str | None
    ) -> None:
        body: Manifest = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        code, _ = self._call(
            "PATCH",
            _path(contract.KIND, namespace, name, "status"),
            body,
            content_type="application/merge-patch+json",
            expected=(404,),
        )
        if code == 404:
            log.debug("%s/%s is gone; status not written", namespace, name)

    def _list(self, kind: str, namespace: str, selector: str) -> list[Manifest]:
        _, data = self._call(
            "GET", _path(kind, namespace), query={"labelSelector": selector}, expected=()
        )
        items = data.get("items") or []
        return [i for i in items if isinstance(i, dict)]

    def post_event(self, body: Manifest, type: str, reason: str, message: str) -> None:
        """A core/v1 Event on ``body`` (best effort: a failure is logged, never raised)."""
        meta = body.get("metadata") or {}
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event: Manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'import')}.",
                         "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                "name": meta.get("name"), "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "embedding-import-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._call("POST", f"/api/v1/namespaces/{meta.get('namespace')}/events", event,
                       expected=())
        except Exception as exc:
            log.warning("could not post event %s on %s: %s", reason, meta.get("name"), exc)

    def list_imports(self, namespace: str | None) -> list[Manifest]:
        prefix, plural = _KINDS[contract.KIND]
        path = _path(contract.KIND, namespace) if namespace else f"{prefix}/{plural}"
        _, data = self._call("GET", path, expected=())
        return [i for i in data.get("items") or [] if isinstance(i, dict)]

    def list_pods(self, namespace: str, selector: str) -> list[Manifest]:
        return self._list("Pod", namespace, selector)

    def list_configmaps(self, namespace: str, selector: str) -> list[Manifest]:
        return self._list("ConfigMap", namespace, selector)

    def create(self, manifest: Manifest) -> bool:
        meta = manifest["metadata"]
        code, _ = self._call(
            "POST", _path(manifest["kind"], meta["namespace"]), manifest, expected=(409,)
        )
        return code != 409

    def delete_pod(self, namespace: str, name: str) -> bool:
        code, _ = self._call("DELETE", _path("Pod", namespace, name), expected=(404,))
        return code != 404
