"""Start, check and stop the local control plane: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager and the node agent, all on 127.0.0.1.

Every component is a detached process (own session) whose stdout/stderr go to
``$EIO_CACHE/run/logs/<name>.log`` and whose pid is in ``$EIO_CACHE/run/pids/<name>.pid``.
``up`` is idempotent: a component whose process is alive and healthy is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from devcluster import build as build_mod
from devcluster import node as node_mod
from devcluster.config import (
    NODE_NAME,
    PROVISIONER,
    SA_ISSUER,
    SERVICE_CIDR,
    STORAGE_CLASS,
    Paths,
    Ports,
    agent_component,
    agent_port,
    node_names,
    paths,
    ports,
)
from devcluster.pki import ensure_pki, kubeconfig_text

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager")
COMPONENTS = (*CONTROL_PLANE, "nodeagent")
KUBELET_COMPONENTS = (*CONTROL_PLANE, "containerd", "kubelet", "kube-proxy")


def kubelet_mode_requested() -> bool:
    """``EIO_DEVCLUSTER_NODE=kubelet``: the node is a real kubelet (containerd + runc)."""
    return os.environ.get("EIO_DEVCLUSTER_NODE", "").strip().lower() == "kubelet"


def node_mode(p: Paths) -> str:
    """The node this cluster was brought up with: ``agent`` or ``kubelet``."""
    try:
        return (p.run / "node-mode").read_text().strip() or "agent"
    except OSError:
        return "agent"


def components(p: Paths) -> tuple[str, ...]:
    if node_mode(p) == "kubelet":
        return KUBELET_COMPONENTS
    return (*CONTROL_PLANE, *(agent_component(n) for n in cluster_nodes(p)))


NODES_ENV = "EIO_DEVCLUSTER_NODES"


def requested_nodes() -> int | None:
    """``EIO_DEVCLUSTER_NODES``: how many node agents (None: unset)."""
    value = os.environ.get(NODES_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise SystemExit(f"devcluster: {NODES_ENV}={value!r} is not a node count (1, 2, ...)")
    return int(value)


def cluster_nodes(p: Paths) -> list[str]:
    """The node agents this cluster was brought up with (``run/node-names``; default one)."""
    try:
        names = (p.run / "node-names").read_text().split()
    except OSError:
        names = []
    return names or node_names(1)


def multi_node(p: Paths) -> bool:
    return len(cluster_nodes(p)) > 1


def log(msg: str) -> None:
    print(f"[devcluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------
def _pidfile(p: Paths, name: str) -> Path:
    return p.pids / f"{name}.pid"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _is_component(p: Paths, name: str, argv: list[str]) -> bool:
    """Whether ``argv`` is component ``name`` of THIS cluster. The binaries are shared between
    clusters (EIO_DEVCLUSTER_RUN / EIO_DEVCLUSTER_PORT_BASE), so the binary alone is not enough:
    every component's command line names this cluster's run directory or etcd data dir."""
    if name == "nodeagent" or name.startswith("nodeagent-"):
        node = NODE_NAME if name == "nodeagent" else name.removeprefix("nodeagent-")
        return (
            "devcluster.nodeagent" in argv
            and f"--node-name={node}" in argv
            and any(str(p.run) + "/" in a for a in argv)
        )
    if not argv or argv[0] != str(p.bin / name):
        return False
    marks = (str(p.run) + "/", str(p.etcd_data))
    return any(m in a for a in argv[1:] for m in marks)


def running_pid(p: Paths, name: str) -> int | None:
    """Pid of component ``name``: the recorded process if it is alive and still that program,
    else a live process of ours running that component (adopted: the pid file is rewritten)."""
    try:
        pid = int(_pidfile(p, name).read_text().split()[0])
        if _is_component(p, name, _cmdline(pid)) and not _is_zombie(pid):
            return pid
    except (OSError, ValueError, IndexError):
        pass
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _is_component(p, name, _cmdline(int(d.name))):
            if _is_zombie(int(d.name)):
                continue
            p.pids.mkdir(parents=True, exist_ok=True)
            _pidfile(p, name).write_text(f"{d.name}\n")
            return int(d.name)
    return None


@contextlib.contextmanager
def _locked(p: Paths) -> Iterator[None]:
    """Serialise `up`/`down` across processes (several test sessions may call `up` at once)."""
    p.run.mkdir(parents=True, exist_ok=True)
    with (p.run / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _spawn(p: Paths, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    p.logs.mkdir(parents=True, exist_ok=True)
    p.pids.mkdir(parents=True, exist_ok=True)
    logfile = p.logs / f"{name}.log"
    with logfile.open("ab") as out, open(os.devnull, "rb") as devnull:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=devnull,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    _pidfile(p, name).write_text(f"{proc.pid}\n")
    log(f"started {name} (pid {proc.pid}, log {logfile})")
    return proc.pid


def _stop(p: Paths, name: str, timeout: float = 15.0) -> None:
    pid = running_pid(p, name)
    if pid is None:
        _pidfile(p, name).unlink(missing_ok=True)
        return
    log(f"stopping {name} (pid {pid})")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(p, name) == pid:
        time.sleep(0.1)
    if running_pid(p, name) == pid:
        log(f"{name} did not stop in {timeout:.0f}s: SIGKILL")
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _pidfile(p, name).unlink(missing_ok=True)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait(what: str, check: Callable[[], bool], timeout: float, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if logfile.exists():
        tail = "".join(logfile.read_text(errors="replace").splitlines(keepends=True)[-25:])
    raise SystemExit(f"devcluster: {what} not ready after {timeout:.0f}s; log {logfile}:\n{tail}")


# ------------------------------------------------------------------------------------------
# health checks
# ------------------------------------------------------------------------------------------
def _tls_context(p: Paths, user: str = "admin") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(p.pki / "ca.crt"))
    ctx.load_cert_chain(str(p.pki / f"{user}.crt"), str(p.pki / f"{user}.key"))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as r:  # noqa: S310
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (OSError, ssl.SSLError):
        return 0, ""


def etcd_healthy(p: Paths, pt: Ports) -> bool:
    code, body = _get(f"http://127.0.0.1:{pt.etcd_client}/health")
    return code == 200 and '"true"' in body


def apiserver_ready(p: Paths, pt: Ports) -> bool:
    if not (p.pki / "admin.crt").exists():
        return False
    code, _ = _get(f"https://127.0.0.1:{pt.apiserver}/readyz", _tls_context(p))
    return code == 200


def _api_json(p: Paths, pt: Ports, path: str) -> tuple[int, object]:
    code, body = _get(f"https://127.0.0.1:{pt.apiserver}{path}", _tls_context(p))
    try:
        return code, json.loads(body) if body else None
    except json.JSONDecodeError:
        return code, None


def default_sa_exists(p: Paths, pt: Ports) -> bool:
    code, _ = _api_json(p, pt, "/api/v1/namespaces/default/serviceaccounts/default")
    return code == 200


def node_ready(p: Paths, pt: Ports, name: str = NODE_NAME) -> bool:
    code, node = _api_json(p, pt, f"/api/v1/nodes/{name}")
    if code != 200 or not isinstance(node, dict):
        return False
    for cond in node.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _secure_healthz(port: int) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    code, _ = _get(f"https://127.0.0.1:{port}/healthz", ctx)
    return code == 200


# ------------------------------------------------------------------------------------------
# component command lines
# ------------------------------------------------------------------------------------------
def etcd_argv(p: Paths, pt: Ports) -> list[str]:
    return [
        str(p.bin / "etcd"),
        "--name=devcluster",
        f"--data-dir={p.etcd_data}",
        f"--listen-client-urls=http://127.0.0.1:{pt.etcd_client}",
        f"--advertise-client-urls=http://127.0.0.1:{pt.etcd_client}",
        f"--listen-peer-urls=http://127.0.0.1:{pt.etcd_peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{pt.etcd_peer}",
        f"--initial-cluster=devcluster=http://127.0.0.1:{pt.etcd_peer}",
        "--unsafe-no-fsync=true",  # tmpfs data dir, throw-away cluster
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def apiserver_argv(p: Paths, pt: Ports) -> list[str]:
    k = p.pki
    return [
        str(p.bin / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{pt.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={pt.apiserver}",
        f"--tls-cert-file={k / 'apiserver.crt'}",
        f"--tls-private-key-file={k / 'apiserver.key'}",
        f"--client-ca-file={k / 'ca.crt'}",
        f"--service-account-key-file={k / 'sa.pub'}",
        f"--service-account-signing-key-file={k / 'sa.key'}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--kubelet-client-certificate={k / 'kubelet-client.crt'}",
        f"--kubelet-client-key={k / 'kubelet-client.key'}",
        f"--kubelet-certificate-authority={k / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        # A Node created through the API would get a not-ready taint from this plugin; the
        # node agent also clears taints, but without the plugin there is no race at start.
        "--disable-admission-plugins=TaintNodesByCondition",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--profiling=false",
        "--event-ttl=2h",
        "--v=1",
    ]


def _component_kubeconfig(p: Paths, pt: Ports, user: str) -> Path:
    path = p.run / f"{user}.kubeconfig"
    path.write_text(kubeconfig_text(f"https://127.0.0.1:{pt.apiserver}", p.pki, user))
    path.chmod(0o600)
    return path


def scheduler_argv(p: Paths, pt: Ports) -> list[str]:
    kc = _component_kubeconfig(p, pt, "scheduler")
    return [
        str(p.bin / "kube-scheduler"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={pt.scheduler}",
        "--leader-elect=false",
        "--v=1",
    ]


def controller_manager_argv(p: Paths, pt: Ports) -> list[str]:
    kc = _component_kubeconfig(p, pt, "controller-manager")
    k = p.pki
    return [
        str(p.bin / "kube-controller-manager"),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={pt.controller_manager}",
        "--leader-elect=false",
        f"--service-account-private-key-file={k / 'sa.key'}",
        f"--root-ca-file={k / 'ca.crt'}",
        f"--cluster-signing-cert-file={k / 'ca.crt'}",
        f"--cluster-signing-key-file={k / 'ca.key'}",
        "--use-service-account-credentials=false",
        *lifecycle_flags(multi_node(p)),
        "--concurrent-gc-syncs=5",
        "--v=1",
    ]


def lifecycle_flags(multi: bool) -> list[str]:
    """One node: no node-lifecycle controller (it would mark the node Unknown and evict its
    pods whenever heartbeats lag on a loaded machine; the node agent owns the Node). Several
    nodes: on, with short but realistic periods, so a lost node turns Unknown 20 s after its
    last Lease renewal and gets the ``node.kubernetes.io/unreachable`` taints."""
    if not multi:
        return ["--controllers=*,-node-lifecycle-controller"]
    return [
        "--controllers=*",
        "--node-monitor-period=2s",
        "--node-monitor-grace-period=20s",
        "--node-startup-grace-period=30s",
    ]


def nodeagent_argv(p: Paths, pt: Ports, node: str = NODE_NAME) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "devcluster.nodeagent",
        f"--kubeconfig={_component_kubeconfig(p, pt, 'node')}",
        f"--node-name={node}",
        f"--port={agent_port(pt, node)}",
    ]
    if multi_node(p):
        # the Lease well inside the controller's 20 s grace, also on a loaded machine
        argv += [f"--state-dir={p.node_pods(node)}", "--heartbeat-seconds=4"]
    return argv


# ------------------------------------------------------------------------------------------
# up / down / status
# ------------------------------------------------------------------------------------------
def _ensure(
    p: Paths,
    name: str,
    argv_fn: Callable[[Paths, Ports], list[str]],
    ready: Callable[[], bool],
    port: int | None,
    timeout: float,
    env: dict[str, str] | None = None,
) -> None:
    pt = ports()
    if running_pid(p, name) is not None:
        if ready():
            log(f"{name} already running")
            return
        # alive but not healthy yet: give it the usual time before deciding
        _wait(name, ready, timeout, p.logs / f"{name}.log")
        return
    if port is not None and not _port_free(port):
        raise SystemExit(
            f"devcluster: port {port} for {name} is taken by another process; set "
            "EIO_DEVCLUSTER_PORT_BASE to move all dev-cluster ports"
        )
    pid = _spawn(p, name, argv_fn(p, pt), env)

    def ready_or_dead() -> bool:
        if ready():
            return True
        if _is_zombie(pid):  # exited (reaped or not): no point in waiting
            _wait(f"{name} (exited)", lambda: False, 0, p.logs / f"{name}.log")
        return False

    _wait(name, ready_or_dead, timeout, p.logs / f"{name}.log")


def agent_code_hash() -> str:
    """Hash of the devcluster package source, the node agent's subpackage included (what the
    running node agent was started from)."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _bootstrap_objects(p: Paths) -> None:
    """Cluster-wide objects the dev cluster provides: a default StorageClass."""
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
    subprocess.run(
        [str(p.bin / "kubectl"), "--kubeconfig", str(p.kubeconfig), "apply", "-f", "-"],
        input=json.dumps(sc).encode(),
        check=True,
        capture_output=True,
    )


