/*
 * seccomp-2.6.32: run a program as if the kernel were Linux 2.6.32 (the
 * kernel of CentOS 6), as far as a seccomp filter can make it look so.
 *
 *   seccomp-2.6.32 [-v] [--list] PROGRAM [ARG...]   filter, self-test, exec
 *   seccomp-2.6.32 [-v] [--list] --check            filter, self-test, exit 0
 *
 * What 2.6.32 lacks fails the way that kernel fails it:
 *   - system calls added after 2.6.32                       -> ENOSYS
 *   - fcntl/fcntl64 commands added after 2.6.32
 *     (F_SETPIPE_SZ/F_GETPIPE_SZ 2.6.35, F_OFD_* 3.15, ...)  -> EINVAL
 *   - pipe2 flags other than O_CLOEXEC|O_NONBLOCK
 *     (O_DIRECT packet pipes 3.4, O_NOTIFICATION_PIPE 5.8)   -> EINVAL
 *   - madvise advice values 2.6.32 does not know
 *     (MADV_HUGEPAGE 2.6.38, MADV_FREE 4.5, ...)             -> EINVAL
 *   - prctl options after PR_MCE_KILL_GET (34, 2.6.32)       -> EINVAL
 * Everything else is allowed. The filter is inherited across fork and exec,
 * so it covers httpd and all its children (it is meant to wrap httpd:
 * `seccomp-2.6.32 /usr/sbin/apache2 -d DIR -f CONF`). The launcher execs in
 * place: the program keeps the launcher's process id.
 *
 * Deliberately left allowed (the host's own userland needs them, and CentOS
 * 6's userland does the same thing with calls 2.6.32 has):
 *   - getrandom (3.17): Debian 12's APR 1.7 implements
 *     apr_generate_random_bytes() with getrandom() and no /dev/urandom
 *     fallback (built with HAVE_GETRANDOM), and httpd 2.4 exits at start-up
 *     ("AH00141: Could not initialize random number generator") when that
 *     fails. CentOS 6's APR 1.3.9 reads /dev/urandom. The module calls
 *     apr_generate_random_bytes() itself (c_shim/wst_drain.c, the drain
 *     seed) and has its own fallback (time ^ pid ^ fd) should it fail.
 *     Set SECCOMP_2632_DENY_GETRANDOM=1 to deny it anyway (httpd then does
 *     not start; this is how the above was checked).
 *   - prlimit64 (2.6.36) on the calling process (pid 0): x86_64 glibc 2.36
 *     implements getrlimit() and setrlimit() with prlimit64(0, ...) and has
 *     no fallback (ld.so itself asks for RLIMIT_STACK); glibc 2.12 uses the
 *     getrlimit/setrlimit system calls, which 2.6.32 has, with the same
 *     meaning. prlimit64 on any other pid (what only prlimit can do) is
 *     ENOSYS.
 * Everything else httpd 2.4 + glibc 2.36 use copes with ENOSYS by itself:
 * clone3 (glibc falls back to clone), rseq (left unregistered), and on
 * i386 the *_time64 calls (glibc falls back to the 32-bit ones); httpd
 * and its threads start and serve under this filter on x86_64 and i386.
 *
 * What seccomp cannot express (so is NOT emulated): anything decided by
 * memory the arguments point to (epoll_event flags, clone3 args, socket
 * option values) or by the kind of descriptor (before 4.2 a kernel cannot
 * splice from an AF_UNIX socket into a pipe: EINVAL; here it can). The vDSO
 * (clock_gettime) makes no system call and is not filtered. i386: the
 * direct socket system calls (socket, connect, ... 4.3) are not denied:
 * libseccomp turns a rule on one into a rule on its socketcall() form
 * too, which 2.6.32 has (and Debian's i386 glibc 2.36 uses socketcall);
 * recvmmsg/sendmmsg are denied in both forms (ENOSYS; 2.6.32's socketcall
 * said EINVAL).
 *
 * Before exec the launcher proves the filter is in force: F_SETPIPE_SZ and
 * F_GETPIPE_SZ on a pipe fail with EINVAL, recvmmsg and prlimit64(pid) with
 * ENOSYS, pipe2(O_DIRECT) and madvise(MADV_FREE) with EINVAL, while
 * getrlimit, F_GETFL and madvise(MADV_DONTNEED) still work. Any deviation:
 * exit status 125, nothing executed.
 *
 * -v: say so on stderr. SECCOMP_2632_LOG=FILE: append one line per launch
 * ("pid N: filter active ...") to FILE, so a test run can count the
 * processes that were really filtered. --list: print every rule to stderr.
 *
 * Build: gcc -O2 -Wall -o seccomp-2.6.32 seccomp-2.6.32.c -lseccomp
 *        (Debian: libseccomp-dev; i686: gcc -m32 ... libseccomp.a of
 *        libseccomp-dev:i386.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PROG "seccomp-2.6.32"
#define FAIL_STATUS 125

/* Values from the kernel's uapi headers, defined here so that the launcher
 * builds against any libc's headers. */
