#!/usr/bin/env bash
# Builds both images from the project's Dockerfiles without a Docker engine or a registry, and
# exports them as OCI archives (what the image smoke test and the kubelet tier load):
#
#   $EIO_CACHE/images/embedding-importer.oci.tar         (ref docker.io/library/embedding-importer:<version>)
#   $EIO_CACHE/images/embedding-import-operator.oci.tar  (ref docker.io/library/embedding-import-operator:<version>)
#
# How (docs/devcluster.md, "Images"):
#   1. base: `debootstrap --variant=minbase` of Debian bookworm with python3, python3-venv,
#      python-is-python3 and ca-certificates, slimmed like debian-slim, committed with buildah
#      under the name the Dockerfiles' PYTHON_IMAGE build argument gets
#      (localhost/eio-python:3.11-bookworm). No registry is reachable here, so no python:*-slim.
#   2. `buildah bud --layers --isolation chroot` of Dockerfile.importer and Dockerfile.operator
#      as they are (a user builds the same files with `docker build`); the host's CA bundle is
#      bind-mounted read-only for pip (it stays out of the image), and the host pip's index
#      settings, if it has any, are passed as build arguments (PIP_INDEX_URL, ...).
#   3. `buildah push IMAGE oci-archive:FILE:REF`.
# Everything (debootstrap rootfs, buildah storage, archives) lives under $EIO_CACHE, outside the
# repo. Each step is skipped when its inputs are unchanged (a stamp holds their hash), so a warm
# run takes about a second. Missing apt packages are installed first.
#
#   EIO_CACHE         cache root (default ~/.cache/eio-devcluster)
#   DEBIAN_MIRROR     debootstrap mirror (default: the archive this machine's apt sources take
#                     the suite from, see hack/lib.sh `registry`)
#   EIO_IMAGES_FORCE  1: rebuild both images even when the stamps match (the layer cache stays)
#
# Prints the two archive paths on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
# shellcheck source=hack/lib.sh
. hack/lib.sh
export EIO_CACHE="${EIO_CACHE:-$HOME/.cache/eio-devcluster}"
IMAGES="$EIO_CACHE/images"
STORE="$EIO_CACHE/containers"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-$(registry debian-mirror "$SUITE")}"
# pip's index inside the build: the host pip's own (none: pip's default index)
pip_args=()
while IFS= read -r setting; do
  if [ -n "$setting" ]; then pip_args+=(--build-arg "$setting"); fi
done < <(registry pip-index)
BASE_REF=localhost/eio-python:3.11-bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
mkdir -p "$IMAGES" "$STORE"

