#!/usr/bin/env python
"""Embedded store: qdrant-client local mode (``QdrantClient(path=...)``) against Qdrant Edge.

For each store and each number of points already in it (10k, 100k, 1M), measured in fresh
child processes so every RSS figure is the child's own:

  upsert      points/s of a run of ``--run-batches`` batches of 64 new points (384-dim random
              float32 vectors, ~300-byte payloads) into the store as it was filled; every run
              starts from a fresh copy of the filled store, so each starts at exactly N points
  reopen      wall time from the parent starting a fresh interpreter to the store opened and
              ``count`` answered, and the child's RssAnon / RssFile (/proc/self/status) at that
              moment; median of ``--reps``
  flush       (Edge) the same upsert run with ``flush()`` after every batch, every 10 and every
              100 batches, against no flush in the run (the importer flushes before each
              checkpoint write, every ~5 s)

Filling (not measured) takes a faster path: Edge through ``update()`` in batches of 1,024;
local mode by writing its SQLite table directly in one transaction (the rows its own
``persist()`` writes: base64-pickled ID -> pickled PointStruct), because through the client
local mode commits (fsyncs) once per point (~100-170 points/s). The store is grown in place
from one size to the next. Files live under ``--dir`` (default /var/tmp/eio-bench, a disk like
a real PVC) and are deleted at the end unless ``--keep``.

    python bench/store.py                                  # Edge 10k/100k/1M, local 10k/100k
    python bench/store.py --sizes 10000,100000 --local-max 10000
    python bench/store.py --quick                          # smoke: 500 points, 1 rep
Writes bench/out/store.json and docs/img/store_scaling.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c

DIM = 384
BATCH = 64
FILL_BATCH = 1024
COLLECTION = "bench"
SEED = 20261204
ID_NAMESPACE = uuid.UUID("0b6a5c1e-2f4d-4e8a-9c3b-7d1e5f2a9b40")
STORES = ("edge", "local")
FLUSH_MODES = (0, 100, 10, 1)  # flush after every N batches; 0 = not in the run
_TEXT = (
    "the import restarts when memory grows and the checkpoint says where to go on so nothing "
    "is embedded twice a vector for every chunk of every file in the session with its source"
)
_WORDS = _TEXT.split(" ")


# ---------------------------------------------------------------------------------------------
# Pure helpers (unit-tested in tests/unit/test_bench_helpers.py)
# ---------------------------------------------------------------------------------------------
def point_id(i: int) -> str:
    """Deterministic UUID string of point number ``i`` (the importer's IDs are UUIDs too)."""
    return str(uuid.uuid5(ID_NAMESPACE, str(i)))


def payload(i: int) -> dict[str, Any]:
    """A payload shaped like the importer's (text, source, chunk_index, format, role), whose
    JSON is about 300 bytes."""
    words = [_WORDS[(i * 7 + k * 13) % len(_WORDS)] for k in range(34)]
    text = " ".join(words)[:190]
    return {
        "text": text,
        "source": f"projects/-home-user-project-{i // 5000:04d}/{i // 50:08x}-session.jsonl",
        "chunk_index": i % 50,
        "format": "claude",
        "role": "user" if i % 2 else "assistant",
    }


def parse_status(text: str) -> dict[str, int]:
    """Memory lines of /proc/PID/status (``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem``,
    ``VmHWM``) in bytes."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                mult = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
                out[key] = int(parts[0]) * mult
    return out


def flush_points(batches: int, every: int) -> list[int]:
    """Indexes of the batches after which a run flushes (``every`` 0: none)."""
    if every <= 0:
        return []
    return [b for b in range(batches) if (b + 1) % every == 0]


def du_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def fsync_tree(path: Path) -> None:
    """Write a copied store to disk, so the first ``flush()`` of a run does not pay for the
    copy's dirty pages."""
    for root, _dirs, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# ---------------------------------------------------------------------------------------------
# Stores (imported lazily: the parent and the unit tests never load them)
# ---------------------------------------------------------------------------------------------
def vectors(start: int, n: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(SEED + start)
    return rng.random((n, DIM), dtype=np.float32) - 0.5


def edge_config() -> Any:
    import qdrant_edge as q

    # as importer/sink.py's EdgeSink: cosine, vectors cold, write-ahead log on
    return q.EdgeConfig(
        vectors=q.EdgeVectorParams(DIM, distance=q.Distance.Cosine, memory=q.Memory.Cold),
        wal_enabled=True,
    )


def open_store(store: str, path: str, create: bool = False) -> Any:
    if store == "edge":
        import qdrant_edge as q

        if create and not (os.path.isdir(path) and os.listdir(path)):
            os.makedirs(path, exist_ok=True)
            return q.EdgeShard.create(path, edge_config())
        return q.EdgeShard.load(path)
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=path)
    if create and not client.collection_exists(COLLECTION):
        client.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        )
    return client


