#!/usr/bin/env bash
# Checks what `make rpm` wrote (packaging/rpm.mk): one "ok   ..." or
# "FAIL ..." line per check, like apxs/check-so.sh; exit 1 if any failed.
#
#   RPM_DIR=build/rpm bash packaging/check-rpm.sh     (make rpm-check sets all this)
#
# Environment:
#   RPM_DIR     the make rpm output (default build/rpm)
#   RPM_ARCHES  binary RPM architectures expected (default: the dirs present)
#   RPM_CORES   Rust archives the SRPM must carry (default: what it has)
#   SO, I686_SO the .so files the binary RPMs were made from: their payload
#               must be byte-identical
#   APXS        apxs for the SRPM rebuild test (default: apxs on PATH); its
#               httpd decides the ABI of the rebuilt package
#   HTTPD       an httpd to load the packaged x86_64 module and its conf file
#               into (`httpd -t`), when its MMN matches the package's; else
#               the httpd of APXS (apxs -q SBINDIR, TARGET) when that one does
#   HTTPD_I686, APXS_I686  the same for i686 (default: build/i386-root/wst-*);
#               a real 32-bit APXS_I686 also builds the SRPM's tarball for i686
#
# First the stand-ins for EL6, EL7, EL8 and EL9's httpd packages: they must
# provide exactly what the real ones do (each Provides line is copied from that
# release's httpd.spec), and rpm must resolve httpd-mmn against them as yum
# there would (a package requiring "httpd-mmn = 20051115-x86-64" is refused
# next to EL6's httpd). For every binary RPM: name, version, arch, licence,
# gzip payload; Requires (httpd >= 2.2.15, httpd(x86-64) or httpd(x86-32) >=
# the headers' version, the httpd-mmn Red Hat's httpd provides for the ABI in
# the .so's module record, no rpmlib feature EL6's rpm 4.8 lacks, glibc <= 2.12
# for httpd 2.2 packages); the file list; the payload (ELF class and machine,
# byte-identical to the tested .so, apxs/check-so.sh, the LoadModule line);
# dependency resolution next to each EL release's httpd of its ABI (refused
# only for what that release really lacks: an httpd older than the headers, an
# older glibc), installation into a scratch rpm root with real dependency
# resolution, refusal next to every EL release of the other httpd ABI, and
# refusal next to each EL release's httpd of its ABI built for the other arch
# (for httpd(<isa>) >= V: EL6's plain httpd-mmn does not tell the arches
# apart); loading into a real httpd when one matches. The repository
# metadata. The SRPM: its sources, the
# prebuilt Rust archives (arch, no relocations EL6's binutils 2.20 lacks), its
# tarball built with `make` and `make glibc-check` as an admin without
# packages would (x86_64, and i686 under setarch with a 32-bit APXS_I686), and
# an `rpmbuild --rebuild` with apxs and gcc only (cargo, rustc and rustup
# poisoned in both).
set -u
cd "$(dirname "$0")/.."
RPM_DIR=${RPM_DIR:-build/rpm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; failed=1; }
note() { echo "note $*"; }
CREATEREPO_C=${CREATEREPO:-createrepo_c}
version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)
# rpmlib() features EL6's rpm 4.8.0 provides (rpm --showrc there).
el6_rpmlib=" BuiltinLuaScripts CompressedFileNames ConcurrentAccess ExplicitPackageProvide FileCaps
 FileDigests HeaderLoadSortsTags PartialHardlinkSets PayloadFilesHavePrefix PayloadIsBzip2
 PayloadIsLzma PayloadIsXz ScriptletInterpreterArgs VersionedDependencies "
# glibc symbol versions, oldest first, per arch (x86_64 starts at 2.2.5).
glibc_versions() {
    local v
    if [ "$1" = x86_64 ]; then set -- 2.2.5; else set -- 2.0 2.1 2.1.1 2.1.2 2.1.3 2.2 2.2.1 2.2.2 2.2.3 2.2.4 2.2.5; fi
    for v in "$@" 2.2.6 2.3 2.3.2 2.3.3 2.3.4 2.4 2.5 2.6 2.7 2.8 2.9 2.10 2.11 2.12 2.13 2.14 2.15 \
             2.16 2.17 2.18 2.22 2.23 2.24 2.25 2.26 2.27 2.28 2.29 2.30 2.32 2.33 2.34; do
        echo "$v"
    done
}
ver_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$2" ]; }
rpmq() { rpm -qp --nosignature "$@" 2>/dev/null; }

