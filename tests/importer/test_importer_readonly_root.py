"""As in a pod with readOnlyRootFilesystem: / read-only, an empty writable /tmp, data on a
volume. The importer finds and assembles its model without flags and completes."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import BIN, env_with, make_corpus


def test_read_only_root_with_writable_tmp() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    data = Path("/dev/shm") / f"importer-ro-{uuid.uuid4().hex[:8]}"  # the "volume"
    data.mkdir()
    try:
        src = make_corpus(data, conversations=1, jsonl_files=1, markdown=1)
        run = (
            f"exec {BIN} run --source {src} --collection ro --qdrant-path {data}/qdrant "
            f"--checkpoint file:{data}/checkpoint.json --progress off"
        )
        # A checkout under /tmp (a CI clone may be one) would vanish under the empty /tmp:
        # bind it back read-only, as an image holds its software outside the pod's /tmp.
        repo = Path(__file__).resolve().parents[2]
        keep_pre = keep_post = ""
        if repo.is_relative_to("/tmp"):
            old = f"/run/eio-oldtmp-{uuid.uuid4().hex[:8]}"
            keep_pre = f"mkdir -p {old} && mount --rbind /tmp {old} && "
            keep_post = (
                f" && mkdir -p {repo} && mount --rbind {old}/{repo.relative_to('/tmp')}"
                f" {repo} && mount -o remount,bind,ro {repo}"
            )
        script = (
            f"mount --make-rprivate / && {keep_pre}mount -o remount,bind,ro / && "
            f"mount -t tmpfs tmpfs /tmp{keep_post} || exit 99; "
            f"touch {BIN.parent}/probe 2>/dev/null && exit 98; {run}"
        )
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", script],
            capture_output=True,
            text=True,
            env=env_with({"TMPDIR": "/tmp"}),
            timeout=600,
        )
        if r.returncode == 99:
            pytest.skip(f"cannot make a read-only root here: {r.stderr[-300:]}")
        assert r.returncode != 98, "root was not read-only"
        assert r.returncode == 0, r.stderr[-3000:]
        assert "loaded from /tmp/embedding-importer/model-" in r.stderr
        cp = json.loads((data / "checkpoint.json").read_text())
        assert cp["complete"] is True
        assert cp["counters"]["points"] > 0
    finally:
        shutil.rmtree(data, ignore_errors=True)
