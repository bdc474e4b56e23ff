#!/usr/bin/env bash
# Installs what building and testing the module needs on Debian 12 (root or sudo).
# Used by .ci/run and by the README's demo command.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Never let a package's postinst start a system httpd on port 80.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | sudo_ tee /usr/sbin/policy-rc.d >/dev/null
    sudo_ chmod +x /usr/sbin/policy-rc.d
fi

# libclang-dev: only make test's contract drift check (tools/contract-gen); building needs none.
pkgs="apache2 apache2-dev websocketd libclang-dev openssl binutils make gcc pkg-config iproute2 rpm rpm2cpio createrepo-c cpio file dnf nginx-light haproxy fonts-dejavu-core valgrind g++ libseccomp-dev strace debhelper lintian chromium firefox-esr python3-websockets libnss3-tools gdb"
log=$(mktemp)
# A mirror caught mid-sync (seen for bookworm-security's i386 index) makes
# apt-get update fail while the lists it did get are fine: warn, go on, and let
# the installs below say whether anything is really missing.
if ! sudo_ apt-get update -qq; then
    echo "install-deps: warning: apt-get update reported errors; continuing with the package lists it has"
fi
if ! sudo_ apt-get install -y -qq $pkgs >"$log" 2>&1; then
    # design.md: apache2-dev may need libpcre2-8-0 at the mirror's version.
    ver=$(apt-cache policy libpcre2-dev | awk '/Candidate:/ {print $2}')
    sudo_ apt-get install -y -qq --allow-downgrades "libpcre2-8-0=$ver" "libpcre2-dev=$ver" $pkgs \
        >>"$log" 2>&1 || { cat "$log"; exit 1; }
fi
rm -f "$log"
command -v cargo >/dev/null || { echo "cargo is expected on this machine (rustup)"; exit 1; }
# The i686 toolchain and an unpacked 32-bit httpd 2.4 (make i686, its e2e run).
"$(dirname "$0")/setup-i686.sh"
echo "dependencies installed"