def count(store: str, s: Any) -> int:
    if store == "edge":
        import qdrant_edge as q

        return int(s.count(q.CountRequest(exact=True)))
    return int(s.count(COLLECTION, exact=True).count)


def close(store: str, s: Any) -> None:
    if store == "edge":
        s.flush()
    s.close()


def upsert(store: str, s: Any, ids: list[str], vecs: Any, payloads: list[dict[str, Any]]) -> None:
    """One batch, the way the importer's sinks send it (vectors as Python lists)."""
    if store == "edge":
        import qdrant_edge as q

        pts = [q.Point(i, v.tolist(), p) for i, v, p in zip(ids, vecs, payloads, strict=True)]
        s.update(q.UpdateOperation.upsert_points(pts))
    else:
        from qdrant_client import models

        s.upsert(COLLECTION, models.Batch(ids=ids, vectors=vecs.tolist(), payloads=payloads))


def fill_local_sqlite(path: str, start: int, end: int) -> None:
    """Append points ``start..end-1`` to a local-mode store in one SQLite transaction, as rows
    of the same shape ``qdrant_client.local.persistence.CollectionPersistence.persist`` writes."""
    import pickle
    import sqlite3

    from qdrant_client import models
    from qdrant_client.local.persistence import CollectionPersistence

    db = Path(path) / "collection" / COLLECTION / "storage.sqlite"
    conn = sqlite3.connect(str(db))
    try:
        with conn:
            for b0 in range(start, end, FILL_BATCH):
                n = min(FILL_BATCH, end - b0)
                vecs = vectors(b0, n)
                rows = []
                for k in range(n):
                    pid = point_id(b0 + k)
                    pt = models.PointStruct(
                        id=pid, vector=vecs[k].tolist(), payload=payload(b0 + k)
                    )
                    rows.append(
                        (CollectionPersistence.encode_key(pid), sqlite3.Binary(pickle.dumps(pt)))
                    )
                conn.executemany("INSERT OR REPLACE INTO points VALUES (?, ?)", rows)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------
def _status() -> dict[str, int]:
    with open("/proc/self/status") as fh:
        return parse_status(fh.read())


def child_reopen(a: dict[str, Any]) -> dict[str, Any]:
    t_main = time.monotonic()
    if a["store"] == "edge":
        import qdrant_edge  # noqa: F401
    else:
        import qdrant_client  # noqa: F401
    t_imported = time.monotonic()
    s = open_store(a["store"], a["path"])
    t_opened = time.monotonic()
    n = count(a["store"], s)
    t_counted = time.monotonic()
    mem = _status()
    s.close()
    return {
        "count": n,
        "t_main": t_main,
        "t_imported": t_imported,
        "t_opened": t_opened,
        "t_counted": t_counted,
        "status": mem,
    }


