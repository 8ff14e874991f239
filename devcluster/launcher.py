"""Container launcher: run as ``python -I -S launcher.py SPEC.json`` by the node agent.

Standard library only (it runs with ``-S``, before any site-packages are set up), and it
ends in ``execve``, so the pid the agent waits on becomes the container's process:

1. join the container's memory cgroup (before allocating anything of note);
2. if there are mounts: a private mount namespace (``unshare(CLONE_NEWNS)``, propagation
   private), bind mounts of the volumes at their mountPath (``remount,bind,ro`` for
   readOnly), optionally hide directories a non-root user cannot traverse (``/root``) behind
   a tmpfs while keeping the paths the process needs (the Python install), and a read-only
   bind remount of ``/`` for ``readOnlyRootFilesystem``;
3. ``no_new_privs`` when ``allowPrivilegeEscalation: false``; drop to runAsGroup/runAsUser
   (with fsGroup / supplementalGroups);
4. chdir to workingDir and exec.

Errors before exec are printed to the container log and exit with code 128 (StartError).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source else None,
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} -> {target}",
    )


def _ensure_target(target: str, is_file: bool) -> None:
    if os.path.lexists(target):
        return
    if is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "a"):
            pass
    else:
        os.makedirs(target, exist_ok=True)


def setup_mounts(spec: dict[str, Any]) -> None:
    mounts = list(spec.get("mounts") or [])
    hide = spec.get("hide") or []  # [{"dir": "/root", "keep": ["/root/.pyenv"]}]
    read_only_root = bool(spec.get("readOnlyRoot"))
    flags = CLONE_NEWNS
    if spec.get("cgroupDir") and spec.get("cgroupMount"):
        # A cgroup namespace rooted at the container's cgroup (we joined it already), and the
        # cgroup's directory at the usual place: /proc/self/cgroup says "/" and
        # /sys/fs/cgroup/memory/memory.limit_in_bytes is the container's limit.
        flags |= CLONE_NEWCGROUP
        mounts.append({"source": spec["cgroupDir"], "target": spec["cgroupMount"]})
    if not mounts and not hide and not read_only_root:
        return
    # Runtime paths (Python, venv, project) that a volume's target would cover: bound back on
    # top of the volume, so the entry point still runs from where the image map says.
    targets = [m["target"] for m in mounts]
    reexpose = [
        p
        for p in spec.get("reexpose") or []
        if any(p == t or p.startswith(t.rstrip("/") + "/") for t in targets)
    ]
    _check(_libc.unshare(flags), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Open every source first: hiding a directory must not make a volume source unreachable.
    src_fds = [os.open(m["source"], os.O_PATH) for m in mounts]
    keep_fds = [[(k, os.open(k, os.O_PATH)) for k in h.get("keep", [])] for h in hide]
    reexpose_fds = [(p, os.open(p, os.O_PATH)) for p in reexpose]
    for h, keeps in zip(hide, keep_fds, strict=True):
        mount("tmpfs", h["dir"], "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
        for path, fd in keeps:
            _ensure_target(path, not os.path.isdir(f"/proc/self/fd/{fd}"))
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    # Create mount points before / may become read-only.
    for m in mounts:
        _ensure_target(m["target"], bool(m.get("isFile")))
    for m, fd in zip(mounts, src_fds, strict=True):
        mount(f"/proc/self/fd/{fd}", m["target"], None, MS_BIND | MS_REC)
        if m.get("readOnly"):
            mount(None, m["target"], None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for path, fd in reexpose_fds:
        _ensure_target(path, False)  # a directory inside the volume, as a mount point
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    # Last: a bind mount inherits the read-only flag of the mount its source lives on, so
    # the volumes must be bound before / turns read-only.
    if read_only_root:
        mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for fd in [*src_fds, *(fd for _, fd in reexpose_fds)]:
        os.close(fd)
    for keeps in keep_fds:
        for _, fd in keeps:
            os.close(fd)


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        if spec.get("cgroupProcs"):
            with open(spec["cgroupProcs"], "w") as f:
                f.write(str(os.getpid()))
        setup_mounts(spec)
        if spec.get("noNewPrivs"):
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        gid = spec.get("gid")
        uid = spec.get("uid")
        groups = [int(g) for g in spec.get("groups") or []]
        if uid is not None or gid is not None or groups:
            if gid is None and uid is not None:
                gid = uid if uid != 0 else 0
            os.setgroups(groups)
            if gid is not None:
                os.setgid(int(gid))
            if uid is not None:
                os.setuid(int(uid))
        os.umask(0o022)
        os.chdir(spec.get("cwd") or "/")
        argv = spec["argv"]
        os.execve(argv[0], argv, spec["env"])  # noqa: S606 - this is the container
    except OSError as e:
        print(f"devcluster: container start failed: {e}", file=sys.stderr, flush=True)
        os._exit(128)


if __name__ == "__main__":
    main()
