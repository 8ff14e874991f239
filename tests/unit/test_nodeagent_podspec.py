"""Unit tests of the node agent's pure functions (no cluster needed)."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

from devcluster import podspec
from devcluster.cgroups import parse_oom_kills
from devcluster.podspec import ConfigError, ImageEntry, ImageMap, StartError

POD = {
    "metadata": {
        "name": "p1",
        "namespace": "ns1",
        "uid": "u-1",
        "labels": {"app": "x", "tier": "db"},
        "annotations": {"note": "hi"},
    },
    "spec": {"nodeName": "devnode", "serviceAccountName": "sa1", "containers": []},
    "status": {"podIP": "127.0.0.1"},
}


# -- quantities (parsing: tests/unit/test_quantity.py) ---------------------------------------
def test_memory_limit_bytes() -> None:
    assert podspec.memory_limit_bytes({"resources": {"limits": {"memory": "64Mi"}}}) == 64 << 20
    assert podspec.memory_limit_bytes({"resources": {"requests": {"memory": "64Mi"}}}) is None
    assert podspec.memory_limit_bytes({}) is None


# -- images -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "name"),
    [
        ("embedding-importer:0.1.0", "embedding-importer"),
        ("ghcr.io/org/embedding-importer:0.1.0", "embedding-importer"),
        ("localhost:5000/embedding-import-operator", "embedding-import-operator"),
        ("python:3.11-slim@sha256:abcd", "python"),
        ("busybox", "busybox"),
    ],
)
def test_image_basename(image: str, name: str) -> None:
    assert podspec.image_basename(image) == name


def test_image_map_builtin_and_unknown(tmp_path: Path) -> None:
    m = ImageMap(bin_dir=tmp_path)
    imp = m.resolve("registry.example/embedding-importer:0.1.0")
    assert imp is not None
    assert imp.entrypoint == (str(tmp_path / "embedding-importer"),)
    assert imp.cmd == ("run",)
    py = m.resolve("python:3.12")
    assert py is not None
    assert py.cmd == (str(tmp_path / "python"),)
    assert m.resolve("nginx:1.27") is None


def test_image_map_console_script_and_file(tmp_path: Path) -> None:
    script = tmp_path / "my-tool"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert ImageMap(bin_dir=tmp_path).resolve("my-tool:1") == ImageEntry(
        (str(script),), (), podspec._PY_ENV
    )
    cfg = tmp_path / "map.json"
    cfg.write_text('{"nginx": {"entrypoint": ["/bin/echo"], "cmd": ["hi"], "env": {"A": "1"}}}')
    m = ImageMap.from_file(cfg, tmp_path)
    assert m.resolve("docker.io/library/nginx:latest") == ImageEntry(
        ("/bin/echo",), ("hi",), (("A", "1"),)
    )


# -- argv -------------------------------------------------------------------------------------
def test_expand() -> None:
    env = {"A": "1", "B": "two"}
    assert podspec.expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def test_build_argv_kubernetes_semantics(tmp_path: Path) -> None:
    entry = ImageEntry(("/bin/entry",), ("run", "--x"))
    env = {"N": "5", "PATH": "/usr/bin:/bin"}
    assert podspec.build_argv({}, entry, env, []) == ["/bin/entry", "run", "--x"]
    assert podspec.build_argv({"args": ["a", "$(N)"]}, entry, env, []) == ["/bin/entry", "a", "5"]
    got = podspec.build_argv({"command": ["sh", "-c"], "args": ["echo"]}, entry, env, [])
    assert got[0].endswith("/sh")
    assert got[1:] == ["-c", "echo"]
    # the first word is looked up in the venv bin first
    (tmp_path / "python").symlink_to(sys.executable)
    got = podspec.build_argv({"command": ["python", "-V"]}, entry, env, [tmp_path])
    assert got == [str(tmp_path / "python"), "-V"]
    with pytest.raises(StartError) as e:
        podspec.build_argv({"command": ["no-such-binary-xyz"]}, entry, env, [tmp_path])
    assert "executable file not found" in e.value.message


# -- env --------------------------------------------------------------------------------------
def _cm(ns: str, name: str) -> dict[str, str] | None:
    return {"color": "blue", "size": "L"} if (ns, name) == ("ns1", "cfg") else None


def _secret(ns: str, name: str) -> dict[str, str] | None:
    return {"password": "s3cret"} if (ns, name) == ("ns1", "creds") else None


def test_resolve_env_all_sources() -> None:
    container = {
        "name": "c",
        "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CM_"}],
        "env": [
            {"name": "PLAIN", "value": "v"},
            {"name": "REF", "value": "$(PLAIN)-$(CM_color)"},
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k", "optional": True}},
            },
        ],
    }
    env = podspec.resolve_env(POD, container, _cm, _secret, {"BASE": "b"})
    assert env["BASE"] == "b"
    assert env["CM_color"] == "blue"
    assert env["CM_size"] == "L"
    assert env["REF"] == "v-blue"
    assert env["COLOR"] == "blue"
    assert env["PW"] == "s3cret"
    assert (env["POD"], env["NS"], env["IP"], env["APP"]) == ("p1", "ns1", "127.0.0.1", "x")
    assert env["MEM"] == "128"
    assert env["CPU"] == "1"  # rounded up, as the kubelet does
    assert "OPT" not in env


def test_resolve_env_missing_reference_is_config_error() -> None:
    c = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}
    with pytest.raises(ConfigError) as e:
        podspec.resolve_env(POD, c, _cm, _secret)
    assert e.value.reason == "CreateContainerConfigError"
    c = {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "zz"}}}]}
    with pytest.raises(ConfigError, match="couldn't find key zz"):
        podspec.resolve_env(POD, c, _cm, _secret)


def test_decode_secret_data() -> None:
    s = {"data": {"a": base64.b64encode(b"xyz").decode()}, "stringData": {"b": "plain"}}
    assert podspec.decode_secret_data(s) == {"a": "xyz", "b": "plain"}


def test_kubernetes_service_env() -> None:
    env = podspec.kubernetes_service_env("127.0.0.1", 16443)
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "16443"


# -- status -----------------------------------------------------------------------------------
def test_exit_info() -> None:
    assert podspec.exit_info(0, False) == (0, "Completed", None)
    assert podspec.exit_info(3, False) == (3, "Error", None)
    assert podspec.exit_info(-9, True) == (137, "OOMKilled", 9)
    assert podspec.exit_info(-9, False) == (137, "Error", 9)
    assert podspec.exit_info(-15, False) == (143, "Error", 15)
    assert podspec.exit_info(75, False) == (75, "Error", None)


def _st(state: dict[str, object]) -> dict[str, object]:
    return podspec.container_status({"name": "c", "image": "python:3"}, state)


def test_pod_phase() -> None:
    running = _st({"running": {"startedAt": "t"}})
    ok = _st(podspec.terminated_state(0, "Completed", "t"))
    bad = _st(podspec.terminated_state(137, "OOMKilled", "t"))
    waiting = _st({"waiting": {"reason": "ContainerCreating"}})
    assert podspec.pod_phase("Never", [], 1) == "Pending"
    assert podspec.pod_phase("Never", [waiting], 1) == "Pending"
    assert podspec.pod_phase("Never", [running], 1) == "Running"
    assert podspec.pod_phase("Never", [ok], 1) == "Succeeded"
    assert podspec.pod_phase("Never", [bad], 1) == "Failed"
    assert podspec.pod_phase("Never", [ok, bad], 2) == "Failed"
    assert podspec.pod_phase("OnFailure", [bad], 1) == "Running"
    assert podspec.pod_phase("OnFailure", [ok], 1) == "Succeeded"
    assert podspec.pod_phase("Always", [ok], 1) == "Running"
    backoff = podspec.container_status(
        {"name": "c"},
        {"waiting": {"reason": "CrashLoopBackOff"}},
        restart_count=1,
        last_state=podspec.terminated_state(1, "Error", "t"),
    )
    assert podspec.pod_phase("Always", [backoff], 1) == "Running"


def test_container_status_shape() -> None:
    s = _st(podspec.terminated_state(137, "OOMKilled", "2026-01-01T00:00:00Z", signal=9))
    assert s["name"] == "c"
    assert s["ready"] is False
    assert s["restartCount"] == 0
    t = s["state"]["terminated"]  # type: ignore[index]
    assert t["exitCode"] == 137
    assert t["reason"] == "OOMKilled"
    assert t["finishedAt"]
    r = _st({"running": {"startedAt": "t"}})
    assert r["ready"] is True
    assert r["started"] is True


def test_pod_conditions_and_merge() -> None:
    running = [_st({"running": {"startedAt": "t"}})]
    conds = {c["type"]: c for c in podspec.pod_conditions("Running", running)}
    assert conds["Ready"]["status"] == "True"
    assert conds["PodScheduled"]["status"] == "True"
    done = {c["type"]: c for c in podspec.pod_conditions("Succeeded", running)}
    assert done["Ready"]["status"] == "False"
    assert done["Ready"]["reason"] == "PodCompleted"
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "old"}]
    merged = podspec.merge_conditions(old, podspec.pod_conditions("Running", running))
    assert next(c for c in merged if c["type"] == "Ready")["lastTransitionTime"] == "old"


# -- cgroups (/proc/self/cgroup parsing: tests/unit/test_importer_memory.py) -----------------
def test_parse_oom_kills() -> None:
    assert parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n") == 2
    assert parse_oom_kills("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n") == 1
    assert parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n") == 0


def test_node_memory_positive() -> None:
    if os.path.exists("/proc/meminfo"):
        assert podspec._node_memory() > 0


# -- probes -----------------------------------------------------------------------------------
def test_probe_port_and_timing() -> None:
    c = {"name": "op", "ports": [{"name": "healthz", "containerPort": 8081}]}
    assert podspec.probe_port("healthz", c) == 8081
    assert podspec.probe_port(9090, c) == 9090
    assert podspec.probe_port("9090", c) == 9090
    with pytest.raises(ValueError, match="not a named port"):
        podspec.probe_port("metrics", c)
    t = podspec.probe_timing({"httpGet": {"port": 1}})
    assert (t.initial_delay, t.period, t.timeout) == (0, 10, 1)
    assert (t.success_threshold, t.failure_threshold) == (1, 3)
    t = podspec.probe_timing({"periodSeconds": 2, "failureThreshold": 5})
    assert (t.period, t.failure_threshold) == (2, 5)


def test_container_status_ready_follows_readiness() -> None:
    running = {"running": {"startedAt": "t"}}
    assert podspec.container_status({"name": "c"}, running, ready=False)["ready"] is False
    assert podspec.container_status({"name": "c"}, running, ready=True)["ready"] is True


def test_log_tail_is_the_kubelets_fallback_message(tmp_path: Path) -> None:
    from devcluster.nodeagent.logs import log_tail

    log = tmp_path / "0.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)) + "config error: fix X\n")
    tail = log_tail(log)
    assert tail is not None
    assert tail.splitlines()[-1] == "config error: fix X"
    assert len(tail.encode()) <= 2048
    assert len(tail.splitlines()) <= 80
    assert log_tail(tmp_path / "missing.log") is None
    (tmp_path / "empty.log").write_text("")
    assert log_tail(tmp_path / "empty.log") is None
