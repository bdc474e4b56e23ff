#!/bin/sh
# Reads the httpd ABI a built module was compiled for from the module record
# itself (the struct httpd's LoadModule checks), not from what we believe the
# headers were:
#
#   sh packaging/so-abi.sh build/mod_proxy_wstunnel.so
#   mmn=20051115 minor=24 cookie=AP22 bits=64 isa=x86-64 mmnisa=20051115 abi=httpd22
#
# module_struct (2.2 and 2.4 alike) starts: int version (MMN major), int
# minor_version, int module_index, const char *name, void *dynamic_load_handle,
# struct module_struct *next, unsigned long magic ("AP22"/"AP24"). The ints
# and the magic are plain data in the file; only the pointers are relocated.
#
# mmnisa is the "httpd-mmn" value the package requires, one that Red Hat's
# httpd provides for that ABI and architecture: EL6's httpd 2.2 only the plain
# "20051115" (its httpd.spec: Provides: httpd-mmn = %{mmn}); EL7, EL8, EL9 and
# Fedora's httpd 2.4 "20120211x8664" / "20120211x8632" (%{mmnisa}).
# Needs readelf and od (binutils, coreutils). Exit status 1 if the file is not
# a loadable httpd 2.2/2.4 module for x86 or x86_64.
set -eu
so=$1
sym=proxy_wstunnel_module
die() { echo "so-abi: $so: $*" >&2; exit 1; }
[ -r "$so" ] || die "cannot read"

case $(readelf -h "$so" | awk -F: '$1 ~ /Machine/ {gsub(/^ +/, "", $2); print $2}') in
    "Advanced Micro Devices X86-64") bits=64; isa=x86-64 ;;
    "Intel 80386") bits=32; isa=x86-32 ;;
    *) die "neither x86-64 nor i386" ;;
esac
addr=$(readelf -sW --dyn-syms "$so" | awk -v s="$sym" '$8 == s && $4 == "OBJECT" {print $2; exit}')
[ -n "$addr" ] || die "does not export $sym"
addr=$((0x$addr))
# File offset of the symbol: find its section in the section headers.
off=
for line in $(readelf -SW "$so" | sed -n 's/^ *\[ *[0-9]*\] *//p' \
              | awk '$2 == "PROGBITS" {print $3 ":" $4 ":" $5}'); do
    sa=$((0x${line%%:*})); rest=${line#*:}; so_=$((0x${rest%%:*})); sz=$((0x${rest#*:}))
    if [ "$sa" -ne 0 ] && [ "$addr" -ge "$sa" ] && [ "$addr" -lt $((sa + sz)) ]; then
        off=$((so_ + addr - sa)); break
    fi
done
[ -n "$off" ] || die "no PROGBITS section holds $sym"
words() { od -An -t u4 -j "$1" -N "$2" "$so" | tr -s ' \n' '  ' | sed 's/^ //; s/ $//'; }
set -- $(words "$off" 8)
mmn=$1 minor=$2
[ $bits = 64 ] && moff=40 || moff=24
magic=$(od -An -t x4 -j $((off + moff)) -N 4 "$so" | tr -d ' \n')
case $magic in
    41503232) cookie=AP22 ;;
    41503234) cookie=AP24 ;;
    *) die "module magic 0x$magic is neither AP22 nor AP24" ;;
esac
case $mmn:$cookie in
    20051115:AP22) abi=httpd22; mmnisa=$mmn ;;
    20120211:AP24) abi=httpd24; mmnisa=${mmn}x86$bits ;;
    *) die "MMN $mmn with cookie $cookie is not httpd 2.2 or 2.4" ;;
esac
echo "mmn=$mmn minor=$minor cookie=$cookie bits=$bits isa=$isa mmnisa=$mmnisa abi=$abi"
