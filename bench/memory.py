#!/usr/bin/env python
"""RSS over time while embedding synthetic chunks, for fastembed defaults and each mitigation.

Every configuration runs in its own subprocess (``--child``) so peaks do not mix. The child
samples its own RSS in a thread (every 20 ms) and records, after every batch, the highest RSS
seen during that batch; its peak is the kernel's VmHWM.

    python bench/memory.py                 # full run: 30,000 chunks per configuration
    python bench/memory.py --quick         # smoke run: 64 chunks, 4 configurations
    python bench/memory.py --only fastembed-default,token-budget

Writes bench/out/memory.json, docs/img/memory_rss.png and docs/img/memory_peak.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    batching: str = "fixed"  # fixed | budget | importer
    batch_size: int = 256
    token_budget: int = 0
    arena: bool = True
    mem_pattern: bool = True
    shrinkage: bool = False
    trim: bool = False
    env: dict[str, str] = field(default_factory=dict)


# Budget settings of the importer (docs/decisions.md: --batch-size 32, --token-budget 8192);
# the "importer-default" configuration reads the live values from the importer when it can.
BUDGET_MAX_BATCH = 32
BUDGET_TOKENS = 8192

CONFIGS: list[Config] = [
    Config("fastembed-default", "fastembed defaults (batch 256, file order)"),
    Config("importer-default", "importer defaults", batching="importer"),
    Config(
        "token-budget",
        f"token budget {BUDGET_TOKENS} (max {BUDGET_MAX_BATCH}/batch)",
        batching="budget",
        batch_size=BUDGET_MAX_BATCH,
        token_budget=BUDGET_TOKENS,
    ),
    Config("arena-off", "batch 256 + ORT arena off", arena=False),
    Config(
        "mem-pattern-off", "batch 256 + arena off + mem pattern off", arena=False, mem_pattern=False
    ),
    Config("arena-shrinkage", "batch 256 + arena shrinkage run option", shrinkage=True),
    Config("malloc-arena-max", "batch 256 + MALLOC_ARENA_MAX=2", env={"MALLOC_ARENA_MAX": "2"}),
    Config("malloc-trim", "batch 256 + malloc_trim(0) per batch", trim=True),
    Config(
        "budget-all",
        "token budget + arena/pattern off + MALLOC_ARENA_MAX=2 + trim",
        batching="budget",
        batch_size=BUDGET_MAX_BATCH,
        token_budget=BUDGET_TOKENS,
        arena=False,
        mem_pattern=False,
        trim=True,
        env={"MALLOC_ARENA_MAX": "2"},
    ),
]
BY_NAME = {cfg.name: cfg for cfg in CONFIGS}
# --quick: one configuration per code path (plain fastembed, the importer's batcher, the ORT
# run option, and every session option, allocator setting and token budget together)
QUICK_CONFIGS = ["fastembed-default", "importer-default", "arena-shrinkage", "budget-all"]


# ---------------------------------------------------------------------------------------------
# Child: one configuration in this process
# ---------------------------------------------------------------------------------------------
def child(cfg: Config, n: int, max_seconds: float, threads: int | None, out: Path) -> None:
    rss0 = c.rss_bytes()
    if not (cfg.arena and cfg.mem_pattern):
        c.patch_session_options(arena=cfg.arena, mem_pattern=cfg.mem_pattern)
    t_load = time.monotonic()
    settings: dict[str, Any] = {}
    if cfg.batching == "importer":
        model, how, batches_fn, settings = _importer_setup(threads)
    else:
        model, how = c.build_model(threads=threads)
        batches_fn = None
    load_s = time.monotonic() - t_load
    if cfg.shrinkage:
        c.enable_arena_shrinkage(model)
    texts = c.synthetic_chunks(n)
    if cfg.batching == "fixed":
        batches = c.fixed_batches(texts, cfg.batch_size)
    elif cfg.batching == "budget":
        lengths = c.token_lengths(model, texts)
        batches = c.token_budget_batches(texts, lengths, cfg.batch_size, cfg.token_budget)
    else:
        assert batches_fn is not None
        batches = batches_fn(model, texts)
    rss_loaded = c.rss_bytes()
    sampler = c.RssSampler().start()
    sampler.window_max()
    series: list[tuple[int, int, int, float]] = []  # (chunks done, max rss in batch, rss, t)
    done = 0
    nbatches = 0
    t0 = time.monotonic()
    truncated = False
    for batch in batches:
        for _ in model.embed(batch, batch_size=len(batch)):
            pass
        done += len(batch)
        nbatches += 1
        if cfg.trim:
            c.malloc_trim()
        sampler.mark(done)
        series.append((done, sampler.window_max(), c.rss_bytes(), round(time.monotonic() - t0, 2)))
        if time.monotonic() - t0 > max_seconds:
            truncated = done < n
            break
    elapsed = time.monotonic() - t0
    sampler.stop()
    result = {
        "config": cfg.name,
        "label": cfg.label,
        "model": how,
        "settings": settings,
        "chunks_requested": n,
        "chunks_done": done,
        "truncated_by_time_cap": truncated,
        "batches": nbatches,
        "seconds": round(elapsed, 1),
        "chunks_per_s": round(done / elapsed, 2) if elapsed else 0,
        "model_load_s": round(load_s, 2),
        "rss_start_bytes": rss0,
        "rss_loaded_bytes": rss_loaded,
        "rss_end_bytes": c.rss_bytes(),
        "peak_rss_bytes": c.hwm_bytes(),
        "series": series,
        "timeseries": sampler.samples,
        "env": cfg.env,
    }
    out.write_text(json.dumps(result))


def importer_defaults() -> dict[str, Any]:
    """batch_size, token_budget and sort_window as the importer's Settings define them."""
    try:
        from importer.settings import Settings

        f = Settings.model_fields
        return {
            "source": "importer.settings.Settings defaults",
            "batch_size": f["batch_size"].default,
            "token_budget": f["token_budget"].default,
            "sort_window": f["sort_window"].default if "sort_window" in f else 1,
        }
    except ImportError:
        return {
            "source": "docs/decisions.md defaults",
            "batch_size": BUDGET_MAX_BATCH,
            "token_budget": BUDGET_TOKENS,
            "sort_window": 1,
        }


