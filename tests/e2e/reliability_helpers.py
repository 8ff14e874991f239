"""Helpers of the cluster reliability tests (tests/e2e/test_reliability_*.py).

- ``OperatorRunner``: the operator as a local subprocess watching ONE namespace (never all: the
  cluster is shared by concurrent test sessions), killable and restartable;
- ``import_manifest``: an EmbeddingImport over a hostPath source directory and an embedded
  Qdrant hostPath directory (the pods run as UID 65532: directories are made world-writable);
- ``PodWatcher``: watches the namespace's pods in a thread and records every moment at which a
  shard had more than one live pod;
- ``importer_pid``: the host pid of a running importer pod's process, from the node agent's
  container ID (``devcluster://<uid>/<container>/<restart>/<pid>``), checked against
  ``/proc/<pid>/environ`` (``HOSTNAME`` is the pod name);
- the importer test helpers (corpus generator, point comparison) from
  ``tests/importer/conftest.py``, loaded under a unique module name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import urllib3
from kubernetes import client, watch

from devcluster.config import paths
from devcluster.testing import OperatorProcess, kubectl, wait_for, with_paths

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "eio.dev", "v1alpha1", "embeddingimports"
IMAGE = "embedding-importer:0.1.0"


def _load(name: str, path: Path) -> ModuleType:
    """Import a test support file that is not on sys.path under a unique module name, once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def importer_testlib() -> ModuleType:
    """``tests/importer/conftest.py`` (make_corpus, read_points, assert_same_points, ...)."""
    return _load("importer_testlib", REPO / "tests" / "importer" / "conftest.py")


def qdrant_shim() -> ModuleType:
    """``tests/reliability/qdrant_shim.py``: a stand-in Qdrant REST server (not Qdrant)."""
    return _load("reliability_qdrant_shim", REPO / "tests" / "reliability" / "qdrant_shim.py")


# --------------------------------------------------------------------------------------------
# The operator watching one namespace (the shared implementation); a start returns at once,
# so chaos tests can kill it at any moment, also during its own start-up.
OperatorRunner = OperatorProcess


@contextlib.contextmanager
def operator(namespace: str, log_path: Path, **kw: Any) -> Iterator[OperatorRunner]:
    op = OperatorRunner(namespace, log_path, **{"wait_ready": False, **kw})
    op.start()
    try:
        yield op
    finally:
        op.stop()


# --------------------------------------------------------------------------------------------
def shared_dir(path: Path) -> Path:
    """A directory the importer pods (UID 65532) can read and write, and every parent
    traversable."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
    for parent in path.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            os.chmod(parent, mode | 0o011)
    return path


def share_tree(root: Path) -> None:
    """Make a source tree readable by UID 65532."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
        del dirnames  # walked anyway


def import_manifest(
    name: str, namespace: str, sources: Path, qdrant: Path | None, /, **spec_patch: Any
) -> dict[str, Any]:
    """An EmbeddingImport over ``sources`` (hostPath) into embedded Qdrant at ``qdrant``.

    ``spec_patch`` entries are dotted paths (``memoryPolicy.retryBudget=5``); None removes.
    """
    spec: dict[str, Any] = {
        "sources": {"hostPath": {"path": str(sources)}, "paths": ["."], "format": "auto"},
        "embedding": {"batchSize": 8, "threads": 1},
        "qdrant": {"collection": "test"},
        "importer": {
            "image": IMAGE,
            "imagePullPolicy": "Never",
            "resources": {"limits": {"memory": "1Gi"}},
            # pods share the host network in the dev cluster: concurrent pods (ours and other
            # sessions') would clash on the default metrics port 9090
            "metricsPort": 0,
        },
        "memoryPolicy": {"backoffSeconds": 1, "maxBackoffSeconds": 2, "stallSeconds": 600},
    }
    if qdrant is not None:
        spec["qdrant"]["embedded"] = {"hostPath": {"path": str(qdrant)}}
    spec = with_paths(spec, spec_patch)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EmbeddingImport",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create_import(api: client.ApiClient, doc: dict[str, Any]) -> dict[str, Any]:
    co = client.CustomObjectsApi(api)
    ns = doc["metadata"]["namespace"]
    return dict(co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc))


