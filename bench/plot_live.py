"""Plots for the live-source benchmarks, from their JSON results in bench/out/.

    python bench/plot_live.py    # after bench/store_rolls.py and bench/follow_idle.py
    python bench/plot_live.py --quick    # from their --quick results, into bench/out/img/
Writes docs/img/store_rolls.png and docs/img/follow_idle.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as c


def store_rolls(suffix: str) -> None:
    data = json.loads((c.OUT_DIR / f"store_rolls{suffix}.json").read_text())
    runs = data["runs"]
    plt = c.plt()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    x = range(1, len(runs) + 1)
    ax[0].plot(x, [c.mib(r["start_memory_bytes"]) for r in runs], "o-", label="at start")
    ax[0].plot(x, [c.mib(r["peak_memory_bytes"]) for r in runs], "s--", label="peak")
    ax[0].set(xlabel="run (one roll each)", ylabel="anonymous memory (MiB)", ylim=(0, None))
    ax[0].legend()
    ax[1].bar(list(x), [r["store_open_seconds"] for r in runs])
    ax[1].axhline(0.5, color="grey", linestyle=":", label="0.5 s")
    ax[1].set(xlabel="run", ylabel="open store + load states (s)")
    ax[1].legend()
    fig.suptitle(
        f"Rolls every {data['every']} files over a store holding {data['points']:,} points"
    )
    print(f"wrote {c.save_figure(fig, 'store_rolls')}")


def follow_idle(suffix: str) -> None:
    data = json.loads((c.OUT_DIR / f"follow_idle{suffix}.json").read_text())
    plt = c.plt()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for r in data["results"]:
        t = [s["t"] for s in r["samples"]]
        ax[0].plot(t, [c.mib(s["anon"]) for s in r["samples"]], "o-", label=r["watch"])
        cpu0 = r["samples"][0]["cpu"]
        ax[1].plot(t, [s["cpu"] - cpu0 for s in r["samples"]], "o-", label=r["watch"])
    ax[0].set(xlabel="idle time (s)", ylabel="anonymous memory (MiB)", ylim=(0, None))
    ax[1].set(xlabel="idle time (s)", ylabel="CPU time used (s)", ylim=(0, None))
    for a in ax:
        a.legend()
    fig.suptitle(f"--follow while nothing changes ({data['files']} files)")
    print(f"wrote {c.save_figure(fig, 'follow_idle')}")


def main() -> int:
    quick = c.arg_parser(__doc__, "plot the --quick results").parse_args().quick
    suffix = "_quick" if quick else ""
    store_rolls(suffix)
    follow_idle(suffix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