#define K_F_OFD_GETLK 36          /* 3.15 */
#define K_F_OFD_SETLK 37          /* 3.15 */
#define K_F_OFD_SETLKW 38         /* 3.15 */
#define K_F_GETOWNER_UIDS 17      /* 3.6 */
#define K_F_DUPFD_QUERY 1027      /* 6.10 */
#define K_F_CREATED_QUERY 1028    /* 6.12 */
#define K_F_SETPIPE_SZ 1031       /* 2.6.35 */
#define K_F_GETPIPE_SZ 1032       /* 2.6.35 */
#define K_F_ADD_SEALS 1033        /* 3.17 */
#define K_F_GET_SEALS 1034        /* 3.17 */
#define K_F_GET_RW_HINT 1035      /* 4.13 */
#define K_F_SET_RW_HINT 1036      /* 4.13 */
#define K_F_GET_FILE_RW_HINT 1037 /* 4.13 */
#define K_F_SET_FILE_RW_HINT 1038 /* 4.13 */

#define K_O_NONBLOCK 04000
#define K_O_CLOEXEC 02000000
#define K_O_DIRECT 040000         /* x86 */

#define K_MADV_DONTNEED 4
#define K_MADV_FREE 8             /* 4.5 */
#define K_MADV_HWPOISON 100       /* 2.6.32 */

#define K_PR_MCE_KILL_GET 34      /* the last prctl option of 2.6.32 */

static int verbose;
static int list_rules;

