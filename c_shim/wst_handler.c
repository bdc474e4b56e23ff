/*
 * wst_handler.c: mod_proxy's scheme handler for ws:// and wss://.
 *
 * The decisions are the Rust core's (is this an upgrade we accept, what
 * bytes go to the backend, does the backend's answer allow a tunnel); this
 * file makes the httpd calls: backend connection, sending, reading, relaying
 * a non-101 answer as an ordinary HTTP response, and starting the tunnel.
 */
#include "wst_shim.h"

/* A 101 head is a few hundred bytes: start small (the request pool's memory
 * stays with the tunnel for its whole life) and double up to the limit. */
#define WST_HEAD_INITIAL 1024
/* Header slots for the backend's answer before it says it needs more. */
#define WST_FEW_RESPONSE_HEADERS 8
#define WST_HEAD_MAX (64 * 1024)
#define WST_BODY_CHUNK 8192

static const char *wst_response_header(apr_pool_t *p, const wst_response *resp,
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
static void wst_copy_response_headers(request_rec *r, const wst_response *resp,
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
static apr_status_t wst_read_backend(conn_rec *backconn, apr_bucket_brigade *bb,
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
static int wst_relay_response(request_rec *r, conn_rec *backconn,
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

/* The value of the Host header to send: the client's with ProxyPreserveHost,
 * else the backend's host, with its port unless it is the scheme's default. */
static const char *wst_backend_host(request_rec *r, proxy_server_conf *conf,
                                    apr_uri_t *uri, int scheme)
{
#if WST_HTTPD_24
    proxy_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                                 &proxy_module);
    int preserve = dconf->preserve_host;
#else
    int preserve = conf->preserve_host;
#endif
    const char *host = uri->hostname ? uri->hostname : "localhost";
    apr_port_t def_port = scheme == 2 ? 443 : 80;
    const char *port = "";

    (void)conf;
    if (preserve) {
        const char *h = apr_table_get(r->headers_in, "Host");
        if (h && *h) {
            return h;
        }
    }
    if (uri->port && uri->port != def_port) {
        port = apr_psprintf(r->pool, ":%u", (unsigned)uri->port);
    }
    if (ap_strchr_c(host, ':')) {
        return apr_pstrcat(r->pool, "[", host, "]", port, NULL);
    }
    return apr_pstrcat(r->pool, host, port, NULL);
}

static int wst_add_forwarded(request_rec *r, proxy_server_conf *conf)
{
#if WST_HAVE_ADD_FORWARDED
    proxy_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                                 &proxy_module);
    (void)conf;
    return r->proxyreq == PROXYREQ_REVERSE && dconf->add_forwarded_headers;
#else
    (void)conf;
    return r->proxyreq == PROXYREQ_REVERSE;
#endif
}

/* Per-tunnel figures as request notes, for LogFormat's %{...}n. */
static void wst_set_notes(request_rec *r, const wst_tunnel_stats *stats,
                          apr_interval_time_t duration)
{
    static const char *const ends[] = {
        "closed", "client-error", "backend-error", "idle", "stopped",
        "poll-error", "ping-timeout", "going-away"
    };
    unsigned reason = (unsigned)stats->reason;

    apr_table_setn(r->notes, "wstunnel-client-bytes",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT,
                                (apr_uint64_t)stats->bytes_from_client));
    apr_table_setn(r->notes, "wstunnel-backend-bytes",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT,
                                (apr_uint64_t)stats->bytes_from_backend));
    apr_table_setn(r->notes, "wstunnel-duration-ms",
                   apr_psprintf(r->pool, "%" APR_INT64_T_FMT,
                                (apr_int64_t)apr_time_as_msec(duration)));
    apr_table_setn(r->notes, "wstunnel-closed-first",
                   stats->closed_first == 1 ? "client"
                   : stats->closed_first == 2 ? "backend" : "none");
    apr_table_setn(r->notes, "wstunnel-client-messages",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT,
                                (apr_uint64_t)stats->messages_from_client));
    apr_table_setn(r->notes, "wstunnel-backend-messages",
                   apr_psprintf(r->pool, "%" APR_UINT64_T_FMT,
                                (apr_uint64_t)stats->messages_from_backend));
    apr_table_setn(r->notes, "wstunnel-client-close-code",
                   stats->close_code_from_client >= 0
                   ? apr_itoa(r->pool, stats->close_code_from_client) : "-");
    apr_table_setn(r->notes, "wstunnel-backend-close-code",
                   stats->close_code_from_backend >= 0
                   ? apr_itoa(r->pool, stats->close_code_from_backend) : "-");
    apr_table_setn(r->notes, "wstunnel-end",
                   reason < sizeof(ends) / sizeof(ends[0]) ? ends[reason]
                                                           : "unknown");
}

