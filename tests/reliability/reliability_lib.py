"""Helpers of the standalone reliability tests.

The importer's integration helpers (corpus generator, ``Workspace``, point comparison) live in
``tests/importer/conftest.py``; they are loaded here under a unique module name instead of being
copied (a plain ``import conftest`` would pick up whichever conftest pytest loaded last).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import IO

TESTS = Path(__file__).resolve().parents[1]


def importer_testlib() -> ModuleType:
    """``tests/importer/conftest.py`` as the module ``importer_testlib``."""
    name = "importer_testlib"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / "importer" / "conftest.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


class LineWatcher:
    """Reads a pipe in a thread, keeps the lines, and signals when one contains ``marker``."""

    def __init__(self, pipe: IO[str], marker: str) -> None:
        self.lines: list[str] = []
        self.seen = threading.Event()
        self.marker = marker
        self._t = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._t.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.lines.append(line)
            if self.marker in line:
                self.seen.set()

    def wait(self, timeout: float) -> bool:
        return self.seen.wait(timeout)

    def join(self, timeout: float = 10) -> str:
        self._t.join(timeout)
        return "".join(self.lines)


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
