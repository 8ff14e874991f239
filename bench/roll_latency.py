#!/usr/bin/env python
"""Roll latency on the local cluster: importer container terminated -> replacement pod created
-> replacement Running, p50/p99, for planned exits (75, recycleEveryFiles) and for OOMKilled.

Needs ``devcluster up`` and the operator. The bench creates its own namespace, starts its own
operator process watching only that namespace (resync interval 2 s), and watches the pods
with the Kubernetes watch API, stamping every event with the local clock when it arrives:

  terminated seen   first watch event in which attempt n's container is terminated
  created           ADDED event of attempt n+1
  running           first event in which attempt n+1 is phase Running

The pod status timestamps (finishedAt, creationTimestamp, startedAt; 1 s resolution) are
recorded as a cross-check.

Scenarios (one EmbeddingImport each, run one after the other):
  exit75    K small text files (200 words) on a hostPath, recycleEveryFiles 1: one planned roll
            per file
  oomkilled memory limit L (700Mi), threshold off, IMPORTER_FAULT_HOLD_MB_PER_FILE H (250): the
            importer holds H MB more per finished file until the kernel OOM-kills it; files of
            4,000 words and batch size 8, so a checkpoint lands between files and most attempts
            make progress
Importer metrics are off (spec.importer.metricsPort 0): the node agent runs pods on the host
network, where a fixed metrics port clashes between pods.

    python bench/roll_latency.py             # exit75 21 files, oomkilled 12 files
    python bench/roll_latency.py --quick     # 3 and 3 files
Writes bench/out/roll_latency.json and docs/img/roll_latency.png.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import kube

LABEL_IMPORT = "eio.dev/import"
LABEL_ATTEMPT = "eio.dev/attempt"


class PodWatch:
    """Records every pod event in a namespace with its arrival time (time.time())."""

    def __init__(self, namespace: str) -> None:
        from kubernetes import client, watch

        from eio_common.kubeapi import api_client

        self.api = client.CoreV1Api(api_client())  # $KUBECONFIG, set by kube.cluster()
        self.ns = namespace
        self.events: list[dict[str, Any]] = []
        self._w = watch.Watch()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._stop = False

    def start(self) -> PodWatch:
        self._t.start()
        return self

    def _run(self) -> None:
        rv = None
        while not self._stop:
            try:
                for ev in self._w.stream(
                    self.api.list_namespaced_pod, self.ns, resource_version=rv, timeout_seconds=60
                ):
                    now = time.time()
                    pod = ev["object"]
                    rv = pod.metadata.resource_version
                    self.events.append({"t": now, "type": ev["type"], **_pod_view(pod)})
                    if self._stop:
                        return
            except Exception:  # watch expired or connection reset: re-list from scratch
                rv = None
                time.sleep(0.2)  # paces the re-lists

    def stop(self) -> None:
        self._stop = True
        self._w.stop()


def _pod_view(pod: Any) -> dict[str, Any]:
    labels = pod.metadata.labels or {}
    term = None
    started = None
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.state and cs.state.terminated:
            t = cs.state.terminated
            term = {
                "exit_code": t.exit_code,
                "reason": t.reason,
                "finished_at": t.finished_at.timestamp() if t.finished_at else None,
            }
        if cs.state and cs.state.running and cs.state.running.started_at:
            started = cs.state.running.started_at.timestamp()
    return {
        "pod": pod.metadata.name,
        "import": labels.get(LABEL_IMPORT),
        "attempt": int(labels.get(LABEL_ATTEMPT, -1)),
        "phase": pod.status.phase if pod.status else None,
        "created_ts": pod.metadata.creation_timestamp.timestamp()
        if pod.metadata.creation_timestamp
        else None,
        "started_ts": started,
        "terminated": term,
    }


def latencies(events: list[dict[str, Any]], import_name: str, want: str) -> list[dict[str, Any]]:
    """One sample per roll: attempt n terminated as ``want`` -> attempt n+1 created/Running."""
    evs = [e for e in events if e["import"] == import_name]
    first_term: dict[int, dict[str, Any]] = {}
    added: dict[int, dict[str, Any]] = {}
    running: dict[int, dict[str, Any]] = {}
    for e in evs:
        a = e["attempt"]
        if e["terminated"] and a not in first_term:
            first_term[a] = e
        if e["type"] == "ADDED" and a not in added:
            added[a] = e
        if e["phase"] == "Running" and a not in running:
            running[a] = e
    out = []
    for a, te in sorted(first_term.items()):
        t = te["terminated"]
        is_oom = t["reason"] == "OOMKilled"
        if (want == "oomkilled") != is_oom or (want == "exit75" and t["exit_code"] != 75):
            continue
        nxt = a + 1
        if nxt not in added:
            continue
        s: dict[str, Any] = {
            "attempt": a,
            "exit_code": t["exit_code"],
            "reason": t["reason"],
            "to_created_s": round(added[nxt]["t"] - te["t"], 3),
        }
        if nxt in running:
            s["to_running_s"] = round(running[nxt]["t"] - te["t"], 3)
        if t["finished_at"] and added[nxt]["created_ts"]:
            s["status_finished_to_created_s"] = added[nxt]["created_ts"] - t["finished_at"]
        out.append(s)
    return out


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for key in ("to_created_s", "to_running_s", "status_finished_to_created_s"):
        xs = [s[key] for s in samples if s.get(key) is not None]
        if xs:
            out[key] = {
                "p50": round(c.pct(xs, 50), 3),
                "p99": round(c.pct(xs, 99), 3),
                "min": round(min(xs), 3),
                "max": round(max(xs), 3),
            }
    return out


def manifest(
    name: str,
    ns: str,
    sources: Path,
    qdrant: Path,
    memory: str,
    policy: dict[str, Any],
    env: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "apiVersion": "eio.dev/v1alpha1",
        "kind": "EmbeddingImport",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "sources": {"hostPath": {"path": str(sources)}, "paths": ["*.txt"], "format": "text"},
            "qdrant": {"embedded": {"hostPath": {"path": str(qdrant)}}, "collection": name},
            "embedding": {"threads": 1, "batchSize": 8},
            "importer": {
                "image": "embedding-importer:0.1.0",
                "imagePullPolicy": "Never",
                "resources": {"limits": {"memory": memory}},
                "env": env,
                "metricsPort": 0,
            },
            "memoryPolicy": {
                "backoffSeconds": 1,
                "stallSeconds": 600,
                "keepTerminatedPods": 100,
                "retryBudget": 10,
                **policy,
            },
        },
    }


def write_sources(directory: Path, files: int, words: int) -> None:
    """``files`` text files of ``words`` words each (paragraphs of 60 words)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = c.vocabulary()
    for i in range(files):
        ws = [vocab[(i * 7919 + k * 104729) % len(vocab)] for k in range(words)]
        paras = [" ".join(ws[j : j + 60]) + "." for j in range(0, len(ws), 60)]
        (directory / f"doc{i:03d}.txt").write_text("\n\n".join(paras))
    directory.chmod(0o755)


