"""One pod on the node: a thread that prepares its volumes, runs its init containers in order
and then its containers, restarts them per restartPolicy with back-off, runs their probes,
honours deletion (SIGTERM, grace period, SIGKILL, then removes the pod object) and reports
the pod's status through the status subresource."""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devcluster import podspec
from devcluster.kube import ApiError
from devcluster.nodeagent.api import NodeApi
from devcluster.nodeagent.containers import ContainerRun, Launcher, PodDirs
from devcluster.nodeagent.logs import container_log, pod_log_dir
from devcluster.nodeagent.probes import check_probes
from devcluster.nodeagent.volumes import PodVolumes
from devcluster.podspec import JSON, StartError, now_iso

log = logging.getLogger("nodeagent")

TERMINAL = ("Succeeded", "Failed")
POLL_SECONDS = 0.2
CONFIG_RETRY_SECONDS = 2.0
IMAGE_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class NodeServices:
    """What a pod worker uses of its node: the API, the container launcher, and where pod
    state (``$EIO_CACHE/run/pods``) and logs (``$EIO_CACHE/run/logs``) go."""

    api: NodeApi
    launcher: Launcher
    pods_dir: Path
    logs_root: Path


def _restored_runs(pod: JSON, restart_policy: str) -> list[ContainerRun]:
    """The containers of a pod this agent ran before it restarted: a running one is gone
    (ContainerStatusUnknown), and restarts unless restartPolicy is Never."""
    spec = pod.get("spec") or {}
    old = {s["name"]: s for s in (pod.get("status") or {}).get("containerStatuses") or []}
    runs = [ContainerRun(c) for c in spec.get("containers") or []]
    for r in runs:
        running = old.get(r.name, {}).get("state", {}).get("running")
        if not running:
            continue
        r.restart_count = int(old[r.name].get("restartCount", 0)) + 1
        r.last_state = {"terminated": {
            "exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the node agent restarted",
            "startedAt": running.get("startedAt"), "finishedAt": now_iso()}}  # fmt: skip
        if restart_policy == "Never":
            r.state = r.last_state
            r.last_state = {}
            r.restart_count -= 1
    return runs


