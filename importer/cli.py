"""``embedding-importer run|verify|status|search|export``: CLI flags override ``IMPORTER_*``
env vars."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, NoReturn

from eio_common import contract
from importer.settings import ConfigError, load_settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"embedding-importer: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(contract.EXIT_CONFIG)


_BOOL = argparse.BooleanOptionalAction

# ``run`` flags: (flag, argparse keywords). Every one defaults to SUPPRESS, so only the flags
# given on the command line override the IMPORTER_* settings (importer/settings.py).
_RUN_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--source", {"action": "append", "help": "path or glob (repeatable)"}),
    ("--format", {"help": "auto, claude, jsonl or text"}),
    ("--jsonl-field", {"help": "field holding the text in jsonl (dotted path)"}),
    ("--collection", {"help": "Qdrant collection"}),
    ("--create-collection", {"action": _BOOL}),
    ("--qdrant-url", {"help": "Qdrant server URL (API key: IMPORTER_QDRANT_API_KEY)"}),
    ("--qdrant-path", {"help": "embedded Qdrant (Edge) directory (when no URL)"}),
    ("--model", {"help": "model name"}),
    ("--model-dir", {"help": "directory with model.onnx and tokenizer files"}),
    ("--checkpoint", {"help": "file:PATH or configmap:NAMESPACE/NAME"}),
    ("--memory-threshold", {"help": "85%%, or a quantity >= 16Mi (400Mi, 1G, 1e9), or 0 (off)"}),
    ("--recycle-every-files", {"type": int, "help": "exit 75 after N files (0 = never)"}),
    ("--batch-size", {"type": int, "help": "max texts per embedding batch"}),
    ("--token-budget", {"type": int, "help": "max texts x padded tokens per batch"}),
    ("--chunk-size", {"type": int, "help": "chunk size in tokens"}),
    ("--chunk-overlap", {"type": int, "help": "chunk overlap in tokens"}),
    ("--shard", {"help": "I/N"}),
    ("--attempt", {"type": int, "help": "attempt number written to the checkpoint"}),
    ("--metrics-port", {"type": int, "help": "Prometheus port (0 = off)"}),
    ("--threads", {"type": int, "help": "ONNX Runtime intra-op threads (0 = all)"}),
    (
        "--fault-hold-mb-per-file",
        {"type": int, "help": "TEST HOOK: hold N MB more per processed file"},
    ),
    (
        "--fault-exit-before-stale-delete",
        {"action": _BOOL, "help": "TEST HOOK: exit 137 before deleting a shrunk file's points"},
    ),
    ("--checkpoint-interval", {"type": float, "help": "seconds between mid-file writes"}),
    ("--max-line-bytes", {"type": int, "help": "longer lines are skipped"}),
    ("--sort-window", {"type": int, "help": "batches per length-sorting window"}),
    ("--cache-dir", {"help": "writable dir for the assembled model (default $TMPDIR)"}),
    ("--progress", {"choices": ["auto", "bar", "plain", "off"]}),
    (
        "--follow",
        {"action": _BOOL, "help": "after catching up, keep watching the source (never exits 0)"},
    ),
    ("--poll-interval", {"type": float, "help": "seconds between scans when polling"}),
    ("--watch", {"choices": ["auto", "inotify", "poll"], "help": "how --follow watches"}),
    ("--on-delete", {"choices": ["keep", "delete"], "help": "points of a deleted source file"}),
    (
        "--settle-seconds",
        {
            "type": float,
            "help": "--follow: a file's last line without newline and its unsealed last "
            "chunk are read once the file is unchanged this long (0: at once)",
        },
    ),
    (
        "--include-tools",
        {"action": _BOOL, "help": "index tool calls and results of conversations (truncated)"},
    ),
    ("--tool-max-chars", {"type": int, "help": "truncate each tool call/result to this"}),
    (
        "--rebuild",
        {
            "action": _BOOL,
            "help": "build a new version of the collection with these settings beside the "
            "current one; searches switch to it when it is complete (or caught up)",
        },
    ),
    ("--keep-old-versions", {"type": int, "help": "old versions kept after a --rebuild"}),
    (
        "--switch-on-order",
        {
            "action": _BOOL,
            "help": "--rebuild with several shards: when ready, wait for the switch order (and "
            "then the retire order) in the checkpoint's annotations or <checkpoint>.orders.json",
        },
    ),
    ("--report", {"help": "write a JSON report of this run to FILE when it ends"}),
    (
        "--read-address",
        {"help": "embedded store: HOST:PORT where reads are served while importing, or off"},
    ),
    ("--read-peers", {"help": "the other shards' read APIs (http://HOST:PORT,...)"}),
    (
        "--verify-interval-seconds",
        {
            "type": float,
            "help": "verify the store at the end of a one-shot run and this often while "
            "following (0 = never)",
        },
    ),
    ("--log-level", {"default": "INFO", "help": "logging level"}),
)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="embedding-importer", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser(
        "run", help="import (resumes from the checkpoint)", argument_default=argparse.SUPPRESS
    )
    for flag, kwargs in _RUN_FLAGS:
        run.add_argument(flag, **kwargs)

    ve = sub.add_parser(
        "verify",
        help="compare the tree, the manifest and the points (exit 3 on damage)",
        argument_default=argparse.SUPPRESS,
    )
    for flag, kwargs in _RUN_FLAGS:
        ve.add_argument(flag, **kwargs)
    ve.add_argument(
        "--repair",
        action="store_true",
        default=False,
        help="delete what should not be there, import again only the damaged files",
    )
    ve.add_argument("--json", action="store_true", default=False, help="print a JSON object")

    st = sub.add_parser("status", help="print a checkpoint's progress")
    st.add_argument(
        "--checkpoint",
        default=None,
        help="file:PATH or configmap:NAMESPACE/NAME "
        "(default: IMPORTER_CHECKPOINT or file:./checkpoint.json)",
    )
    st.add_argument("--json", action="store_true", help="print the checkpoint as JSON")

    se = sub.add_parser("search", help="print the chunks nearest to a query")
    _store_args(se)
    se.add_argument("query", help="text to search for")
    se.add_argument("--limit", type=int, default=5, help="number of results")
    se.add_argument("--model", default=None, help="model name (default: the importer's)")
    se.add_argument("--model-dir", default=None, help="model directory")
    se.add_argument("--json", action="store_true", help="one JSON object per result")

    ex = sub.add_parser(
        "export", help="copy every point (id, vector, payload) to a JSONL file or a server"
    )
    src = _store_args(ex)
    src.add_argument("--local-path", help="a qdrant-client local-mode directory (migration)")
    dst = ex.add_mutually_exclusive_group(required=True)
    dst.add_argument("--to", help="JSONL file to write (- for stdout)")
    dst.add_argument("--to-url", help="Qdrant server to upsert into (same collection name)")
    dst.add_argument("--to-path", help="embedded store directory to upsert into")
    return p


def _store_args(sp: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """The collection and where its store is, for ``search`` and ``export``."""
    sp.add_argument("--collection", required=True, help="Qdrant collection")
    sp.add_argument("--log-level", default="WARNING", help="logging level")
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--qdrant-path", help="embedded store (Qdrant Edge) directory")
    where.add_argument("--qdrant-url", help="Qdrant server URL (IMPORTER_QDRANT_API_KEY)")
    return where


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "status":
        return _status(args)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "urllib3", "kubernetes", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "search":
            from importer.tools import search

            return search(args)
        if args.command == "export":
            from importer.tools import export

            return export(args)
        own = ("command", "log_level", "repair", "json")
        settings = load_settings({k: v for k, v in vars(args).items() if k not in own})
        if args.command == "verify":
            from importer.verify import verify

            return verify(settings, args.repair, args.json)
        from importer.runner import Runner

        return Runner(settings).run()
    except ConfigError as e:
        print(f"embedding-importer: config error: {e}", file=sys.stderr, flush=True)
        return contract.EXIT_CONFIG


def _status(args: argparse.Namespace) -> int:
    import os

    from importer.checkpoint_store import open_store

    loc = args.checkpoint or os.environ.get("IMPORTER_CHECKPOINT") or "file:./checkpoint.json"
    try:
        cp = open_store(loc).load()
    except ConfigError as e:
        print(f"embedding-importer: config error: {e}", file=sys.stderr)
        return contract.EXIT_CONFIG
    if cp is None:
        print(f"no checkpoint at {loc}")
        return 1
    if args.json:
        print(json.dumps(json.loads(cp.to_json()), indent=2))
        return 0
    c = cp.counters
    pct = 100.0 * cp.files_done / cp.files_total if cp.files_total else 0.0
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(c.skipped.items())) or "none"
    hb = cp.heartbeat
    print(f"checkpoint {loc}")
    print(
        f"  shard {cp.shard}/{cp.shards}, attempt {cp.attempt}, complete: {cp.complete}, "
        f"last exit: {cp.last_exit or '-'}"
    )
    lag = cp.lag
    print(f"  files {cp.files_done}/{cp.files_total} up to date ({pct:.1f}%)")
    print(
        f"  {'following the source, ' if cp.follow else ''}synced: {cp.synced}; pending "
        f"{lag.files} files, {lag.bytes} bytes"
        + (f", oldest change {lag.oldest.isoformat()}" if lag.oldest else "")
        + (f"; last sync {cp.last_sync.isoformat()}" if cp.last_sync else "")
    )
    print(f"  records {c.records}, chunks {c.chunks}, points {c.points}, deleted {c.deleted}")
    print(f"  skipped: {skipped}")
    print(
        f"  heartbeat {hb.time.isoformat()} memory {hb.memory_bytes / 2**20:.0f} MiB"
        f"{' pod ' + hb.pod if hb.pod else ''}; peak {cp.peak_memory_bytes / 2**20:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
