#!/bin/sh
# Static checks of a built module: it binds no glibc symbol version above
# 2.12 (CentOS 6), links no Rust std runtime, and exports only its module.
set -eu
so=$1
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
exit $fail
