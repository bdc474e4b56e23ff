/*
 * wst_async.c: tunnels that leave their httpd worker.
 *
 * Each child runs one reactor (the Rust core's wst_reactor_*: epoll on a
 * thread of its own, all signals blocked), started in child_init. Once the
 * 101 is out, a tunnel whose two ends are plain sockets (no mod_ssl, not an
 * HTTP/2 stream, no other connection filter) is handed over: both sockets
 * are dup'ed, the bytes httpd's input filters already hold are drained and
 * go along, the connection is marked aborted with keep-alive off (httpd then
 * only close()s its own descriptors: no FIN, no lingering read) and the
 * handler returns, so the worker serves the next request.
 *
 * The reactor never touches r, c, pools or brigades: what the tunnel's end
 * needs (server, client address, path, the tunnel log record) is copied into
 * one malloc'd block at the hand-over, and the end callback (on the
 * reactor's thread) logs, writes the tunnel log record, gives back the
 * ProxyWebsocketMaxTunnels slot and the balancer's busy count, and frees it.
 *
 * When the child goes away, a pre-cleanup of the child pool tells the reactor
 * how (graceful: each tunnel's ProxyWebsocketDrain window starts, tunnels
 * without one run on as stock httpd's do; hard: Close 1001 and gone within a
 * second), waits for the tunnels, then stops and joins the thread.
 */
#include "wst_shim.h"
#include "ap_mpm.h"
#if WST_HAVE_CHILD_STOPPING
#include "mpm_common.h"
#endif
#include "apr_thread_proc.h"
#include "apr_portable.h"
#include "apr_atomic.h"
#include <sys/resource.h>
#include <sys/syscall.h>
#include <signal.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdlib.h>

#ifndef F_DUPFD_CLOEXEC
#define F_DUPFD_CLOEXEC 1030    /* Linux 2.6.24; older kernels: EINVAL */
#endif

/* Dups go at or above this, so descriptors below 1024 stay free for code
 * that still uses select() (FD_SETSIZE). */
#define WST_ASYNC_FD_FLOOR 1024
/* Waits at the child's exit. */
#define WST_EXIT_POLL_MS 20
#define WST_EXIT_HARD_MS 600
#define WST_EXIT_CLOSE_MARGIN_MS 3000

static wst_reactor *reactor;
static apr_thread_t *reactor_thread;
static volatile int reactor_running;
static int is_prefork;
static server_rec *main_server;         /* for the child's exit messages */
static apr_time_t last_fd_notice;       /* rate limit of WST032 (per child) */

/* How the child stops: set by the child_stopping hook (2.4.49+ worker and
 * event) or by the SIGTERM/SIGHUP wrapper (prefork). */
static volatile sig_atomic_t hard_stop;
static volatile sig_atomic_t graceful_stop;
static volatile sig_atomic_t exiting;
static struct sigaction old_term, old_hup;

/* For the exit wait: the longest ProxyWebsocketDrain of a handed-over
 * tunnel, and how many open ones have none (they may run on for ever). */
static volatile apr_uint32_t max_drain_ms;
static volatile apr_uint32_t open_without_drain;

/* What a handed-over tunnel's end needs, in one malloc'd block. */
typedef struct wst_async_ctx {
    server_rec *s;
    const char *who;             /* "[client 192.0.2.1] /chat" */
    const char *record;          /* tunnel log record (first pass), or NULL */
    int tlog_fd;
    int drain_ms;
    int idle_ms;
    apr_size_t *busy;            /* the balancer member's busy count, or NULL */
} wst_async_ctx;

/* ---- the balancer's busy count (mod_proxy_balancer decrements it after
 * the handler; a handed-over tunnel keeps its member busy until it ends).
 * proxy_worker->s->busy is an apr_size_t on 2.2.15 and 2.4 alike. ---- */

static void wst_busy_inc(apr_size_t *busy)
{
    __sync_fetch_and_add(busy, (apr_size_t)1);
}