def up(
    build_if_missing: bool = True,
    agent: bool = True,
    kubelet: bool | None = None,
    nodes: int | None = None,
) -> None:
    """Start whatever is not running (idempotent; serialised by a lock file).

    ``nodes`` (default ``EIO_DEVCLUSTER_NODES``, else what the cluster has, else 1): how many
    node agents; more than one turns the node-lifecycle controller on.

    ``kubelet`` (default: ``EIO_DEVCLUSTER_NODE=kubelet``) runs a real kubelet with containerd
    instead of the node agent (devcluster/node.py)."""
    if kubelet is None:
        kubelet = kubelet_mode_requested()
    if not build_mod.binaries_ready() or (kubelet and not build_mod.node_binaries_ready()):
        if not build_if_missing:
            raise SystemExit("devcluster: binaries missing; run `devcluster build` first")
        build_mod.build()
        if kubelet:
            build_mod.build_node()
    with _locked(paths()):
        p = paths()
        if kubelet and node_mode(p) == "agent" and running_pid(p, "nodeagent") is not None:
            raise SystemExit(
                "devcluster: this cluster runs the node agent; `devcluster down` it first or "
                "use another EIO_DEVCLUSTER_RUN and EIO_DEVCLUSTER_PORT_BASE for the kubelet tier"
            )
        if not kubelet and node_mode(p) == "kubelet" and running_pid(p, "kubelet") is not None:
            raise SystemExit("devcluster: this cluster runs a kubelet; `devcluster down` it first")
        count = nodes if nodes is not None else requested_nodes()
        if kubelet and count not in (None, 1):
            raise SystemExit("devcluster: the kubelet tier has one node; drop --nodes")
        _record_nodes(p, count)
        _up(agent and not kubelet)
        if kubelet:
            _up_kubelet(p)


