"""Pure functions of the node agent: quantities, image mapping, argv and env resolution,
container/pod status. No I/O against the API server here, so they are unit-testable.

Pods, containers and statuses are plain dicts in the API's JSON shape (camelCase keys).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eio_common.quantity import parse_quantity

JSON = dict[str, Any]

EXIT_START_ERROR = 128  # what container runtimes report when the process could not start
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------
# quantities
# ------------------------------------------------------------------------------------------
# parse_quantity: the project's one quantity module (kubernetes.utils.parse_quantity inside)
def memory_limit_bytes(container: JSON) -> int | None:
    """The container's memory limit in bytes (limits.memory), or None when unlimited."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        return None
    return int(parse_quantity(limit).to_integral_value(rounding="ROUND_CEILING"))


# ------------------------------------------------------------------------------------------
# images -> local entry points
# ------------------------------------------------------------------------------------------
def image_basename(image: str) -> str:
    """Repository basename of an image reference: ``reg:5000/org/name:tag@sha256:..`` -> name."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


@dataclass(frozen=True)
class ImageEntry:
    """What an image would run: ENTRYPOINT, CMD and image-level environment."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


_PY_ENV = (("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1"), ("LANG", "C.UTF-8"))


def builtin_images(bin_dir: Path) -> dict[str, ImageEntry]:
    """Images the agent knows without configuration (see docs/decisions.md)."""
    py = str(bin_dir / "python")
    return {
        # the project's images: ENTRYPOINT = the console script of the same name
        "embedding-importer": ImageEntry((str(bin_dir / "embedding-importer"),), ("run",), _PY_ENV),
        "embedding-import-operator": ImageEntry(
            (str(bin_dir / "embedding-import-operator"),), (), _PY_ENV
        ),
        # generic images used by tests and examples
        "python": ImageEntry((), (py,), _PY_ENV),
        "busybox": ImageEntry((), ("sh",), ()),
        "alpine": ImageEntry((), ("sh",), ()),
        "debian": ImageEntry((), ("bash",), ()),
        "ubuntu": ImageEntry((), ("bash",), ()),
    }


@dataclass
class ImageMap:
    """Maps image references to local entry points.

    Order: exact basename in the configured map, then the built-in map, then a console
    script named like the basename in ``bin_dir`` (the venv). Anything else is unknown
    (the pod fails with ``ErrImagePull``).
    """

    bin_dir: Path = field(default_factory=lambda: Path(sys.prefix) / "bin")
    extra: dict[str, ImageEntry] = field(default_factory=dict)

    def resolve(self, image: str) -> ImageEntry | None:
        name = image_basename(image)
        if name in self.extra:
            return self.extra[name]
        builtin = builtin_images(self.bin_dir)
        if name in builtin:
            return builtin[name]
        script = self.bin_dir / name
        if name and script.is_file() and os.access(script, os.X_OK):
            return ImageEntry((str(script),), (), _PY_ENV)
        return None

    @classmethod
    def from_file(cls, path: Path | None, bin_dir: Path | None = None) -> ImageMap:
        """Load extra mappings from JSON: ``{"name": "cmd" | ["cmd", ...] |
        {"entrypoint": [...], "cmd": [...], "env": {...}}}``."""
        m = cls(bin_dir=bin_dir or Path(sys.prefix) / "bin")
        if path is None:
            return m
        raw = json.loads(path.read_text())
        for name, spec in raw.items():
            m.extra[name] = parse_image_entry(spec)
        return m


def parse_image_entry(spec: Any) -> ImageEntry:
    if isinstance(spec, str):
        return ImageEntry((spec,))
    if isinstance(spec, list):
        return ImageEntry(tuple(str(s) for s in spec))
    if isinstance(spec, dict):
        env = spec.get("env") or {}
        return ImageEntry(
            tuple(str(s) for s in spec.get("entrypoint") or ()),
            tuple(str(s) for s in spec.get("cmd") or ()),
            tuple((str(k), str(v)) for k, v in env.items()),
        )
    raise ValueError(f"bad image map entry {spec!r}")


# ------------------------------------------------------------------------------------------
# $(VAR) expansion, argv
# ------------------------------------------------------------------------------------------
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, unknown ones kept as
    they are, ``$$`` escapes a ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(sub, value)


