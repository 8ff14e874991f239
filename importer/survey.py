"""What ``verify`` finds: the tree, the manifest and the points compared, without embedding.

Pure decisions over a listing (``os.stat`` and a file's head), the manifest's entries and a
scroll of the points without vectors, so that tests can cover every kind without a model:

- ``missing_points``: a chunk the manifest says is stored has no point (``point_id(sid, i)``
  for ``i < chunks``; counted, not listed: a point's ID follows from its payload);
- ``extra_points``: a point of a known file (in the tree or the manifest) at or beyond the
  file's chunk count (0 for a file without an entry);
- ``orphan_points``: a point whose source is in neither the tree nor the manifest, or whose
  payload (``source``, ``chunk_index``) does not give its ID;
- ``stale_manifest``: an entry that says its file was read to its end while the file, with the
  same modification time, has another size or head; or that contradicts itself (its cursor
  and chunk count disagree), or cannot be read;
- ``identity_mismatch``: the collection's build identity differs from what the settings
  would build (one item per difference, e.g. ``chunk size 120 -> 60``; ``importer.identity``):
  ``--repair`` cannot fix that, ``run --rebuild`` does;
- not damage, reported: ``unknown_files`` (in the tree, no entry: not imported yet),
  ``changed_files`` (changed since it was read, or read only in part: the next run reads on),
  ``gone_files`` (an entry, no file: its points are kept, ``--on-delete keep``).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from eio_common.contract import VERIFY_DAMAGE, FileState, point_id
from importer.scan import fingerprint
from importer.sink import StoredPoint
from importer.sources import SourceFile

DAMAGE = VERIFY_DAMAGE
PENDING = ("unknown_files", "changed_files", "gone_files")
SAMPLE = 20  # names kept per kind for the report


@dataclass
class Findings:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DAMAGE + PENDING, 0))
    names: dict[str, list[str]] = field(default_factory=dict)  # kind -> first SAMPLE names
    delete: list[str] = field(default_factory=list)  # IDs of extra and orphan points
    reset: dict[str, int] = field(default_factory=dict)  # files to import again -> chunks
    gone: set[str] = field(default_factory=set)  # entries without a file
    tree: int = 0
    entries: int = 0
    points: int = 0

    @property
    def damage(self) -> int:
        return sum(self.counts[k] for k in DAMAGE)

    def add(self, kind: str, name: str, n: int = 1) -> None:
        self.counts[kind] += n
        names = self.names.setdefault(kind, [])
        if len(names) < SAMPLE and name not in names:
            names.append(name)


def _contradicts(st: FileState) -> bool:
    """A state no import writes: its cursor and chunk count (or size) disagree. A finished
    file's cursor is at the start of its last chunk (or just after it, when its last read
    made no chunk); an unfinished file's cursor is after its last stored chunk."""
    c = st.cursor
    if not st.complete:
        return c.chunk > st.chunks
    return c.offset > st.size or (st.chunks > 0 and c.chunk not in (st.chunks - 1, st.chunks))


def read_entries(
    entries: Iterable[StoredPoint], mine: Callable[[str], bool], f: Findings
) -> dict[str, FileState]:
    """This shard's manifest entries; an unreadable one counts as ``stale_manifest`` and
    stands for a file with no chunks (its points are then extra: it is imported again)."""
    states: dict[str, FileState] = {}
    for p in entries:
        sid = p.payload.get("sid")
        if not isinstance(sid, str) or not mine(sid):
            continue
        f.entries += 1
        try:
            st = FileState.model_validate_json(str(p.payload["state"]))
            bad = st.sid != sid or _contradicts(st)
        except (KeyError, ValidationError):
            st, bad = FileState(sid=sid), True
        if bad:
            f.add("stale_manifest", sid)
            f.reset[sid] = st.chunks
        states[sid] = st
    return states


def _head_ok(path: str, st: FileState) -> bool:
    fp = fingerprint(path, st)
    return fp is not None and fp[1]


def compare_tree(files: list[SourceFile], states: dict[str, FileState], f: Findings) -> None:
    """Entries against the files they describe; files without an entry."""
    f.tree = len(files)
    listed = {sf.source_id: sf for sf in files}
    for sid, st in states.items():
        sf = listed.get(sid)
        try:
            stat = os.stat(sf.path) if sf is not None else None
        except OSError:
            stat = None
        if stat is None:
            f.gone.add(sid)
            f.add("gone_files", sid)
        elif sid in f.reset:
            continue  # already found stale
        elif not st.complete or stat.st_mtime_ns != st.mtime_ns:
            f.add("changed_files", sid)
        elif stat.st_size != st.size or not _head_ok(listed[sid].path, st):
            f.add("stale_manifest", sid)
            f.reset[sid] = st.chunks
    for sid in listed:
        if sid not in states:
            f.add("unknown_files", sid)


def identity(p: StoredPoint) -> tuple[str, int] | None:
    """The (source, chunk index) a point's payload names, if they give its ID."""
    src, idx = p.payload.get("source"), p.payload.get("chunk_index")
    if isinstance(src, str) and isinstance(idx, int) and point_id(src, idx) == p.id:
        return src, idx
    return None


def compare_points(
    points: Iterable[StoredPoint],
    files: list[SourceFile],
    states: dict[str, FileState],
    mine: Callable[[str], bool],
    f: Findings,
) -> None:
    """The points against the entries: extra, orphan and (from what is present) missing."""
    listed = {sf.source_id for sf in files}
    present: collections.Counter[str] = collections.Counter()
    for p in points:
        ident = identity(p)
        if not mine(ident[0] if ident else p.id):
            continue
        f.points += 1
        if ident is None or (ident[0] not in listed and ident[0] not in states):
            f.add("orphan_points", ident[0] if ident else p.id)
            f.delete.append(p.id)
            continue
        src, idx = ident
        st = states.get(src)
        if idx >= (st.chunks if st is not None else 0):
            f.add("extra_points", src)
            f.delete.append(p.id)
        else:
            present[src] += 1
    for sid, st in states.items():
        missing = st.chunks - present[sid]
        if missing > 0:
            f.add("missing_points", sid, missing)
            f.reset.setdefault(sid, st.chunks)


def survey(
    files: list[SourceFile],
    entries: Iterable[StoredPoint],
    points: Iterable[StoredPoint],
    mine: Callable[[str], bool] = lambda _sid: True,
) -> Findings:
    """Everything ``verify`` reports, from one scroll of each collection (no vectors)."""
    f = Findings()
    states = read_entries(entries, mine, f)
    compare_tree(files, states, f)
    compare_points(points, files, states, mine, f)
    return f
