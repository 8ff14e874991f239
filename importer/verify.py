"""``embedding-importer verify [--repair]``: is the store what an import of the tree left?

``verify`` lists the shard's files as ``run`` does, scrolls the manifest and the points (no
vectors) and reports what disagrees by kind (``importer.survey``); it embeds nothing. An
embedded store held by an importer is read through that importer's read API.

``--repair`` needs the store to itself: it deletes the extra and orphan points, resets the
entries of the files with missing points or a stale entry (so that the next import reads them
from their start, and deletes the points beyond their new end), then runs the normal import
(``importer.runner``) once: only the reset files, and whatever the tree changed since the last
run, are read and embedded. A final survey says whether the store is now clean.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Final

from eio_common.contract import FileState, VerifyResult, point_id
from eio_common.retry import Stop
from importer.builds import stored_differences, wanted_identity
from importer.settings import Settings
from importer.sink import Patience, Sink, open_sink
from importer.sources import discover, partition, shard_of
from importer.survey import DAMAGE, PENDING, SAMPLE, Findings, survey

EXIT_DAMAGE: Final = 3  # verify found damage (or --repair could not remove all of it)
EXIT_HELD: Final = 4  # --repair: the store is held by another process (an importer)


class Held(Exception):
    """The embedded store is held by another process, and this command needs it."""


@dataclass
class Repair:
    deleted: int = 0  # extra and orphan points
    dropped: list[str] = field(default_factory=list)  # gone files whose points were incomplete
    imported: list[str] = field(default_factory=list)  # files reset and imported again
    exit_code: int = 0  # of the import
    chunks_embedded: int = 0
    changes: dict[str, int] = field(default_factory=dict)


def _open(s: Settings, writes: bool) -> Sink:
    """The points and the manifest; an embedded store through its holder's read API (reads
    only), else opened here, never waited for: ``Held`` when another process has it."""
    path, key = s.qdrant_path, s.qdrant_api_key
    if writes and not s.qdrant_url:
        from importer.holder import holder_url

        held = holder_url(path, key)
        if held is not None:
            raise Held(
                f"the embedded store {path} is held by an importer (it serves reads at {held}): "
                "--repair writes to it, so stop that importer first; verify without --repair "
                "reads through it"
            )
    patience = Patience() if s.qdrant_url else Patience(should_stop=lambda: True)
    try:
        return open_sink(s.qdrant_url, key, path, s.collection, False, 0, patience, manifest=True)
    except Stop:
        raise Held(
            f"the embedded store {path} is held by another process that serves no reads "
            "(--read-address off): stop it, then verify again"
        ) from None


def survey_store(s: Settings, sink: Sink) -> Findings:
    """The survey of this shard's files, manifest and points in ``sink`` (no embedding)."""
    shard, shards = s.shard_pair
    files = partition(discover(s.source, allow_empty=s.follow), shard, shards)
    shared = bool(s.qdrant_url) and shards > 1  # one collection for every shard's points

    def mine(sid: str) -> bool:
        return not shared or shard_of(sid, shards) == shard

    found = survey(files, sink.scroll_manifest(), sink.scroll(with_vectors=False), mine)
    for diff in stored_differences(sink, wanted_identity(s)) or []:
        found.add("identity_mismatch", diff)
    return found


def result_of(f: Findings, names: int = 3) -> VerifyResult:
    """The checkpoint's record of a survey: its counts and a few names per damage kind."""
    return VerifyResult(
        clean=not f.damage, counts=dict(f.counts), files=f.tree, entries=f.entries,
        points=f.points, names={k: f.names[k][:names] for k in DAMAGE if f.names.get(k)},
    )  # fmt: skip


