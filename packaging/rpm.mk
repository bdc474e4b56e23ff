# RPM packages for EL6..EL9, for `include packaging/rpm.mk` at the end of the
# top-level Makefile (after scripts/i686.mk; uses SO, BUILD, APXS, CORE,
# SHIM_SRC, SHIM_HDR, I686_SO, I686_CORE, I386_ROOT).
#
#   make rpm          $(RPM_DIR)/x86_64/*.rpm   from $(SO), built against $(APXS)'s headers
#                     $(RPM_DIR)/i686/*.rpm     from $(I686_SO) (when scripts/setup-i686.sh ran),
#                                 built with APXS_I686's httpd (else Debian's i386 2.4)
#                     $(RPM_DIR)/SRPMS/*.src.rpm  C shim + prebuilt Rust cores, rebuilds
#                                                 on EL with gcc + httpd-devel, no Rust
#                     $(RPM_DIR)/repo/          the binary RPMs + createrepo_c metadata
#   make rpm-check    packaging/check-rpm.sh on all of it
#
# RPM_DIR is $(BUILD)/rpm, so `make rpm APXS=/path/to/httpd-2.2/bin/apxs
# BUILD=build/httpd22` writes an httpd 2.2 (EL6) package set to
# build/httpd22/rpm without touching build/rpm; with APXS_I686=<the i686
# httpd's apxs> the set has the i686 package too:
#   make rpm APXS=/opt/el6-x86_64/bin/apxs APXS_I686=/opt/el6-i686/bin/apxs BUILD=build/el6
# The ABI of each binary RPM
# (Release .httpd22/.httpd24, Requires httpd-mmn) is read from the .so itself
# and must agree with the headers it was built against.
# Needs (Debian): rpm, rpm2cpio, createrepo-c, cpio, file, binutils.
RPM_DIR      ?= $(BUILD)/rpm
# i686 too when its setup exists and its headers (Debian's i386 httpd 2.4)
# have the ABI of $(APXS): one repository, one httpd ABI.
RPM_MMN      = $(shell awk '$$1 ~ /define$$/ && $$2 == "MODULE_MAGIC_NUMBER_MAJOR" {print $$3; exit}' $(1)/ap_mmn.h 2>/dev/null)
RPM_ARCHES   ?= x86_64 $(if $(wildcard $(I386_ROOT)/.wst-i386-stamp),$(if $(filter $(call RPM_MMN,$(RPM_INC_x86_64)),$(call RPM_MMN,$(RPM_INC_i686))),i686))
# The SRPM is ABI-neutral: it carries every Rust core there is.
RPM_CORES    ?= x86_64 $(if $(wildcard $(I386_ROOT)/.wst-i386-stamp),i686)
RPMBUILD     ?= rpmbuild
CREATEREPO   ?= createrepo_c
RPM_VERSION  := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -1)
RPM_SPEC_IN  := packaging/mod_proxy_wstunnel.spec
RPM_SPEC     := $(RPM_DIR)/mod_proxy_wstunnel.spec
RPM_EXTRA    := packaging/proxy_wstunnel.conf packaging/00-proxy-wstunnel-rs.conf README.md
RPM_WORK     := $(RPM_DIR)/work
RPM_TARDIR   := mod_proxy_wstunnel-$(RPM_VERSION)
# EL6's rpm 4.8: gzip payloads, no /usr/lib/.build-id links, SHA-256 file digests.
RPM_DEFINES  := --define '_build_id_links none' --define '_binary_payload w9.gzdio' \
                --define '_source_payload w9.gzdio' --define '_binary_filedigest_algorithm 8' \
                --define '_source_filedigest_algorithm 8'
# Headers each arch's .so was built against (for the version and MMN cross-check).
RPM_INC_x86_64 = $(shell $(APXS) -q INCLUDEDIR 2>/dev/null)
RPM_INC_i686   = $(if $(I686_APXS),$(shell $(I686_APXS) -q INCLUDEDIR 2>/dev/null),$(I386_ROOT)/usr/include/apache2)
RPM_SO_x86_64  = $(SO)
RPM_SO_i686    = $(I686_SO)
RPM_CORE_x86_64 = $(CORE)
RPM_CORE_i686   = $(I686_CORE)

.PHONY: rpm rpm-bin rpm-srpm rpm-repo rpm-check rpm-clean rpm-tools $(addprefix rpm-bin-,x86_64 i686)

rpm: rpm-repo

