/*
 * wst_handler.c: mod_proxy's scheme handler for ws:// and wss://.
 *
 * The decisions are the Rust core's (is this an upgrade we accept, what
 * bytes go to the backend, does the backend's answer allow a tunnel); this
 * file makes the httpd calls: backend connection, sending, reading, relaying
 * a non-101 answer as an ordinary HTTP response, and starting the tunnel.
 */
#include "wst_shim.h"
#include "apr_poll.h"

/* A 101 head is a few hundred bytes: start small (the request pool's memory
 * stays with the tunnel for its whole life) and double up to the limit. */
#define WST_HEAD_INITIAL 1024
/* Header slots for the backend's answer before it says it needs more. */
#define WST_FEW_RESPONSE_HEADERS 8
#define WST_HEAD_MAX (64 * 1024)

/* The value of the Host header to send: the client's with ProxyPreserveHost,
 * else the backend's host, with its port unless it is the scheme's default. */
static const char *wst_backend_host(request_rec *r, proxy_server_conf *conf,
                                    apr_uri_t *uri, wst_scheme scheme)
{
#if WST_HTTPD_24
    proxy_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                                 &proxy_module);
    int preserve = dconf->preserve_host;
#else
    int preserve = conf->preserve_host;
#endif
    const char *host = uri->hostname ? uri->hostname : "localhost";
    apr_port_t def_port = scheme == WST_SCHEME_WSS ? 443 : 80;
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
                   wst_end_reason_name(stats->reason));
}

/* The URL with an explicit port: httpd 2.2's (and 2.4 before 2.4.34's)
 * APR/mod_proxy do not know that ws:// means port 80 and wss:// 443, and
 * would connect to port 0. */
static char *wst_url_with_port(apr_pool_t *p, char *url, wst_scheme scheme)
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
                       scheme == WST_SCHEME_WSS ? ":443" : ":80", end, NULL);
}

/* Hand a plain request on a ws:// route to mod_proxy_http, as http://. */
static int wst_plain_to_proxy_http(request_rec *r, proxy_worker *worker,
                                   proxy_server_conf *conf, const char *url,
                                   const char *proxyname, apr_port_t proxyport)
{
    wst_scheme scheme = wst_scheme_of(url);
    int tls = scheme == WST_SCHEME_WSS;
    char *http_url = apr_pstrcat(r->pool, tls ? "https" : "http",
                                 url + (tls ? 3 : 2), NULL);

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(013)
                  "no upgrade: %s served as plain HTTP by mod_proxy_http",
                  url);
    return proxy_run_scheme_handler(r, worker, conf, http_url, proxyname,
                                    proxyport);
}

/* What the log says when a tunnel ends: a failure with the OS error behind
 * it (info: a peer that resets is routine), lost frame tracking (info: a
 * peer broke RFC 6455, the bytes still went through), and the summary
 * (debug). */
static void wst_log_tunnel_end(request_rec *r, const wst_tunnel_stats *stats)
{
    const char *first = stats->closed_first == 1 ? "the client"
                        : stats->closed_first == 2 ? "the backend" : "neither side";

    if (stats->reason == WST_END_CLIENT_ERROR
            || stats->reason == WST_END_BACKEND_ERROR
            || stats->reason == WST_END_POLL_ERROR) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, (apr_status_t)stats->os_error, r,
                      WSTNO(026) "tunnel ended on an error (%s)%s",
                      wst_end_reason_name(stats->reason),
                      stats->os_error ? "" : ", no OS error reported");
    }
    if (stats->frames_lost_sync) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(027)
                      "WebSocket frames from %s broke RFC 6455: frame tracking "
                      "stopped for that side (bytes still relayed; its messages "
                      "no longer counted, no pings or Close frames from the "
                      "module toward it)",
                      stats->frames_lost_sync == 3 ? "both sides"
                      : stats->frames_lost_sync == 1 ? "the client"
                                                     : "the backend");
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(012)
                  "tunnel closed (end: %s): %" APR_UINT64_T_FMT " bytes from the "
                  "client, %" APR_UINT64_T_FMT " from the backend, %"
                  APR_UINT64_T_FMT " to the client, %" APR_UINT64_T_FMT
                  " to the backend; %s closed first; %u pings sent, %u pongs "
                  "consumed",
                  wst_end_reason_name(stats->reason),
                  (apr_uint64_t)stats->bytes_from_client,
                  (apr_uint64_t)stats->bytes_from_backend,
                  (apr_uint64_t)stats->bytes_to_client,
                  (apr_uint64_t)stats->bytes_to_backend, first,
                  (unsigned)stats->pings_sent, (unsigned)stats->pongs_consumed);
}