log() { printf '[build-images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sha() { sha256sum | cut -c1-64; }

# ---- apt packages --------------------------------------------------------------------------
need_apt=()
command -v buildah >/dev/null || need_apt+=(buildah)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v runc >/dev/null || need_apt+=(runc)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v fuse-overlayfs >/dev/null || need_apt+=(fuse-overlayfs)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need_apt+=(debian-archive-keyring)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${need_apt[@]}" >&2
fi

# buildah with the project's own storage (not /var/lib/containers): the cache is one directory.
# The vfs driver would copy every layer; overlay works here as root on ext4.
bah() { buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay "$@"; }

# ---- 1. the base image ---------------------------------------------------------------------
# The stamp covers what goes into the base: suite, variant, packages, mirror and this slimming.
SLIM_VERSION=1
base_key="$(printf '%s\n' "$SUITE" minbase "$BASE_PACKAGES" "$MIRROR" "$SLIM_VERSION" | sha)"
if [ "$(cat "$IMAGES/base.stamp" 2>/dev/null)" != "$base_key" ] \
   || ! bah inspect --type image "$BASE_REF" >/dev/null 2>&1; then
  t0=$(date +%s)
  rootfs="$IMAGES/rootfs.tmp"
  rm -rf "$rootfs"
  log "debootstrap $SUITE (minbase + $BASE_PACKAGES) from $MIRROR"
  nice -n 10 debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
    > "$IMAGES/debootstrap.log" 2>&1 || { tail -30 "$IMAGES/debootstrap.log" >&2; exit 1; }
  # Slim like debian:*-slim: no docs, man pages, locales or apt lists, and dpkg told to leave
  # them out of later installs (a user's `apt-get install` in a derived image).
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/root/.cache
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  # /dev, /proc and /sys are filled by the container runtime; debootstrap left device nodes.
  rm -rf "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/*
  log "committing $BASE_REF ($(du -sh "$rootfs" | cut -f1))"
  tar -C "$rootfs" --numeric-owner -cf "$IMAGES/rootfs.tar" .
  ctr=$(bah from --pull=never scratch)
  bah add "$ctr" "$IMAGES/rootfs.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label org.opencontainers.image.description="Debian $SUITE minbase + python3 (debootstrap)" \
    "$ctr"
  bah commit --rm -q "$ctr" "$BASE_REF" >/dev/null
  rm -rf "$rootfs" "$IMAGES/rootfs.tar"
  echo "$base_key" > "$IMAGES/base.stamp"
  # a new base invalidates both images
  rm -f "$IMAGES"/*.oci.tar.stamp
  log "base image $BASE_REF ready in $(( $(date +%s) - t0 ))s"
else
  log "base image $BASE_REF cached"
fi
base_id="$(bah inspect --type image --format '{{.FromImageID}}' "$BASE_REF")"

# ---- 2./3. the images ----------------------------------------------------------------------
# The build context per .dockerignore: pyproject.toml, README.md, eio_common/, importer/, operator/
context_hash() {
  local dockerfile="$1"
  {
    echo "$base_id $VERSION"
    sha256sum "$dockerfile" .dockerignore pyproject.toml README.md
    find eio_common importer operator -type f -not -path '*/__pycache__/*' -not -name '*.pyc' \
      -not -path '*.egg-info*' -print0 | sort -z | xargs -0 sha256sum
  } | sha
}

build_one() {
  local name="$1" dockerfile="$2"
  local ref="docker.io/library/$name:$VERSION"
  local archive="$IMAGES/$name.oci.tar"
  local key
  key="$(context_hash "$dockerfile")"
  if [ "${EIO_IMAGES_FORCE:-0}" != 1 ] && [ -f "$archive" ] \
     && [ "$(cat "$archive.stamp" 2>/dev/null)" = "$key" ]; then
    log "$name:$VERSION cached ($archive)"
    echo "$archive"
    return
  fi
  local t0
  t0=$(date +%s)
  log "buildah bud -f $dockerfile -t $name:$VERSION (log: $IMAGES/$name.build.log)"
  # --isolation chroot: the default OCI isolation runs crun/runc with cgroups, and crun refuses
  # this machine's hybrid cgroup layout. --pull=never: the base exists only locally.
  if ! nice -n 10 buildah --root "$STORE/storage" --runroot "$STORE/run" --storage-driver overlay \
      bud --layers --isolation chroot --pull=never \
      --build-arg "PYTHON_IMAGE=$BASE_REF" "${pip_args[@]}" \
      -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
      -f "$dockerfile" -t "$ref" "$REPO" > "$IMAGES/$name.build.log" 2>&1; then
    tail -40 "$IMAGES/$name.build.log" >&2
    log "building $name failed (log: $IMAGES/$name.build.log)"
    exit 1
  fi
  rm -f "$archive.tmp"
  bah push -q "$ref" "oci-archive:$archive.tmp:$ref" >/dev/null
  mv -f "$archive.tmp" "$archive"
  echo "$key" > "$archive.stamp"
  log "$name:$VERSION built in $(( $(date +%s) - t0 ))s: $(du -h "$archive" | cut -f1) archive"
  echo "$archive"
}

build_one embedding-importer Dockerfile.importer
build_one embedding-import-operator Dockerfile.operator

# Keep buildah's storage bounded: every change to the build context leaves a full set of
# layers behind (the importer's pip layer is ~600 MB), and `buildah rmi --prune` would also drop
# the build stage's layer cache (in a multi-stage build those images are no ancestors of the
# result). So drop exactly the untagged images that the latest build of each image neither made
# nor reused: the ids its log shows after `-->`.
keep="$(grep -hoE -- '^--> (Using cache )?[0-9a-f]{11,64}' "$IMAGES"/*.build.log 2>/dev/null \
        | awk '{print substr($NF, 1, 11)}' | sort -u)"
stale=()
while read -r id name; do
  id="${id#sha256:}"
  [ "$name" = "<none>" ] || continue
  grep -qx "${id:0:11}" <<<"$keep" || stale+=("$id")
done < <(bah images -a --noheading --no-trunc --format '{{.ID}} {{.Name}}' 2>/dev/null)
if [ ${#stale[@]} -gt 0 ]; then
  bah rmi "${stale[@]}" >/dev/null 2>&1 || true
  log "removed ${#stale[@]} stale build images"
fi