# ---- stand-ins for the distributions' httpd and glibc ---------------------
# One httpd stand-in per EL release, carrying exactly the Provides of that
# release's httpd packages: the Provides lines of its own httpd.spec, copied
# with the macros they use (the comment on each names the spec line), plus
# what rpmbuild adds by itself, as it did for the real packages: N = V-R and
# N(x86-64) / N(x86-32) = V-R for every arch package (rpm 4.8 build/pack.c,
# addPackageProvides) and config(N) = V-R for a package with %config files
# (build/rpmfc.c). The specs:
#   el6  httpd-2.2.15-69  github.com/eurolinux-enterprise-linux-sources/httpd, branch el6, httpd.spec
#   el7  httpd-2.4.6-90   the same repository, branch el7, httpd.spec
#   el8  httpd-2.4.37-62  github.com/openela-main/httpd, branch el8-stream-2.4, SPECS/httpd.spec
#   el9  httpd-2.4.57-5   github.com/openela-main/httpd, branch el9, SPECS/httpd.spec (EL9 now
#        ships 2.4.62; the lines below are those of every EL9/Fedora httpd since 2.4.53, where
#        httpd-core was split off and took httpd-mmn with it)
# Not reproduced: EL6's rpm 4.8 also gave its httpd one "mod_<name>.so()(64bit)"
# per module it ships (build/rpmfc.c: a soname provide for every DSO; EL7's
# spec filters them, rpm >= 4.12 drops sonames not starting with "lib"). Their
# list depends on that build and nothing requires them.
# Each stand-in owns what the real one owns among the paths this package
# touches: the module and conf directories and, for 2.4, its own
# modules/mod_proxy_wstunnel.so and conf.modules.d/00-proxy.conf (so a file
# conflict with httpd would show). EL7, EL8, EL9 ship no i686 httpd: on i686
# their stand-ins are their specs built for i686, as Fedora did.
el_httpd_version() { case $1 in el6) echo 2.2.15 ;; el7) echo 2.4.6 ;; el8) echo 2.4.37 ;; el9) echo 2.4.62 ;; esac; }
el_glibc() { case $1 in el6) echo 2.12 ;; el7) echo 2.17 ;; el8) echo 2.28 ;; el9) echo 2.34 ;; esac; }
abi_els() { [ "$1" = httpd22 ] && echo el6 || echo el7 el8 el9; }
other_abi() { [ "$1" = httpd22 ] && echo httpd24 || echo httpd22; }
el_name() { echo "EL${1#el}"; }
standin_spec() { # el httpd-version libdir: the stand-in httpd.spec on stdout
    local el=$1 hv=$2 libdir=$3 m=$3/httpd/modules
    echo "Name: httpd"; echo "Version: $hv"; echo "Release: 0.wstcheck.$el"
    echo "Summary: stand-in for $(el_name "$el")'s httpd (packaging/check-rpm.sh)"
    echo "License: ASL 2.0"; echo "AutoReq: no"
    case $el in
    el6)
        echo '%define mmn 20051115'                                                             # httpd.spec:3
        echo 'Provides: webserver'                                                              # httpd.spec:182
        echo 'Provides: mod_dav = %{version}-%{release}, httpd-suexec = %{version}-%{release}'  # httpd.spec:183
        echo 'Provides: httpd-mmn = %{mmn}'                                                     # httpd.spec:184
        ;;
    el7)
        echo '%define mmn 20120211'                                                             # httpd.spec:4
        echo '%define oldmmnisa %{mmn}-%{__isa_name}-%{__isa_bits}'                             # httpd.spec:5
        echo '%define mmnisa %{mmn}%{__isa_name}%{__isa_bits}'                                  # httpd.spec:6
        echo 'Provides: webserver'                                                              # httpd.spec:235
        echo 'Provides: mod_dav = %{version}-%{release}, httpd-suexec = %{version}-%{release}'  # httpd.spec:236
        echo 'Provides: httpd-mmn = %{mmn}, httpd-mmn = %{mmnisa}, httpd-mmn = %{oldmmnisa}'    # httpd.spec:237
        ;;
    el8)
        echo '%define mmn 20120211'                                                             # SPECS/httpd.spec:4
        echo '%define mmnisa %{mmn}%{__isa_name}%{__isa_bits}'                                  # SPECS/httpd.spec:5
        echo 'Provides: webserver'                                                              # SPECS/httpd.spec:269
        echo 'Provides: mod_dav = %{version}-%{release}, httpd-suexec = %{version}-%{release}'  # SPECS/httpd.spec:270
        echo 'Provides: httpd-mmn = %{mmn}, httpd-mmn = %{mmnisa}'                              # SPECS/httpd.spec:271
        ;;
    el9)
        echo '%define mmn 20120211'                                                             # SPECS/httpd.spec:4
        echo '%define mmnisa %{mmn}%{__isa_name}%{__isa_bits}'                                  # SPECS/httpd.spec:5
        echo 'Provides: webserver'                                                              # SPECS/httpd.spec:132
        echo '%description'; echo 'Stand-in.'
        echo '%package core'; echo 'Summary: stand-in for httpd-core'                           # SPECS/httpd.spec:143
        echo 'Provides: mod_dav = %{version}-%{release}, httpd-suexec = %{version}-%{release}'  # SPECS/httpd.spec:145
        echo 'Provides: httpd-mmn = %{mmn}, httpd-mmn = %{mmnisa}'                              # SPECS/httpd.spec:146
        echo 'Provides: mod_proxy_uwsgi = %{version}-%{release}'                                # SPECS/httpd.spec:147
        echo '%description core'; echo 'Stand-in.'
        ;;
    esac
    [ $el = el9 ] || { echo '%description'; echo 'Stand-in.'; }
    # EL8 and EL9: httpd-filesystem (noarch) owns /etc/httpd and conf.d.
    case $el in el8|el9)
        echo '%package filesystem'; echo 'Summary: stand-in for httpd-filesystem'; echo 'BuildArch: noarch'
        echo '%description filesystem'; echo 'Stand-in.' ;;
    esac
    echo '%install'
    echo "mkdir -p %{buildroot}$m %{buildroot}/etc/httpd/conf.d %{buildroot}/etc/httpd/conf"
    echo "echo 'ServerRoot \"/etc/httpd\"' > %{buildroot}/etc/httpd/conf/httpd.conf"
    if [ $el != el6 ]; then
        echo "mkdir -p %{buildroot}/etc/httpd/conf.modules.d"
        echo "echo stock > %{buildroot}$m/mod_proxy_wstunnel.so"
        echo "printf 'LoadModule proxy_module modules/mod_proxy.so\nLoadModule proxy_wstunnel_module modules/mod_proxy_wstunnel.so\n' > %{buildroot}/etc/httpd/conf.modules.d/00-proxy.conf"
    fi
    [ $el = el9 ] && echo "echo 'LoadModule systemd_module modules/mod_systemd.so' > %{buildroot}/etc/httpd/conf.modules.d/00-systemd.conf"
    case $el in
    el6|el7) echo '%files'; echo '%dir /etc/httpd'; echo '%dir /etc/httpd/conf.d' ;;
    el8) echo '%files filesystem'; echo '%dir /etc/httpd'; echo '%dir /etc/httpd/conf.d'; echo '%files' ;;
    el9) echo '%files filesystem'; echo '%dir /etc/httpd'; echo '%dir /etc/httpd/conf.d'
         echo '%files'; echo '%config(noreplace) /etc/httpd/conf.modules.d/00-systemd.conf'; echo '%files core' ;;
    esac
    echo '%dir /etc/httpd/conf'; echo '%config(noreplace) /etc/httpd/conf/httpd.conf'
    echo "%dir $libdir/httpd"; echo "%dir $m"
    if [ $el != el6 ]; then
        echo '%dir /etc/httpd/conf.modules.d'; echo '%config(noreplace) /etc/httpd/conf.modules.d/00-proxy.conf'
        echo "$m/mod_proxy_wstunnel.so"
    fi
}
build_standin() { # dir arch, spec text on stdin -> paths of the built rpms
    local top=$1 arch=$2
    if ! ls "$top"/RPMS/*/*.rpm >/dev/null 2>&1; then
        mkdir -p "$top"; cat > "$top/s.spec"
        # EL7's "httpd-mmn = 20120211-x86-64" and the probes' values are
        # versions rpm >= 4.14 calls invalid (a second '-'); EL7's rpm took them.
        rpmbuild -bb --quiet --target "$arch" --define "_topdir $top" --define '_build_id_links none' \
            --define '_wrong_version_format_terminate_build 0' \
            "$top/s.spec" > "$top/log" 2>&1 || { cat "$top/log" >&2; return 1; }
    else
        cat > /dev/null
    fi
    ls "$top"/RPMS/*/*.rpm
}
fake_httpd() { # el arch [httpd-version] -> paths of the stand-in httpd rpms (one a line)
    local el=$1 arch=$2 hv=${3:-$(el_httpd_version "$1")} libdir
    [ "$arch" = x86_64 ] && libdir=/usr/lib64 || libdir=/usr/lib
    standin_spec "$el" "$hv" "$libdir" | build_standin "$tmp/httpd-$el-$arch-$hv" "$arch"
}
fake_glibc() { # el arch -> path of a glibc stand-in: libc.so.6's symbol versions up to that EL's glibc
    local el=$1 arch=$2 glibc lib64= v
    glibc=$(el_glibc "$el"); [ "$arch" = x86_64 ] && lib64='(64bit)'
    {
        echo "Name: glibc"; echo "Version: $glibc"; echo "Release: 0.wstcheck.$el"
        echo "Summary: stand-in for $(el_name "$el")'s glibc (packaging/check-rpm.sh)"; echo "License: LGPLv2+"
        echo "AutoReqProv: no"
        echo "Provides: libc.so.6()$lib64, rtld(GNU_HASH)"
        [ -z "$lib64" ] && echo "Provides: libc.so.6"
        glibc_versions "$arch" | while read -r v; do
            ver_le "$v" "$glibc" && echo "Provides: libc.so.6(GLIBC_$v)$lib64"
        done
        echo "%description"; echo "Stand-in."; echo "%files"
    } | build_standin "$tmp/glibc-$el-$arch" "$arch"
}
# What each stand-in must provide, written out by hand (V-R: its own).
standin_expected() { # el arch -> "package: provides, ..." lines
    local el=$1 isa=x86-32 bits=32
    [ "$2" = x86_64 ] && { isa=x86-64; bits=64; }
    case $el in
    el6) echo "httpd: config(httpd) = V-R, httpd = V-R, httpd($isa) = V-R, httpd-mmn = 20051115, httpd-suexec = V-R, mod_dav = V-R, webserver" ;;
    el7) echo "httpd: config(httpd) = V-R, httpd = V-R, httpd($isa) = V-R, httpd-mmn = 20120211, httpd-mmn = 20120211-x86-$bits, httpd-mmn = 20120211x86$bits, httpd-suexec = V-R, mod_dav = V-R, webserver" ;;
    el8) echo "httpd: config(httpd) = V-R, httpd = V-R, httpd($isa) = V-R, httpd-mmn = 20120211, httpd-mmn = 20120211x86$bits, httpd-suexec = V-R, mod_dav = V-R, webserver"
         echo "httpd-filesystem: httpd-filesystem = V-R" ;;
    el9) echo "httpd: config(httpd) = V-R, httpd = V-R, httpd($isa) = V-R, webserver"
         echo "httpd-core: config(httpd-core) = V-R, httpd-core = V-R, httpd-core($isa) = V-R, httpd-mmn = 20120211, httpd-mmn = 20120211x86$bits, httpd-suexec = V-R, mod_dav = V-R, mod_proxy_uwsgi = V-R"
         echo "httpd-filesystem: httpd-filesystem = V-R" ;;
    esac
}
probe_rpm() { # arch httpd-mmn-value -> a package that requires only that
    local arch=$1 val=$2
    printf 'Name: wst-probe\nVersion: 1\nRelease: 1\nSummary: probe\nLicense: MIT\nAutoReqProv: no\nRequires: httpd-mmn = %s\n%%description\nprobe\n%%files\n' "$val" \
        | build_standin "$tmp/probe-$arch-$val" "$arch"
}
new_root() { # dir -> an empty rpm database there
    rm -rf "$1"; mkdir -p "$1"
    rpm --root "$1" --dbpath /var/lib/rpm --initdb
}
# Debian's rpm warns "use Alien instead" on installs unless told it is meant.
rpm_deb=$(rpm --help 2>/dev/null | grep -q -- --force-debian && echo --force-debian)
rpmr() { local r=$1; shift; rpm --root "$r" --dbpath /var/lib/rpm --nosignature $rpm_deb "$@"; }