/* One request's way through the handler's steps. */
typedef struct wst_call {
    request_rec *r;
    proxy_worker *worker;
    proxy_server_conf *conf;
    char *url;
    const char *proxyname;
    apr_port_t proxyport;
    wst_scheme scheme;
    int via_http;                  /* ProxyWebsocketUpgrade on an http(s):// route */
    const char *scheme_name;       /* "WS" or "WSS", for mod_proxy's calls */
    const char *worker_upgrade;    /* ProxyPass upgrade= ("" when unset) */
    wst_header *headers;           /* the client's, as the core sees them */
    size_t n_headers;
    wst_request_check check;
    proxy_conn_rec *backend;
    apr_uri_t *uri;
    char *locurl;
    apr_bucket_brigade *bb;        /* on the backend connection */
    char *buf;                     /* the upgrade request, then the answer */
    apr_size_t len, cap;
    wst_response *resp;
    int h2;                        /* an HTTP/2 stream (RFC 8441) tunnelled here */
} wst_call;

/* A step's "go on to the next step"; anything else is the handler's answer. */
#define WST_NEXT (-1000)

#if WST_HAVE_POLLFD_FROM_CONN
/* WebSocket over HTTP/2 (RFC 8441) without mod_proxy_http: can this module
 * tunnel the stream itself? mod_http2 (H2WebSockets on) has turned the
 * extended CONNECT into a GET with Upgrade: websocket, Connection: Upgrade
 * and a Sec-WebSocket-Key of its own, on a secondary connection whose output
 * filter H2_C2_WS_OUT turns a 101 answering that key into the stream's 200.
 * The tunnel then reads and writes only through that connection's filters,
 * and polls the descriptor ap_get_pollfd_from_conn() gives for its input
 * (mod_http2: a pipe signalled whenever the stream's input gets data, ends
 * or is reset), never the socket, which is the whole h2 connection's. */
static int wst_h2_tunnel_possible(wst_call *k)
{
    request_rec *r = k->r;
    conn_rec *c = r->connection;
    ap_filter_t *f;
    apr_pollfd_t pfd;
    apr_status_t rv;
    int rfc8441 = 0;

    for (f = c->output_filters; f; f = f->next) {
        if (f->frec && f->frec->name
                && WST_CASECMP(f->frec->name, "H2_C2_WS_OUT") == 0) {
            rfc8441 = 1;
        }
    }
    if (!rfc8441) {
        /* mod_http2 drops a client's own Upgrade header: this one was set
         * by some other module, and nothing would turn a 101 into h2. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(016)
                      "an HTTP/2 request with an Upgrade header that is not "
                      "mod_http2's WebSocket (RFC 8441 extended CONNECT with "
                      "H2WebSockets on): %s answered 501", k->url);
        return HTTP_NOT_IMPLEMENTED;
    }
    memset(&pfd, 0, sizeof(pfd));
    pfd.p = r->pool;
    pfd.desc_type = APR_NO_DESC;
    rv = ap_get_pollfd_from_conn(c, &pfd, NULL);
    if (rv == APR_SUCCESS && pfd.desc_type == APR_NO_DESC) {
        /* mod_http2: no input at all, the CONNECT came with END_STREAM */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(016)
                      "WebSocket over HTTP/2: the client ended its stream "
                      "with the extended CONNECT itself, nothing could flow "
                      "from it: %s answered 400", k->url);
        return HTTP_BAD_REQUEST;
    }
    if (rv != APR_SUCCESS || (pfd.desc_type != APR_POLL_FILE
                              && pfd.desc_type != APR_POLL_SOCKET)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r, WSTNO(016)
                      "WebSocket over HTTP/2: mod_http2 has no descriptor to "
                      "poll for this stream's input (a platform without "
                      "pipes?): %s answered 501", k->url);
        return HTTP_NOT_IMPLEMENTED;
    }
    return WST_NEXT;
}

