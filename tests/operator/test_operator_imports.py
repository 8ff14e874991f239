"""Import boundaries between the project's packages, and the operator image stays small.

- ``eio_common`` (contract, config loader, retry loop, quantities, cgroup reader) imports none
  of the project's other packages;
- the operator and the dev cluster import ``eio_common``, never ``importer``;
- the importer imports neither the operator nor the dev cluster;
- importing the operator never loads the importer's heavy dependencies.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from operator_testlib import ROOT

HEAVY = ("fastembed", "qdrant_client", "qdrant_edge", "onnxruntime", "tokenizers", "numpy",
         "psutil")  # fmt: skip
PACKAGES = {
    "eio_common": ROOT / "eio_common",
    "importer": ROOT / "importer",
    "eio_operator": ROOT / "operator" / "eio_operator",
    "devcluster": ROOT / "devcluster",
}
# package -> the project's packages it must not import
FORBIDDEN = {
    "eio_common": {"importer", "eio_operator", "devcluster"},
    "importer": {"eio_operator", "devcluster"},
    "eio_operator": {"importer", "devcluster"},
    "devcluster": {"importer"},
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_boundaries(package: str) -> None:
    files = sorted(PACKAGES[package].rglob("*.py"))
    assert files, package
    for path in files:
        bad = imported_roots(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_operator_and_common_import_no_heavy_modules() -> None:
    for package in ("eio_common", "eio_operator"):
        for path in sorted(PACKAGES[package].rglob("*.py")):
            heavy = imported_roots(path) & set(HEAVY)
            assert not heavy, f"{path.relative_to(ROOT)} imports {sorted(heavy)}"


def test_importing_the_operator_loads_no_heavy_modules() -> None:
    code = (
        "import sys\n"
        "import eio_operator.main, eio_operator.handlers, eio_operator.reconcile\n"
        "import eio_operator.gendocs\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "mine = sorted({m.split('.')[0] for m in sys.modules} & {'importer', 'devcluster'})\n"
        "assert not heavy, heavy\n"
        "assert not mine, mine\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr + out.stdout