static void say(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs(PROG ": error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(FAIL_STATUS);
}

/* System calls added after 2.6.32, with the version that added them.
 * `unified`: the number every architecture shares for calls numbered from
 * 424 on (Linux 5.1+), used when this libseccomp does not know the name
 * (libseccomp 2.5.4 stops around 5.17); 0: only by name. */
struct newer_syscall {
    const char *name;
    const char *since;
    int unified;
};

static const struct newer_syscall newer_syscalls[] = {
    {"recvmmsg", "2.6.33", 0},
    /* prlimit64 (2.6.36): only pid != 0, see the top of this file. */
    {"fanotify_init", "2.6.37", 0},
    {"fanotify_mark", "2.6.37", 0},
    {"name_to_handle_at", "2.6.39", 0},
    {"open_by_handle_at", "2.6.39", 0},
    {"clock_adjtime", "2.6.39", 0},
    {"syncfs", "2.6.39", 0},
    {"sendmmsg", "3.0", 0},
    {"setns", "3.0", 0},
    {"process_vm_readv", "3.2", 0},
    {"process_vm_writev", "3.2", 0},
    {"kcmp", "3.5", 0},
    {"finit_module", "3.8", 0},
    {"sched_setattr", "3.14", 0},
    {"sched_getattr", "3.14", 0},
    {"renameat2", "3.15", 0},
    {"seccomp", "3.17", 0},
    /* getrandom (3.17): allowed, see the top of this file. */
    {"memfd_create", "3.17", 0},
    {"kexec_file_load", "3.17", 0},
    {"bpf", "3.18", 0},
    {"execveat", "3.19", 0},
    {"userfaultfd", "4.3", 0},
    {"membarrier", "4.3", 0},
    {"mlock2", "4.4", 0},
    {"copy_file_range", "4.5", 0},
    {"preadv2", "4.6", 0},
    {"pwritev2", "4.6", 0},
    {"pkey_mprotect", "4.9", 0},
    {"pkey_alloc", "4.9", 0},
    {"pkey_free", "4.9", 0},
    {"statx", "4.11", 0},
    {"io_pgetevents", "4.18", 0},
    {"rseq", "4.18", 0},
    /* The 64-bit time calls of 32-bit architectures (i386 only). */
    {"clock_gettime64", "5.1", 0},
    {"clock_settime64", "5.1", 0},
    {"clock_adjtime64", "5.1", 0},
    {"clock_getres_time64", "5.1", 0},
    {"clock_nanosleep_time64", "5.1", 0},
    {"timer_gettime64", "5.1", 0},
    {"timer_settime64", "5.1", 0},
    {"timerfd_gettime64", "5.1", 0},
    {"timerfd_settime64", "5.1", 0},
    {"utimensat_time64", "5.1", 0},
    {"pselect6_time64", "5.1", 0},
    {"ppoll_time64", "5.1", 0},
    {"io_pgetevents_time64", "5.1", 0},
    {"recvmmsg_time64", "5.1", 0},
    {"mq_timedsend_time64", "5.1", 0},
    {"mq_timedreceive_time64", "5.1", 0},
    {"semtimedop_time64", "5.1", 0},
    {"rt_sigtimedwait_time64", "5.1", 0},
    {"futex_time64", "5.1", 0},
    {"sched_rr_get_interval_time64", "5.1", 0},
    {"pidfd_send_signal", "5.1", 424},
    {"io_uring_setup", "5.1", 425},
    {"io_uring_enter", "5.1", 426},
    {"io_uring_register", "5.1", 427},
    {"open_tree", "5.2", 428},
    {"move_mount", "5.2", 429},
    {"fsopen", "5.2", 430},
    {"fsconfig", "5.2", 431},
    {"fsmount", "5.2", 432},
    {"fspick", "5.2", 433},
    {"pidfd_open", "5.3", 434},
    {"clone3", "5.3", 435},
    {"close_range", "5.9", 436},
    {"openat2", "5.6", 437},
    {"pidfd_getfd", "5.6", 438},
    {"faccessat2", "5.8", 439},
    {"process_madvise", "5.10", 440},
    {"epoll_pwait2", "5.11", 441},
    {"mount_setattr", "5.12", 442},
    {"quotactl_fd", "5.14", 443},
    {"landlock_create_ruleset", "5.13", 444},
    {"landlock_add_rule", "5.13", 445},
    {"landlock_restrict_self", "5.13", 446},
    {"memfd_secret", "5.14", 447},
    {"process_mrelease", "5.15", 448},
    {"futex_waitv", "5.16", 449},
    {"set_mempolicy_home_node", "5.17", 450},
    {"cachestat", "6.5", 451},
    {"fchmodat2", "6.6", 452},
    {"map_shadow_stack", "6.6", 453},
    {"futex_wake", "6.7", 454},
    {"futex_wait", "6.7", 455},
    {"futex_requeue", "6.7", 456},
    {"statmount", "6.8", 457},
    {"listmount", "6.8", 458},
    {"lsm_get_self_attr", "6.8", 459},
    {"lsm_set_self_attr", "6.8", 460},
    {"lsm_list_modules", "6.8", 461},
    {"mseal", "6.10", 462},
    {"setxattrat", "6.13", 463},
    {"getxattrat", "6.13", 464},
    {"listxattrat", "6.13", 465},
    {"removexattrat", "6.13", 466},
    {"open_tree_attr", "6.15", 467},
    {"file_getattr", "6.17", 468},
    {"file_setattr", "6.17", 469},
};

/* fcntl commands 2.6.32 does not know (its do_fcntl answers EINVAL). */
static const struct {
    unsigned int cmd;
    const char *name;
} newer_fcntl[] = {
    {K_F_GETOWNER_UIDS, "F_GETOWNER_UIDS (3.6)"},
    {K_F_OFD_GETLK, "F_OFD_GETLK (3.15)"},
    {K_F_OFD_SETLK, "F_OFD_SETLK (3.15)"},
    {K_F_OFD_SETLKW, "F_OFD_SETLKW (3.15)"},
    {K_F_DUPFD_QUERY, "F_DUPFD_QUERY (6.10)"},
    {K_F_CREATED_QUERY, "F_CREATED_QUERY (6.12)"},
    {K_F_SETPIPE_SZ, "F_SETPIPE_SZ (2.6.35)"},
    {K_F_GETPIPE_SZ, "F_GETPIPE_SZ (2.6.35)"},
    {K_F_ADD_SEALS, "F_ADD_SEALS (3.17)"},
    {K_F_GET_SEALS, "F_GET_SEALS (3.17)"},
    {K_F_GET_RW_HINT, "F_GET_RW_HINT (4.13)"},
    {K_F_SET_RW_HINT, "F_SET_RW_HINT (4.13)"},
    {K_F_GET_FILE_RW_HINT, "F_GET_FILE_RW_HINT (4.13)"},
    {K_F_SET_FILE_RW_HINT, "F_SET_FILE_RW_HINT (4.13)"},
};

/* madvise advice values 2.6.32's madvise_behavior_valid() accepts:
 * NORMAL RANDOM SEQUENTIAL WILLNEED DONTNEED (0-4), REMOVE DONTFORK DOFORK
 * (9-11), MERGEABLE UNMERGEABLE (12-13, 2.6.32), HWPOISON (100, 2.6.32).
 * Everything else is EINVAL there. */
static int madvise_known_to_2632(unsigned int advice)
{
    return advice <= 4 || (advice >= 9 && advice <= 13) || advice == K_MADV_HWPOISON;
}

static int rules;

static void add(scmp_filter_ctx ctx, uint32_t action, int nr, const char *what,
                unsigned int n_args, const struct scmp_arg_cmp *args)
{
    int rc = seccomp_rule_add_array(ctx, action, nr, n_args, args);

    if (rc < 0) {
        die("seccomp_rule_add(%s): %s", what, strerror(-rc));
    }
    rules++;
    if (list_rules) {
        say("rule: %s -> %s", what,
            action == SCMP_ACT_ERRNO(ENOSYS) ? "ENOSYS" : "EINVAL");
    }
}

/* The number of `name` on this architecture, or -1 (unknown here). */
static int resolve(const char *name, int unified)
{
    int nr = seccomp_syscall_resolve_name(name);

    /* i386: recvmmsg and sendmmsg are both direct system calls (337, 345)
     * and socketcall() operations (19, 20). libseccomp gives their pseudo
     * numbers, and a rule on one becomes a rule on both. (2.6.32 answered
     * the socketcall form EINVAL, not ENOSYS; libseccomp cannot tell the
     * two apart, and either way the call fails.) */
    if (nr == __PNR_recvmmsg || nr == __PNR_sendmmsg) {
        return nr;
    }
    /* Other negatives: unknown to libseccomp (__NR_SCMP_ERROR), or a
     * pseudo number for a call this architecture does not have. */
    if (nr < 0 && unified > 0) {
        nr = unified;
    }
    return nr < 0 ? -1 : nr;
}

static void build_filter(scmp_filter_ctx ctx)
{
    const uint32_t enosys = SCMP_ACT_ERRNO(ENOSYS);
    const uint32_t einval = SCMP_ACT_ERRNO(EINVAL);
    const char *fcntl_names[] = {"fcntl", "fcntl64"};
    char what[128];
    size_t i, j;
    int nr, skipped = 0;
    unsigned int bit, v;

    for (i = 0; i < sizeof(newer_syscalls) / sizeof(newer_syscalls[0]); i++) {
        const struct newer_syscall *s = &newer_syscalls[i];

        if (!strcmp(s->name, "getrandom")) {
            continue;
        }
        nr = resolve(s->name, s->unified);
        if (nr == -1) {
            skipped++;
            if (list_rules) {
                say("skip: %s (%s): not a system call of this architecture",
                    s->name, s->since);
            }
            continue;
        }
        snprintf(what, sizeof(what), "%s (%s, nr %d%s)", s->name, s->since, nr,
                 nr < 0 ? ": direct and socketcall forms" : "");
        add(ctx, enosys, nr, what, 0, NULL);
    }

    if (getenv("SECCOMP_2632_DENY_GETRANDOM")
        && *getenv("SECCOMP_2632_DENY_GETRANDOM") == '1') {
        nr = resolve("getrandom", 0);
        if (nr >= 0) {
            add(ctx, enosys, nr, "getrandom (3.17, nr from SECCOMP_2632_DENY_GETRANDOM)", 0,
                NULL);
        }
    }

    /* prlimit64 on another process: ENOSYS; on itself (pid 0) it is
     * glibc's getrlimit/setrlimit (see the top of this file). */
    nr = resolve("prlimit64", 0);
    if (nr >= 0) {
        struct scmp_arg_cmp a = SCMP_A0_32(SCMP_CMP_NE, 0);

        add(ctx, enosys, nr, "prlimit64 with pid != 0 (2.6.36)", 1, &a);
    }

    /* fcntl commands: on i386 both fcntl (the module's syscall(SYS_fcntl))
     * and fcntl64 (glibc's fcntl()). */
    for (j = 0; j < 2; j++) {
        nr = resolve(fcntl_names[j], 0);
        if (nr < 0) {
            continue;
        }
        for (i = 0; i < sizeof(newer_fcntl) / sizeof(newer_fcntl[0]); i++) {
            struct scmp_arg_cmp a = SCMP_A1_32(SCMP_CMP_EQ, newer_fcntl[i].cmd);

            snprintf(what, sizeof(what), "%s cmd %s", fcntl_names[j], newer_fcntl[i].name);
            add(ctx, einval, nr, what, 1, &a);
        }
    }

    /* pipe2: 2.6.32 accepts O_CLOEXEC and O_NONBLOCK only. */
    nr = resolve("pipe2", 0);
    if (nr < 0) {
        die("pipe2 unknown to libseccomp");
    }
    for (bit = 0; bit < 32; bit++) {
        unsigned int f = 1u << bit;
        struct scmp_arg_cmp a = SCMP_A1_32(SCMP_CMP_MASKED_EQ, f, f);

        if (f & (K_O_CLOEXEC | K_O_NONBLOCK)) {
            continue;
        }
        snprintf(what, sizeof(what), "pipe2 flag %#o%s", f,
                 f == K_O_DIRECT ? " (O_DIRECT, 3.4)" : "");
        add(ctx, einval, nr, what, 1, &a);
    }

    /* madvise: the advice values 2.6.32 lacks (MADV_FREE 8 among them). */
    nr = resolve("madvise", 0);
    if (nr < 0) {
        die("madvise unknown to libseccomp");
    }
    for (v = 0; v <= 127; v++) {
        struct scmp_arg_cmp a = SCMP_A2_32(SCMP_CMP_EQ, v);

        if (madvise_known_to_2632(v)) {
            continue;
        }
        snprintf(what, sizeof(what), "madvise advice %u%s", v,
                 v == K_MADV_FREE ? " (MADV_FREE, 4.5)" : "");
        add(ctx, einval, nr, what, 1, &a);
    }
    {
        struct scmp_arg_cmp a = SCMP_A2_32(SCMP_CMP_GT, 127);

        add(ctx, einval, nr, "madvise advice > 127 (and negative)", 1, &a);
    }

    /* prctl: options after PR_MCE_KILL_GET (PR_SET_MM 3.3, PR_SET_NO_NEW_PRIVS
     * 3.5, PR_SET_PTRACER 3.4, PR_SET_VMA 5.17, ...). */
    nr = resolve("prctl", 0);
    if (nr >= 0) {
        struct scmp_arg_cmp a = SCMP_A0_32(SCMP_CMP_GT, K_PR_MCE_KILL_GET);

        add(ctx, einval, nr, "prctl option > PR_MCE_KILL_GET (34)", 1, &a);
    }

    if (verbose || list_rules) {
        say("%d rules; %d post-2.6.32 system calls not on this architecture", rules,
            skipped);
    }
}

/* ---- proof that the filter is in force -------------------------------- */

static int checks_failed;

static void expect_fail(const char *what, long r, int want_errno)
{
    int e = errno;

    if (r != -1 || e != want_errno) {
        say("self-test FAILED: %s returned %ld (errno %d %s), expected -1 %s", what, r,
            r == -1 ? e : 0, r == -1 ? strerror(e) : "", strerror(want_errno));
        checks_failed++;
    }
}

static void expect_ok(const char *what, long r)
{
    int e = errno;

    if (r < 0) {
        say("self-test FAILED: %s failed (%s), expected success", what, strerror(e));
        checks_failed++;
    }
}

static void self_test(void)
{
    int p[2];
    long r;
    struct rlimit rl;
    void *page;

    if (pipe2(p, K_O_CLOEXEC) != 0) {
        die("pipe2(O_CLOEXEC): %s", strerror(errno));
    }
    /* The module's own way: the raw fcntl system call. */
    errno = 0;
    r = syscall(SYS_fcntl, (long)p[1], (long)K_F_SETPIPE_SZ, 262144L);
    expect_fail("syscall(SYS_fcntl, F_SETPIPE_SZ)", r, EINVAL);
    errno = 0;
    r = syscall(SYS_fcntl, (long)p[1], (long)K_F_GETPIPE_SZ);
    expect_fail("syscall(SYS_fcntl, F_GETPIPE_SZ)", r, EINVAL);
    /* And glibc's fcntl() (fcntl64 on i386). */
    errno = 0;
    r = fcntl(p[1], K_F_SETPIPE_SZ, 262144);
    expect_fail("fcntl(F_SETPIPE_SZ)", r, EINVAL);
    r = fcntl(p[1], F_GETFL);
    expect_ok("fcntl(F_GETFL)", r);
    close(p[0]);
    close(p[1]);

    errno = 0;
    r = pipe2(p, K_O_DIRECT | K_O_CLOEXEC);
    expect_fail("pipe2(O_DIRECT)", r, EINVAL);
    if (r == 0) {
        close(p[0]);
        close(p[1]);
    }
    r = pipe2(p, K_O_NONBLOCK | K_O_CLOEXEC);
    expect_ok("pipe2(O_NONBLOCK|O_CLOEXEC)", r);
    if (r == 0) {
        close(p[0]);
        close(p[1]);
    }

#ifdef SYS_recvmmsg
    errno = 0;
    r = syscall(SYS_recvmmsg, -1L, 0L, 0L, 0L, 0L);
    expect_fail("syscall(SYS_recvmmsg)", r, ENOSYS);
#else
#error "no SYS_recvmmsg on this architecture"
#endif
#ifdef SYS_prlimit64
    errno = 0;
    r = syscall(SYS_prlimit64, (long)getpid(), (long)RLIMIT_NOFILE, 0L, (long)&rl);
    expect_fail("syscall(SYS_prlimit64, getpid())", r, ENOSYS);
#endif
    r = getrlimit(RLIMIT_NOFILE, &rl);
    expect_ok("getrlimit(RLIMIT_NOFILE)", r);

    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        die("mmap: %s", strerror(errno));
    }
    errno = 0;
    r = madvise(page, 4096, K_MADV_FREE);
    expect_fail("madvise(MADV_FREE)", r, EINVAL);
    r = madvise(page, 4096, K_MADV_DONTNEED);
    expect_ok("madvise(MADV_DONTNEED)", r);
    munmap(page, 4096);

    /* PR_GET_NO_NEW_PRIVS (39, 3.5): EINVAL; PR_GET_DUMPABLE (3) works. */
    errno = 0;
    r = prctl(39, 0L, 0L, 0L, 0L);
    expect_fail("prctl(PR_GET_NO_NEW_PRIVS)", r, EINVAL);
    r = prctl(PR_GET_DUMPABLE, 0L, 0L, 0L, 0L);
    expect_ok("prctl(PR_GET_DUMPABLE)", r);

    if (checks_failed) {
        die("%d self-test check(s) failed: the filter is not in force", checks_failed);
    }
}

