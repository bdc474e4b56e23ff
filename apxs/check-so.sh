#!/bin/sh
# Static checks of a built module: it binds no glibc symbol version above
# 2.12 (CentOS 6), links no Rust std runtime, and exports only its module.
#
#   sh apxs/check-so.sh <module.so> [<apxs of the target httpd>]
#
# With the target's apxs, every symbol the module leaves undefined must be
# one that the target exports: its httpd binary (apxs -q SBINDIR, TARGET),
# the libapr-1 and libaprutil-1 that binary loads (ldd; WST_TARGET_LIBPATH is
# added to LD_LIBRARY_PATH for a tree that needs it) or its mod_proxy.so
# (apxs -q LIBEXECDIR). That is the check that would have caught an APR 1.4
# call in a module built for CentOS 6's APR 1.3.9.
set -eu
so=$1
apxs=${2:-}
fail=0
need=$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
if [ -n "$need" ] && [ "$(printf '%s\n2.12\n' "$need" | sort -V | tail -1)" != "2.12" ]; then
    echo "FAIL $so needs GLIBC_$need (CentOS 6 has 2.12):"
    objdump -T "$so" | grep -E 'GLIBC_2\.(1[3-9]|[2-9][0-9])' | head -20
    fail=1
else
    echo "ok   $so: highest glibc symbol version ${need:-none} <= 2.12"
fi
if ! nm -D --defined-only "$so" | awk '{print $3}' | grep -q -x proxy_wstunnel_module; then
    echo "FAIL $so does not export proxy_wstunnel_module: LoadModule would fail"
    fail=1
fi
extra=$(nm -D --defined-only "$so" | awk '{print $3}' | grep -v -x -e proxy_wstunnel_module -e _init -e _fini || true)
if [ -n "$extra" ]; then
    echo "FAIL $so exports more than proxy_wstunnel_module: $(echo $extra | head -c 300)"
    fail=1
else
    echo "ok   $so exports only proxy_wstunnel_module"
fi
undef=$(nm -D --undefined-only "$so" | awk '$1 == "U" {print $2}')
if echo "$undef" | grep -q -E '^(_Unwind_|__rust_|rust_eh|__cxa_throw|pthread_|dl(sym|open)|getrandom)'; then
    echo "FAIL $so needs the Rust std runtime or unwinder: $(echo "$undef" | grep -E '^(_Unwind_|__rust_|rust_eh|__cxa_throw|pthread_|dl(sym|open)|getrandom)' | head -5)"
    fail=1
else
    echo "ok   $so carries no Rust std runtime"
fi
# Every undefined symbol must come from glibc (versioned) or from httpd, APR
# and mod_proxy (resolved when httpd loads the module); anything else would
# make httpd's dlopen fail.
stray=$(nm -D --undefined-only "$so" | awk '$1 == "U" {print $2}' | grep -v '@' \
        | grep -v -E '^(ap_|apr_|apu_|proxy_|ssl_|core_module$|proxy_module$)' || true)
if [ -n "$stray" ]; then
    echo "FAIL $so has undefined symbols nothing will provide: $(echo $stray | head -c 300)"
    fail=1
else
    echo "ok   $so: every undefined symbol comes from glibc, httpd, APR or mod_proxy"
fi
if [ -n "$apxs" ]; then
    sbindir=$("$apxs" -q SBINDIR 2>/dev/null || true); target=$("$apxs" -q TARGET 2>/dev/null || true)
    libexec=$("$apxs" -q LIBEXECDIR 2>/dev/null || true)
    bin=$sbindir/$target
    if [ ! -f "$bin" ] || [ ! -f "$libexec/mod_proxy.so" ]; then
        echo "FAIL $so: $apxs names no httpd binary ($bin) or mod_proxy.so ($libexec) to check against"
        fail=1
    else
        libs=$(LD_LIBRARY_PATH=${WST_TARGET_LIBPATH:-}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ldd "$bin" 2>/dev/null \
               | awk '$1 ~ /^libapr(util)?-1\.so/ && $3 ~ /^\// {print $3}')
        exports=$(nm -D --defined-only "$bin" "$libexec/mod_proxy.so" $libs 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u)
        missing=
        for s in $(nm -D --undefined-only "$so" | awk '$1 == "U" {print $2}' | grep -v '@'); do
            echo "$exports" | grep -qx "$s" || missing="$missing $s"
        done
        if [ "$(echo "$libs" | grep -c .)" != 2 ]; then
            echo "FAIL $so: ldd $bin does not show libapr-1 and libaprutil-1 (set WST_TARGET_LIBPATH?)"
            fail=1
        elif [ -n "$missing" ]; then
            echo "FAIL $so needs symbols that $bin, its APR libraries and mod_proxy.so do not export (httpd would refuse to load it):$missing"
            fail=1
        else
            echo "ok   $so: every undefined symbol is exported by $bin, $(echo $libs | sed 's|[^ ]*/||g') or mod_proxy.so"
        fi
    fi
fi
exit $fail
