#!/usr/bin/env bash
# The search that ends hack/demo.sh, on its own: a question about one conversation of the
# demo's prose corpus (bench/corpus.py --prose; DEMO_TOPIC, DEMO_QUERY) must find that
# conversation first. Exits 1, loudly, when the top hit is another conversation.
#   bash hack/demo-search.sh DEMO_DIR   # DEMO_DIR/corpus.json (the corpus's shape), DEMO_DIR/qdrant
# Without the cluster:
#   .venv/bin/python bench/corpus.py DIR/sources --files 40 --prose >DIR/corpus.json
#   .venv/bin/embedding-importer run --source DIR/sources --format claude --collection conversations \
#     --qdrant-path DIR/qdrant --checkpoint file:DIR/ck.json --chunk-size 120 --chunk-overlap 20
#   bash hack/demo-search.sh DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${1:?usage: hack/demo-search.sh DEMO_DIR}
show() { printf '$ %s\n' "$*"; "$@"; }
read -r TOPIC WANT < <(.venv/bin/python -c '
import json, sys
sys.path.insert(0, "bench")
import corpus
print(corpus.DEMO_TOPIC, corpus.topic_file(json.load(open(sys.argv[1])), corpus.DEMO_TOPIC))
' "$DEMO_DIR/corpus.json")
QUERY=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "bench"); import corpus; print(corpus.DEMO_QUERY)')
echo "the conversation about the $TOPIC module is $WANT"
show .venv/bin/embedding-importer search --collection conversations --qdrant-path "$DEMO_DIR/qdrant" --limit 3 "$QUERY"
top=$(.venv/bin/embedding-importer search --collection conversations --qdrant-path "$DEMO_DIR/qdrant" --limit 1 --json "$QUERY" |
  .venv/bin/python -c 'import json, sys; print(json.loads(sys.stdin.readline())["payload"]["source"])')
if [ "$top" = "$WANT" ]; then
  echo "top hit: $top, the conversation about $TOPIC: search found the right conversation"
else
  echo "SEARCH FAILED: the top hit is $top, not $WANT (the conversation about $TOPIC)" >&2
  exit 1
fi