/* The client's headers minus the "Transfer-Encoding: chunked" that mod_http2
 * adds to a request whose stream stays open (its internal HTTP/1.1 framing
 * of a body of unknown length): on an extended CONNECT the stream's DATA is
 * the tunnel, not a request body, and the upgrade checks refuse a body. */
static void wst_h2_drop_framing(wst_call *k)
{
    size_t i, n = 0;

    for (i = 0; i < k->n_headers; i++) {
        const wst_header *h = &k->headers[i];
        if (h->name.len == 17
                && WST_CASECMPN(h->name.ptr, "Transfer-Encoding", 17) == 0
                && h->value.len == 7
                && WST_CASECMPN(h->value.ptr, "chunked", 7) == 0) {
            continue;
        }
        k->headers[n++] = *h;
    }
    k->n_headers = n;
}
#endif

/* Step 1: is this request ours, and a WebSocket (or other) upgrade the core
 * accepts? Scheme, hand-overs, HTTP/2, the request checks. */
static int wst_classify(wst_call *k)
{
    request_rec *r = k->r;
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);

    k->scheme = wst_scheme_of(k->url);
    if (k->scheme == WST_SCHEME_NONE && dconf->upgrade_http == 1
            && apr_table_get(r->headers_in, "Upgrade")) {
        /* ProxyWebsocketUpgrade On: an upgrade on an http(s):// route */
        if (WST_CASECMPN(k->url, "http://", 7) == 0) {
            k->scheme = WST_SCHEME_WS;
            k->via_http = 1;
        }
        else if (WST_CASECMPN(k->url, "https://", 8) == 0) {
            k->scheme = WST_SCHEME_WSS;
            k->via_http = 1;
        }
    }
    if (k->scheme == WST_SCHEME_NONE) {
        return DECLINED;
    }
    k->scheme_name = k->scheme == WST_SCHEME_WSS ? "WSS" : "WS";
    if (wst_hand_over_to_proxy_http(r)) {
        ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                      "ProxyWebsocketFallbackToProxyHttp On: %s handed to "
                      "mod_proxy_http", k->url);
        return DECLINED;
    }

    k->worker_upgrade = "";
#if WST_HAVE_WORKER_UPGRADE
    k->worker_upgrade = k->worker->s->upgrade;
#endif
#if WST_HAVE_CONN_MASTER
    if (r->connection->master && apr_table_get(r->headers_in, "Upgrade")) {
        /* An HTTP/2 stream (RFC 8441): its socket is the whole h2
         * connection's, which this module must never poll or write. With
         * mod_proxy_http loaded, it tunnels such streams (2.4.58+). Without
         * it, from 2.4.58 on, this module does, through the stream's own
         * filters and pollable descriptor (wst_io.c); before 2.4.58 there is
         * neither H2WebSockets nor a descriptor to poll. */
        if (wst_proxy_http_serves_ws()) {
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(015)
                          "WebSocket over HTTP/2: %s handed to "
                          "mod_proxy_http", k->url);
            return DECLINED;
        }
#if WST_HAVE_POLLFD_FROM_CONN
        {
            int status = wst_h2_tunnel_possible(k);
            if (status != WST_NEXT) {
                return status;
            }
        }
        k->h2 = 1;
#else
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(016)
                      "WebSocket over HTTP/2 needs mod_proxy_http, or this "
                      "module built for httpd 2.4.58 or later: %s answered "
                      "501", k->url);
        return HTTP_NOT_IMPLEMENTED;
#endif
    }
#endif
    k->headers = wst_request_headers(r, &k->n_headers);