static void wst_busy_dec(apr_size_t *busy)
{
    apr_size_t now = *busy;

    while (now > 0) {
        apr_size_t was = __sync_val_compare_and_swap(busy, now, now - 1);
        if (was == now) {
            return;
        }
        now = was;
    }
}

/* ---- the end of a handed-over tunnel: on the reactor's thread ---- */

static void wst_async_log_end(const wst_async_ctx *x,
                              const wst_tunnel_stats *stats)
{
    const char *first = stats->closed_first == 1 ? "the client"
                        : stats->closed_first == 2 ? "the backend" : "neither side";

    switch (stats->reason) {
    case WST_END_CLIENT_ERROR:
    case WST_END_BACKEND_ERROR:
    case WST_END_POLL_ERROR:
        ap_log_error(APLOG_MARK, APLOG_INFO, (apr_status_t)stats->os_error,
                     x->s, WSTNO(026) "%s: tunnel ended on an error (%s)%s",
                     x->who, wst_end_reason_name(stats->reason),
                     stats->os_error ? "" : ", no OS error reported");
        break;
    case WST_END_IDLE:
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, x->s, WSTNO(023)
                     "%s: tunnel idle for %d ms: closed", x->who, x->idle_ms);
        break;
    case WST_END_PING_TIMEOUT:
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, x->s, WSTNO(024)
                     "%s: tunnel: no answer to the module's ping: closed "
                     "with 1001", x->who);
        break;
    case WST_END_GOING_AWAY:
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, x->s, WSTNO(025)
                     "%s: tunnel: httpd child going away: closed with 1001",
                     x->who);
        break;
    default:
        break;
    }
    if (stats->frames_lost_sync) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, x->s, WSTNO(027)
                     "%s: WebSocket frames from %s broke RFC 6455: frame "
                     "tracking stopped for that side (bytes still relayed; its "
                     "messages no longer counted, no pings or Close frames "
                     "from the module toward it)", x->who,
                     stats->frames_lost_sync == 3 ? "both sides"
                     : stats->frames_lost_sync == 1 ? "the client"
                                                    : "the backend");
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, x->s, WSTNO(012)
                 "%s: tunnel closed (end: %s, handed over): %" APR_UINT64_T_FMT
                 " bytes from the client, %" APR_UINT64_T_FMT " from the "
                 "backend, %" APR_UINT64_T_FMT " to the client, %"
                 APR_UINT64_T_FMT " to the backend; %s closed first; %u pings "
                 "sent, %u pongs consumed", x->who,
                 wst_end_reason_name(stats->reason),
                 (apr_uint64_t)stats->bytes_from_client,
                 (apr_uint64_t)stats->bytes_from_backend,
                 (apr_uint64_t)stats->bytes_to_client,
                 (apr_uint64_t)stats->bytes_to_backend, first,
                 (unsigned)stats->pings_sent, (unsigned)stats->pongs_consumed);
}

static void wst_async_end(void *end_ctx, const wst_tunnel_stats *stats,
                          uint64_t duration_ms)
{
    wst_async_ctx *x = end_ctx;

    wst_async_log_end(x, stats);
    wst_tlog_write(x->tlog_fd, x->record, stats, (apr_uint64_t)duration_ms);
    if (x->busy) {
        wst_busy_dec(x->busy);
    }
    if (!x->drain_ms) {
        apr_atomic_dec32(&open_without_drain);
    }
    wst_tunnel_release(1);
    free(x);
}

