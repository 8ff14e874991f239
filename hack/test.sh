#!/usr/bin/env bash
# The project's test command (README, step 2; .ci/run calls exactly this).
# Installs what is missing (hack/setup.sh, hack/setup-kubelet-tier.sh), brings up the local
# control plane and node agent, then runs every test: unit, integration against the real API
# server (e2e), reliability, and the image smoke tests (tests/images: the images built from
# the Dockerfiles, run with runc); then, with no arguments, every benchmark in quick mode
# (bench/run_all.py --quick, CI=true: the cluster ones must run).
# Then, with no arguments, the node-failure tests on a two-node cluster (port base 17800), and
# the kubelet tier: a further cluster (EIO_DEVCLUSTER_RUN, port base 17400) whose node is a
# real kubelet + containerd + runc running the built images, for tests/e2e/test_kubelet_tier.py
# and tests/e2e/test_rebuild_sharded.py (a rebuild of 2 shards read through its Service).
# Both are torn down afterwards (the kubelet tier owns machine-global state: bridges, iptables
# chains, cgroups).
# Extra arguments go to the first pytest run only, e.g. `bash hack/test.sh -m "not e2e"`.
# EIO_KUBELET_TIER=0 skips building and running the kubelet tier and the image tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
kubelet_tier="${EIO_KUBELET_TIER:-1}"
if [ "$kubelet_tier" = 1 ]; then
  bash hack/setup-kubelet-tier.sh
  export EIO_REQUIRE_IMAGES=1  # the image tests fail, not skip, if the images are missing
fi
eval "$(.venv/bin/devcluster env)"
.venv/bin/devcluster up
set +e
.venv/bin/pytest "$@"
rc=$?
if [ $# -eq 0 ]; then
  # Every benchmark in quick mode (seconds each, tiny inputs, the real model and store), on
  # the cluster that is still up, so that none can break unseen; results go to bench/out/quick/.
  # CI=true: a cluster benchmark that cannot reach the cluster fails instead of "not run".
  CI="${CI:-true}" .venv/bin/python bench/run_all.py --quick
  brc=$?
  [ "$rc" -eq 0 ] && rc=$brc
fi
if [ $# -eq 0 ]; then
  # Node failures need several nodes: a second node-agent cluster of two nodes with the
  # node-lifecycle controller (port base 17800), for tests/e2e/test_reliability_node_loss.py;
  # EIO_REQUIRE_NODES=2 makes those tests fail, not skip, if it has fewer.
  (
    export EIO_DEVCLUSTER_PORT_BASE=17800 EIO_DEVCLUSTER_RUN="$EIO_CACHE/nodes-run"
    export EIO_REQUIRE_NODES=2
    trap '.venv/bin/devcluster down' EXIT
    .venv/bin/devcluster up --nodes 2 \
      && .venv/bin/pytest -m reliability tests/e2e/test_reliability_node_loss.py
  )
  nrc=$?
  [ "$rc" -eq 0 ] && rc=$nrc
fi
if [ "$kubelet_tier" = 1 ] && [ $# -eq 0 ]; then
  (
    export EIO_DEVCLUSTER_NODE=kubelet EIO_DEVCLUSTER_PORT_BASE=17400
    export EIO_DEVCLUSTER_RUN="$EIO_CACHE/kubelet-run"
    trap '.venv/bin/devcluster down' EXIT
    .venv/bin/devcluster up && .venv/bin/pytest tests/e2e/test_kubelet_tier.py tests/e2e/test_rebuild_sharded.py
  )
  krc=$?
  [ "$rc" -eq 0 ] && rc=$krc
fi
set -e
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit "$rc"
