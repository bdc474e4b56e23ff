#!/bin/sh
# The httpd 2.2 floor (CentOS 6: httpd 2.2.15, APR 1.3.9, APR-util 1.3.9),
# held where only newer headers exist. One "ok   ..." or "FAIL ..." line per
# check, like check-so.sh; exit 1 if any failed.
#
#   sh apxs/check-api.sh build/mod_proxy_wstunnel.so
#       1. every symbol the module needs from httpd, mod_proxy or APR is in
#          apxs/api-httpd22.txt (a module built for 2.2), or in that list or
#          apxs/api-newer.txt (a module built for 2.4);
#       2. in c_shim/, every name of api-newer.txt stands only under an #if
#          that names its guard (names with guard "none" not at all), and is
#          poisoned in the 2.2 branch of wst_compat.h.
#
#   sh apxs/check-api.sh --verify <httpd 2.2 root> <APR include dir> <APR lib dir>
#       checks the lists themselves against a CentOS-6-like tree: each name of
#       api-httpd22.txt is declared in its headers and exported by its httpd,
#       mod_proxy.so, libapr-1 or libaprutil-1; no name of api-newer.txt is
#       in its headers.
set -u
here=$(cd "$(dirname "$0")" && pwd)
shim=$here/../c_shim
list22=$here/api-httpd22.txt
newer=$here/api-newer.txt
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
names() { grep -v -e '^#' -e '^[[:space:]]*$' "$1" | awk '{print $1}'; }

if [ "${1:-}" = --verify ]; then
    root=$2 aprinc=$3 aprlib=$4
    hdrs="$root/include/*.h $aprinc/*.h"
    exports=$( (nm -D --defined-only "$root/bin/httpd" "$root/modules/mod_proxy.so" \
                "$aprlib/libapr-1.so.0" "$aprlib/libaprutil-1.so.0") 2>/dev/null | awk 'NF == 3 {print $3}' | sort -u)
    for n in $(names "$list22"); do
        h=$(awk -v n="$n" '$1 == n {print $2}' "$list22")
        # A hook's ap_hook_/proxy_hook_/_run_ functions come from its DECLARE_HOOK line.
        w=$(echo "$n" | sed -e 's/^ap_hook_//' -e 's/^ap_run_//' -e 's/^proxy_hook_//' -e 's/^proxy_run_//')
        grep -qw -e "$n" -e "$w" $(ls $hdrs | grep "/$h\$") 2>/dev/null || bad "--verify: $n is not in $h of $root"
        echo "$exports" | grep -qx "$n" || bad "--verify: nothing in $root exports $n"
    done
    [ $fail = 0 ] && ok "--verify: the $(names "$list22" | wc -l) names of api-httpd22.txt are declared and exported in $root"
    f0=$fail
    for n in $(names "$newer"); do
        # 2.2's own macro of that name (its header reads the structure; the
        # shim reads the field there itself): a 2.2 build never calls it.
        awk -v n="$n" '$1 == n' "$newer" | grep -q 'a macro on 2.2' \
            && grep -q "define[[:space:]]*$n(" $hdrs 2>/dev/null && continue
        if grep -lw "$n" $hdrs >/dev/null 2>&1; then bad "--verify: $n (api-newer.txt) is in $(grep -lw "$n" $hdrs | head -1)"; fi
    done
    [ $fail = "$f0" ] && ok "--verify: none of the $(names "$newer" | wc -l) names of api-newer.txt is in $root's or APR's headers"
    exit $fail
fi

so=$1
abi=$(sh "$here/../packaging/so-abi.sh" "$so" | sed -n 's/.*abi=\([a-z0-9]*\).*/\1/p')
[ -n "$abi" ] || { bad "$so: cannot read its httpd ABI"; exit 1; }
need=$(nm -D --undefined-only "$so" | awk '$1 == "U" {print $2}' | grep -v '@')
allowed=$(names "$list22")
[ "$abi" = httpd24 ] && allowed="$allowed
$(names "$newer" | while read -r n; do g=$(awk -v n="$n" '$1 == n {print $2}' "$newer"); [ "$g" = none ] || echo "$n"; done)"
miss=
for n in $need; do echo "$allowed" | grep -qx "$n" || miss="$miss $n"; done
if [ -z "$miss" ]; then
    ok "$so ($abi): the $(echo "$need" | wc -w) symbols it needs from httpd, mod_proxy and APR are in $( [ $abi = httpd22 ] && echo api-httpd22.txt || echo 'api-httpd22.txt or api-newer.txt')"