/* One block: the context and copies of its strings. */
static wst_async_ctx *wst_async_ctx_make(request_rec *r, const char *record,
                                         int drain_ms, int idle_ms,
                                         apr_size_t *busy)
{
    const char *who = apr_psprintf(r->pool, "[client %s] %s",
                                   WST_CLIENT_IP(r) ? WST_CLIENT_IP(r) : "-",
                                   r->uri ? r->uri : "-");
    apr_size_t who_len = strlen(who) + 1;
    apr_size_t rec_len = record ? strlen(record) + 1 : 0;
    wst_async_ctx *x = malloc(sizeof(*x) + who_len + rec_len);
    char *p;

    if (!x) {
        return NULL;
    }
    p = (char *)(x + 1);
    memcpy(p, who, who_len);
    x->who = p;
    p += who_len;
    if (record) {
        memcpy(p, record, rec_len);
        x->record = p;
    }
    else {
        x->record = NULL;
    }
    x->s = r->server;
    x->tlog_fd = record ? wst_tlog_fd(r->server) : -1;
    x->drain_ms = drain_ms;
    x->idle_ms = idle_ms;
    x->busy = busy;
    return x;
}

/* ---- the hand-over: on the worker, with r ---- */

/* A dup of fd for the reactor, close-on-exec, at or above 1024 when the
 * limit allows; -1 if none. (The system call, not fcntl(): see wst_io.c.) */
static int wst_dup_for_reactor(int fd)
{
    long d = syscall(SYS_fcntl, (long)fd, (long)F_DUPFD_CLOEXEC,
                     (long)WST_ASYNC_FD_FLOOR);

    if (d < 0) {
        d = syscall(SYS_fcntl, (long)fd, (long)F_DUPFD_CLOEXEC, 0L);
    }
    if (d < 0) {                        /* a kernel before 2.6.24 */
        d = syscall(SYS_fcntl, (long)fd, (long)F_DUPFD, 0L);
        if (d >= 0) {
            syscall(SYS_fcntl, d, (long)F_SETFD, (long)FD_CLOEXEC);
        }
    }
    return d >= 0 ? (int)d : -1;
}

/* Read, without blocking, what a connection's input filters (and its
 * socket, right now) have, into buf. 1: all of it (the filters said EAGAIN
 * or the end); 0: buf filled up first, more may be held. */
static int wst_drain_filters(conn_rec *c, apr_bucket_brigade *bb,
                             unsigned char *buf, apr_size_t cap,
                             apr_size_t *len)
{
    *len = 0;
    for (;;) {
        apr_size_t got = 0;
        int eos = 0;
        apr_status_t rv;

        if (*len == cap) {
            return 0;
        }
        rv = wst_read_flat(c, bb, APR_NONBLOCK_READ, (char *)buf + *len,
                           cap - *len, &got, &eos);
        if (rv != APR_SUCCESS) {
            /* EAGAIN: nothing more; EOF or an error: the reactor's own
             * read of the socket sees the same end. */
            return 1;
        }
        *len += got;
        if (eos || !got) {
            return 1;
        }
    }
}

/* Why a tunnel stays on its worker although ProxyWebsocketAsync is on, for
 * the admin: said at info, at most once a minute per child. */
static void wst_async_notice(request_rec *r, const char *why)
{
    apr_time_t now = apr_time_now();

    if (now - last_fd_notice < apr_time_from_sec(60)) {
        return;
    }
    last_fd_notice = now;
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(032)
                  "tunnel kept on its worker thread: %s (said at most once "
                  "a minute)", why);
}

void wst_fed_free(wst_fed *fed)
{
    free(fed->to_backend);
    free(fed->to_client);
    memset(fed, 0, sizeof(*fed));
}

wst_handed wst_async_hand_over(request_rec *r, proxy_worker *worker,
                               proxy_conn_rec *backend, const char *pending,
                               apr_size_t pending_len, int websocket,
                               wst_fed *fed)
{
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);
    conn_rec *c = r->connection;
    conn_rec *backconn = backend->connection;
    apr_os_sock_t cfd = -1, bfd = -1;
    int cdup, bdup;
    unsigned char *to_backend = NULL, *to_client = NULL;
    apr_size_t tb_len = 0, tc_len = 0;
    int all_c, all_b;
    apr_bucket_brigade *bb;
    wst_async_tunnel t;
    wst_async_ctx *x = NULL;
    apr_size_t *busy = NULL;
    apr_uint32_t seed = 0;
    wst_status st;

    memset(fed, 0, sizeof(*fed));
    if (dconf->async == 0 || !backconn) {
        return WST_KEPT;
    }
    if (!reactor || !reactor_running) {
        wst_async_notice(r, "this child's reactor thread is not running "
                            "(see WST035 at its start)");
        return WST_KEPT;
    }
