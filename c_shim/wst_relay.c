/*
 * wst_relay.c: the backend's answer as an ordinary HTTP response.
 *
 * When the backend answers the upgrade with anything but a 101 the core
 * accepts, the client gets that answer as it is (status, end-to-end
 * headers mapped through ProxyPassReverse, the body with its framing), and
 * the connection is never tunnelled and never kept alive (CVE-2019-17567).
 * The 101's own headers are copied with the same helpers.
 */
#include "wst_shim.h"

const char *wst_response_header(apr_pool_t *p, const wst_response *resp,
                                const char *name)
{
    const char *joined = NULL;
    size_t i;

    for (i = 0; i < resp->n_headers; i++) {
        const wst_header *h = &resp->headers[i];
        if (h->name.len == strlen(name)
                && WST_CASECMPN(h->name.ptr, name, h->name.len) == 0) {
            const char *v = apr_pstrmemdup(p, h->value.ptr, h->value.len);
            joined = joined ? apr_pstrcat(p, joined, ", ", v, NULL) : v;
        }
    }
    return joined;
}

/* Copy the backend's response headers into r->headers_out, without the
 * hop-by-hop ones; map Location & co. back through ProxyPassReverse. */
void wst_copy_response_headers(request_rec *r, const wst_response *resp,
                               int relay)
{
    proxy_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                                 &proxy_module);
    size_t i;

    for (i = 0; i < resp->n_headers; i++) {
        const wst_header *h = &resp->headers[i];
        const char *name, *value;

        if (wst_response_hop_by_hop(resp, i)) {
            continue;
        }
        name = apr_pstrmemdup(r->pool, h->name.ptr, h->name.len);
        value = apr_pstrmemdup(r->pool, h->value.ptr, h->value.len);
        if (relay) {
            if (WST_CASECMP(name, "Content-Length") == 0) {
                continue;                  /* set from the body framing */
            }
            if (WST_CASECMP(name, "Content-Type") == 0) {
                ap_set_content_type(r, value);
                continue;
            }
            if (WST_CASECMP(name, "Location") == 0
                    || WST_CASECMP(name, "Content-Location") == 0
                    || WST_CASECMP(name, "URI") == 0) {
                value = ap_proxy_location_reverse_map(r, dconf, value);
            }
            else if (WST_CASECMP(name, "Set-Cookie") == 0) {
                value = ap_proxy_cookie_reverse_map(r, dconf, value);
            }
        }
        apr_table_add(r->headers_out, name, value);
    }
}

/* Read what the backend has, blocking, into buf (at most cap bytes).
 * Returns APR_EOF at the end of its stream. */
apr_status_t wst_read_backend(conn_rec *backconn, apr_bucket_brigade *bb,
                              char *buf, apr_size_t cap, apr_size_t *got)
{
    int eos = 0;
    apr_status_t rv = wst_read_flat(backconn, bb, APR_BLOCK_READ, buf, cap,
                                    got, &eos);

    if (rv == APR_SUCCESS && !*got) {
        return APR_EOF;     /* a blocking read that brought nothing */
    }
    return rv;
}

/*
 * The body of a relayed answer is held back (and with it the head, which
 * goes out with the first bytes passed to the output filters) until the
 * body is complete, WST_HOLD_MAX bytes of it are in, or the backend pauses
 * for WST_HOLD_WAIT_MS. A body that turns out broken by then (bad chunked
 * framing, a chunk size beyond 64 bits, the backend closing before its
 * end) is answered 502 with the reason in the log, instead of a status line
 * the client cannot tell from a good answer. Once bytes have gone, a broken
 * body ends the way mod_proxy_http ends it: what came is flushed, the
 * connection is aborted, so the client sees a chunked body without its
 * last chunk or fewer bytes than Content-Length.
 */