static void log_launch(const char *target)
{
    const char *path = getenv("SECCOMP_2632_LOG");
    FILE *f;

    if (verbose) {
        say("filter active (%d rules; F_SETPIPE_SZ -> EINVAL, recvmmsg -> ENOSYS checked)%s%s",
            rules, target ? "; exec " : "", target ? target : "");
    }
    if (!path || !*path) {
        return;
    }
    /* Opened after the filter is in force, closed before exec. */
    f = fopen(path, "a");
    if (!f) {
        die("cannot open SECCOMP_2632_LOG %s: %s", path, strerror(errno));
    }
    fprintf(f, "pid %ld: filter active (%d rules; F_SETPIPE_SZ EINVAL, recvmmsg ENOSYS): %s\n",
            (long)getpid(), rules, target ? target : "--check");
    if (fclose(f) != 0) {
        die("cannot write SECCOMP_2632_LOG %s", path);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: " PROG " [-v] [--list] PROGRAM [ARG...]\n"
            "       " PROG " [-v] [--list] --check\n"
            "Runs PROGRAM under a seccomp filter that makes what Linux 2.6.32 lacks\n"
            "fail as 2.6.32 would (ENOSYS / EINVAL). Exit status %d if the filter\n"
            "cannot be installed or is not in force.\n",
            FAIL_STATUS);
    exit(FAIL_STATUS);
}

int main(int argc, char **argv)
{
    scmp_filter_ctx ctx;
    int check_only = 0, i = 1, rc;

    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "-v")) {
            verbose = 1;
        } else if (!strcmp(argv[i], "--list")) {
            list_rules = 1;
        } else if (!strcmp(argv[i], "--check")) {
            check_only = 1;
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else {
            usage();
        }
    }
    if (check_only ? i != argc : i >= argc) {
        usage();
    }

    ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        die("seccomp_init failed");
    }
    build_filter(ctx);
    rc = seccomp_load(ctx);
    if (rc < 0) {
        die("seccomp_load: %s", strerror(-rc));
    }
    seccomp_release(ctx);

    self_test();
    log_launch(check_only ? NULL : argv[i]);
    if (check_only) {
        return 0;
    }
    fflush(NULL);
    execvp(argv[i], argv + i);
    die("exec %s: %s", argv[i], strerror(errno));
    return FAIL_STATUS;
}
