#!/usr/bin/env bash
# Runs the whole test command (hack/test.sh, what .ci/run calls) N times in a row (default 2)
# while one busy-loop process per core keeps every core at 100 % (plain `nice 0` Python
# processes, started before the first run and killed after the last). Stops at the first
# failing run. Each run's output goes to $EIO_LOAD_LOG_DIR/run-K.log (default
# /tmp/eio-under-load) and a one-line summary per run to stdout, e.g.
#   run 1: rc=0 in 1834 s, load average 4.1 (tail: "612 passed ... in 1520.3s")
# Usage: bash hack/test-under-load.sh [N] [pytest args for the first pytest run...]
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-2}"
shift || true
logs="${EIO_LOAD_LOG_DIR:-/tmp/eio-under-load}"
mkdir -p "$logs"
burners=()
for _ in $(seq "$(nproc)"); do
  python3 -c 'while True: pass' &
  burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null' EXIT
echo "burners: ${burners[*]} (one per core, nice 0)"
for k in $(seq "$runs"); do
  t0=$(date +%s)
  bash hack/test.sh "$@" >"$logs/run-$k.log" 2>&1
  rc=$?
  load=$(cut -d' ' -f2 /proc/loadavg)
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)' "$logs/run-$k.log" | tr '\n' ' ')
  echo "run $k: rc=$rc in $(($(date +%s) - t0)) s, load average (5 min) $load ($summary)"
  [ "$rc" -eq 0 ] || exit "$rc"
done