#define WST_HOLD_MAX (16 * 1024)
#define WST_HOLD_WAIT_MS 250
/* Room for the held bytes and one more read. */
#define WST_RELAY_BUF (WST_HOLD_MAX + 16 * 1024)

typedef struct wst_relay {
    request_rec *r;
    conn_rec *backconn;
    apr_bucket_brigade *inbb;   /* reads from the backend */
    apr_bucket_brigade *out;    /* to the client */
    const wst_response *resp;
    char *buf;                  /* held (decoded) body bytes, then room to read */
    apr_size_t cap;
    apr_size_t held;            /* body bytes at buf's start, not passed yet */
    apr_uint64_t remaining;     /* WST_BODY_LENGTH: body bytes still to come */
    apr_uint64_t body_bytes;    /* body bytes from the backend so far */
    apr_uint64_t sent_bytes;    /* body bytes passed to the output filters */
    wst_chunked chunked;
    int sent;                   /* something (the head first) was passed */
    int done;                   /* the body is complete */
} wst_relay;

/* What was wrong with a chunked body the core's decoder refused. */
static const char *wst_relay_malformed(const wst_relay *rel)
{
    const char *why = wst_chunked_failure(&rel->chunked);

    return apr_psprintf(rel->r->pool, "malformed chunked encoding after "
                        "%" APR_UINT64_T_FMT " body bytes: %s",
                        (apr_uint64_t)rel->body_bytes,
                        why ? why : "the decoder's state is invalid");
}

/* Take `got` bytes just read to buf + held: the body bytes among them join
 * the held ones. NULL, or what is wrong with the body. */
static const char *wst_relay_take(wst_relay *rel, apr_size_t got)
{
    apr_size_t n = got;

    switch (rel->resp->body_mode) {
    case WST_BODY_LENGTH:
        /* Bytes past the body are dropped: the connection is not reused. */
        if ((apr_uint64_t)n >= rel->remaining) {
            n = (apr_size_t)rel->remaining;
        }
        rel->remaining -= n;
        rel->done = rel->remaining == 0;
        break;
    case WST_BODY_CHUNKED: {
        size_t data_len = 0, consumed = 0;
        wst_status st = wst_chunked_decode(&rel->chunked,
                                           (unsigned char *)rel->buf + rel->held,
                                           got, &data_len, &consumed);
        if (st != WST_OK && st != WST_DONE) {
            return wst_relay_malformed(rel);
        }
        n = data_len;
        rel->done = st == WST_DONE;
        break;
    }
    case WST_BODY_CLOSE:
        break;
    default:
        n = 0;
        rel->done = 1;
    }
    rel->held += n;
    rel->body_bytes += n;
    return NULL;
}

/* Pass the held bytes (the head goes with the first pass), then a FLUSH or
 * the EOS when asked. */
static apr_status_t wst_relay_pass(wst_relay *rel, int flush, int eos)
{
    conn_rec *c = rel->r->connection;
    apr_status_t rv;

    if (rel->held) {
        APR_BRIGADE_INSERT_TAIL(rel->out,
                                apr_bucket_heap_create(rel->buf, rel->held, NULL,
                                                       c->bucket_alloc));
        rel->sent_bytes += rel->held;
        rel->held = 0;
    }
    if (eos) {
        APR_BRIGADE_INSERT_TAIL(rel->out, apr_bucket_eos_create(c->bucket_alloc));
    }
    else if (flush) {
        APR_BRIGADE_INSERT_TAIL(rel->out, apr_bucket_flush_create(c->bucket_alloc));
    }
    if (APR_BRIGADE_EMPTY(rel->out)) {
        return APR_SUCCESS;
    }
    rel->sent = 1;
    rv = ap_pass_brigade(rel->r->output_filters, rel->out);
    apr_brigade_cleanup(rel->out);
    return rv;
}

/* The body is broken (`what`, with rv when a read failed). Nothing sent
 * yet: the answer becomes `status` (502, 504 for a timeout) with nothing of
 * the backend's. Else the response is cut short as mod_proxy_http does. */
