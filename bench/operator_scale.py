#!/usr/bin/env python
"""One operator, N concurrent EmbeddingImports of 4 shards each: reconcile latency and memory.

Needs ``devcluster up`` and the operator. Workload (fast, fake on purpose): every import reads
the same ConfigMap of 4 one-line text files, and every shard's checkpoint ConfigMap is created
beforehand with a *complete* checkpoint (copied from one real template import of the same
files, so its file digest matches). Each importer pod is then the real ``embedding-importer``,
which finds its checkpoint complete and exits 0 in ~1-2 s without loading the model. The
operator does its full work per shard: pod creation, watching it to its end, reading the
checkpoint, status and events.

Measured (watch events stamped with the local clock on arrival):
  resume -> pod     the imports are created suspended (the operator creates and owns their
                    checkpoint ConfigMaps, into which the bench writes the complete
                    checkpoints), then all are resumed at once (spec.suspend false, one patch
                    each): patch returned -> each shard's pod ADDED
  pod end -> status the last shard pod of an import terminated -> the import's status.phase
                    Succeeded
  import total      patch returned -> Succeeded
  reconcile time    the operator's own histogram eio_operator_reconcile_time_seconds (bucket
                    estimate of p50/p99, count)
  operator memory   RSS of the operator process, sampled every 0.5 s (peak, end)

    python bench/operator_scale.py              # 100 imports x 4 shards
    python bench/operator_scale.py --quick      # 5 imports x 4 shards
Writes bench/out/operator_scale.json and docs/img/operator_scale.png.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import kube

SHARDS = 4


class Watcher:
    """Watches pods and EmbeddingImports in a namespace; stamps events on arrival."""

    def __init__(self, ns: str) -> None:
        from kubernetes import client

        from eio_common.kubeapi import api_client

        api = api_client()  # $KUBECONFIG, set by kube.cluster()
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.ns = ns
        self.events: list[dict[str, Any]] = []
        self._stop = False
        self._watches: list[Any] = []
        self._threads = [
            threading.Thread(target=self._pods, daemon=True),
            threading.Thread(target=self._imports, daemon=True),
        ]

    def start(self) -> Watcher:
        for t in self._threads:
            t.start()
        return self

    def _loop(self, fn: Any, args: tuple[Any, ...], view: Any) -> None:
        from kubernetes import watch

        rv = None
        while not self._stop:
            w = watch.Watch()
            self._watches.append(w)
            try:
                for ev in w.stream(fn, *args, resource_version=rv, timeout_seconds=60):
                    obj = ev["object"]
                    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                    rv = (
                        meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
                    )
                    self.events.append({"t": time.time(), "type": ev["type"], **view(obj)})
                    if self._stop:
                        return
            except Exception:  # watch expired or connection reset: re-list from scratch
                rv = None
                time.sleep(0.2)  # paces the re-lists

    def _pods(self) -> None:
        def view(p: Any) -> dict[str, Any]:
            labels = p.metadata.labels or {}
            term = None
            for cs in (p.status.container_statuses or []) if p.status else []:
                if cs.state and cs.state.terminated:
                    term = cs.state.terminated.exit_code
            return {
                "kind": "pod",
                "name": p.metadata.name,
                "import": labels.get("eio.dev/import"),
                "shard": labels.get("eio.dev/shard"),
                "phase": p.status.phase if p.status else None,
                "exit_code": term,
            }

        self._loop(self.core.list_namespaced_pod, (self.ns,), view)

    def _imports(self) -> None:
        def view(o: dict[str, Any]) -> dict[str, Any]:
            st = o.get("status") or {}
            return {"kind": "ei", "name": o["metadata"]["name"], "phase": st.get("phase")}

        self._loop(
            self.custom.list_namespaced_custom_object,
            ("eio.dev", "v1alpha1", self.ns, "embeddingimports"),
            view,
        )

    def stop(self) -> None:
        self._stop = True
        for w in self._watches:
            w.stop()


def texts_configmap(ns: str) -> dict[str, Any]:
    data = {f"doc{i}.txt": f"A tiny document number {i}." for i in range(SHARDS)}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "texts", "namespace": ns},
        "data": data,
    }


def manifest(name: str, ns: str, suspend: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "eio.dev/v1alpha1",
        "kind": "EmbeddingImport",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "sources": {"configMap": {"name": "texts"}, "paths": ["."], "format": "text"},
            "qdrant": {
                "embedded": {"hostPath": {"path": f"/tmp/eio-bench-scale/{ns}/{name}"}},
                "collection": "scale",
            },
            "embedding": {"threads": 1},
            "importer": {
                "image": "embedding-importer:0.1.0",
                "imagePullPolicy": "Never",
                "metricsPort": 0,
                "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "1Gi"}},
            },
            "memoryPolicy": {"backoffSeconds": 1, "keepTerminatedPods": 1},
            "parallelism": {"shards": SHARDS},
            "suspend": suspend,
        },
    }


def wait_phase(cl: kube.Cluster, ns: str, name: str, timeout: float) -> dict[str, Any]:
    def done() -> Any:
        st = kube.get_json(cl, "ei", name, "-n", ns).get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    return kube.wait_for(done, timeout, f"{name} finished", interval=2)


def qdrant_dir(ns: str, name: str) -> None:
    """The import's embedded-Qdrant hostPath, writable for the pods' non-root UID."""
    for p in (
        Path("/tmp/eio-bench-scale"),
        Path(f"/tmp/eio-bench-scale/{ns}"),
        Path(f"/tmp/eio-bench-scale/{ns}/{name}"),
    ):
        p.mkdir(exist_ok=True)
        p.chmod(0o777)


def template_checkpoints(cl: kube.Cluster, ns: str) -> dict[int, str]:
    """Run one real import of the shared files; return its complete checkpoints by shard."""
    qdrant_dir(ns, "template")
    kube.apply(cl, [manifest("template", ns)])
    st = wait_phase(cl, ns, "template", 900)
    if st.get("phase") != "Succeeded":
        raise RuntimeError(f"template import did not succeed: {st}")
    out = {}
    for i in range(SHARDS):
        cm = kube.get_json(cl, "configmap", f"template-ckpt-{i}", "-n", ns)
        out[i] = cm["data"]["checkpoint.json"]
    return out


def histogram_quantiles(text: str, name: str) -> dict[str, Any]:
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith(f"{name}_count"):
            count = float(line.split()[-1])
        elif line.startswith(f"{name}_sum"):
            total = float(line.split()[-1])
    buckets.sort()

    def q(p: float) -> float | None:
        target = p * count
        for le, cum in buckets:
            if cum >= target:
                return le
        return None

    return {
        "count": count,
        "mean_s": round(total / count, 4) if count else None,
        "p50_upper_bound_s": q(0.5),
        "p99_upper_bound_s": q(0.99),
        "buckets": buckets,
    }


def analyse(
    events: list[dict[str, Any]], names: list[str], sent: dict[str, float]
) -> dict[str, Any]:
    ei_added: dict[str, float] = dict(sent)
    ei_done: dict[str, float] = {}
    pod_added: dict[tuple[str, str], float] = {}
    shard_end: dict[tuple[str, str], float] = {}
    for e in events:
        if e["kind"] == "ei":
            if e["phase"] == "Succeeded" and e["name"] not in ei_done:
                ei_done[e["name"]] = e["t"]
        else:
            key = (e["import"], e["shard"])
            if e["type"] == "ADDED" and key not in pod_added:
                pod_added[key] = e["t"]
            if e["exit_code"] is not None and key not in shard_end:
                shard_end[key] = e["t"]  # first event showing the shard's pod terminated
    pod_end: dict[str, float] = {}
    for (imp, _), t in shard_end.items():
        pod_end[imp] = max(pod_end.get(imp, 0.0), t)
    create_to_pod = [
        pod_added[(n, str(s))] - ei_added[n]
        for n in names
        for s in range(SHARDS)
        if (n, str(s)) in pod_added and n in ei_added
    ]
    end_to_status = [ei_done[n] - pod_end[n] for n in names if n in ei_done and n in pod_end]
    total = [ei_done[n] - ei_added[n] for n in names if n in ei_done and n in ei_added]

    def stats(xs: list[float]) -> dict[str, Any]:
        if not xs:
            return {"n": 0}
        return {
            "n": len(xs),
            "p50": round(c.pct(xs, 50), 3),
            "p99": round(c.pct(xs, 99), 3),
            "max": round(max(xs), 3),
        }

    return {
        "create_to_pod_s": stats(create_to_pod),
        "pod_end_to_status_s": stats(end_to_status),
        "import_total_s": stats(total),
        "succeeded": len([n for n in names if n in ei_done]),
        "imports": len(names),
        "_raw": {"create_to_pod": create_to_pod, "end_to_status": end_to_status},
    }


def plot(data: dict[str, Any]) -> Path:
    plt = c.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3))
    a = data["latency"]
    xs = [a["_raw"]["create_to_pod"], a["_raw"]["end_to_status"]]
    axes[0].boxplot(xs, widths=0.5)
    axes[0].set_xticks(
        [1, 2],
        [
            f"resumed -> shard pod created\np50 {a['create_to_pod_s'].get('p50')}"
            f" s, p99 {a['create_to_pod_s'].get('p99')} s",
            f"last pod ended -> Succeeded\np50 "
            f"{a['pod_end_to_status_s'].get('p50')} s, p99 "
            f"{a['pod_end_to_status_s'].get('p99')} s",
        ],
        fontsize=8,
    )
    axes[0].set_ylabel("seconds")
    axes[0].set_title(f"{data['imports']} imports x {SHARDS} shards on one operator", fontsize=10)
    axes[0].grid(True, axis="y", alpha=0.3)
    s = data["operator_rss_series"]
    axes[1].plot([p[0] for p in s], [c.mib(p[1]) for p in s])
    axes[1].set_xlabel("seconds since the imports were applied")
    axes[1].set_ylabel("operator RSS (MiB)")
    axes[1].set_title(
        f"operator memory, peak {c.mib(data['operator_rss_peak']):.0f} MiB", fontsize=10
    )
    axes[1].grid(True, alpha=0.3)
    p = c.save_figure(fig, "operator_scale")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__)
    ap.add_argument("--imports", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.imports, a.timeout = 5, min(a.timeout, 600)
    cl = kube.cluster()
    if cl is None:
        print("the dev cluster is not up (`devcluster up`): not run", file=sys.stderr)
        return 2
    ns, work = kube.bench_namespace(cl, "bench-scale")
    op = watcher = None
    rss: list[tuple[float, int]] = []
    try:
        op = kube.start_operator(cl, ns, work / "operator.log", resync=10)
        kube.apply(cl, [texts_configmap(ns)])
        cps = template_checkpoints(cl, ns)
        names = [f"imp{i:03d}" for i in range(a.imports)]
        for n in names:
            qdrant_dir(ns, n)
        # 1) the imports, suspended: the operator creates (and owns) their checkpoint ConfigMaps
        kube.apply(cl, [manifest(n, ns, suspend=True) for n in names])
        from kubernetes import client as kclient

        from eio_common.kubeapi import api_client

        api = api_client()
        core = kclient.CoreV1Api(api)
        custom = kclient.CustomObjectsApi(api)

        def owned_cms() -> bool:
            have = {
                cm.metadata.name
                for cm in core.list_namespaced_config_map(ns).items
                if cm.metadata.owner_references
            }
            return all(f"{n}-ckpt-{s}" in have for n in names for s in range(SHARDS))

        kube.wait_for(owned_cms, 600, "checkpoint ConfigMaps created by the operator", 2)
        # 2) complete checkpoints into them (the fake workload)
        for n in names:
            for s in range(SHARDS):
                core.patch_namespaced_config_map(
                    f"{n}-ckpt-{s}", ns, {"data": {"checkpoint.json": cps[s]}}
                )
        rss_before = op.rss()
        watcher = Watcher(ns).start()

        def watching() -> bool:  # a new watch first lists every existing import as ADDED
            return {e["name"] for e in watcher.events if e["kind"] == "ei"} >= set(names)

        kube.wait_for(watching, 120, "the import watch listing every import", interval=0.1)
        t0 = time.time()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss.append((round(time.time() - t0, 2), op.rss()))
                stop.wait(0.5)

        threading.Thread(target=sample, daemon=True).start()
        # 3) resume all imports at once; the clock of each starts when its patch returns
        sent: dict[str, float] = {}
        for n in names:
            custom.patch_namespaced_custom_object(
                "eio.dev", "v1alpha1", ns, "embeddingimports", n, {"spec": {"suspend": False}}
            )
            sent[n] = time.time()
        apply_s = time.time() - t0

        def all_done() -> bool:
            phases = [e["phase"] for e in watcher.events if e["kind"] == "ei"]
            done = {
                e["name"]
                for e in watcher.events
                if e["kind"] == "ei" and e["phase"] in ("Succeeded", "Failed")
            }
            return len(done & set(names)) == len(names) and bool(phases)

        try:
            kube.wait_for(all_done, a.timeout, "all imports finished", interval=2)
            timed_out = False
        except TimeoutError:
            timed_out = True
        wall = time.time() - t0
        time.sleep(3)  # deliberate: 3 s more of operator RSS samples after the last import
        stop.set()
        metrics = kube.metrics_text(op.metrics_port)
        lat = analyse(watcher.events, names, sent)
        failed = sorted(
            {e["name"] for e in watcher.events if e["kind"] == "ei" and e["phase"] == "Failed"}
        )
        data = {
            "command": "python bench/operator_scale.py" + (" --quick" if a.quick else ""),
            "imports": a.imports,
            "shards": SHARDS,
            "namespace": ns,
            "workload": "real embedding-importer pods whose checkpoint is already complete "
            "(exit 0 in ~1-2 s, no model load)",
            "apply_s": round(apply_s, 2),
            "wall_s": round(wall, 1),
            "timed_out": timed_out,
            "failed": failed,
            "latency": lat,
            "reconcile_time": histogram_quantiles(metrics, "eio_operator_reconcile_time_seconds"),
            "operator_rss_before": rss_before,
            "operator_rss_peak": max((r for _, r in rss), default=0),
            "operator_rss_end": rss[-1][1] if rss else 0,
            "operator_rss_series": rss,
        }
    finally:
        if watcher:
            watcher.stop()
        if not a.keep:
            kube.teardown(cl, ns, op)
            shutil.rmtree(f"/tmp/eio-bench-scale/{ns}", ignore_errors=True)
        elif op:
            op.stop()
    print(
        json.dumps(
            {k: v for k, v in data.items() if k not in ("operator_rss_series",)}
            | {"latency": {k: v for k, v in lat.items() if k != "_raw"}},
            indent=1,
            default=str,
        )
    )
    c.write_result("operator_scale", data, a.quick)
    print(f"wrote {plot(data)}")
    return 1 if data["timed_out"] or data["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