class StartError(Exception):
    """The container cannot be started; ``reason`` is the Kubernetes waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def build_argv(
    container: JSON, entry: ImageEntry, env: Mapping[str, str], bin_dirs: list[Path]
) -> list[str]:
    """argv as Kubernetes composes it: ``command`` replaces the ENTRYPOINT, ``args`` the CMD;
    ``$(VAR)`` expanded; the first word resolved in ``bin_dirs`` then the container's PATH."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = [*command, *(args or [])]
    elif args is not None and len(args) > 0:
        argv = [*entry.entrypoint, *args]
    else:
        argv = [*entry.entrypoint, *entry.cmd]
    argv = [expand(str(a), env) for a in argv]
    if not argv:
        raise StartError("CreateContainerError", "no command specified")
    argv[0] = resolve_executable(argv[0], bin_dirs, env.get("PATH", DEFAULT_PATH))
    return argv


def resolve_executable(word: str, bin_dirs: list[Path], path: str) -> str:
    if "/" in word:
        return word
    for d in bin_dirs:
        cand = d / word
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which(word, path=path)
    if found is None:
        raise StartError(
            "RunContainerError",
            f'exec: "{word}": executable file not found in $PATH',
        )
    return found


# ------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------
class ConfigError(StartError):
    """A referenced ConfigMap/Secret/key is missing (kubelet: CreateContainerConfigError)."""

    def __init__(self, message: str) -> None:
        super().__init__("CreateContainerConfigError", message)


# lookup(namespace, name) -> data dict (Secret values already base64-decoded) or None
Lookup = Callable[[str, str], dict[str, str] | None]


def decode_secret_data(secret: JSON) -> dict[str, str]:
    out = {k: base64.b64decode(v).decode(errors="replace") for k, v in
           (secret.get("data") or {}).items()}  # fmt: skip
    out.update(secret.get("stringData") or {})
    return out


def field_ref(pod: JSON, path: str) -> str:
    """Downward API fieldRef values."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
        "status.hostIPs": status.get("hostIP") or "127.0.0.1",
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.podIPs": status.get("podIP") or "127.0.0.1",
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return str(simple[path] or "")


def resource_field_ref(container: JSON, ref: JSON) -> str:
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    res = container.get("resources") or {}
    value = (res.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (res.get("limits") or {}).get(name)
    if value is None:  # unlimited: node allocatable
        value = str(os.cpu_count() or 1) if name == "cpu" else str(_node_memory())
    divisor = parse_quantity(ref.get("divisor") or "1")
    q = parse_quantity(value) / divisor
    return str(int(q.to_integral_value(rounding="ROUND_CEILING")))


def _node_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kubernetes_service_env(host: str, port: int) -> dict[str, str]:
    """The variables a kubelet injects for the ``kubernetes`` Service (in-cluster config)."""
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def resolve_env(
    pod: JSON,
    container: JSON,
    configmap: Lookup,
    secret: Lookup,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment: ``base`` (PATH, HOSTNAME, service vars, image env), then
    ``envFrom`` in order, then ``env`` in order with ``$(VAR)`` expansion against what is
    defined so far. Missing non-optional references raise :class:`ConfigError`."""
    ns = str((pod.get("metadata") or {}).get("namespace") or "default")
    env: dict[str, str] = dict(base or {})
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        if "configMapRef" in src:
            ref, kind, lookup = src["configMapRef"], "configmap", configmap
        elif "secretRef" in src:
            ref, kind, lookup = src["secretRef"], "secret", secret
        else:
            continue
        data = lookup(ns, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind} "{ref["name"]}" not found')
        for k, v in data.items():
            env[prefix + k] = v
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        vf = var.get("valueFrom") or {}
        if not vf:
            env[name] = ""
            continue
        value = _value_from(pod, container, vf, ns, configmap, secret)
        if value is not None:
            env[name] = value
    return env