#if WST_HAVE_POLLFD_FROM_CONN
    if (k->h2) {
        wst_h2_drop_framing(k);
    }
#endif
    memset(&k->check, 0, sizeof(k->check));
    if (wst_check_request(wst_s(r->method), r->proto_num, k->headers,
                          k->n_headers, wst_s(k->worker_upgrade),
                          &k->check) != WST_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(017)
                      "the request could not be checked (the core refused "
                      "its arguments): %s", k->url);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (k->via_http && k->check.verdict != WST_UPGRADE_OK
            && k->check.verdict != WST_UPGRADE_BAD_REQUEST) {
        return DECLINED;            /* mod_proxy_http's, as without us */
    }
    switch (k->check.verdict) {
    case WST_UPGRADE_OK:
        return WST_NEXT;
    case WST_UPGRADE_NONE:
        if (k->check.is_websocket) {
            /* A WebSocket upgrade in every respect but the upgrade token of
             * Connection (clients and middleboxes drop it): tunnelled, as
             * both stock modes do, not handed to mod_proxy_http as plain
             * HTTP, which the backend would upgrade anyway (502, AH00898).
             * An http:// route (ProxyWebsocketUpgrade) declined it above. */
            ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(029)
                          "%s: tunnelled anyway on %s", k->check.reason,
                          k->url);
            return WST_NEXT;
        }
        if (wst_proxy_http_loaded) {
            return wst_plain_to_proxy_http(r, k->worker, k->conf, k->url,
                                           k->proxyname, k->proxyport);
        }
        /* fall through */
    case WST_UPGRADE_MISMATCH: {
        const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
        const char *expected = *k->worker_upgrade ? k->worker_upgrade
                                                  : "websocket";
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, APLOGNO(02900)
                      "require upgrade for URL %s (Upgrade header is %s, "
                      "expecting %s)", k->url, upgrade ? upgrade : "missing",
                      expected);
        return wst_upgrade_required(r, expected);
    }
    default:
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, WSTNO(014)
                      "bad upgrade request for URL %s: %s", k->url,
                      k->check.reason ? k->check.reason : "invalid");
        r->connection->keepalive = AP_CONN_CLOSE;
        return HTTP_BAD_REQUEST;
    }
}

/* Step 2: may this client open a tunnel now? ProxyWebsocketAllowOrigin and
 * ProxyWebsocketMaxTunnels, before the backend is contacted. */
static int wst_admit(wst_call *k)
{
    request_rec *r = k->r;
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);

    if (dconf->allow_origins && dconf->allow_origins->nelts) {
        const char *origin = apr_table_get(r->headers_in, "Origin");
        const char *host = apr_table_get(r->headers_in, "Host");
        int tls = strcmp(ap_http_scheme(r), "https") == 0;
        if (!wst_origin_allowed(wst_s(origin), origin != NULL, wst_s(host), tls,
                                (const wst_str *)dconf->allow_origins->elts,
                                (size_t)dconf->allow_origins->nelts)) {
            ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, WSTNO(042)
                          "Origin %s refused by ProxyWebsocketAllowOrigin "
                          "for %s", origin, k->url);
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
    return WST_NEXT;
}

/* Step 3: a connection to the backend, through mod_proxy (its worker, its
 * address cache, mod_ssl on wss://). k->backend is released by the caller. */
static int wst_connect(wst_call *k)
{
    request_rec *r = k->r;
    char server_portstr[32];
    int status;

    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, APLOGNO(02451)
                  "serving URL %s", k->url);
    status = ap_proxy_acquire_connection(k->scheme_name, &k->backend, k->worker,
                                         r->server);
    if (status != OK) {
        return status;
    }
    k->backend->is_ssl = k->scheme == WST_SCHEME_WSS;
    k->backend->close = 1;

    k->uri = apr_pcalloc(r->pool, sizeof(*k->uri));
    k->locurl = wst_url_with_port(r->pool, k->url, k->scheme);
    status = ap_proxy_determine_connection(r->pool, r, k->conf, k->worker,
                                           k->backend, k->uri, &k->locurl,
                                           k->proxyname, k->proxyport,
                                           server_portstr,
                                           sizeof(server_portstr));
    if (status == HTTP_INTERNAL_SERVER_ERROR) {
        /* mod_proxy says 500 when the backend's name does not resolve (it
         * logged why); for the client that is a bad gateway, not our fault. */
        return HTTP_BAD_GATEWAY;
    }
    if (status != OK) {
        return status;
    }
    if (ap_proxy_connect_backend(k->scheme_name, k->backend, k->worker,
                                 r->server)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(02452)
                      "failed to make connection to backend: %s",
                      k->backend->hostname);
        return HTTP_SERVICE_UNAVAILABLE;
    }
