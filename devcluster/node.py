"""The kubelet tier: a real kubelet with containerd and runc as the dev cluster's node.

``devcluster up --kubelet`` (or ``EIO_DEVCLUSTER_NODE=kubelet``) starts this instead of the node
agent. What it sets up, and why (FACTS.md, "A real kubelet", has the measurements):

* a node address ``NODE_IP`` (192.0.2.2, TEST-NET-1) on an empty bridge ``eio-node0``: the
  kubelet refuses a loopback node IP, and this kernel has no ``dummy`` link type;
* the pod network: CNI ``bridge`` (``eio-cni0``) with host-local IPAM on ``POD_CIDR``,
  ``ipMasq: false``; iptables chains ``EIO-KUBELET-*`` drop pod traffic that would leave the
  bridge (no pod reaches another machine) or reach the host, except the API server;
* in-cluster API access: pods get ``KUBERNETES_SERVICE_HOST=10.0.0.1`` from the kubelet, and one
  DNAT rule sends 10.0.0.1:443 from the bridge to the API server on 127.0.0.1
  (``route_localnet`` on the bridge only);
* Services: kube-proxy (iptables mode) routes every other Service's cluster IP to its ready
  pods on the bridge, masquerading the traffic (``masqueradeAll``) so a backend answers through
  the host, where conntrack undoes the DNAT; the isolation chains are kept first in FORWARD and
  INPUT, ahead of kube-proxy's ACCEPT rules;
* cgroups: the kubelet's ``cgroupRoot`` (``/eio-kubelet``) created beforehand in every cgroup v1
  hierarchy (``cpuset.cpus``/``cpuset.mems`` copied from the root), ``cgroupDriver: cgroupfs``,
  ``failCgroupV1: false`` (1.35+ refuses v1 otherwise);
* containerd (CRI) with ``restrict_oom_score_adj`` (lowering oom_score_adj needs
  CAP_SYS_RESOURCE, which root here lacks: every sandbox failed without it), Debian's runc, the
  overlayfs snapshotter, network namespaces under its state directory, a pinned sandbox image;
* images: no registry is reachable, so the pause image is written here (a static Go binary in a
  one-layer OCI archive) and the project's images come from ``hack/build-images.sh``; all are
  imported with ``ctr -n k8s.io images import`` and pods use them without pulling.

Everything lives under ``$EIO_DEVCLUSTER_RUN/node`` (kubelet root dir, pod logs, containerd root
and state, CNI config and IPAM state, kube-proxy's configuration); ``down`` kills the
containers, unmounts what the kubelet and containerd mounted there, and removes the bridges,
iptables chains (kube-proxy's with ``kube-proxy --cleanup``) and cgroups.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devcluster.config import (
    CLUSTER_DOMAIN,
    NODE_IP,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    SERVICE_IP,
    Paths,
    Ports,
)

BRIDGE = "eio-cni0"
NODE_LINK = "eio-node0"
FILTER_CHAIN = "EIO-KUBELET-FWD"
INPUT_CHAIN = "EIO-KUBELET-IN"
NAT_CHAIN = "EIO-KUBELET-DNAT"
CGROUP_ROOT = "eio-kubelet"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.1"
CGROUP_FS = Path("/sys/fs/cgroup")
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"


@dataclass(frozen=True)
class NodePaths:
    root: Path

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.root / "cstate"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def sock(self) -> Path:
        return self.containerd_state / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.json"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def images_stamp(self) -> Path:
        return self.root / "images.json"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy-config.json"


def node_paths(p: Paths) -> NodePaths:
    return NodePaths(p.run / "node")


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({out.returncode}): {out.stderr.strip()}")
    return out


# ------------------------------------------------------------------------------------------
# network: node address, pod bridge, iptables
# ------------------------------------------------------------------------------------------
def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _ipt(table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _sh("iptables", "-w", "5", "-t", table, *args, check=check)


def _ensure_chain(table: str, chain: str, hook: str, rules: list[list[str]]) -> None:
    """(Re)create ``chain`` with ``rules`` and jump to it first from ``hook``."""
    if _ipt(table, "-n", "-L", chain, check=False).returncode != 0:
        _ipt(table, "-N", chain)
    _ipt(table, "-F", chain)
    for rule in rules:
        _ipt(table, "-A", chain, *rule)
    if _ipt(table, "-C", hook, "-j", chain, check=False).returncode != 0:
        _ipt(table, "-I", hook, "1", "-j", chain)


def _jump_first(table: str, chain: str, hook: str) -> None:
    """Make the jump to ``chain`` the first rule of ``hook``: kube-proxy prepends its own jumps
    (KUBE-FORWARD accepts its masqueraded and established traffic), so once it runs, the pod
    network's isolation chains are moved back ahead of them. kube-proxy re-adds a jump only
    when it is missing, so the order stays."""
    if _ipt(table, "-S", hook).stdout.splitlines()[1:2] == [f"-A {hook} -j {chain}"]:
        return
    while _ipt(table, "-D", hook, "-j", chain, check=False).returncode == 0:
        pass
    _ipt(table, "-I", hook, "1", "-j", chain)


def keep_isolation_first() -> None:
    """The filter chains that keep pod traffic on this machine, first in FORWARD and INPUT."""
    _jump_first("filter", FILTER_CHAIN, "FORWARD")
    _jump_first("filter", INPUT_CHAIN, "INPUT")


def _drop_chain(table: str, chain: str, hook: str) -> None:
    while _ipt(table, "-D", hook, "-j", chain, check=False).returncode == 0:
        pass
    _ipt(table, "-F", chain, check=False)
    _ipt(table, "-X", chain, check=False)


def setup_network(np: NodePaths, pt: Ports) -> None:
    for link in (NODE_LINK, BRIDGE):
        if not _link_exists(link):
            _sh("ip", "link", "add", link, "type", "bridge")
        _sh("ip", "link", "set", link, "up")
    if NODE_IP not in _sh("ip", "-4", "addr", "show", "dev", NODE_LINK).stdout:
        _sh("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
    # The CNI bridge plugin reuses this bridge (same name) and adds the gateway address.
    # route_localnet on it alone lets the DNAT to 127.0.0.1 below deliver pod packets.
    Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
    api = str(pt.apiserver)
    _ensure_chain(
        "nat",
        NAT_CHAIN,
        "PREROUTING",
        [["-i", BRIDGE, "-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
          "-j", "DNAT", "--to-destination", f"127.0.0.1:{api}"]],
    )  # fmt: skip
    # Pods talk to each other on the bridge; nothing of theirs is forwarded anywhere else
    # (a pod's DNS query would otherwise go to the host's resolver, off this machine). What a
    # pod sends elsewhere is rejected, not dropped: a cluster IP without ready endpoints (a
    # Service whose pod is being rolled) is refused at once, as on a cluster with kube-proxy,
    # rather than after the client's connect timeout.
    _ensure_chain(
        "filter",
        FILTER_CHAIN,
        "FORWARD",
        [["-i", BRIDGE, "-o", BRIDGE, "-j", "RETURN"],
         ["-i", BRIDGE, "-j", "REJECT"],
         ["-o", BRIDGE, "-j", "DROP"]],
    )  # fmt: skip
    # To the host, pods reach only the API server (after the DNAT) and answer what the host
    # started (the kubelet's probes).
    _ensure_chain(
        "filter",
        INPUT_CHAIN,
        "INPUT",
        [["-i", BRIDGE, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
         ["-i", BRIDGE, "-d", "127.0.0.1/32", "-p", "tcp", "--dport", api, "-j", "RETURN"],
         ["-i", BRIDGE, "-j", "DROP"]],
    )  # fmt: skip
    _write_cni_config(np)


def _write_cni_config(np: NodePaths) -> None:
    """The bridge network the kubelet's CNI plugins set up for each pod."""
    np.cni_conf.mkdir(parents=True, exist_ok=True)
    np.cni_ipam.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "eio-devcluster",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    # Only the Service range is routed (to the bridge's gateway, where the DNAT
                    # waits): a pod has no default route, so nothing else even leaves it.
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(np.cni_ipam),
                },
            }
        ],
    }
    (np.cni_conf / "10-eio-devcluster.conflist").write_text(json.dumps(conf, indent=2) + "\n")


