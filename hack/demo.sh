#!/usr/bin/env bash
# The quick-start demo, from a fresh machine to a finished import on a real Kubernetes API
# server (the local dev cluster, docs/devcluster.md):
#
#   1. install everything (hack/setup.sh: venv, offline model, cluster binaries, helm; cached)
#   2. start the local cluster (devcluster up)
#   3. generate 40 Claude Code sessions of real prose (bench/corpus.py --prose: each about one
#      standard-library module, in the words of its documentation) in $EIO_DEMO_DIR/sources
#   4. apply the CRD and examples/demo.yaml in a fresh namespace eio-demo
#   5. start the operator in the background, watching only that namespace
#   6. show `kubectl get embeddingimports` as it changes, until Succeeded or Failed
#   7. print the events (`kubectl describe`), the pods with their exit codes and the number of
#      points in Qdrant; stop the operator. The cluster stays up (`devcluster down` stops it).
#   8. search with a question about one session's topic (bench/corpus.py DEMO_QUERY); fail
#      unless the top hit comes from that session
#
# Re-runnable: the namespace and the Qdrant directory are deleted and made again.
#   EIO_DEMO_DIR=/tmp/eio-quickstart   where the corpus, Qdrant data and operator log go
#   EIO_DEMO_SKIP_SETUP=1              skip step 1 (already installed)
#   EIO_DEMO_TIMEOUT=1200              seconds to wait for the import
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO_DIR=${EIO_DEMO_DIR:-/tmp/eio-quickstart}
NS=eio-demo
NAME=demo
TIMEOUT=${EIO_DEMO_TIMEOUT:-1200}
OP_PID_FILE=$DEMO_DIR/operator.pid

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

stop_operator() {
  if [ -f "$OP_PID_FILE" ]; then
    local pid
    pid=$(cat "$OP_PID_FILE")
    # only the operator this script started (the pid file), never others by name
    if kill -0 "$pid" 2>/dev/null && grep -q embedding-import-operator "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$OP_PID_FILE"
  fi
}

step "1/8 install (hack/setup.sh; fast when cached)"
if [ -z "${EIO_DEMO_SKIP_SETUP:-}" ]; then
  bash hack/setup.sh
else
  echo "skipped (EIO_DEMO_SKIP_SETUP)"
fi

step "2/8 start the local cluster: etcd, kube-apiserver, scheduler, controller-manager, node agent"
.venv/bin/devcluster up
eval "$(.venv/bin/devcluster env)"
show kubectl get nodes

step "3/8 a sample corpus: 40 Claude Code sessions in $DEMO_DIR/sources"
mkdir -p "$DEMO_DIR"
stop_operator  # one left over by an interrupted run
if kubectl get namespace "$NS" >/dev/null 2>&1; then
  echo "deleting the namespace $NS of an earlier run"
  # The operator adds no finalizer, but imports left by operator versions before 0.1.0's
  # resync loop carried kopf's timer finalizer: release them, or the namespace stays Terminating.
  for ei in $(kubectl get embeddingimports -n "$NS" -o name 2>/dev/null); do
    kubectl patch -n "$NS" "$ei" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null || true
  done
  kubectl delete namespace "$NS" --wait=true --timeout=180s >/dev/null
