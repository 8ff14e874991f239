"""Fixtures for the chart tests: render the chart with the real Helm CLI (no cluster).

The helm binary is found in $HELM, else in the cache hack/build-helm.sh fills
($EIO_CACHE/bin/helm, default ~/.cache/eio-devcluster/bin/helm), else on PATH. Without it the
tests skip and say how to build it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "embedding-import-operator"
RELEASE = "eio"
NAMESPACE = "eio-system"


def find_helm() -> str | None:
    if env := os.environ.get("HELM"):
        return env if Path(env).is_file() else None
    cache = Path(os.environ.get("EIO_CACHE", Path.home() / ".cache" / "eio-devcluster"))
    cached = cache / "bin" / "helm"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which("helm")


@pytest.fixture(scope="session")
def helm() -> str:
    path = find_helm()
    if path is None:
        pytest.skip("helm CLI not built: run hack/build-helm.sh (or set HELM=/path/to/helm)")
    return path


@dataclass
class Rendered:
    """The objects of one `helm template` run."""

    objects: list[dict[str, Any]]

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def container(self) -> dict[str, Any]:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    def env(self) -> dict[str, Any]:
        return {e["name"]: e.get("value", e.get("valueFrom")) for e in self.container()["env"]}


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _values_file(tmp_path: Path, values: dict[str, Any] | None) -> list[str]:
    if not values:
        return []
    path = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["--values", str(path)]


@pytest.fixture
def render(helm: str, tmp_path: Path) -> Callable[..., Rendered]:
    """render(values) -> the rendered objects; fails the test if helm fails."""

    def _render(values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> Rendered:
        proc = run_helm(
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            *_values_file(tmp_path, values),
        )
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return Rendered(docs)

    return _render


@pytest.fixture
def render_error(helm: str, tmp_path: Path) -> Callable[..., str]:
    """render_error(values) -> helm's error output; fails the test if rendering succeeds."""

    def _render_error(values: dict[str, Any]) -> str:
        proc = run_helm(
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *_values_file(tmp_path, values),
            check=False,
        )
        assert proc.returncode != 0, f"helm accepted {values!r}"
        return proc.stderr

    return _render_error


@pytest.fixture
def chart_crd_sources() -> Iterator[list[Path]]:
    """The CRD files of the one source (crds/); skips while none is written yet."""
    files = sorted((ROOT / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("crds/*.yaml not written yet (crds/eio.dev_embeddingimports.yaml)")
    return files


@pytest.fixture
def crd_present() -> bool:
    """True when the chart carries a copy of the CRD (files/crds/*.yaml)."""
    return any((CHART / "files" / "crds").glob("*.yaml"))
