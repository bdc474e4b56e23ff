# mod_proxy_wstunnel: Rust core + C shim, linked by apxs.
#
#   make               build/mod_proxy_wstunnel.so for the httpd whose apxs is found
#   make install       install it with apxs
#   make test          unit tests, glibc check, and the end-to-end suite (real httpd)
#   make e2e           the end-to-end suite only (HTTPD=/path/to/httpd APXS=/path/to/apxs)
#   make demo          build, then run a local httpd + websocketd and show messages flowing
#   make bench         ours vs stock (default and legacy paths), nginx, HAProxy, direct (~8 min; BENCH_QUICK=1: ~1.5 min)
#   make i686          build/i686/mod_proxy_wstunnel.so (scripts/setup-i686.sh prepares it)
#   make rpm           EL RPMs (x86_64, i686, SRPM) and a yum repository in build/rpm (packaging/README.md)
#   make rpm-check     packaging/check-rpm.sh on them
#
APXS ?= $(shell command -v apxs 2>/dev/null || command -v apxs2 2>/dev/null || echo apxs)
CARGO ?= cargo
HTTPD ?= $(shell command -v apache2 2>/dev/null || command -v httpd 2>/dev/null || echo /usr/sbin/apache2)
BUILD := build
CORE := target/release/libwstunnel_core.a
SHIM_SRC := $(wildcard c_shim/*.c)
SHIM_HDR := $(wildcard c_shim/*.h c_shim/include/*.h)
RUST_SRC := $(shell find src -name '*.rs') Cargo.toml build.rs
SO := $(BUILD)/mod_proxy_wstunnel.so
# x86_64: route memcpy to its GLIBC_2.2.5 version (see c_shim/wst_glibc.c).
comma := ,
WRAP_MEMCPY := $(if $(filter x86_64,$(shell uname -m)),-Wl$(comma)-Wl$(comma)--wrap=memcpy)

.PHONY: all core install test unit e2e glibc-check demo clean bench

all: $(SO)

core: $(CORE)

$(CORE): $(RUST_SRC) c_shim/include/wstunnel_core.h
	$(CARGO) build --release --lib

$(SO): $(CORE) $(SHIM_SRC) $(SHIM_HDR) apxs/exports.map Makefile
	@mkdir -p $(BUILD)/obj
	rm -rf $(BUILD)/obj/*
	cp $(SHIM_SRC) $(BUILD)/obj/
	cd $(BUILD)/obj && $(APXS) -c -o mod_proxy_wstunnel.la \
	    -I$(CURDIR)/c_shim -I$(CURDIR)/c_shim/include \
	    -Wc,-Wall -Wc,-Wextra -Wc,-Wno-unused-parameter -Wc,-Wno-missing-field-initializers \
	    -Wl,-Wl,--version-script=$(CURDIR)/apxs/exports.map \
	    $(WRAP_MEMCPY) \
	    $(notdir $(SHIM_SRC)) $(CURDIR)/$(CORE) >build.log 2>&1 \
	    || { cat build.log; exit 1; }
	@grep -i warning $(BUILD)/obj/build.log || true
	cp $(BUILD)/obj/.libs/mod_proxy_wstunnel.so $(SO).tmp && mv -f $(SO).tmp $(SO)
	@echo "built $(SO)"

install: $(SO)
	$(APXS) -i -n proxy_wstunnel $(SO)

glibc-check: $(SO)
	sh apxs/check-so.sh $(SO)

unit:
	$(CARGO) test --lib

e2e: $(SO)
	cd tests/e2e && WST_MODULE=$(CURDIR)/$(SO) HTTPD=$(HTTPD) APXS=$(APXS) $(CARGO) test --release --no-fail-fast -- --test-threads=2

test: $(SO)
	SO=$(SO) APXS=$(APXS) HTTPD=$(HTTPD) CARGO=$(CARGO) scripts/run-tests.sh

demo: $(SO)
	sh demo/run.sh

bench: $(SO)
	cd benches && HTTPD=$(HTTPD) APXS=$(APXS) $(CARGO) run --release -- run --module $(CURDIR)/$(SO)

clean:
	rm -rf $(BUILD) target tests/e2e/target benches/target

include scripts/i686.mk
include packaging/rpm.mk
