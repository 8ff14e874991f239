"""Importer throughput against raw fastembed on the same chunks, and the importer's peak RSS.

    .venv/bin/python bench/importer_throughput.py [--reps 3] [--scale 1.0]
    .venv/bin/python bench/importer_throughput.py --quick    # --reps 1 --scale 0.2, and
                                            # --ort-memory on 16 texts, 2 settings (CI)

Builds a mixed corpus (Claude Code conversations, JSONL, markdown), then per repetition:
- runs ``embedding-importer run`` (a fresh process, embedded Qdrant on disk, file checkpoint,
  default settings) and takes the chunks/s of its import loop from its summary line (start-up,
  i.e. imports and model load, excluded) and its peak RSS (``wait4`` rusage of the child);
- embeds the very same chunk texts with raw fastembed (``TextEmbedding.embed``, batch 32, the
  same model and threads), no Qdrant, no checkpoint.
Prints a JSON report and, last, the line ``ratio=<float> peak_rss_mb=<int>`` (medians).

    .venv/bin/python bench/importer_throughput.py --ort-memory

instead compares ONNX Runtime settings and batch shapes for memory: one fresh process per
setting embeds the same ~3,000 chunks of 5-120 tokens and reports peak and final RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "importer"))
sys.path.insert(0, str(ROOT / "bench"))

import common as c  # noqa: E402
from conftest import make_corpus  # noqa: E402

BIN = Path(sys.executable).parent / "embedding-importer"
SUMMARY = re.compile(r"(\d+) chunks in ([\d.]+)s of import loop \([\d.]+ chunks/s; cpu ([\d.]+)s")


def padding_report(texts: list[str]) -> dict[str, float]:
    """Share of padding slots with the importer's batching, with and without length sorting."""
    from importer.batching import padding_ratio, plan_batches
    from importer.model import Embedder

    tok = Embedder("paraphrase-MiniLM-L3-v2", None, None, 0).count_tokenizer
    lens = [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
    out = {}
    for sort in (False, True):
        batches = []
        for i in range(0, len(lens), 128):  # windows of 4 batches of 32, as the importer
            batches += plan_batches(lens[i : i + 128], 32, 8192, 128, key=int, sort=sort)
        out["sorted" if sort else "unsorted"] = round(padding_ratio(batches, 128, int), 3)
    return out


def corpus_chunks(src: Path) -> list[str]:
    """The chunk texts the importer makes of ``src``, in the importer's own code."""
    from importer.model import Embedder

    emb = Embedder("paraphrase-MiniLM-L3-v2", None, None, 0)
    return [text for _, text, _, _ in c.importer_chunks(src, emb.count_tokenizer)]


def run_importer(src: Path, work: Path) -> tuple[float, int, float, float]:
    """(chunks/s of the import loop, peak RSS MB, wall seconds, chunks per CPU second) of one
    fresh importer run."""
    args = [
        str(BIN),
        "run",
        "--source",
        str(src),
        "--collection",
        "bench",
        "--qdrant-path",
        str(work / "qdrant"),
        "--checkpoint",
        f"file:{work / 'ck.json'}",
        "--progress",
        "off",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    t = time.monotonic()
    p = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert p.stderr is not None
    err = p.stderr.read()
    _, status, rusage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"importer exited {p.returncode}:\n{err}")
    m = SUMMARY.search(err)
    if not m:
        raise SystemExit(f"no summary line in:\n{err}")
    chunks, seconds, cpu = int(m.group(1)), float(m.group(2)), float(m.group(3))
    return chunks / seconds, rusage.ru_maxrss // 1024, wall, chunks / cpu


def raw_fastembed(texts: list[str]) -> tuple[float, float]:
    """(chunks/s, chunks per CPU second) of raw fastembed over ``texts``."""
    from importer.model import Embedder

    emb = Embedder("paraphrase-MiniLM-L3-v2", None, None, 0)
    te = emb._te
    t = time.monotonic()  # no warm-up: the importer's loop time includes its first batch too
    c = time.process_time()
    n = sum(1 for _ in te.embed(texts, batch_size=32))
    return n / (time.monotonic() - t), n / (time.process_time() - c)


ORT_SETTINGS = {
    # name: (extra TextEmbedding kwargs, batch size, token budget)
    "default arena, bs32, budget 8192 (importer default)": ({}, 32, 8192),
    "arena off, bs32, budget 8192": ({"enable_cpu_mem_arena": False}, 32, 8192),
    "default arena, bs128, no budget": ({}, 128, 10**9),
    "default arena, bs256, no budget": ({}, 256, 10**9),
}


def ort_memory_child(name: str, n: int) -> None:
    """One setting, in this (fresh) process: print peak/final RSS as JSON."""
    import psutil
    from fastembed import TextEmbedding

    from importer.batching import plan_batches
    from importer.model import Embedder

    kwargs, bs, budget = ORT_SETTINGS[name]
    emb = Embedder("paraphrase-MiniLM-L3-v2", None, None, 0)
    if kwargs:  # reload the session with the setting (fastembed passes it to SessionOptions)
        emb._te = TextEmbedding(
            emb._te.model_name,
            specific_model_path=str(emb.info.path),
            cache_dir=str(Path(emb.info.path).parent / "fastembed"),
            local_files_only=True,
            **kwargs,
        )
    rnd = random.Random(5)
    words = [
        "memory",
        "leak",
        "onnx",
        "runtime",
        "arena",
        "vector",
        "embedding",
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
    ]
    tok = emb.count_tokenizer
    texts = [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 110))) for _ in range(n)]
    lens = {t: len(tok.encode(t, add_special_tokens=False).ids) for t in texts}
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    t = time.monotonic()
    for i in range(0, len(texts), bs * 4):  # windows as in the importer
        window = texts[i : i + bs * 4]
        for batch in plan_batches(window, bs, budget, 128, key=lambda x: lens[x]):
            emb.embed(batch)
            peak = max(peak, proc.memory_info().rss)
    print(
        json.dumps(
            {
                "setting": name,
                "rss_after_load_mb": base >> 20,
                "peak_mb": peak >> 20,
                "final_mb": proc.memory_info().rss >> 20,
                "texts_per_s": round(len(texts) / (time.monotonic() - t), 1),
            }
        )
    )


