#!/usr/bin/env bash
# Everything the kubelet tier and the image tests need, idempotently (hack/test.sh calls it):
#
#   apt:  runc (the OCI runtime containerd's shim runs), iptables (pod traffic confined to the
#         pod bridge, DNAT of the kubernetes Service), containernetworking-plugins (bridge,
#         host-local, loopback), iproute2; buildah, debootstrap, skopeo, umoci come with
#         hack/build-images.sh
#   Go:   kubelet and kube-proxy (from the control plane's Kubernetes module), containerd v2 +
#         ctr + the runc shim (Go module proxy), pause  ->  $EIO_CACHE/bin   (`devcluster build --node`)
#   images: both Dockerfiles built with buildah  ->  $EIO_CACHE/images/*.oci.tar
#
# Cold on 2 cores: ~5 min for the binaries, ~5 min for the images; cached: ~1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
export EIO_CACHE="${EIO_CACHE:-$HOME/.cache/eio-devcluster}"
log() { printf '[setup-kubelet-tier %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

need_apt=()
command -v runc >/dev/null || need_apt+=(runc)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${need_apt[@]}"
fi

start=$(date +%s)
log "devcluster build --node (kubelet, kube-proxy, containerd, pause)"
nice -n 10 .venv/bin/devcluster build --node
log "node binaries ready in $(( $(date +%s) - start ))s"
start=$(date +%s)
log "hack/build-images.sh"
bash hack/build-images.sh >/dev/null
log "images ready in $(( $(date +%s) - start ))s"
