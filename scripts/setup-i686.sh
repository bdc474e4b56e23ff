#!/usr/bin/env bash
# Prepares the i686 (32-bit) build and test environment on Debian 12 amd64
# (root or sudo; non-interactive; safe to re-run).
#
# Installs from Debian, for the host:
#   rustc-web, cargo-web, libstd-rust-web-dev  (Debian's Rust in /usr/bin, all at
#       one version; rustup's cargo/rustc stay first in PATH, so the Makefile
#       names /usr/bin/rustc and /usr/bin/cargo explicitly)
#   gcc-multilib (gcc -m32, 32-bit crt/libc/libgcc; its libc6-i386 also runs
#       i386 binaries), binutils, file
# Unpacks (dpkg -x, never installs) the i386 .debs into build/i386-root:
#   libstd-rust-web-dev:i386  i686 core/alloc/compiler_builtins rlibs, used
#       with --sysroot=build/i386-root/usr (installing it with dpkg drags in
#       libllvm19:i386 and trips over multiarch version skew)
#   apache2-bin apache2-dev libapr1 libapr1-dev libaprutil1 libaprutil1-dev
#   libpcre2-8-0 libuuid1 libexpat1 libcrypt1 libssl3 zlib1g libnghttp2-14
#       (all :i386)  a runnable 32-bit httpd 2.4 with its modules (incl.
#       mod_ssl, mod_http2), headers and libraries
# Writes build/i386-root/wst-i386.env (shell assignments for the Makefile and
# the test harness).
#
# Environment: WST_I386_ROOT   where to unpack (default <repo>/build/i386-root)
#              WST_RUST_WEB_VERSION  force a Debian rustc-web version
#              WST_SETUP_FORCE=1     redo everything even if up to date
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

repo=$(cd "$(dirname "$0")/.." && pwd)
root=${WST_I386_ROOT:-$repo/build/i386-root}
debs=$(dirname "$root")/i386-debs
stamp=$root/.wst-i386-stamp
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
log() { echo "setup-i686: $*"; }
die() { echo "setup-i686: error: $*" >&2; exit 1; }

[ "$(dpkg --print-architecture)" = amd64 ] || die "needs a Debian amd64 host"

# The first ten run httpd and build modules; libssl3 serves mod_ssl, zlib1g
# mod_deflate, libnghttp2-14 mod_http2/mod_proxy_http2.
i386_debs="apache2-bin apache2-dev libapr1 libapr1-dev libaprutil1 libaprutil1-dev
           libpcre2-8-0 libuuid1 libexpat1 libcrypt1 libssl3 zlib1g libnghttp2-14"
host_pkgs="gcc-multilib binutils file"