def _importer_setup(threads: int | None) -> tuple[Any, str, Any, dict[str, Any]]:
    """Model and batching as the importer does them (its Embedder and its default settings).

    Batching: the importer's own batcher when it exposes one, else c.sorted_budget_batches with
    the importer's defaults (length-sorted windows of sort_window x batch_size chunks, packed
    under the token budget); the result records which.
    """
    settings = importer_defaults()
    model, how = c.build_model(threads=threads)
    batcher = c.importer_batcher()
    if batcher is not None:
        settings["batcher"] = f"{batcher.__module__}.{batcher.__name__}"
    else:
        settings["batcher"] = "bench/common.py sorted_budget_batches (importer batcher absent)"

    def batches(model: Any, texts: list[str]) -> Any:
        lengths = c.token_lengths(model, texts)
        if batcher is not None:
            max_tokens = int((c.tokenizer_of(model).truncation or {}).get("max_length", 512))
            settings["max_tokens"] = max_tokens
            return c.call_importer_batcher(batcher, texts, lengths, settings, max_tokens)
        return c.sorted_budget_batches(
            texts,
            lengths,
            settings["batch_size"],
            settings["token_budget"],
            settings["sort_window"],
        )

    return model, how, batches, settings


# ---------------------------------------------------------------------------------------------
# Parent: run every configuration in its own subprocess, then plot
# ---------------------------------------------------------------------------------------------
def run_config(cfg: Config, n: int, max_seconds: float, threads: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, **cfg.env}
        cmd = [
            c.PYTHON,
            __file__,
            "--child",
            cfg.name,
            "--chunks",
            str(n),
            "--max-seconds",
            str(max_seconds),
            "--json",
            str(out),
        ]
        if threads is not None:
            cmd += ["--threads", str(threads)]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=env, check=False)
        if proc.returncode != 0 or not out.exists():
            return {
                "config": cfg.name,
                "label": cfg.label,
                "error": f"exit {proc.returncode}",
                "wall_s": round(time.monotonic() - t0, 1),
            }
        return json.loads(out.read_text())


