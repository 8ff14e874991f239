"""Smoke tests of the dev cluster: real API server, scheduler, controller-manager and the
node agent running pods as local processes with real memory cgroups."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from devcluster.config import paths
from devcluster.testing import (
    free_port,
    terminated_state,
    wait_for,
    wait_pod_gone,
    wait_pod_phase,
)

pytestmark = pytest.mark.e2e


def python_pod(
    name: str,
    script: str,
    *,
    memory: str | None = None,
    env: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    security: dict[str, Any] | None = None,
    pod_security: dict[str, Any] | None = None,
    service_account: str | None = None,
    grace: int | None = None,
) -> client.V1Pod:
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.11-slim",
        "command": ["python", "-c", textwrap.dedent(script)],
        "env": env or [],
        "volumeMounts": mounts or [],
    }
    if memory:
        container["resources"] = {"limits": {"memory": memory}, "requests": {"memory": memory}}
    if security:
        container["securityContext"] = security
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes or [],
    }
    if pod_security:
        spec["securityContext"] = pod_security
    if service_account:
        spec["serviceAccountName"] = service_account
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return client.V1Pod.from_dict(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    )


def host_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    d.chmod(0o777)
    return d


def out_volume(d: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return (
        [{"name": "out", "hostPath": {"path": str(d), "type": "Directory"}}],
        [{"name": "out", "mountPath": "/out"}],
    )


def test_pod_runs_to_completed(core_v1: client.CoreV1Api, namespace: str) -> None:
    core_v1.create_namespaced_pod(namespace, python_pod("hello", "print('hello from a pod')"))
    pod = wait_pod_phase(core_v1, namespace, "hello", ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded"
    t = terminated_state(pod)
    assert t.exit_code == 0
    assert t.reason == "Completed"
    assert pod.spec.node_name == "devnode"
    assert pod.status.pod_ip == "127.0.0.1"
    logs = core_v1.read_namespaced_pod_log("hello", namespace)
    assert "hello from a pod" in logs


def test_memory_limit_is_a_real_oom_kill(core_v1: client.CoreV1Api, namespace: str) -> None:
    script = """
        chunks = []
        for _ in range(400):
            chunks.append(bytearray(1 << 20))  # touch 1 MiB at a time, up to 400 MiB
        print("survived", flush=True)
    """
    core_v1.create_namespaced_pod(namespace, python_pod("hog", script, memory="64Mi"))
    pod = wait_pod_phase(core_v1, namespace, "hog", ("Succeeded", "Failed"))
    assert pod.status.phase == "Failed"
    t = terminated_state(pod)
    assert t.reason == "OOMKilled"
    assert t.exit_code == 137
    assert "survived" not in core_v1.read_namespaced_pod_log("hog", namespace)


def test_container_sees_its_own_memory_cgroup(core_v1: client.CoreV1Api, namespace: str) -> None:
    """What the importer's memory sampler reads inside a pod (cgroup v1 here, or v2)."""
    script = """
        from pathlib import Path
        v1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        v2 = Path("/sys/fs/cgroup/memory.max")
        print("limit", (v1 if v1.exists() else v2).read_text().strip())
    """
    core_v1.create_namespaced_pod(namespace, python_pod("cg", script, memory="96Mi"))
    pod = wait_pod_phase(core_v1, namespace, "cg", ("Succeeded", "Failed"))
    logs = core_v1.read_namespaced_pod_log("cg", namespace)
    assert pod.status.phase == "Succeeded", logs
    assert f"limit {96 << 20}" in logs