def _up_kubelet(p: Paths) -> None:
    """containerd, the images, a real kubelet as node ``devnode`` and kube-proxy
    (devcluster/node.py)."""
    pt = ports()
    started = time.monotonic()
    (p.run / "node-mode").write_text("kubelet\n")
    np = node_mod.prepare(p, pt)
    _ensure(
        p,
        "containerd",
        lambda p_, _pt: node_mod.containerd_argv(p_, np),
        lambda: node_mod.containerd_ready(p, np),
        None,
        60,
        node_mod.containerd_env(p),
    )
    archives = [node_mod.pause_archive(p.bin / "pause", np.root / "pause.oci.tar")]
    missing = [a for a in node_mod.project_archives(p) if not a.exists()]
    if missing:
        log(f"kubelet tier: no image archive {', '.join(map(str, missing))} "
            "(run hack/build-images.sh): pods of those images will not start")  # fmt: skip
    archives += [a for a in node_mod.project_archives(p) if a.exists()]
    t0 = time.monotonic()
    imported = node_mod.import_images(p, np, archives)
    if imported:
        log(f"imported {', '.join(imported)} in {time.monotonic() - t0:.1f}s")
    kc = _component_kubeconfig(p, pt, "node")
    _ensure(
        p,
        "kubelet",
        lambda p_, _pt: node_mod.kubelet_argv(p_, np, kc),
        lambda: node_mod.kubelet_healthy(pt) and node_ready(p, pt),
        None,
        120,
        node_mod.containerd_env(p),
    )
    # Services' cluster IPs between pods; then the isolation chains back in front of its rules
    node_mod.write_kube_proxy_config(np, pt, kc)
    _ensure(
        p,
        "kube-proxy",
        lambda p_, _pt: node_mod.kube_proxy_argv(p_, np),
        lambda: node_mod.kube_proxy_healthy(pt),
        pt.proxy_healthz,
        60,
        node_mod.containerd_env(p),
    )
    node_mod.keep_isolation_first()
    log(f"kubelet node up in {time.monotonic() - started:.1f}s")