#if WST_HAVE_CONN_MASTER
    if (c->master) {
        return WST_KEPT;                /* an HTTP/2 stream */
    }
#endif
    if (backend->is_ssl || c->aborted || backconn->aborted
            || pending_len > WST_ASYNC_PENDING_MAX) {
        return WST_KEPT;
    }
#if WST_HAVE_DATA_IN_OUTPUT_FILTERS
    if (c->data_in_output_filters) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(033)
                      "tunnel kept on its worker: the 101 is not fully "
                      "written yet");
        return WST_KEPT;
    }
#endif
    /* No request timeouts on a tunnel (the threaded path drops it too),
     * then: nothing but the core's own filters on either connection. */
    wst_remove_filter(c, "reqtimeout", 1);
    if (!wst_is_raw(r, c, "client") || !wst_is_raw(r, backconn, "backend")) {
        return WST_KEPT;                /* TLS or another filter */
    }
    if (apr_os_sock_get(&cfd, WST_CONN_SOCKET(c)) != APR_SUCCESS || cfd < 0
            || apr_os_sock_get(&bfd, backend->sock) != APR_SUCCESS
            || bfd < 0) {
        return WST_KEPT;
    }
    cdup = wst_dup_for_reactor(cfd);
    bdup = cdup >= 0 ? wst_dup_for_reactor(bfd) : -1;
    if (bdup < 0 || !wst_reactor_can_take(reactor, cdup > bdup ? cdup : bdup)) {
        if (cdup >= 0) {
            close(cdup);
        }
        if (bdup >= 0) {
            close(bdup);
        }
        wst_async_notice(r, "descriptors are near this child's limit "
                            "(RLIMIT_NOFILE; raise LimitNOFILE or ulimit -n)");
        return WST_KEPT;
    }

    /* From here on bytes are taken from httpd's filters: they reach their
     * peer whether the reactor takes the tunnel or not. */
    to_backend = malloc(WST_ASYNC_PENDING_MAX);
    to_client = malloc(WST_ASYNC_PENDING_MAX);
    if (!to_backend || !to_client) {
        free(to_backend);
        free(to_client);
        close(cdup);
        close(bdup);
        return WST_KEPT;
    }
    memcpy(to_client, pending, pending_len);
    bb = apr_brigade_create(r->pool, c->bucket_alloc);
    all_c = wst_drain_filters(c, bb, to_backend, WST_ASYNC_PENDING_MAX,
                              &tb_len);
    apr_brigade_cleanup(bb);
    bb = apr_brigade_create(r->pool, backconn->bucket_alloc);
    all_b = wst_drain_filters(backconn, bb, to_client + pending_len,
                              WST_ASYNC_PENDING_MAX - pending_len, &tc_len);
    tc_len += pending_len;

    st = WST_ERR_SPACE;
    if (all_c && all_b) {
        int drain_ms = dconf->drain > 0
                       ? (int)apr_time_as_msec(dconf->drain) : 0;
        int idle_ms = dconf->idle_timeout > 0
                      ? (int)apr_time_as_msec(dconf->idle_timeout) : 0;

        /* A balancer member (mod_proxy_balancer set the variable):
         * worker->s->busy, the same field on 2.2.15 and 2.4. */
        if (apr_table_get(r->subprocess_env, "BALANCER_WORKER_NAME")
                && worker && worker->s) {
            busy = &worker->s->busy;
        }
        x = wst_async_ctx_make(r, wst_tlog_begin(r, "async"), drain_ms,
                               idle_ms, busy);
    }
    if (x) {
        memset(&t, 0, sizeof(t));
        t.client_fd = cdup;
        t.backend_fd = bdup;
        t.to_backend = to_backend;
        t.to_backend_len = tb_len;
        t.to_client = to_client;
        t.to_client_len = tc_len;
        /* The settings as wst_run_tunnel computes them (wst_io.c). */
        t.cfg.idle_timeout_ms = x->idle_ms;
        t.cfg.half_close = apr_table_get(r->subprocess_env, "proxy-nohalfclose")
                           ? 0 : 1;
        t.cfg.websocket = websocket ? 1 : 0;
        t.cfg.ping_interval_ms = websocket && dconf->ping > 0
                                 ? (int)apr_time_as_msec(dconf->ping) : 0;
        t.cfg.idle_close_frame = websocket ? 1 : 0;
        if (apr_generate_random_bytes((unsigned char *)&seed, sizeof(seed))
                != APR_SUCCESS) {
            seed = (apr_uint32_t)(apr_time_now() ^ (apr_time_t)getpid()
                                  ^ (apr_time_t)cfd);
        }
        t.cfg.random_seed = seed ^ 0x9e3779b9u;
        t.drain_ms = x->drain_ms;
        t.end = wst_async_end;
        t.end_ctx = x;

        /* Counted as handed over before the reactor may end it. */
        wst_tunnel_to_async(r);
        if (busy) {
            wst_busy_inc(busy);
        }
        if (!x->drain_ms) {
            apr_atomic_inc32(&open_without_drain);
        }
        else {
            apr_uint32_t m = apr_atomic_read32(&max_drain_ms);
            while ((apr_uint32_t)x->drain_ms > m
                   && apr_atomic_cas32(&max_drain_ms,
                                       (apr_uint32_t)x->drain_ms, m) != m) {
                m = apr_atomic_read32(&max_drain_ms);
            }
        }
        st = wst_reactor_adopt(reactor, &t);
        if (st != WST_OK) {
            if (!x->drain_ms) {
                apr_atomic_dec32(&open_without_drain);
            }
            if (busy) {
                wst_busy_dec(busy);
            }
            wst_tunnel_from_async(r);
            free(x);
        }
    }
    if (st == WST_OK) {
        free(to_backend);
        free(to_client);
        /* httpd only close()s its own descriptors now: no FIN, no lingering
         * read, no keep-alive; mod_proxy drops the backend connection. */
        c->keepalive = AP_CONN_CLOSE;
        c->aborted = 1;
        backconn->keepalive = AP_CONN_CLOSE;
        backconn->aborted = 1;
        backend->close = 1;
        apr_table_setn(r->notes, "wstunnel-end", "handed-over");
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(031)
                      "tunnel handed to the child's reactor (descriptors %d "
                      "and %d; %" APR_SIZE_T_FMT " bytes to the backend and %"
                      APR_SIZE_T_FMT " to the client already read)", cdup, bdup,
                      tb_len, tc_len);
        return WST_HANDED;
    }

    /* Not taken: the tunnel runs here, nothing lost: the threaded tunnel
     * starts with what was read from both sides (its frame tracking sees
     * every byte). */
    close(cdup);
    close(bdup);
    ap_log_rerror(APLOG_MARK, (all_c && all_b) ? APLOG_WARNING : APLOG_DEBUG,
                  0, r, WSTNO(034)
                  "tunnel kept on its worker thread after its buffered bytes "
                  "were read: %s", !(all_c && all_b)
                  ? "the peers had sent 64 KiB already (the threaded tunnel "
                    "starts with them)"
                  : x == NULL ? "out of memory"
                  : "the reactor refused it (out of memory or stopping)");
    fed->to_backend = (char *)to_backend;
    fed->to_backend_len = tb_len;
    fed->to_client = (char *)to_client;
    fed->to_client_len = tc_len;
    return WST_KEPT_FED;
}

