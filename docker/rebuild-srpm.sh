#!/bin/sh
# Runs inside the EL images (docker/*/Dockerfile): rebuilds the source RPM(s)
# in /src with this box's gcc and httpd-devel (no Rust: the SRPM carries the
# Rust core prebuilt), then installs the result next to the box's own httpd
# and asks that httpd to load it (httpd -t, httpd -M). Output in /out:
# /out/<arch>/*.rpm, /out/SRPMS/*.src.rpm, /out/repo (createrepo).
# Untested: written for docker/README.md, never run in this project's CI.
set -eu
top=/tmp/rpmbuild
mkdir -p /out/SRPMS
ls /src/*.src.rpm >/dev/null 2>&1 || { echo "no /src/*.src.rpm: run 'make rpm' first" >&2; exit 1; }
for s in /src/*.src.rpm; do
    rpmbuild --rebuild --define "_topdir $top" "$s"
    cp -p "$s" /out/SRPMS/
done
for d in "$top"/RPMS/*/; do
    a=$(basename "$d"); mkdir -p "/out/$a"; cp -p "$d"*.rpm "/out/$a/"
done
# Install it next to this box's httpd and load it.
rpm -Uvh --force "$top"/RPMS/*/mod_proxy_wstunnel-*.rpm
rpm -q --requires mod_proxy_wstunnel | grep -E '^httpd'
httpd -t
httpd -M 2>&1 | grep proxy_wstunnel_module
mkdir -p /out/repo
cp -p /out/*/mod_proxy_wstunnel-*.rpm /out/repo/ 2>/dev/null || :
rm -f /out/repo/*.src.rpm
if command -v createrepo_c >/dev/null; then createrepo_c /out/repo
elif command -v createrepo >/dev/null; then createrepo /out/repo
fi
echo "done: $(ls /out/*/*.rpm)"
