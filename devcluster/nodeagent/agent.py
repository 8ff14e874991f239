"""The node agent process: wires the parts together and runs them until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from devcluster import nodeagent, podspec
from devcluster.cgroups import CgroupManager, detect
from devcluster.config import NODE_NAME, paths, venv_bin
from devcluster.kube import Kube
from devcluster.nodeagent import orphans
from devcluster.nodeagent.api import NodeApi
from devcluster.nodeagent.containers import Launcher
from devcluster.nodeagent.logs import LogServer
from devcluster.nodeagent.podsync import PodSync
from devcluster.nodeagent.provisioner import Provisioner
from devcluster.nodeagent.registration import HEARTBEAT_SECONDS, NodeRegistration
from devcluster.nodeagent.worker import NodeServices

log = logging.getLogger("nodeagent")


def memory_cgroups(run_dir: Path) -> CgroupManager | None:
    """Real memory cgroups when writable (and not disabled), else None: RSS polling."""
    cgroups: CgroupManager | None
    if os.environ.get("EIO_DEVCLUSTER_NO_CGROUPS"):
        cgroups, why = None, "disabled by EIO_DEVCLUSTER_NO_CGROUPS"
    else:
        cgroups, why = detect(run_dir)
    if cgroups is None:
        log.warning("memory cgroups not writable (%s): falling back to RSS polling", why)
    else:
        log.info("memory limits enforced with %s", why)
    return cgroups


class Agent:
    """The node agent. ``run()`` blocks until ``stop`` is set (SIGTERM/SIGINT in ``main``)."""

    def __init__(
        self,
        kube: Kube,
        node_name: str = NODE_NAME,
        port: int = 0,
        image_map: podspec.ImageMap | None = None,
        cpu: str | None = None,
        state_dir: Path | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.port = port
        self.paths = paths()
        self.kube = kube
        self.node = node_name
        self.state_dir = state_dir or self.paths.node_pods(node_name)
        self.stop = threading.Event()
        self.cgroups = memory_cgroups(self.paths.run)
        api = NodeApi(kube, node_name)
        apiserver = urlparse(kube.host)
        launcher = Launcher(
            api,
            image_map or podspec.ImageMap(bin_dir=venv_bin()),
            self.cgroups,
            apiserver.hostname or "127.0.0.1",
            apiserver.port or 443,
        )
        cpu = cpu or str(max(os.cpu_count() or 1, 8))
        self.registration = NodeRegistration(kube, node_name, port, cpu, heartbeat)
        self.pods = PodSync(NodeServices(api, launcher, self.state_dir, self.paths.logs), node_name)
        self.provisioner = Provisioner(kube, self.paths.volumes)

    def reap_orphans(self) -> None:
        """Kill the containers a killed predecessor left running (see :mod:`.orphans`)."""
        kube = self.kube
        lst = kube.call(kube.core.list_pod_for_all_namespaces,
                        field_selector=f"spec.nodeName={self.node}")  # fmt: skip
        on_api = {p["metadata"]["uid"] for p in lst.get("items") or []}
        reaped = orphans.reap(self.state_dir, on_api)
        for uid, pids in reaped.gone.items():
            log.info("killed processes %s of pod %s: no longer on this node in the API", pids, uid)
        for uid, pids in reaped.kept.items():
            log.info("killed processes %s of pod %s left by the previous agent: its containers "
                     "restart (ContainerStatusUnknown)", pids, uid)  # fmt: skip

    def run(self) -> None:
        self.reap_orphans()
        self.registration.register()
        loops = {
            "heartbeat": self.registration.heartbeat_loop,
            "pods": self.pods.loop,
            "provisioner": self.provisioner.loop,
        }
        threads = [
            threading.Thread(target=fn, args=(self.stop,), name=name, daemon=True)
            for name, fn in loops.items()
        ]
        server = None
        if self.port:
            server = LogServer(self.port, self.paths.pki, self.paths.logs, self.pods.find,
                               self.stop)  # fmt: skip
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        for t in threads:
            t.start()
        self.stop.wait()
        log.info("stopping: terminating containers")
        self.pods.shutdown()
        if server is not None:
            server.shutdown()
        if self.cgroups is not None:
            self.cgroups.cleanup()
        log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="devcluster agent", description=nodeagent.__doc__)
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    ap.add_argument("--node-name", default=NODE_NAME)
    ap.add_argument("--port", type=int, default=0, help="HTTPS port for kubectl logs (0 = off)")
    ap.add_argument("--image-map", type=Path,
                    default=os.environ.get("EIO_DEVCLUSTER_IMAGE_MAP") or None,
                    help="JSON file with extra image -> entry point mappings")  # fmt: skip
    ap.add_argument("--cpu", default=os.environ.get("EIO_DEVCLUSTER_NODE_CPU"),
                    help="CPU capacity to report (default: max(cores, 8))")  # fmt: skip
    ap.add_argument("--state-dir", type=Path, default=None,
                    help="per-pod state (default: $EIO_CACHE/run/pods for devnode, "
                    "run/nodes/<node>/pods for the others)")  # fmt: skip
    ap.add_argument("--heartbeat-seconds", type=float, default=HEARTBEAT_SECONDS,
                    help="how often the node Lease is renewed")  # fmt: skip
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s: %(message)s",
    )
    agent = Agent(
        Kube(args.kubeconfig),
        node_name=args.node_name,
        port=args.port,
        image_map=podspec.ImageMap.from_file(args.image_map, venv_bin()),
        cpu=args.cpu,
        state_dir=args.state_dir,
        heartbeat=args.heartbeat_seconds,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.run()