def test_deleting_a_running_pod_stops_its_process(
    core_v1: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    d = host_dir(tmp_path)
    volumes, mounts = out_volume(d)
    script = """
        import os, signal, sys, time
        def term(*_):
            open("/out/term", "w").write("SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, term)
        open("/out/pid", "w").write(str(os.getpid()))
        while True:
            time.sleep(0.1)
    """
    core_v1.create_namespaced_pod(
        namespace, python_pod("sleeper", script, volumes=volumes, mounts=mounts, grace=10)
    )
    wait_pod_phase(core_v1, namespace, "sleeper", ("Running",))
    pid = int(wait_for(lambda: (d / "pid").exists() and (d / "pid").read_text(), 30))
    assert Path(f"/proc/{pid}").exists()
    core_v1.delete_namespaced_pod("sleeper", namespace)
    wait_pod_gone(core_v1, namespace, "sleeper", 30)
    assert not Path(f"/proc/{pid}").exists()
    assert (d / "term").read_text() == "SIGTERM"


def test_grace_period_then_sigkill(core_v1: client.CoreV1Api, namespace: str) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(0.1)
    """
    core_v1.create_namespaced_pod(namespace, python_pod("stubborn", script, grace=2))
    wait_pod_phase(core_v1, namespace, "stubborn", ("Running",))
    # the handler must be installed before the delete, or SIGTERM ends it at once
    wait_for(lambda: "ignoring" in core_v1.read_namespaced_pod_log("stubborn", namespace), 30)
    t0 = time.monotonic()
    core_v1.delete_namespaced_pod("stubborn", namespace)
    wait_pod_gone(core_v1, namespace, "stubborn", 30)
    assert time.monotonic() - t0 >= 1.5


def test_env_from_configmap_and_secret_and_configmap_volume(
    core_v1: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    core_v1.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="settings"),
            data={"color": "blue", "settings.yaml": "answer: 42\n"},
        ),
    )
    core_v1.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"token": "t0k"}),
    )
    d = host_dir(tmp_path)
    volumes, mounts = out_volume(d)
    volumes.append({"name": "cfg", "configMap": {"name": "settings"}})
    mounts.append({"name": "cfg", "mountPath": "/etc/app", "readOnly": True})
    env = [
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    script = """
        import json, os
        out = {k: os.environ.get(k) for k in ("COLOR", "TOKEN", "POD_NAME", "POD_NS")}
        out["file"] = open("/etc/app/settings.yaml").read()
        try:
            open("/etc/app/new", "w")
            out["ro"] = False
        except OSError:
            out["ro"] = True
        json.dump(out, open("/out/result.json", "w"))
    """
    core_v1.create_namespaced_pod(
        namespace, python_pod("envtest", script, env=env, volumes=volumes, mounts=mounts)
    )
    pod = wait_pod_phase(core_v1, namespace, "envtest", ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", core_v1.read_namespaced_pod_log("envtest", namespace)
    import json

    got = json.loads((d / "result.json").read_text())
    assert got == {
        "COLOR": "blue",
        "TOKEN": "t0k",
        "POD_NAME": "envtest",
        "POD_NS": namespace,
        "file": "answer: 42\n",
        "ro": True,
    }


def test_in_cluster_config_with_service_account_token(
    core_v1: client.CoreV1Api, k8s_api: client.ApiClient, namespace: str
) -> None:
    rbac = client.RbacAuthorizationV1Api(k8s_api)
    core_v1.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role.from_dict(
            {
                "metadata": {"name": "cm-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
            }
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding.from_dict(
            {
                "metadata": {"name": "cm-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "cm-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            }
        ),
    )
    core_v1.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="visible"), data={})
    )
    script = """
        from kubernetes import client, config
        config.load_incluster_config()
        ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
        names = [c.metadata.name for c in client.CoreV1Api().list_namespaced_config_map(ns).items]
        print("configmaps:", ",".join(sorted(names)))
        try:
            client.CoreV1Api().list_namespaced_secret(ns)
            print("secrets: allowed")
        except client.ApiException as e:
            print("secrets:", e.status)
    """
    core_v1.create_namespaced_pod(
        namespace, python_pod("incluster", script, service_account="reader")
    )
    pod = wait_pod_phase(core_v1, namespace, "incluster", ("Succeeded", "Failed"))
    logs = core_v1.read_namespaced_pod_log("incluster", namespace)
    assert pod.status.phase == "Succeeded", logs
    assert "visible" in logs
    assert "kube-root-ca.crt" in logs
    assert "secrets: 403" in logs  # RBAC is really on


def test_non_root_read_only_root_filesystem(
    core_v1: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    """The importer pods' security context: non-root, read-only root, /tmp an emptyDir."""
    d = host_dir(tmp_path)
    volumes, mounts = out_volume(d)
    volumes.append({"name": "tmp", "emptyDir": {}})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    script = """
        import getpass, json, os
        out = {"uid": os.getuid(), "gid": os.getgid(), "user": getpass.getuser()}
        open("/tmp/scratch", "w").write("x")
        try:
            open("/var/should-not-write", "w")
            out["root_rw"] = True
        except OSError:
            out["root_rw"] = False
        json.dump(out, open("/out/result.json", "w"))
    """
    pod = python_pod(
        "nonroot",
        script,
        volumes=volumes,
        mounts=mounts,
        security={
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "seccompProfile": {"type": "RuntimeDefault"},
            "capabilities": {"drop": ["ALL"]},
        },
        pod_security={"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
    )
    core_v1.create_namespaced_pod(namespace, pod)
    pod = wait_pod_phase(core_v1, namespace, "nonroot", ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", core_v1.read_namespaced_pod_log("nonroot", namespace)
    import json

    got = json.loads((d / "result.json").read_text())
    # 65532 (distroless "nonroot") is unknown to the host: the agent provides a passwd entry
    assert got == {"uid": 65532, "gid": 65532, "user": "nonroot65532", "root_rw": False}
    assert not Path("/var/should-not-write").exists()


def test_unknown_image_fails_with_err_image_pull(core_v1: client.CoreV1Api, namespace: str) -> None:
    pod = python_pod("noimage", "print(1)")
    pod.spec.containers[0].image = "example.com/no-such-image:1"
    pod.spec.containers[0].command = None
    core_v1.create_namespaced_pod(namespace, pod)

    def failed() -> Any:
        p = core_v1.read_namespaced_pod("noimage", namespace)
        return p if p.status.phase == "Failed" else None

    p = wait_for(failed, 60)
    assert p.status.reason == "ErrImagePull"


def test_deployment_pods_run_and_restart(
    k8s_api: client.ApiClient, core_v1: client.CoreV1Api, namespace: str
) -> None:
    apps = client.AppsV1Api(k8s_api)
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment.from_dict(
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 2,
                            "containers": [
                                {
                                    "name": "web",
                                    "image": "python:3.11",
                                    # exits after 1 s: restartPolicy Always restarts it
                                    "command": ["python", "-c", "import time; time.sleep(1)"],
                                }
                            ],
                        },
                    },
                },
            }
        ),
    )

    def restarted_pod() -> Any:
        pods = core_v1.list_namespaced_pod(namespace, label_selector="app=web").items
        for p in pods:
            for cs in p.status.container_statuses or []:
                if cs.restart_count >= 1:
                    return p
        return None

    pod = wait_for(restarted_pod, 90, what="a restarted deployment pod")
    assert pod.status.phase == "Running"
    apps.delete_namespaced_deployment("web", namespace, propagation_policy="Foreground")
    wait_for(
        lambda: not core_v1.list_namespaced_pod(namespace, label_selector="app=web").items,
        60,
        what="deployment pods gone",
    )


