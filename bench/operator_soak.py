#!/usr/bin/env python
"""Operator soak: operator RSS while EmbeddingImports are created, completed and deleted.

Needs the local cluster, best without its node agent (``devcluster up --no-agent``; with the
agent, its node is cordoned while the soak runs): the importer pods are fake on purpose.
Nothing runs them; this script plays the node: for every shard pod
the operator creates, it first writes a complete checkpoint into the shard's checkpoint
ConfigMap (the one the operator created and owns), then patches the pod's status to
``Succeeded`` with the ``importer`` container terminated, exit code 0. The operator does its
full work per shard (checkpoint ConfigMaps, importer RBAC, pod creation, watching the pod to
its end, reading the checkpoint, status, events) and the import reaches ``Succeeded``. The
script then deletes the batch (pods, ConfigMaps and RBAC go with it through their owner
references) and waits until the imports are gone before the next batch.

After each batch the RSS of the operator process is sampled (psutil). The acceptance figure is
the drift over the second half of the run: (last sample - sample at half the imports) / sample
at half the imports; ``flat`` when under 10 %.

    python bench/operator_soak.py                       # 1,000 imports, batches of 25
    python bench/operator_soak.py --imports 200         # a shorter run
    python bench/operator_soak.py --quick               # 20 imports, batches of 10
Writes bench/out/operator_soak.json (operator_soak_quick.json) and docs/img/operator_soak.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import kube
from operator_scale import SHARDS, manifest, texts_configmap

from eio_common import contract
from eio_common.contract import Checkpoint

DRIFT_LIMIT = 0.10


def soak_cluster() -> tuple[kube.Cluster, list[str]] | None:
    """The dev cluster's control plane, when it is up, and the nodes this soak cordoned.

    The importer pods are fake: no node may run them. Without the node agent
    (``devcluster up --no-agent``) nothing does; with it (as in CI), its node is cordoned for
    the soak (``uncordon`` afterwards), so the scheduler binds no pod to it and the pods stay
    Pending until this script finishes them. (The agent clears ``unschedulable`` only when it
    registers its node, at start.)"""
    try:
        from devcluster.config import paths
    except ImportError:
        return None
    st = subprocess.run(
        [str(Path(c.PYTHON).parent / "devcluster"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = {ln.split()[0]: ln.split()[1] for ln in st.stdout.splitlines() if len(ln.split()) > 1}
    control_plane = ("etcd", "kube-apiserver", "kube-controller-manager")
    if any(rows.get(k) != "healthy" for k in control_plane):
        return None
    p = paths()
    os.environ["KUBECONFIG"] = str(p.kubeconfig)
    cl = kube.Cluster(p.kubeconfig, p.bin / "kubectl")
    cordoned: list[str] = []
    if rows.get("nodeagent") == "healthy":
        out = kube.kubectl(cl, "get", "nodes", "-o", "json")
        for node in json.loads(out)["items"]:
            if not node["spec"].get("unschedulable"):
                kube.kubectl(cl, "cordon", node["metadata"]["name"])
                cordoned.append(node["metadata"]["name"])
        print(f"the node agent runs: cordoned {cordoned} for the soak", file=sys.stderr)
    return cl, cordoned


def complete_checkpoint(shard: int) -> str:
    return Checkpoint(
        shard=shard,
        shards=SHARDS,
        files_total=1,
        files_done=1,
        complete=True,
        last_exit="complete",
    ).to_json()


class FakeNode:
    """Finishes every importer pod of the namespace: complete checkpoint, then exit 0."""

    def __init__(self, cl: kube.Cluster, ns: str) -> None:
        from kubernetes import client

        from eio_common.kubeapi import api_client

        api = api_client(str(cl.kubeconfig))
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.ns = ns
        self.finished: set[str] = set()  # pod UIDs already finished

    def finish_pods(self) -> int:
        pods = self.core.list_namespaced_pod(self.ns, label_selector=contract.LABEL_IMPORT).items
        n = 0
        for pod in pods:
            meta = pod.metadata
            if meta.uid in self.finished or meta.deletion_timestamp:
                continue
            shard = int(meta.labels[contract.LABEL_SHARD])
            imp = meta.labels[contract.LABEL_IMPORT]
            self.core.patch_namespaced_config_map(
                contract.checkpoint_configmap_name(imp, shard),
                self.ns,
                {"data": {contract.CHECKPOINT_KEY: complete_checkpoint(shard)}},
            )
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.core.patch_namespaced_pod_status(
                meta.name,
                self.ns,
                {
                    "status": {
                        "phase": "Succeeded",
                        "startTime": now,
                        "containerStatuses": [
                            {
                                "name": "importer",
                                "image": "embedding-importer:0.1.0",
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "state": {
                                    "terminated": {
                                        "exitCode": 0,
                                        "reason": "Completed",
                                        "startedAt": now,
                                        "finishedAt": now,
                                    }
                                },
                            }
                        ],
                    }
                },
            )
            self.finished.add(meta.uid)
            n += 1
        return n

    def phases(self) -> dict[str, str | None]:
        items = self.custom.list_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, self.ns, contract.PLURAL
        )["items"]
        return {o["metadata"]["name"]: (o.get("status") or {}).get("phase") for o in items}

    def create(self, name: str) -> None:
        self.custom.create_namespaced_custom_object(
            contract.API_GROUP,
            contract.API_VERSION,
            self.ns,
            contract.PLURAL,
            manifest(name, self.ns),
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            contract.API_GROUP, contract.API_VERSION, self.ns, contract.PLURAL, name
        )


def run_batch(node: FakeNode, names: list[str], timeout: float) -> None:
    """Create ``names``, finish their pods until all are Succeeded, delete them, wait until
    they are gone."""
    for n in names:
        node.create(n)

    def succeeded() -> bool:
        node.finish_pods()
        phases = node.phases()
        failed = [n for n in names if phases.get(n) == "Failed"]
        if failed:
            raise RuntimeError(f"imports failed: {failed}")
        return all(phases.get(n) == "Succeeded" for n in names)

    kube.wait_for(succeeded, timeout, f"{names[0]}..{names[-1]} Succeeded", interval=0.5)
    for n in names:
        node.delete(n)
    kube.wait_for(
        lambda: not set(names) & set(node.phases()),
        timeout,
        f"{names[0]}..{names[-1]} deleted",
        interval=0.5,
    )


def drift(samples: list[dict[str, Any]], imports: int) -> dict[str, Any]:
    """RSS drift over the second half of the run (from the first sample at half the imports)."""
    half = next(s for s in samples if s["imports_done"] >= imports // 2)
    last = samples[-1]
    second = [s["rss"] for s in samples if s["imports_done"] >= half["imports_done"]]
    d = (last["rss"] - half["rss"]) / half["rss"]
    return {
        "from_imports": half["imports_done"],
        "rss_at_half": half["rss"],
        "rss_end": last["rss"],
        "drift": round(d, 4),
        "max_over_min_second_half": round(max(second) / min(second) - 1, 4),
        "flat": abs(d) < DRIFT_LIMIT,
    }


def plot(data: dict[str, Any]) -> Path:
    plt = c.plt()
    fig, ax = plt.subplots(figsize=(8, 4.3))
    s = data["samples"]
    ax.plot([p["imports_done"] for p in s], [c.mib(p["rss"]) for p in s], marker=".")
    d = data["drift"]
    ax.axvline(d["from_imports"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("imports created, completed and deleted")
    ax.set_ylabel("operator RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(
        f"operator soak: {data['imports']} imports x {SHARDS} shards (fake pods), batches of "
        f"{data['batch']}\nRSS drift over the second half {d['drift'] * 100:+.1f} %",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    return c.save_figure(fig, "operator_soak")


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__, "20 imports, batches of 10")
    ap.add_argument("--imports", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--timeout", type=float, default=600, help="per batch step")
    a = ap.parse_args(argv)
    if a.quick:
        a.imports, a.batch, a.timeout = 20, 10, min(a.timeout, 120)
    found = soak_cluster()
    if found is None:
        print("the dev cluster is not up (`devcluster up`): not run", file=sys.stderr)
        return 2
    cl, cordoned = found
    try:
        return soak(cl, a)
    finally:
        for node in cordoned:
            kube.kubectl(cl, "uncordon", node, check=False)


def soak(cl: kube.Cluster, a: argparse.Namespace) -> int:
    """Run the soak on ``cl`` (nodes cordoned or without agent); 0 when the RSS is flat."""
    ns, work = kube.bench_namespace(cl, "bench-soak")
    op = kube.start_operator(cl, ns, work / "operator.log", resync=10)
    samples: list[dict[str, Any]] = []
    t0 = time.time()
    try:
        kube.apply(cl, [texts_configmap(ns)])
        node = FakeNode(cl, ns)
        samples.append({"imports_done": 0, "t": 0.0, "rss": op.rss()})
        for start in range(0, a.imports, a.batch):
            names = [f"soak{i:04d}" for i in range(start, min(start + a.batch, a.imports))]
            run_batch(node, names, a.timeout)
            sample = {
                "imports_done": start + len(names),
                "t": round(time.time() - t0, 1),
                "rss": op.rss(),
            }
            samples.append(sample)
            print(
                f"{sample['imports_done']:5d} imports  {sample['t']:7.1f} s  "
                f"RSS {c.mib(sample['rss']):6.1f} MiB",
                flush=True,
            )
        metrics = kube.metrics_text(op.metrics_port)
    finally:
        kube.teardown(cl, ns, op)
    data = {
        "command": "python bench/operator_soak.py"
        + (" --quick" if a.quick else f" --imports {a.imports} --batch {a.batch}"),
        "imports": a.imports,
        "batch": a.batch,
        "shards": SHARDS,
        "workload": "fake importer pods (no node agent): the bench writes a complete "
        "checkpoint and patches each pod's status to Succeeded, exit 0",
        "wall_s": round(time.time() - t0, 1),
        "drift": drift(samples, a.imports),
        "reconcile_total": [
            ln for ln in metrics.splitlines() if ln.startswith("eio_operator_reconcile_total{")
        ],
        "operator_log": str(work / "operator.log"),
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in data.items() if k != "samples"}, indent=1))
    c.write_result("operator_soak", data, a.quick)
    print(f"wrote {plot(data)}")
    return 0 if data["drift"]["flat"] or a.quick else 1  # --quick: a smoke run, mostly warm-up


if __name__ == "__main__":
    raise SystemExit(main())
