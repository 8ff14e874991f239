"""Build identity on a real import (real model, real Qdrant Edge): a run whose settings would
cut or embed text another way than the collection's points were is refused (exit 78, naming
each difference); a collection from before identities were recorded is adopted; unchanged
settings import incrementally as before; ``verify`` reports a mismatch as damage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import BIN, Workspace, env_with, make_corpus

from eio_common.contract import EXIT_CONFIG, IDENTITY_POINT_ID
from importer.sink import open_sink
from importer.verify import EXIT_DAMAGE


def _small(root: Path) -> Workspace:
    src = make_corpus(
        root, conversations=1, turns=6, jsonl_files=1, records=4, markdown=1, broken=False
    )
    ws = Workspace(root, src)
    r = ws.run("--chunk-size", "120")
    assert r.returncode == 0, r.stderr
    return ws


def _identity(ws: Workspace) -> dict[str, Any] | None:
    sink = open_sink(None, None, str(ws.qdrant), "test", False, 0, manifest=True)
    try:
        return sink.read_identity()
    finally:
        sink.close()


def _report(ws: Workspace, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = ws.root / "report.json"
    r = ws.run("--chunk-size", "120", "--report", str(report), *extra)
    return r, json.loads(report.read_text()) if report.exists() else {}


def test_changed_settings_are_refused_naming_each_difference(tmp_path: Path) -> None:
    ws = _small(tmp_path)
    stored = _identity(ws)
    assert stored is not None
    assert stored["build_identity"]["chunk_size"] == 120
    before = ws.points()
    cases = [
        (("--chunk-size", "60"), "chunk size 120 -> 60"),
        (("--chunk-size", "120", "--include-tools"), "include tools off -> on"),
        (("--chunk-size", "120", "--jsonl-field", "body"), "jsonl field text -> body"),
    ]
    for extra, named in cases:
        r = ws.run(*extra)
        assert r.returncode == EXIT_CONFIG, (extra, r.stderr)
        assert named in r.stderr, r.stderr
        assert "--rebuild" in r.stderr, r.stderr
        assert "--collection" in r.stderr, r.stderr
    both = ws.run("--chunk-size", "60", "--chunk-overlap", "10")
    assert both.returncode == EXIT_CONFIG
    assert "chunk size 120 -> 60; chunk overlap 20 -> 10" in both.stderr, both.stderr
    assert ws.points().keys() == before.keys()  # nothing was written by the refused runs
    assert _identity(ws) == stored


def test_unchanged_settings_import_incrementally(tmp_path: Path) -> None:
    ws = _small(tmp_path)
    r, report = _report(ws)
    assert r.returncode == 0, r.stderr
    assert report["chunks_embedded"] == 0, report
    assert "adopting" not in r.stderr


def test_collection_without_identity_is_adopted(tmp_path: Path) -> None:
    ws = _small(tmp_path)
    stored = _identity(ws)
    sink = open_sink(None, None, str(ws.qdrant), "test", False, 0, manifest=True)
    try:
        assert sink.read_identity() is not None
        sink._delete(sink.files, [IDENTITY_POINT_ID])  # as written before identities existed
        sink.sync()
    finally:
        sink.close()
    assert _identity(ws) is None
    r, report = _report(ws)
    assert r.returncode == 0, r.stderr
    assert (
        "WARNING importer: adopting collection test: built before build identity was "
        "recorded; recording current settings" in r.stderr
    ), r.stderr
    assert report["chunks_embedded"] == 0, report  # adopted as it is, nothing re-embedded
    assert _identity(ws) == stored
    again, _ = _report(ws)
    assert again.returncode == 0, again.stderr
    assert "adopting" not in again.stderr


def test_verify_reports_an_identity_mismatch_as_damage(tmp_path: Path) -> None:
    ws = _small(tmp_path)

    def verify(*extra: str) -> tuple[int, dict[str, Any], str]:
        args = [str(BIN), "verify", *ws.args()[2:], "--json", *extra]
        r = subprocess.run(args, env=env_with(None), capture_output=True, text=True, timeout=300)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr

    code, out, err = verify("--chunk-size", "120")
    assert (code, out["damage"]) == (0, 0), (out, err)
    code, out, err = verify("--chunk-size", "60")
    assert code == EXIT_DAMAGE, (out, err)
    assert out["counts"]["identity_mismatch"] == 1, out
    assert out["names"]["identity_mismatch"] == ["chunk size 120 -> 60"], out
    code, out, err = verify("--chunk-size", "60", "--repair")
    assert code == EXIT_DAMAGE, (out, err)
    assert "run with --rebuild" in err, err
    assert "repair" not in out  # nothing was changed
