"""`helm lint --strict` and the NOTES of a client-side dry-run install."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import CHART, NAMESPACE, RELEASE, run_helm


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"scope": "namespace"},
        {"scope": "namespace", "watchNamespace": "imports", "crds": {"install": False}},
        {"metrics": {"serviceMonitor": {"enabled": True}}},
    ],
    ids=["defaults", "namespaced", "namespaced-elsewhere-no-crds", "servicemonitor"],
)
def test_helm_lint_strict(helm: str, tmp_path: Path, values: dict[str, object]) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--values", str(values_file))
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout, proc.stdout


def test_notes(helm: str) -> None:
    proc = run_helm(
        helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"deployment/{RELEASE}-embedding-import-operator" in notes
    assert "all namespaces" in notes
    assert "embedding-importer:0.1.0" in notes
    assert len(notes.strip().splitlines()) <= 15, "NOTES.txt should stay short"


def test_notes_namespaced(helm: str) -> None:
    proc = run_helm(
        helm,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
        "--set",
        "scope=namespace",
    )
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"in namespace {NAMESPACE} only" in notes
    assert f"kubectl get embeddingimports -n {NAMESPACE}" in notes


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "embedding-import-operator"
    assert chart["appVersion"] == "0.1.0"
    pyproject = (CHART.parents[1] / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject, "appVersion != project version"