def teardown_network(np: NodePaths) -> None:
    _drop_chain("nat", NAT_CHAIN, "PREROUTING")
    _drop_chain("filter", FILTER_CHAIN, "FORWARD")
    _drop_chain("filter", INPUT_CHAIN, "INPUT")
    _drop_kubelet_chains()
    for link in (BRIDGE, NODE_LINK):
        if _link_exists(link):
            _sh("ip", "link", "del", link, check=False)


def _drop_kubelet_chains() -> None:
    """The kubelet's own iptables chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...): it leaves
    them behind. Nothing else on this machine uses KUBE-* chains (the node agent tier does not
    touch iptables)."""
    for table in ("filter", "nat", "mangle"):
        dump = _ipt(table, "-S", check=False).stdout.splitlines()
        chains = [ln.split()[1] for ln in dump if ln.startswith("-N KUBE-")]
        for ln in dump:  # jumps from the built-in chains
            parts = ln.split()
            if parts[:1] == ["-A"] and "-j" in parts:
                target = parts[parts.index("-j") + 1]
                if target in chains and not parts[1].startswith("KUBE-"):
                    _ipt(table, "-D", *parts[1:], check=False)
        for c in chains:
            _ipt(table, "-F", c, check=False)
        for c in chains:
            _ipt(table, "-X", c, check=False)


