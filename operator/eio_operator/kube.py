"""The few Kubernetes API calls the operator makes, behind one small interface.

``Kube`` is what handlers use; ``RestKube`` implements it over the ``kubernetes`` package's
typed clients (connection from ``eio_common.kubeapi``: in-cluster, else kubeconfig) with plain
JSON dicts in and out, and one helper (``_call``) that adds the request timeout and treats 404
and 409 as expected outcomes rather than errors. Unit
tests pass an in-memory fake instead (tests/operator/operator_testlib.py): no ``patch()``
chains.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from eio_common import contract, kubeapi

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
REQUEST_TIMEOUT: Final = (5.0, 30.0)  # connect, read: fail fast while the API server restarts
ANNOTATE_CONFLICT_RETRIES: Final = 5  # the fence's read-replace, against checkpoint writes


class ApiError(Exception):
    """An API call failed. ``status`` 0 means no HTTP answer (connection refused, timeout)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying as is (server restarting, overloaded, conflicting write)."""
        return self.status in (0, 409) or self.status in kubeapi.RETRYABLE_STATUSES


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

    def list_services(self, namespace: str, selector: str) -> list[Manifest]: ...

    def create(self, manifest: Manifest) -> bool:
        """Create a namespaced object; False if it already exists (409)."""

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete a pod (graceful); False if it is already gone (404)."""

    def force_delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        """Delete pod ``uid`` at once (grace 0: no kubelet confirms it, for a pod on a lost
        node); False if it is already gone (404) or the name is another pod's now (409)."""

    def get_node(self, name: str) -> Manifest | None:
        """The Node; None if it does not exist (ApiError 403 without the nodes RBAC rule)."""

    def annotate_configmap(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge-patch a ConfigMap's annotations (the checkpoint's fence)."""

    def patch_budget(self, namespace: str, name: str, spec: Manifest) -> None:
        """Merge-patch a PodDisruptionBudget's spec (``spec.importer.podDisruptionBudget``)."""