/* ---- the child: the reactor's thread, its start and its end ---- */

static void *APR_THREAD_FUNC wst_reactor_main(apr_thread_t *thd, void *data)
{
    (void)thd;
    wst_reactor_run(data);      /* blocks every signal on this thread */
    return NULL;
}

/* prefork: SIGTERM (stop) and SIGHUP (restart) end a child at once; the
 * parent's graceful signals do not come here. The flag tells the exit below
 * that this is a hard stop; then prefork's own handler (just_die) runs. If
 * the child is already waiting for its tunnels (a graceful exit, in the main
 * loop), the flag alone makes that wait end within a second. */
static void wst_chain(int sig, const struct sigaction *old)
{
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) {
            old->sa_sigaction(sig, NULL, NULL);
        }
    }
    else if (old->sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    else if (old->sa_handler != SIG_IGN && old->sa_handler) {
        old->sa_handler(sig);
    }
}

static void wst_on_stop_signal(int sig)
{
    hard_stop = 1;
    if (exiting) {
        return;
    }
    wst_chain(sig, sig == SIGHUP ? &old_hup : &old_term);
}

/* While the child waits for its tunnels, a stop that follows a graceful
 * one (SIGTERM or SIGHUP from the parent, or prefork's parent's killpg)
 * must still end them within a second. By then every MPM has set those
 * signals to SIG_IGN (prefork's clean_child_exit) or to a handler that does
 * nothing (worker, event): this flag-only handler takes their place. */