# ---- httpd -t with the packaged module and conf file ------------------------
load_test() { # label abi arch path-of-.so path-of-conf-file
    local label=$1 abi=$2 arch=$3 so=$4 conf=$5 sofile=${4##*/} httpd apxs libexec mmn t out h tried=
    if [ "$arch" = x86_64 ]; then httpd=${HTTPD:-}; apxs=${APXS:-apxs}
    else httpd=${HTTPD_I686:-build/i386-root/wst-httpd}; apxs=${APXS_I686:-build/i386-root/wst-apxs}; fi
    # HTTPD first, then the httpd of that arch's apxs (SBINDIR/TARGET): make
    # rpm-check passes the Debian apache2 as HTTPD even when APXS names
    # another httpd (an EL6 2.2.15 tree, say).
    for h in "$httpd" "$("$apxs" -q SBINDIR 2>/dev/null)/$("$apxs" -q TARGET 2>/dev/null)"; do
        [ -n "$h" ] && [ "$h" != / ] && [ -x "$h" ] && [ -f "$h" ] || continue
        mmn=$("$h" -V 2>/dev/null | sed -n 's/.*Module Magic Number: *\([0-9]*\).*/\1/p')
        case $abi:$mmn in
            httpd22:20051115|httpd24:20120211) httpd=$h; tried=; break ;;
            *) tried="$tried, $h (MMN ${mmn:-?})"; httpd= ;;
        esac
    done
    if [ -n "$tried" ]; then
        note "$label: ${tried#, }: not the package's httpd ABI; load test skipped"; return
    elif [ -z "$httpd" ] || [ ! -x "$httpd" ]; then
        note "$label: no $arch httpd to load it into ($([ "$arch" = x86_64 ] && echo HTTPD || echo HTTPD_I686) unset)"; return
    fi
    libexec=$("$apxs" -q LIBEXECDIR 2>/dev/null)
    [ -f "$libexec/mod_proxy.so" ] || { note "$label: no mod_proxy.so in '$libexec' ($apxs); load test skipped"; return; }
    t=$tmp/load-$abi-$arch; rm -rf "$t"; mkdir -p "$t/modules" "$t/conf.d" "$t/conf.modules.d" "$t/logs"
    ln -s "$libexec/mod_proxy.so" "$t/modules/mod_proxy.so"
    cp "$so" "$t/modules/"
    {
        echo "ServerRoot \"$t\""; echo "ServerName localhost"; echo "Listen 127.0.0.1:9"
        echo "PidFile $t/logs/httpd.pid"; echo "ErrorLog $t/logs/error_log"
        for m in mpm_prefork; do [ -f "$libexec/mod_$m.so" ] && echo "LoadModule ${m}_module $libexec/mod_$m.so"; done
        if [ "$abi" = httpd24 ]; then
            # EL7+'s layout: httpd's own 00-proxy.conf loads mod_proxy and the stock module.
            ln -s "$libexec/mod_proxy_wstunnel.so" "$t/modules/mod_proxy_wstunnel.so"
            printf 'LoadModule proxy_module modules/mod_proxy.so\nLoadModule proxy_wstunnel_module modules/mod_proxy_wstunnel.so\n' \
                > "$t/conf.modules.d/00-proxy.conf"
            cp "$conf" "$t/conf.modules.d/"
            echo "Include conf.modules.d/*.conf"
        else
            # EL6's httpd.conf: LoadModule lines, then conf.d/*.conf.
            echo "LoadModule proxy_module modules/mod_proxy.so"
            cp "$conf" "$t/conf.d/"
            echo "Include conf.d/*.conf"
        fi
        # A directive only this module knows: proves which module was loaded.
        echo "ProxyWebsocketAllowOrigin same"
        echo "ProxyPass /ws/ ws://127.0.0.1:9/"
    } > "$t/httpd.conf"
    out=$("$httpd" -t -d "$t" -f "$t/httpd.conf" 2>&1)
    if echo "$out" | grep -q 'Syntax OK'; then
        ok "$label: $(basename "$conf") loads $sofile into $("$httpd" -v | sed -n 's/Server version: //p') ($arch); ProxyWebsocketAllowOrigin accepted"
    else
        bad "$label: httpd -t with $(basename "$conf"): $(echo "$out" | head -3)"
        return
    fi
    if [ "$abi" = httpd24 ]; then
        if echo "$out" | grep -q 'proxy_wstunnel_module is already loaded'; then
            ok "$label: it loads ahead of httpd's stock mod_proxy_wstunnel.so (whose 00-proxy.conf line is skipped)"
        else
            bad "$label: no 'already loaded' notice for the stock module: which one is loaded? $(echo "$out" | head -3)"
        fi
    fi
}