#if WST_HAVE_CONN_CREATE_EX
    status = ap_proxy_connection_create_ex(k->scheme_name, k->backend, r);
#else
    status = ap_proxy_connection_create(k->scheme_name, k->backend,
                                        r->connection, r->server);
#endif
    if (status != OK) {
        return status;
    }
#if !WST_CONN_CREATE_NOTES_HOSTNAME
    /* On 2.2 the scheme handler names the backend for mod_ssl (mod_proxy_http
     * does it here): without this note, EL6's mod_ssl checks no certificate
     * name under SSLProxyCheckPeerCN on (ssl_io_filter_connect reads it). */
    if (k->backend->is_ssl && k->uri->hostname) {
        apr_table_setn(k->backend->connection->notes, "proxy-request-hostname",
                       apr_pstrdup(k->backend->connection->pool,
                                   k->uri->hostname));
    }
#endif
    return WST_NEXT;
}

/* Step 4: the upgrade request the core writes, sent and flushed. */
static int wst_send_upgrade(wst_call *k)
{
    request_rec *r = k->r;
    conn_rec *backconn = k->backend->connection;
    wst_backend_request req;
    size_t size, out_len = 0;
    apr_status_t rv;
    wst_status st;

    memset(&req, 0, sizeof(req));
    req.method = wst_s(r->method);
    req.path = wst_s(k->locurl);
    req.host = wst_s(wst_backend_host(r, k->conf, k->uri, k->scheme));
    req.headers = k->headers;
    req.n_headers = k->n_headers;
    req.protocol = k->check.protocol;
    req.add_forwarded = wst_add_forwarded(r, k->conf);
    req.forwarded_for = wst_s(WST_CLIENT_IP(r));
    req.forwarded_host = wst_s(apr_table_get(r->headers_in, "Host"));
    req.forwarded_server = wst_s(r->server->server_hostname);

    /* One buffer for the request and then the answer: it is sent (or
     * copied by the core output filter) before the answer is read. */
    size = wst_request_size(&req);
    k->cap = size > WST_HEAD_INITIAL ? size : WST_HEAD_INITIAL;
    k->buf = apr_palloc(r->pool, k->cap);
    st = wst_build_request(&req, (unsigned char *)k->buf, size, &out_len);
    if (st != WST_OK) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(005)
                      "refusing to forward the request: a header name or "
                      "value could not be sent safely (%s)",
                      wst_status_name(st));
        return HTTP_BAD_REQUEST;
    }
    k->bb = apr_brigade_create(r->pool, backconn->bucket_alloc);
    rv = wst_write_flush(backconn, k->bb, k->buf, out_len);
    if (rv != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, WSTNO(006)
                      "failed to send the upgrade request to %s",
                      k->backend->hostname);
        return HTTP_BAD_GATEWAY;
    }
    return WST_NEXT;
}

/* Step 5: read the backend's answer until the core has judged its head
 * (the bytes after it stay in k->buf: a body, or the tunnel's first).
 * The whole head has one deadline, the backend socket's timeout as
 * mod_proxy set it (the worker's timeout=, else ProxyTimeout, else
 * Timeout): a backend that sends its head a byte at a time cannot hold the
 * worker for longer than that (each read alone would be bounded only). */
static int wst_read_head_by(wst_call *k, apr_time_t deadline,
                            apr_interval_time_t per_read);