/* Send the upgrade request, read and judge the answer, then tunnel or relay. */
static int wst_process(request_rec *r, proxy_conn_rec *backend,
                       proxy_server_conf *conf, apr_uri_t *uri,
                       const char *locurl, int scheme,
                       const wst_header *headers, size_t n_headers,
                       const wst_request_check *check)
{
    conn_rec *c = r->connection;
    conn_rec *backconn = backend->connection;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, backconn->bucket_alloc);
    wst_backend_request req;
    /* Not zeroed: wst_parse_response fills it. Room for a few header
     * fields (a 101 has a handful), more only for a head that needs them:
     * the request pool stays with the tunnel for its whole life. */
    wst_response *resp = apr_palloc(r->pool, sizeof(*resp));
    wst_tunnel_stats stats;
    unsigned char *out;
    size_t out_len = 0, size;
    char *buf;
    apr_size_t len = 0, cap = WST_HEAD_INITIAL;
    apr_status_t rv;
    apr_time_t started;
    wst_status st;

    memset(&req, 0, sizeof(req));
    req.method = wst_s(r->method);
    req.path = wst_s(locurl);
    req.host = wst_s(wst_backend_host(r, conf, uri, scheme));
    req.headers = headers;
    req.n_headers = n_headers;
    req.protocol = check->protocol;
    req.add_forwarded = wst_add_forwarded(r, conf);
    req.forwarded_for = wst_s(WST_CLIENT_IP(r));
    req.forwarded_host = wst_s(apr_table_get(r->headers_in, "Host"));
    req.forwarded_server = wst_s(r->server->server_hostname);

    /* One buffer for the request and then the answer: it is sent (or
     * copied by the core output filter) before the answer is read. */
    size = wst_request_size(&req);
    if (size > cap) {
        cap = size;
    }
    buf = apr_palloc(r->pool, cap);
    out = (unsigned char *)buf;
    st = wst_build_request(&req, out, size, &out_len);
    if (st != WST_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(005)
                      "refusing to forward the request: a header name or "
                      "value could not be sent safely (status %d)", (int)st);
        return HTTP_BAD_REQUEST;
    }

    rv = wst_write_flush(backconn, bb, (const char *)out, out_len);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, WSTNO(006)
                      "failed to send the upgrade request to %s",
                      backend->hostname);
        return HTTP_BAD_GATEWAY;
    }

    resp->headers_cap = WST_FEW_RESPONSE_HEADERS;
    resp->headers = apr_palloc(r->pool, resp->headers_cap * sizeof(wst_header));
    for (;;) {
        apr_size_t got = 0;
        if (len == cap) {
            char *bigger;
            if (cap >= WST_HEAD_MAX) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(007)
                              "backend's response head is larger than %d "
                              "bytes", WST_HEAD_MAX);
                return HTTP_BAD_GATEWAY;
            }
            bigger = apr_palloc(r->pool, cap * 2);
            memcpy(bigger, buf, len);
            buf = bigger;
            cap *= 2;
        }
        rv = wst_read_backend(backconn, bb, buf + len, cap - len, &got);
        if (APR_STATUS_IS_TIMEUP(rv)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, WSTNO(008)
                          "timeout waiting for the backend's answer to the "
                          "upgrade");
            return HTTP_GATEWAY_TIME_OUT;
        }
        if (APR_STATUS_IS_EOF(rv)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(009)
                          "backend closed the connection before answering "
                          "the upgrade");
            return HTTP_BAD_GATEWAY;
        }
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, WSTNO(010)
                          "error reading the backend's answer");
            return HTTP_BAD_GATEWAY;
        }
        len += got;
        st = wst_parse_response((const unsigned char *)buf, len, check,
                                r->header_only, resp);
        if (st == WST_ERR_SPACE && resp->n_headers > resp->headers_cap
                && resp->n_headers <= WST_MAX_RESPONSE_HEADERS) {
            resp->headers_cap = resp->n_headers;
            resp->headers = apr_palloc(r->pool, resp->headers_cap
                                                * sizeof(wst_header));
            st = wst_parse_response((const unsigned char *)buf, len, check,
                                    r->header_only, resp);
        }
        if (st == WST_PARTIAL) {
            continue;
        }
        if (st != WST_OK) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        break;
    }

    switch (resp->kind) {
    case WST_RESP_TUNNEL:
        break;
    case WST_RESP_OTHER:
        return wst_relay_response(r, backconn, bb, resp, buf, len, cap);
    default:
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(011)
                      "backend %s answered the upgrade with %d, refused: %s",
                      backend->hostname, resp->status,
                      resp->why ? resp->why : "invalid response");
        return HTTP_BAD_GATEWAY;
    }

    /* 101: relay it with the backend's headers, then tunnel. */
    r->status = HTTP_SWITCHING_PROTOCOLS;
    /* 2.2's ap_send_interim_response() needs the status line spelled out */
    r->status_line = ap_get_status_line(HTTP_SWITCHING_PROTOCOLS);
    wst_copy_response_headers(r, resp, 0);
    {
        const char *upgrade = wst_response_header(r->pool, resp, "Upgrade");
        apr_table_setn(r->headers_out, "Upgrade",
                       upgrade ? upgrade : apr_pstrmemdup(r->pool,
                                                          check->protocol.ptr,
                                                          check->protocol.len));
        apr_table_setn(r->headers_out, "Connection", "Upgrade");
    }
    ap_send_interim_response(r, 1);
    r->sent_bodyct = 1;

    wst_tunnel_started();
    started = apr_time_now();
    wst_run_tunnel(r, backend, buf + resp->header_len, len - resp->header_len,
                   check->is_websocket, &stats);
    wst_set_notes(r, &stats, apr_time_now() - started);

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(012)
                  "tunnel closed: %" APR_UINT64_T_FMT " bytes from the client, "
                  "%" APR_UINT64_T_FMT " from the backend, %s side closed "
                  "first (end reason %d)",
                  (apr_uint64_t)stats.bytes_from_client,
                  (apr_uint64_t)stats.bytes_from_backend,
                  stats.closed_first == 1 ? "client"
                  : stats.closed_first == 2 ? "backend" : "no",
                  (int)stats.reason);
    (void)c;
    return DONE;
}

