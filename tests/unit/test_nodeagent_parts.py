"""The node agent's parts without a cluster: a container's exit as the kubelet reports it,
the RSS fallback's OOM kill, a pod's volumes and mounts, the restart of a pod the agent ran
before it restarted. Real processes and a real filesystem; the API is never called (the
NodeApi points at a port nothing listens on)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.kube import Kube
from devcluster.nodeagent.api import NodeApi
from devcluster.nodeagent.containers import ContainerRun
from devcluster.nodeagent.volumes import PodVolumes
from devcluster.nodeagent.worker import _restored_runs
from devcluster.podspec import JSON, StartError
from devcluster.testing import wait_for


def _spawn(code: str, log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def run_of() -> Iterator[list[ContainerRun]]:
    runs: list[ContainerRun] = []
    yield runs
    for r in runs:
        r.signal(signal.SIGKILL)
        if r.proc is not None:
            r.proc.wait(30)


def test_exit_code_and_log_tail_become_the_terminated_state(
    tmp_path: Path, run_of: list[ContainerRun]
) -> None:
    log_file = tmp_path / "c" / "0.log"
    r = ContainerRun({"name": "c", "terminationMessagePolicy": "FallbackToLogsOnError"})
    run_of.append(r)
    r.started(_spawn("print('config error: fix X', flush=True); raise SystemExit(3)",
                     log_file), None, "uid-1")  # fmt: skip
    assert r.running
    assert r.state == {"running": {"startedAt": r.started_at}}
    assert r.proc is not None
    rc = r.proc.wait(30)
    before = time.monotonic()
    assert r.exited(rc, log_file) == "Error"
    t = r.state["terminated"]
    assert (t["exitCode"], t["reason"], t["message"]) == (3, "Error", "config error: fix X")
    assert t["containerID"].startswith("devcluster://uid-1/c/0/")
    assert r.proc is None
    assert not r.running
    assert r.next_start >= before + 1.0  # back-off before the first restart


def test_rss_fallback_kills_over_the_limit_as_oomkilled(
    tmp_path: Path, run_of: list[ContainerRun]
) -> None:
    log_file = tmp_path / "c" / "0.log"
    r = ContainerRun({"name": "c", "resources": {"limits": {"memory": "40Mi"}}})
    run_of.append(r)
    hog = "import time\nb = bytearray(120 * 2**20)\nprint('held', flush=True)\ntime.sleep(600)"
    r.started(_spawn(hog, log_file), None, "uid-2")
    wait_for(r.kill_over_limit, timeout=60, what="the RSS poll to kill the process group",
             interval=0.2)  # fmt: skip
    assert r.proc is not None
    rc = r.proc.wait(30)
    assert rc == -signal.SIGKILL
    assert r.exited(rc, log_file) == "OOMKilled"
    assert r.state["terminated"]["exitCode"] == 137


def test_a_small_process_is_not_killed(tmp_path: Path, run_of: list[ContainerRun]) -> None:
    r = ContainerRun({"name": "c", "resources": {"limits": {"memory": "1Gi"}}})
    run_of.append(r)
    r.started(_spawn("print('up', flush=True); import time; time.sleep(600)",
                     tmp_path / "0.log"), None, "uid-3")  # fmt: skip
    wait_for(lambda: (tmp_path / "0.log").read_text().strip() == "up", 30, "the process")
    assert r.kill_over_limit() is False
    assert r.running


@pytest.fixture
def api(tmp_path: Path) -> NodeApi:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: x, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
    )
    return NodeApi(Kube(str(kubeconfig)), "devnode")


def test_volumes_become_host_directories_and_mounts(tmp_path: Path, api: NodeApi) -> None:
    host = tmp_path / "host" / "sources"
    pod: JSON = {
        "metadata": {"name": "p1", "namespace": "ns1", "uid": "u-1"},
        "spec": {
            "containers": [{"name": "c"}],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "src", "hostPath": {"path": str(host), "type": "DirectoryOrCreate"}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            ],
        },
    }  # fmt: skip
    vols = PodVolumes(api, tmp_path / "pod")
    vols.prepare(pod)
    assert host.is_dir()
    scratch = tmp_path / "pod" / "volumes" / "scratch"
    assert scratch.stat().st_mode & 0o777 == 0o777
    assert (tmp_path / "pod" / "volumes" / "info" / "name").read_text() == "p1"
    mounts = vols.mounts_for({"volumeMounts": [
        {"name": "scratch", "mountPath": "/data/sources/tmp", "subPath": "t"},
        {"name": "src", "mountPath": "/data/sources", "readOnly": True},
        {"name": "info", "mountPath": "/etc/podinfo"},
    ]})  # fmt: skip
    by_target = {m["target"]: m for m in mounts}
    assert [m["target"] for m in mounts][-1] == "/data/sources/tmp"  # after its parent
    assert by_target["/data/sources/tmp"]["source"] == str(scratch / "t")
    assert (scratch / "t").is_dir()
    assert by_target["/data/sources"]["readOnly"] is True
    assert by_target["/etc/podinfo"]["readOnly"] is True  # downwardAPI: always read-only
    assert by_target["/data/sources/tmp"]["readOnly"] is False
    with pytest.raises(StartError) as e:
        vols.mounts_for({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]})
    assert e.value.reason == "CreateContainerConfigError"


def test_unsupported_or_missing_volumes_wait_with_a_config_error(
    tmp_path: Path, api: NodeApi
) -> None:
    vols = PodVolumes(api, tmp_path / "pod")
    for volume in (
        {"name": "v", "iscsi": {}},
        {"name": "v", "hostPath": {"path": str(tmp_path / "absent"), "type": "Directory"}},
    ):
        pod: JSON = {"metadata": {"namespace": "ns1"}, "spec": {"volumes": [volume]}}
        with pytest.raises(StartError) as e:
            vols.prepare(pod)
        assert e.value.reason == "CreateContainerConfigError"
    assert vols.paths == {}


def test_a_pod_running_before_an_agent_restart() -> None:
    pod: JSON = {
        "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": {"containerStatuses": [
            {"name": "a", "restartCount": 2, "state": {"running": {"startedAt": "t0"}}},
            {"name": "b", "restartCount": 0, "state": {"waiting": {"reason": "x"}}},
        ]},
    }  # fmt: skip
    a, b = _restored_runs(pod, "Always")
    assert a.restart_count == 3
    assert a.last_state["terminated"]["reason"] == "ContainerStatusUnknown"
    assert a.last_state["terminated"]["startedAt"] == "t0"
    assert "waiting" in a.state  # started again
    assert (b.restart_count, b.last_state) == (0, {})
    a, _ = _restored_runs(pod, "Never")
    assert (a.restart_count, a.last_state) == (2, {})
    assert a.state["terminated"]["exitCode"] == 137  # reported Failed, not rerun