static void wst_watch_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wst_on_stop_signal;     /* exiting: only the flag */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void wst_wrap_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wst_on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, NULL, &old_term) == 0
            && old_term.sa_handler != SIG_IGN) {
        sa.sa_flags = old_term.sa_flags & ~SA_SIGINFO;
        sigaction(SIGTERM, &sa, NULL);
    }
    if (sigaction(SIGHUP, NULL, &old_hup) == 0
            && old_hup.sa_handler != SIG_IGN) {
        sa.sa_flags = old_hup.sa_flags & ~SA_SIGINFO;
        sigaction(SIGHUP, &sa, NULL);
    }
}

#if WST_HAVE_CHILD_STOPPING
/* 2.4.49+ worker and event say how they stop (prefork always says 0:
 * its signal wrapper decides there). */
static void wst_child_stopping(apr_pool_t *pchild, int graceful)
{
    (void)pchild;
    if (is_prefork) {
        return;
    }
    if (graceful) {
        graceful_stop = 1;
    }
    else {
        hard_stop = 1;
    }
}
#endif

static wst_stop wst_exit_how(void)
{
    return hard_stop ? WST_STOP_SHUTDOWN : WST_STOP_GOING_AWAY;
}

/* The child pool's pre-cleanup: runs as the child exits, before its pools
 * and threads go. Graceful (or unknown: 2.2 worker, 2.4 worker and event
 * before 2.4.49): each tunnel's drain window starts; the wait ends when the
 * tunnels did, or at the longest window plus a few seconds for the Close
 * handshakes, or never while tunnels without a window are open (stock
 * httpd's old children live as long as their tunnels too). Hard: Close 1001
 * and at most ~600 ms. Then the reactor quits, cutting what is left. */
