"""The search that ends hack/demo.sh finds the conversation its question is about.

The demo's corpus is real prose (``bench/corpus.py --prose``: each session discusses one
standard-library module in the words of its documentation) and the demo ends with
``hack/demo-search.sh``: ``DEMO_QUERY``, a question about the ``DEMO_TOPIC`` session in other
words than its text, must rank a chunk of that session first. Here on the first six sessions
(among them sessions about ``datetime`` and ``timeit``, the nearest to the question), imported
as the demo imports them (Claude format, chunks of 120 tokens, overlap 20), real model, Qdrant
Edge, no cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, env_with

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import corpus  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_demo_search_finds_the_conversation_it_asks_about(tmp_path: Path) -> None:
    shape = corpus.generate(tmp_path / "sources", files=6, prose=True)
    (tmp_path / "corpus.json").write_text(json.dumps(shape))
    assert corpus.DEMO_TOPIC in shape["topics"].values()
    want = corpus.topic_file(shape, corpus.DEMO_TOPIC)
    store = ["--collection", "conversations", "--qdrant-path", str(tmp_path / "qdrant")]
    run = subprocess.run(
        [str(BIN), "run", "--source", str(tmp_path / "sources"), "--format", "claude", *store,
         "--checkpoint", f"file:{tmp_path / 'ck.json'}", "--chunk-size", "120",
         "--chunk-overlap", "20", "--progress", "off"],
        capture_output=True, text=True, env=env_with(None), timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr

    search = subprocess.run(
        [str(BIN), "search", *store, "--limit", "3", "--json", corpus.DEMO_QUERY],
        capture_output=True, text=True, env=env_with(None), timeout=300,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    hits = [json.loads(line)["payload"]["source"] for line in search.stdout.splitlines()]
    assert hits[0] == want, (hits, shape["topics"])

    demo = subprocess.run(
        ["bash", str(ROOT / "hack" / "demo-search.sh"), str(tmp_path)],
        capture_output=True, text=True, env=env_with(None), timeout=300,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"top hit: {want}, the conversation about {corpus.DEMO_TOPIC}" in demo.stdout