elif [ "$abi" = httpd22 ]; then
    bad "$so (httpd22) needs what httpd 2.2.15 / APR 1.3.9 lack (not in apxs/api-httpd22.txt):$miss"
else
    bad "$so (httpd24) needs symbols in neither apxs/api-httpd22.txt nor apxs/api-newer.txt:$miss (if 2.2.15 has it, add it to the first after --verify; else behind a guard to the second)"
fi

# Source: where each newer name stands. awk keeps the stack of #if
# conditions; a line counts as under guard G when an open branch's own
# condition names G (not negated), or an #else branch's #if named !G.
src_fail=0
for f in "$shim"/*.c "$shim"/*.h; do
    out=$(awk -v list="$newer" '
        BEGIN { while ((getline l < list) > 0) { if (l ~ /^#/ || l ~ /^[ \t]*$/) continue
                    split(l, a, /[ \t]+/); guard[a[1]] = a[2] } }
        /^[ \t]*#[ \t]*pragma[ \t]+GCC[ \t]+poison/ { next }
        /^[ \t]*#[ \t]*if/   { sub(/^[ \t]*#[ \t]*/, ""); d++; cond[d] = $0; neg[d] = 0; next }
        /^[ \t]*#[ \t]*elif/ { sub(/^[ \t]*#[ \t]*el/, ""); cond[d] = $0; neg[d] = 0; next }
        /^[ \t]*#[ \t]*else/ { neg[d] = 1; next }
        /^[ \t]*#[ \t]*endif/ { d--; next }
        {
            line = $0; sub(/\/\*.*\*\//, "", line); sub(/\/\/.*/, "", line)
            for (n in guard) {
                if (!match(line, "(^|[^A-Za-z0-9_])" n "([^A-Za-z0-9_]|$)")) continue
                g = guard[n]
                if (g == "none" || g ~ /^=/) { print FILENAME ":" FNR ": " n " must not be used (api-newer.txt: " g ")"; continue }
                okk = 0
                for (i = 1; i <= d; i++) {
                    c = cond[i]
                    if (!neg[i] && match(c, "(^|[^!A-Za-z0-9_])" g "([^A-Za-z0-9_]|$)")) okk = 1
                    if (neg[i] && match(c, "!" g "([^A-Za-z0-9_]|$)")) okk = 1
                }
                if (!okk) print FILENAME ":" FNR ": " n " outside #if " g
            }
        }' "$f")
    [ -z "$out" ] || { echo "$out" | sed 's/^/FAIL /'; src_fail=1; fail=1; }
done
[ $src_fail = 0 ] && ok "c_shim: every name of api-newer.txt stands under its guard"
# C that gcc 12 accepts under -std=gnu89 (the flag every build here uses) but
# CentOS 6's gcc 4.4.7 does not: C11 keywords, the newer builtins and attributes.
newc=$(grep -n -E '_Static_assert|_Generic|_Alignof|_Alignas|_Noreturn|_Thread_local|__auto_type|__has_include|__builtin_[a-z]+_overflow|__attribute__[[:space:]]*\(\([[:space:]]*(fallthrough|no_sanitize|nonstring)' \
       "$shim"/*.c "$shim"/*.h 2>/dev/null | sed "s|^$shim/||" | head -5)
[ -z "$newc" ] && ok "c_shim: no C that gcc 4.4.7 (CentOS 6) lacks" || bad "c_shim uses C that gcc 4.4.7 lacks: $newc"
poisoned=$(sed -n 's/^#pragma GCC poison //p' "$shim/wst_compat.h" | tr ' ' '\n')
unp=
for n in $(names "$newer"); do echo "$poisoned" | grep -qx "$n" || unp="$unp $n"; done
[ -z "$unp" ] && ok "wst_compat.h poisons every name of api-newer.txt on 2.2" || bad "wst_compat.h does not poison on 2.2:$unp"
exit $fail