def _up(agent: bool) -> None:
    p = paths()
    pt = ports()
    started = time.monotonic()
    for d in (p.run, p.logs, p.pids, p.pods, p.volumes):
        d.mkdir(parents=True, exist_ok=True)
    ensure_pki(p.pki)
    p.etcd_data.parent.mkdir(parents=True, exist_ok=True)
    p.etcd_data.parent.chmod(0o700)

    _ensure(p, "etcd", etcd_argv, lambda: etcd_healthy(p, pt), pt.etcd_client, 30)
    _ensure(p, "kube-apiserver", apiserver_argv, lambda: apiserver_ready(p, pt), pt.apiserver, 90)
    _controller_manager_current(p, pt)
    kc = p.kubeconfig
    kc.write_text(kubeconfig_text(f"https://127.0.0.1:{pt.apiserver}", p.pki, "admin"))
    kc.chmod(0o600)
    _ensure(
        p,
        "kube-scheduler",
        scheduler_argv,
        lambda: _secure_healthz(pt.scheduler),
        pt.scheduler,
        60,
    )
    _ensure(
        p,
        "kube-controller-manager",
        controller_manager_argv,
        lambda: _secure_healthz(pt.controller_manager),
        pt.controller_manager,
        60,
    )
    _wait(
        "the default ServiceAccount",
        lambda: default_sa_exists(p, pt),
        60,
        p.logs / "kube-controller-manager.log",
    )
    _bootstrap_objects(p)
    if agent:
        code = agent_code_hash()
        stamp = p.run / "nodeagent.code"
        changed = not stamp.exists() or stamp.read_text() != code
        for node in cluster_nodes(p):
            if changed and running_pid(p, agent_component(node)) is not None:
                # a cluster left running across a code change (e.g. CI after development)
                log(f"node agent code changed since it started: restarting {node}'s")
                _stop(p, agent_component(node), timeout=40.0)
            ensure_agent(p, node)
        stamp.write_text(code)
    log(f"cluster up in {time.monotonic() - started:.1f}s; KUBECONFIG={p.kubeconfig}")