def get_import(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    co = client.CustomObjectsApi(api)
    return dict(co.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def patch_spec(api: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]) -> None:
    co = client.CustomObjectsApi(api)
    co.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": patch})


def wait_phase(
    api: client.ApiClient,
    namespace: str,
    name: str,
    phases: tuple[str, ...],
    timeout: float,
    on_timeout: Callable[[], str] = lambda: "",
    fail_on: tuple[str, ...] = ("Failed",),
) -> dict[str, Any]:
    """Wait until the import's status.phase is one of ``phases``; return the status."""
    st: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal st
        try:
            st = get_import(api, namespace, name).get("status") or {}
        except (client.ApiException, OSError, urllib3.exceptions.HTTPError):
            return None  # the API server is restarting
        if st.get("phase") in fail_on:
            raise AssertionError(
                f"{name} is {st.get('phase')}: {json.dumps(st, indent=1)}\n{on_timeout()}"
            )
        return st if st.get("phase") in phases else None

    return wait_for(
        reached,
        timeout,
        f"{name} in {phases}",
        1,
        lambda: f"{json.dumps(st, indent=1)}\n{on_timeout()}",
    )


# --------------------------------------------------------------------------------------------
TERMINAL = ("Succeeded", "Failed")


@dataclass
class PodWatcher:
    """Watch a namespace's importer pods; record every time a shard has >1 live pod.

    Live: the pod exists and its phase is not Succeeded/Failed (a Terminating pod whose process
    still runs is live). Events come in the API's order, so the live set after each event is
    a snapshot of the API's state at that resourceVersion.
    """

    api: client.ApiClient
    namespace: str
    violations: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    exit_codes: dict[str, int] = field(default_factory=dict)  # pod -> exit code, once ended
    ended_at: list[float] = field(default_factory=list)  # monotonic times of pod endings
    max_live: dict[tuple[str, str], int] = field(default_factory=dict)
    disruptions: dict[str, str] = field(default_factory=dict)  # pod -> DisruptionTarget reason
    _live: dict[str, tuple[str, str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def start(self) -> PodWatcher:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def live(self) -> list[str]:
        """The pods this watch last saw live (neither ended nor deleted)."""
        return list(self._live)

    def _apply(self, kind: str, pod: Any) -> None:
        meta = pod.metadata
        labels = meta.labels or {}
        if "eio.dev/import" not in labels:
            return
        key = (labels["eio.dev/import"], labels.get("eio.dev/shard", "?"))
        self.seen.add(meta.name)
        phase = pod.status.phase if pod.status else None
        for c in (pod.status.conditions or []) if pod.status else []:
            if c.type == "DisruptionTarget" and c.status == "True":
                self.disruptions.setdefault(meta.name, c.reason or "")
        for cs in (pod.status.container_statuses or []) if pod.status else []:
            term = cs.state.terminated if cs.state else None
            if term is not None and meta.name not in self.exit_codes:
                self.exit_codes[meta.name] = int(term.exit_code)
                self.ended_at.append(time.monotonic())
        if kind == "DELETED" or phase in TERMINAL:
            self._live.pop(meta.name, None)
        else:
            self._live[meta.name] = key
        live = sorted(n for n, k in self._live.items() if k == key)
        self.max_live[key] = max(self.max_live.get(key, 0), len(live))
        if len(live) > 1:
            self.violations.append(
                f"{time.strftime('%H:%M:%S')} {key}: live pods {live} (rv "
                f"{meta.resource_version}, after {kind} {meta.name} {phase})"
            )

    def _run(self) -> None:
        core = client.CoreV1Api(self.api)
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    lst = core.list_namespaced_pod(self.namespace)
                    self._live.clear()
                    for p in lst.items:
                        self._apply("ADDED", p)
                    rv = lst.metadata.resource_version
                w = watch.Watch()
                for ev in w.stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    resource_version=rv,
                    timeout_seconds=5,
                    _request_timeout=15,
                ):
                    self._apply(ev["type"], ev["object"])
                    rv = ev["object"].metadata.resource_version
                    if self._stop.is_set():
                        break
            except client.ApiException as e:
                if e.status == 410:  # expired: list again
                    rv = None
                else:
                    self.errors.append(str(e)[:200])
                    time.sleep(1)  # paces the reconnects
            except Exception as e:  # API server restarting: reconnect from the same rv
                self.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                time.sleep(1)  # paces the reconnects


# --------------------------------------------------------------------------------------------
def pod_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def importer_pid(pod: Any) -> int | None:
    """Host pid of a running importer pod's container process (None unless running)."""
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.state is None or cs.state.running is None or not cs.container_id:
            continue
        try:
            pid = int(cs.container_id.rsplit("/", 1)[1])
        except (ValueError, IndexError):
            continue
        if pod_env(pid).get("HOSTNAME") == pod.metadata.name:
            return pid
    return None


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def pod_log_files(namespace: str) -> list[Path]:
    """Every container log the node agent wrote for pods of ``namespace``."""
    root = paths().logs / "pods"
    return sorted(root.glob(f"{namespace}_*/*/*.log"))


def events_of(namespace: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"])
