#!/usr/bin/env bash
# `make run` needs Docker with the Compose v2 plugin (2.17+, for build.additional_contexts).
# Say clearly what is missing instead of failing halfway through a build.
set -u
MIN_MAJOR=2 MIN_MINOR=17
if ! command -v docker >/dev/null 2>&1; then
  echo "error: make run needs Docker, and 'docker' is not on PATH: https://docs.docker.com/get-docker/" >&2
  exit 1
fi
if ! version=$(docker compose version --short 2>/dev/null); then
  echo "error: make run needs Docker Compose v2 ('docker compose'); this Docker has no compose plugin." >&2
  echo "  The old docker-compose v1 is not enough. https://docs.docker.com/compose/install/" >&2
  exit 1
fi
version=${version#v}
IFS=. read -r major minor _ <<<"$version"
if ! [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] \
  || ((major < MIN_MAJOR || (major == MIN_MAJOR && minor < MIN_MINOR))); then
  echo "error: make run needs Docker Compose $MIN_MAJOR.$MIN_MINOR or newer; found $version" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is not running (docker info failed); start Docker and retry" >&2
  exit 1
fi
# Apple Silicon: TF Serving's image is amd64-only and needs AVX, which Docker Desktop's
# Rosetta emulation does not give Linux containers; its QEMU emulation does.
if [[ $(uname -s 2>/dev/null) == Darwin && $(uname -m 2>/dev/null) == arm64 ]]; then
  echo "note: TF Serving runs emulated (linux/amd64) on this Mac. If it exits with" >&2
  echo "  'Illegal instruction', turn off Docker Desktop's 'Use Rosetta for x86_64/amd64" >&2
  echo "  emulation on Apple Silicon' (Settings > General) so that QEMU runs it." >&2
fi