def _value_from(
    pod: JSON, container: JSON, vf: JSON, ns: str, configmap: Lookup, secret: Lookup
) -> str | None:
    for key, kind, lookup in (
        ("configMapKeyRef", "configmap", configmap),
        ("secretKeyRef", "secret", secret),
    ):
        if key in vf:
            ref = vf[key]
            data = lookup(ns, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    return None
                if data is None:
                    raise ConfigError(f'{kind} "{ref["name"]}" not found')
                raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
            return data[ref["key"]]
    if "fieldRef" in vf:
        return field_ref(pod, str(vf["fieldRef"].get("fieldPath", "")))
    if "resourceFieldRef" in vf:
        return resource_field_ref(container, vf["resourceFieldRef"])
    raise ConfigError(f"unsupported valueFrom {sorted(vf)}")


# ------------------------------------------------------------------------------------------
# statuses
# ------------------------------------------------------------------------------------------
def exit_info(returncode: int, oom_killed: bool) -> tuple[int, str, int | None]:
    """(exitCode, reason, signal) from a Popen returncode (negative = killed by signal)."""
    if returncode < 0:
        sig = -returncode
        code = 128 + sig
    else:
        sig = None
        code = returncode
    if oom_killed:
        return code, "OOMKilled", sig
    return code, ("Completed" if code == 0 else "Error"), sig


def terminated_state(
    exit_code: int,
    reason: str,
    started_at: str | None,
    finished_at: str | None = None,
    message: str | None = None,
    signal: int | None = None,
    container_id: str | None = None,
) -> JSON:
    t: JSON = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": started_at,
        "finishedAt": finished_at or now_iso(),
    }
    if message:
        t["message"] = message
    if signal:
        t["signal"] = signal
    if container_id:
        t["containerID"] = container_id
    return {"terminated": t}


def container_status(
    container: JSON,
    state: JSON,
    restart_count: int = 0,
    last_state: JSON | None = None,
    container_id: str | None = None,
    ready: bool | None = None,
) -> JSON:
    running = "running" in state
    cs: JSON = {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "devcluster://" + image_basename(str(container.get("image", ""))),
        "ready": running if ready is None else (running and ready),
        "started": running,
        "restartCount": restart_count,
        "state": state,
        "lastState": last_state or {},
    }
    if container_id:
        cs["containerID"] = container_id
    return cs


def pod_phase(restart_policy: str, statuses: list[JSON], n_containers: int) -> str:
    """Phase from the containers' states (like the kubelet's getPhase, simplified)."""
    if len(statuses) < n_containers:
        return "Pending"
    running = sum(1 for s in statuses if "running" in s["state"])
    waiting = [s for s in statuses if "waiting" in s["state"]]
    terminated = [s["state"]["terminated"] for s in statuses if "terminated" in s["state"]]
    # a container waiting to be restarted (lastState terminated) means the pod ran: Running
    restarting = any("terminated" in (s.get("lastState") or {}) for s in waiting)
    if waiting and not running and not terminated and not restarting:
        return "Pending"
    if running or waiting:
        return "Running"
    # everything terminated
    if restart_policy == "Always":
        return "Running"  # will be restarted
    failed = any(t.get("exitCode", 1) != 0 for t in terminated)
    if failed:
        return "Running" if restart_policy == "OnFailure" else "Failed"
    return "Succeeded"


def condition(type_: str, ok: bool, reason: str | None = None) -> JSON:
    c: JSON = {
        "type": type_,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now_iso(),
    }
    if reason:
        c["reason"] = reason
    return c


def pod_conditions(phase: str, statuses: list[JSON], initialized: bool = True) -> list[JSON]:
    ready = phase == "Running" and bool(statuses) and all(s.get("ready") for s in statuses)
    not_ready_reason = None
    if not ready:
        not_ready_reason = "PodCompleted" if phase in ("Succeeded", "Failed") else (
            "ContainersNotReady")  # fmt: skip
    started = any("running" in s["state"] or "terminated" in s["state"] for s in statuses)
    return [
        condition("PodReadyToStartContainers", started or phase == "Running"),
        condition("Initialized", initialized, None if initialized else "ContainersNotInitialized"),
        condition("Ready", ready, not_ready_reason),
        condition("ContainersReady", ready, not_ready_reason),
        condition("PodScheduled", True),
    ]


def merge_conditions(old: list[JSON] | None, new: list[JSON]) -> list[JSON]:
    """Keep lastTransitionTime of conditions whose status did not change."""
    prev = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        p = prev.get(c["type"])
        if p is not None and p.get("status") == c["status"] and p.get("lastTransitionTime"):
            c = {**c, "lastTransitionTime": p["lastTransitionTime"]}
        out.append(c)
    return out


# ------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int


def probe_timing(probe: JSON) -> ProbeTiming:
    """Probe timing with the Kubernetes defaults (0 s delay, 10 s period, 1 s timeout, 1/3)."""
    return ProbeTiming(
        float(probe.get("initialDelaySeconds") or 0),
        float(probe.get("periodSeconds") or 10),
        float(probe.get("timeoutSeconds") or 1),
        int(probe.get("successThreshold") or 1),
        int(probe.get("failureThreshold") or 3),
    )


def probe_port(port: int | str, container: JSON) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} is not a named port of container {container.get('name')}")