static int wst_head_too_late(wst_call *k, apr_interval_time_t per_read)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, k->r, WSTNO(019)
                  "the backend's answer to the upgrade did not complete "
                  "within %" APR_TIME_T_FMT " ms (%" APR_SIZE_T_FMT " bytes "
                  "of it came): timeout= or ProxyTimeout bounds the whole head",
                  (apr_time_t)apr_time_as_msec(per_read), k->len);
    return HTTP_GATEWAY_TIME_OUT;
}

static int wst_read_head(wst_call *k)
{
    apr_socket_t *sock = k->backend->sock;
    apr_interval_time_t per_read = 0;
    int status;

    if (apr_socket_timeout_get(sock, &per_read) != APR_SUCCESS) {
        per_read = 0;
    }
    status = wst_read_head_by(k, per_read > 0 ? apr_time_now() + per_read : 0,
                              per_read);
    if (per_read > 0) {
        apr_socket_timeout_set(sock, per_read);
    }
    return status;
}

static int wst_read_head_by(wst_call *k, apr_time_t deadline,
                            apr_interval_time_t per_read)
{
    request_rec *r = k->r;
    conn_rec *backconn = k->backend->connection;
    /* Not zeroed: wst_parse_response fills it. Room for a few header
     * fields (a 101 has a handful), more only for a head that needs them:
     * the request pool stays with the tunnel for its whole life. */
    wst_response *resp = apr_palloc(r->pool, sizeof(*resp));
    apr_status_t rv;
    wst_status st;

    k->resp = resp;
    k->len = 0;
    resp->headers_cap = WST_FEW_RESPONSE_HEADERS;
    resp->headers = apr_palloc(r->pool, resp->headers_cap * sizeof(wst_header));
    for (;;) {
        apr_size_t got = 0;
        if (deadline) {
            apr_interval_time_t left = deadline - apr_time_now();
            if (left <= 0) {
                return wst_head_too_late(k, per_read);
            }
            apr_socket_timeout_set(k->backend->sock,
                                   left < per_read ? left : per_read);
        }
        if (k->len == k->cap) {
            char *bigger;
            if (k->cap >= WST_HEAD_MAX) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(007)
                              "backend's response head is larger than %d "
                              "bytes", WST_HEAD_MAX);
                return HTTP_BAD_GATEWAY;
            }
            bigger = apr_palloc(r->pool, k->cap * 2);
            memcpy(bigger, k->buf, k->len);
            k->buf = bigger;
            k->cap *= 2;
        }
        rv = wst_read_backend(backconn, k->bb, k->buf + k->len,
                              k->cap - k->len, &got);
        if (APR_STATUS_IS_TIMEUP(rv) && deadline) {
            /* Each read waits at most until the deadline (it is never
             * further than one per-read timeout away): this is it. */
            return wst_head_too_late(k, per_read);
        }
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
        k->len += got;
        st = wst_parse_response((const unsigned char *)k->buf, k->len,
                                &k->check, r->header_only, resp);
        if (st == WST_ERR_SPACE && resp->n_headers > resp->headers_cap
                && resp->n_headers <= WST_MAX_RESPONSE_HEADERS) {
            resp->headers_cap = resp->n_headers;
            resp->headers = apr_palloc(r->pool, resp->headers_cap
                                                * sizeof(wst_header));
            st = wst_parse_response((const unsigned char *)k->buf, k->len,
                                    &k->check, r->header_only, resp);
        }
        if (st == WST_PARTIAL) {
            continue;
        }
        if (st != WST_OK) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(018)
                          "the backend's answer could not be parsed (%s, %d "
                          "header fields)", wst_status_name(st),
                          (int)resp->n_headers);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        return WST_NEXT;
    }
}

/* Step 6: the 101 goes to the client with the backend's headers, and the
 * tunnel runs until it ends; then its figures become request notes. */
