#!/usr/bin/env python
"""The importer against fastembed used naively, on the same chunks: speed and peak memory.

Corpus: ``bench/corpus.py`` (Claude Code session JSONL; 100 files by default). The chunks are
the importer's own (``importer.chunking``, chunk size/overlap of its Settings defaults), so
both sides embed exactly the same texts.

1. Embedding only (one subprocess per run, repeated, alternating, medians):
   - naive:    fastembed ``embed(texts, batch_size=256)`` over the chunks in file order
   - importer: the importer's Embedder and batch planner (``plan_batches`` over windows of
               batch_size x sort_window chunks, token budget), its default settings
   chunks/s from the first to the last vector (model load excluded); peak RSS = VmHWM.
2. End to end (process tree RSS sampled from outside every 50 ms; wall time from start):
   - cli:       the real ``embedding-importer run --source DIR --format claude ...`` into an
                embedded Qdrant (``--qdrant-path``) with a file checkpoint
   - naive-e2e: a naive script: same chunks, fastembed batch 256 in file order, upsert every
                batch into an embedded Qdrant (qdrant-client defaults), no checkpoint
   files/min, chunks/s, peak RSS.

    python bench/throughput.py             # 100 files; embed-only on 1,000 chunks x 3 reps
    python bench/throughput.py --quick     # 2 files; 64 chunks x 1 rep
Writes bench/out/throughput.json and docs/img/throughput.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c
import corpus

WORK = Path(os.environ.get("BENCH_WORK", "/tmp/eio-bench"))


# ---------------------------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------------------------
def child_embed(mode: str, source: Path, limit: int, out: Path) -> None:
    from importer.batching import plan_batches
    from importer.model import Embedder
    from importer.settings import DEFAULT_MODEL, Settings

    f = Settings.model_fields
    t0 = time.monotonic()
    emb = Embedder(DEFAULT_MODEL, None, None, 0)
    load_s = time.monotonic() - t0
    chunks = c.importer_chunks(source, emb.tokenizer, "claude")[:limit]
    rss_ready = c.rss_bytes()
    n = 0
    t1 = time.monotonic()
    if mode == "naive":
        for _ in emb._te.embed([ch[1] for ch in chunks], batch_size=256):
            n += 1
        settings: dict[str, Any] = {"batch_size": 256, "order": "file order"}
    else:
        bs, budget = f["batch_size"].default, f["token_budget"].default
        window = bs * f["sort_window"].default
        for i in range(0, len(chunks), window):
            for b in plan_batches(
                chunks[i : i + window], bs, budget, emb.info.max_tokens, key=lambda ch: ch[3]
            ):
                n += len(emb.embed([ch[1] for ch in b]))
        settings = {"batch_size": bs, "token_budget": budget, "sort_window": window // bs}
    secs = time.monotonic() - t1
    out.write_text(
        json.dumps(
            {
                "mode": mode,
                "chunks": n,
                "seconds": round(secs, 2),
                "chunks_per_s": round(n / secs, 2),
                "model_load_s": round(load_s, 2),
                "rss_ready_bytes": rss_ready,
                "peak_rss_bytes": c.hwm_bytes(),
                "settings": settings,
                "max_tokens": emb.info.max_tokens,
            }
        )
    )


def child_naive_e2e(source: Path, qdrant: Path, out: Path) -> None:
    """A naive import script: fastembed defaults, upsert per batch, no checkpoint."""
    from qdrant_client import QdrantClient, models

    from eio_common import contract
    from importer.model import Embedder
    from importer.settings import DEFAULT_MODEL

    emb = Embedder(DEFAULT_MODEL, None, None, 0)
    client = QdrantClient(path=str(qdrant))
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    chunks = c.importer_chunks(source, emb.tokenizer, "claude")
    n = 0
    for i in range(0, len(chunks), 256):
        part = chunks[i : i + 256]
        vecs = list(emb._te.embed([ch[1] for ch in part], batch_size=256))
        client.upsert(
            "bench",
            points=models.Batch(
                ids=[contract.point_id(ch[0], ch[2]) for ch in part],
                vectors=[v.tolist() for v in vecs],
                payloads=[{"text": ch[1], "source": ch[0], "chunk": ch[2]} for ch in part],
            ),
            wait=True,
        )
        n += len(part)
    client.close()
    out.write_text(json.dumps({"chunks": n, "points": n}))


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
def run_embed(mode: str, source: Path, limit: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [
            c.PYTHON,
            __file__,
            "--child",
            mode,
            "--source",
            str(source),
            "--limit",
            str(limit),
            "--json",
            str(out),
        ]
        rc = subprocess.run(cmd, check=False).returncode
        if rc != 0 or not out.exists():
            return {"mode": mode, "error": f"exit {rc}"}
        return json.loads(out.read_text())


def run_cli(source: Path, files: int, extra: list[str] | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tp-cli-", dir=WORK))
    try:
        cmd = c.importer_run_cmd(
            source,
            tmp / "q",
            tmp / "ck.json",
            "--format",
            "claude",
            "--memory-threshold",
            "0",
            *(extra or []),
        )
        log = open(tmp / "log", "wb")  # noqa: SIM115
        rc, secs, peak, series = c.run_sampled(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        ck = json.loads((tmp / "ck.json").read_text()) if (tmp / "ck.json").exists() else {}
        counters = ck.get("counters", {})
        if rc != 0:
            tail = (tmp / "log").read_text()[-2000:]
            print(f"cli exit {rc}:\n{tail}", file=sys.stderr)
        return {
            "mode": "cli",
            "rc": rc,
            "seconds": round(secs, 2),
            "files_per_min": round(files / secs * 60, 2),
            "chunks": counters.get("chunks"),
            "points": counters.get("points"),
            "chunks_per_s": round((counters.get("chunks") or 0) / secs, 2),
            "peak_rss_bytes": peak,
            "rss_series": series,
            "command": cmd,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_naive_e2e(source: Path, files: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tp-naive-", dir=WORK))
    try:
        out = tmp / "r.json"
        cmd = [
            c.PYTHON,
            __file__,
            "--child",
            "naive-e2e",
            "--source",
            str(source),
            "--qdrant",
            str(tmp / "q"),
            "--json",
            str(out),
        ]
        rc, secs, peak, series = c.run_sampled(cmd)
        r = json.loads(out.read_text()) if out.exists() else {}
        return {
            "mode": "naive-e2e",
            "rc": rc,
            "seconds": round(secs, 2),
            "files_per_min": round(files / secs * 60, 2),
            "chunks": r.get("chunks"),
            "chunks_per_s": round((r.get("chunks") or 0) / secs, 2),
            "peak_rss_bytes": peak,
            "rss_series": series,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def plot(data: dict[str, Any]) -> Path:
    plt = c.plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    e = data["embed_only"]
    e2e = data["end_to_end"]
    labels = ["naive\n(bs 256, file order)", "importer\n(budget, sorted)"]
    speed = [e["naive"]["chunks_per_s_median"], e["importer"]["chunks_per_s_median"]]
    peak = [c.mib(e["naive"]["peak_rss_median"]), c.mib(e["importer"]["peak_rss_median"])]
    for ax, vals, title, fmt in (
        (axes[0], speed, "embedding only: chunks/s (median)", "{:.1f}"),
        (axes[1], peak, "embedding only: peak RSS MiB (median)", "{:,.0f}"),
    ):
        bars = ax.bar(labels, vals, color=["tab:red", "tab:green"])
        for b, v in zip(bars, vals, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v, fmt.format(v), ha="center", va="bottom")
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    ax = axes[2]
    for r, color in ((e2e.get("naive-e2e"), "tab:red"), (e2e.get("cli"), "tab:green")):
        if not r or not r.get("rss_series"):
            continue
        ax.plot(
            [s[0] for s in r["rss_series"]],
            [c.mib(s[1]) for s in r["rss_series"]],
            color=color,
            label=f"{r['mode']}: {r['files_per_min']:.0f} files/min, "
            f"peak {c.mib(r['peak_rss_bytes']):,.0f} MiB",
        )
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS MiB (process tree)")
    ax.set_title(f"end to end, {data['corpus']['files']} conversation files", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    p = c.save_figure(fig, "throughput")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--embed-chunks", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--source", default="", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--qdrant", default="", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "naive-e2e":
        child_naive_e2e(Path(a.source), Path(a.qdrant), Path(a.json))
        return 0
    if a.child:
        child_embed(a.child, Path(a.source), a.limit, Path(a.json))
        return 0
    if a.quick:
        a.files, a.embed_chunks, a.reps = 2, 64, 1
    WORK.mkdir(parents=True, exist_ok=True)
    source = WORK / f"corpus-{a.files}"
    shape = corpus.generate(source, a.files)
    print(f"corpus: {shape}", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {"naive": [], "importer": []}
    for rep in range(a.reps):
        order = ("naive", "importer") if rep % 2 == 0 else ("importer", "naive")
        for mode in order:
            r = run_embed(mode, source, a.embed_chunks)
            runs[mode].append(r)
            if "error" in r:
                print(f"embed {mode}: {r['error']}", flush=True)
                continue
            print(
                f"embed {mode:9s} rep {rep}: {r['chunks']} chunks {r['chunks_per_s']:7.1f}/s "
                f"peak {c.mib(r['peak_rss_bytes']):7.0f} MiB",
                flush=True,
            )
    embed_only: dict[str, Any] = {}
    for mode, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        embed_only[mode] = {
            "runs": ok,
            "chunks_per_s_median": c.median(r["chunks_per_s"] for r in ok) if ok else None,
            "peak_rss_median": c.median(r["peak_rss_bytes"] for r in ok) if ok else None,
        }
    n, i = embed_only["naive"], embed_only["importer"]
    if n["chunks_per_s_median"] and i["chunks_per_s_median"]:
        embed_only["speedup_importer_over_naive"] = round(
            i["chunks_per_s_median"] / n["chunks_per_s_median"], 2
        )
        embed_only["peak_ratio_importer_over_naive"] = round(
            i["peak_rss_median"] / n["peak_rss_median"], 3
        )
        print(
            f"embed-only: importer/naive speed x{embed_only['speedup_importer_over_naive']}, "
            f"peak ratio {embed_only['peak_ratio_importer_over_naive']}",
            flush=True,
        )

    e2e: dict[str, Any] = {}
    if not a.skip_e2e:
        for fn in (run_naive_e2e, run_cli):
            r = fn(source, a.files)
            e2e[r["mode"]] = r
            print(
                f"e2e {r['mode']:9s}: rc {r['rc']} {r['seconds']:7.1f} s "
                f"{r['files_per_min']:6.1f} files/min {r['chunks_per_s']:6.1f} chunks/s "
                f"peak {c.mib(r['peak_rss_bytes']):6.0f} MiB",
                flush=True,
            )
    data = {
        "command": "python bench/throughput.py" + (" --quick" if a.quick else ""),
        "corpus": shape,
        "embed_chunks": a.embed_chunks,
        "reps": a.reps,
        "embed_only": embed_only,
        "end_to_end": e2e,
    }
    c.write_result("throughput", data, a.quick)
    if e2e:
        print(f"wrote {plot(data)}")
    errors = [r for rs in runs.values() for r in rs if "error" in r]
    return 1 if errors or any(r["rc"] != 0 for r in e2e.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
