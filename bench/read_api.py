"""Reads through the importer that holds an embedded store (its read API) against a direct open.

1. Latency: a store of N random points (384-dim, ~200-byte payloads) is queried (top 10, with
   payloads) Q times directly (``EdgeSink.search``, in process) and Q times through the read API
   with qdrant-client (``QdrantClient(url=...).query_points``), without and with a payload
   filter; p50/p99 of each.
2. Import throughput while queries run: the same corpus is imported R times without queries and
   R times with one query per second through the importer's read API (found from the store's
   address file, as ``embedding-importer search`` finds it); chunks/s of the import loop from
   the run report, medians, and their ratio (alternating runs, one process at a time).

    python bench/read_api.py          # 100,000 points, 200 queries; 3 imports of 40 files each
    python bench/read_api.py --quick  # 3,000 points, 30 queries; 1 import each way
Writes bench/out/read_api.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import corpus

COLLECTION = "bench"
DIM = 384


def prefill(store: Path, n: int) -> None:
    import numpy as np

    from importer.sink import EdgeSink

    rng = np.random.default_rng(11)
    sink = EdgeSink(str(store), COLLECTION, True, DIM)
    try:
        for start in range(0, n, 512):
            m = min(512, n - start)
            vecs = rng.standard_normal((m, DIM)).astype("float32")
            ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"b{start + i}")) for i in range(m)]
            payloads = [
                {"project": f"p{(start + i) % 7}", "chunk_index": i, "text": "x" * 180}
                for i in range(m)
            ]
            sink.upsert(ids, vecs.tolist(), payloads)
        sink.sync()
    finally:
        sink.close()


def _ms(fn: Any, queries: list[list[float]]) -> dict[str, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(c.pct(times, 50), 2), "p99_ms": round(c.pct(times, 99), 2)}


def latency(store: Path, n_queries: int) -> dict[str, Any]:
    import numpy as np
    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    from importer.sink import EdgeSink

    rng = np.random.default_rng(3)
    queries = rng.standard_normal((n_queries, DIM)).astype("float32").tolist()
    sink = EdgeSink(str(store), COLLECTION, False, DIM)
    try:
        direct = _ms(lambda q: sink.search(q, 10), queries)
        url = sink.serve_reads(("127.0.0.1", 0), None)
        assert url is not None
        client = QdrantClient(url=url, timeout=60)
        flt = m.Filter(must=[m.FieldCondition(key="project", match=m.MatchValue(value="p3"))])
        held = _ms(lambda q: client.query_points(COLLECTION, query=q, limit=10), queries)
        held_filtered = _ms(
            lambda q: client.query_points(COLLECTION, query=q, limit=10, query_filter=flt),
            queries,
        )
        client.close()
    finally:
        sink.close()
    return {"direct": direct, "read_api": held, "read_api_filtered": held_filtered}


def _querier(store: Path, stop: threading.Event, answered: list[float]) -> None:
    """One query a second through whoever holds ``store`` (found as the CLI finds it)."""
    from qdrant_client import QdrantClient

    from importer.holder import holder_url

    client = None
    while not stop.is_set():
        if client is None and (url := holder_url(str(store))) is not None:
            client = QdrantClient(url=url, timeout=60, check_compatibility=False)
        if client is not None:
            t = time.perf_counter()
            try:
                client.query_points(COLLECTION, query=[0.01] * DIM, limit=10)
                answered.append((time.perf_counter() - t) * 1000)
            except Exception:  # the importer is closing the store: the last query may miss
                client = None
        stop.wait(1.0)


def import_once(src: Path, work: Path, queries: bool) -> dict[str, Any]:
    store, report = work / "q", work / "report.json"
    shutil.rmtree(store, ignore_errors=True)
    (work / "cp.json").unlink(missing_ok=True)
    stop, answered = threading.Event(), []  # type: ignore[var-annotated]
    thread = threading.Thread(target=_querier, args=(store, stop, answered), daemon=True)
    if queries:
        thread.start()
    cmd = c.importer_run_cmd(
        src,
        store,
        work / "cp.json",
        "--threads",
        "1",
        "--report",
        str(report),
        "--memory-threshold",
        "0",
        collection=COLLECTION,
    )
    subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
    stop.set()
    if queries:
        thread.join()
    rep = json.loads(report.read_text())
    loop = rep["elapsed_seconds"] - rep["store_open_seconds"]
    return {"chunks_per_s": rep["chunks_embedded"] / loop, "queries": len(answered),
            "query_p50_ms": round(c.pct(answered, 50), 1) if answered else None}  # fmt: skip


def throughput(work: Path, files: int, reps: int) -> dict[str, Any]:
    src = work / "src"
    corpus.generate(src, files=files, seed=9, median_turns=10)
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for _ in range(reps):
        runs["without"].append(import_once(src, work, queries=False))
        runs["with"].append(import_once(src, work, queries=True))
    without = c.median(r["chunks_per_s"] for r in runs["without"])
    with_q = c.median(r["chunks_per_s"] for r in runs["with"])
    assert all(r["queries"] > 0 for r in runs["with"]), "no query was answered during an import"
    return {
        "files": files,
        "reps": reps,
        "chunks_per_s_without_queries": round(without, 2),
        "chunks_per_s_with_1qps": round(with_q, 2),
        "ratio": round(with_q / without, 3),
        "runs": runs,
    }


def main() -> None:
    ap = c.arg_parser(__doc__, "3,000 points, 30 queries, 1 import each way")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.points, args.queries, args.files, args.reps = 3_000, 30, 3, 1
    work = Path(tempfile.mkdtemp(prefix="eio-read-api-", dir="/var/tmp"))
    try:
        prefill(work / "store", args.points)
        result = {
            "points": args.points,
            "queries": args.queries,
            "latency": latency(work / "store", args.queries),
            "import": throughput(work, args.files, args.reps),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "import"}, indent=1))
    imp = result["import"]
    print(f"import: {imp['chunks_per_s_without_queries']} chunks/s without queries, "
          f"{imp['chunks_per_s_with_1qps']} with 1 query/s (ratio {imp['ratio']})")  # fmt: skip
    c.write_result("read_api", result, args.quick)


if __name__ == "__main__":
    main()
