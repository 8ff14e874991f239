"""The images users run, run here: both OCI archives from ``hack/build-images.sh`` (the
project's Dockerfiles, built with buildah) unpacked with skopeo + umoci and run with runc the
way a kubelet would run them in the chart's pods: read-only root filesystem, UID 65532 from the
image, a tmpfs at /tmp, no network namespace shared with the host (so no network at all), a
memory limit.

* the importer image imports a small corpus with its baked-in offline model, and a second run
  finds the checkpoint complete;
* the operator image starts: its entry point answers ``--help``, and kopf and the operator
  package import as the image's user on the read-only root.

Skips when the archives or the tools are missing, unless ``EIO_REQUIRE_IMAGES=1``
(hack/test.sh sets it after building the images), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devcluster.config import paths

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
IMAGES = ("embedding-importer", "embedding-import-operator")
UID = 65532


def _missing(reason: str) -> None:
    if os.environ.get("EIO_REQUIRE_IMAGES") == "1":
        pytest.fail(f"{reason} (EIO_REQUIRE_IMAGES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def bundles() -> Iterator[dict[str, Path]]:
    """name -> an unpacked OCI runtime bundle (rootfs + config.json) of each image."""
    archives = {n: paths().cache / "images" / f"{n}.oci.tar" for n in IMAGES}
    if missing := [str(a) for a in archives.values() if not a.exists()]:
        _missing(f"image archives not built (run hack/build-images.sh): {', '.join(missing)}")
    if tools := [t for t in ("runc", "skopeo", "umoci") if shutil.which(t) is None]:
        _missing(f"missing tools: {', '.join(tools)}")
    if os.geteuid() != 0:
        _missing("runc needs root here")
    work = Path(tempfile.mkdtemp(prefix="eio-image-smoke-"))
    out: dict[str, Path] = {}
    try:
        for name, archive in archives.items():
            layout = work / f"{name}.oci"
            subprocess.run(
                ["skopeo", "copy", "-q", f"oci-archive:{archive}", f"oci:{layout}:smoke"],
                check=True,
                capture_output=True,
            )
            bundle = work / name
            subprocess.run(
                ["umoci", "unpack", "--image", f"{layout}:smoke", str(bundle)],
                check=True,
                capture_output=True,
            )
            shutil.rmtree(layout)
            out[name] = bundle
        yield out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def image_config(bundle: Path) -> dict[str, Any]:
    """The runtime config umoci derived from the image (user, entry point, env)."""
    pristine = bundle / "config.image.json"
    if not pristine.exists():
        shutil.copy(bundle / "config.json", pristine)
    cfg: dict[str, Any] = json.loads(pristine.read_text())
    return cfg


def run_container(
    bundle: Path,
    args: list[str] | None,
    binds: list[tuple[Path, str, bool]],
    memory: int = 1 << 30,
    env: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``runc run`` the bundle as its image says (user, env, entry point; ``args`` replace
    them), with the pod-like restrictions of the chart."""
    cfg = image_config(bundle)
    proc = cfg["process"]
    proc["terminal"] = False
    if args is not None:
        proc["args"] = args
    proc["env"] = [*proc.get("env", []), *(env or [])]
    proc["noNewPrivileges"] = True
    cfg["root"]["readonly"] = True
    mounts = [m for m in cfg["mounts"] if m["destination"] != "/tmp"]
    mounts.append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777", "size=512m"]})  # fmt: skip
    for src, dest, ro in binds:
        mounts.append({"destination": dest, "type": "bind", "source": str(src),
                       "options": ["rbind", "ro" if ro else "rw"]})  # fmt: skip
    cfg["mounts"] = mounts
    linux = cfg.setdefault("linux", {})
    # a relative cgroup path: runc puts it under this process's own cgroups
    cid = f"eio-smoke-{uuid.uuid4().hex[:8]}"
    linux["cgroupsPath"] = cid
    linux.setdefault("resources", {})["memory"] = {"limit": memory}
    assert any(ns["type"] == "network" for ns in linux.get("namespaces", [])), "own netns"
    (bundle / "config.json").write_text(json.dumps(cfg))
    state = Path(tempfile.mkdtemp(prefix="eio-runc-"))
    try:
        return subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle), cid],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "-f", cid],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus() -> Iterator[Path]:
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import corpus as corpus_gen  # bench/corpus.py
    finally:
        sys.path.remove(str(REPO / "bench"))
    d = Path(tempfile.mkdtemp(prefix="eio-smoke-corpus-"))
    corpus_gen.generate(d / "sources", files=3, seed=11, median_turns=3)
    for p in [d, *d.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield d / "sources"
    shutil.rmtree(d, ignore_errors=True)


def test_importer_image_imports_offline_on_a_read_only_root(
    bundles: dict[str, Path], corpus: Path
) -> None:
    bundle = bundles["embedding-importer"]
    cfg = image_config(bundle)
    assert cfg["process"]["user"]["uid"] == UID, cfg["process"]["user"]  # USER of the image
    assert cfg["process"]["args"][:2] == ["embedding-importer", "run"], cfg["process"]["args"]
    out = Path(tempfile.mkdtemp(prefix="eio-smoke-out-"))
    out.chmod(0o777)
    try:
        args = ["embedding-importer", "run", "--source", "/data/sources", "--format", "claude",
                "--collection", "smoke", "--qdrant-path", "/data/out/qdrant",
                "--checkpoint", "file:/data/out/checkpoint.json", "--progress", "off",
                "--threads", "1"]  # fmt: skip
        binds = [(corpus, "/data/sources", True), (out, "/data/out", False)]
        run = run_container(bundle, args, binds)
        log = run.stdout + run.stderr
        assert run.returncode == 0, f"importer exited {run.returncode}:\n{log[-4000:]}"
        cp = json.loads((out / "checkpoint.json").read_text())
        assert cp["complete"] is True, cp
        assert cp["counters"]["points"] == cp["counters"]["chunks"] > 0, cp["counters"]
        # written by the image's user, nowhere but the volume (the root is read-only)
        assert (out / "checkpoint.json").stat().st_uid == UID
        # a second run finds the work done and leaves the points as they are
        again = run_container(bundle, args, binds)
        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
        cp2 = json.loads((out / "checkpoint.json").read_text())
        assert cp2["counters"]["points"] == cp["counters"]["points"], (cp, cp2)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_importer_image_refuses_to_write_its_root(bundles: dict[str, Path]) -> None:
    """The pod contract the chart relies on: only /tmp and volumes are writable."""
    probe = ("import os, pathlib; pathlib.Path('/tmp/ok').write_text('x');\n"
             "try:\n open('/opt/venv/x', 'w')\nexcept OSError as e: print('ro', e.errno)\n"
             "print(os.getuid(), os.getgid())")  # fmt: skip
    run = run_container(bundles["embedding-importer"], ["python", "-c", probe], [])
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ro", "30", str(UID), str(UID)], run.stdout  # EROFS


def test_operator_image_starts(bundles: dict[str, Path]) -> None:
    bundle = bundles["embedding-import-operator"]
    cfg = image_config(bundle)
    assert cfg["process"]["user"]["uid"] == UID
    assert cfg["process"]["args"][0] == "embedding-import-operator", cfg["process"]["args"]
    helped = run_container(bundle, ["embedding-import-operator", "--help"], [], memory=256 << 20)
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert "usage" in helped.stdout.lower(), helped.stdout
    check = (
        "import getpass, kopf, eio_operator.main, eio_common.contract, importlib.util as u; "
        "print(getpass.getuser(), u.find_spec('fastembed'))"
    )
    run = run_container(bundle, ["python", "-c", check], [], memory=256 << 20)
    assert run.returncode == 0, run.stdout + run.stderr
    # the image's user is known (kopf needs it) and the importer's heavy deps stayed out
    assert run.stdout.split() == ["nonroot", "None"], run.stdout