# ------------------------------------------------------------------------------------------
# cgroups
# ------------------------------------------------------------------------------------------
def _v1_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (memory, cpu, cpuset, ..., name=systemd)."""
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup"]:
            found.append(Path(left.split()[4]))
    return sorted(set(found))


def ensure_cgroup_root() -> None:
    for h in _v1_hierarchies():
        d = h / CGROUP_ROOT
        d.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (h / name).exists() and not (d / name).read_text().strip():
                (d / name).write_text((h / name).read_text())


def _cgroup_dirs_deepest_first() -> list[Path]:
    dirs: list[Path] = []
    for h in _v1_hierarchies():
        root = h / CGROUP_ROOT
        if root.is_dir():
            dirs += [Path(d) for d, _, _ in os.walk(root)]
    return sorted(dirs, key=lambda d: len(d.parts), reverse=True)


def kill_cgroup_processes() -> int:
    """SIGKILL every process in the kubelet's cgroup tree (containers left by a dead kubelet)."""
    pids: set[int] = set()
    for d in _cgroup_dirs_deepest_first():
        with contextlib.suppress(OSError):
            pids |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
    pids.discard(os.getpid())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_cgroup_root() -> None:
    deadline = time.monotonic() + 10
    for d in _cgroup_dirs_deepest_first():
        while True:
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                kill_cgroup_processes()
                time.sleep(0.1)


# ------------------------------------------------------------------------------------------
# mounts and processes left behind
# ------------------------------------------------------------------------------------------
def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if any(mp == pre or mp.startswith(pre + "/") for pre in prefixes):
            points.append(mp)
    return points


def unmount_under(*dirs: Path) -> None:
    prefixes = tuple(str(d) for d in dirs)
    for _ in range(5):  # stacked mounts: repeat until none is left
        points = _mounts_under(prefixes)
        if not points:
            return
        for mp in sorted(points, key=lambda m: m.count("/"), reverse=True):
            _sh("umount", "-l", mp, check=False)


