"""The dangerous case of issue 17: a second model of the same dimension (the default model
quantized to int8 by ONNX Runtime's own tool, ``hack/make-int8-model.py``; same name, same 384
dimensions, other vectors). Without a build identity its points would mix silently with the
first model's; with it, a run is refused (exit 78, "model files"), and ``--rebuild`` gives a
collection equal to a fresh import with the second model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Workspace, assert_same_points, make_corpus

from eio_common.contract import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "int8"
    r = subprocess.run(
        [sys.executable, str(REPO / "hack" / "make-int8-model.py"), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


def test_a_second_model_of_the_same_dimension_never_mixes(tmp_path: Path, int8_model: Path) -> None:
    src = make_corpus(tmp_path / "corpus", conversations=2, turns=6, jsonl_files=1, records=4,
                      markdown=1, broken=False)  # fmt: skip
    ws = Workspace(tmp_path / "live", src)
    assert ws.run().returncode == 0
    first = ws.points()

    refused = ws.run("--model-dir", str(int8_model))
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    assert "model files (sha256)" in refused.stderr, refused.stderr
    assert "--rebuild" in refused.stderr, refused.stderr
    assert ws.points().keys() == first.keys()

    rebuilt = ws.run("--model-dir", str(int8_model), "--rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    fresh = Workspace(tmp_path / "fresh", src)
    assert fresh.run("--model-dir", str(int8_model)).returncode == 0
    after = ws.points()
    assert_same_points(after, fresh.points())
    # and they are other vectors than the first model's: the mix would have been real
    assert after.keys() == first.keys()
    worst = max(float(np.abs(after[k][0] - first[k][0]).max()) for k in first)
    assert worst > 1e-3, worst
