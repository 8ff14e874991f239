"""An unexpected exception (a real one: the checkpoint's directory is replaced by a file while
the importer runs) ends in exit 1, not 0/75/78; a later run resumes and completes."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import Workspace, assert_same_points, make_corpus

from devcluster.testing import wait_for


def test_unexpected_error_exits_1_and_resume_completes(
    tmp_path: Path, reference: Workspace
) -> None:
    ws = Workspace(tmp_path, make_corpus(tmp_path))
    ck_dir = tmp_path / "ckdir"
    ck = ck_dir / "checkpoint.json"
    p = ws.popen("--checkpoint", f"file:{ck}", "--checkpoint-interval", "0.3", "--batch-size", "4")
    wait_for(lambda: ck.exists() or p.poll() is not None, 120, "a first checkpoint", 0.1)
    assert ck.exists()
    saved = ck.read_text()
    shutil.rmtree(ck_dir)
    ck_dir.write_text("not a directory")  # every later checkpoint write fails
    assert p.stderr is not None
    err = p.stderr.read()
    p.wait(timeout=120)
    assert p.returncode == 1, err
    assert "Traceback" in err
    assert "exit reason: crash" in err
    ck_dir.unlink()
    ck_dir.mkdir()
    ck.write_text(saved)
    r = ws.run("--checkpoint", f"file:{ck}")
    assert r.returncode == 0, r.stderr
    assert_same_points(ws.points(), reference.points())