def kill_shims(np: NodePaths, bin_dir: Path) -> None:
    """containerd-shim-runc-v2 processes of this node (they outlive containerd)."""
    shim = str(bin_dir / "containerd-shim-runc-v2")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].decode(errors="replace") == shim
            and str(np.sock).encode() in b" ".join(argv)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(d.name), signal.SIGKILL)


# ------------------------------------------------------------------------------------------
# containerd
# ------------------------------------------------------------------------------------------
def containerd_config(np: NodePaths) -> str:
    return f"""version = 3
root = "{np.containerd_root}"
state = "{np.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{np.sock}"

[debug]
  level = "info"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{SANDBOX_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # lowering oom_score_adj needs CAP_SYS_RESOURCE, which root on this machine lacks
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN}"]
    conf_dir = "{np.cni_conf}"
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def containerd_argv(p: Paths, np: NodePaths) -> list[str]:
    return [str(p.bin / "containerd"), "--config", str(np.containerd_config)]


def containerd_env(p: Paths) -> dict[str, str]:
    env = dict(os.environ)
    # the shim is found on PATH; runc is named in the config
    env["PATH"] = f"{p.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def ctr(
    p: Paths, np: NodePaths, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return _sh(str(p.bin / "ctr"), "-a", str(np.sock), "-n", "k8s.io", *args, check=check)


def containerd_ready(p: Paths, np: NodePaths) -> bool:
    if not np.sock.exists():
        return False
    return ctr(p, np, "version", check=False).returncode == 0


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------
def _tar_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def pause_archive(pause_bin: Path, out: Path, ref: str = SANDBOX_IMAGE) -> Path:
    """A one-layer OCI image archive holding the static pause binary (no registry needed)."""
    layer_tar = _tar_bytes({"pause": (pause_bin.read_bytes(), 0o755)})
    layer = gzip.compress(layer_tar, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()

    def desc(media: str, data: bytes) -> dict[str, object]:
        return {
            "mediaType": media,
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        }
    ).encode()
    mdesc = desc("application/vnd.oci.image.manifest.v1+json", manifest)
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": ref,
                            "io.containerd.image.name": ref}  # fmt: skip
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [mdesc],
        }
    ).encode()
    files: dict[str, tuple[bytes, int]] = {
        "oci-layout": (b'{"imageLayoutVersion":"1.0.0"}', 0o644),
        "index.json": (index, 0o644),
    }
    for blob in (layer, config, manifest):
        files[f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}"] = (blob, 0o644)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = _tar_bytes(files)
    if not out.exists() or out.read_bytes() != data:  # unchanged: not imported again
        out.write_bytes(data)
    return out


def project_archives(p: Paths) -> list[Path]:
    """The OCI archives hack/build-images.sh wrote (both must exist)."""
    return [p.cache / "images" / f"{n}.oci.tar"
            for n in ("embedding-importer", "embedding-import-operator")]  # fmt: skip


def archive_refs(archive: Path) -> list[str]:
    """The image names an OCI archive carries (its index.json annotations), as ctr names them
    on import (ctr's own output is a progress table with truncated names)."""
    with tarfile.open(archive) as tf:
        member = tf.extractfile("index.json")
        index = json.load(member) if member else {}
    refs: set[str] = set()
    for m in index.get("manifests", []):
        ann = m.get("annotations") or {}
        ref = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
        if ref and ("/" in ref or ":" in ref):
            refs.add(ref)
    return sorted(refs)


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def import_images(p: Paths, np: NodePaths, archives: list[Path]) -> list[str]:
    """``ctr -n k8s.io images import`` each archive not imported since it last changed."""
    try:
        done: dict[str, str] = json.loads(np.images_stamp.read_text())
    except (OSError, ValueError):
        done = {}
    present = set(ctr(p, np, "images", "ls", "-q").stdout.split())
    imported: list[str] = []
    for a in archives:
        key = _file_key(a)
        refs = done.get(str(a), "").split("|")[1:]
        if done.get(str(a), "").split("|")[0] == key and refs and set(refs) <= present:
            continue
        ctr(p, np, "images", "import", str(a))
        present = set(ctr(p, np, "images", "ls", "-q").stdout.split())
        refs = archive_refs(a)
        done[str(a)] = "|".join([key, *refs])
        imported += refs
    np.images_stamp.write_text(json.dumps(done, indent=1))
    if imported:
        prune_images(p, np)
    return imported


def prune_images(p: Paths, np: NodePaths) -> int:
    """Delete image records left by earlier imports: the CRI keeps a record named by the image
    id (``sha256:...``) next to each name, and after a re-import under the same name the old
    one alone holds the old layers (~600 MB for the importer). containerd's garbage collector
    then frees their content and snapshots."""
    rows = [ln.split() for ln in ctr(p, np, "images", "ls").stdout.splitlines()[1:] if ln.strip()]
    named = {r[2] for r in rows if len(r) > 2 and not r[0].startswith("sha256:")}
    stale = [r[0] for r in rows if len(r) > 2 and r[0].startswith("sha256:") and r[2] not in named]
    if stale:
        ctr(p, np, "images", "rm", *stale, check=False)
    return len(stale)


# ------------------------------------------------------------------------------------------
# kubelet
# ------------------------------------------------------------------------------------------
def kubelet_config(p: Paths, np: NodePaths, pt: Ports) -> dict[str, object]:
    k = p.pki
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "containerRuntimeEndpoint": f"unix://{np.sock}",
        "address": NODE_IP,
        "port": pt.agent,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": pt.kubelet_healthz,
        "tlsCertFile": str(k / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(k / "kubelet-serving.key"),
        "authentication": {
            "x509": {"clientCAFile": str(k / "ca.crt")},
            "webhook": {"enabled": False},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",
        "failSwapOn": False,
        "podLogsDir": str(np.pod_logs),
        # a shared development machine: never evict pods for its disk or memory use
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "volumePluginDir": str(np.kubelet_root / "volume-plugins"),
        "localStorageCapacityIsolation": False,
    }


def kubelet_argv(p: Paths, np: NodePaths, kubeconfig: Path) -> list[str]:
    return [
        str(p.bin / "kubelet"),
        f"--config={np.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={np.kubelet_root}",
        f"--cert-dir={np.kubelet_root / 'pki'}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}",
        "--node-labels=eio.dev/devcluster=true,eio.dev/node=kubelet",
        "--v=1",
    ]


def _healthz(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status) == 200
    except OSError:
        return False


def kubelet_healthy(pt: Ports) -> bool:
    return _healthz(pt.kubelet_healthz)


# ------------------------------------------------------------------------------------------
# kube-proxy
# ------------------------------------------------------------------------------------------
def kube_proxy_config(pt: Ports, kubeconfig: Path) -> dict[str, object]:
    """kube-proxy in iptables mode for the pod bridge, touching nothing else of the machine."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{pt.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{pt.proxy_metrics}",
        "clusterCIDR": POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "iptables": {
            # Masquerade service traffic to the bridge's address: the backend answers the host,
            # whose conntrack undoes the DNAT, whether or not bridged frames pass iptables
            # (br_netfilter) on this machine.
            "masqueradeAll": True,
            # no NodePort on 127.0.0.1 (it would set route_localnet on every interface)
            "localhostNodePorts": False,
            "minSyncPeriod": "0s",  # an endpoint change is routed at once (rolls)
            "syncPeriod": "30s",
        },
        # NodePorts only on the node's own TEST-NET address, never the machine's interfaces
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # leave the machine's conntrack sysctls and our own oom_score_adj as they are
        # (lowering oom_score_adj needs CAP_SYS_RESOURCE, which root here lacks)
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "oomScoreAdj": 0,
    }


def kube_proxy_argv(p: Paths, np: NodePaths) -> list[str]:
    return [str(p.bin / "kube-proxy"), f"--config={np.proxy_config}", "--v=1"]


def kube_proxy_healthy(pt: Ports) -> bool:
    return _healthz(pt.proxy_healthz)


def kube_proxy_cleanup(p: Paths) -> None:
    """``kube-proxy --cleanup``: its iptables chains and rules (IPv4 and IPv6), once stopped."""
    binary = p.bin / "kube-proxy"
    if binary.exists():
        _sh(str(binary), "--cleanup", check=False)


def prepare(p: Paths, pt: Ports) -> NodePaths:
    """Everything before containerd and the kubelet start: directories, network, cgroups and
    configuration files (idempotent)."""
    np = node_paths(p)
    for d in (np.root, np.containerd_root, np.containerd_state, np.kubelet_root, np.pod_logs):
        d.mkdir(parents=True, exist_ok=True)
    setup_network(np, pt)
    ensure_cgroup_root()
    np.containerd_config.write_text(containerd_config(np))
    np.kubelet_config.write_text(json.dumps(kubelet_config(p, np, pt), indent=1) + "\n")
    return np


def write_kube_proxy_config(np: NodePaths, pt: Ports, kubeconfig: Path) -> None:
    """Write kube-proxy's configuration, unless it already says the same: kube-proxy watches
    the file and exits when it is written to ("content of the proxy server's configuration
    file was updated"), which a second ``devcluster up`` must not cause."""
    text = json.dumps(kube_proxy_config(pt, kubeconfig), indent=1) + "\n"
    with contextlib.suppress(OSError):
        if np.proxy_config.read_text() == text:
            return
    np.proxy_config.write_text(text)


# Paths the kubelet and containerd use whatever their configuration says; the dev cluster is
# the only user of them on this machine (no other kubelet or containerd runs here).
FIXED_PATHS = (
    Path("/var/lib/kubelet/device-plugins/kubelet.sock"),
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    Path("/var/lib/cni/results"),
    Path("/var/lib/cni"),
    Path("/run/containerd/runc/k8s.io"),
    Path("/run/containerd/runc"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
    Path("/var/log/containers"),
)


def _remove_fixed_paths() -> None:
    """Remove those paths where nothing but what the kubelet tier left is in them: the CNI
    result cache of its network, the device-plugin socket, empty directories."""
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for f in results.iterdir():
            if f.name.startswith("eio-devcluster-"):
                f.unlink(missing_ok=True)
    for path in FIXED_PATHS:
        with contextlib.suppress(OSError):
            if path.is_socket():
                path.unlink()
            elif path.is_dir():
                path.rmdir()  # only when empty


def cleanup(p: Paths, stop: Callable[[str], None], purge: bool = False) -> None:
    """Stop the kubelet and containerd (``stop(name)``), then remove what they left: container
    processes, shims, mounts, network namespaces, bridges, iptables chains, cgroups, state.
    containerd's root (the imported images) is kept unless ``purge``."""
    np = node_paths(p)
    stop("kube-proxy")
    stop("kubelet")
    if containerd_ready(p, np):
        for line in ctr(p, np, "tasks", "ls", "-q", check=False).stdout.split():
            ctr(p, np, "tasks", "kill", "-s", "SIGKILL", line, check=False)
    stop("containerd")
    kill_shims(np, p.bin)
    kill_cgroup_processes()
    unmount_under(np.root)
    kube_proxy_cleanup(p)
    teardown_network(np)
    remove_cgroup_root()
    # the kubelet links every container log into /var/log/containers, whatever podLogsDir says
    logs = Path("/var/log/containers")
    if logs.is_dir():
        for link in logs.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and os.readlink(link).startswith(str(np.pod_logs)):
                    link.unlink()
    _remove_fixed_paths()
    if purge:
        shutil.rmtree(np.root, ignore_errors=True)
        return
    for d in (np.kubelet_root, np.containerd_state, np.pod_logs, np.cni_conf.parent):
        shutil.rmtree(d, ignore_errors=True)