# ---- one binary RPM -----------------------------------------------------
check_binary() { # pkg expected-arch built-so(optional) label
    local pkg arch=$2 built=$3 label=$4 x=$tmp/x-$RANDOM q name ver rel parch lic pc reqs
    pkg=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
    local info mmn mmnisa abi cookie bits isa moddir sofile confdir conffile files f bad_rpmlib r hv want_mmn why hreq
    q=$(rpmq --qf '%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}|%{PAYLOADCOMPRESSOR}|%{URL}|%{SUMMARY}' "$pkg")
    IFS='|' read -r name ver rel parch lic pc url summary <<< "$q"
    [ "$name" = mod_proxy_wstunnel ] && [ "$ver" = "$version" ] && [ "$parch" = "$arch" ] \
        && ok "$label: $name-$ver-$rel.$parch (Cargo.toml version, $arch)" \
        || bad "$label: name/version/arch '$name' '$ver' '$parch', expected mod_proxy_wstunnel $version $arch"
    [ "$lic" = Apache-2.0 ] && [ -n "$url" ] && [ -n "$summary" ] \
        && ok "$label: License $lic, URL and Summary set" || bad "$label: License '$lic' URL '$url' Summary '$summary'"
    [ "$pc" = gzip ] && ok "$label: gzip payload (EL6's rpm 4.8 reads it)" || bad "$label: payload compressor '$pc', EL6 wants gzip"

    # Payload first: the ABI comes from the module record of the .so inside.
    mkdir -p "$x"
    (cd "$x" && rpm2cpio "$pkg" | cpio -idm --quiet 2>/dev/null) || { bad "$label: rpm2cpio | cpio failed"; return; }
    [ "$arch" = x86_64 ] && moddir=/usr/lib64/httpd/modules || moddir=/usr/lib/httpd/modules
    so=$(ls "$x$moddir"/*.so 2>/dev/null | head -1)
    [ -n "$so" ] || { bad "$label: no .so under $moddir in the payload"; return; }
    if ! info=$(sh packaging/so-abi.sh "$so" 2>&1); then bad "$label: $info"; return; fi
    eval "$info"
    if [ "$abi" = httpd22 ]; then sofile=mod_proxy_wstunnel.so; confdir=/etc/httpd/conf.d; conffile=proxy_wstunnel.conf
    else sofile=mod_proxy_wstunnel_rs.so; confdir=/etc/httpd/conf.modules.d; conffile=00-proxy-wstunnel-rs.conf; fi
    ok "$label: payload module record: MMN $mmn:$minor, cookie $cookie ($abi)"
    case $rel in
        [0-9]*.$abi|[0-9]*.$abi.*) ok "$label: Release $rel names the httpd ABI" ;;
        *) bad "$label: Release $rel does not say $abi" ;;
    esac

    # File list.
    files=$(rpmq -l "$pkg" | grep -v '^/usr/share/doc/')
    local want="$confdir/$conffile
$moddir/$sofile"
    [ "$files" = "$want" ] && ok "$label: files $(echo $files)" \
        || bad "$label: files are '$(echo $files)', expected '$(echo $want)'"
    rpmq -c "$pkg" | grep -qx "$confdir/$conffile" && ok "$label: $conffile is %config" \
        || bad "$label: $conffile is not marked %config"
    local ft; ft=$(file -b "$x$moddir/$sofile")
    if [ "$arch" = x86_64 ]; then
        echo "$ft" | grep -q '^ELF 64-bit LSB shared object, x86-64' && ok "$label: $sofile is ELF 64-bit x86-64" \
            || bad "$label: $sofile is '$ft'"
    else
        echo "$ft" | grep -Eq '^ELF 32-bit LSB shared object, Intel (80386|i386)' && ok "$label: $sofile is ELF 32-bit Intel 80386" \
            || bad "$label: $sofile is '$ft'"
    fi
    if [ -n "$built" ] && [ -f "$built" ]; then
        cmp -s "$built" "$x$moddir/$sofile" && ok "$label: payload is byte-identical to $built" \
            || bad "$label: payload differs from $built (stale package? make rpm)"
    fi
    # check-so.sh's glibc <= 2.12 rule is EL6's: for an httpd 2.4 package
    # (built on EL7+ from the SRPM, say) a newer glibc symbol is a note.
    if [ "$abi" = httpd24 ]; then
        sh apxs/check-so.sh "$x$moddir/$sofile" | sed -e "s|$x||" -e 's/^FAIL \(.* needs GLIBC_.*\)/note \1 (an EL6-only rule)/'
    else
        sh apxs/check-so.sh "$x$moddir/$sofile" | sed "s|$x||"
    fi
    grep -Eq "^[[:space:]]*LoadModule[[:space:]]+proxy_wstunnel_module[[:space:]]+modules/$sofile[[:space:]]*$" "$x$confdir/$conffile" \
        && ok "$label: $conffile has 'LoadModule proxy_wstunnel_module modules/$sofile'" \
        || bad "$label: $conffile lacks the LoadModule line for modules/$sofile"

    # Requires.
    reqs=$(rpmq --requires "$pkg")
    [ "$(echo "$reqs" | grep '^httpd ')" = 'httpd >= 2.2.15' ] && ok "$label: Requires httpd >= 2.2.15 (the only plain httpd requirement)" \
        || bad "$label: plain httpd requirements '$(echo "$reqs" | grep '^httpd ' | paste -sd, )', expected only 'httpd >= 2.2.15'"
    # httpd(x86-64) / httpd(x86-32) >= the headers' version: rpmbuild gives
    # every arch package that Provides (EL6's rpm 4.8 too), so this pins the
    # module to an httpd of its own arch, which EL6's plain httpd-mmn cannot.
    [ "$arch" = x86_64 ] && isa=x86-64 || isa=x86-32
    hreq=$(echo "$reqs" | grep '^httpd(')
    hv=$(echo "$hreq" | sed -n "s/^httpd($isa) >= \([0-9][0-9.]*\)\$/\1/p")
    if [ -n "$hv" ] && [ "$hreq" = "httpd($isa) >= $hv" ] && ver_le 2.2.15 "$hv" \
        && case $abi:$hv in httpd22:2.2.*|httpd24:2.4.*) true ;; *) false ;; esac; then
        ok "$label: Requires httpd($isa) >= $hv (an httpd of its own arch, at least the version of its headers)"
    else
        bad "$label: arch-qualified httpd requirement is '$(echo $hreq)', expected one 'httpd($isa) >= <the $abi headers' version>'"
    fi
    # The httpd-mmn value Red Hat's httpd really provides for the .so's ABI:
    # EL6 the plain MMN, EL7/EL8/EL9 their %{mmnisa} (MMN, x86, 64 or 32).
    if [ "$abi" = httpd22 ]; then want_mmn=$mmn; why="what EL6's httpd provides, plain"
    else want_mmn=${mmn}x86$bits; why="the %{mmnisa} EL7, EL8 and EL9's httpd provide"; fi
    echo "$reqs" | grep -qx "httpd-mmn = $want_mmn" && ok "$label: Requires httpd-mmn = $want_mmn ($why)" \
        || bad "$label: Requires $(echo "$reqs" | grep httpd-mmn | tr '\n' ' ')but a $abi module needs httpd-mmn = $want_mmn ($why)"
    [ "$(echo "$reqs" | grep -c '^httpd-mmn')" = 1 ] || bad "$label: more than one httpd-mmn requirement"
    bad_rpmlib=
    for r in $(echo "$reqs" | sed -n 's/^rpmlib(\([^)]*\)).*/\1/p'); do
        case $el6_rpmlib in *" $r "*) ;; *) bad_rpmlib="$bad_rpmlib $r" ;; esac
    done
    [ -z "$bad_rpmlib" ] && ok "$label: rpmlib features all known to EL6's rpm 4.8 ($(echo "$reqs" | sed -n 's/^rpmlib(\([^)]*\)).*/\1/p' | tr '\n' ' '))" \
        || bad "$label: needs rpmlib features EL6's rpm 4.8 lacks:$bad_rpmlib"
    local others; others=$(echo "$reqs" | grep -v -E "^(httpd( |-mmn |\\($isa\\) )|rpmlib\\(|libc\\.so\\.6|rtld\\(GNU_HASH\\)|config\\(mod_proxy_wstunnel\\) )" || true)
    [ -z "$others" ] && ok "$label: no other requirements (glibc, rtld(GNU_HASH), its own config())" \
        || bad "$label: unexpected requirements: $(echo $others)"
    if [ "$abi" = httpd22 ]; then
        local top; top=$(echo "$reqs" | sed -n 's/^libc\.so\.6(GLIBC_\([0-9.]*\)).*/\1/p' | sort -V | tail -1)
        ver_le "${top:-2.0}" 2.12 && ok "$label: glibc requirements <= GLIBC_2.12 (EL6)" || bad "$label: requires GLIBC_$top, EL6 has 2.12"
    fi
    hv=${hv:-2.2.15}
    # Built against 2.4.N headers, the module may use what 2.4.N added.
    [ "$abi" = httpd24 ] && ! ver_le "$hv" 2.4.62 \
        && note "$label: requires httpd($isa) >= $hv (its headers); EL9 ships 2.4.62, EL8 2.4.37, EL7 2.4.6: there, rebuild the SRPM"

    # Next to each EL release's httpd of its ABI (the stand-ins, with their
    # real Provides): httpd-mmn must resolve, and rpm may refuse it only for
    # what that release really lacks (an httpd older than the headers, an
    # older glibc), as yum there would.
    local el ev fake glibc other r0 out unmet u v extra newest fv
    r0=$tmp/root-$RANDOM
    for el in $(abi_els "$abi"); do
        ev=$(el_httpd_version "$el")
        fake=$(fake_httpd "$el" "$arch") && glibc=$(fake_glibc "$el" "$arch") \
            || { bad "$label: could not build the $(el_name "$el") stand-ins"; continue; }
        new_root "$r0"
        if ! out=$(rpmr "$r0" -i $glibc $fake 2>&1); then bad "$label: $(el_name "$el") stand-ins did not install: $out"; continue; fi
        if out=$(rpmr "$r0" -i --test "$pkg" 2>&1); then
            ok "$label: installs next to $(el_name "$el")'s httpd $ev and glibc $(el_glibc "$el") (stand-ins): httpd-mmn = $want_mmn resolves"
            continue
        fi
        unmet=$(echo "$out" | sed -n 's/^[[:space:]]*\(.*\) is needed by .*/\1/p')
        extra=
        while read -r u; do
            case $u in
                "httpd >= "*|"httpd($isa) >= "*) ver_le "${u#* >= }" "$ev" && extra="$extra, $u" ;;
                "libc.so.6(GLIBC_"*) v=${u#*GLIBC_}; v=${v%%)*}; ver_le "$v" "$(el_glibc "$el")" && extra="$extra, $u" ;;
                *) extra="$extra, $u" ;;
            esac
        done <<< "$unmet"
        if [ -n "$unmet" ] && [ -z "$extra" ]; then
            ok "$label: refused next to $(el_name "$el")'s httpd $ev, as yum there would, only for $(echo "$unmet" | paste -sd, | sed 's/,/, /g'); httpd-mmn = $want_mmn resolves"
        else
            bad "$label: next to $(el_name "$el")'s httpd $ev (stand-in): unmet ${extra#, }: $(echo $out | head -c 300)"
        fi
    done

    # Install into a scratch root, with dependencies, next to the newest EL
    # release's httpd of its ABI, at the version the package needs if newer.
    newest=$(abi_els "$abi"); newest=${newest##* }
    fv=$(el_httpd_version "$newest"); ver_le "$hv" "$fv" || fv=$hv
    fake=$(fake_httpd "$newest" "$arch" "$fv") && glibc=$(fake_glibc "$newest" "$arch") \
        || { bad "$label: could not build the stand-in httpd"; return; }
    new_root "$r0"
    if ! out=$(rpmr "$r0" -i $glibc $fake 2>&1); then bad "$label: stand-in httpd did not install: $out"; return; fi
    if out=$(rpmr "$r0" -i "$pkg" 2>&1); then
        ok "$label: installs into a scratch root next to $(el_name "$newest")'s $(rpmr "$r0" -qa --qf '%{NAME}\n' 'httpd*' | sort | paste -sd' ') (stand-ins at $fv) (httpd-mmn, glibc sonames resolved, no --nodeps, no file conflict)"
    else
        bad "$label: rpm -i next to the stand-in httpd: $(echo $out | head -c 400)"; return
    fi
    cmp -s "$r0$moddir/$sofile" "$x$moddir/$sofile" && [ -f "$r0$confdir/$conffile" ] \
        && ok "$label: $moddir/$sofile and $confdir/$conffile in place" || bad "$label: installed files missing"
    if [ "$abi" = httpd24 ]; then
        [ "$(cat "$r0$moddir/mod_proxy_wstunnel.so")" = stock ] && ok "$label: httpd's own modules/mod_proxy_wstunnel.so untouched" \
            || bad "$label: httpd's own mod_proxy_wstunnel.so was changed"
    fi
    out=$(rpmr "$r0" -V mod_proxy_wstunnel 2>&1) && ok "$label: rpm -V clean" || bad "$label: rpm -V: $out"
    out=$(rpmr "$r0" -e mod_proxy_wstunnel 2>&1) && [ ! -e "$r0$moddir/$sofile" ] && [ ! -e "$r0$confdir/$conffile" ] \
        && ok "$label: rpm -e removes it" || bad "$label: rpm -e: $out"
    # ... and refused, for httpd-mmn, next to every EL release of the other ABI.
    for el in $(abi_els "$(other_abi "$abi")"); do
        ev=$(el_httpd_version "$el")
        other=$(fake_httpd "$el" "$arch") && glibc=$(fake_glibc "$el" "$arch") \
            || { bad "$label: could not build the $(el_name "$el") stand-ins"; continue; }
        new_root "$r0"; rpmr "$r0" -i $glibc $other >/dev/null 2>&1
        if out=$(rpmr "$r0" -i --test "$pkg" 2>&1); then
            bad "$label: installs next to $(el_name "$el")'s httpd $ev (the other ABI): the httpd-mmn requirement does not gate it"
        elif echo "$out" | grep -q "httpd-mmn = $want_mmn is needed"; then
            ok "$label: refused next to $(el_name "$el")'s httpd $ev (the other ABI): it provides no httpd-mmn = $want_mmn"
        else
            bad "$label: refused next to $(el_name "$el")'s httpd $ev, but not for httpd-mmn: $(echo $out | head -c 300)"
        fi
    done
    # ... and refused next to each EL release's httpd of its ABI built for the
    # other arch (an i686 module next to an x86_64 httpd, and the reverse),
    # for httpd(<its isa>) >= V: EL6's plain httpd-mmn = 20051115 would let it
    # in. Stand-ins at the version it needs and glibc of its own arch, so the
    # arch is all that differs from a control root (its own arch's httpd)
    # that must take it.
    local oarch want_unmet own E
    [ "$arch" = x86_64 ] && oarch=i686 || oarch=x86_64
    want_unmet="httpd($isa) >= $hv"
    [ "$abi" = httpd24 ] && want_unmet=$(printf '%s\nhttpd-mmn = %s' "$want_unmet" "$want_mmn" | LC_ALL=C sort)
    for el in $(abi_els "$abi"); do
        E=$(el_name "$el"); fv=$(el_httpd_version "$el"); ver_le "$hv" "$fv" || fv=$hv
        own=$(fake_httpd "$el" "$arch" "$fv") && other=$(fake_httpd "$el" "$oarch" "$fv") && glibc=$(fake_glibc "$newest" "$arch") \
            || { bad "$label: could not build the $E stand-ins for the arch check"; continue; }
        new_root "$r0"
        if ! out=$(rpmr "$r0" -i $glibc $own 2>&1) || ! out=$(rpmr "$r0" -i --test "$pkg" 2>&1); then
            bad "$label: control for the arch check: not installable next to $E's $arch httpd $fv: $(echo $out | head -c 300)"; continue
        fi
        new_root "$r0"
        if ! out=$(rpmr "$r0" -i $glibc $other 2>&1); then bad "$label: $E's $oarch stand-in httpd did not install: $(echo $out | head -c 300)"; continue; fi
        if out=$(rpmr "$r0" -i --test "$pkg" 2>&1); then
            bad "$label: installs next to $E's $oarch httpd $fv: nothing ties it to an httpd of its own arch"
            continue
        fi
        unmet=$(echo "$out" | sed -n 's/^[[:space:]]*\(.*\) is needed by .*/\1/p' | LC_ALL=C sort)
        if [ "$unmet" = "$want_unmet" ]; then
            ok "$label: refused next to $E's $oarch httpd $fv (stand-in; it provides httpd($([ $oarch = x86_64 ] && echo x86-64 || echo x86-32)), not httpd($isa)) for $(echo "$unmet" | paste -sd, | sed 's/,/, /g'); next to the $arch one it installs"
        else
            bad "$label: next to $E's $oarch httpd $fv: unmet '$(echo "$unmet" | paste -sd, )', expected '$(echo "$want_unmet" | paste -sd, )': $(echo $out | head -c 300)"
        fi
    done
    rm -rf "$r0"
    load_test "$label" "$abi" "$arch" "$x$moddir/$sofile" "$x$confdir/$conffile"
}