rpm-tools:
	@for t in $(RPMBUILD) $(CREATEREPO) rpm2cpio cpio file readelf; do \
	    command -v $$t >/dev/null || { echo "$$t not found: apt-get install rpm rpm2cpio createrepo-c cpio file binutils"; exit 1; }; \
	done

$(RPM_SPEC): $(RPM_SPEC_IN) Cargo.toml
	@mkdir -p $(RPM_DIR)
	sed 's/^Version:\( *\).*/Version:\1$(RPM_VERSION)/' $< > $@

# rpm-bin-<arch>: package the .so as built; nothing is compiled here.
rpm-bin-x86_64: $(SO)
rpm-bin-i686: $(I686_SO)
rpm-bin-x86_64 rpm-bin-i686: rpm-bin-%: $(RPM_SPEC) $(RPM_EXTRA) packaging/so-abi.sh | rpm-tools
	@set -e; arch=$*; so=$(RPM_SO_$*); inc=$(RPM_INC_$*); top=$(CURDIR)/$(RPM_WORK)/$$arch; \
	info=$$(sh packaging/so-abi.sh $$so); echo "$$so: $$info"; eval "$$info"; \
	hmmn=$$(awk '$$1 == "#define" && $$2 == "MODULE_MAGIC_NUMBER_MAJOR" {print $$3}' $$inc/ap_mmn.h); \
	hminor=$$(awk '$$1 == "#define" && $$2 == "MODULE_MAGIC_NUMBER_MINOR" {print $$3}' $$inc/ap_mmn.h); \
	hv=$$(awk '$$1 == "#define" && $$2 ~ /^AP_SERVER_(MAJOR|MINOR)VERSION_NUMBER$$|^AP_SERVER_PATCHLEVEL_NUMBER$$/ \
	          {v = v s $$3; s = "."} END {print v}' $$inc/ap_release.h); \
	if [ "$$mmn:$$minor" != "$$hmmn:$$hminor" ]; then \
	    echo "$$so was built for MMN $$mmn:$$minor but $$inc has $$hmmn:$$hminor (stale build? make clean, or set BUILD=)"; exit 1; \
	fi; \
	rm -rf $$top; mkdir -p $$top/SOURCES; \
	cp -p $$so $$top/SOURCES/mod_proxy_wstunnel.so; cp -p $(RPM_EXTRA) $$top/SOURCES/; \
	$(RPMBUILD) -bb --quiet --target $$arch --with prebuilt --define "_topdir $$top" \
	    --define "wst_mmn $$mmn" --define "wst_httpd_version $$hv" $(RPM_DEFINES) $(RPM_SPEC) \
	    > $$top/rpmbuild.log 2>&1 || { cat $$top/rpmbuild.log; exit 1; }; \
	mkdir -p $(RPM_DIR)/$$arch; rm -f $(RPM_DIR)/$$arch/*.rpm; \
	mv $$top/RPMS/*/*.rpm $(RPM_DIR)/$$arch/; \
	echo "built $$(ls $(RPM_DIR)/$$arch/*.rpm) (httpd($$isa) >= $$hv, httpd-mmn = $$mmnisa)"

rpm-bin: $(addprefix rpm-bin-,$(RPM_ARCHES))

