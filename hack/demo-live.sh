#!/usr/bin/env bash
# The live demo: a Continuous EmbeddingImport follows a directory of Claude Code sessions that
# keeps changing, on the local dev cluster (docs/live-sources.md).
#
#   1. the cluster (hack/setup.sh unless EIO_DEMO_SKIP_SETUP=1; devcluster up)
#   2. 30 generated sessions in $EIO_LIVE_DIR/sources, the CRD, examples/demo-live.yaml
#   3. the operator in the background; `kubectl get ei` until the import is Synced (the pod
#      rolls at its memory threshold on the way: the leak is simulated, see the manifest)
#   4. a line is appended to a session and a new session appears: the import goes CatchingUp,
#      then Synced again, with the new points counted
#   5. suspend (the pod stops and lets go of the store), then `embedding-importer search` finds
#      the appended line in Qdrant; the import is deleted, the cluster stays up
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${EIO_LIVE_DIR:-/tmp/eio-live}
NS=eio-demo-live
NAME=live
TIMEOUT=${EIO_DEMO_TIMEOUT:-1200}
OP_PID_FILE=$DIR/operator.pid
PHRASE="the quarterly llama census found seven llamas wearing hats"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
stop_operator() {
  if [ -f "$OP_PID_FILE" ]; then
    local pid; pid=$(cat "$OP_PID_FILE")
    if kill -0 "$pid" 2>/dev/null && grep -q embedding-import-operator "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$OP_PID_FILE"
  fi
}
cols() {
  kubectl get ei "$NAME" -n "$NS" -o jsonpath='{.status.phase}|{.status.progress}|{.status.restarts.total}|{.status.counts.points}|{.status.lag.files}' 2>/dev/null || true
}
# print a row whenever the status changes, until the phase is $1 and (optionally) points > $2
watch_until() {
  local want=$1 min_points=${2:--1} last="" start; start=$(date +%s)
  printf '%-6s %-11s %-14s %-9s %-7s %s\n' NAME PHASE PROGRESS RESTARTS POINTS LAG-FILES
  while :; do
    c=$(cols)
    if [ -n "$c" ] && [ "$c" != "$last" ]; then
      IFS='|' read -r ph pr rs pts lag <<<"$c"
      printf '%-6s %-11s %-14s %-9s %-7s %s\n' "$NAME" "${ph:-<none>}" "${pr:-}" "${rs:-0}" "${pts:-0}" "${lag:-0}"
      last=$c
    fi
    IFS='|' read -r ph _ _ pts _ <<<"$c"
    if [ "$ph" = "$want" ] && [ "${pts:-0}" -gt "$min_points" ]; then return 0; fi
    case "$ph" in Failed|Invalid) echo "import $ph"; return 1 ;; esac
    if [ $(( $(date +%s) - start )) -gt "$TIMEOUT" ]; then echo "timed out"; return 1; fi
    sleep 2
  done
}

step "1/5 the local cluster"
[ -n "${EIO_DEMO_SKIP_SETUP:-}" ] || bash hack/setup.sh
.venv/bin/devcluster up
eval "$(.venv/bin/devcluster env)"

step "2/5 30 sessions in $DIR/sources, the CRD and examples/demo-live.yaml"
mkdir -p "$DIR"; stop_operator
kubectl delete namespace "$NS" --wait=true --timeout=180s >/dev/null 2>&1 || true
rm -rf "$DIR/qdrant" "$DIR/sources"
.venv/bin/python bench/corpus.py "$DIR/sources" --files 30 >/dev/null
mkdir -p "$DIR/qdrant"; chmod 755 "$DIR"; chmod -R a+rX "$DIR/sources"; chmod 777 "$DIR/qdrant"
show kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=60s crd/embeddingimports.eio.dev >/dev/null
show kubectl create namespace "$NS"
for _ in $(seq 1 60); do kubectl get serviceaccount default -n "$NS" >/dev/null 2>&1 && break; sleep 0.5; done
sed "s#/tmp/eio-live#$DIR#g" examples/demo-live.yaml > "$DIR/demo-live.yaml"
show kubectl apply -f "$DIR/demo-live.yaml"

step "3/5 the operator; kubectl get ei until Synced"
read -r MP LP < <(.venv/bin/python -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
EIO_WATCH_NAMESPACE=$NS EIO_METRICS_PORT=$MP EIO_LIVENESS_PORT=$LP EIO_RESYNC_INTERVAL_SECONDS=5 \
  PYTHONUNBUFFERED=1 setsid .venv/bin/embedding-import-operator >"$DIR/operator.log" 2>&1 &
echo $! >"$OP_PID_FILE"
trap 'stop_operator' EXIT
watch_until Synced
points=$(kubectl get ei "$NAME" -n "$NS" -o jsonpath='{.status.counts.points}')

step "4/5 a line appended to a session, and a new session"
target=$(find "$DIR/sources" -name '*.jsonl' | sort | head -1)
line=$(printf '{"type":"user","sessionId":"demo-live","uuid":"live-1","timestamp":"%s","message":{"role":"user","content":"%s"}}' "$(date -u +%FT%TZ)" "$PHRASE")
echo "\$ echo '<a user turn: $PHRASE>' >> $target"
echo "$line" >> "$target"
mkdir -p "$DIR/sources/-home-user-src-new-project"
cp "$(find "$DIR/sources" -name '*.jsonl' | sort | sed -n 2p)" "$DIR/sources/-home-user-src-new-project/new-session.jsonl"
chmod -R a+rX "$DIR/sources"
watch_until Synced "$points"
show kubectl get ei "$NAME" -n "$NS"
kubectl get ei "$NAME" -n "$NS" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'

step "5/5 suspend (the pod lets go of the store) and search Qdrant for the appended line"
show kubectl patch ei "$NAME" -n "$NS" --type merge -p '{"spec":{"suspend":true}}'
for _ in $(seq 1 120); do
  [ -z "$(kubectl get pods -n "$NS" --field-selector=status.phase=Running -o name)" ] && break; sleep 1
done
show .venv/bin/embedding-importer search --collection conversations --qdrant-path "$DIR/qdrant" --limit 3 "llamas wearing hats"
stop_operator; trap - EXIT
echo; echo "The cluster is still up: kubectl get ei -n $NS; stop it with .venv/bin/devcluster down"