def run_scenario(
    cl: kube.Cluster,
    ns: str,
    watch: PodWatch,
    name: str,
    files: int,
    words: int,
    memory: str,
    policy: dict[str, Any],
    env: list[dict[str, str]],
    timeout: float,
) -> dict[str, Any]:
    base = Path(
        tempfile.mkdtemp(prefix=f"roll-{name}-", dir=os.environ.get("BENCH_ROLL_DIR", "/tmp"))
    )
    base.chmod(0o755)
    qdrant = base / "qdrant"
    qdrant.mkdir()
    os.chmod(qdrant, 0o777)  # pods run as a non-root UID
    write_sources(base / "src", files, words)
    kube.apply(cl, [manifest(name, ns, base / "src", qdrant, memory, policy, env)])
    t0 = time.monotonic()

    def finished() -> Any:
        st = kube.get_json(cl, "ei", name, "-n", ns).get("status") or {}
        return st if st.get("phase") in ("Succeeded", "Failed") else None

    try:
        st = kube.wait_for(finished, timeout, f"{name} finished", interval=2)
    except TimeoutError:
        st = kube.get_json(cl, "ei", name, "-n", ns).get("status") or {}
        st["timed_out"] = True
    return {
        "status": {k: st.get(k) for k in ("phase", "progress", "restarts", "timed_out")},
        "seconds": round(time.monotonic() - t0, 1),
    }


