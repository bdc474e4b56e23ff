#!/bin/sh
# `make install` must never overwrite a file that a package owns: run before
# `apxs -i`, this refuses when the module's target path belongs to a Debian
# package (dpkg -S; on Debian and Ubuntu apache2-bin owns
# /usr/lib/apache2/modules/mod_proxy_wstunnel.so, the stock module) or to an
# RPM (rpm -qf; EL7+'s httpd, or this project's own RPM), and points at the
# package to install instead. A path no package owns is allowed: an httpd
# built from source (/usr/local/apache2, /opt/...), CentOS 6's httpd 2.2
# (which has no mod_proxy_wstunnel), any system without dpkg or rpm.
#
#   sh scripts/install-guard.sh <apxs>            target: $(apxs -q LIBEXECDIR)/mod_proxy_wstunnel.so
#   sh scripts/install-guard.sh <path/to/module.so | modules directory>
#   sh scripts/install-guard.sh --self-test
#
# Exit status: 0 allowed, 1 refused (with the reason on stderr), 2 usage.
set -u
NAME=mod_proxy_wstunnel.so

usage() { echo "usage: sh scripts/install-guard.sh <apxs> | <target .so or directory> | --self-test" >&2; exit 2; }

self_test() {
    me=$0
    dir=$(mktemp -d "${TMPDIR:-/tmp}/wst-guard.XXXXXX") || exit 1
    fail=0
    expect() { # expect <0|1> <description> <args...>
        want=$1 what=$2; shift 2
        sh "$me" "$@" >"$dir/out" 2>&1
        got=$?
        if [ "$got" = "$want" ]; then
            echo "ok   install-guard: $what (exit $got)"
        else
            echo "FAIL install-guard: $what: exit $got, expected $want"; sed 's/^/    /' "$dir/out"
            fail=1
        fi
    }
    # An apxs of an httpd built from source: its LIBEXECDIR is no package's.
    mkdir -p "$dir/local/modules"
    printf '#!/bin/sh\n[ "$1 $2" = "-q LIBEXECDIR" ] && echo %s/local/modules\n' "$dir" >"$dir/apxs-local"
    chmod 755 "$dir/apxs-local"
    expect 0 "an apxs whose LIBEXECDIR no package owns ($dir/local/modules)" "$dir/apxs-local"
    expect 0 "a target path no package owns" "$dir/local/modules/$NAME"
    expect 0 "a modules directory no package owns" "$dir/local/modules"
    # No package manager at all (CentOS 6 from source, a minimal box): allowed.
    mkdir -p "$dir/bin"
    for t in sh readlink dirname basename cat sed; do
        p=$(command -v "$t") && ln -s "$p" "$dir/bin/$t"
    done
    if command -v dpkg-query >/dev/null 2>&1; then
        PATH=$dir/bin sh "$me" /usr/lib/apache2/modules/$NAME >"$dir/out" 2>&1
        got=$?
        if [ "$got" = 0 ]; then
            echo "ok   install-guard: no dpkg/rpm on PATH: allowed (exit 0)"
        else
            echo "FAIL install-guard: no dpkg/rpm on PATH: exit $got"; sed 's/^/    /' "$dir/out"; fail=1
        fi
    fi
    # Debian: the stock module's path belongs to apache2-bin.
    if command -v dpkg-query >/dev/null 2>&1 \
            && dpkg-query -S /usr/lib/apache2/modules/$NAME >/dev/null 2>&1; then
        expect 1 "Debian's /usr/lib/apache2/modules/$NAME (apache2-bin's)" /usr/lib/apache2/modules/$NAME
        if grep -q 'make deb' "$dir/out"; then
            echo "ok   install-guard: the refusal points at make deb"
        else
            echo "FAIL install-guard: the refusal does not mention make deb"; fail=1
        fi
        for a in /usr/bin/apxs /usr/bin/apxs2; do
            if [ -x "$a" ] && [ "$("$a" -q LIBEXECDIR 2>/dev/null)" = /usr/lib/apache2/modules ]; then
                expect 1 "Debian's apxs ($a)" "$a"
                expect 1 "Debian's apxs by name ($(basename "$a"), as APXS=$(basename "$a"))" "$(basename "$a")"
                break
            fi
        done
    else
        echo "ok   install-guard: (no Debian apache2-bin here: the refusal is not exercised)"
    fi
    rm -rf "$dir"
    return $fail
}

[ $# = 1 ] || usage
case $1 in
    --self-test) self_test; exit $? ;;
    -*) usage ;;
esac

arg=$1
apxs=
case $arg in
    *.so) target=$arg ;;
    */*) if [ -f "$arg" ] && [ -x "$arg" ]; then apxs=$arg; fi ;;
    *) apxs=$(command -v "$arg" 2>/dev/null) ;;   # a bare name is a command (the repo has an apxs/ directory)
esac
if [ -n "$apxs" ]; then
    libexec=$("$apxs" -q LIBEXECDIR 2>/dev/null)
    if [ -z "$libexec" ]; then
        echo "install-guard: $apxs -q LIBEXECDIR gave nothing: is $apxs an apxs?" >&2
        exit 1
    fi
    target=${libexec%/}/$NAME
elif [ -z "${target:-}" ]; then
    if [ -d "$arg" ]; then
        target=${arg%/}/$NAME
    else
        echo "install-guard: $arg is neither an apxs, a .so path nor a directory" >&2
        exit 2
    fi
fi

# The path as given and with its directory's symlinks resolved (/lib -> /usr/lib).
paths=$target
dir=$(dirname "$target")
if [ -d "$dir" ]; then
    real=$(cd "$dir" && pwd -P)/$(basename "$target")
    [ "$real" = "$target" ] || paths="$paths $real"
fi

owner=
how=
for p in $paths; do
    if command -v dpkg-query >/dev/null 2>&1; then
        # "apache2-bin: /usr/lib/apache2/modules/mod_proxy_wstunnel.so" (diversion lines aside)
        o=$(dpkg-query -S "$p" 2>/dev/null | sed -n "s|^\([^:]*\(:[^ :]*\)\{0,1\}\): $p\$|\1|p" | head -1)
        if [ -n "$o" ]; then owner=$o; how=dpkg; break; fi
    fi
    if command -v rpm >/dev/null 2>&1; then
        if o=$(rpm -qf --qf '%{NAME}\n' "$p" 2>/dev/null) && [ -n "$o" ]; then
            owner=$(echo "$o" | head -1); how=rpm; break
        fi
    fi
done

if [ -z "$owner" ]; then
    exit 0
fi

if [ "$how" = dpkg ]; then
    cat >&2 <<EOF
install-guard: refusing to install over $p:
  that file belongs to the Debian package $owner, which would put its own back
  on the next upgrade (and dpkg --verify would flag it).
  Install this module as a package instead; it goes beside the stock module,
  as mod_proxy_wstunnel_rs.so, and a2enmod switches between the two:

    make deb
    dpkg -i build/deb/libapache2-mod-proxy-wstunnel-rs_*.deb   # enables proxy_wstunnel_rs

  (README.md: Install, "Debian/Ubuntu"). For an httpd built from source,
  name its apxs: make install APXS=/path/to/bin/apxs
EOF
else
    cat >&2 <<EOF
install-guard: refusing to install over $p:
  that file belongs to the RPM package $owner.
  Install this module as an RPM instead (make rpm; README.md, EL7, EL8, EL9),
  or, for an httpd built from source, name its apxs: make install APXS=/path/to/bin/apxs
EOF
fi
exit 1
