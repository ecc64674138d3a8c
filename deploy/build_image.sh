#!/usr/bin/env bash
# Builds the worker image (Dockerfile) with podman on this machine, from a Debian bookworm base
# made with debootstrap, so no container registry is needed. The pinned wheels are gathered
# once into a wheel folder with the host's pip (its indexes and cache) and mounted into the
# build, so a rebuild downloads nothing: torch with its CUDA libraries alone is ~5.5 GB.
#
#   deploy/build_image.sh                 # -> localhost/isim:latest
#   deploy/build_image.sh --print-run     # the podman run prefix that works on this machine
#
# Environment: ISIM_IMAGE (tag), ISIM_BASE (use this base image instead of debootstrapping one),
# ISIM_WHEELS (wheel folder, default ~/.cache/isim/wheels), DEBIAN_MIRROR.
# Needs root (debootstrap, rootful podman), podman, runc and debootstrap (setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${ISIM_IMAGE:-localhost/isim:latest}
base=${ISIM_BASE:-localhost/isim-base:bookworm}
wheels=${ISIM_WHEELS:-$HOME/.cache/isim/wheels}
# runc and cgroupfs: podman's defaults (crun, systemd) fail on cgroups v1 hosts without systemd;
# nofile/nproc: the host's hard limits are lower than podman's defaults
podman=(podman --runtime runc --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network=host)   # build and run alike
run=("${podman[@]}" run --rm "${limits[@]}")
if [ "${1:-}" = --print-run ]; then
  echo "${run[*]}"
  exit 0
fi
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || { echo "build_image: $tool not found (apt-get install podman runc debootstrap)" >&2; exit 1; }
done
start=$(date +%s)

if ! "${podman[@]}" image exists "$base"; then
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  echo "build_image: debootstrap bookworm -> $base"
  debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$rootfs" -c . | "${podman[@]}" import --quiet - "$base" >/dev/null
fi

# one wheel per pin (requirements.txt pins the whole set); pip takes what the folder has already
mkdir -p "$wheels"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=.venv/bin/python
pip_pin=$(grep -o 'pip==[0-9.]*' Dockerfile | head -1)   # the pip the image upgrades to
# (pip warns about every index folder that lacks a package; only its errors are worth showing)
"$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -r requirements.txt "$pip_pin" \
  -w "$wheels" --find-links "$wheels" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

"${podman[@]}" build --quiet "${limits[@]}" \
  --build-arg BASE="$base" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
  --volume "$(cd "$wheels" && pwd)":/wheels:ro \
  -t "$image" . >/dev/null
size=$("${podman[@]}" image inspect "$image" --format '{{.Size}}')
echo "build_image: $image built in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
