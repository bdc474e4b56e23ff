/*
 * wst_io.c: the tunnel's two endpoints as the Rust core sees them.
 *
 * An endpoint whose connection has only httpd's core filters is "raw": after
 * the bytes the input filters already hold are drained through ap_get_brigade,
 * the core moves bytes on the socket itself. Any other endpoint (mod_ssl,
 * ...) is "filtered": every read and write goes through the callbacks below.
 * mod_logio's %I/%O are kept right for the bytes the core moved itself.
 *
 * An HTTP/2 stream (RFC 8441, httpd 2.4.58+) is a filtered client of its
 * own kind: its connection is mod_http2's secondary one, whose socket is the
 * whole h2 connection's (mod_http2 even installs a process-wide dummy), so
 * the tunnel polls the descriptor httpd gives for the stream's input (see
 * wst_h2_input_fd) and moves every byte through the connection's filters.
 */
#include "wst_shim.h"
#include "ap_mpm.h"
#include "apr_optional.h"
#include "apr_poll.h"
#include "apr_portable.h"
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifndef F_DUPFD_CLOEXEC
#define F_DUPFD_CLOEXEC 1030    /* Linux 2.6.24; older kernels: EINVAL */
#endif

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

/* Per direction. Raw-to-raw tunnels splice and touch their buffers only for
 * what httpd's filters had already read; filtered ones (TLS) read and write
 * up to this much at a time. */
#define WST_TUNNEL_BUF (64 * 1024)
#define WST_TICK_MS 250

/* One side of the tunnel as the endpoint callbacks see it. */
typedef struct wst_io_ctx {
    request_rec *r;
    conn_rec *c;
    apr_socket_t *sock;
    apr_bucket_brigade *bb;
    const char *name;       /* "client" or "backend", for the log */
} wst_io_ctx;

typedef struct wst_endpoint_ctx {
    wst_io_ctx io;
    apr_bucket_brigade *out;   /* for writes */
    int eof;                   /* an EOS was seen behind returned data */
    int eos_sent;              /* HTTP/2: the stream's END_STREAM went out */
    apr_uint64_t filtered_in;  /* bytes read through the input filters */
    apr_uint64_t filtered_out; /* bytes written through the output filters */
} wst_endpoint_ctx;

apr_status_t wst_write_flush(conn_rec *c, apr_bucket_brigade *bb,
                             const char *buf, apr_size_t len)
{
    apr_status_t rv;

    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(buf, len,
                                                            c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
    rv = ap_pass_brigade(c->output_filters, bb);
    apr_brigade_cleanup(bb);
    if (rv == APR_SUCCESS && c->aborted) {
        rv = APR_ECONNABORTED;
    }
    return rv;
}

apr_status_t wst_read_flat(conn_rec *c, apr_bucket_brigade *bb,
                           apr_read_type_e block, char *buf, apr_size_t cap,
                           apr_size_t *got, int *eos)
{
    apr_status_t rv;
    apr_size_t len = cap;
    apr_bucket *e;

    *got = 0;
    *eos = 0;
    apr_brigade_cleanup(bb);
    rv = ap_get_brigade(c->input_filters, bb, AP_MODE_READBYTES, block, cap);
    if (rv != APR_SUCCESS) {
        apr_brigade_cleanup(bb);
        return rv;
    }
    for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb);
         e = APR_BUCKET_NEXT(e)) {
        if (APR_BUCKET_IS_EOS(e)) {
            *eos = 1;
        }
    }
    rv = apr_brigade_flatten(bb, buf, &len);
    apr_brigade_cleanup(bb);
    if (rv == APR_SUCCESS) {
        *got = len;
    }
    return rv;
}

void wst_remove_filter(conn_rec *c, const char *name, int input)
{
    ap_filter_t *f = input ? c->input_filters : c->output_filters;

    while (f) {
        ap_filter_t *next = f->next;
        if (f->frec && f->frec->name && WST_CASECMP(f->frec->name, name) == 0) {
            if (input) {
                ap_remove_input_filter(f);
            }
            else {
                ap_remove_output_filter(f);
            }
        }
        f = next;
    }
}

