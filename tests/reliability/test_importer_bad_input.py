"""Bad input, standalone: every broken file or line is skipped and counted by reason, the good
records around it are imported, and nothing of the good files changes.

Already covered in ``tests/importer`` (and not repeated here): whole-file ``empty``,
``binary``, ``non_utf8`` and ``malformed_line``/``no_text_field`` inside otherwise good
conversations. Added here: a 50 MB single line (inside a JSONL file and as a whole file
without a newline; memory must not grow by the line), truncated files (JSONL and a Claude
conversation cut mid-record), a bad UTF-8 line after the sniffed head, non-JSON and non-object
lines, and files that vanish after the file list was made.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from reliability_lib import LineWatcher, importer_testlib

from eio_common.contract import Checkpoint

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

lib = importer_testlib()
MB50 = 50 * 2**20
ARGS = ("--batch-size", "8", "--threads", "1", "--checkpoint-interval", "0.5")


def _rec(i: int, what: str) -> str:
    return json.dumps({"id": i, "text": f"{what} record {i}: memory leak onnx arena restart."})


def _good_files(src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    (src / "good-0.jsonl").write_text("".join(_rec(i, "good") + "\n" for i in range(10)))
    paras = [f"Paragraph {i} about vectors, shards and checkpoints." for i in range(6)]
    (src / "good-notes.md").write_text("# Notes\n\n" + "\n\n".join(paras) + "\n")


# source id -> points from the good records in it: a JSONL record is one short chunk; the 4
# intact turns of the conversation are packed into one chunk
POINTS_OF_BAD_FILES = {
    "huge-line.jsonl": 5,
    "truncated.jsonl": 4,
    "truncated-conv.jsonl": 1,
    "bad-utf8-line.jsonl": 121,
    "malformed.jsonl": 2,
}
VANISHING = [f"zz-vanish-{i}.md" for i in range(3)]
EXPECTED_SKIPS = {
    "line_too_long": 2,  # huge-line.jsonl, huge-single.txt
    "malformed_line": 4,  # truncated.jsonl, truncated-conv.jsonl, 2 in malformed.jsonl
    "no_text_field": 2,  # malformed.jsonl: a JSON array, a number as text
    "non_utf8_line": 1,  # bad-utf8-line.jsonl, after the 8 KiB the sniffer reads
    "non_utf8": 1,  # latin1.txt
    "binary": 1,  # blob.bin
    "empty": 1,  # empty.jsonl
    "vanished": 3,  # deleted after the importer listed them
}


def _bad_files(src: Path) -> None:
    big = "x" * MB50
    with open(src / "huge-line.jsonl", "w") as f:
        for i in range(3):
            f.write(_rec(i, "huge") + "\n")
        f.write(json.dumps({"id": "big", "text": big}) + "\n")
        for i in range(3, 5):
            f.write(_rec(i, "huge") + "\n")
    (src / "huge-single.txt").write_text("word " * (MB50 // 5))  # one 50 MB line, no newline
    lines = [_rec(i, "trunc") for i in range(4)] + [_rec(4, "trunc")[:25]]
    (src / "truncated.jsonl").write_text("\n".join(lines))  # cut mid-record, no newline
    conv = [
        json.dumps(
            {
                "type": "user" if t % 2 == 0 else "assistant",
                "sessionId": "s1",
                "message": {
                    "role": "user" if t % 2 == 0 else "assistant",
                    "content": f"turn {t} about embeddings",
                },
            }
        )
        for t in range(5)
    ]
    conv[-1] = conv[-1][: len(conv[-1]) // 2]
    (src / "truncated-conv.jsonl").write_text("\n".join(conv))
    with open(src / "bad-utf8-line.jsonl", "wb") as f:
        for i in range(60):  # > 8 KiB of good lines first, so the sniffer accepts the file
            f.write((_rec(i, "utf8") + " " * 100 + "\n").encode())
        f.write(b'{"id": "bad", "text": "Gr\xfc\xdfe aus K\xf6ln"}\n')
        for i in range(60, 121):
            f.write((_rec(i, "utf8") + "\n").encode())
    (src / "malformed.jsonl").write_text(
        "\n".join(
            [
                _rec(0, "mal"),
                "this is not json",
                '{"text": "unterminated',
                "[1, 2, 3]",
                '{"text": 42}',
                _rec(5, "mal"),
            ]
        )
        + "\n"
    )
    (src / "latin1.txt").write_bytes("Gr\xfc\xdfe aus K\xf6ln. ".encode("latin-1") * 40)
    (src / "blob.bin").write_bytes(bytes(range(256)) * 64)
    (src / "empty.jsonl").write_bytes(b"")
    for name in VANISHING:
        (src / name).write_text(f"# {name}\n\nThis file is deleted during the import.\n")


def test_bad_inputs_are_skipped_and_counted_by_reason(tmp_path: Path) -> None:
    clean = lib.Workspace(tmp_path / "clean", tmp_path / "clean" / "src")
    _good_files(clean.src)
    r = clean.run(*ARGS)
    assert r.returncode == 0, r.stderr
    clean_cp = Checkpoint.from_json(clean.checkpoint.read_text())

    ws = lib.Workspace(tmp_path / "bad", tmp_path / "bad" / "src")
    _good_files(ws.src)
    _bad_files(ws.src)
    t = time.monotonic()
    p = ws.popen(*ARGS)
    assert p.stderr is not None
    watch = LineWatcher(p.stderr, "shard 0/1:")  # the file list is made before this line
    assert watch.wait(180), watch.join()
    for name in VANISHING:  # sorted last: not opened yet
        os.unlink(ws.src / name)
    p.wait(300)
    out = watch.join()
    assert p.returncode == 0, out
    seconds = time.monotonic() - t

    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    assert cp.complete
    assert cp.files_total == cp.files_done == 2 + 9 + len(VANISHING)
    assert dict(cp.counters.skipped) == EXPECTED_SKIPS, cp.counters.skipped
    for reason, n in EXPECTED_SKIPS.items():
        assert f"{reason}={n}" in out, (reason, out[-2000:])

    points = ws.points()
    per_source = Counter(payload["source"] for _, payload in points.values())
    for source, n in POINTS_OF_BAD_FILES.items():
        assert per_source[source] == n, (source, per_source)
    assert not {
        s
        for s in per_source
        if s.startswith(("zz-vanish", "huge-single", "latin1", "blob", "empty"))
    }
    good = {pid: v for pid, v in points.items() if v[1]["source"].startswith("good")}
    lib.assert_same_points(good, clean.points())
    assert sum(per_source.values()) == len(points) == cp.counters.points

    # the 50 MB lines were drained in pieces, never held: memory did not grow by them
    extra = cp.peak_memory_bytes - clean_cp.peak_memory_bytes
    print(
        f"bad input: {len(EXPECTED_SKIPS)} reasons, {sum(EXPECTED_SKIPS.values())} skips, "
        f"{len(points)} points in {seconds:.1f}s; peak {cp.peak_memory_bytes >> 20} MiB vs "
        f"{clean_cp.peak_memory_bytes >> 20} MiB without the bad files"
    )
    assert extra < 40 * 2**20, f"peak memory grew by {extra >> 20} MiB with the 50 MB lines"


def test_file_vanishing_while_read_is_read_to_its_end(tmp_path: Path) -> None:
    """Unlinking a file the importer already has open does not lose it (POSIX keeps the inode):
    the importer reads it to the end; no skip, all of its records imported."""
    ws = lib.Workspace(tmp_path, tmp_path / "src")
    ws.src.mkdir()
    n = 400
    (ws.src / "a-long.jsonl").write_text("".join(_rec(i, "long") + "\n" for i in range(n)))
    p = ws.popen(*ARGS)
    assert p.stderr is not None
    watch = LineWatcher(p.stderr, "progress: files 0/1")  # the loop is inside the file
    assert watch.wait(180), watch.join()
    os.unlink(ws.src / "a-long.jsonl")
    p.wait(300)
    out = watch.join()
    assert p.returncode == 0, out
    cp = Checkpoint.from_json(ws.checkpoint.read_text())
    assert cp.complete
    assert cp.counters.skipped == {}
    assert len(ws.points()) == n
