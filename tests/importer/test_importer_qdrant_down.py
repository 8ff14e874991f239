"""Qdrant server unreachable (a real refused connection): the importer waits, says why, keeps
its heartbeat fresh, and exits 75 on SIGTERM with the checkpoint intact."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from conftest import Workspace, make_corpus

from devcluster.testing import free_port, wait_for
from eio_common.contract import Checkpoint


# --rebuild (which the operator always passes) looks for the collection's versions first:
# that waits as patiently as the store itself (it crashed with exit 1 before)
@pytest.mark.parametrize("extra", [(), ("--rebuild",)], ids=["plain", "rebuild"])
def test_waits_for_unreachable_qdrant_then_sigterm_75(
    tmp_path: Path, extra: tuple[str, ...]
) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    p = ws.popen(
        "--qdrant-url",
        url,
        "--checkpoint-interval",
        "0.5",
        *extra,
        env={"IMPORTER_QDRANT_API_KEY": "very-secret-key"},
    )
    assert p.stderr is not None
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen.append(line)
        if sum("unreachable" in ln for ln in seen) >= 3:
            break
    assert sum("unreachable" in ln for ln in seen) >= 3, "".join(seen)
    assert "retrying in" in "".join(seen)
    hb1 = Checkpoint.from_json(ws.checkpoint.read_text()).heartbeat.time

    def heartbeat_after_hb1() -> bool:
        return Checkpoint.from_json(ws.checkpoint.read_text()).heartbeat.time > hb1

    wait_for(heartbeat_after_hb1, 60, "a fresh heartbeat while Qdrant is unreachable", 0.1)
    p.send_signal(signal.SIGTERM)
    t = time.monotonic()
    rest = p.stderr.read()
    p.wait(timeout=30)
    assert p.returncode == 75, rest
    assert time.monotonic() - t < 10
    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    assert cp.last_exit == "sigterm"
    assert cp.heartbeat.time > hb1, "heartbeat kept fresh while waiting"
    assert cp.heartbeat.waiting is not None, "the heartbeat says why there is no progress"
    assert "unreachable" in cp.heartbeat.waiting
    assert cp.counters.points == 0
    assert "very-secret-key" not in "".join(seen) + rest