# The source RPM: C shim, contract header, export map, the .so checks, and
# the Rust core as prebuilt static archives (debug info stripped; they hold
# no httpd code), with a note of how they were made.
rpm-srpm: $(RPM_SPEC) $(RPM_EXTRA) Makefile scripts/install-guard.sh $(SHIM_SRC) $(SHIM_HDR) $(wildcard apxs/*) \
          $(foreach a,$(RPM_CORES),$(RPM_CORE_$(a))) | rpm-tools
	@set -e; top=$(CURDIR)/$(RPM_WORK)/src; st=$$top/stage/$(RPM_TARDIR); \
	rm -rf $$top; mkdir -p $$st/c_shim/include $$st/apxs $$st/packaging $$top/SOURCES; \
	cp -p $(SHIM_SRC) $(filter c_shim/%.h,$(filter-out c_shim/include/%,$(SHIM_HDR))) $$st/c_shim/; \
	cp -p $(filter c_shim/include/%,$(SHIM_HDR)) $$st/c_shim/include/; \
	cp -p apxs/exports.map apxs/check-so.sh apxs/check-api.sh apxs/check-archive.sh apxs/api-httpd22.txt apxs/api-newer.txt $$st/apxs/; \
	mkdir -p $$st/scripts; cp -p scripts/install-guard.sh $$st/scripts/; \
	cp -p README.md Makefile $$st/; cp -p $(RPM_SPEC) $(RPM_EXTRA) packaging/so-abi.sh $$st/packaging/; \
	{ echo "Prebuilt Rust core of mod_proxy_wstunnel $(RPM_VERSION), made by 'make rpm'"; \
	  echo "source: $$(git rev-parse HEAD 2>/dev/null || echo unknown)$$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock build.rs c_shim/include 2>/dev/null || echo ' (with uncommitted changes)')"; \
	  echo "profile: release (panic=abort, lto), no_std; debug info and the .llvmbc, .llvmcmd, .llvm_addrsig sections stripped (apxs/check-archive.sh)"; } > $$st/core-BUILD-INFO; \
	for a in $(RPM_CORES); do \
	    case $$a in x86_64) src=$(CORE); rc="$$(rustc -V 2>/dev/null)";; i686) src=$(I686_CORE); rc="$$($(I686_RUSTC) -V 2>/dev/null)";; esac; \
	    mkdir -p $$st/core/$$a; cp $$src $$st/core/$$a/libwstunnel_core.a; \
	    strip --strip-debug $$st/core/$$a/libwstunnel_core.a; \
	    objcopy -R .llvmbc -R .llvmcmd -R .llvm_addrsig $$st/core/$$a/libwstunnel_core.a; \
	    sh apxs/check-archive.sh $$st/core/$$a/libwstunnel_core.a $$a; \
	    echo "core/$$a/libwstunnel_core.a: $$rc; sha256 $$(sha256sum < $$st/core/$$a/libwstunnel_core.a | cut -c1-64)" >> $$st/core-BUILD-INFO; \
	done; \
	epoch=$$(git log -1 --format=%ct 2>/dev/null || date +%s); \
	sort=$$(tar --sort=name -cf /dev/null /dev/null 2>/dev/null && echo --sort=name); \
	tar $$sort --owner=0 --group=0 --numeric-owner --mtime=@$$epoch -C $$top/stage -cf - $(RPM_TARDIR) \
	    | gzip -n -9 > $$top/SOURCES/$(RPM_TARDIR).tar.gz; \
	cp -p $(RPM_EXTRA) $$top/SOURCES/; \
	$(RPMBUILD) -bs --quiet --nodeps --define "_topdir $$top" --define 'wst_mmn 0' $(RPM_DEFINES) $(RPM_SPEC) \
	    > $$top/rpmbuild.log 2>&1 || { cat $$top/rpmbuild.log; exit 1; }; \
	mkdir -p $(RPM_DIR)/SRPMS; rm -f $(RPM_DIR)/SRPMS/*.rpm; mv $$top/SRPMS/*.src.rpm $(RPM_DIR)/SRPMS/; \
	echo "built $$(ls $(RPM_DIR)/SRPMS/*.src.rpm) (cores: $(RPM_CORES))"

# A yum/dnf repository of the binary RPMs. gzip XML and bzip2 sqlite: what
# EL6's yum reads (no zstd, no zchunk).
rpm-repo: rpm-bin rpm-srpm
	@set -e; repo=$(RPM_DIR)/repo; rm -rf $$repo; mkdir -p $$repo/Packages; \
	for a in $(RPM_ARCHES); do cp -p $(RPM_DIR)/$$a/*.rpm $$repo/Packages/; done; \
	gz=$$($(CREATEREPO) --help 2>&1 | grep -q general-compress-type && echo --general-compress-type=gz); \
	$(CREATEREPO) --quiet --checksum=sha256 $$gz --compress-type=bz2 --database $$repo; \
	echo "repository $$repo: $$(ls $$repo/Packages | tr '\n' ' ')"

rpm-check:
	RPM_DIR=$(RPM_DIR) RPM_ARCHES="$(RPM_ARCHES)" RPM_CORES="$(RPM_CORES)" SO=$(SO) I686_SO=$(I686_SO) APXS=$(APXS) HTTPD=$(HTTPD) \
	    $(if $(I686_APXS),APXS_I686=$(I686_APXS) HTTPD_I686=$(shell $(I686_APXS) -q SBINDIR)/$(shell $(I686_APXS) -q TARGET)) \
	    bash packaging/check-rpm.sh

rpm-clean:
	rm -rf $(RPM_DIR)