static wst_io ep_read(void *vctx, unsigned char *buf, size_t cap, size_t *n,
                      int *os_error)
{
    wst_endpoint_ctx *ctx = vctx;
    apr_status_t rv;
    apr_size_t len = 0;
    int eos = 0;

    if (ctx->eof) {
        return WST_IO_EOF;
    }
    rv = wst_read_flat(ctx->io.c, ctx->io.bb, APR_NONBLOCK_READ, (char *)buf,
                       cap, &len, &eos);
    if (APR_STATUS_IS_EAGAIN(rv)) {
        return WST_IO_AGAIN;
    }
    if (APR_STATUS_IS_EOF(rv)) {
        return WST_IO_EOF;
    }
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, ctx->io.r, WSTNO(020)
                      "tunnel: reading from the %s failed", ctx->io.name);
        *os_error = (int)rv;
        return WST_IO_ERROR;
    }
    if (!len) {
        return eos ? WST_IO_EOF : WST_IO_AGAIN;
    }
    ctx->eof = eos;
    ctx->filtered_in += len;
    *n = len;
    return WST_IO_OK;
}

static wst_io ep_write(void *vctx, const unsigned char *buf, size_t len,
                       size_t *n, int *os_error)
{
    wst_endpoint_ctx *ctx = vctx;
    apr_status_t rv = wst_write_flush(ctx->io.c, ctx->out, (const char *)buf,
                                      len);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, ctx->io.r, WSTNO(021)
                      "tunnel: writing to the %s failed", ctx->io.name);
        *os_error = (int)rv;
        return WST_IO_ERROR;
    }
    ctx->filtered_out += len;
    *n = len;
    return WST_IO_OK;
}

static wst_io ep_shutdown_write(void *vctx, int *os_error)
{
    wst_endpoint_ctx *ctx = vctx;
    apr_status_t rv = apr_socket_shutdown(ctx->io.sock, APR_SHUTDOWN_WRITE);

    if (rv != APR_SUCCESS) {
        *os_error = (int)rv;
        return WST_IO_ERROR;
    }
    return WST_IO_OK;
}

static const wst_endpoint_ops wst_filter_ops = {
    ep_read, ep_write, ep_shutdown_write
};

#if WST_HAVE_POLLFD_FROM_CONN
/* The HTTP/2 stream's callbacks (writes are ep_write's: mod_http2's output
 * filter puts the bytes into the stream's output beam, blocking while it is
 * full, up to the server's Timeout).
 *
 * Reads: mod_http2's input filter answers a non-blocking read with the
 * stream's DATA, or EAGAIN after draining the pipe that poll() watches (so a
 * byte arriving later signals it again), APR_EOF once the client ended the
 * stream (END_STREAM), ECONNABORTED once it was reset (RST_STREAM, or the h2
 * connection closing: mod_http2 aborts the stream and signals the pipe).
 * An EOS bucket is not the end: on an upgraded stream mod_http2 puts one
 * first, ending the GET's (empty) body; only APR_EOF ends the input. */
static wst_io ep_read_h2(void *vctx, unsigned char *buf, size_t cap,
                         size_t *n, int *os_error)
{
    wst_endpoint_ctx *ctx = vctx;
    int tries;

    for (tries = 0; tries < 4; tries++) {
        apr_size_t len = 0;
        int eos = 0;
        apr_status_t rv = wst_read_flat(ctx->io.c, ctx->io.bb,
                                        APR_NONBLOCK_READ, (char *)buf, cap,
                                        &len, &eos);
        if (APR_STATUS_IS_EAGAIN(rv)) {
            return WST_IO_AGAIN;
        }
        if (APR_STATUS_IS_EOF(rv)) {
            return WST_IO_EOF;
        }
        if (rv != APR_SUCCESS) {
            if (ctx->eos_sent && (APR_STATUS_IS_ECONNABORTED(rv)
                                  || APR_STATUS_IS_ECONNRESET(rv))) {
                /* Our END_STREAM went out: the client's END_STREAM or reset
                 * closed the stream, and mod_http2 ends it so. */
                return WST_IO_EOF;
            }
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, ctx->io.r, WSTNO(020)
                          "tunnel: reading from the %s (HTTP/2 stream) failed",
                          ctx->io.name);
            *os_error = (int)rv;
            return WST_IO_ERROR;
        }
        if (len) {
            ctx->filtered_in += len;
            *n = len;
            return WST_IO_OK;
        }
        /* only metadata (that EOS, a FLUSH): read on */
    }
    /* Nothing but metadata so far: the pipe still holds the signal of
     * whatever is left, so poll() comes straight back if there is more. */
    return WST_IO_AGAIN;
}