static int wst_switch_protocols(wst_call *k)
{
    request_rec *r = k->r;
    wst_response *resp = k->resp;
    const char *upgrade;
    wst_tunnel_stats stats;
    apr_time_t started;
    apr_interval_time_t duration;
    wst_handed handed;
    wst_fed fed;
    const char *record;

    if (wst_tunnel_open(r) != OK) {
        /* Answered here, like the cap at admission (see wst_admit). */
        r->status = HTTP_SERVICE_UNAVAILABLE;
        ap_send_error_response(r, 0);
        return DONE;
    }
    r->status = HTTP_SWITCHING_PROTOCOLS;
    /* 2.2's ap_send_interim_response() needs the status line spelled out */
    r->status_line = ap_get_status_line(HTTP_SWITCHING_PROTOCOLS);
    /* The 101 carries the backend's headers, as both stock modes send it,
     * not what the front end gathered for a response it will never send
     * (a Vary: Upgrade from a RewriteCond on %{HTTP:Upgrade}, say). */
    apr_table_clear(r->headers_out);
    wst_copy_response_headers(r, resp, 0);
    upgrade = wst_response_header(r->pool, resp, "Upgrade");
    apr_table_setn(r->headers_out, "Upgrade",
                   upgrade ? upgrade
                           : apr_pstrmemdup(r->pool, k->check.protocol.ptr,
                                            k->check.protocol.len));
    apr_table_setn(r->headers_out, "Connection", "Upgrade");
    ap_send_interim_response(r, 1);
    r->sent_bodyct = 1;

    /* Plain sockets on both sides: the tunnel leaves this worker (the
     * access log's line is written now; its figures go to the tunnel log
     * when it ends). */
    handed = wst_async_hand_over(r, k->worker, k->backend,
                                 k->buf + resp->header_len,
                                 k->len - resp->header_len,
                                 k->check.is_websocket, &fed);
    if (handed == WST_HANDED) {
        return DONE;
    }

    record = wst_tlog_begin(r, "threaded");
    started = apr_time_now();
    if (handed == WST_KEPT_FED) {
        wst_run_tunnel(r, k->backend, fed.to_client, fed.to_client_len,
                       fed.to_backend, fed.to_backend_len,
                       k->check.is_websocket, &stats);
        wst_fed_free(&fed);
    }
    else {
        wst_run_tunnel(r, k->backend, k->buf + resp->header_len,
                       k->len - resp->header_len, NULL, 0,
                       k->check.is_websocket, &stats);
    }
    duration = apr_time_now() - started;
    wst_set_notes(r, &stats, duration);

    wst_log_tunnel_end(r, &stats);
    wst_tlog_write(wst_tlog_fd(r->server), record, &stats,
                   (apr_uint64_t)apr_time_as_msec(duration));
    return DONE;
}

int wst_handler(request_rec *r, proxy_worker *worker, proxy_server_conf *conf,
                char *url, const char *proxyname, apr_port_t proxyport)
{
    wst_call *k = apr_pcalloc(r->pool, sizeof(*k));
    int status;

    k->r = r;
    k->worker = worker;
    k->conf = conf;
    k->url = url;
    k->proxyname = proxyname;
    k->proxyport = proxyport;

    status = wst_classify(k);
    if (status == WST_NEXT) {
        status = wst_admit(k);
    }
    if (status != WST_NEXT) {
        return status;
    }
    status = wst_connect(k);
    if (status == WST_NEXT) {
        status = wst_send_upgrade(k);
    }
    if (status == WST_NEXT) {
        status = wst_read_head(k);
    }
    if (status == WST_NEXT) {
        switch (k->resp->kind) {
        case WST_RESP_TUNNEL:
            status = wst_switch_protocols(k);
            break;
        case WST_RESP_OTHER:
            status = wst_relay_response(r, k->backend->connection, k->bb,
                                        k->resp, k->buf, k->len, k->cap);
            break;
        default:
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, WSTNO(011)
                          "backend %s answered the upgrade with %d, refused: %s",
                          k->backend->hostname, k->resp->status,
                          k->resp->why ? k->resp->why : "invalid response");
            status = HTTP_BAD_GATEWAY;
        }
    }
    if (k->backend) {
        k->backend->close = 1;
        ap_proxy_release_connection(k->scheme_name, k->backend, r->server);
    }
    return status;
}
