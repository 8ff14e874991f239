"""The CRD has one source (crds/); the chart's copy must not drift from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .conftest import CHART, Rendered

CHART_CRDS = CHART / "files" / "crds"
KEEP = "helm.sh/resource-policy"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_chart_copy_matches_source(chart_crd_sources: list[Path]) -> None:
    copies = sorted(CHART_CRDS.glob("*.yaml"))
    assert [p.name for p in copies] == [p.name for p in chart_crd_sources], (
        "chart CRDs differ from crds/: run hack/sync-chart-crds.sh"
    )
    for source in chart_crd_sources:
        assert (CHART_CRDS / source.name).read_bytes() == source.read_bytes(), (
            f"{source.name} drifted from crds/: run hack/sync-chart-crds.sh"
        )


def test_rendered_crd_equals_source(
    chart_crd_sources: list[Path], render: Callable[..., Rendered]
) -> None:
    """What Helm applies is the source CRD plus the release labels and the keep annotation."""
    sources = {d["metadata"]["name"]: d for p in chart_crd_sources for d in load_all(p)}
    rendered = {d["metadata"]["name"]: d for d in render().all("CustomResourceDefinition")}
    assert rendered.keys() == sources.keys()
    for name, source in sources.items():
        got = rendered[name]
        assert got["metadata"]["annotations"][KEEP] == "keep"
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        for key in source:
            if key != "metadata":
                assert got[key] == source[key], f"{name}: {key} differs from crds/"
        for key, value in source["metadata"].items():
            if key in {"labels", "annotations"}:
                assert value.items() <= got["metadata"][key].items()
            else:
                assert got["metadata"][key] == value


def test_crd_is_the_embeddingimport(chart_crd_sources: list[Path]) -> None:
    crds = [d for p in chart_crd_sources for d in load_all(p)]
    ei = [d for d in crds if d["metadata"]["name"] == "embeddingimports.eio.dev"]
    assert len(ei) == 1
    spec = ei[0]["spec"]
    assert spec["group"] == "eio.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "EmbeddingImport"
    assert spec["names"]["plural"] == "embeddingimports"
    assert "v1alpha1" in [v["name"] for v in spec["versions"]]


def test_keep_policy_switch(chart_crd_sources: list[Path], render: Callable[..., Rendered]) -> None:
    crds = render({"crds": {"keep": False}}).all("CustomResourceDefinition")
    assert crds
    for crd in crds:
        assert KEEP not in (crd["metadata"].get("annotations") or {})
