#!/bin/sh
# Checks a prebuilt Rust core archive against what CentOS 6's linker reads:
# GNU ld 2.20.51.0.2 (binutils-2.20.51.0.2-5.48.el6), which `rpmbuild
# --rebuild` of the source RPM runs there. One "ok   ..." or "FAIL ..." line
# per check; exit 1 if any failed.
#
#   sh apxs/check-archive.sh <libwstunnel_core.a> x86_64|i686
#
# 1. Relocation types: only those ld 2.20 has howtos for. The "relaxable" GOT
#    relocations R_X86_64_GOTPCRELX, R_X86_64_REX_GOTPCRELX and R_386_GOT32X
#    came with binutils 2.26; an object that has one makes ld 2.20 abort.
# 2. Section types: the generic ones and SHT_X86_64_UNWIND; no OS-specific
#    types such as LLVM's SHT_LLVM_ADDRSIG (.llvm_addrsig).
# 3. Section flags: no SHF_COMPRESSED (binutils 2.26; ld 2.20 would link the
#    compressed bytes as they are), no SHF_GNU_RETAIN (2.36), and no
#    SHF_EXCLUDE: ld 2.20 ignores it and copies such sections (rustc's
#    .llvmbc/.llvmcmd bitcode) into the .so, 4.4 MB instead of 2.0 MB.
#    The source RPM's archives are trimmed of those sections (packaging/rpm.mk).
#   sh apxs/check-archive.sh --self-test
#       shows that the checks fail where they must: objects from this host's
#       gcc (relaxed GOT relocations) and one with an SHF_EXCLUDE section.
set -u
if [ "${1:-}" = --self-test ]; then
    t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
    printf 'extern int x;\nint f(void) { return x; }\n' > "$t/x.c"
    st=0
    for a in x86_64:-m64 i686:-m32; do
        gcc ${a#*:} -fPIC -O2 -c "$t/x.c" -o "$t/x.o" || { echo "FAIL self-test: gcc ${a#*:} failed"; st=1; continue; }
        rm -f "$t/x.a"; ar rcs "$t/x.a" "$t/x.o"
        if sh "$0" "$t/x.a" "${a%%:*}" | grep -q '^FAIL .*relocation types EL6'; then
            echo "ok   self-test: a ${a%%:*} object from gcc $(gcc -dumpversion) (relaxed GOT relocation) is refused"
        else
            echo "FAIL self-test: the ${a%%:*} object with a relaxed GOT relocation passed"; st=1
        fi
    done
    objcopy --add-section .llvmcmd="$t/x.c" --set-section-flags .llvmcmd=exclude "$t/x.o" "$t/e.o"
    rm -f "$t/x.a"; ar rcs "$t/x.a" "$t/e.o"
    if sh "$0" "$t/x.a" i686 | grep -q '^FAIL .*exclude'; then
        echo "ok   self-test: an object with an SHF_EXCLUDE .llvmcmd section is refused"
    else
        echo "FAIL self-test: the SHF_EXCLUDE section passed"; st=1
    fi
    exit $st
fi
ar=$1 arch=$2
fail=0
case $arch in
    x86_64) known="NONE 64 PC32 GOT32 PLT32 COPY GLOB_DAT JUMP_SLOT RELATIVE GOTPCREL 32 32S 16 PC16 8 PC8
                   DTPMOD64 DTPOFF64 TPOFF64 TLSGD TLSLD DTPOFF32 GOTTPOFF TPOFF32 PC64 GOTOFF64 GOTPC32
                   GOTPC32_TLSDESC TLSDESC_CALL TLSDESC IRELATIVE"; pre=R_X86_64_ ;;
    i686)   known="NONE 32 PC32 GOT32 PLT32 COPY GLOB_DAT JUMP_SLOT RELATIVE GOTOFF GOTPC TLS_TPOFF TLS_IE
                   TLS_GOTIE TLS_LE TLS_GD TLS_LDM 16 PC16 8 PC8 TLS_GD_32 TLS_GD_PUSH TLS_GD_CALL TLS_GD_POP
                   TLS_LDM_32 TLS_LDM_PUSH TLS_LDM_CALL TLS_LDM_POP TLS_LDO_32 TLS_IE_32 TLS_LE_32
                   TLS_DTPMOD32 TLS_DTPOFF32 TLS_TPOFF32 TLS_GOTDESC TLS_DESC_CALL TLS_DESC IRELATIVE"; pre=R_386_ ;;
    *) echo "FAIL $ar: unknown arch $arch"; exit 1 ;;
esac
[ -r "$ar" ] || { echo "FAIL $ar: cannot read"; exit 1; }
rels=$(readelf -rW "$ar" 2>/dev/null | awk '$3 ~ /^R_/ {print $3}' | sort | uniq -c)
unknown=
for t in $(echo "$rels" | awk '{print $2}'); do
    case " $(echo $known) " in *" ${t#$pre} "*) ;; *) unknown="$unknown $t" ;; esac
done
if [ -n "$unknown" ]; then
    echo "FAIL $ar: relocation types EL6's ld 2.20 does not know:$unknown"; fail=1
else
    echo "ok   $ar: relocation types all known to ld 2.20 ($(echo "$rels" | awk '{printf "%s%s", s, $2; s=" "}'))"
fi
# Section headers of every member: name, type and flags (readelf -SW columns;
# the flags column is the one before Lk Inf Al).
secs=$(readelf -SW "$ar" 2>/dev/null | sed -n 's/^ *\[ *[0-9]*\] //p' | grep -v -e '^Name ' -e '^ *NULL ' \
       | awk '{fl = ""; if ($(NF-3) ~ /^[WAXMSILOGTCxoEDlRp]+$/) fl = $(NF-3); print $1, $2, fl}')
badtype=$(echo "$secs" | awk '$2 !~ /^(NULL|PROGBITS|SYMTAB|STRTAB|RELA|REL|NOBITS|GROUP|NOTE|INIT_ARRAY|FINI_ARRAY|X86_64_UNWIND)$/ {print $1 "(" $2 ")"}' | sort -u | head -5)
badflag=$(echo "$secs" | awk '$3 ~ /[CER]/ {print $1 "(" $3 ")"}' | sed 's/\.[^.(]*\.[^(]*(/.*(/' | sort -u | head -5)
if [ -n "$badtype" ]; then
    echo "FAIL $ar: section types ld 2.20 does not know: $(echo $badtype)"; fail=1
else
    echo "ok   $ar: section types all generic (or SHT_X86_64_UNWIND)"
fi
if [ -n "$badflag" ]; then
    echo "FAIL $ar: sections flagged compressed (C), exclude (E) or retain (R), which ld 2.20 does not honour: $(echo $badflag)"; fail=1
else
    echo "ok   $ar: no compressed, exclude or retain section flags"
fi
exit $fail