def ort_memory(n: int, settings: list[str]) -> None:
    rows = []
    for name in settings:
        out = subprocess.run(
            [sys.executable, __file__, "--ort-memory-child", name, "--texts", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr)
    print(json.dumps(rows, indent=2))


def main() -> None:
    ap = c.arg_parser(
        __doc__, "1 repetition on a fifth of the corpus; then --ort-memory, 2 settings, 16 texts"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="corpus size factor")
    ap.add_argument("--ort-memory", action="store_true", help="compare ORT memory settings")
    ap.add_argument("--texts", type=int, default=3000, help="texts per --ort-memory setting")
    ap.add_argument("--ort-memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.reps, a.scale, a.texts = 1, 0.2, 16
    if a.ort_memory_child:
        ort_memory_child(a.ort_memory_child, a.texts)
        return
    if a.ort_memory:
        ort_memory(a.texts, list(ORT_SETTINGS))
        return
    with tempfile.TemporaryDirectory(prefix="importer-bench-") as tmp:
        base = Path(tmp)
        src = make_corpus(
            base,
            seed=11,
            conversations=int(6 * a.scale),
            turns=30,
            jsonl_files=int(3 * a.scale),
            records=40,
            markdown=int(3 * a.scale),
            broken=False,
        )
        texts = corpus_chunks(src)
        imp: list[float] = []
        raw: list[float] = []
        imp_cpu: list[float] = []
        raw_cpu: list[float] = []
        rss: list[int] = []
        walls: list[float] = []
        order = random.Random(0)
        for i in range(a.reps):
            # alternate which goes first, so drift in machine load hits both alike
            steps = ["imp", "raw"]
            order.shuffle(steps)
            for step in steps:
                if step == "imp":
                    cps, peak, wall, cpu = run_importer(src, base / f"run{i}")
                    imp.append(cps)
                    imp_cpu.append(cpu)
                    rss.append(peak)
                    walls.append(wall)
                else:
                    cps, cpu = raw_fastembed(texts)
                    raw.append(cps)
                    raw_cpu.append(cpu)
            print(
                f"rep {i}: importer {imp[-1]:.1f} chunks/s, raw {raw[-1]:.1f} chunks/s, "
                f"peak RSS {rss[-1]} MB",
                file=sys.stderr,
            )
        ratio = statistics.median(imp) / statistics.median(raw)
        report = {
            "chunks": len(texts),
            "reps": a.reps,
            "importer_chunks_per_s": [round(x, 2) for x in imp],
            "raw_fastembed_chunks_per_s": [round(x, 2) for x in raw],
            "importer_median": round(statistics.median(imp), 2),
            "raw_median": round(statistics.median(raw), 2),
            "ratio": round(ratio, 3),
            "importer_chunks_per_cpu_s": [round(x, 2) for x in imp_cpu],
            "raw_chunks_per_cpu_s": [round(x, 2) for x in raw_cpu],
            "cpu_ratio": round(statistics.median(imp_cpu) / statistics.median(raw_cpu), 3),
            "importer_peak_rss_mb": rss,
            "importer_wall_s": [round(w, 1) for w in walls],
            "padding_share": padding_report(texts),
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        }
        print(json.dumps(report, indent=2))
        print(f"ratio={ratio:.3f} peak_rss_mb={int(statistics.median(rss))}")
    if a.quick:  # and the --ort-memory path: the importer's default and a reloaded session
        ort_memory(a.texts, list(ORT_SETTINGS)[:2])


if __name__ == "__main__":
    main()
