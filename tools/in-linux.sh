#!/usr/bin/env bash
# Run a command of this project in a linux/amd64 container, from uv.lock:
#   tools/in-linux.sh python -m model_tools export model.h5 ...
# For the model tooling on an Intel Mac, where TensorFlow has had no wheel since 2.17 (the
# Makefile does this there; Docker Desktop runs x86_64 Linux natively on those Macs).
# The repository and $HOME (for model files and exports kept outside the repository) have
# the same paths inside, so file arguments work unchanged. The environment and uv's cache
# live in a Docker volume: installed once, reused by later runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
docker=${DOCKER:-docker}
if ! command -v "$docker" >/dev/null 2>&1; then
  echo "error: the model tooling runs in a Linux container here (TensorFlow has no wheel for" >&2
  echo "  this platform), and '$docker' is not on PATH: https://docs.docker.com/get-docker/" >&2
  exit 1
fi
# The gateway image's base and uv release: the same Python and uv as everywhere else.
dockerfile=$root/services/gateway/Dockerfile
image=$(sed -n 's/^FROM \(python:[^ ]*\) AS build$/\1/p' "$dockerfile")
uv_version=$(sed -n 's/^ARG UV_VERSION=//p' "$dockerfile")
mounts=(-v "$root:$root")
if [[ -n ${HOME:-} && -d $HOME ]]; then
  mounts=(-v "$HOME:$HOME")  # the repository too, when it lives there
  [[ $root == "$HOME"/* ]] || mounts+=(-v "$root:$root")
fi
# shellcheck disable=SC2016  # expanded by the container's shell
exec "$docker" run --rm --platform linux/amd64 "${mounts[@]}" -w "$PWD" \
  -v clothing-serving-linux:/opt/clothing \
  -e UV_PROJECT_ENVIRONMENT=/opt/clothing/venv -e UV_CACHE_DIR=/opt/clothing/cache \
  -e UV_PYTHON_DOWNLOADS=never -e UV_LINK_MODE=copy -e UV_PYTHON_PREFERENCE=only-system \
  "$image" bash -euo pipefail -c '
    uv=/opt/clothing/uv/bin/uv
    [[ -x $uv && $($uv --version) == "uv $0"* ]] \
      || pip install --quiet --root-user-action=ignore --target /opt/clothing/uv "uv==$0"
    "$uv" sync --quiet --locked --project "'"$root"'" --no-default-groups --group model
    exec "$uv" run --project "'"$root"'" --no-sync "$@"' "$uv_version" "$@"