static apr_status_t wst_async_child_exit(void *unused)
{
    apr_time_t start = apr_time_now(), hard_since = 0;
    wst_stop how;
    size_t n;

    (void)unused;
    if (!reactor) {
        return APR_SUCCESS;
    }
    exiting = 1;
    how = wst_exit_how();
    if (how == WST_STOP_SHUTDOWN) {
        hard_since = start;
    }
    wst_reactor_stop(reactor, how);
    n = wst_reactor_tunnels(reactor);
    if (n && how != WST_STOP_SHUTDOWN) {
        wst_watch_stop_signals();
    }
    if (n) {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, main_server, WSTNO(038)
                     "child %ld exiting (%s) with %lu handed-over tunnel%s: "
                     "waiting for %s", (long)getpid(),
                     how == WST_STOP_SHUTDOWN ? "stop" : "graceful",
                     (unsigned long)n, n == 1 ? "" : "s",
                     how == WST_STOP_SHUTDOWN ? "their Close 1001 (under a second)"
                     : apr_atomic_read32(&open_without_drain)
                       ? "them to end (some have no ProxyWebsocketDrain)"
                       : "their ProxyWebsocketDrain window");
    }
    while (wst_reactor_tunnels(reactor) > 0) {
        apr_time_t now = apr_time_now();

        if (how != WST_STOP_SHUTDOWN && wst_exit_how() == WST_STOP_SHUTDOWN) {
            how = WST_STOP_SHUTDOWN;    /* a stop after a graceful one */
            hard_since = now;
            wst_reactor_stop(reactor, how);
        }
        if (how == WST_STOP_SHUTDOWN) {
            if (now - hard_since >= WST_TIME_FROM_MSEC(WST_EXIT_HARD_MS)) {
                break;
            }
        }
        else if (!apr_atomic_read32(&open_without_drain)
                 && now - start >= WST_TIME_FROM_MSEC(
                        (apr_int64_t)apr_atomic_read32(&max_drain_ms)
                        + WST_EXIT_CLOSE_MARGIN_MS)) {
            break;
        }
        apr_sleep(WST_TIME_FROM_MSEC(WST_EXIT_POLL_MS));
    }
    n = wst_reactor_tunnels(reactor);
    wst_reactor_quit(reactor);
    if (reactor_thread) {
        apr_status_t trv;
        apr_thread_join(&trv, reactor_thread);
    }
    reactor_running = 0;
    wst_reactor_destroy(reactor);
    reactor = NULL;
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, main_server, WSTNO(039)
                 "child %ld: reactor stopped after %" APR_TIME_T_FMT " ms (%lu "
                 "tunnel%s cut at the end)", (long)getpid(),
                 (apr_time_t)apr_time_as_msec(apr_time_now() - start),
                 (unsigned long)n, n == 1 ? "" : "s");
    return APR_SUCCESS;
}

void wst_async_child_init(apr_pool_t *pchild, server_rec *s)
{
    struct rlimit rl;
    int threaded = 0;
    apr_status_t rv;

    main_server = s;
    /* Two descriptors per handed-over tunnel: take the whole hard limit. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        if (rl.rlim_max == RLIM_INFINITY) {
            rl.rlim_cur = 1048576;
        }
        else {
            rl.rlim_cur = rl.rlim_max;
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, WSTNO(037)
                         "descriptor limit (RLIMIT_NOFILE) raised from %lu "
                         "to %lu", (unsigned long)was,
                         (unsigned long)rl.rlim_cur);
        }
    }
    if (ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded) == APR_SUCCESS
            && threaded == AP_MPMQ_NOT_SUPPORTED) {
        is_prefork = 1;
    }

    reactor = wst_reactor_create();
    if (!reactor) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, WSTNO(035)
                     "no reactor for this child (out of memory or "
                     "descriptors): its tunnels keep their worker threads");
        return;
    }
    rv = apr_thread_create(&reactor_thread, NULL, wst_reactor_main, reactor,
                           pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, WSTNO(035)
                     "could not start this child's reactor thread: its "
                     "tunnels keep their worker threads");
        wst_reactor_destroy(reactor);
        reactor = NULL;
        reactor_thread = NULL;
        return;
    }
    reactor_running = 1;
    apr_pool_pre_cleanup_register(pchild, NULL, wst_async_child_exit);
    if (is_prefork) {
        wst_wrap_stop_signals();
    }
}

void wst_async_register_hooks(void)
{
#if WST_HAVE_CHILD_STOPPING
    ap_hook_child_stopping(wst_child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
#endif
}
