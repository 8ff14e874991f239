"""docs/crd-reference.md is generated from the CRD and must be regenerated with it."""

from __future__ import annotations

from pathlib import Path

from eio_operator import gendocs
from operator_testlib import CRD_PATH, ROOT, load_crd


def test_crd_reference_is_fresh() -> None:
    expected = gendocs.render(load_crd(), CRD_PATH.relative_to(ROOT).as_posix())
    actual = (ROOT / "docs" / "crd-reference.md").read_text()
    assert actual == expected, "docs/crd-reference.md is stale: run python -m eio_operator.gendocs"


def test_reference_mentions_every_spec_field() -> None:
    text = (ROOT / "docs" / "crd-reference.md").read_text()
    for field in (
        "batchSize",
        "maxMemoryLimit",
        "oomsBeforeGrow",
        "stallSeconds",
        "keepTerminatedPods",
        "apiKeySecretRef",
        "failuresWithoutProgress",
        "mode",
        "onDelete",
        "pollIntervalSeconds",
        "includeTools",
        "lastSyncTime",
    ):
        assert f"`{field}`" in text


def test_check_mode(tmp_path: Path) -> None:
    out = tmp_path / "ref.md"
    crd = str(CRD_PATH)
    assert gendocs.main(["--crd", crd, "--out", str(out), "--check"]) == 1
    assert gendocs.main(["--crd", crd, "--out", str(out)]) == 0
    assert gendocs.main(["--crd", crd, "--out", str(out), "--check"]) == 0


def test_architecture_rule_table_is_the_decision_docstring_table() -> None:
    # decision.py's docstring holds the one rule table; docs/architecture.md carries a copy.
    from eio_operator import decision

    table = [ln for ln in (decision.__doc__ or "").splitlines() if ln.startswith("|")]
    assert len(table) > 10
    docs = (ROOT / "docs" / "architecture.md").read_text().splitlines()
    start = docs.index(table[0])
    assert docs[start : start + len(table)] == table, (
        "docs/architecture.md's rule table differs from decision.py's docstring: copy it over"
    )