class RestKube:
    """``Kube`` over the ``kubernetes`` package's typed clients (CoreV1Api, RbacAuthorizationV1Api,
    CustomObjectsApi), with the connection from ``eio_common.kubeapi.api_client`` (in-cluster,
    else kubeconfig). Reads ask for the raw JSON (``_preload_content=False``): the operator
    works on plain dicts, and building model objects only to turn them back costs time and
    memory on every reconcile."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client

        self.api = api_client if api_client is not None else kubeapi.api_client()
        self.core = client.CoreV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        expected: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> tuple[int, Manifest]:
        """``fn(*args, **kwargs)`` with the request timeout: (200, JSON body), or (status, {})
        for a status in ``expected``; any other failure is an ``ApiError``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = fn(*args, **kwargs, _request_timeout=REQUEST_TIMEOUT, _preload_content=False)
            try:
                raw = response.data
            finally:
                response.release_conn()
        except ApiException as exc:
            status = int(exc.status or 0)
            if status in expected:
                return status, {}
            raise ApiError(status, f"{what}: {_message(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise ApiError(0, f"{what}: {exc}") from exc
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return int(response.status), data if isinstance(data, dict) else {}

    def get_import(self, namespace: str, name: str) -> Manifest | None:
        status, data = self._call(
            f"get {contract.KIND} {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            *_CRD,
            namespace,
            contract.PLURAL,
            name,
            expected=(404,),
        )
        return None if status == 404 else data

    def patch_import_status(
        self, namespace: str, name: str, status: Manifest, resource_version: str | None
    ) -> None:
        body: Manifest = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        code, _ = self._call(
            f"patch {contract.KIND} {namespace}/{name} status",
            self.custom.patch_namespaced_custom_object_status,
            *_CRD,
            namespace,
            contract.PLURAL,
            name,
            body,
            _content_type="application/merge-patch+json",
            expected=(404,),
        )
        if code == 404:
            log.debug("%s/%s is gone; status not written", namespace, name)

    def post_event(self, body: Manifest, type: str, reason: str, message: str) -> None:
        """A core/v1 Event on ``body`` (best effort: a failure is logged, never raised)."""
        meta = body.get("metadata") or {}
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        event: Manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name', 'import')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
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
            self._call(
                f"post event {reason}",
                self.core.create_namespaced_event,
                meta.get("namespace"),
                event,
            )
        except Exception as exc:
            log.warning("could not post event %s on %s: %s", reason, meta.get("name"), exc)

    def list_imports(self, namespace: str | None) -> list[Manifest]:
        if namespace:
            _, data = self._call(
                f"list {contract.PLURAL} in {namespace}",
                self.custom.list_namespaced_custom_object,
                *_CRD,
                namespace,
                contract.PLURAL,
            )
        else:
            _, data = self._call(
                f"list {contract.PLURAL}",
                self.custom.list_cluster_custom_object,
                *_CRD,
                contract.PLURAL,
            )
        return _items(data)

    def _list_in(
        self, kind: str, fn: Callable[..., Any], namespace: str, selector: str
    ) -> list[Manifest]:
        _, data = self._call(f"list {kind} in {namespace}", fn, namespace, label_selector=selector)
        return _items(data)

    def list_pods(self, namespace: str, selector: str) -> list[Manifest]:
        return self._list_in("pods", self.core.list_namespaced_pod, namespace, selector)

    def list_configmaps(self, namespace: str, selector: str) -> list[Manifest]:
        return self._list_in(
            "configmaps", self.core.list_namespaced_config_map, namespace, selector
        )

    def list_services(self, namespace: str, selector: str) -> list[Manifest]:
        return self._list_in("services", self.core.list_namespaced_service, namespace, selector)

    def create(self, manifest: Manifest) -> bool:
        kind, namespace = manifest["kind"], manifest["metadata"]["namespace"]
        what = f"create {kind} {namespace}/{manifest['metadata'].get('name')}"
        if kind == contract.KIND:
            code, _ = self._call(
                what,
                self.custom.create_namespaced_custom_object,
                *_CRD,
                namespace,
                contract.PLURAL,
                manifest,
                expected=(409,),
            )
        else:
            api, method = _CREATE[kind]
            code, _ = self._call(
                what, getattr(getattr(self, api), method), namespace, manifest, expected=(409,)
            )
        return code != 409

    def annotate_configmap(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Read, set the annotations, replace with the resourceVersion read (get and update are
        the verbs the operator holds on ConfigMaps); a 409 (the importer wrote the checkpoint
        in between) reads again."""
        what = f"annotate ConfigMap {namespace}/{name}"
        for _ in range(ANNOTATE_CONFLICT_RETRIES):
            _, cm = self._call(what, self.core.read_namespaced_config_map, name, namespace)
            meta = cm.setdefault("metadata", {})
            meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
            code, _ = self._call(
                what, self.core.replace_namespaced_config_map, name, namespace, cm, expected=(409,)
            )
            if code != 409:
                return
        raise ApiError(409, f"{what}: conflicted {ANNOTATE_CONFLICT_RETRIES} times")

    def patch_budget(self, namespace: str, name: str, spec: Manifest) -> None:
        self._call(
            f"patch PodDisruptionBudget {namespace}/{name}",
            self.policy.patch_namespaced_pod_disruption_budget,
            name,
            namespace,
            {"spec": spec},
            _content_type="application/merge-patch+json",
        )

    def delete_pod(self, namespace: str, name: str) -> bool:
        code, _ = self._call(
            f"delete pod {namespace}/{name}",
            self.core.delete_namespaced_pod,
            name,
            namespace,
            expected=(404,),
        )
        return code != 404

    def force_delete_pod(self, namespace: str, name: str, uid: str) -> bool:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        code, _ = self._call(
            f"force-delete pod {namespace}/{name}",
            self.core.delete_namespaced_pod,
            name,
            namespace,
            body=body,
            grace_period_seconds=0,
            expected=(404, 409),
        )
        return code not in (404, 409)

    def get_node(self, name: str) -> Manifest | None:
        code, data = self._call(f"get node {name}", self.core.read_node, name, expected=(404,))
        return None if code == 404 else data


_CRD: Final = (contract.API_GROUP, contract.API_VERSION)
# The typed client and its create method for each kind the operator creates (besides its own).
_CREATE: Final[dict[str, tuple[str, str]]] = {
    "Pod": ("core", "create_namespaced_pod"),
    "ConfigMap": ("core", "create_namespaced_config_map"),
    "Service": ("core", "create_namespaced_service"),
    "ServiceAccount": ("core", "create_namespaced_service_account"),
    "Role": ("rbac", "create_namespaced_role"),
    "RoleBinding": ("rbac", "create_namespaced_role_binding"),
    "PodDisruptionBudget": ("policy", "create_namespaced_pod_disruption_budget"),
}


def _items(data: Manifest) -> list[Manifest]:
    return [i for i in data.get("items") or [] if isinstance(i, dict)]


def _message(exc: Any) -> str:
    """The Status message of an API error answer, else its HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason)
