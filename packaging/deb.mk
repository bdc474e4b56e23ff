# Debian/Ubuntu package of the module, for `-include packaging/deb.mk` at the
# end of the top-level Makefile (uses SO, BUILD, APXS from it).
#
#   make deb        $(DEB_DIR)/libapache2-mod-proxy-wstunnel-rs_<version>-1_<arch>.deb
#                   (with its -dbgsym .deb, .buildinfo and .changes) from $(SO),
#                   packaged as it is built and tested: debhelper + dh_apache2,
#                   no compiling, no network
#   make deb-check  scripts/deb-check.sh on it: lintian, dpkg -i into the
#                   system's apache2, a2enmod, configtest, a WebSocket through
#                   it on 127.0.0.1, purge (root; /etc/apache2 is restored)
#
# The package installs /usr/lib/apache2/modules/mod_proxy_wstunnel_rs.so and
# mods-available/proxy_wstunnel_rs.{load,conf} (packaging/debian/ has every
# file of debian/). $(DEB_DIR)/<source>-<version>/ is generated from them, the
# .so and README.md; nothing is written outside $(DEB_DIR).
#
# The .so must be built for the apache2-dev that dh_apache2 belongs to: its
# module record's MMN (packaging/so-abi.sh) must be the apache2-api-<MMN> that
# dh_apache2 writes into Depends, and the package depends on at least the
# apache2-bin version of the headers it was compiled against ($(APXS)).
# Needs (Debian): debhelper, apache2-dev (dh-apache2), dpkg-dev; lintian for deb-check.
DEB_DIR      ?= $(BUILD)/deb
DEB_PKG      := libapache2-mod-proxy-wstunnel-rs
DEB_UPSTREAM := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)
DEB_VERSION  := $(DEB_UPSTREAM)-1
DEB_ARCH     := $(shell dpkg-architecture -qDEB_HOST_ARCH 2>/dev/null || dpkg --print-architecture 2>/dev/null)
DEB_TREE     := $(DEB_DIR)/$(DEB_PKG)-$(DEB_UPSTREAM)
DEB_FILE     := $(DEB_DIR)/$(DEB_PKG)_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_INPUTS   := $(wildcard packaging/debian/* packaging/debian/source/*) packaging/deb.mk \
                packaging/so-abi.sh README.md

.PHONY: deb deb-check deb-tools

deb: $(DEB_FILE)

deb-tools:
	@for t in dpkg-buildpackage dh dh_apache2 dpkg-architecture readelf; do \
	    command -v $$t >/dev/null || { echo "$$t not found: apt-get install debhelper apache2-dev dpkg-dev binutils"; exit 1; }; \
	done

$(DEB_FILE): $(SO) $(DEB_INPUTS) | deb-tools
	@set -e; \
	info=$$(sh packaging/so-abi.sh $(SO)); echo "$(SO): $$info"; eval "$$info"; \
	api=$$(sed -n 's/^our \$$API = "\([0-9]*\)";/\1/p' $$(command -v dh_apache2)); \
	if [ "$$abi" != httpd24 ] || [ "$$mmn" != "$$api" ]; then \
	    echo "$(SO) is built for MMN $$mmn ($$abi), but this apache2-dev's dh_apache2 writes apache2-api-$$api:"; \
	    echo "build it with Debian's apxs (make APXS=/usr/bin/apxs) before make deb"; exit 1; \
	fi; \
	inc=$$($(APXS) -q INCLUDEDIR); \
	hmmn=$$(awk '$$1 == "#define" && $$2 == "MODULE_MAGIC_NUMBER_MAJOR" {print $$3}' $$inc/ap_mmn.h); \
	hminor=$$(awk '$$1 == "#define" && $$2 == "MODULE_MAGIC_NUMBER_MINOR" {print $$3}' $$inc/ap_mmn.h); \
	if [ "$$mmn:$$minor" != "$$hmmn:$$hminor" ]; then \
	    echo "$(SO) was built for MMN $$mmn:$$minor but $$inc has $$hmmn:$$hminor (stale build? make clean)"; exit 1; \
	fi; \
	hv=$$(awk '$$1 == "#define" && $$2 ~ /^AP_SERVER_(MAJOR|MINOR)VERSION_NUMBER$$|^AP_SERVER_PATCHLEVEL_NUMBER$$/ \
	          {v = v s $$3; s = "."} END {print v}' $$inc/ap_release.h); \
	rm -rf $(DEB_TREE) $(DEB_DIR)/$(DEB_PKG)_*; mkdir -p $(DEB_TREE); \
	cp -R packaging/debian $(DEB_TREE)/debian; chmod 755 $(DEB_TREE)/debian/rules; \
	sed -i '1s/([^)]*)/($(DEB_VERSION))/' $(DEB_TREE)/debian/changelog; \
	echo "$$hv" > $(DEB_TREE)/debian/wst-httpd-version; \
	cp $(SO) $(DEB_TREE)/mod_proxy_wstunnel_rs.so; \
	cp README.md $(DEB_TREE)/README.md; \
	echo "dpkg-buildpackage -b in $(DEB_TREE) (apache2-api-$$api, apache2-bin >= $$hv)"; \
	( cd $(DEB_TREE) && dpkg-buildpackage -b -us -uc ) > $(DEB_DIR)/build.log 2>&1 \
	    || { cat $(DEB_DIR)/build.log; exit 1; }; \
	grep -E '^dpkg-deb: building' $(DEB_DIR)/build.log || true; \
	test -f $@

deb-check: $(DEB_FILE)
	DEB=$(DEB_FILE) sh scripts/deb-check.sh
