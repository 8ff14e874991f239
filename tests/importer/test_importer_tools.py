"""``search`` and ``export``: use what was imported, and move it to another store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from conftest import BIN, Workspace, assert_same_points, env_with, read_points


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, env=env_with(None), timeout=300
    )


def test_search_prints_the_nearest_chunks_with_their_source(reference: Workspace) -> None:
    points = reference.points()
    _, payload = next(iter(points.values()))
    query = " ".join(payload["text"].split()[:12])
    r = _cli(
        "search",
        "--collection",
        "test",
        "--qdrant-path",
        str(reference.qdrant),
        query,
        "--limit",
        "3",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(hits) == 3
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all("source" in h["payload"] and "text" in h["payload"] for h in hits)
    r = _cli("search", "--collection", "test", "--qdrant-path", str(reference.qdrant), query)
    assert r.returncode == 0, r.stderr
    assert "#" in r.stdout.splitlines()[0]  # "score  source#chunk ..."


def test_export_to_jsonl_and_to_another_store_keeps_every_point(
    reference: Workspace, tmp_path: Path
) -> None:
    expected = reference.points()
    out = tmp_path / "points.jsonl"
    r = _cli(
        "export", "--collection", "test", "--qdrant-path", str(reference.qdrant), "--to", str(out)
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    exported = {
        row["id"]: (np.asarray(row["vector"], dtype=np.float32), row["payload"]) for row in rows
    }
    assert_same_points(exported, expected)
    r = _cli(
        "export",
        "--collection",
        "test",
        "--qdrant-path",
        str(reference.qdrant),
        "--to-path",
        str(tmp_path / "copy"),
    )
    assert r.returncode == 0, r.stderr
    assert_same_points(read_points(tmp_path / "copy"), expected)


def test_a_local_mode_store_is_refused_with_the_way_out_and_can_be_migrated(
    reference: Workspace, tmp_path: Path
) -> None:
    """The embedded store before Qdrant Edge was qdrant-client's local mode: such a directory
    is refused with a message naming the export, and the export copies it into Edge."""
    from qdrant_client import QdrantClient, models

    expected = reference.points()
    old = tmp_path / "old"
    client = QdrantClient(path=str(old))
    client.create_collection(
        "test", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    ids = list(expected)
    client.upsert(
        "test",
        models.Batch(
            ids=ids,
            vectors=[expected[i][0].tolist() for i in ids],
            payloads=[expected[i][1] for i in ids],
        ),
    )
    client.close()
    args = Workspace(tmp_path, reference.src).args()
    args[args.index("--qdrant-path") + 1] = str(old)
    r = subprocess.run(args, capture_output=True, text=True, env=env_with(None), timeout=300)
    assert r.returncode == 78, r.stderr
    assert "local-mode store" in r.stderr
    assert "embedding-importer export --local-path" in r.stderr
    r = _cli(
        "export",
        "--collection",
        "test",
        "--local-path",
        str(old),
        "--to-path",
        str(tmp_path / "new"),
    )
    assert r.returncode == 0, r.stderr
    assert_same_points(read_points(tmp_path / "new"), expected)