[ -d "$RPM_DIR" ] || { bad "$RPM_DIR does not exist: run make rpm"; exit 1; }
arches=${RPM_ARCHES:-$(for a in x86_64 i686; do [ -d "$RPM_DIR/$a" ] && echo $a; done)}

# ---- the stand-ins ----------------------------------------------------------
# Each provides exactly what standin_expected says (what the real packages
# provide), and rpm resolves httpd-mmn against it as yum on that release
# would: a probe package requiring "httpd-mmn = X" installs where the release
# provides exactly X and nowhere else (so 20051115-x86-64, which no EL6 httpd
# provides, is refused next to EL6's). Both arches, whatever was packaged:
# every binary RPM is also tried next to the other arch's httpd, whose
# httpd(x86-64) / httpd(x86-32) Provides are checked here too.
for arch in x86_64 i686; do
    bits=32; [ "$arch" = x86_64 ] && bits=64
    for el in el6 el7 el8 el9; do
        E=$(el_name "$el")
        if ! f=$(fake_httpd "$el" "$arch") || ! g=$(fake_glibc "$el" "$arch"); then
            bad "stand-in $E httpd ($arch) did not build"; continue
        fi
        while IFS= read -r line; do
            name=${line%%: *}; want=$(echo "${line#*: }" | sed 's/, /\n/g' | LC_ALL=C sort | paste -sd, | sed 's/,/, /g')
            p=; for x in $f; do [ "$(rpmq --qf '%{NAME}' "$x")" = "$name" ] && p=$x; done
            [ -n "$p" ] || { bad "stand-in $E ($arch): no $name package"; continue; }
            vr=$(rpmq --qf '%{VERSION}-%{RELEASE}' "$p")
            got=$(rpmq --provides "$p" | sed "s/ = $vr\$/ = V-R/" | LC_ALL=C sort | paste -sd, | sed 's/,/, /g')
            [ "$got" = "$want" ] && ok "stand-in $E $(basename "$p" .rpm) provides exactly: $got" \
                || bad "stand-in $E $(basename "$p" .rpm) provides '$got', the real one '$want'"
        done < <(standin_expected "$el" "$arch")
        r0=$tmp/probe-root; new_root "$r0"; rpmr "$r0" -i $g $f >/dev/null 2>&1 || { bad "stand-in $E ($arch) did not install"; continue; }
        yes= no= wrong=
        for val in 20051115 20051115-x86-$bits 20120211 20120211x86$bits 20120211-x86-$bits; do
            pr=$(probe_rpm "$arch" "$val") || { bad "probe for httpd-mmn = $val did not build"; continue; }
            if rpmr "$r0" -i --test "$pr" >/dev/null 2>&1; then got=yes; yes="$yes, $val"; else got=no; no="$no, $val"; fi
            standin_expected "$el" "$arch" | grep -q "httpd-mmn = $val\(,\|$\)" && w=yes || w=no
            [ $got = $w ] || wrong="$wrong httpd-mmn = $val (resolves: $got, provided: $w)"
        done
        [ -z "$wrong" ] && ok "stand-in $E ($arch): rpm resolves httpd-mmn = ${yes#, } and refuses ${no#, }" \
            || bad "stand-in $E ($arch): rpm's resolution disagrees with the Provides:$wrong"
    done
