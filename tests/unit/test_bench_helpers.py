"""Smoke tests of the benchmark helpers in bench/ (fast; no model, no cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402


def test_synthetic_chunks_are_deterministic_and_in_range() -> None:
    a = common.synthetic_chunks(300, seed=3)
    b = common.synthetic_chunks(300, seed=3)
    assert a == b
    assert a != common.synthetic_chunks(300, seed=4)
    words = [len(t.split()) for t in a]
    assert min(words) >= 5
    assert max(words) <= 400
    shape = common.chunk_shape(a)
    assert shape["n"] == 300
    assert shape["words_min"] <= shape["words_p50"] <= shape["words_max"]


@pytest.mark.parametrize(("max_batch", "budget"), [(32, 8192), (8, 100), (4, 10_000)])
def test_token_budget_batches_respect_count_and_budget(max_batch: int, budget: int) -> None:
    texts = [f"t{i}" for i in range(200)]
    lengths = [(i * 37) % 130 + 3 for i in range(200)]
    seen = []
    length_of = dict(zip(texts, lengths, strict=True))
    for batch in common.token_budget_batches(texts, lengths, max_batch, budget):
        seen.extend(batch)
        assert 1 <= len(batch) <= max_batch
        if len(batch) > 1:
            assert len(batch) * max(length_of[t] for t in batch) <= budget
    assert seen == texts  # input order, nothing lost


def test_sorted_budget_batches_keep_every_text_once() -> None:
    texts = [f"t{i}" for i in range(100)]
    lengths = [(i * 53) % 97 + 1 for i in range(100)]
    out = [t for b in common.sorted_budget_batches(texts, lengths, 8, 400, 4) for t in b]
    assert sorted(out) == sorted(texts)
    # within each window of 32 texts the order is by length
    first = out[:32]
    ln = dict(zip(texts, lengths, strict=True))
    assert [ln[t] for t in first] == sorted(ln[t] for t in first)


def test_percentile_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert common.pct(xs, 50) == 50.0
    assert common.pct(xs, 99) == 99.0
    assert common.pct([2.0], 99) == 2.0


def test_rss_and_hwm_read_proc() -> None:
    assert common.rss_bytes() > 0
    assert common.hwm_bytes() >= common.rss_bytes() // 2


def test_checkpoint_size_does_not_grow_with_files() -> None:
    import checkpoint_size

    small = checkpoint_size.measure_checkpoint(1_000, "running", reps=1)
    large = checkpoint_size.measure_checkpoint(100_000, "running", reps=1)
    assert 0 < large["configmap_value_bytes"] < 4096
    assert large["json_bytes"] - small["json_bytes"] < 32  # only the counters' digits grow


def test_manifest_entries_are_file_states() -> None:
    import checkpoint_size

    from eio_common.contract import FileState

    m = checkpoint_size.measure_manifest(200, in_progress=4)
    assert m["files"] == 200
    assert m["state_bytes_median"] < m["payload_bytes_median"] < 1024
    assert m["payload_bytes_total"] >= 200 * m["state_bytes_median"]
    st = FileState.model_validate_json(m["example_state"])
    assert st.complete
    assert st.chunks >= 1
    assert st.cursor.offset <= st.size


def test_store_bench_helpers() -> None:
    import store

    assert store.point_id(7) == store.point_id(7) != store.point_id(8)
    sizes = [len(json.dumps(store.payload(i))) for i in (0, 1, 63, 10_000, 999_999)]
    assert all(250 <= s <= 350 for s in sizes), sizes
    assert store.flush_points(10, 0) == []
    assert store.flush_points(10, 1) == list(range(10))
    assert store.flush_points(250, 100) == [99, 199]
    status = "Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t   512 kB\n"
    status += "RssFile:\t   500 kB\nRssShmem:\t    12 kB\nThreads:\t1\n"
    assert store.parse_status(status) == {
        "VmHWM": 2048 * 1024,
        "VmRSS": 1024 * 1024,
        "RssAnon": 512 * 1024,
        "RssFile": 500 * 1024,
        "RssShmem": 12 * 1024,
    }


def test_corpus_files_are_claude_code_jsonl(tmp_path: Path) -> None:
    import corpus

    shape = corpus.generate(tmp_path / "c", files=3, seed=5)
    assert shape["files"] == 3
    files = sorted((tmp_path / "c").rglob("*.jsonl"))
    assert len(files) == 3
    kinds = set()
    for f in files:
        for line in f.read_text().splitlines():
            obj = json.loads(line)
            kinds.add(obj["type"])
    assert {"summary", "user", "assistant"} <= kinds
    # idempotent: a second call reuses the corpus
    assert corpus.generate(tmp_path / "c", files=3, seed=5) == shape


def test_prose_corpus_discusses_one_module_per_session_in_its_docs_words(tmp_path: Path) -> None:
    import inspect

    import corpus

    shape = corpus.generate(tmp_path / "p", files=4, seed=5, prose=True)
    assert shape["text"] == "prose"
    assert sorted(shape["topics"].values()) == sorted(corpus.MODULES[:4])
    for rel, module in shape["topics"].items():
        lines = [json.loads(ln) for ln in (tmp_path / "p" / rel).read_text().splitlines()]
        assert module in lines[0]["summary"]
        texts = [
            b["text"] if isinstance(b, dict) else b
            for ln in lines[1:]
            for b in (ln["message"]["content"] if isinstance(ln["message"]["content"], list)
                      else [ln["message"]["content"]])
            if not isinstance(b, dict) or b.get("type") == "text"
        ]  # fmt: skip
        assert module in texts[0]  # the first question names the module
        first_para = inspect.getdoc(__import__(module)).split("\n\n")[0]
        assert " ".join(first_para.split()) in texts[1]  # answered with its documentation
    # deterministic, and a random-word corpus asked for in the same place replaces it
    again = corpus.generate(tmp_path / "p2", files=4, seed=5, prose=True)
    assert again == shape
    assert corpus.generate(tmp_path / "p", files=4, seed=5)["text"] == "random words"
    assert "Python's" not in next((tmp_path / "p").rglob("*.jsonl")).read_text()


def test_roll_latency_pairs_terminations_with_next_pod() -> None:
    import roll_latency

    def ev(t: float, typ: str, attempt: int, phase: str, term: dict | None) -> dict:
        return {
            "t": t,
            "type": typ,
            "import": "x",
            "attempt": attempt,
            "phase": phase,
            "pod": f"x-s0-a{attempt}",
            "created_ts": None,
            "started_ts": None,
            "terminated": term,
        }

    t75 = {"exit_code": 75, "reason": "Error", "finished_at": None}
    events = [
        ev(0.0, "ADDED", 1, "Pending", None),
        ev(1.0, "MODIFIED", 1, "Running", None),
        ev(5.0, "MODIFIED", 1, "Failed", t75),
        ev(5.2, "ADDED", 2, "Pending", None),
        ev(5.5, "MODIFIED", 2, "Running", None),
    ]
    s = roll_latency.latencies(events, "x", "exit75")
    assert len(s) == 1
    assert s[0]["to_created_s"] == pytest.approx(0.2)
    assert s[0]["to_running_s"] == pytest.approx(0.5)
    assert roll_latency.latencies(events, "x", "oomkilled") == []


HELPERS = {"common", "kube", "corpus", "run_all"}  # imported by the benches, or the runner


def test_run_all_runs_every_bench_script() -> None:
    """Every script in bench/ is run by run_all (so CI's --quick run covers it) or is a helper
    that one of those imports; a new script that is neither would rot unseen."""
    import ast

    import run_all

    names = {b.name for b in run_all.BENCHES}
    scripts = {p.stem for p in BENCH.glob("*.py")}
    assert scripts - HELPERS == names, "bench scripts not in run_all.BENCHES"
    imported: set[str] = set()
    for name in names:
        tree = ast.parse((BENCH / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert HELPERS - {"run_all"} <= imported, "a helper no bench imports"


def test_run_all_reports_a_missing_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No reachable cluster: the cluster benches are "not run", and a failure under CI=true."""
    import run_all

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    only = "roll_latency,operator_scale"
    for ci, rc, word in (("", 0, "not run (no cluster)"), ("true", 1, "FAIL (no cluster")):
        monkeypatch.setenv("CI", ci)
        monkeypatch.setattr(sys, "argv", ["run_all.py", "--quick", "--only", only])
        assert run_all.main() == rc
        out = capsys.readouterr().out
        assert out.count(word) == 2, out
