"""The operator image stays small: importing the operator never pulls in the importer's heavy
dependencies, and the operator imports nothing of ``importer`` but the contract, the one
Kubernetes connection helper (``importer.kubeapi``, which needs only the ``kubernetes`` package)
and the one retry loop (``importer.retry``, standard library only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from operator_testlib import ROOT

ALLOWED = ("importer", "importer.contract", "importer.kubeapi", "importer.retry")
HEAVY = ("fastembed", "qdrant_client", "onnxruntime", "tokenizers", "numpy", "psutil")


def test_importing_the_operator_loads_no_heavy_modules() -> None:
    code = (
        "import sys\n"
        "import eio_operator.main, eio_operator.handlers, eio_operator.reconcile\n"
        "import eio_operator.gendocs\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "importer = sorted(m for m in sys.modules if m.split('.')[0] == 'importer')\n"
        "print(heavy, importer)\n"
        "assert not heavy, heavy\n"
        "assert importer == ['importer', 'importer.contract', 'importer.kubeapi', "
        "'importer.retry'], importer\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr + out.stdout


def test_operator_sources_import_only_the_contract_from_importer() -> None:
    for path in sorted((ROOT / "operator" / "eio_operator").glob("*.py")):
        tree = ast.parse(Path(path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            root = mod.split(".")[0]
            assert root not in HEAVY, f"{path.name} imports {mod}"
            if root == "importer":
                assert mod in ALLOWED, f"{path.name} imports {mod}"
                if mod == "importer":
                    assert isinstance(node, ast.ImportFrom)
                    assert {a.name for a in node.names} <= {"contract", "kubeapi", "retry"}, (
                        path.name
                    )