/* The write side's end, RFC 8441's equivalent of a FIN: END_STREAM (an EOS
 * through the stream's filters), once. The request's own end then sends no
 * second one (r->eos_sent). */
static wst_io ep_shutdown_h2(void *vctx, int *os_error)
{
    wst_endpoint_ctx *ctx = vctx;
    conn_rec *c = ctx->io.c;
    apr_status_t rv;

    if (ctx->eos_sent) {
        return WST_IO_OK;
    }
    ctx->eos_sent = 1;
    ctx->io.r->eos_sent = 1;
    APR_BRIGADE_INSERT_TAIL(ctx->out, apr_bucket_eos_create(c->bucket_alloc));
    rv = ap_pass_brigade(c->output_filters, ctx->out);
    apr_brigade_cleanup(ctx->out);
    if (rv != APR_SUCCESS) {
        *os_error = (int)rv;
        return WST_IO_ERROR;
    }
    return WST_IO_OK;
}

static const wst_endpoint_ops wst_h2_ops = {
    ep_read_h2, ep_write, ep_shutdown_h2
};

/* The descriptor to poll for an HTTP/2 stream's input, or -1. */
static int wst_h2_input_fd(request_rec *r, conn_rec *c)
{
    apr_pollfd_t pfd;

    memset(&pfd, 0, sizeof(pfd));
    pfd.p = r->pool;
    pfd.desc_type = APR_NO_DESC;
    if (ap_get_pollfd_from_conn(c, &pfd, NULL) != APR_SUCCESS) {
        return -1;
    }
    if (pfd.desc_type == APR_POLL_FILE && pfd.desc.f) {
        apr_os_file_t fd = -1;
        if (apr_os_file_get(&fd, pfd.desc.f) == APR_SUCCESS) {
            return (int)fd;
        }
    }
    else if (pfd.desc_type == APR_POLL_SOCKET && pfd.desc.s) {
        apr_os_sock_t fd = -1;
        if (apr_os_sock_get(&fd, pfd.desc.s) == APR_SUCCESS) {
            return (int)fd;
        }
    }
    return -1;
}
#endif

/* The filters httpd puts on every plain connection and that the core may
 * bypass: the core ones, and mod_logio's counter (accounted for below). */
static int wst_passive_filter(const char *name)
{
    return WST_CASECMP(name, "core") == 0
           || WST_CASECMP(name, "core_in") == 0
           || WST_CASECMP(name, "log_input_output") == 0;
}

int wst_is_raw(request_rec *r, conn_rec *c, const char *name)
{
    ap_filter_t *f;
    int raw = 1;

    for (f = c->input_filters; f; f = f->next) {
        ap_log_rerror(APLOG_MARK, APLOG_TRACE2, 0, r,
                      "tunnel: %s input filter %s", name, f->frec->name);
        raw &= wst_passive_filter(f->frec->name);
    }
    for (f = c->output_filters; f; f = f->next) {
        ap_log_rerror(APLOG_MARK, APLOG_TRACE2, 0, r,
                      "tunnel: %s output filter %s", name, f->frec->name);
        raw &= wst_passive_filter(f->frec->name);
    }
    return raw;
}

typedef struct wst_mapping {
    void *addr;
    apr_size_t len;
} wst_mapping;

static apr_status_t wst_unmap_buffer(void *vm)
{
    wst_mapping *m = vm;

    munmap(m->addr, m->len);
    return APR_SUCCESS;
}

