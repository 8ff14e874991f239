"""One container's process: the launch (image -> local entry point, env, mounts, user, a
memory cgroup per start, then :mod:`devcluster.launcher` in a new session), its signals, the
RSS fallback when no memory cgroup is writable, and how its end is reported (``OOMKilled``
when the cgroup counted an OOM kill, or the RSS poll killed it)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from devcluster import podspec
from devcluster.cgroups import CgroupManager, MemoryCgroup
from devcluster.config import venv_bin
from devcluster.nodeagent import orphans
from devcluster.nodeagent.api import NodeApi
from devcluster.nodeagent.logs import container_log, last_line, log_tail
from devcluster.nodeagent.probes import PROBE_KINDS, ProbeState
from devcluster.podspec import JSON, StartError, now_iso

LAUNCHER = str(Path(__file__).parent.parent / "launcher.py")
MAX_BACKOFF_SECONDS = 30.0


def killpg(pid: int, sig: int) -> None:
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_rss(pgid: int) -> int:
    """Sum of RSS of the processes in process group ``pgid`` (the container's session)."""
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 (pgrp) of /proc/pid/stat
                total += int(fields[21]) * page  # field 24 (rss, pages)
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass
class ContainerRun:
    """A container of a pod across its restarts: the current process and cgroup, if any, and
    what its status says."""

    spec: JSON
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    cgroup: MemoryCgroup | None = None
    started_at: str | None = None
    restart_count: int = 0
    state: JSON = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: JSON = field(default_factory=dict)
    rss_killed: bool = False
    next_start: float = 0.0
    container_id: str | None = None
    started_mono: float = 0.0
    ready: bool = True
    probes: dict[str, ProbeState] = field(default_factory=dict)
    kill_deadline: float | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> JSON:
        return podspec.container_status(
            self.spec,
            self.state,
            self.restart_count,
            self.last_state,
            self.container_id,
            ready=self.ready,
        )

    def started(self, proc: subprocess.Popen[bytes], cg: MemoryCgroup | None, pod: str) -> None:
        self.proc = proc
        self.cgroup = cg
        self.rss_killed = False
        self.started_at = now_iso()
        self.container_id = f"devcluster://{pod}/{self.name}/{self.restart_count}/{proc.pid}"
        self.state = {"running": {"startedAt": self.started_at}}
        self.started_mono = time.monotonic()
        self.probes = {k: ProbeState() for k in PROBE_KINDS if self.spec.get(k)}
        self.ready = not self.spec.get("readinessProbe")
        self.kill_deadline = None

    def signal(self, sig: int) -> None:
        """``sig`` to the main process; SIGKILL also to everything in its cgroup (or process
        group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            if self.cgroup is not None:
                self.cgroup.kill_all()
            killpg(self.proc.pid, sig)

    def kill_over_limit(self) -> bool:
        """Without a memory cgroup: SIGKILL the process group above ``limits.memory``."""
        if self.cgroup is not None or self.proc is None:
            return False
        limit = podspec.memory_limit_bytes(self.spec)
        if not limit or group_rss(self.proc.pid) <= limit:
            return False
        self.rss_killed = True
        killpg(self.proc.pid, signal.SIGKILL)
        return True

    def release_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup.remove()
            self.cgroup = None

    def exited(self, rc: int, log_file: Path) -> str:
        """Record the end of the process (return code ``rc``) as ``terminated``; kill what is
        left of it; schedule a restart with back-off. Returns the reason."""
        oom = self.rss_killed
        if self.cgroup is not None:
            oom = oom or self.cgroup.oom_kills() > 0
        else:
            killpg(self.proc.pid if self.proc else 0, signal.SIGKILL)
        self.release_cgroup()
        code, reason, sig = podspec.exit_info(rc, oom)
        message = None
        if code == podspec.EXIT_START_ERROR and not oom:
            message = last_line(log_file)
            if message and message.startswith("devcluster: container start failed"):
                reason = "StartError"
        elif code != 0 and self.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            # As the kubelet does: no termination-log file here, so the tail of the log.
            message = log_tail(log_file)
        self.state = podspec.terminated_state(
            code, reason, self.started_at, message=message, signal=sig,
            container_id=self.container_id,
        )  # fmt: skip
        self.proc = None
        backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** min(self.restart_count, 5))
        self.next_start = time.monotonic() + (backoff if code != 0 else 1.0)
        return reason


def runtime_paths() -> list[str]:
    """What a container's entry points run from: the Python install, the venv and the project
    (an editable install). A volume mounted over one of their parents (an emptyDir at /tmp
    over a checkout in /tmp) must not hide them: the launcher binds them back on top."""
    project = Path(__file__).resolve().parent.parent.parent
    return sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(project)})


def hide_for_nonroot() -> list[JSON]:
    """Directories a non-root user cannot traverse on the way to the Python install
    (typically /root for a pyenv or venv under /root): hidden behind a tmpfs in the
    container's mount namespace, with the needed paths bound back in."""
    needed = set(runtime_paths())
    hide: dict[str, set[str]] = {}
    for n in needed:
        p = Path(n)
        for anc in reversed(p.parents):
            if str(anc) == "/":
                continue
            try:
                mode = anc.stat().st_mode
            except OSError:
                break
            if not mode & 0o001:
                rel = p.relative_to(anc).parts
                hide.setdefault(str(anc), set()).add(str(anc / rel[0]) if rel else str(anc))
                break
    return [{"dir": d, "keep": sorted(k)} for d, k in hide.items()]


def identity_files(pod_dir: Path, uid: int, gid: Any) -> list[JSON]:
    """Images define their users in /etc/passwd (distroless ``nonroot`` is 65532); the
    host may not. For a uid the host does not know, bind a copy of /etc/passwd and
    /etc/group with an entry for it (getpass.getuser(), used by kopf, needs one)."""
    try:
        pwd.getpwuid(uid)
        return []
    except KeyError:
        pass
    g = int(gid) if gid is not None else uid
    out = []
    pod_dir.mkdir(parents=True, exist_ok=True)
    for name, line in (
        ("passwd", f"nonroot{uid}:x:{uid}:{g}:devcluster user:/:/sbin/nologin\n"),
        ("group", f"nonroot{g}:x:{g}:\n"),
    ):
        host = Path("/etc") / name
        text = host.read_text() if host.exists() else ""
        if name == "group" and any(
            ln.split(":")[2:3] == [str(g)] for ln in text.splitlines() if ln.count(":") >= 2
        ):
            continue
        f = pod_dir / f"etc-{name}"
        f.write_text(text + ("" if text.endswith("\n") or not text else "\n") + line)
        f.chmod(0o644)
        out.append({"source": str(f), "target": str(host), "readOnly": True, "isFile": True})
    return out


def security_context(pod: JSON, c: JSON) -> JSON:
    """The container's security context over the pod's."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    return {**pod_sc, **(c.get("securityContext") or {})}


def _groups(pod: JSON) -> list[int]:
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    return groups


class Mounts(Protocol):
    def mounts_for(self, c: JSON) -> list[JSON]: ...


@dataclass(frozen=True)
class PodDirs:
    """Where a pod's launch specs and identity files go (``state``), and its logs."""

    state: Path
    logs: Path


@dataclass
class Launcher:
    """Starts container processes for the pods of this node."""

    api: NodeApi
    images: podspec.ImageMap
    cgroups: CgroupManager | None
    api_host: str
    api_port: int

    def start(self, r: ContainerRun, pod: JSON, volumes: Mounts, dirs: PodDirs) -> list[str]:
        """Start ``r``'s next process; returns its argv. ``StartError`` when it cannot start
        (reason ``ErrImagePull`` for an image without a local entry point, else a config
        error); ``ApiError``/``OSError`` when starting failed (``r.cgroup`` may be set)."""
        c, meta = r.spec, pod["metadata"]
        image = str(c.get("image", ""))
        entry = self.images.resolve(image)
        if entry is None:
            raise StartError(
                "ErrImagePull",
                f'Failed to pull image "{image}": the devcluster node agent has no local '
                f"entry point for image name {podspec.image_basename(image)!r}",
            )
        sc = security_context(pod, c)
        base = self._base_env(meta["name"], entry, sc)
        env = podspec.resolve_env(pod, c, self.api.configmap_data, self.api.secret_data, base)
        argv = podspec.build_argv(c, entry, env, [venv_bin()])
        mounts = volumes.mounts_for(c)
        cg = None
        if self.cgroups is not None:
            name = f"{meta['uid']}-{r.name}-{r.restart_count}"
            cg = self.cgroups.create(name, podspec.memory_limit_bytes(c))
            r.cgroup = cg
        launch = self._launch_spec(pod, c, argv, env, mounts, sc, cg, dirs.state)
        spec_file = dirs.state / f"launch-{r.name}.json"
        spec_file.write_text(json.dumps(launch))
        spec_file.chmod(0o600)
        log_file = container_log(dirs.logs, r.name, r.restart_count)
        proc = self._spawn(spec_file, log_file)
        r.started(proc, cg, meta["uid"])
        orphans.record(dirs.state, proc.pid)  # what a restarted agent must not leave running
        return argv

    def _base_env(self, pod_name: str, entry: podspec.ImageEntry, sc: JSON) -> dict[str, str]:
        base = {
            "PATH": f"{venv_bin()}:{podspec.DEFAULT_PATH}",
            "HOSTNAME": pod_name,
            "HOME": "/root",
            **dict(entry.env),
        }
        if sc.get("runAsUser") not in (None, 0):
            base["HOME"] = "/"
        # in-cluster config: the API server itself, not the Service IP (no kube-proxy here)
        base.update(podspec.kubernetes_service_env(self.api_host, self.api_port))
        return base

    def _launch_spec(
        self, pod: JSON, c: JSON, argv: list[str], env: dict[str, str], mounts: list[JSON],
        sc: JSON, cg: MemoryCgroup | None, pod_dir: Path,
    ) -> JSON:  # fmt: skip
        """What :mod:`devcluster.launcher` reads: argv, env, mounts, user, cgroup."""
        uid = sc.get("runAsUser")
        hide: list[JSON] = []
        if uid not in (None, 0):
            hide = hide_for_nonroot()
            mounts = [*mounts, *identity_files(pod_dir, int(uid), sc.get("runAsGroup"))]
        pod_dir.mkdir(parents=True, exist_ok=True)
        return {
            "argv": argv,
            "env": env,
            "cwd": c.get("workingDir") or "/",
            "mounts": mounts,
            "hide": hide,
            "reexpose": runtime_paths(),
            "readOnlyRoot": bool(sc.get("readOnlyRootFilesystem")),
            "uid": uid,
            "gid": sc.get("runAsGroup"),
            "groups": _groups(pod),
            "noNewPrivs": sc.get("allowPrivilegeEscalation") is False,
            "cgroupProcs": str(cg.procs_file) if cg else None,
            # the container sees its own cgroup at /sys/fs/cgroup/memory (cgroup namespace
            # plus a bind mount), as in a real container
            "cgroupDir": str(cg.path) if cg else None,
            "cgroupMount": str(cg.mount_target) if cg else None,
        }

    def _spawn(self, spec_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, str(spec_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={},
            )
