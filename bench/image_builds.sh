#!/usr/bin/env bash
# How much slower an emulated image build is than a native one: times a build of the
# gateway image, with no layer cache, for another architecture under QEMU and then for this
# machine's own. The figure behind the README's cost of building the linux/amd64 images
# on an arm64 laptop (measured here the other way round).
#   bench/image_builds.sh [OTHER_ARCH]          (default: arm64 on x86_64, amd64 elsewhere)
# Needs buildah and, for the other architecture, qemu-user-static with binfmt. Where no
# registry is reachable, name a local base image per architecture (BASE_AMD64, BASE_ARM64):
# each is tagged as the Dockerfile's base before its build (../shared/notes/container-builds.md
# on the project's machines makes them).
set -euo pipefail
cd "$(dirname "$0")/.."
dockerfile=services/gateway/Dockerfile
base=$(sed -n 's/^FROM \(python:[^ ]*\) AS build$/\1/p' "$dockerfile")
case $(uname -m) in x86_64) native=amd64 ;; aarch64 | arm64) native=arm64 ;; *) native=$(uname -m) ;; esac
other=${1:-$([[ $native == amd64 ]] && echo arm64 || echo amd64)}
declare -A seconds
for arch in "$other" "$native"; do  # the machine's own base is the one left tagged
  override="BASE_${arch^^}"
  pull=missing
  if [[ -n ${!override:-} ]]; then
    buildah tag "${!override}" "$base"
    pull=never
  fi
  start=$(date +%s.%N)
  buildah bud --no-cache --pull="$pull" --arch "$arch" --format docker -f "$dockerfile" \
    -t "gateway-build-time:$arch" . >/dev/null
  seconds[$arch]=$(echo "$(date +%s.%N) - $start" | bc)
done
printf 'gateway image, no layer cache: %s (native) %.1f s, %s (QEMU) %.1f s, %.1fx\n' \
  "$native" "${seconds[$native]}" "$other" "${seconds[$other]}" \
  "$(echo "${seconds[$other]} / ${seconds[$native]}" | bc -l)"