fi
rm -rf "$DEMO_DIR/qdrant"
.venv/bin/python bench/corpus.py "$DEMO_DIR/sources" --files 40 --prose >"$DEMO_DIR/corpus.json"
.venv/bin/python -c '
import json, sys
s = json.load(open(sys.argv[1]))
print("%d files, %d KiB, %d-%d exchanges per session, each about one Python module:" % (
    s["files"], s["bytes_total"] // 1024, s["turns_min"], s["turns_max"]))
print("  " + ", ".join(m for _, m in sorted(s["topics"].items(), key=lambda x: x[0][-11:])))
' "$DEMO_DIR/corpus.json"
mkdir -p "$DEMO_DIR/qdrant"
# importer pods run as UID 65532: sources readable, Qdrant directory writable
chmod 755 "$DEMO_DIR"
chmod -R a+rX "$DEMO_DIR/sources"
chmod 777 "$DEMO_DIR/qdrant"

step "4/8 the CRD, a namespace and the EmbeddingImport (examples/demo.yaml)"
show kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=60s crd/embeddingimports.eio.dev >/dev/null
show kubectl create namespace "$NS"
for _ in $(seq 1 60); do kubectl get serviceaccount default -n "$NS" >/dev/null 2>&1 && break; sleep 0.5; done
sed "s#/tmp/eio-quickstart#$DEMO_DIR#g" examples/demo.yaml > "$DEMO_DIR/demo.yaml"
show kubectl apply -f "$DEMO_DIR/demo.yaml"

step "5/8 the operator, in the background, watching namespace $NS"
read -r METRICS_PORT LIVENESS_PORT < <(.venv/bin/python -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
EIO_WATCH_NAMESPACE=$NS EIO_METRICS_PORT=$METRICS_PORT EIO_LIVENESS_PORT=$LIVENESS_PORT \
  EIO_RESYNC_INTERVAL_SECONDS=5 PYTHONUNBUFFERED=1 \
  setsid .venv/bin/embedding-import-operator >"$DEMO_DIR/operator.log" 2>&1 &
echo $! >"$OP_PID_FILE"
trap 'stop_operator' EXIT
echo "operator pid $(cat "$OP_PID_FILE"), log $DEMO_DIR/operator.log, metrics http://127.0.0.1:$METRICS_PORT/metrics"

step "6/8 kubectl get embeddingimports -n $NS (printed when it changes)"
echo "\$ kubectl get embeddingimports -n $NS -w"
start=$(date +%s)
last=""
phase=""
row() { printf '%-6s %-10s %-15s %-9s %-5s %s\n' "$@"; }
row NAME PHASE PROGRESS RESTARTS OOMS AGE
while :; do
  # the printer columns of `kubectl get ei`, one row whenever one of them changes
  cols=$(kubectl get embeddingimports "$NAME" -n "$NS" -o \
    jsonpath='{.status.phase}|{.status.progress}|{.status.restarts.total}|{.status.restarts.oomKilled}' \
    2>/dev/null || true)
  if [ -n "$cols" ] && [ "$cols" != "$last" ]; then
    age=$(kubectl get embeddingimports "$NAME" -n "$NS" --no-headers 2>/dev/null | awk '{print $NF}')
    IFS='|' read -r p_phase p_progress p_restarts p_ooms <<<"$cols"
    row "$NAME" "${p_phase:-<none>}" "${p_progress:-<none>}" "${p_restarts:-0}" "${p_ooms:-0}" "$age"
    last=$cols
  fi
  phase=${cols%%|*}
  case "$phase" in Succeeded|Failed|Invalid) break ;; esac
  if ! kill -0 "$(cat "$OP_PID_FILE")" 2>/dev/null; then
    echo "the operator exited; its log:"; tail -40 "$DEMO_DIR/operator.log"; exit 1
  fi
  if [ $(( $(date +%s) - start )) -gt "$TIMEOUT" ]; then
    echo "timed out after ${TIMEOUT}s"; break
  fi
  sleep 2
done
echo "($(( $(date +%s) - start )) s)"

step "7/8 what happened"
show kubectl get embeddingimports -n "$NS"
echo
echo "\$ kubectl describe embeddingimport $NAME -n $NS   (status counters and events)"
kubectl describe embeddingimport "$NAME" -n "$NS" | awk '
  /^  Counts:/ {p=1} /^  Last Restart:/ {p=1} /^  Current Pods:/ {p=0; next}
  /^  Conditions:|^  Shards:|^  Checkpoint Refs:|^  Observed Generation:/ {p=0}
  /^Events:/ {p=1}
  p'
echo
show kubectl get pods -n "$NS" -o custom-columns='POD:.metadata.name,PHASE:.status.phase,EXIT:.status.containerStatuses[0].state.terminated.exitCode,REASON:.status.containerStatuses[0].state.terminated.reason,LIMIT:.spec.containers[0].resources.limits.memory'
echo
echo "why the planned rolls: the last warning of each pod that exited 75"
for pod in $(kubectl get pods -n "$NS" -o jsonpath='{range .items[?(@.status.containerStatuses[0].state.terminated.exitCode==75)]}{.metadata.name}{" "}{end}'); do
  printf '  %s: %s\n' "$pod" "$(kubectl logs -n "$NS" "$pod" | grep -E 'WARNING' | tail -1 | cut -d' ' -f3-)"
done
echo
stop_operator
trap - EXIT
echo "operator stopped"
echo
echo "points in Qdrant ($DEMO_DIR/qdrant, collection conversations):"
.venv/bin/python - "$DEMO_DIR/qdrant" "$(kubectl get ei "$NAME" -n "$NS" -o jsonpath='{.status.counts.points}')" <<'EOF'
import sys
from importer.sink import open_sink  # the importer's own reader of the embedded store
store = open_sink(None, None, sys.argv[1], "conversations", False, 0)
n = store.count()
hit = next(store.scroll(with_vectors=False)).payload
store.close()
print(f"  {n} points; the import's status.counts.points says {sys.argv[2]}")
print(f"  e.g. {hit['source']} chunk {hit['chunk_index']} ({hit.get('role')}): {hit['text'][:90]!r}...")
EOF
echo
step "8/8 search: a question about one conversation must find that conversation first"
bash hack/demo-search.sh "$DEMO_DIR"
echo
echo "The cluster is still up: kubectl get ei -A, kubectl logs -n $NS $NAME-s0-a1."
echo "Stop it with: .venv/bin/devcluster down   (or: bash hack/demo.sh to run the demo again)"
[ "$phase" = Succeeded ]
