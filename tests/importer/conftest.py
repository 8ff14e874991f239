"""Integration fixtures: real model, real embedded Qdrant, the real console script."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eio_common.contract import IDENTITY_POINT_ID, FileState, manifest_collection

BIN = Path(sys.executable).parent / "embedding-importer"
_WORDS_TEXT = (
    "memory leak onnx runtime arena qdrant vector embedding kubernetes operator pod restart "
    "checkpoint resume shard batch token chunk model tokenizer cgroup threshold signal exit "
    "the a of and to in is it that for on with as at by from this be are was"
)
WORDS = _WORDS_TEXT.split()


def sentence(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_corpus(
    root: Path,
    seed: int = 0,
    conversations: int = 3,
    turns: int = 16,
    jsonl_files: int = 2,
    records: int = 12,
    markdown: int = 2,
    broken: bool = True,
) -> Path:
    """A mixed corpus: Claude Code conversations, plain JSONL, markdown and broken files."""
    rnd = random.Random(seed)
    src = root / "src"
    (src / "conversations").mkdir(parents=True, exist_ok=True)
    for c in range(conversations):
        lines = []
        for t in range(turns):
            kind = "user" if t % 2 == 0 else "assistant"
            if kind == "user":
                content: Any = sentence(rnd, rnd.randint(3, 40))
            else:
                content = [
                    {"type": "thinking", "thinking": "hmm " * 5},
                    {"type": "text", "text": sentence(rnd, rnd.randint(5, 220))},
                    {"type": "tool_use", "name": "Bash", "input": {"command": "ls"}},
                ]
            lines.append(
                json.dumps(
                    {
                        "type": kind,
                        "sessionId": f"session-{c}",
                        "uuid": f"{t}",
                        "message": {"role": kind, "content": content},
                    }
                )
            )
            if t == 5:
                lines.append(
                    json.dumps(
                        {
                            "type": "user",
                            "sessionId": f"session-{c}",
                            "message": {
                                "role": "user",
                                "content": [{"type": "tool_result", "content": "output"}],
                            },
                        }
                    )
                )
        if broken:
            lines.insert(3, '{"type": "user", "message": {"content": "unterminated')
        (src / "conversations" / f"conv-{c:02d}.jsonl").write_text("\n".join(lines) + "\n")
    for j in range(jsonl_files):
        with open(src / f"docs-{j}.jsonl", "w") as f:
            for r in range(records):
                f.write(json.dumps({"id": r, "text": sentence(rnd, rnd.randint(5, 300))}) + "\n")
            if broken:
                f.write(json.dumps({"id": "no-text"}) + "\n")
    for m in range(markdown):
        paras = [f"# Document {m}"] + [sentence(rnd, rnd.randint(8, 160)) for _ in range(8)]
        (src / f"notes-{m}.md").write_text("\n\n".join(paras) + "\n")
    if broken:
        (src / "empty.txt").write_bytes(b"")
        (src / "image.png").write_bytes(bytes(range(256)) * 16)
        (src / "latin1.txt").write_bytes("Gr\xfc\xdfe aus K\xf6ln ".encode("latin-1") * 30)
    return src


@dataclass
class Workspace:
    root: Path
    src: Path

    @property
    def qdrant(self) -> Path:
        return self.root / "qdrant"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.json"

    def args(self, *extra: str) -> list[str]:
        return [
            str(BIN),
            "run",
            "--source",
            str(self.src),
            "--collection",
            "test",
            "--qdrant-path",
            str(self.qdrant),
            "--checkpoint",
            f"file:{self.checkpoint}",
            "--progress",
            "plain",
            *extra,
        ]

    def run(
        self, *extra: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(*extra), env=env_with(env), capture_output=True, text=True, timeout=timeout
        )

    def file_states(self) -> dict[str, FileState]:
        """Per-file progress from the manifest beside the points (no process may hold it)."""
        from importer.sink import open_sink

        sink = open_sink(None, None, str(self.qdrant), manifest_collection("test"), False, 0)
        try:
            states = (
                FileState.model_validate_json(p.payload["state"])
                for p in sink.scroll(False)
                if p.id != IDENTITY_POINT_ID
            )
            return {st.sid: st for st in states}
        finally:
            sink.close()

    def popen(self, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.args(*extra),
            env=env_with(env),
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def checkpoint_json(self) -> dict[str, Any]:
        return dict(json.loads(self.checkpoint.read_text()))

    def points(self) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
        return read_points(self.qdrant)


def env_with(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPORTER_")}
    env.update(extra or {})
    return env


def read_points(
    path: Path, collection: str = "test"
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Every point of an embedded store (read through the importer's own sink)."""
    from importer.sink import open_sink

    sink = open_sink(None, None, str(path), collection, False, 0)
    try:
        return {
            p.id: (np.asarray(p.vector, dtype=np.float32), p.payload)
            for p in sink.scroll(with_vectors=True)
        }
    finally:
        sink.close()


def assert_same_points(
    a: dict[str, tuple[np.ndarray, dict[str, Any]]], b: dict[str, tuple[np.ndarray, dict[str, Any]]]
) -> float:
    """Same IDs, same payloads, same vectors (up to float32 noise from batch padding).

    Returns the largest absolute vector difference seen.
    """
    assert set(a) == set(b), (len(set(a) - set(b)), len(set(b) - set(a)))
    worst = 0.0
    for pid, (va, pa) in a.items():
        vb, pb = b[pid]
        assert pa == pb, pid
        worst = max(worst, float(np.abs(va - vb).max()))
    # ONNX Runtime's results for a text differ in the last bits with the batch it is padded in
    assert worst < 1e-5, worst
    return worst


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path, make_corpus(tmp_path))


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One uninterrupted run over the standard corpus, for comparisons."""
    root = tmp_path_factory.mktemp("reference")
    ws = Workspace(root, make_corpus(root))
    r = ws.run()
    assert r.returncode == 0, r.stderr
    return ws