# Bump when the unpacked tree's layout or generated files change.
layout=3

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'; }
installed() { dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "ii" {print $2}'; }

# ---- fast path: everything already in place -------------------------------
if [ "${WST_SETUP_FORCE:-0}" != 1 ] && [ -f "$stamp" ]; then
    want=$(sed -n 's/^rust=//p' "$stamp")
    ok=1
    for p in rustc-web cargo-web libstd-rust-web-dev; do
        [ "$(installed "$p")" = "$want" ] || ok=0
    done
    for p in $host_pkgs; do [ -n "$(installed "$p")" ] || ok=0; done
    [ "$(sed -n 's/^layout=//p' "$stamp")" = "$layout" ] || ok=0
    [ -x "$root/usr/sbin/apache2" ] && [ -x "$root/wst-httpd" ] && [ -x "$root/wst-apxs" ] \
        && [ -d "$root/usr/lib/rustlib/i686-unknown-linux-gnu/lib" ] || ok=0
    if [ $ok = 1 ]; then
        log "up to date (Debian Rust $want, $root)"
        exit 0
    fi
fi

# ---- apt: i386 architecture and package lists -----------------------------
if ! dpkg --print-foreign-architectures | grep -qx i386; then
    log "adding dpkg architecture i386"
    sudo_ dpkg --add-architecture i386
fi
# A half-synced mirror can fail one index (seen here: bookworm-security i386);
# carry on and check below that what we need is known.
sudo_ apt-get update -qq || log "warning: apt-get update reported errors; continuing"

# ---- Debian's Rust, one version for rustc, cargo and both std flavours ----
# The i386 std must match rustc exactly, so take the version the i386 index
# offers and pin the host packages to it.
rv=${WST_RUST_WEB_VERSION:-$(candidate libstd-rust-web-dev:i386)}
[ -n "$rv" ] && [ "$rv" != "(none)" ] || die "no libstd-rust-web-dev:i386 in the apt lists (is bookworm main enabled?)"
apt-cache madison rustc-web | awk -v v="$rv" '$3 == v {f=1} END {exit !f}' \
    || die "rustc-web $rv (the i386 std's version) is not available for amd64"
log "Debian Rust $rv"

if [ "$(installed rustc-web)" != "$rv" ] || [ "$(installed cargo-web)" != "$rv" ] \
   || [ "$(installed libstd-rust-web-dev)" != "$rv" ] || ! dpkg-query -W $host_pkgs >/dev/null 2>&1; then
    sudo_ apt-get install -y -qq --no-install-recommends --allow-downgrades \
        "rustc-web=$rv" "cargo-web=$rv" "libstd-rust-web-dev=$rv" $host_pkgs
fi
/usr/bin/rustc -V | grep -q . || die "/usr/bin/rustc does not run"

# ---- download and unpack the i386 debs ------------------------------------
specs=("libstd-rust-web-dev:i386=$rv")
for p in $i386_debs; do
    v=$(candidate "$p:i386")
    [ -n "$v" ] && [ "$v" != "(none)" ] || die "no candidate for $p:i386"
    specs+=("$p:i386=$v")
done
mkdir -p "$debs"
(
    cd "$debs"
    need=()
    for s in "${specs[@]}"; do
        n=${s%%:*}; v=${s#*=}
        ls "${n}_$(echo "$v" | sed 's/:/%3a/')_i386.deb" >/dev/null 2>&1 || need+=("$s")
    done
    if [ ${#need[@]} -gt 0 ]; then
        log "downloading ${#need[@]} i386 packages"
        apt-get download -q -o APT::Sandbox::User=root "${need[@]}" >/dev/null
    fi
)
tmp=$root.tmp
rm -rf "$tmp"; mkdir -p "$tmp"
for s in "${specs[@]}"; do
    n=${s%%:*}; v=${s#*=}
    deb=$debs/${n}_$(echo "$v" | sed 's/:/%3a/')_i386.deb
    [ -f "$deb" ] || die "missing $deb"
    dpkg-deb -x "$deb" "$tmp"
done
# The whole i686 Rust library set (std included) is kept; the no_std core
# only links core and compiler_builtins.
rm -rf "$tmp/usr/share/doc" "$tmp/usr/share/man" "$tmp/usr/share/lintian"
rm -rf "$root"; mv "$tmp" "$root"

# ---- sanity checks ---------------------------------------------------------
libpath=$root/usr/lib/i386-linux-gnu:$root/lib/i386-linux-gnu
LD_LIBRARY_PATH=$libpath "$root/usr/sbin/apache2" -v | head -1 | grep -q 'Apache/2\.4' \
    || die "the unpacked 32-bit httpd does not run"
chk=$(mktemp -d)
printf '#![no_std]\npub fn f(a: u64, b: u64) -> u64 { a / b }\n' > "$chk/c.rs"
/usr/bin/rustc --edition 2021 --crate-type rlib --target i686-unknown-linux-gnu \
    --sysroot "$root/usr" -O -o "$chk/libc.rlib" "$chk/c.rs" \
    || die "Debian rustc cannot build for i686 with --sysroot $root/usr"
rm -rf "$chk"

cat > "$root/wst-i386.env" <<EOF
# Generated by scripts/setup-i686.sh. No value has spaces or quotes, so this
# file can be sourced by sh and included by make alike.
WST_I386_ROOT=$root
WST_I386_HTTPD=$root/usr/sbin/apache2
WST_I386_HTTPD_WRAPPER=$root/wst-httpd
WST_I386_APXS_WRAPPER=$root/wst-apxs
WST_I386_MODULES=$root/usr/lib/apache2/modules
WST_I386_LD_LIBRARY_PATH=$libpath
WST_I386_INCLUDES=$root/usr/include/apache2:$root/usr/include/apr-1.0
WST_I686_RUSTC=/usr/bin/rustc
WST_I686_CARGO=/usr/bin/cargo
WST_I686_RUST_SYSROOT=$root/usr
EOF
# Wrappers for tools that take HTTPD/APXS: the unpacked apache2 needs its
# library path, and the i386 apxs prints the host's (64-bit) paths.
cat > "$root/wst-httpd" <<EOF
#!/bin/sh
# 32-bit httpd from $root (always pass -d and -f).
LD_LIBRARY_PATH=$libpath\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $root/usr/sbin/apache2 "\$@"
EOF
cat > "$root/wst-apxs" <<EOF
#!/bin/sh
# Answers "apxs -q VAR" for the unpacked 32-bit httpd; builds nothing.
[ "\$1" = -q ] || { echo "wst-apxs: only -q is supported" >&2; exit 1; }
shift
for v in "\$@"; do
    case \$v in
        LIBEXECDIR) echo $root/usr/lib/apache2/modules ;;
        INCLUDEDIR) echo $root/usr/include/apache2 ;;
        APR_INCLUDEDIR|APU_INCLUDEDIR) echo $root/usr/include/apr-1.0 ;;
        SBINDIR) echo $root/usr/sbin ;;
        TARGET|progname) echo apache2 ;;
        *) echo "wst-apxs: unknown variable \$v" >&2; exit 1 ;;
    esac
done
EOF
chmod +x "$root/wst-httpd" "$root/wst-apxs"

{
    echo "layout=$layout"
    echo "rust=$rv"
    printf '%s\n' "${specs[@]}"
} > "$stamp"
log "ready: $(LD_LIBRARY_PATH=$libpath "$root/usr/sbin/apache2" -v | head -1 | sed 's/Server version: //') (32-bit) in $root; $(/usr/bin/rustc -V)"