/* The URL with an explicit port: httpd 2.2's (and 2.4 before 2.4.34's)
 * APR/mod_proxy do not know that ws:// means port 80 and wss:// 443, and
 * would connect to port 0. */
static char *wst_url_with_port(apr_pool_t *p, char *url, int scheme)
{
    char *host = strstr(url, "://");
    char *end, *colon;

    if (!host) {
        return url;
    }
    host += 3;
    end = host + strcspn(host, "/?#");
    if (*host == '[') {                       /* [IPv6]:port */
        char *bracket = memchr(host, ']', (apr_size_t)(end - host));
        colon = (bracket && bracket + 1 < end && bracket[1] == ':') ? bracket + 1
                                                                     : NULL;
    }
    else {
        colon = memchr(host, ':', (apr_size_t)(end - host));
    }
    if (colon) {
        return url;
    }
    return apr_pstrcat(p, apr_pstrmemdup(p, url, (apr_size_t)(end - url)),
                       scheme == 2 ? ":443" : ":80", end, NULL);
}

/* Hand a plain request on a ws:// route to mod_proxy_http, as http://. */
static int wst_plain_to_proxy_http(request_rec *r, proxy_worker *worker,
                                   proxy_server_conf *conf, const char *url,
                                   const char *proxyname, apr_port_t proxyport)
{
    int scheme = wst_scheme_of(url);
    char *http_url = apr_pstrcat(r->pool, scheme == 2 ? "https" : "http",
                                 url + (scheme == 2 ? 3 : 2), NULL);

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(013)
                  "no upgrade: %s served as plain HTTP by mod_proxy_http",
                  url);
    return proxy_run_scheme_handler(r, worker, conf, http_url, proxyname,
                                    proxyport);
}

