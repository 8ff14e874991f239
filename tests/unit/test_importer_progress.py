"""The progress output through tqdm: the plain log line the tests and operators read, with an
ETA from the rate files were done in this run (not counting files done before it)."""

from __future__ import annotations

import logging

import pytest

from importer import progress
from importer.progress import Progress


def test_plain_lines_carry_files_chunks_memory_and_an_eta(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    p = Progress("plain", 100)
    with caplog.at_level(logging.INFO, logger="importer"):
        p.update(40, 0, 300 * 2**20)  # 40 files were done by earlier runs
        now[0] += 5.0
        p.update(45, 32, 300 * 2**20)  # within PLAIN_INTERVAL: no line
        now[0] += 25.0
        p.update(70, 64, 300 * 2**20)
    first, second = (r.getMessage() for r in caplog.records)
    assert first == "progress: files 40/100 (40.0%), chunks 0 (0.0/s)  mem 300 MiB  eta ?"
    # 30 files in this run's 30 s: the 30 left take 30 s more (not 30 / (70/30 per s))
    assert second == "progress: files 70/100 (70.0%), chunks 64 (2.1/s)  mem 300 MiB  eta 00:30"


def test_off_prints_nothing(caplog: pytest.LogCaptureFixture) -> None:
    p = Progress("off", 3)
    with caplog.at_level(logging.INFO, logger="importer"):
        p.update(1, 1, 1)
        p.close(3)
    assert caplog.records == []