done
rm -rf "$tmp/probe-root"

# ---- the binary RPMs ------------------------------------------------------
for arch in $arches; do
    pkgs=$(ls "$RPM_DIR/$arch"/*.rpm 2>/dev/null)
    [ "$(echo "$pkgs" | grep -c .)" = 1 ] || { bad "$RPM_DIR/$arch: expected one RPM, found '$(echo $pkgs)'"; continue; }
    [ $arch = x86_64 ] && built=${SO:-} || built=${I686_SO:-}
    check_binary "$pkgs" "$arch" "$built" "$(basename "$pkgs")"
done

# ---- the repository -------------------------------------------------------
repo=$RPM_DIR/repo
if [ -f "$repo/repodata/repomd.xml" ]; then
    ok "repo: $repo/repodata/repomd.xml"
    locs=$(sed -n 's/.*<location href="\([^"]*\)".*/\1/p' "$repo/repodata/repomd.xml")
    for t in primary filelists other; do
        grep -q "<data type=\"$t\">" "$repo/repodata/repomd.xml" || bad "repo: repomd.xml has no $t"
    done
    if echo "$locs" | grep -Ev '\.(gz|bz2)$' | grep -q .; then
        bad "repo: metadata compressed other than gzip/bzip2 (EL6's yum): $(echo $locs)"
    else
        ok "repo: metadata is gzip XML and bzip2 sqlite ($(echo "$locs" | wc -l) files), as EL6's yum reads"
    fi
    grep -q '<checksum type="sha256">' "$repo/repodata/repomd.xml" && ok "repo: sha256 checksums" || bad "repo: not sha256"
    primary=$repo/$(echo "$locs" | grep 'primary.xml.gz$')
    n=$(zcat "$primary" | sed -n 's/.*<metadata[^>]* packages="\([0-9]*\)".*/\1/p')
    want=0
    for arch in $arches; do
        for p in "$RPM_DIR/$arch"/*.rpm; do
            want=$((want + 1)); f=$(basename "$p")
            if zcat "$primary" | grep -q "<location href=\"Packages/$f\"/>" && cmp -s "$p" "$repo/Packages/$f"; then
                ok "repo: primary lists Packages/$f"
            else
                bad "repo: primary does not list Packages/$f (or the copy differs)"
            fi
        done
    done
    [ "$n" = "$want" ] && ok "repo: $n packages in primary.xml" || bad "repo: primary.xml has '$n' packages, expected $want"
    zcat "$primary" | grep -q 'name="httpd-mmn"' && ok "repo: primary carries the httpd-mmn requirement (yum resolves it)" \
        || bad "repo: no httpd-mmn requirement in primary.xml"
else
    bad "repo: no $repo/repodata/repomd.xml"
fi

# ---- yum-style install from the repository (dnf reads the same metadata) ----
# The example .repo file, its baseurl pointed at the repository, plus a
# repository holding the stand-ins (httpd packages and glibc): `dnf install
# mod_proxy_wstunnel` must pull them next to the newest EL release's httpd of
# its ABI (at the version it needs), and fail for httpd-mmn next to each EL
# release of the other ABI.
if [ -f "$repo/repodata/repomd.xml" ] && command -v dnf >/dev/null; then
    for arch in $arches; do
        p=$(ls "$RPM_DIR/$arch"/*.rpm 2>/dev/null | head -1); [ -n "$p" ] || continue
        rel=$(rpmq --qf '%{RELEASE}' "$p"); abi=${rel#1.}; abi=${abi%%.*}
        hv=$(rpmq --requires "$p" | sed -n 's/^httpd(x86-[0-9]*) >= //p' | sort -V | tail -1)
        pm=$(rpmq --requires "$p" | sed -n 's/^httpd-mmn = //p')
        newest=$(abi_els "$abi"); newest=${newest##* }
        fv=$(el_httpd_version "$newest"); ver_le "$hv" "$fv" || fv=$hv
        for case_ in "ok:$newest:$fv" $(for el in $(abi_els "$(other_abi "$abi")"); do echo "refused:$el:$(el_httpd_version "$el")"; done); do
            set -- ${case_//:/ }; want=$1 el=$2 v=$3; E=$(el_name "$el")
            f=$(fake_httpd "$el" "$arch" "$v") && g=$(fake_glibc "$el" "$arch") || { bad "dnf: no $E stand-ins"; continue; }
            d=$tmp/dnf-$arch-$want-$el; rm -rf "$d"; mkdir -p "$d/repos" "$d/standin" "$d/root"
            cp $f $g "$d/standin/" && $CREATEREPO_C -q "$d/standin"
            sed "s|^baseurl=file:.*|baseurl=file://$(cd "$repo" && pwd)/|" packaging/mod_proxy_wstunnel.repo > "$d/repos/wst.repo"
            printf '[stand-in]\nname=stand-in httpd\nbaseurl=file://%s/standin/\ngpgcheck=0\n' "$d" >> "$d/repos/wst.repo"
            out=$(dnf -y -q --installroot="$d/root" --releasever="${el#el}" --forcearch="$arch" --setopt=reposdir="$d/repos" \
                  --setopt=cachedir="$d/cache" --setopt=install_weak_deps=0 install mod_proxy_wstunnel 2>&1)
            rc=$?
            if [ $want = ok ]; then
                if [ $rc = 0 ] && ls "$d/root"/usr/lib*/httpd/modules/mod_proxy_wstunnel*.so >/dev/null 2>&1; then
                    ok "dnf ($arch): 'dnf install mod_proxy_wstunnel' from packaging/mod_proxy_wstunnel.repo pulls $(basename "$p") and $E's $(rpm --root "$d/root" -qa --qf '%{NAME}\n' 'httpd*' 2>/dev/null | sort | paste -sd' ') (stand-ins at $fv, the version it needs)"
                else
                    bad "dnf ($arch): install from the repository failed: $(echo $out | head -c 400)"
                fi
            elif [ $rc != 0 ] && echo "$out" | grep -q "httpd-mmn = $pm"; then
                ok "dnf ($arch): refuses it when only $E's httpd $v (the other ABI) is available: nothing provides httpd-mmn = $pm"
            else
                bad "dnf ($arch): next to $E's httpd $v: rc=$rc $(echo $out | head -c 300)"
            fi
        done
    done
else
    note "dnf not installed (apt-get install dnf): install from the repository with yum/dnf not tested"
fi

# ---- the source RPM -------------------------------------------------------
# cargo, rustc and rustup that record being called and fail.
nr=$tmp/norust; mkdir -p "$nr"
for t in cargo rustc rustup; do
    printf '#!/bin/sh\necho "%s called" >> %s/called\nexit 1\n' "$t" "$nr" > "$nr/$t"; chmod +x "$nr/$t"
done
# The release tarball built as a CentOS 6 admin without packages would: in
# the unpacked directory, `make APXS=<apxs>` then `make glibc-check
# APXS=<apxs>`, with a clean environment (no MAKEFLAGS or variables from this
# make) and cargo, rustc and rustup poisoned. The Makefile has no src/ there,
# so it must link the prebuilt core/<uname -m>/libwstunnel_core.a. i686 runs
# under `setarch i686`, so uname -m says what an i686 box says.
tarball_make() { # label unpacked-dir apxs arch
    local label="$1: tarball ($4)" src=$2 apxs=$3 arch=$4 run= tb out rc so ft glog nok fails
    local mmn minor cookie bits isa mmnisa abi info
    [ "$arch" = i686 ] && run="setarch i686"
    tb=$tmp/tarball-$arch; rm -rf "$tb" "$nr/called"; cp -a "$src" "$tb"
    out=$(cd "$tb" && $run env -i PATH="$nr:$PATH" HOME="$tmp" LC_ALL=C make APXS="$apxs" 2>&1); rc=$?
    so=$tb/build/mod_proxy_wstunnel.so
    if [ -e "$nr/called" ]; then
        bad "$label: 'make APXS=$apxs' called Rust: $(sort -u "$nr/called" | paste -sd, | sed 's/,/, /g')"; return
    fi
    if [ $rc != 0 ] || [ ! -f "$so" ]; then
        bad "$label: 'make APXS=$apxs' built nothing (exit $rc): $(echo "$out" | tail -5 | tr '\n' ' ' | head -c 400)"; return
    fi
    ft=$(file -b "$so")
    case $arch:$ft in
        "x86_64:ELF 64-bit LSB shared object, x86-64"*|"i686:ELF 32-bit LSB shared object, Intel 80386"*|"i686:ELF 32-bit LSB shared object, Intel i386"*) ;;
        *) bad "$label: build/mod_proxy_wstunnel.so is '$ft'"; return ;;
    esac
    if ! echo "$out" | grep -q "core/$arch/libwstunnel_core\.a"; then
        bad "$label: 'make APXS=$apxs' did not link the prebuilt core/$arch/libwstunnel_core.a"; return
    fi
    info=$(sh packaging/so-abi.sh "$so" 2>&1) && eval "$info" || { bad "$label: $info"; return; }
    ok "$label: 'make APXS=$apxs' with cargo, rustc, rustup poisoned and a clean environment -> build/mod_proxy_wstunnel.so ($abi, MMN $mmn:$minor, $(echo "$ft" | cut -d, -f1-2)) from core/$arch/libwstunnel_core.a"
    glog=$(cd "$tb" && $run env -i PATH="$nr:$PATH" HOME="$tmp" LC_ALL=C make glibc-check APXS="$apxs" 2>&1); rc=$?
    # check-so.sh's glibc <= 2.12 rule is EL6's (as for the packages above).
    [ "$abi" = httpd24 ] && glog=$(echo "$glog" | sed 's/^FAIL \(.* needs GLIBC_.*\)/note \1 (an EL6-only rule)/')
    nok=$(echo "$glog" | grep -c '^ok   '); fails=$(echo "$glog" | grep '^FAIL ')
    if [ -e "$nr/called" ]; then
        bad "$label: 'make glibc-check' called Rust: $(sort -u "$nr/called" | paste -sd, | sed 's/,/, /g')"
    elif [ -n "$fails" ]; then
        echo "$fails" | sed "s|$tb/||; s/^FAIL /FAIL $label: /"; failed=1
    elif [ "$rc" != 0 ] || [ "$nok" = 0 ]; then
        bad "$label: 'make glibc-check APXS=$apxs' (exit $rc, $nok ok lines): $(echo "$glog" | tail -5 | tr '\n' ' ' | head -c 400)"
    else
        ok "$label: 'make glibc-check APXS=$apxs': $nok ok lines from check-so.sh and check-api.sh, no FAIL$(echo "$glog" | grep -q '^note ' && echo " ($(echo "$glog" | grep -c '^note ') notes)")"
    fi
    rm -rf "$tb"
}

