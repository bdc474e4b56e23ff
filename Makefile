# mod_proxy_wstunnel: Rust core + C shim, linked by apxs.
#
#   make               build/mod_proxy_wstunnel.so for the httpd whose apxs is found
#   make install       install it with apxs
#   make test          everything CI runs (README: Building and testing): unit tests, static
#                      checks, e2e on 2.4 and i686, fuzz, soak, memcheck, packages, browsers
#   make e2e           the end-to-end suite only (HTTPD=/path/to/httpd APXS=/path/to/apxs);
#                      WST_ASYNC=off: on the threaded path (ProxyWebsocketAsync Off everywhere)
#   make demo          build, then run a local httpd + websocketd and show messages flowing
#   make bench         ours (async and threaded) vs stock, nginx, HAProxy, direct, and the tunnel climb
#                      under event and prefork (~12 min; BENCH_QUICK=1: ~3 min; benches/README.md)
#   make i686          build/i686/mod_proxy_wstunnel.so (scripts/setup-i686.sh prepares it);
#                      with APXS=<a 32-bit httpd's apxs>, built against that httpd
#   make rpm           EL RPMs (x86_64, i686, SRPM) and a yum repository in build/rpm (packaging/README.md)
#   make rpm-check     packaging/check-rpm.sh on them
#   make deb           Debian/Ubuntu package in build/deb (packaging/deb.mk)
#   make deb-check     scripts/deb-check.sh on it (root: dpkg -i into the system's apache2, a WebSocket through it, purge)
#
APXS ?= $(shell command -v apxs 2>/dev/null || command -v apxs2 2>/dev/null || echo apxs)
CARGO ?= cargo
HTTPD ?= $(shell command -v apache2 2>/dev/null || command -v httpd 2>/dev/null || echo /usr/sbin/apache2)
BUILD := build
CORE := target/release/libwstunnel_core.a
SHIM_SRC := $(wildcard c_shim/*.c)
SHIM_HDR := $(wildcard c_shim/*.h c_shim/include/*.h)
RUST_SRC := $(shell find src -name '*.rs' 2>/dev/null) Cargo.toml build.rs
# A release tarball (the source RPM's mod_proxy_wstunnel-<version>.tar.gz)
# has no src/ but the Rust core prebuilt for both arches: there `make` and
# `make install` need only gcc and the httpd's apxs (CentOS 6: httpd-devel).
ifeq ($(wildcard src/lib.rs),)
CORE := core/$(shell uname -m | sed 's/^i[3-6]86$$/i686/')/libwstunnel_core.a
PREBUILT_CORE := yes
endif
SO := $(BUILD)/mod_proxy_wstunnel.so
# x86_64: route memcpy to its GLIBC_2.2.5 version (see c_shim/wst_glibc.c).
comma := ,
WRAP_MEMCPY := $(if $(filter x86_64,$(shell uname -m)),-Wl$(comma)-Wl$(comma)--wrap=memcpy)


.PHONY: FORCE all core install test unit e2e glibc-check demo clean bench

all: $(SO)

core: $(CORE)

ifndef PREBUILT_CORE
$(CORE): $(RUST_SRC) c_shim/include/wstunnel_core.h
	$(CARGO) build --release --lib
endif

# Warnings as apxs builds the shim for every target. An implicit function
# declaration is an error: against older headers (APR 1.3.9 on CentOS 6) a
# call to a newer API would otherwise build a module httpd refuses to load.
# gnu89 with declarations before statements: the C that CentOS 6's gcc 4.4.7
# compiles by default (rpmbuild --rebuild there).
SHIM_C89    := -std=gnu89 -Werror=declaration-after-statement
SHIM_CFLAGS := -Wc,-Wall -Wc,-Wextra -Wc,-Wno-unused-parameter -Wc,-Wno-missing-field-initializers \
               -Wc,-Werror-implicit-function-declaration $(addprefix -Wc$(comma),$(SHIM_C89))

# $(call apxs_link,APXS,OBJDIR,CORE,EXTRA LDFLAGS,OUT): compile the shim with
# that httpd's apxs and link it with the Rust core into OUT.
define apxs_link
	@mkdir -p $(2)
	rm -rf $(2)/*
	cp $(SHIM_SRC) $(2)/
	cd $(2) && $(1) -c -o mod_proxy_wstunnel.la \
	    -I$(CURDIR)/c_shim -I$(CURDIR)/c_shim/include $(SHIM_CFLAGS) \
	    -Wl,-Wl,--version-script=$(CURDIR)/apxs/exports.map $(4) \
	    $(notdir $(SHIM_SRC)) $(CURDIR)/$(3) >build.log 2>&1 \
	    || { cat build.log; exit 1; }
	@grep -i warning $(2)/build.log | grep -v 'Linking the shared library' || true
	cp $(2)/.libs/mod_proxy_wstunnel.so $(5).tmp && mv -f $(5).tmp $(5)
	@echo "built $(5) with $(1)"
endef

# Changes (and so rebuilds the module) when another apxs is named.
$(BUILD)/apxs.stamp: FORCE
	@mkdir -p $(@D); echo '$(APXS)' | cmp -s - $@ 2>/dev/null || echo '$(APXS)' > $@
FORCE:

$(SO): $(CORE) $(SHIM_SRC) $(SHIM_HDR) apxs/exports.map Makefile $(BUILD)/apxs.stamp
	$(call apxs_link,$(APXS),$(BUILD)/obj,$(CORE),$(WRAP_MEMCPY),$(SO))

install: $(SO)
	sh scripts/install-guard.sh $(APXS)
	$(APXS) -i -n proxy_wstunnel $(SO)

glibc-check: $(SO)
	sh apxs/check-so.sh $(SO) $(APXS)
	sh apxs/check-api.sh $(SO)

unit:
	$(CARGO) test --lib

e2e: $(SO)
	cd tests/e2e && WST_MODULE=$(CURDIR)/$(SO) HTTPD=$(HTTPD) APXS=$(APXS) WST_ASYNC=$(WST_ASYNC) \
	    $(CARGO) test --release --no-fail-fast -- --test-threads=2

test: $(SO)
	SO=$(SO) APXS=$(APXS) HTTPD=$(HTTPD) CARGO=$(CARGO) scripts/run-tests.sh

demo: $(SO)
	sh demo/run.sh

# BENCH_MODULE=/path/mod_proxy_wstunnel.so benches a module built elsewhere
# (then nothing is built here); BENCH_QUICK=1 is the short run.
BENCH_MODULE ?=
bench: $(if $(BENCH_MODULE),,$(SO))
	cd benches && HTTPD=$(HTTPD) APXS=$(APXS) $(CARGO) run --release -- run --module $(if $(BENCH_MODULE),$(BENCH_MODULE),$(CURDIR)/$(SO))

clean:
	rm -rf $(BUILD) target tests/e2e/target benches/target tools/contract-gen/target

-include scripts/i686.mk
-include packaging/rpm.mk
-include packaging/deb.mk
