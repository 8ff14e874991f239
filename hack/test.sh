#!/usr/bin/env bash
# The project's test command (README, step 2; .ci/run calls exactly this).
# Installs what is missing (hack/setup.sh), brings up the local control plane and node agent,
# then runs every test: unit, integration against the real API server (e2e) and reliability.
# Extra arguments go to pytest, e.g. `bash hack/test.sh -m "not e2e"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
eval "$(.venv/bin/devcluster env)"
.venv/bin/devcluster up
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit "$rc"