int wst_handler(request_rec *r, proxy_worker *worker, proxy_server_conf *conf,
                char *url, const char *proxyname, apr_port_t proxyport)
{
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);
    int scheme = wst_scheme_of(url);
    int via_http = 0;
    const char *scheme_name;
    const char *worker_upgrade = "";
    wst_request_check check;
    wst_header *headers;
    size_t n_headers = 0;
    proxy_conn_rec *backend = NULL;
    apr_uri_t *uri;
    char *locurl = url;
    char server_portstr[32];
    int status;

    if (!scheme && dconf->upgrade_http == 1
            && apr_table_get(r->headers_in, "Upgrade")) {
        /* ProxyWebsocketUpgrade On: an upgrade on an http(s):// route */
        if (WST_CASECMPN(url, "http://", 7) == 0) {
            scheme = 1;
            via_http = 1;
        }
        else if (WST_CASECMPN(url, "https://", 8) == 0) {
            scheme = 2;
            via_http = 1;
        }
    }
    if (!scheme) {
        return DECLINED;
    }
    scheme_name = scheme == 2 ? "WSS" : "WS";
    if (wst_hand_over_to_proxy_http(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                      "ProxyWebsocketFallbackToProxyHttp On: %s handed to "
                      "mod_proxy_http", url);
        return DECLINED;
    }

#if WST_HAVE_WORKER_UPGRADE
    worker_upgrade = worker->s->upgrade;
#endif
#if WST_HAVE_CONN_MASTER
    if (r->connection->master && apr_table_get(r->headers_in, "Upgrade")) {
        /* An HTTP/2 stream (RFC 8441): its socket is the whole h2
         * connection's, which this module must not poll or write. Decided
         * before the HTTP/1.1 upgrade checks: mod_http2 turns the extended
         * CONNECT into a GET + Upgrade carrying "Transfer-Encoding: chunked"
         * (the stream stays open for data), which those checks refuse. */
        if (wst_proxy_http_serves_ws()) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(015)
                          "WebSocket over HTTP/2: %s handed to "
                          "mod_proxy_http", url);
            return DECLINED;
        }
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(016)
                      "WebSocket over HTTP/2 is not supported by this module "
                      "without mod_proxy_http: %s", url);
        return HTTP_NOT_IMPLEMENTED;
    }