static int wst_relay_broken(wst_relay *rel, const char *tag, apr_status_t rv,
                            int status, const char *what)
{
    request_rec *r = rel->r;

    if (!rel->sent) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                      "%sthe backend's %d answer to the upgrade has a broken "
                      "body: %s; nothing of it was sent: answering %d",
                      tag, rel->resp->status, what, status);
        /* As if the backend's answer had never been seen: an r->status
         * other than 200 would make ap_die() report `status` as a second
         * error "while trying to use an ErrorDocument". */
        r->status = HTTP_OK;
        r->status_line = NULL;
        apr_table_clear(r->headers_out);
        return status;
    }
    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r,
                  "%sthe backend's %d answer to the upgrade has a broken "
                  "body: %s; %" APR_UINT64_T_FMT " body bytes had been relayed: "
                  "the response is cut short (connection aborted)",
                  tag, rel->resp->status, what,
                  (apr_uint64_t)(rel->sent_bytes + rel->held));
    /* What came goes out; then no terminating chunk, no keep-alive. */
    wst_relay_pass(rel, 1, 0);
    r->connection->keepalive = AP_CONN_CLOSE;
    r->connection->aborted = 1;
    return DONE;
}

/* The backend closed the connection: the end of a close-delimited body, a
 * broken body otherwise. */
static int wst_relay_eof(wst_relay *rel)
{
    request_rec *r = rel->r;

    if (rel->resp->body_mode == WST_BODY_CLOSE) {
        rel->done = 1;
        return OK;
    }
    if (rel->resp->body_mode == WST_BODY_LENGTH) {
        return wst_relay_broken(rel, WSTNO(003), 0, HTTP_BAD_GATEWAY,
            apr_psprintf(r->pool, "the backend closed the connection after "
                         "%" APR_UINT64_T_FMT " of the %" APR_UINT64_T_FMT
                         " bytes its Content-Length announced",
                         (apr_uint64_t)rel->body_bytes,
                         (apr_uint64_t)rel->resp->content_length));
    }
    return wst_relay_broken(rel, WSTNO(003), 0, HTTP_BAD_GATEWAY,
        apr_psprintf(r->pool, "the backend closed the connection before the "
                     "last chunk (chunked body cut short after "
                     "%" APR_UINT64_T_FMT " bytes)",
                     (apr_uint64_t)rel->body_bytes));
}

/* A failed read (not EOF). */
static int wst_relay_read_failed(wst_relay *rel, apr_status_t rv)
{
    if (APR_STATUS_IS_TIMEUP(rv)) {
        return wst_relay_broken(rel, WSTNO(004), rv, HTTP_GATEWAY_TIME_OUT,
                                "timeout reading it from the backend");
    }
    return wst_relay_broken(rel, WSTNO(004), rv, HTTP_BAD_GATEWAY,
                            "error reading it from the backend");
}

/* Can a read that timed out be tried again on this connection? Always on
 * 2.4 (mod_ssl keeps its state on a timeout); 2.2's mod_ssl drops its input
 * after one, so not over TLS there. */
static int wst_timeout_retryable(conn_rec *backconn)
{
#if WST_HTTPD_24
    (void)backconn;
    return 1;
#else
    ap_filter_t *f;

    for (f = backconn->input_filters; f; f = f->next) {
        if (f->frec && f->frec->name
                && WST_CASECMPN(f->frec->name, "SSL", 3) == 0) {
            return 0;
        }
    }
    return 1;
#endif
}

/* One read while the body is held: at most until `until` (0: no timer, a
 * non-blocking read once some body came). *paused when the backend has
 * nothing more for now (the hold ends). */