def child_upsert(a: dict[str, Any]) -> dict[str, Any]:
    store, start, batches, every = a["store"], a["start"], a["batches"], a["flush_every"]
    s = open_store(store, a["path"])
    before = count(store, s)
    # inputs made before the clock starts; the timed loop converts and sends, as a sink does
    work = []
    for b in range(batches):
        i0 = start + b * BATCH
        work.append(
            (
                [point_id(i) for i in range(i0, i0 + BATCH)],
                vectors(i0, BATCH),
                [payload(i) for i in range(i0, i0 + BATCH)],
            )
        )
    flush_after = set(flush_points(batches, every))
    flush_times: list[float] = []
    t0 = time.perf_counter()
    for b, (ids, vecs, pls) in enumerate(work):
        upsert(store, s, ids, vecs, pls)
        if b in flush_after:
            tf = time.perf_counter()
            s.flush()
            flush_times.append(time.perf_counter() - tf)
    loop_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    if store == "edge":
        s.flush()
    final_flush_s = time.perf_counter() - t1
    after = count(store, s)
    s.close()
    pts = batches * BATCH
    return {
        "count_before": before,
        "count_after": after,
        "points": pts,
        "loop_s": loop_s,
        "points_per_s": pts / loop_s,
        "flushes": len(flush_after),
        "flush_s_in_loop": sum(flush_times),
        "flush_times": [round(x, 5) for x in flush_times],
        "final_flush_s": final_flush_s,
    }


def child_fill(a: dict[str, Any]) -> dict[str, Any]:
    store, start, end = a["store"], a["start"], a["end"]
    t0 = time.perf_counter()
    if store == "edge":
        s = open_store(store, a["path"], create=True)
        for b0 in range(start, end, FILL_BATCH):
            n = min(FILL_BATCH, end - b0)
            upsert(
                store,
                s,
                [point_id(i) for i in range(b0, b0 + n)],
                vectors(b0, n),
                [payload(i) for i in range(b0, b0 + n)],
            )
        n = count(store, s)
        close(store, s)
    else:
        s = open_store(store, a["path"], create=True)  # creates meta.json and the table
        s.close()
        fill_local_sqlite(a["path"], start, end)
        n = -1  # counted by the reopen measurements that follow
    return {"count": n, "seconds": time.perf_counter() - t0}


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def count_of(store: str, path: Path) -> int:
    r, _ = run_child({"mode": "reopen", "store": store, "path": str(path)})
    return int(r["count"])