#endif
    headers = wst_request_headers(r, &n_headers);
    memset(&check, 0, sizeof(check));
    if (wst_check_request(wst_s(r->method), r->proto_num, headers, n_headers,
                          wst_s(worker_upgrade), &check) != WST_OK) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (via_http && check.verdict != WST_UPGRADE_OK
            && check.verdict != WST_UPGRADE_BAD_REQUEST) {
        return DECLINED;            /* mod_proxy_http's, as without us */
    }
    switch (check.verdict) {
    case WST_UPGRADE_OK:
        break;
    case WST_UPGRADE_NONE:
        if (wst_proxy_http_loaded) {
            return wst_plain_to_proxy_http(r, worker, conf, url, proxyname,
                                           proxyport);
        }
        /* fall through */
    case WST_UPGRADE_MISMATCH: {
        const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
        const char *expected = *worker_upgrade ? worker_upgrade : "websocket";
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, APLOGNO(02900)
                      "require upgrade for URL %s (Upgrade header is %s, "
                      "expecting %s)", url, upgrade ? upgrade : "missing",
                      expected);
        return wst_upgrade_required(r, expected);
    }
    default:
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(014)
                      "bad upgrade request for URL %s: %s", url,
                      check.reason ? check.reason : "invalid");
        r->connection->keepalive = AP_CONN_CLOSE;
        return HTTP_BAD_REQUEST;
    }


    if (dconf->allow_origins && dconf->allow_origins->nelts) {
        const char *origin = apr_table_get(r->headers_in, "Origin");
        const char *host = apr_table_get(r->headers_in, "Host");
        int tls = strcmp(ap_http_scheme(r), "https") == 0;
        if (!wst_origin_allowed(wst_s(origin), origin != NULL, wst_s(host), tls,
                                (const wst_str *)dconf->allow_origins->elts,
                                (size_t)dconf->allow_origins->nelts)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, WSTNO(042)
                          "Origin %s refused by ProxyWebsocketAllowOrigin "
                          "for %s", origin, url);
            return HTTP_FORBIDDEN;
        }
    }

    if (wst_tunnel_admit(r) != OK) {
        /* Answered here rather than returned: mod_proxy would take a 503
         * from a scheme handler for a failed backend and put a balancer
         * member in error. */
        r->status = HTTP_SERVICE_UNAVAILABLE;
        ap_send_error_response(r, 0);
        return DONE;
    }

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, APLOGNO(02451)
                  "serving URL %s", url);

    status = ap_proxy_acquire_connection(scheme_name, &backend, worker,
                                         r->server);
    if (status != OK) {
        goto cleanup;
    }
    backend->is_ssl = scheme == 2;
    backend->close = 1;

    uri = apr_pcalloc(r->pool, sizeof(*uri));
    locurl = wst_url_with_port(r->pool, url, scheme);
    status = ap_proxy_determine_connection(r->pool, r, conf, worker, backend,
                                           uri, &locurl, proxyname, proxyport,
                                           server_portstr,
                                           sizeof(server_portstr));
    if (status == HTTP_INTERNAL_SERVER_ERROR) {
        /* mod_proxy says 500 when the backend's name does not resolve (it
         * logged why); for the client that is a bad gateway, not our fault. */
        status = HTTP_BAD_GATEWAY;
    }
    if (status != OK) {
        goto cleanup;
    }

    if (ap_proxy_connect_backend(scheme_name, backend, worker, r->server)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(02452)
                      "failed to make connection to backend: %s",
                      backend->hostname);
        status = HTTP_SERVICE_UNAVAILABLE;
        goto cleanup;
    }

#if WST_HAVE_CONN_CREATE_EX
    status = ap_proxy_connection_create_ex(scheme_name, backend, r);
#else
    status = ap_proxy_connection_create(scheme_name, backend, r->connection,
                                        r->server);
#endif
    if (status != OK) {
        goto cleanup;
    }
#if !WST_CONN_CREATE_NOTES_HOSTNAME
    /* On 2.2 the scheme handler names the backend for mod_ssl (mod_proxy_http
     * does it here): without this note, EL6's mod_ssl checks no certificate
     * name under SSLProxyCheckPeerCN on (ssl_io_filter_connect reads it). */
    if (backend->is_ssl && uri->hostname) {
        apr_table_setn(backend->connection->notes, "proxy-request-hostname",
                       apr_pstrdup(backend->connection->pool, uri->hostname));
    }
#endif

    status = wst_process(r, backend, conf, uri, locurl, scheme,
                         headers, n_headers, &check);

cleanup:
    if (backend) {
        backend->close = 1;
        ap_proxy_release_connection(scheme_name, backend, r->server);
    }
    return status;
}