class PodWorker(threading.Thread):
    def __init__(self, node: NodeServices, pod: JSON, on_done: Callable[[str], None]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.api = node.api
        self.launcher = node.launcher
        self.on_done = on_done
        self.pod = pod
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dirs = PodDirs(node.pods_dir / self.uid,
                            pod_log_dir(node.logs_root, self.ns, self.name, self.uid))  # fmt: skip
        self.volumes = PodVolumes(self.api, self.dirs.state)
        spec = pod.get("spec") or {}
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.init_runs = [ContainerRun(c, init=True) for c in spec.get("initContainers") or []]
        self.runs = _restored_runs(pod, self.restart_policy)
        self.wake = threading.Event()
        self.deleting_since: float | None = None
        self.gone = False  # the pod object is deleted
        self.start_time = (pod.get("status") or {}).get("startTime") or now_iso()
        self.pod_reason: str | None = None
        self.pod_message: str | None = None
        self.initialized = not self.init_runs
        self.last_status_key: str | None = None

    # -- called by the pod sync and the log server ------------------------------------------
    @property
    def log_dir(self) -> Path:
        return self.dirs.logs

    def update(self, pod: JSON) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and self.deleting_since is None:
            self.deleting_since = time.monotonic()
        self.wake.set()

    def removed(self) -> None:
        self.gone = True
        if self.deleting_since is None:
            self.deleting_since = time.monotonic()
        self.wake.set()

    def shutdown(self) -> None:
        self.removed()

    def container_running(self, name: str) -> bool:
        return any(r.name == name and r.running for r in self._all_runs())

    # -- main -------------------------------------------------------------------------------
    def _all_runs(self) -> list[ContainerRun]:
        return [*self.init_runs, *self.runs]

    def _event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.api.event(self.pod, reason, message, type_)

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            log.exception("pod worker %s/%s crashed", self.ns, self.name)
            self._kill_all(signal.SIGKILL)
            self.pod_reason, self.pod_message = "NodeAgentError", f"node agent error: {e}"
            with contextlib.suppress(Exception):
                self._report(final=True)
        finally:
            self._cleanup_processes()

    def _run(self) -> None:
        if self.pod["metadata"].get("deletionTimestamp"):
            self.deleting_since = time.monotonic()
        if all("terminated" in r.state for r in self.runs) and self.runs:
            self._report()  # agent restart with restartPolicy Never: report and stay
        self._report()
        prepared = False
        while self.deleting_since is None:
            if not prepared:
                prepared = self._prepare_volumes()
                if not prepared:
                    if self.pod_reason == "ErrImagePull":
                        return
                    self._pause(CONFIG_RETRY_SECONDS)
                    continue
            if self._step():
                self._report()
            if self._finished():
                self._report()
                self._cleanup_processes()
                # stay until the pod is deleted, then remove it
                while self.deleting_since is None:
                    self._pause(5)
                break
            self._pause(POLL_SECONDS)
        self._terminate()

    def _pause(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def _prepare_volumes(self) -> bool:
        try:
            self.volumes.prepare(self.pod)
            return True
        except (StartError, ApiError, OSError) as e:
            if not isinstance(e, StartError):
                log.warning("%s/%s: preparing volumes: %s", self.ns, self.name, e)
                e = StartError("ContainerCreating", f"preparing volumes: {e}")
            self._set_waiting(e)
            return False

    def _set_waiting(self, e: StartError) -> None:
        changed = False
        for r in self._all_runs():
            if "waiting" in r.state:
                new = {"waiting": {"reason": e.reason, "message": e.message}}
                changed = changed or new != r.state
                r.state = new
        if e.reason == "ErrImagePull":
            self.pod_reason, self.pod_message = e.reason, e.message
        if changed:
            self._event("Failed", e.message, "Warning")
        self._report()

    def _finished(self) -> bool:
        if not self.initialized:
            return self.pod_reason is not None
        for r in self.runs:
            if "terminated" not in r.state:
                return False
            code = r.state["terminated"].get("exitCode", 1)
            if self.restart_policy == "Always" or (
                self.restart_policy == "OnFailure" and code != 0
            ):
                return False
        return True

    def _step(self) -> bool:
        """Advance container state machines; True if a status change should be reported."""
        changed = False
        if not self.initialized:
            for r in self.init_runs:
                if "terminated" in r.state and r.state["terminated"].get("exitCode") == 0:
                    continue
                changed |= self._drive(r, init=True)
                break
            else:
                self.initialized = True
                changed = True
            if not self.initialized:
                return changed
        for r in self.runs:
            changed |= self._drive(r)
        return changed

    def _drive(self, r: ContainerRun, init: bool = False) -> bool:
        if r.proc is not None:
            rc = r.proc.poll()
            if rc is None:
                if r.kill_over_limit():
                    log.warning("%s/%s container %s over its memory limit: killing", self.ns,
                                self.name, r.name)  # fmt: skip
                return check_probes(r, self._grace(), self._event)
            self._on_exit(r, rc)
            return True
        if "terminated" in r.state:
            return self._maybe_restart(r, init)
        if "waiting" in r.state and time.monotonic() >= r.next_start:
            return self._start(r)
        return False

    def _maybe_restart(self, r: ContainerRun, init: bool) -> bool:
        code = r.state["terminated"].get("exitCode", 1)
        restart = (self.restart_policy == "Always" and not init) or (
            self.restart_policy in ("OnFailure", "Always") and code != 0
        )
        if init and code != 0 and self.restart_policy == "Never":
            self.pod_reason = "InitContainerFailed"
            return False
        if not restart:
            return False
        r.last_state = r.state
        r.restart_count += 1
        wait = r.next_start - time.monotonic()
        if wait > 0:
            r.state = {"waiting": {"reason": "CrashLoopBackOff" if code else "Completed",
                                   "message": f"back-off {wait:.0f}s restarting container "
                                   f"{r.name} of pod {self.ns}/{self.name}"}}  # fmt: skip
            return True
        return self._start(r)

    def _grace(self) -> float:
        return float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    # -- starting, exits --------------------------------------------------------------------
    def _start(self, r: ContainerRun) -> bool:
        try:
            argv = self.launcher.start(r, self.pod, self.volumes, self.dirs)
        except StartError as e:
            self._start_refused(r, e)
            return True
        except (ApiError, OSError) as e:
            log.warning("%s/%s: starting %s: %s", self.ns, self.name, r.name, e)
            r.state = {"waiting": {"reason": "RunContainerError", "message": str(e)}}
            r.next_start = time.monotonic() + CONFIG_RETRY_SECONDS
            if r.cgroup is not None:
                r.cgroup.remove()
                r.cgroup = None
            return True
        limit = podspec.memory_limit_bytes(r.spec)
        pid = r.proc.pid if r.proc else 0
        log.info("started %s/%s container %s pid %d: %s (memory limit %s)", self.ns, self.name,
                 r.name, pid, shlex.join(argv)[:200], limit)  # fmt: skip
        self._event("Started", f"Started container {r.name}")
        return True

    def _start_refused(self, r: ContainerRun, e: StartError) -> None:
        """An image without an entry point fails the pod unless restartPolicy is Always (then
        it waits, like ImagePullBackOff); a config error waits and is retried."""
        r.state = {"waiting": {"reason": e.reason, "message": e.message}}
        self._event("Failed", e.message, "Warning")
        if e.reason != "ErrImagePull":
            r.next_start = time.monotonic() + CONFIG_RETRY_SECONDS
            return
        self.pod_reason, self.pod_message = e.reason, e.message
        if self.restart_policy != "Always":
            r.state = podspec.terminated_state(
                podspec.EXIT_START_ERROR, "ErrImagePull", None, message=e.message
            )
            r.state["terminated"]["startedAt"] = None
        r.next_start = time.monotonic() + IMAGE_RETRY_SECONDS

    def _on_exit(self, r: ContainerRun, rc: int) -> None:
        reason = r.exited(rc, container_log(self.dirs.logs, r.name, r.restart_count))
        code = r.state["terminated"]["exitCode"]
        log.info("%s/%s container %s exited: %s code %d", self.ns, self.name, r.name, reason,
                 code)  # fmt: skip
        if reason == "OOMKilled":
            self._event("OOMKilled",
                        f"Container {r.name} was OOM-killed (memory limit "
                        f"{podspec.memory_limit_bytes(r.spec)} bytes)", "Warning")  # fmt: skip

    # -- termination ------------------------------------------------------------------------
    def _kill_all(self, sig: int) -> None:
        for r in self._all_runs():
            r.signal(sig)

    def _termination_grace(self) -> float:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self._grace()
        return min(float(grace), 2.0) if self.gone else float(grace)

    def _terminate(self) -> None:
        """SIGTERM, wait the grace period, SIGKILL; report; delete the pod object."""
        grace = self._termination_grace()
        running = [r for r in self._all_runs() if r.running]
        if running:
            self._event("Killing", f"Stopping container(s) {', '.join(r.name for r in running)}")
            self._kill_all(signal.SIGTERM)
            deadline = (self.deleting_since or time.monotonic()) + grace
            while time.monotonic() < deadline and any(r.running for r in running):
                time.sleep(0.1)  # paces the poll of the containers' exits
            self._kill_all(signal.SIGKILL)
            for r in running:
                if r.proc is not None:
                    r.proc.wait()
                    self._on_exit(r, r.proc.returncode if r.proc else -9)
        for r in self._all_runs():
            if "terminated" not in r.state:
                r.state = podspec.terminated_state(137 if r.started_at else 0,
                                                   "ContainerStatusUnknown" if r.started_at
                                                   else "Completed", r.started_at)  # fmt: skip
        if not self.gone:
            self._report(final=True)
            self.api.delete_pod(self.pod)
        self._cleanup_processes()
        shutil.rmtree(self.dirs.state, ignore_errors=True)
        self.on_done(self.uid)

    def _cleanup_processes(self) -> None:
        for r in self._all_runs():
            if r.running:
                self._kill_all(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    if r.proc is not None:
                        r.proc.wait(5)
            r.release_cgroup()

    # -- status -----------------------------------------------------------------------------
    def _phase(self, statuses: list[JSON], final: bool) -> str:
        if (
            self.pod_reason in ("ErrImagePull",) and self.restart_policy != "Always"
        ) or self.pod_reason == "InitContainerFailed":
            phase = "Failed"
        elif not self.initialized:
            phase = "Pending"
        else:
            phase = podspec.pod_phase(self.restart_policy, statuses, len(self.runs))
        if final and phase not in TERMINAL:
            failed = any(s["state"].get("terminated", {}).get("exitCode", 0) != 0
                         for s in statuses)  # fmt: skip
            phase = "Failed" if failed else "Succeeded"
        return phase

    def _status(self, final: bool) -> JSON:
        statuses = [r.status() for r in self.runs]
        phase = self._phase(statuses, final)
        old = self.pod.get("status") or {}
        status: JSON = {
            "phase": phase,
            "conditions": podspec.merge_conditions(
                old.get("conditions"),
                podspec.pod_conditions(phase, statuses, self.initialized),
            ),
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
            "qosClass": old.get("qosClass"),
            "reason": self.pod_reason if phase == "Failed" else None,
            "message": self.pod_message if phase == "Failed" else None,
        }
        if self.init_runs:
            status["initContainerStatuses"] = [r.status() for r in self.init_runs]
        return status

    def _report(self, final: bool = False) -> None:
        status = self._status(final)
        comparable = json.dumps({**status, "conditions": [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status["conditions"]]}, sort_keys=True)  # fmt: skip
        if comparable == self.last_status_key and not final:
            return
        try:
            updated = self.api.patch_pod_status(self.ns, self.name, status)
            self.last_status_key = comparable
            if updated and updated["metadata"]["uid"] == self.uid:
                self.pod = {**self.pod, "status": updated.get("status")}
        except ApiError as e:
            if e.status == 404:
                self.gone = True
            else:
                log.warning("status of %s/%s: %s", self.ns, self.name, e)