/* A tunnel buffer of len bytes in an anonymous mapping of its own, unmapped
 * with the pool: its pages take memory only once bytes pass through them, so
 * an idle tunnel, or a spliced one, holds no resident memory for its buffers
 * (pool memory would be recycled, already-touched memory). The pool if mmap
 * fails. */
static unsigned char *wst_tunnel_buffer(apr_pool_t *p, apr_size_t len)
{
    void *addr = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    wst_mapping *m;

    if (addr == MAP_FAILED) {
        return apr_palloc(p, len);
    }
    m = apr_palloc(p, sizeof(*m));
    m->addr = addr;
    m->len = len;
    apr_pool_cleanup_register(p, m, wst_unmap_buffer, apr_pool_cleanup_null);
    return addr;
}

/* sock: the connection's socket (NULL for an HTTP/2 stream); poll_fd: the
 * descriptor the core polls (-1: the socket's). */
static void wst_endpoint_init(request_rec *r, conn_rec *c, apr_socket_t *sock,
                              int poll_fd, const char *name,
                              apr_size_t pending_len,
                              wst_endpoint_ctx *ctx, wst_endpoint *ep)
{
    /* Room for what was already read from this side (a hand-over that fell
     * back brings up to WST_ASYNC_PENDING_MAX), and at least the usual. */
    apr_size_t cap = pending_len > WST_TUNNEL_BUF ? pending_len : WST_TUNNEL_BUF;
    apr_os_sock_t fd = -1;

    memset(ctx, 0, sizeof(*ctx));
    ctx->io.r = r;
    ctx->io.c = c;
    ctx->io.sock = sock;
    ctx->io.name = name;
    ctx->io.bb = apr_brigade_create(r->pool, c->bucket_alloc);
    ctx->out = apr_brigade_create(r->pool, c->bucket_alloc);

    if (sock) {
        apr_os_sock_get(&fd, sock);
    }
    memset(ep, 0, sizeof(*ep));
    ep->fd = poll_fd >= 0 ? poll_fd : fd;
    ep->raw = wst_is_raw(r, c, name);
    ep->ctx = ctx;
    ep->ops = &wst_filter_ops;
    ep->buf = wst_tunnel_buffer(r->pool, cap);
    ep->buf_cap = cap;
    ep->buf_len = 0;
}

/* The tunnel's own descriptor of the client socket (a dup): on a hard
 * stop the event and worker MPMs close the descriptors of the connections
 * their workers serve while the tunnel still runs. With its own, the tunnel
 * never polls, reads or writes a descriptor number that may meanwhile have
 * been reused for something else, and it can still send Close 1001 to the
 * client (wst_drain.c). Closed as soon as the tunnel ends, and with the
 * pool should anything return early; -1 when none could be had (then the
 * shared one is used, as before). */
static apr_status_t wst_close_fd(void *p)
{
    int *fd = p;

    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
    return APR_SUCCESS;
}

static int *wst_own_fd(apr_pool_t *p, apr_socket_t *sock)
{
    apr_os_sock_t fd = -1;
    int *own = apr_palloc(p, sizeof(*own));

    *own = -1;
    if (apr_os_sock_get(&fd, sock) == APR_SUCCESS && fd >= 0) {
        /* The system call, not fcntl(): i386 glibc 2.28+ versions the fcntl
         * symbol GLIBC_2.28, which CentOS 6 lacks (as src/sys.rs). */
        long dup = syscall(SYS_fcntl, (long)fd, (long)F_DUPFD_CLOEXEC, 0L);
        *own = dup >= 0 ? (int)dup : -1;
    }
    apr_pool_cleanup_register(p, own, wst_close_fd, apr_pool_cleanup_null);
    return own;
}

typedef struct wst_tunnel_state {
    wst_endpoint_ctx cctx, bctx;
    wst_endpoint client, backend;
    wst_drain drain;
    wst_tunnel_config cfg;
} wst_tunnel_state;