def run_child(args: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Run ``store.py --child ARGS`` in a fresh interpreter; return (its JSON, parent t0)."""
    t0 = time.monotonic()
    p = subprocess.run(
        [c.PYTHON, str(Path(__file__).resolve()), "--child", json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise RuntimeError(f"child {args} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), t0


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
def evict_tree(path: Path) -> None:
    """Drop this store's pages (and only them) from the page cache, as after a node restart or
    a move to another node: write them out, then ``POSIX_FADV_DONTNEED`` on every file."""
    fsync_tree(path)
    for root, _dirs, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure_reopen(store: str, path: Path, reps: int, cold: bool = False) -> dict[str, Any]:
    """Reopen in a fresh process ``reps`` times; with ``cold`` the store's files are evicted
    from the page cache before each."""
    runs = []
    for _ in range(reps):
        if cold:
            evict_tree(path)
        r, t0 = run_child({"mode": "reopen", "store": store, "path": str(path)})
        runs.append(
            {
                "count": r["count"],
                "total_s": r["t_counted"] - t0,
                "start_s": r["t_main"] - t0,
                "import_s": r["t_imported"] - r["t_main"],
                "open_s": r["t_opened"] - r["t_imported"],
                "count_s": r["t_counted"] - r["t_opened"],
                "rss_anon": r["status"].get("RssAnon", 0),
                "rss_file": r["status"].get("RssFile", 0),
                "rss": r["status"].get("VmRSS", 0),
            }
        )
    med = {k: c.median(x[k] for x in runs) for k in runs[0] if k != "count"}
    return {"count": runs[0]["count"], "median": med, "runs": runs}


def measure_runs(
    store: str,
    base: Path,
    scratch: Path,
    n: int,
    modes: tuple[int, ...],
    reps: int,
    batches: int,
    copy: bool,
) -> dict[int, list[dict[str, Any]]]:
    """Upsert runs, the modes alternating within each round: each on a fresh copy of the
    store when ``copy``, else one after the other into the store itself (it grows by
    ``len(modes) x reps x batches x 64`` points; each run records the count it started at)."""
    out: dict[int, list[dict[str, Any]]] = {m: [] for m in modes}
    k = 0
    for _ in range(reps):
        for m in modes:
            target = base
            if copy:
                shutil.rmtree(scratch, ignore_errors=True)
                shutil.copytree(base, scratch)
                fsync_tree(scratch)
                target = scratch
            k += 1
            r, _ = run_child(
                {
                    "mode": "upsert",
                    "store": store,
                    "path": str(target),
                    "start": 10_000_000 * k + n,
                    "batches": batches,
                    "flush_every": m,
                }
            )
            out[m].append(r)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def summarise_runs(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        str(m): {
            "points_per_s_median": c.median(r["points_per_s"] for r in rs),
            "points_per_s": [round(r["points_per_s"], 1) for r in rs],
            "flushes": rs[0]["flushes"],
            "flush_s_median": c.median(r["flush_s_in_loop"] for r in rs),
            "final_flush_s_median": c.median(r["final_flush_s"] for r in rs),
            "first_flush_s_median": c.median(r["flush_times"][0] for r in rs)
            if rs[0]["flush_times"]
            else None,
            "later_flush_s_median": c.median(t for r in rs for t in r["flush_times"][1:])
            if len(rs[0]["flush_times"]) > 1
            else None,
            "count_before": [r["count_before"] for r in rs],
        }
        for m, rs in runs.items()
    }


def plot(results: list[dict[str, Any]]) -> Path:
    plt = c.plt()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colors = {"edge": "tab:blue", "local": "tab:red"}
    names = {"edge": "Qdrant Edge 0.9.0 (Cold, WAL)", "local": "qdrant-client local mode"}
    for store in STORES:
        rows = [r for r in results if r["store"] == store]
        if not rows:
            continue
        xs = [r["points"] for r in rows]
        col = colors[store]
        axes[0][0].plot(
            xs,
            [r["upsert"]["0"]["points_per_s_median"] for r in rows],
            "o-",
            color=col,
            label=names[store],
        )
        axes[0][1].plot(
            xs,
            [r["reopen"]["median"]["total_s"] for r in rows],
            "o-",
            color=col,
            label=f"{names[store]}: warm page cache",
        )
        axes[0][1].plot(
            xs,
            [r["reopen_cold"]["median"]["total_s"] for r in rows],
            "s--",
            color=col,
            label=f"{names[store]}: store evicted from cache",
        )
        axes[1][0].plot(
            xs,
            [c.mib(r["reopen"]["median"]["rss_anon"]) for r in rows],
            "o-",
            color=col,
            label=f"{names[store]}: anonymous",
        )
        axes[1][0].plot(
            xs,
            [c.mib(r["reopen"]["median"]["rss_file"]) for r in rows],
            "s--",
            color=col,
            label=f"{names[store]}: file-backed",
        )
        if store == "edge":
            for m, style in zip(FLUSH_MODES, ("o-", "^-", "v-", "x-"), strict=True):
                lab = "no flush in the run" if m == 0 else f"flush every {m} batch(es)"
                axes[1][1].plot(
                    xs,
                    [r["upsert"][str(m)]["points_per_s_median"] for r in rows],
                    style,
                    label=lab,
                )
    local = [r["points"] for r in results if r["store"] == "local"]
    largest = max(r["points"] for r in results)
    if local and max(local) < largest:
        for ax in (axes[0][0], axes[0][1], axes[1][0]):
            ax.annotate(
                f"local mode above {max(local):,}: not run",
                xy=(0.98, 0.02),
                xycoords="axes fraction",
                ha="right",
                va="bottom",
                fontsize=7,
                color="tab:red",
            )
    titles = (
        ("upsert rate, batches of 64 (median)", "points/s"),
        ("reopen: process start -> count answered (median)", "seconds"),
        ("RSS after reopen (median)", "MiB"),
        ("Qdrant Edge upsert rate by flush frequency", "points/s"),
    )
    for ax, (title, ylabel) in zip([a for row in axes for a in row], titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("points already in the store")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Embedded store: qdrant-client local mode vs Qdrant Edge (384-dim, ~300 B payloads)"
    )
    p = c.save_figure(fig, "store_scaling")
    return p


def print_tables(results: list[dict[str, Any]]) -> None:
    print("\n| store | points | upserts/s (median) | runs |")
    print("|---|---:|---:|---|")
    for r in results:
        u = r["upsert"]["0"]
        print(
            f"| {r['store']} | {r['points']:,} | {u['points_per_s_median']:,.0f} | "
            f"{', '.join(f'{x:,.0f}' for x in u['points_per_s'])} |"
        )
    print(
        "\n| store | points | reopen s, warm cache (median) | of which start+import / open /"
        " count s | reopen s, store evicted from page cache (median) | of which open / count s |"
    )
    print("|---|---:|---:|---|---:|---|")
    for r in results:
        m, k = r["reopen"]["median"], r["reopen_cold"]["median"]
        print(
            f"| {r['store']} | {r['points']:,} | {m['total_s']:.2f} | "
            f"{m['start_s'] + m['import_s']:.2f} / {m['open_s']:.2f} / {m['count_s']:.3f} | "
            f"{k['total_s']:.2f} | {k['open_s']:.2f} / {k['count_s']:.3f} |"
        )
    print(
        "\n| store | points | RssAnon MiB | RssFile MiB | RssAnon MiB, evicted |"
        " RssFile MiB, evicted | store on disk MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        m, k = r["reopen"]["median"], r["reopen_cold"]["median"]
        print(
            f"| {r['store']} | {r['points']:,} | {c.mib(m['rss_anon']):,.0f} | "
            f"{c.mib(m['rss_file']):,.0f} | {c.mib(k['rss_anon']):,.0f} | "
            f"{c.mib(k['rss_file']):,.0f} | {c.mib(r['disk_bytes']):,.0f} |"
        )
    edge = [r for r in results if r["store"] == "edge"]
    if edge:
        print(
            "\n| points | no flush in run | flush every 100 | every 10 | every batch |"
            " every batch / none | one flush, ms (median, every-batch runs) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in edge:
            u = r["upsert"]
            one = u["1"]["later_flush_s_median"] or u["1"]["first_flush_s_median"] or 0.0
            print(
                f"| {r['points']:,} | "
                + " | ".join(f"{u[str(m)]['points_per_s_median']:,.0f}" for m in FLUSH_MODES)
                + f" | {u['1']['points_per_s_median'] / u['0']['points_per_s_median']:.2f} | "
                f"{1000 * one:.1f} |"
            )


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__, "500 points, 1 rep, short runs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument(
        "--local-max",
        type=int,
        default=100_000,
        help="largest size filled and measured for local mode",
    )
    ap.add_argument("--stores", default="edge,local")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--run-batches", type=int, default=200, help="batches of 64 per Edge upsert run"
    )
    ap.add_argument(
        "--local-run-batches",
        type=int,
        default=20,
        help="batches of 64 per local-mode upsert run (it commits once per point)",
    )
    ap.add_argument(
        "--copy-max",
        type=int,
        default=200_000,
        help="up to this size every upsert run starts from a fresh copy of the "
        "filled store; above it the runs go into the store itself",
    )
    ap.add_argument("--dir", default="/var/tmp/eio-bench")
    ap.add_argument("--keep", action="store_true", help="keep the filled stores")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--plot-only", action="store_true", help="redraw the plot from bench/out/store.json"
    )
    a = ap.parse_args(argv)
    if a.plot_only:
        d = json.loads((c.OUT_DIR / "store.json").read_text())
        print_tables(d["results"])
        print(f"wrote {plot(d['results'])}")
        return 0
    if a.child:
        args = json.loads(a.child)
        fn = {"reopen": child_reopen, "upsert": child_upsert, "fill": child_fill}[args["mode"]]
        print(json.dumps(fn(args)))
        return 0
    if a.quick:
        a.sizes, a.reps, a.run_batches, a.local_run_batches = "500", 1, 10, 2
        a.local_max = 500
    sizes = sorted(int(x) for x in a.sizes.split(","))
    stores = [s for s in STORES if s in a.stores.split(",")]
    uptime_start = uptime()
    root = Path(a.dir) / f"store-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    filled = dict.fromkeys(stores, 0)  # fill IDs 0..filled-1 are in the store
    extra = dict.fromkeys(stores, 0)  # points that upsert runs left in it (above --copy-max)
    not_run: list[str] = []
    try:
        for n in sizes:
            for store in stores:
                if store == "local" and n > a.local_max:
                    not_run.append(f"local mode at {n:,} points (--local-max {a.local_max:,})")
                    continue
                base = root / f"{store}-base"
                f, _ = run_child(
                    {
                        "mode": "fill",
                        "store": store,
                        "path": str(base),
                        "start": filled[store],
                        "end": n,
                    }
                )
                print(
                    f"[{time.strftime('%H:%M:%S')}] {store}: filled {filled[store]:,} -> {n:,} "
                    f"in {f['seconds']:.1f} s",
                    flush=True,
                )
                filled[store] = n
                disk = du_bytes(base)
                reopen = measure_reopen(store, base, a.reps)
                reopen_cold = measure_reopen(store, base, a.reps, cold=True)
                assert reopen["count"] == n + extra[store], (store, n, reopen["count"])
                modes = FLUSH_MODES if store == "edge" else (0,)
                batches = a.run_batches if store == "edge" else a.local_run_batches
                copy = n <= a.copy_max
                runs = measure_runs(store, base, root / "scratch", n, modes, a.reps, batches, copy)
                if not copy:
                    extra[store] = count_of(store, base) - n
                row = {
                    "store": store,
                    "points": n,
                    "disk_bytes": disk,
                    "fill_s": f["seconds"],
                    "reopen": reopen,
                    "reopen_cold": reopen_cold,
                    "upsert": summarise_runs(runs),
                    "run_points": batches * BATCH,
                    "runs_on_copies": copy,
                    "load_after": [round(x, 2) for x in os.getloadavg()],
                }
                results.append(row)
                m = reopen["median"]
                print(
                    f"[{time.strftime('%H:%M:%S')}] {store} {n:>9,}: reopen {m['total_s']:.2f} s "
                    f"anon {c.mib(m['rss_anon'])} MiB file {c.mib(m['rss_file'])} MiB; upsert "
                    + ", ".join(
                        f"flush/{k}: {v['points_per_s_median']:,.0f}/s"
                        for k, v in row["upsert"].items()
                    )
                    + f"; load {row['load_after']}",
                    flush=True,
                )
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print_tables(results)
    cmd = "python bench/store.py" + (" --quick" if a.quick else "")
    if not a.quick and a.sizes != "10000,100000,1000000":
        cmd += f" --sizes {a.sizes}"
    if not a.quick and a.local_max != 100_000:
        cmd += f" --local-max {a.local_max}"
    c.write_result(
        "store",
        {
            "command": cmd,
            "dim": DIM,
            "batch": BATCH,
            "fill": f"Edge: update() in batches of {FILL_BATCH}; local mode: direct SQLite "
            "insert in one transaction",
            "flush_modes": list(FLUSH_MODES),
            "not_run": not_run,
            "uptime_start": uptime_start,
            "uptime_end": uptime(),
            "results": results,
        },
        a.quick,
    )
    if not_run:
        print("not run: " + "; ".join(not_run))
    if not a.no_plot and results:
        print(f"wrote {plot(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
