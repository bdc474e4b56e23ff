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

#define WST_BODY_CHUNK 8192

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

/* Pass data through the request's output filters (copying it). */
static apr_status_t wst_pass_body(request_rec *r, apr_bucket_brigade *bb,
                                  const char *data, apr_size_t len)
{
    apr_status_t rv;

    if (!len) {
        return APR_SUCCESS;
    }
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_heap_create(data, len, NULL,
                                                       r->connection->bucket_alloc));
    rv = ap_pass_brigade(r->output_filters, bb);
    apr_brigade_cleanup(bb);
    return rv;
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

/* A non-101 answer: relay it as an ordinary HTTP response, body included,
 * and never tunnel. */
int wst_relay_response(request_rec *r, conn_rec *backconn,
                       apr_bucket_brigade *inbb, wst_response *resp,
                       char *buf, apr_size_t len, apr_size_t cap)
{
    conn_rec *c = r->connection;
    apr_bucket_brigade *out = apr_brigade_create(r->pool, c->bucket_alloc);
    const char *rest = buf + resp->header_len;
    apr_size_t rest_len = len - resp->header_len;
    apr_uint64_t remaining = resp->content_length;
    wst_chunked chunked;
    apr_status_t rv = APR_SUCCESS;
    int done = 0;

    memset(&chunked, 0, sizeof(chunked));
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
     * sent after its request must never be read as another request. */
    c->keepalive = AP_CONN_CLOSE;

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(001)
                  "backend answered %d instead of 101: relayed as HTTP, "
                  "not tunnelled", resp->status);

    /* Move the unparsed bytes to the front; they are the body's start. */
    memmove(buf, rest, rest_len);
    len = rest_len;

    while (!done) {
        if (len) {
            switch (resp->body_mode) {
            case WST_BODY_NONE:
                done = 1;
                break;
            case WST_BODY_LENGTH: {
                apr_size_t n = (apr_uint64_t)len < remaining ? len
                                                             : (apr_size_t)remaining;
                rv = wst_pass_body(r, out, buf, n);
                remaining -= n;
                done = remaining == 0;
                break;
            }
            case WST_BODY_CHUNKED: {
                size_t data_len = 0, consumed = 0;
                wst_status st = wst_chunked_decode(&chunked, (unsigned char *)buf,
                                                   len, &data_len, &consumed);
                if (st == WST_ERR_INVALID || st == WST_ERR_ARG) {
                    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(002)
                                  "malformed chunked body from the backend");
                    c->aborted = 1;
                    return DONE;
                }
                rv = wst_pass_body(r, out, buf, data_len);
                done = st == WST_DONE;
                break;
            }
            default:
                rv = wst_pass_body(r, out, buf, len);
                break;
            }
            if (rv != APR_SUCCESS) {
                c->aborted = 1;
                return DONE;
            }
        }
        else if (resp->body_mode == WST_BODY_NONE
                 || (resp->body_mode == WST_BODY_LENGTH && remaining == 0)) {
            done = 1;
        }
        if (done) {
            break;
        }
        rv = wst_read_backend(backconn, inbb, buf, cap, &len);
        if (APR_STATUS_IS_EOF(rv)) {
            if (resp->body_mode != WST_BODY_CLOSE) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(003)
                              "backend closed before the end of its "
                              "response body");
                c->aborted = 1;
                return DONE;
            }
            break;
        }
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, WSTNO(004)
                          "error reading the backend's response body");
            c->aborted = 1;
            return DONE;
        }
    }
    APR_BRIGADE_INSERT_TAIL(out, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, out);
    return OK;
}
