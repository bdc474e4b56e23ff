# i686 (32-bit) build of the module, for `include scripts/i686.mk` at the end
# of the top-level Makefile (uses its BUILD, SHIM_SRC, SHIM_HDR, RUST_SRC).
#
#   sh scripts/setup-i686.sh      once: Debian rustc-web, gcc-multilib, build/i386-root
#   make i686                     build/i686/mod_proxy_wstunnel.so against the
#                                 unpacked Debian i386 httpd 2.4 headers
#   make i686 APXS=<32-bit apxs>  the same, compiled and linked by that httpd's
#                                 own apxs (any 32-bit httpd 2.2 or 2.4, e.g.
#                                 CentOS 6 i686); APXS_I686= says it when APXS
#                                 names the x86_64 httpd (make rpm builds both)
#   make e2e-i686                 the e2e suite against the unpacked 32-bit httpd 2.4
#                                 (HTTPD_I686= and APXS_I686= for another one)
#
# Debian's rustc (/usr/bin/rustc, rustc-web) compiles; its i686 core comes from
# the unpacked libstd-rust-web-dev:i386 via --sysroot. RUSTFLAGS with an explicit
# --target reaches only target crates, so build.rs stays host-built with the host
# std. Debian's cargo is used; rustup's cargo also works as long
# as RUSTC names Debian's rustc.
I386_ROOT    ?= $(CURDIR)/build/i386-root
I686_TRIPLE  := i686-unknown-linux-gnu
I686_RUSTC   ?= /usr/bin/rustc
I686_CARGO   ?= /usr/bin/cargo
I686_TGTDIR  := target/i686
I686_CORE    := $(I686_TGTDIR)/$(I686_TRIPLE)/release/libwstunnel_core.a
I686_OBJDIR  := $(BUILD)/i686/obj
I686_SO      := $(BUILD)/i686/mod_proxy_wstunnel.so
# The i386 APR headers use off64_t: _LARGEFILE64_SOURCE (and _GNU_SOURCE) are
# required, as in Debian's own EXTRA_CPPFLAGS. Do not add _FILE_OFFSET_BITS=64:
# APR's i386 build does not use it, and it would bind fcntl64/stat64 etc.
# (GLIBC_2.28+ symbols) in the shim.
I686_CFLAGS  := -m32 -O2 -g -fPIC -DLINUX -D_REENTRANT -D_GNU_SOURCE -D_LARGEFILE64_SOURCE \
                -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
                -Werror-implicit-function-declaration $(SHIM_C89) \
                -I$(I386_ROOT)/usr/include/apache2 -I$(I386_ROOT)/usr/include/apr-1.0 \
                -Ic_shim -Ic_shim/include
I686_OBJS    := $(patsubst c_shim/%.c,$(I686_OBJDIR)/%.o,$(SHIM_SRC))
# The apxs of a 32-bit httpd to build with: APXS_I686, or APXS when it was
# given (command line or environment) and its compiler is 32-bit (-m32 in its
# CC or CFLAGS, as a CentOS 6 i686 httpd-devel or a -m32 build has).
i686_apxs_is_32 = $(shell { $(1) -q CC; $(1) -q CFLAGS; } 2>/dev/null | grep -q -e '-m32' && echo yes)
ifneq ($(APXS_I686),)
I686_APXS    := $(APXS_I686)
else ifneq ($(filter command line environment,$(origin APXS)),)
I686_APXS    := $(if $(call i686_apxs_is_32,$(APXS)),$(APXS))
endif

.PHONY: i686 i686-core e2e-i686
i686: $(I686_SO)
i686-core: $(I686_CORE)

$(I386_ROOT)/.wst-i386-stamp:
	@echo "run scripts/setup-i686.sh first (needs $(I386_ROOT))"; exit 1

$(I686_CORE): $(RUST_SRC) c_shim/include/wstunnel_core.h | $(I386_ROOT)/.wst-i386-stamp
	env -u CARGO_ENCODED_RUSTFLAGS RUSTC=$(I686_RUSTC) CARGO_TARGET_DIR=$(I686_TGTDIR) \
	    RUSTFLAGS="--sysroot=$(I386_ROOT)/usr" \
	    $(I686_CARGO) build --release --lib --locked --target $(I686_TRIPLE)

$(BUILD)/i686/apxs.stamp: FORCE
	@mkdir -p $(@D); echo '$(or $(I686_APXS),$(I386_ROOT))' | cmp -s - $@ 2>/dev/null \
	    || echo '$(or $(I686_APXS),$(I386_ROOT))' > $@

ifneq ($(I686_APXS),)
# Built by the 32-bit httpd's own apxs, against its headers.
$(I686_SO): $(I686_CORE) $(SHIM_SRC) $(SHIM_HDR) apxs/exports.map Makefile scripts/i686.mk \
           $(BUILD)/i686/apxs.stamp
	$(call apxs_link,$(I686_APXS),$(I686_OBJDIR),$(I686_CORE),,$(I686_SO))
	sh apxs/check-so.sh $@ $(I686_APXS)
	sh apxs/check-api.sh $@
else
$(I686_OBJDIR)/%.o: c_shim/%.c $(SHIM_HDR) | $(I386_ROOT)/.wst-i386-stamp
	@mkdir -p $(I686_OBJDIR)
	gcc $(I686_CFLAGS) -c $< -o $@

$(I686_SO): $(I686_OBJS) $(I686_CORE) apxs/exports.map $(BUILD)/i686/apxs.stamp
	@$(if $(filter command line environment,$(origin APXS)),echo "note: $(APXS) is no 32-bit apxs (its CC and CFLAGS lack -m32): the i686 module is built against Debian's i386 httpd 2.4 headers in $(I386_ROOT) (APXS_I686= names a 32-bit httpd)")
	gcc -m32 -shared -o $@ $(I686_OBJS) $(I686_CORE) \
	    -Wl,--version-script=apxs/exports.map -Wl,--no-undefined-version
	WST_TARGET_LIBPATH=$(I386_ROOT)/usr/lib/i386-linux-gnu:$(I386_ROOT)/lib/i386-linux-gnu \
	    sh apxs/check-so.sh $@ $(I386_ROOT)/wst-apxs
	sh apxs/check-api.sh $@
	@echo "built $@"
endif

e2e-i686: $(I686_SO)
	cd tests/e2e && WST_MODULE=$(CURDIR)/$(I686_SO) HTTPD=$(I386_ROOT)/wst-httpd \
	    APXS=$(I386_ROOT)/wst-apxs $(CARGO) test --release --no-fail-fast -- --test-threads=2
