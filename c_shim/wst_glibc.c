/*
 * wst_glibc.c: keep the module loadable on glibc 2.12 (CentOS 6).
 *
 * On x86_64, glibc 2.14 versioned a new memcpy; code built on a newer system
 * binds memcpy@GLIBC_2.14, which CentOS 6's loader refuses. The module is
 * linked with --wrap=memcpy (Makefile), so every memcpy call, the Rust core's
 * included, lands here and goes to the old, always-present memcpy@GLIBC_2.2.5.
 * (The old symbol is memmove-safe; nothing relies on the difference.)
 */
#include <stddef.h>
#include <string.h> /* defines __GLIBC__ */

#if defined(__x86_64__) && defined(__GLIBC__)
__asm__(".symver wst_memcpy_old, memcpy@GLIBC_2.2.5");
void *wst_memcpy_old(void *dst, const void *src, size_t n);

void *__wrap_memcpy(void *dst, const void *src, size_t n);
void *__wrap_memcpy(void *dst, const void *src, size_t n)
{
    return wst_memcpy_old(dst, src, n);
}
#endif