def ensure_agent(p: Paths, node: str) -> None:
    """Start ``node``'s agent unless it runs; wait until its Node is Ready."""
    pt = ports()
    env = dict(os.environ)
    env["KUBECONFIG"] = str(p.kubeconfig)
    _ensure(
        p,
        agent_component(node),
        lambda p_, pt_: nodeagent_argv(p_, pt_, node),
        lambda: node_ready(p, pt, node),
        agent_port(pt, node),
        60,
        env,
    )


def _record_nodes(p: Paths, count: int | None) -> None:
    """Fix the cluster's node agents (``run/node-names``): ``count`` when given, else as before.
    A cluster only grows: shrinking it takes `devcluster down`."""
    if count is None:
        return
    current = cluster_nodes(p)
    if count < len(current):
        raise SystemExit(
            f"devcluster: this cluster has {len(current)} nodes; `devcluster down` it to run "
            f"{count}"
        )
    try:
        (p.run / "node-names").write_text("\n".join(node_names(count)) + "\n")
    except ValueError as e:
        raise SystemExit(f"devcluster: {e}") from None


def _controller_manager_current(p: Paths, pt: Ports) -> None:
    """Stop a running kube-controller-manager whose node-lifecycle flags no longer fit the
    node count (a one-node cluster grown to two): `_up` starts it again."""
    pid = running_pid(p, "kube-controller-manager")
    if pid is None:
        return
    want = lifecycle_flags(multi_node(p))
    if not all(flag in _cmdline(pid) for flag in want):
        log("node count changed: restarting kube-controller-manager")
        _stop(p, "kube-controller-manager")


