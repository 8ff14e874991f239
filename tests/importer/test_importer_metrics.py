"""Prometheus metrics are served on --metrics-port while the importer runs."""

from __future__ import annotations

import signal
import socket
import urllib.request
from pathlib import Path

from conftest import Workspace, make_corpus

from devcluster.testing import free_port, wait_for


def _value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_endpoint(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    port = free_port()
    p = ws.popen("--metrics-port", str(port), "--batch-size", "4")
    text = ""

    def points_counted() -> bool:
        nonlocal text
        assert p.poll() is None, "the importer ended before its metrics showed points"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return False  # not listening yet
        return (_value(text, "embedding_importer_points_total") or 0) > 0

    try:
        wait_for(points_counted, 120, "points in the importer's metrics", interval=0.3)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
    assert (_value(text, "embedding_importer_points_total") or 0) > 0, text[-2000:]
    assert (_value(text, "embedding_importer_memory_bytes") or 0) > 50 * 2**20
    assert _value(text, "embedding_importer_embed_seconds_count") is not None
    assert _value(text, "embedding_importer_upsert_seconds_count") is not None
    assert _value(text, "embedding_importer_checkpoint_writes_total") is not None
    assert _value(text, "embedding_importer_shard_files") == 10
    assert "embedding_importer_skipped_total" in text


def test_metrics_port_taken_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    # Pods on the dev cluster share the host network: a second importer asking for the same
    # metrics port must still import (exit 0), with a warning instead of metrics.
    ws = Workspace(tmp_path, make_corpus(tmp_path, conversations=1, jsonl_files=1))
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        r = ws.run("--metrics-port", str(port))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "metrics disabled" in r.stderr
