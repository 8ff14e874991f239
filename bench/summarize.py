#!/usr/bin/env python
"""Print the measured figures of bench/out/*.json as Markdown tables (for docs/benchmarks.md).

python bench/summarize.py            # from bench/out/<name>.json
python bench/summarize.py --quick    # from the --quick results, <name>_quick.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c


def load(name: str) -> dict[str, Any] | None:
    p = c.OUT_DIR / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def memory(d: dict[str, Any]) -> None:
    print(f"### memory ({d['command']})\n")
    print(f"chunks: {d['chunks']}\n")
    print(
        "| configuration | peak RSS (VmHWM) MiB | RSS at end MiB | chunks embedded | chunks/s |"
        " model load s |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in d["results"]:
        if "error" in r:
            print(f"| {r['label']} | error: {r['error']} | | | | |")
            continue
        cap = " (time cap)" if r["truncated_by_time_cap"] else ""
        print(
            f"| {r['label']} | {c.mib(r['peak_rss_bytes']):,.0f} | "
            f"{c.mib(r['rss_end_bytes']):,.0f} | {r['chunks_done']:,}{cap} | "
            f"{r['chunks_per_s']} | {r['model_load_s']} |"
        )
    print()


def checkpoint(d: dict[str, Any]) -> None:
    print(f"### checkpoint size ({d['command']})\n")
    print(
        "| files | state | JSON bytes | in ConfigMap bytes | gzip bytes | % of 1 MiB |"
        " serialise ms | parse ms |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in d["rows"]:
        print(
            f"| {r['files']:,} | {r['state']} | {r['json_bytes']:,} | "
            f"{r['configmap_value_bytes']:,} | {r['gzip_bytes']:,} | "
            f"{100 * r['fraction_of_configmap_limit']:.3f} | {r['serialize_ms_median']} | "
            f"{r['parse_ms_median']} |"
        )
    print(
        "\n| files | FileState JSON bytes, median / max | manifest payload bytes, median / max |"
        " payload bytes per file | payloads, all files |"
    )
    print("|---:|---:|---:|---:|---:|")
    for m in d.get("manifest", []):
        print(
            f"| {m['files']:,} | {m['state_bytes_median']:.0f} / {m['state_bytes_max']:,} | "
            f"{m['payload_bytes_median']:.0f} / {m['payload_bytes_max']:,} | "
            f"{m['payload_bytes_per_file']} | {m['payload_bytes_total']:,} |"
        )
    if d.get("manifest_in_edge"):
        print(
            "\n| files | write s | on disk MiB | load in a fresh process s (median) |"
            " of which scroll s | RssAnon after load MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for e in d["manifest_in_edge"]:
            print(
                f"| {e['files']:,} | {e['write_s']} | {c.mib(e['disk_bytes'])} | "
                f"{e['load_s_median']} | {e['scroll_s_median']} | "
                f"{c.mib(e['rss_anon_median'])} |"
            )
    print()


def store(d: dict[str, Any]) -> None:
    import store as store_bench

    print(f"### embedded store ({d['command']})\n")
    print(f"fill: {d['fill']}; not run: {'; '.join(d['not_run']) or 'nothing'}")
    store_bench.print_tables(d["results"])
    print()


def throughput(d: dict[str, Any]) -> None:
    print(f"### throughput ({d['command']})\n")
    print(f"corpus: {d['corpus']}\n")
    e = d["embed_only"]
    print("| embedding only | chunks/s (median) | peak RSS MiB (median) | runs |")
    print("|---|---:|---:|---:|")
    for m in ("naive", "importer"):
        x = e[m]
        print(
            f"| {m} | {x['chunks_per_s_median']} | {c.mib(x['peak_rss_median'] or 0):,.0f} | "
            f"{len(x['runs'])} |"
        )
    print(
        f"\nspeed-up importer/naive x{e.get('speedup_importer_over_naive')}, "
        f"peak ratio {e.get('peak_ratio_importer_over_naive')}\n"
    )
    print("| end to end | exit | seconds | files/min | chunks/s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in d["end_to_end"].values():
        print(
            f"| {r['mode']} | {r['rc']} | {r['seconds']} | {r['files_per_min']} | "
            f"{r['chunks_per_s']} | {c.mib(r['peak_rss_bytes']):,.0f} |"
        )
    print()


def restart(d: dict[str, Any]) -> None:
    print(f"### restart cost ({d['command']})\n")
    loads = d["model_load_fresh_interpreter_s"]
    print(
        f"model load in a fresh interpreter: median {c.median(loads):.2f} s of "
        f"{[round(x, 2) for x in loads]}\n"
    )
    print(
        "| --recycle-every-files | total s | runs | overhead % (measured) | overhead % (restarts"
        " x start-up) | start-up+exit per run, median s | model load per run, median s |"
        " points |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in d["results"]:
        print(
            f"| {r['recycle_every_files'] or 'none'} | {r['total_s']} | {r['runs']} | "
            f"{r.get('overhead_pct')} | {r.get('overhead_est_pct')} | "
            f"{r['startup_and_exit_median_s']} | {r['model_load_median_s']} | {r['points']} |"
        )
    print()


def roll(d: dict[str, Any]) -> None:
    print(f"### roll latency ({d['command']})\n")
    print(
        "| scenario | rolls | terminated -> created p50 / p99 s | terminated -> Running p50 /"
        " p99 s | import |"
    )
    print("|---|---:|---:|---:|---|")
    for k, v in d["scenarios"].items():
        s = v["summary"]
        cr, ru = s.get("to_created_s", {}), s.get("to_running_s", {})
        print(
            f"| {k} | {s['n']} | {cr.get('p50')} / {cr.get('p99')} | {ru.get('p50')} / "
            f"{ru.get('p99')} | {v['status'].get('phase')} {v['status'].get('progress')} in "
            f"{v['seconds']} s |"
        )
    print()


def scale(d: dict[str, Any]) -> None:
    print(f"### operator scale ({d['command']})\n")
    lat = d["latency"]
    rt = d["reconcile_time"]
    print(
        f"{d['imports']} imports x {d['shards']} shards; workload: {d['workload']}; "
        f"succeeded {lat['succeeded']}/{lat['imports']}, failed {len(d['failed'])}, "
        f"wall {d['wall_s']} s, timed out {d['timed_out']}\n"
    )
    print("| measure | n | p50 s | p99 s | max s |")
    print("|---|---:|---:|---:|---:|")
    for k in ("create_to_pod_s", "pod_end_to_status_s", "import_total_s"):
        x = lat[k]
        print(f"| {k} | {x['n']} | {x.get('p50')} | {x.get('p99')} | {x.get('max')} |")
    print(
        f"\nreconcile time (operator histogram): count {rt['count']:.0f}, mean {rt['mean_s']} s, "
        f"p50 <= {rt['p50_upper_bound_s']} s, p99 <= {rt['p99_upper_bound_s']} s\n"
    )
    print(
        f"operator RSS: before {c.mib(d['operator_rss_before'])} MiB, peak "
        f"{c.mib(d['operator_rss_peak'])} MiB, end {c.mib(d['operator_rss_end'])} MiB\n"
    )


def main() -> int:
    quick = c.arg_parser(__doc__, "the tables of the --quick results").parse_args().quick
    suffix = "_quick" if quick else ""
    for name, fn in (
        ("memory", memory),
        ("checkpoint_size", checkpoint),
        ("store", store),
        ("throughput", throughput),
        ("restart_cost", restart),
        ("roll_latency", roll),
        ("operator_scale", scale),
    ):
        d = load(name + suffix)
        if d is None:
            print(f"### {name}: no {c.OUT_DIR}/{name}{suffix}.json\n")
            continue
        fn(d)
        print(f"machine: {d.get('machine')}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