srpms=$(ls "$RPM_DIR"/SRPMS/*.src.rpm 2>/dev/null)
if [ "$(echo "$srpms" | grep -c .)" != 1 ]; then
    bad "SRPMS: expected one source RPM in $RPM_DIR/SRPMS, found '$(echo $srpms)'"
else
    s=$(cd "$(dirname "$srpms")" && pwd)/$(basename "$srpms"); label=$(basename "$s")
    [ "$label" = "mod_proxy_wstunnel-$version-1.src.rpm" ] && ok "$label: named for no particular httpd" || bad "$label: expected mod_proxy_wstunnel-$version-1.src.rpm"
    [ "$(rpmq --qf '%{PAYLOADCOMPRESSOR}' "$s")" = gzip ] && ok "$label: gzip payload" || bad "$label: payload not gzip"
    reqs=$(rpmq --requires "$s")
    bad_rpmlib=
    for r in $(echo "$reqs" | sed -n 's/^rpmlib(\([^)]*\)).*/\1/p'); do
        case $el6_rpmlib in *" $r "*) ;; *) bad_rpmlib="$bad_rpmlib $r" ;; esac
    done
    [ -z "$bad_rpmlib" ] && ok "$label: rpmlib features all known to EL6's rpm 4.8" || bad "$label: rpmlib features EL6 lacks:$bad_rpmlib"
    br=$(echo "$reqs" | grep -v '^rpmlib(' | tr '\n' ' ')
    echo "$reqs" | grep -qx 'httpd-devel >= 2.2.15' && ! echo "$reqs" | grep -Eqi 'cargo|rust|clang' \
        && ok "$label: BuildRequires $br(no Rust)" || bad "$label: BuildRequires $br"
    sx=$tmp/srpm; mkdir -p "$sx"
    (cd "$sx" && rpm2cpio "$s" | cpio -idm --quiet 2>/dev/null)
    tarball=$sx/mod_proxy_wstunnel-$version.tar.gz
    if [ -f "$tarball" ] && tar -xzf "$tarball" -C "$sx"; then
        d=$sx/mod_proxy_wstunnel-$version
        missing=
        for f in c_shim/*.c c_shim/*.h c_shim/include/wstunnel_core.h apxs/exports.map apxs/check-so.sh; do
            cmp -s "$f" "$d/$f" || missing="$missing $f"
        done
        [ -z "$missing" ] && ok "$label: carries the current C shim, contract header, exports.map, check-so.sh" \
            || bad "$label: differs from the tree or lacks:$missing"
        for a in ${RPM_CORES:-$(ls "$d/core")}; do
            ar=$d/core/$a/libwstunnel_core.a
            [ -f "$ar" ] || { bad "$label: no core/$a/libwstunnel_core.a"; continue; }
            h=$(readelf -h "$ar" 2>/dev/null | awk -F: '$1 ~ /Class|Machine/ {gsub(/^ +/, "", $2); print $2}' | sort -u | tr '\n' ' ')
            case $a:$h in
                "x86_64:Advanced Micro Devices X86-64 ELF64 "|"i686:ELF32 Intel 80386 ") ok "$label: core/$a archive is $h" ;;
                *) bad "$label: core/$a archive objects are '$h'" ;;
            esac
            rel=$(readelf -rW "$ar" 2>/dev/null | grep -Eo 'R_X86_64_(REX_)?GOTPCRELX|R_386_GOT32X' | sort | uniq -c | tr '\n' ' ')
            comp=$(readelf -SW "$ar" 2>/dev/null | grep -E '^\s+\[' | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^[WAXMSILOGTCxoEDlRp]+$/ && $i ~ /C/) {print; break}}' | head -1)
            dbg=$(readelf -SW "$ar" 2>/dev/null | grep -c '\.debug_')
            if [ -z "$rel" ] && [ -z "$comp" ]; then
                ok "$label: core/$a has no GOTPCRELX/GOT32X relocations or compressed sections (EL6's binutils 2.20 links it); $dbg debug sections"
            else
                bad "$label: core/$a needs a newer linker than EL6's: ${rel}${comp}"
            fi
        done
        [ -f "$d/core-BUILD-INFO" ] && ok "$label: core-BUILD-INFO: $(sed -n 2p "$d/core-BUILD-INFO")" || bad "$label: no core-BUILD-INFO"
        # make in the unpacked tarball, as an admin without packages would.
        [ -f "$d/Makefile" ] && ok "$label: the tarball carries the top-level Makefile" || bad "$label: no Makefile in the tarball"
        tapxs=${APXS:-$(command -v apxs || command -v apxs2)}
        if [ -n "$tapxs" ] && "$tapxs" -q INCLUDEDIR >/dev/null 2>&1; then
            tarball_make "$label" "$d" "$tapxs" "$(uname -m)"
        else
            note "$label: no apxs; tarball make test skipped"
        fi
        # i686 with a real 32-bit apxs (its CC or CFLAGS say -m32: a CentOS 6
        # i686 httpd-devel, not build/i386-root's query-only wst-apxs).
        if [ "$(uname -m)" = x86_64 ] && [ -n "${APXS_I686:-}" ] \
            && { "$APXS_I686" -q CC; "$APXS_I686" -q CFLAGS; } 2>/dev/null | grep -q -e '-m32'; then
            if command -v setarch >/dev/null; then tarball_make "$label" "$d" "$APXS_I686" i686
            else note "$label: no setarch; i686 tarball make test skipped"; fi
        else
            note "$label: no 32-bit apxs (APXS_I686); i686 tarball make test skipped"
        fi
    else
        bad "$label: no readable mod_proxy_wstunnel-$version.tar.gz inside"
    fi

    # Rebuild it the way an EL box would: apxs and gcc, with cargo and rustc
    # made to fail loudly if anything called them.
    apxs=${APXS:-$(command -v apxs || command -v apxs2)}
    if [ -z "$apxs" ] || ! "$apxs" -q INCLUDEDIR >/dev/null 2>&1; then
        note "$label: no apxs; rebuild test skipped"
    else
        rm -f "$nr/called"
        rb=$tmp/rebuild; mkdir -p "$rb"
        if PATH=$nr:$PATH rpmbuild --rebuild --nodeps --define "_topdir $rb" --define "wst_apxs $apxs" \
                "$s" > "$rb/log" 2>&1 && [ ! -e "$nr/called" ]; then
            p=$(ls "$rb"/RPMS/*/*.rpm | head -1)
            ok "$label: rpmbuild --rebuild with $apxs and gcc only -> $(basename "$p") ($(grep -c '^ok   ' "$rb/log") ok lines from check-so.sh in %check)"
            check_binary "$p" "$(uname -m)" "" "rebuilt $(basename "$p")"
        else
            bad "$label: rpmbuild --rebuild failed: $(cat "$nr/called" 2>/dev/null) $(tail -5 "$rb/log" | tr '\n' ' ')"
        fi
    fi
fi
exit $failed
