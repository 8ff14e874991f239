"""Security of importer pods on the dev cluster: non-root, read-only root filesystem and no
privilege escalation (in the pod spec AND in the running process, read through /proc on the
node), the Qdrant API key only from a Secret and never in logs, events, status or checkpoints,
and the importer's per-import ServiceAccount limited to its own checkpoint ConfigMaps.

The import points at a Qdrant URL where nothing listens: the importer waits there (retrying
with backoff), so its pod stays Running for the inspection. (The operator's own RBAC is tested
with the Helm chart, tests/e2e/test_helm_install.py.)
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from reliability_helpers import (
    create_import,
    events_of,
    get_import,
    import_manifest,
    importer_pid,
    kubectl,
    operator,
    pod_env,
    pod_log_files,
    proc_status,
    share_tree,
    shared_dir,
)

from devcluster.testing import free_port, wait_for

pytestmark = [pytest.mark.reliability]


def _sources(tmp_path: Path) -> Path:
    src = shared_dir(tmp_path / "src")
    for i in range(3):
        (src / f"doc-{i}.md").write_text(f"# Doc {i}\n\nText about vectors and memory {i}.\n")
    share_tree(src)
    return src


def _unreachable_import(
    api: client.ApiClient,
    core: client.CoreV1Api,
    ns: str,
    tmp_path: Path,
    name: str,
    key: str | None = None,
) -> dict[str, Any]:
    patch: dict[str, Any] = {"qdrant.url": f"http://127.0.0.1:{free_port()}"}
    if key is not None:
        core.create_namespaced_secret(
            ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="qdrant"), string_data={"api-key": key}
            ),
        )
        patch["qdrant.apiKeySecretRef"] = {"name": "qdrant", "key": "api-key"}
    doc = import_manifest(name, ns, _sources(tmp_path), None, **patch)
    return create_import(api, doc)


def _running_pod(core: client.CoreV1Api, ns: str, name: str, op: Any) -> Any:
    def running() -> Any:
        assert op.alive(), op.tail()
        pod = core.read_namespaced_pod(name, ns) if _exists(core, ns, name) else None
        return pod if pod is not None and importer_pid(pod) else None

    return wait_for(running, 180, f"pod {name} running")


def _exists(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, ns)
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def test_importer_pod_is_non_root_read_only_no_escalation(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    with operator(namespace, tmp_path / "operator.log") as op:
        _unreachable_import(k8s_api, core_v1, namespace, tmp_path, "sec")
        pod = _running_pod(core_v1, namespace, "sec-s0-a1", op)
        # the spec
        psc = pod.spec.security_context
        (c,) = pod.spec.containers
        sc = c.security_context
        assert psc.run_as_non_root is True
        assert sc.run_as_non_root is True
        assert sc.run_as_user not in (None, 0)
        assert psc.run_as_user not in (None, 0)
        assert sc.read_only_root_filesystem is True
        assert sc.allow_privilege_escalation is False
        assert sc.capabilities.drop == ["ALL"]
        assert not sc.capabilities.add
        assert sc.seccomp_profile.type == "RuntimeDefault"
        assert not sc.privileged
        # the running process, as the node sees it
        pid = importer_pid(pod)
        assert pid is not None
        st = proc_status(pid)
        uids, gids = st["Uid"].split(), st["Gid"].split()
        assert uids == [str(sc.run_as_user)] * 4, st["Uid"]  # real, effective, saved, fs
        assert gids == [str(sc.run_as_group)] * 4, st["Gid"]
        assert st["NoNewPrivs"] == "1"
        assert st["CapEff"] == "0000000000000000", st["CapEff"]
        root = [
            ln.split()
            for ln in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
            if ln.split()[4] == "/"
        ]
        assert root, "no / mount in the container's mount namespace"
        assert "ro" in root[-1][5].split(","), root[-1]  # the top-most mount of /
        print(
            f"importer pid {pid}: Uid {st['Uid']}, Gid {st['Gid']}, NoNewPrivs "
            f"{st['NoNewPrivs']}, CapEff {st['CapEff']}, / mounted {root[-1][5]}"
        )


def test_api_key_only_from_secret_and_never_leaked(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    key = "eio-test-key-" + secrets.token_hex(16)
    with operator(
        namespace, tmp_path / "operator.log", extra_env={"EIO_LOG_FORMAT": "plain"}
    ) as op:
        _unreachable_import(k8s_api, core_v1, namespace, tmp_path, "key", key=key)
        pod = _running_pod(core_v1, namespace, "key-s0-a1", op)
        pid = importer_pid(pod)
        assert pid is not None
        # it reached the process, through a secretKeyRef only
        assert pod_env(pid).get("IMPORTER_QDRANT_API_KEY") == key
        (c,) = pod.spec.containers
        refs = [e for e in c.env if e.name == "IMPORTER_QDRANT_API_KEY"]
        assert len(refs) == 1
        assert refs[0].value is None
        assert refs[0].value_from.secret_key_ref.name == "qdrant"
        assert key not in json.dumps(k8s_api.sanitize_for_serialization(pod))

        # let the importer retry (and log) a few times, then let the operator reconcile
        def logged_retries() -> bool:
            text = "".join(f.read_text(errors="replace") for f in pod_log_files(namespace))
            return text.count("unreachable") >= 3

        wait_for(logged_retries, 120, "the importer logging its Qdrant retries")
        wait_for(
            lambda: (get_import(k8s_api, namespace, "key").get("status") or {}).get("currentPods"),
            60,
            "status.currentPods",
        )
        op.stop()
        places = {
            "operator log": op.log(),
            "importer pod logs": "".join(
                f.read_text(errors="replace") for f in pod_log_files(namespace)
            ),
            "events": json.dumps(events_of(namespace)),
            "EmbeddingImport (spec+status)": json.dumps(get_import(k8s_api, namespace, "key")),
            "configmaps": kubectl("get", "configmaps", "-n", namespace, "-o", "json"),
            "pods": kubectl("get", "pods", "-n", namespace, "-o", "json"),
            "kubectl describe ei": kubectl("describe", "ei", "key", "-n", namespace),
        }
        assert places["importer pod logs"].count("unreachable") >= 3
        leaks = [where for where, text in places.items() if key in text]
        assert not leaks, f"the API key appears in: {leaks}"
        # and not a recognisable part of it either (e.g. a truncated or masked-tail form)
        assert not [w for w, t in places.items() if key[-16:] in t]
        print(
            f"API key checked in {len(places)} places "
            f"({sum(len(t) for t in places.values())} bytes): not found"
        )


VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def _can(sa: str, verb: str, resource: str, ns: str) -> bool:
    out = kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", sa, check=False)
    return out.strip().splitlines()[0].strip() == "yes"


def test_importer_service_account_is_least_privilege(
    crds: list[str],
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    with operator(namespace, tmp_path / "operator.log") as op:
        _unreachable_import(k8s_api, core_v1, namespace, tmp_path, "rbac")
        pod = _running_pod(core_v1, namespace, "rbac-s0-a1", op)
    assert pod.spec.service_account_name == "rbac-importer"
    sa = f"system:serviceaccount:{namespace}:rbac-importer"
    own = "configmaps/rbac-ckpt-0"
    allowed_own = {v for v in VERBS if _can(sa, v, own, namespace)}
    # exactly what the importer uses: read, then replace with resourceVersion
    assert allowed_own == {"get", "update"}, allowed_own
    denied = {
        (verb, res)
        for res in (
            "configmaps/other",
            "configmaps/rbac-ckpt-1",
            "configmaps",
            "secrets",
            "secrets/qdrant",
            "pods",
            "pods/rbac-s0-a1",
            "pods/log",
            "serviceaccounts",
            "roles.rbac.authorization.k8s.io",
            "rolebindings.rbac.authorization.k8s.io",
            "embeddingimports.eio.dev",
            "embeddingimports.eio.dev/status",
            "events",
            "namespaces",
            "persistentvolumeclaims",
            "serviceaccounts/token",
        )
        for verb in VERBS
    }
    granted = sorted((v, r) for v, r in denied if _can(sa, v, r, namespace))
    assert not granted, f"the importer's ServiceAccount may also: {granted}"
    # nothing in another namespace either
    assert not _can(sa, "get", own, "default")
    assert not _can(sa, "get", "configmaps", "kube-system")
    print(
        f"importer SA on its checkpoint: {sorted(allowed_own)}; "
        f"{len(denied)} other (verb, resource) pairs denied"
    )