def plot(results: list[dict[str, Any]]) -> list[Path]:
    plt = c.plt()
    ok = [r for r in results if "error" not in r]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for r in ok:
        xs = [0] + [s[0] for s in r["series"]]
        ys = [c.mib(r["rss_loaded_bytes"])] + [c.mib(s[1]) for s in r["series"]]
        ls = "-" if r["config"] in ("fastembed-default", "importer-default") else "--"
        lw = 2.5 if r["config"] == "importer-default" else 1.3
        ax.plot(xs, ys, ls, lw=lw, label=r["label"])
    ax.set_xlabel("chunks embedded")
    ax.set_ylabel("RSS, max within each batch (MiB)")
    ax.set_yscale("log")
    ax.set_title("RSS while embedding synthetic chunks (paraphrase-MiniLM-L3-v2, fastembed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    p1 = c.save_figure(fig, "memory_rss")

    fig, ax = plt.subplots(figsize=(10, 4.8))
    names = [r["label"] for r in ok]
    peaks = [c.mib(r["peak_rss_bytes"]) for r in ok]
    colors = [
        "tab:green"
        if r["config"] == "importer-default"
        else "tab:red"
        if r["config"] == "fastembed-default"
        else "tab:blue"
        for r in ok
    ]
    bars = ax.barh(names, peaks, color=colors)
    for b, v in zip(bars, peaks, strict=True):
        ax.text(
            b.get_width(), b.get_y() + b.get_height() / 2, f" {v:,.0f}", va="center", fontsize=8
        )
    ax.invert_yaxis()
    ax.set_xlabel("peak RSS, VmHWM (MiB)")
    ax.set_title("Peak RSS by configuration")
    ax.grid(True, axis="x", alpha=0.3)
    p2 = c.save_figure(fig, "memory_peak")
    return [p1, p2]


def main(argv: list[str] | None = None) -> int:
    ap = c.arg_parser(__doc__, "64 chunks, 4 configurations, 30 s cap per configuration")
    ap.add_argument("--chunks", type=int, default=30_000)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=900.0,
        help="stop a configuration after this long (recorded as truncated)",
    )
    ap.add_argument("--threads", type=int, default=None, help="ORT threads (default: fastembed's)")
    ap.add_argument("--only", default="", help="comma-separated configuration names")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--json", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(BY_NAME[a.child], a.chunks, a.max_seconds, a.threads, Path(a.json))
        return 0
    if a.quick:
        a.chunks, a.max_seconds = min(a.chunks, 64), min(a.max_seconds, 30.0)
    if a.quick and not a.only:
        a.only = ",".join(QUICK_CONFIGS)
    cfgs = [BY_NAME[x] for x in a.only.split(",")] if a.only else CONFIGS
    shape = c.chunk_shape(c.synthetic_chunks(a.chunks))
    print(f"chunks: {shape}", flush=True)
    results = []
    for cfg in cfgs:
        r = run_config(cfg, a.chunks, a.max_seconds, a.threads)
        results.append(r)
        if "error" in r:
            print(f"{cfg.name:20s} ERROR {r['error']}", flush=True)
            continue
        print(
            f"{cfg.name:20s} peak {c.mib(r['peak_rss_bytes']):8.0f} MiB  "
            f"end {c.mib(r['rss_end_bytes']):7.0f} MiB  {r['chunks_done']:6d} chunks "
            f"{r['chunks_per_s']:6.1f}/s{'  (time cap)' if r['truncated_by_time_cap'] else ''}",
            flush=True,
        )
    name = "memory_quick" if a.quick else "memory"
    data = {
        "command": " ".join(["python", "bench/memory.py", *(argv or sys.argv[1:])]),
        "chunks": shape,
        "results": results,
    }
    if a.only and not a.quick:
        name = "memory_partial"
    c.write_result(name, data)
    if not a.no_plot:
        for p in plot(results):
            print(f"wrote {p}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
