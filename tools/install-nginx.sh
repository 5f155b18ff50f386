#!/usr/bin/env bash
# nginx for the tests of the gateway's proxy (tests/gateway/test_proxy.py and the framing
# fuzz run it on loopback): Debian's nginx-light, the package the proxy image installs.
# Installs it with apt when missing (as root, or through sudo); where it cannot, it says so
# and those tests skip, naming nginx as the reason.
set -euo pipefail

if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-nginx: no apt-get here; install nginx to run the proxy tests" >&2
    exit 0
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    if ! sudo -n true 2>/dev/null; then
        echo "install-nginx: not root and no passwordless sudo; run: sudo apt-get install nginx-light" >&2
        exit 0
    fi
    as_root=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
# nginx-light is Debian 12's smallest nginx (the image's); later releases fold it into nginx
install() { "${as_root[@]}" apt-get install -y -qq --no-install-recommends "$1" >/dev/null; }
install nginx-light 2>/dev/null || {
    "${as_root[@]}" apt-get update -qq
    install nginx-light || install nginx
}
# The package's service is not wanted: the tests start their own nginx on free ports.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${as_root[@]}" systemctl disable --now nginx >/dev/null 2>&1 || true
fi
