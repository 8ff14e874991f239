# Sourced by the hack/ scripts: what they share.
#
# registry WHAT [ARGS]: a package registry address from this machine's own configuration (apt's
# sources, `go env GOPROXY`, pip's config), so a user's mirror or proxy is what the builds use;
# the public default only where the machine says nothing. devcluster/registries.py does the
# lookup (one implementation, unit-tested):
#   registry debian-mirror SUITE   the Debian archive apt takes SUITE from
#   registry go-proxy [GO]         GOPROXY (GO: the go binary, default go on PATH)
#   registry pip-index             PIP_INDEX_URL=... lines (none: pip's default index)
EIO_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

registry() {
  local python=python3
  [ -x "$EIO_REPO/.venv/bin/python" ] && python="$EIO_REPO/.venv/bin/python"
  PYTHONPATH="$EIO_REPO${PYTHONPATH:+:$PYTHONPATH}" "$python" -m devcluster.registries "$@"
}