def plot(data: dict[str, Any]) -> Path:
    plt = c.plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    pos = 0
    ticks, labels = [], []
    for scen, color in (("exit75", "tab:blue"), ("oomkilled", "tab:red")):
        samples = data["scenarios"].get(scen, {}).get("samples", [])
        for key, label in (("to_created_s", "-> pod created"), ("to_running_s", "-> Running")):
            xs = [s[key] for s in samples if s.get(key) is not None]
            if not xs:
                continue
            ax.boxplot(
                [xs],
                positions=[pos],
                widths=0.6,
                patch_artist=True,
                boxprops={"facecolor": color, "alpha": 0.4},
            )
            ax.scatter([pos] * len(xs), xs, s=10, color=color, zorder=3)
            ticks.append(pos)
            labels.append(f"{scen}\n{label}\np50 {c.pct(xs, 50):.2f}s p99 {c.pct(xs, 99):.2f}s")
            pos += 1
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_ylabel("seconds after the container terminated (watch event)")
    ax.set_title("Roll latency on the local cluster (one sample per roll)")
    ax.grid(True, axis="y", alpha=0.3)
    p = c.save_figure(fig, "roll_latency")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__)
    ap.add_argument("--exit75-files", type=int, default=21)
    ap.add_argument("--oom-files", type=int, default=12)
    ap.add_argument("--oom-words", type=int, default=4000, help="words per file (OOM scenario)")
    ap.add_argument("--oom-limit", default="700Mi")
    ap.add_argument("--oom-hold-mb", type=int, default=250)
    ap.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    ap.add_argument("--timeout", type=float, default=1800, help="per scenario")
    a = ap.parse_args(argv)
    if a.quick:
        a.exit75_files, a.oom_files, a.timeout = 3, 3, min(a.timeout, 600)
    cl = kube.cluster()
    if cl is None:
        print("the dev cluster is not up (`devcluster up`): not run", file=sys.stderr)
        return 2
    ns, work = kube.bench_namespace(cl, "bench-roll")
    work.chmod(0o755)
    os.environ["BENCH_ROLL_DIR"] = str(work)  # scenario dirs go under work, removed at the end
    scenarios: dict[str, Any] = {}
    op = watch = None
    try:
        op = kube.start_operator(cl, ns, work / "operator.log")
        watch = PodWatch(ns).start()
        r = run_scenario(
            cl,
            ns,
            watch,
            "roll75",
            a.exit75_files,
            200,
            "1Gi",
            {"recycleEveryFiles": 1, "threshold": "0"},
            [],
            a.timeout,
        )
        r["samples"] = latencies(watch.events, "roll75", "exit75")
        r["summary"] = summary(r["samples"])
        scenarios["exit75"] = r
        print(f"exit75: {r['status']} in {r['seconds']} s; {r['summary']}", flush=True)
        r = run_scenario(
            cl,
            ns,
            watch,
            "rolloom",
            a.oom_files,
            a.oom_words,
            a.oom_limit,
            {"threshold": "0", "oomsBeforeGrow": 5},
            [{"name": "IMPORTER_FAULT_HOLD_MB_PER_FILE", "value": str(a.oom_hold_mb)}],
            a.timeout,
        )
        r["samples"] = latencies(watch.events, "rolloom", "oomkilled")
        r["summary"] = summary(r["samples"])
        scenarios["oomkilled"] = r
        print(f"oomkilled: {r['status']} in {r['seconds']} s; {r['summary']}", flush=True)
    finally:
        if watch:
            watch.stop()
        if not a.keep:
            kube.teardown(cl, ns, op)
            shutil.rmtree(work, ignore_errors=True)
        elif op:
            op.stop()
    data = {
        "command": "python bench/roll_latency.py" + (" --quick" if a.quick else ""),
        "namespace": ns,
        "oom_limit": a.oom_limit,
        "oom_hold_mb_per_file": a.oom_hold_mb,
        "scenarios": scenarios,
        "events": [
            {**e, "t_iso": datetime.fromtimestamp(e["t"]).isoformat()} for e in watch.events
        ],
    }
    c.write_result("roll_latency", data, a.quick)
    print(f"wrote {plot(data)}")
    ok = [s["status"]["phase"] == "Succeeded" for s in scenarios.values()]
    return 0 if len(ok) == 2 and all(ok) else 1


if __name__ == "__main__":
    raise SystemExit(main())