def down(purge: bool = False) -> None:
    with _locked(paths()):
        _down(purge)


def _down(purge: bool) -> None:
    p = paths()
    if node_mode(p) == "kubelet":
        node_mod.cleanup(p, lambda name: _stop(p, name, timeout=30.0), purge=purge)
        (p.run / "node-mode").unlink(missing_ok=True)
    # the agents first (they stop their pods and remove their cgroups), then the control plane
    from devcluster.nodeagent import orphans

    for node in cluster_nodes(p):
        _stop(p, agent_component(node), timeout=40.0)
        orphans.kill_all(p.node_pods(node))  # the pods of a partitioned node's agent
    for name in reversed(CONTROL_PLANE):
        _stop(p, name)
    from devcluster.cgroups import cleanup_stale

    cleanup_stale(p.run)
    shutil.rmtree(p.etcd_data.parent, ignore_errors=True)
    shutil.rmtree(p.pods, ignore_errors=True)
    shutil.rmtree(p.run / "nodes", ignore_errors=True)
    (p.run / "node-names").unlink(missing_ok=True)  # the next `up` has one node unless told
    if purge:
        shutil.rmtree(p.run, ignore_errors=True)
        shutil.rmtree(p.volumes, ignore_errors=True)
    log("cluster down")


def restart_agent() -> None:
    with _locked(paths()):
        _stop(paths(), "nodeagent", timeout=40.0)
    up()


def _ready_check(p: Paths, pt: Ports, node: str) -> Callable[[], bool]:
    return lambda: node_ready(p, pt, node)


def status() -> int:
    """Print each component's state; 0 when everything is up."""
    p = paths()
    pt = ports()
    checks: dict[str, Callable[[], bool]] = {
        agent_component(n): _ready_check(p, pt, n) for n in cluster_nodes(p)
    }
    checks |= {
        "etcd": lambda: etcd_healthy(p, pt),
        "kube-apiserver": lambda: apiserver_ready(p, pt),
        "kube-scheduler": lambda: _secure_healthz(pt.scheduler),
        "kube-controller-manager": lambda: _secure_healthz(pt.controller_manager),
        "containerd": lambda: node_mod.containerd_ready(p, node_mod.node_paths(p)),
        "kubelet": lambda: node_mod.kubelet_healthy(pt) and node_ready(p, pt),
        "kube-proxy": lambda: node_mod.kube_proxy_healthy(pt),
    }
    ok = True
    for name in components(p):
        pid = running_pid(p, name)
        healthy = pid is not None and checks[name]()
        ok = ok and healthy
        state = "healthy" if healthy else ("unhealthy" if pid else "stopped")
        print(f"{name:26} {state:10} pid={pid or '-'}  log={p.logs / (name + '.log')}")
    print(f"kubeconfig                 {p.kubeconfig}")
    print(f"apiserver                  https://127.0.0.1:{pt.apiserver}")
    return 0 if ok else 1


def env_lines() -> list[str]:
    p = paths()
    return [
        f"export EIO_CACHE={p.cache}",
        f"export KUBECONFIG={p.kubeconfig}",
        f'export PATH="{p.bin}:$PATH"',
    ]