static apr_status_t wst_relay_hold_read(wst_relay *rel, apr_time_t until,
                                        apr_size_t *got, int *paused)
{
    char *at = rel->buf + rel->held;
    apr_size_t room = rel->cap - rel->held;
    apr_socket_t *sock = WST_CONN_SOCKET(rel->backconn);
    apr_interval_time_t per_read = 0, left;
    apr_status_t rv;
    int eos = 0;

    *got = 0;
    *paused = 0;
    if (!until) {
        if (!rel->body_bytes) {
            return wst_read_backend(rel->backconn, rel->inbb, at, room, got);
        }
        rv = wst_read_flat(rel->backconn, rel->inbb, APR_NONBLOCK_READ, at,
                           room, got, &eos);
        if (APR_STATUS_IS_EAGAIN(rv) || (rv == APR_SUCCESS && !*got && !eos)) {
            *paused = 1;
            return APR_SUCCESS;
        }
        if (rv == APR_SUCCESS && !*got) {
            return APR_EOF;
        }
        return rv;
    }
    left = until - apr_time_now();
    if (left <= 0 || !sock
            || apr_socket_timeout_get(sock, &per_read) != APR_SUCCESS) {
        *paused = 1;
        return APR_SUCCESS;
    }
    /* per_read < 0: no timeout of its own (blocking). */
    apr_socket_timeout_set(sock, per_read > 0 && per_read < left ? per_read
                                                                 : left);
    rv = wst_read_backend(rel->backconn, rel->inbb, at, room, got);
    apr_socket_timeout_set(sock, per_read);
    if (APR_STATUS_IS_TIMEUP(rv) && (per_read <= 0 || left <= per_read)) {
        *paused = 1;                 /* the hold's time is up, not the backend's */
        return APR_SUCCESS;
    }
    return rv;
}

