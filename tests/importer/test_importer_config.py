"""Bad settings end in exit 78 with exactly one line on stderr that says what to fix.

Most cases call ``importer.cli.main`` in this process (the console script's own code path,
without paying a process start-up each); a few run the real console script.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import BIN, env_with


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.md").write_text("hello world\n")
    return d


CASES = [
    ("missing source", [], {}, "no source"),
    ("unknown format", ["--format", "xml"], {}, "unknown format"),
    ("bad threshold", ["--memory-threshold", "lots"], {}, "memory threshold"),
    ("bad threshold env", [], {"IMPORTER_MEMORY_THRESHOLD": "150%"}, "memory threshold"),
    ("unreadable model dir", ["--model-dir", "/nonexistent/model"], {}, "model dir"),
    ("source does not exist", ["--source", "/nonexistent/src"], {}, "does not exist"),
    ("glob matches nothing", ["--source", "/nonexistent/*.md"], {}, "matches no files"),
    ("bad shard", ["--shard", "3/2"], {}, "shard"),
    ("non-numeric env", [], {"IMPORTER_BATCH_SIZE": "many"}, "IMPORTER_BATCH_SIZE"),
    ("unknown flag", ["--frobnicate"], {}, "unrecognized arguments"),
    ("chunk beyond model input", ["--chunk-size", "400", "--token-budget", "9000"], {}, "chunk"),
    ("bad checkpoint location", ["--checkpoint", "s3://bucket/x"], {}, "checkpoint"),
]


def _base(tmp_path: Path, src: Path, name: str, args: list[str]) -> list[str]:
    base = ["--collection", "c", "--qdrant-path", str(tmp_path / "q")]
    if "--checkpoint" not in args:
        base += ["--checkpoint", f"file:{tmp_path / 'ck.json'}"]
    if name != "missing source" and "--source" not in args:
        base += ["--source", str(src)]
    return base


@pytest.mark.parametrize(("name", "args", "env", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_settings_exit_78_one_line(
    tmp_path: Path,
    src: Path,
    name: str,
    args: list[str],
    env: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from importer.cli import main

    for k in list(os.environ):
        if k.startswith("IMPORTER_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        code = main(["run", *_base(tmp_path, src, name, args), *args])
    except SystemExit as e:  # argparse errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 78, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert not (tmp_path / "ck.json").exists()


@pytest.mark.parametrize("name", ["unknown flag", "non-numeric env", "chunk beyond model input"])
def test_console_script_exit_78_one_line(tmp_path: Path, src: Path, name: str) -> None:
    _, args, env, needle = next(c for c in CASES if c[0] == name)
    r = subprocess.run(
        [str(BIN), "run", *_base(tmp_path, src, name, args), *args],
        env=env_with(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 78, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]


def test_collection_with_other_dimension_is_config_error(tmp_path: Path, src: Path) -> None:
    from importer.sink import EdgeSink

    store = EdgeSink(str(tmp_path / "q"), "c", True, 8)
    store.upsert([str(uuid.uuid4())], [[1.0] * 8], [{}])
    store.close()
    r = subprocess.run(
        [str(BIN), "run", *_base(tmp_path, src, "dim", [])],
        env=env_with(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 78, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "size 8" in lines[0]
