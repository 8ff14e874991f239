#!/usr/bin/env python3
"""Run the Dockerfiles' install steps without a Docker engine.

For each of Dockerfile.operator and Dockerfile.importer: copy the build context the way
.dockerignore admits it (pyproject.toml, README.md, eio_common/, importer/, operator/) into a
temp dir, take the build stage's RUN instruction verbatim, point /opt/venv and /tmp at the temp
dir, and run it
with the same Python minor version as the base image when available (else this interpreter).
The RUN lines carry their own assertions (imports work; fastembed absent from the operator).
Then check the console script of the image's ENTRYPOINT exists in the venv, and for the
importer run a real `embedding-importer run` over two small text files with the image's ENV
(HF_HUB_OFFLINE=1, caches under /tmp) and no network need: the model comes from the packages.

Usage: hack/check-image-installs.py [operator|importer ...]   (needs PyPI access)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ["pyproject.toml", "README.md", "eio_common", "importer", "operator"]


def build_run(dockerfile: Path) -> str:
    text = dockerfile.read_text()
    build_stage = text.split("\nFROM ", 2)[1]  # the first stage
    lines = build_stage.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("RUN "):
            cmd = [line[4:]]
            while cmd[-1].endswith("\\"):
                i += 1
                cmd.append(lines[i])
            return "\n".join(cmd)
    raise SystemExit(f"{dockerfile}: no RUN in the build stage")


def entrypoint(dockerfile: Path) -> str:
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])$", dockerfile.read_text(), re.MULTILINE)
    assert match, dockerfile
    return str(json.loads(match.group(1))[0])


def image_env(dockerfile: Path, venv: Path, tmp: Path) -> dict[str, str]:
    """The final stage's ENV, with /opt/venv and /tmp pointed at the temp dir."""
    stage = dockerfile.read_text().rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", stage, re.MULTILINE | re.DOTALL):
        for key, value in re.findall(r"(\w+)=(\S+)", block.replace("\\\n", " ")):
            value = value.replace("/tmp", str(tmp)).replace("/opt/venv", str(venv))
            env[key] = value.replace("$PATH", "/usr/bin:/bin")
    return env


def smoke_importer(dockerfile: Path, work: Path) -> None:
    data = work / "data"
    data.mkdir()
    (data / "a.txt").write_text("Restart as a strategy.\n\nCheckpoints make it safe.\n")
    (data / "b.txt").write_text("Deterministic point IDs keep vectors exactly-once.\n")
    scratch = work / "scratch"
    scratch.mkdir()
    env = image_env(dockerfile, work / "venv", scratch)
    env.update(
        IMPORTER_SOURCE=str(data / "*.txt"),
        IMPORTER_FORMAT="text",
        IMPORTER_COLLECTION="smoke",
        IMPORTER_QDRANT_PATH=str(work / "qdrant"),
        IMPORTER_CHECKPOINT=f"file:{work / 'checkpoint.json'}",
        IMPORTER_THREADS="1",
        TMPDIR=str(scratch),
    )
    print(f"== {dockerfile.name}: smoke run with ENV {sorted(env)}", flush=True)
    proc = subprocess.run(
        ["embedding-importer", "run"], env=env, cwd=scratch, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"importer smoke run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    checkpoint = json.loads((work / "checkpoint.json").read_text())
    print(f"== {dockerfile.name}: smoke run OK, checkpoint {json.dumps(checkpoint)[:300]}")


def check(name: str) -> None:
    dockerfile = ROOT / f"Dockerfile.{name}"
    with tempfile.TemporaryDirectory(prefix=f"eio-image-{name}-") as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        for item in CONTEXT:
            path = ROOT / item
            if path.is_dir():
                shutil.copytree(
                    path, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                )
            else:
                shutil.copy2(path, src / item)
        run = build_run(dockerfile)
        run = run.replace("/tmp/", f"{work}/").replace("/opt/venv", str(work / "venv"))
        python = shutil.which("python3.11") or sys.executable
        run = re.sub(r"^python ", f"{python} ", run)
        print(f"== {dockerfile.name}: {run}", flush=True)
        start = time.monotonic()
        subprocess.run(["bash", "-euo", "pipefail", "-c", run], cwd=src, check=True)
        script = work / "venv" / "bin" / entrypoint(dockerfile)
        assert script.exists(), f"{script} missing"
        if name == "importer":
            smoke_importer(dockerfile, work)
        size = sum(f.stat().st_size for f in (work / "venv").rglob("*") if f.is_file())
        print(
            f"== {dockerfile.name}: OK in {time.monotonic() - start:.0f}s, "
            f"venv {size / 2**20:.0f} MiB, entry point {script.name} present",
            flush=True,
        )


if __name__ == "__main__":
    for name in sys.argv[1:] or ["operator", "importer"]:
        check(name)
