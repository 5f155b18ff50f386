#!/usr/bin/env bash
# Debian packages the tests run on loopback:
#   nginx-light        the gateway pod's proxy (tests/gateway/test_proxy.py, the framing fuzz);
#                      Debian 12's smallest nginx, the package the proxy image installs
#   chromium           the website's browser tests (tests/web), driven by Playwright
# Installs what is missing with apt (as root, or through sudo). Where it cannot, it says so
# and those tests skip, naming what is missing.
set -euo pipefail

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "install-test-packages: no apt-get here; install ${missing[*]} to run their tests" >&2
    exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    if ! sudo -n true 2>/dev/null; then
        echo "install-test-packages: not root and no passwordless sudo; run: sudo apt-get install ${missing[*]}" >&2
        exit 0
    fi
    as_root=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
install() { "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
# On a fresh machine the package lists may be missing or stale: refresh once and retry.
# nginx-light is Debian 12's; later releases fold it into nginx.
install "${missing[@]}" 2>/dev/null || {
    "${as_root[@]}" apt-get update -qq
    install "${missing[@]}" || install "${missing[@]/nginx-light/nginx}"
}
# The nginx package's service is not wanted: the tests start their own nginx on free ports.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
fi