def _fix(sink: Sink, f: Findings, r: Repair) -> None:
    """Delete what should not be there; reset the entries of the files to import again (a
    state with no head, so the import reads the file from its start as a rewrite, and deletes
    the points beyond its new end). A file that is gone cannot be read again: its entry and
    points go, as a fresh import of the tree would have neither."""
    sink.delete(f.delete)
    r.deleted = len(f.delete)
    r.dropped = sorted(sid for sid in f.reset if sid in f.gone)
    sink.drop_manifest(r.dropped)  # the entries first: never an entry ahead of its points
    for sid in r.dropped:
        sink.delete([point_id(sid, i) for i in range(f.reset[sid])])
    r.imported = sorted(sid for sid in f.reset if sid not in f.gone)
    sink.save_manifest([FileState(sid=sid, chunks=f.reset[sid]) for sid in r.imported])
    sink.sync()


def _import(s: Settings, r: Repair) -> None:
    """The normal import, once, to its end (not following)."""
    from importer.runner import Runner

    runner = Runner(s.model_copy(update={"follow": False}))
    r.exit_code = runner.run()
    r.chunks_embedded = runner.counts.run.chunks_embedded
    r.changes = dict(runner.counts.run.changes)


def _surveyed(s: Settings, writes: bool) -> tuple[Findings, str]:
    sink = _open(s, writes)
    try:
        return survey_store(s, sink), sink.where
    finally:
        sink.close()


def verify(s: Settings, repair: bool, as_json: bool) -> int:
    """Report (and with ``repair`` fix) the damage; 0 when clean, else ``EXIT_DAMAGE``."""
    try:
        found, where = _surveyed(s, repair)
    except Held as e:
        print(f"embedding-importer: {e}", file=sys.stderr)
        return EXIT_HELD
    out: dict[str, Any] = {"collection": s.collection, "store": where, "shard": s.shard}
    out.update(_findings(found))
    if not as_json:
        _print(out)
    if not (repair and found.damage):
        if as_json:
            print(json.dumps(out, indent=2))
        return EXIT_DAMAGE if found.damage else 0
    if found.counts["identity_mismatch"]:
        print(
            "embedding-importer: --repair cannot change how a collection was built: run "
            "with --rebuild (or import into another --collection)",
            file=sys.stderr,
        )
        if as_json:
            print(json.dumps(out, indent=2))
        return EXIT_DAMAGE
    r = Repair()
    sink = _open(s, True)
    try:
        _fix(sink, found, r)
    finally:
        sink.close()
    _import(s, r)
    after, _ = _surveyed(s, True)
    out["repair"] = vars(r)
    out["after"] = _findings(after)
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        _print_repair(r, after)
    if r.exit_code:
        return r.exit_code
    return EXIT_DAMAGE if after.damage else 0


def _findings(f: Findings) -> dict[str, Any]:
    return {
        "tree": f.tree,
        "entries": f.entries,
        "points": f.points,
        "counts": dict(f.counts),
        "damage": f.damage,
        "names": {k: v for k, v in f.names.items() if v},
    }


def _print(out: dict[str, Any]) -> None:
    print(
        f"verify {out['collection']} in {out['store']} (shard {out['shard']}): {out['tree']} "
        f"files in the tree, {out['entries']} in the manifest, {out['points']} points"
    )
    for kind in DAMAGE + PENDING:
        names = out["names"].get(kind, [])
        more = ", ..." if len(names) >= SAMPLE else ""
        print(f"  {kind:<15} {out['counts'][kind]:>6}  {', '.join(names)}{more}".rstrip())
    print(f"damage: {out['damage']}")


def _print_repair(r: Repair, after: Findings) -> None:
    changes = ", ".join(f"{k}={v}" for k, v in sorted(r.changes.items())) or "none"
    print(
        f"repair: deleted {r.deleted} extra or orphan points; imported again "
        f"{len(r.imported)} files: {', '.join(r.imported) or '-'}"
        + (f"; dropped {len(r.dropped)} gone files: {', '.join(r.dropped)}" if r.dropped else "")
    )
    print(
        f"repair: import exit {r.exit_code}; {r.chunks_embedded} chunks embedded; "
        f"changes: {changes}"
    )
    print(f"after repair: damage {after.damage}")