#if WST_HAVE_POLLFD_FROM_CONN
/* HTTP/2: mod_http2 marks a stream it reset or gave up (RST_STREAM, the h2
 * connection closing) aborted, and waits for its worker to finish before it
 * lets the h2 connection go. The pipe signal makes the next read fail; this
 * catches the case where the tunnel no longer reads the client (it ended
 * its stream) and waits on an idle backend. Then the drain's answer. */
static wst_stop wst_h2_should_stop(void *vt)
{
    wst_tunnel_state *t = vt;

    if (t->cctx.io.c->aborted) {
        return WST_STOP_NOW;
    }
    return wst_drain_should_stop(&t->drain);
}
#endif

void wst_run_tunnel(request_rec *r, proxy_conn_rec *backend,
                    const char *pending, apr_size_t pending_len,
                    const char *client_pending, apr_size_t client_pending_len,
                    int websocket, wst_tunnel_stats *stats)
{
    APR_OPTIONAL_FN_TYPE(ap_logio_add_bytes_in) *logio_in =
        APR_RETRIEVE_OPTIONAL_FN(ap_logio_add_bytes_in);
    APR_OPTIONAL_FN_TYPE(ap_logio_add_bytes_out) *logio_out =
        APR_RETRIEVE_OPTIONAL_FN(ap_logio_add_bytes_out);
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);
    conn_rec *c = r->connection;
    conn_rec *backconn = backend->connection;
    apr_socket_t *client_sock = WST_CONN_SOCKET(c);
    int *client_fd = NULL;
    int h2_fd = -1;
    /* The tunnel's state lives in the request pool, not on this thread's
     * stack: the pool's current block usually has room for it, while stack
     * pages touched once stay resident with the thread for the tunnel's
     * whole life (memory per idle tunnel, issue #4). */
    wst_tunnel_state *t = apr_pcalloc(r->pool, sizeof(*t));
    wst_status st;

    /* A bidirectional stream: no request timeouts, no coalescing, nothing
     * after it on either connection. */
    wst_remove_filter(c, "reqtimeout", 1);
    wst_remove_filter(c, "SSL/TLS Coalescing Filter", 0);
    wst_remove_filter(backconn, "SSL/TLS Coalescing Filter", 0);
    r->input_filters = r->proto_input_filters = c->input_filters;
    r->output_filters = r->proto_output_filters = c->output_filters;
    c->keepalive = AP_CONN_CLOSE;
    backconn->keepalive = AP_CONN_CLOSE;

#if WST_HAVE_POLLFD_FROM_CONN
    if (c->master) {
        /* An HTTP/2 stream: c's socket is not this stream's (see above).
         * The drain watches the h2 connection's socket, which is what an
         * MPM's hard stop closes. */
        h2_fd = wst_h2_input_fd(r, c);
        if (h2_fd < 0) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(028)
                          "tunnel: the HTTP/2 stream has no descriptor to "
                          "poll any more");
            memset(stats, 0, sizeof(*stats));
            stats->reason = WST_END_CLIENT_ERROR;
            c->aborted = 1;
            return;
        }
        client_sock = WST_CONN_SOCKET(c->master);
        wst_endpoint_init(r, c, NULL, h2_fd, "client", client_pending_len,
                          &t->cctx, &t->client);
        t->client.raw = 0;
        t->client.ops = &wst_h2_ops;
    }
    else
#endif
    {
        client_fd = wst_own_fd(r->pool, client_sock);
        wst_endpoint_init(r, c, client_sock, *client_fd, "client",
                          client_pending_len, &t->cctx, &t->client);
    }
    wst_endpoint_init(r, backconn, backend->sock, -1, "backend", pending_len,
                      &t->bctx, &t->backend);
    memcpy(t->backend.buf, pending, pending_len);
    t->backend.buf_len = pending_len;
    /* What the hand-over had read from the client (wst_async.c) */
    if (client_pending_len) {
        memcpy(t->client.buf, client_pending, client_pending_len);
        t->client.buf_len = client_pending_len;
        t->cctx.filtered_in = client_pending_len;   /* mod_logio saw them */
    }

    wst_drain_init(&t->drain, r, client_sock,
                   dconf->drain > 0 ? dconf->drain : 0);

    t->cfg.idle_timeout_ms = dconf->idle_timeout > 0
                             ? (int)apr_time_as_msec(dconf->idle_timeout) : 0;
    t->cfg.tick_ms = WST_TICK_MS;
    t->cfg.half_close = apr_table_get(r->subprocess_env, "proxy-nohalfclose")
                     ? 0 : 1;
    t->cfg.stop_ctx = &t->drain;
    t->cfg.should_stop = wst_drain_should_stop;