/* The relay itself (see wst_relay_response). */
static int wst_relay_run(request_rec *r, conn_rec *backconn,
                         apr_bucket_brigade *inbb, wst_response *resp,
                         char *buf, apr_size_t len, apr_size_t cap)
{
    conn_rec *c = r->connection;
    apr_size_t rest_len = len - resp->header_len;
    apr_time_t until = 0;
    apr_status_t rv;
    const char *broken;
    wst_relay rel;

    memset(&rel, 0, sizeof(rel));
    rel.r = r;
    rel.backconn = backconn;
    rel.inbb = inbb;
    rel.out = apr_brigade_create(r->pool, c->bucket_alloc);
    rel.resp = resp;
    rel.remaining = resp->content_length;

    r->status = resp->status;
    r->status_line = apr_psprintf(r->pool, "%d %.*s", resp->status,
                                  (int)resp->reason.len, resp->reason.ptr);
    wst_copy_response_headers(r, resp, 1);
    if (resp->body_mode == WST_BODY_LENGTH) {
        ap_set_content_length(r, (apr_off_t)resp->content_length);
    }
    else if (resp->body_mode == WST_BODY_NONE) {
        ap_set_content_length(r, 0);
    }
    /* The client asked to switch protocols and was refused: whatever it
     * sent after its request must never be read as another request, so the
     * connection closes after this answer. Said as "Connection: close" in
     * the answer rather than by c->keepalive yet: httpd then still frames a
     * body of unknown length as chunked for an HTTP/1.1 client (see
     * ap_set_keepalive), whose missing last chunk shows a body cut short;
     * c->keepalive is set when the answer has gone (or was replaced). */
    apr_table_setn(r->headers_out, "Connection", "close");

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(001)
                  "backend answered %d instead of 101: relayed as HTTP, "
                  "not tunnelled", resp->status);

    /* The bytes after the head are the body's start: to the front of a
     * buffer with room for the hold (the head's is often 1 KiB). */
    if (cap < WST_RELAY_BUF) {
        rel.cap = WST_RELAY_BUF;
        rel.buf = apr_palloc(r->pool, rel.cap);
        memcpy(rel.buf, buf + resp->header_len, rest_len);
    }
    else {
        rel.cap = cap;
        rel.buf = buf;
        memmove(rel.buf, buf + resp->header_len, rest_len);
    }
    if (resp->body_mode == WST_BODY_NONE
            || (resp->body_mode == WST_BODY_LENGTH && rel.remaining == 0)) {
        rel.done = 1;
    }
    else if ((broken = wst_relay_take(&rel, rest_len)) != NULL) {
        return wst_relay_broken(&rel, WSTNO(002), 0, HTTP_BAD_GATEWAY, broken);
    }
    if (wst_timeout_retryable(backconn)) {
        until = apr_time_now() + WST_TIME_FROM_MSEC(WST_HOLD_WAIT_MS);
    }

    /* Held: nothing goes to the client until the body is complete, the
     * hold is full, or the backend pauses. */
    while (!rel.done && rel.held < WST_HOLD_MAX) {
        apr_size_t got = 0;
        int paused = 0;

        rv = wst_relay_hold_read(&rel, until, &got, &paused);
        if (paused) {
            break;
        }
        if (APR_STATUS_IS_EOF(rv)) {
            int status = wst_relay_eof(&rel);
            if (status != OK) {
                return status;
            }
            break;
        }
        if (rv != APR_SUCCESS) {
            return wst_relay_read_failed(&rel, rv);
        }
        if ((broken = wst_relay_take(&rel, got)) != NULL) {
            return wst_relay_broken(&rel, WSTNO(002), 0, HTTP_BAD_GATEWAY,
                                    broken);
        }
    }

    /* Then streamed: the head and what is held go now. */
    if (!rel.done) {
        rv = wst_relay_pass(&rel, 1, 0);
        if (rv != APR_SUCCESS) {
            c->aborted = 1;           /* the client is gone */
            return DONE;
        }
    }
    while (!rel.done) {
        apr_size_t got = 0;
        int eos = 0;

        /* What the backend has now; when it has nothing, what was passed
         * goes to the client before waiting (as mod_proxy_http flushes). */
        rv = wst_read_flat(backconn, inbb, APR_NONBLOCK_READ, rel.buf,
                           rel.cap, &got, &eos);
        if (APR_STATUS_IS_EAGAIN(rv) || (rv == APR_SUCCESS && !got && !eos)) {
            if (wst_relay_pass(&rel, 1, 0) != APR_SUCCESS) {
                c->aborted = 1;
                return DONE;
            }
            rv = wst_read_backend(backconn, inbb, rel.buf, rel.cap, &got);
        }
        else if (rv == APR_SUCCESS && !got) {
            rv = APR_EOF;
        }
        if (APR_STATUS_IS_EOF(rv)) {
            int status = wst_relay_eof(&rel);
            if (status != OK) {
                return status;
            }
            break;
        }
        if (rv != APR_SUCCESS) {
            return wst_relay_read_failed(&rel, rv);
        }
        if ((broken = wst_relay_take(&rel, got)) != NULL) {
            return wst_relay_broken(&rel, WSTNO(002), 0, HTTP_BAD_GATEWAY,
                                    broken);
        }
        rv = wst_relay_pass(&rel, 0, 0);
        if (rv != APR_SUCCESS) {
            c->aborted = 1;
            return DONE;
        }
    }
    wst_relay_pass(&rel, 0, 1);
    return OK;
}

/* A non-101 answer: relay it as an ordinary HTTP response, body included,
 * and never tunnel; the client connection closes after it, whatever it is
 * (the backend's answer, a 502 instead, or an abort). */
int wst_relay_response(request_rec *r, conn_rec *backconn,
                       apr_bucket_brigade *inbb, wst_response *resp,
                       char *buf, apr_size_t len, apr_size_t cap)
{
    int status = wst_relay_run(r, backconn, inbb, resp, buf, len, cap);

    r->connection->keepalive = AP_CONN_CLOSE;
    return status;
}