def test_pvc_is_provisioned_and_persists(core_v1: client.CoreV1Api, namespace: str) -> None:
    core_v1.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim.from_dict(
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ),
    )
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mounts = [{"name": "data", "mountPath": "/data/qdrant"}]
    core_v1.create_namespaced_pod(
        namespace,
        python_pod(
            "writer", "open('/data/qdrant/f', 'w').write('kept')", volumes=volumes, mounts=mounts
        ),
    )
    pod = wait_pod_phase(core_v1, namespace, "writer", ("Succeeded", "Failed"))
    assert pod.status.phase == "Succeeded", core_v1.read_namespaced_pod_log("writer", namespace)
    core_v1.create_namespaced_pod(
        namespace,
        python_pod(
            "reader", "print(open('/data/qdrant/f').read())", volumes=volumes, mounts=mounts
        ),
    )
    pod = wait_pod_phase(core_v1, namespace, "reader", ("Succeeded", "Failed"))
    assert "kept" in core_v1.read_namespaced_pod_log("reader", namespace)
    pvc = core_v1.read_namespaced_persistent_volume_claim("data", namespace)
    assert pvc.status.phase == "Bound"


def test_kubectl_works_with_version(devcluster_kubeconfig: Path) -> None:
    kubectl = str(paths().bin / "kubectl")
    out = subprocess.run(
        [kubectl, "version", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KUBECONFIG": str(devcluster_kubeconfig)},
    ).stdout
    import json

    v = json.loads(out)
    assert v["serverVersion"]["gitVersion"].startswith("v1.")
    assert v["serverVersion"]["minor"].rstrip("+").isdigit()
    nodes = subprocess.run(
        [kubectl, "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KUBECONFIG": str(devcluster_kubeconfig)},
    ).stdout
    assert "node/devnode" in nodes


def test_readiness_and_liveness_probes(core_v1: client.CoreV1Api, namespace: str) -> None:
    """httpGet readiness on a named port gates Ready; a failing liveness probe restarts."""
    port = free_port()
    server = f"""
        import http.server, time
        time.sleep(2)  # deliberate: the pod must be Running but not yet Ready for a while
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler
                               ).serve_forever()
    """
    pod = python_pod("probed", server)
    c = pod.spec.containers[0]
    c.ports = [client.V1ContainerPort(name="http", container_port=port)]
    c.readiness_probe = client.V1Probe.from_dict(
        {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    )
    core_v1.create_namespaced_pod(namespace, pod)

    def ready() -> bool:
        p = core_v1.read_namespaced_pod("probed", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])

    wait_pod_phase(core_v1, namespace, "probed", ("Running",))
    assert not ready()  # the server is not listening yet
    wait_for(ready, 30, what="readiness probe success")

    # liveness: nothing listens on the probed port -> killed and restarted
    dead_port = free_port()
    pod = python_pod("unhealthy", "import time; time.sleep(600)", grace=1)
    pod.spec.restart_policy = "Always"
    pod.spec.containers[0].liveness_probe = client.V1Probe.from_dict(
        {"tcpSocket": {"port": dead_port}, "periodSeconds": 1, "failureThreshold": 2}
    )
    core_v1.create_namespaced_pod(namespace, pod)

    def restarted() -> bool:
        p = core_v1.read_namespaced_pod("unhealthy", namespace)
        return any(cs.restart_count >= 1 for cs in p.status.container_statuses or [])

    wait_for(restarted, 60, what="restart after failed liveness probe")