#if WST_HAVE_POLLFD_FROM_CONN
    if (h2_fd >= 0) {
        t->cfg.stop_ctx = t;
        t->cfg.should_stop = wst_h2_should_stop;
    }
#endif
    t->cfg.websocket = websocket ? 1 : 0;
    t->cfg.ping_interval_ms = websocket && dconf->ping > 0
                           ? (int)apr_time_as_msec(dconf->ping) : 0;
    t->cfg.idle_close_frame = websocket ? 1 : 0;
    t->cfg.random_seed = t->drain.seed ^ 0x9e3779b9u;
    /* The core's state in the pool too (pool memory is aligned for any
     * type): the stack under the waiting tunnel stays shallow. */
    t->cfg.state_len = wst_tunnel_state_size();
    t->cfg.state = apr_palloc(r->pool, t->cfg.state_len);

    ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                  "tunnel: client %s, backend %s, idle timeout %d ms, "
                  "ping %d ms, %s",
                  h2_fd >= 0 ? "HTTP/2 stream"
                  : t->client.raw ? "raw" : "filtered",
                  t->backend.raw ? "raw" : "filtered", t->cfg.idle_timeout_ms,
                  t->cfg.ping_interval_ms,
                  websocket ? "WebSocket frames" : "opaque bytes");

    memset(stats, 0, sizeof(*stats));
    if (t->client.fd < 0 || t->backend.fd < 0) {
        /* The MPM closed the connection under us (a hard stop closes the
         * sockets of the connections its workers serve). */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(070)
                      "tunnel not started: the %s connection is already "
                      "closed", t->client.fd < 0 ? "client" : "backend");
        stats->reason = t->client.fd < 0 ? WST_END_CLIENT_ERROR
                                         : WST_END_BACKEND_ERROR;
        c->aborted = 1;
        if (client_fd) {
            apr_pool_cleanup_run(r->pool, client_fd, wst_close_fd);
        }
        return;
    }
    st = wst_tunnel_run(&t->client, &t->backend, &t->cfg, stats);
    /* The connection closes through httpd's own descriptor, as usual. */
    if (client_fd) {
        apr_pool_cleanup_run(r->pool, client_fd, wst_close_fd);
    }
    if (st != WST_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(022)
                      "tunnel: invalid arguments (a bug)");
        c->aborted = 1;
        return;
    }

    /* mod_logio saw the filtered bytes; add what the core moved itself. */
    if (logio_in && stats->bytes_from_client > t->cctx.filtered_in) {
        logio_in(c, (apr_off_t)(stats->bytes_from_client - t->cctx.filtered_in));
    }
    if (logio_out && stats->bytes_to_client > t->cctx.filtered_out) {
        logio_out(c, (apr_off_t)(stats->bytes_to_client - t->cctx.filtered_out));
    }

    switch (stats->reason) {
    case WST_END_CLIENT_ERROR:
        c->aborted = 1;
        break;
    case WST_END_BACKEND_ERROR:
        backconn->aborted = 1;
        break;
    case WST_END_IDLE:
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(023)
                      "tunnel idle for %d ms: closed", t->cfg.idle_timeout_ms);
        break;
    case WST_END_STOPPED:
        c->aborted = 1;
        break;
    case WST_END_PING_TIMEOUT:
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(024)
                      "tunnel: no answer to the module's ping: closed "
                      "with 1001");
        break;
    case WST_END_GOING_AWAY:
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(025)
                      "tunnel: httpd child going away: closed with 1001");
        break;
    default:
        break;
    }
}
