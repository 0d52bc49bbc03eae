#!/usr/bin/env bash
# Builds the three images the node tier imports into containerd, with no registry reachable:
#   base   : Debian bookworm (debootstrap --variant=minbase) + python3, packed as an OCI image with umoci
#   pause  : the pod sandbox, tests/k8s/pause.c built with gcc -static, packed the same way
#   project: the repository's own Dockerfile, `buildah bud --build-arg BASE=localhost/bookworm-python`
# Each is cached under $CACHE by the hash of its inputs; a second run with nothing changed is instant.
# Prints KEY=value lines: PAUSE and IMAGE (OCI archives tagged 3.2 and node: import them with
# ctr images import --base-name localhost/pause / localhost/jobqueue) and the image's size in bytes.
# Usage: build-node-images.sh [CACHE]   (root: debootstrap, buildah; apt-get installs what is missing)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${1:-${NODE_IMAGE_CACHE:-$HOME/.cache/jobqueue-node}}
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
mkdir -p "$CACHE"
need=()
for tool in debootstrap:debootstrap umoci:umoci buildah:buildah gcc:gcc; do
  command -v "${tool%%:*}" > /dev/null || need+=("${tool#*:}")
done
if [[ ${#need[@]} -gt 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
WORK=$(mktemp -d)
trap 'umount -R "$WORK/rootfs/proc" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# --- base: the hash of this script's base recipe and the mirror's suite
BASE_KEY=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "minbase-v2" | sha256sum | cut -c1-16)
BASE=$CACHE/base-$BASE_KEY
if [[ ! -f $BASE/done ]]; then
  rm -rf "$BASE"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$WORK/rootfs" http://deb.debian.org/debian >&2
  rm -rf "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/archives/*.deb
  # the final stage runs apt-get update: give it the same deb822 sources a python:*-bookworm image has
  rm -f "$WORK/rootfs/etc/apt/sources.list"
  cat > "$WORK/rootfs/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # as Debian's own container images: apt keeps no package caches or downloaded .debs in image layers
  # (without it the final stage's apt-get left ~97 MiB in /var/cache/apt)
  cat > "$WORK/rootfs/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  rm -f "$WORK"/rootfs/var/cache/apt/*.bin
  umoci init --layout "$WORK/base" >&2
  umoci new --image "$WORK/base:bookworm-python" >&2
  umoci insert --image "$WORK/base:bookworm-python" "$WORK/rootfs" / >&2
  umoci config --image "$WORK/base:bookworm-python" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env LANG=C.UTF-8 --config.cmd python3 --architecture amd64 --os linux >&2
  umoci gc --layout "$WORK/base" >&2
  mkdir -p "$BASE" && mv "$WORK/base" "$BASE/oci" && touch "$BASE/done"
fi

# --- pause
PAUSE_KEY=$(cat "$ROOT/tests/k8s/pause.c" | sha256sum | cut -c1-16)
PAUSE=$CACHE/pause-$PAUSE_KEY.tar
if [[ ! -f $PAUSE ]]; then
  mkdir -p "$WORK/pause-root"
  gcc -static -Os -o "$WORK/pause-root/pause" "$ROOT/tests/k8s/pause.c"
  umoci init --layout "$WORK/pause" >&2
  umoci new --image "$WORK/pause:3.2" >&2
  umoci insert --image "$WORK/pause:3.2" "$WORK/pause-root/pause" /pause >&2
  umoci config --image "$WORK/pause:3.2" --config.entrypoint /pause --architecture amd64 --os linux >&2
  umoci gc --layout "$WORK/pause" >&2
  tar -C "$WORK/pause" -cf "$PAUSE.part" . && mv "$PAUSE.part" "$PAUSE"
fi

# --- the project image: the hash of the base and of every file the Dockerfile copies
IMAGE_KEY=$( (echo "$BASE_KEY"; cd "$ROOT" && find Dockerfile pyproject.toml README.md requirements.lock jobqueue manager consumer \
  -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)
IMAGE=$CACHE/jobqueue-$IMAGE_KEY.tar
if [[ ! -f $IMAGE ]]; then
  # buildah's own storage, private to this build (vfs: no overlay mounts needed inside a container)
  B=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
  # buildah names an image pulled from an OCI layout after its path, which must then be a valid image name
  # (no ".cache"): pull it through a plain symlink
  LINK=/tmp/jobqueue-node-base-$$
  ln -sfn "$BASE/oci" "$LINK"
  ID=$("${B[@]}" pull -q "oci:$LINK:bookworm-python")
  rm -f "$LINK"
  "${B[@]}" tag "$ID" localhost/bookworm-python
  # chroot isolation: RUN steps need no user namespace or runc here; host network for pip and apt
  # pip in the RUN steps trusts the host's CA bundle (a TLS-inspecting proxy signs pypi.org here), through a
  # pip.conf mounted for the build only: neither is in the image
  printf '[global]\ncert = /etc/ssl/host-ca-certificates.crt\n' > "$WORK/pip.conf"
  "${B[@]}" bud --isolation chroot --network host --layers=false --build-arg BASE=localhost/bookworm-python \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca-certificates.crt:ro --volume "$WORK/pip.conf:/etc/pip.conf:ro" \
    -t localhost/jobqueue:node -f "$ROOT/Dockerfile" "$ROOT" < /dev/null >&2  # a RUN step hung with an inherited stdin
  "${B[@]}" push -q localhost/jobqueue:node "oci-archive:$IMAGE.part:node" >&2
  mv "$IMAGE.part" "$IMAGE"
  "${B[@]}" rm -a > /dev/null 2>&1 || true
  "${B[@]}" rmi -a -f > /dev/null 2>&1 || true
fi
echo "PAUSE=$PAUSE"
echo "IMAGE=$IMAGE"
# the image's size: the sum of its compressed layers (what a node pulls) and unpacked (what it stores)
python3 - "$IMAGE" <<'PY'
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":")[1])
index = json.load(t.extractfile("index.json"))
manifest = json.load(blob(index["manifests"][0]["digest"]))
print("IMAGE_COMPRESSED_BYTES=%d" % sum(layer["size"] for layer in manifest["layers"]))
PY
