/*
 * wst_shim.h: declarations shared by the shim's files.
 *
 *   mod_proxy_wstunnel.c  module record and hook registration
 *   wst_config.c          directives and per-directory configuration
 *   wst_route.c           canon, check_trans and the 426 fallback (which
 *                         requests are ours)
 *   wst_handler.c         the scheme handler, step by step: classify the
 *                         request, admit it, connect, send the upgrade, read
 *                         the head, switch protocols
 *   wst_relay.c           a non-101 answer relayed as ordinary HTTP (and the
 *                         backend's headers copied onto the 101)
 *   wst_limits.c          ProxyWebsocketMaxTunnels, counts in shared memory,
 *                         mod_status
 *   wst_drain.c           ProxyWebsocketDrain and stops: when a tunnel ends
 *   wst_io.c              tunnel endpoints over httpd's filters, the call into
 *                         the Rust tunnel, byte accounting
 *   wst_async.c           tunnels that leave their worker: the child's reactor
 *                         thread, the hand-over, the end of such a tunnel,
 *                         the child's exit
 *   wst_tlog.c            ProxyWebsocketTunnelLog: one record per tunnel
 */
#ifndef WST_SHIM_H
#define WST_SHIM_H

#include "mod_proxy.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_core.h"
#include "apr_strings.h"

#include "wst_compat.h"
#include "wstunnel_core.h"

#include <strings.h>

extern module AP_MODULE_DECLARE_DATA proxy_wstunnel_module;

/* 2.4: log under this module's name, so "LogLevel proxy_wstunnel:debug"
 * applies to every file of the shim. */
#if defined(APLOG_USE_MODULE) && !defined(WST_MODULE_RECORD_FILE)
/* (the file with the module record gets it from AP_DECLARE_MODULE) */
APLOG_USE_MODULE(proxy_wstunnel);
#endif

/* Log tags: messages that stock mod_proxy_wstunnel also logs keep httpd's
 * APLOGNO; this module's own messages are tagged "WSTnnn: ". */
#define WSTNO(n) "WST" #n ": "

/* A C string as the core's view of it (NULL reads as ""). */
static APR_INLINE wst_str wst_s(const char *s)
{
    wst_str out;
    out.ptr = s ? s : "";
    out.len = s ? strlen(s) : 0;
    return out;
}

/* ---- wst_config.c ---- */

typedef struct wst_dir_conf {
    int fallback_to_proxy_http;      /* -1 unset, 0 Off, 1 On */
    apr_interval_time_t idle_timeout; /* -1 unset, 0 none */
    int upgrade_http;                /* ProxyWebsocketUpgrade: -1 unset, 0, 1 */
    apr_interval_time_t ping;        /* ProxyWebsocketPing: -1 unset, 0 off */
    apr_interval_time_t drain;       /* ProxyWebsocketDrain: -1 unset, 0 off */
    apr_array_header_t *allow_origins; /* of wst_str; NULL unset */
    int async;                       /* ProxyWebsocketAsync: -1 unset (On), 0, 1 */
} wst_dir_conf;

/* Per server (main server and virtual hosts). */
typedef struct wst_srv_conf {
    const char *tlog_spec;           /* ProxyWebsocketTunnelLog: file or |pipe; NULL unset */
    const char *tlog_format;         /* its format (NULL: the default) */
    int tlog_fd;                     /* opened at post_config; -1 none */
} wst_srv_conf;

void *wst_create_srv_conf(apr_pool_t *p, server_rec *s);
void *wst_merge_srv_conf(apr_pool_t *p, void *base, void *add);

extern const command_rec wst_cmds[];
void *wst_create_dir_conf(apr_pool_t *p, char *dir);
void *wst_merge_dir_conf(apr_pool_t *p, void *base, void *add);

/* Set at post_config: mod_proxy_http is loaded (and, on 2.4.47+, can tunnel
 * upgrades itself and serve plain requests to ws:// URLs). */
extern int wst_proxy_http_loaded;

/* 1 when this request is to be handed to mod_proxy_http (explicit
 * ProxyWebsocketFallbackToProxyHttp On, and mod_proxy_http can tunnel). */
int wst_hand_over_to_proxy_http(request_rec *r);

/* 1 when mod_proxy_http can serve a plain (non-upgrade) request to a ws://
 * or wss:// URL. */
int wst_proxy_http_serves_ws(void);

/* ---- wst_limits.c ---- */

const char *wst_set_max_tunnels(cmd_parms *cmd, void *dconf, const char *arg);
void wst_limits_pre_config(void);
int wst_limits_post_config(apr_pool_t *pconf, server_rec *s);
void wst_limits_register_hooks(void);
void wst_limits_child_init(void);
/* Before the backend is contacted: 503 when ProxyWebsocketMaxTunnels
 * tunnels are open (handshakes in progress do not count). */
int wst_tunnel_admit(request_rec *r);
/* The backend's 101 is accepted: count the tunnel (until r->pool goes), or
 * 503 when the cap filled up meanwhile. */
int wst_tunnel_open(request_rec *r);
/* The tunnel leaves its worker: its slot no longer goes with r->pool but
 * with wst_tunnel_release(1), and it counts as handed over. */
void wst_tunnel_to_async(request_rec *r);
/* Undo wst_tunnel_to_async (the reactor refused the tunnel). */
void wst_tunnel_from_async(request_rec *r);
/* Give a tunnel's slot back (async: a handed-over one). Atomics only: the
 * reactor's thread calls it. */
void wst_tunnel_release(int async);

/* ---- wst_route.c ---- */

int wst_canon(request_rec *r, char *url);
#if WST_HAVE_CHECK_TRANS
int wst_check_trans(request_rec *r, const char *url);
#endif
int wst_translate_upgrade_required(request_rec *r);

/* The scheme of a proxy URL: ws: or wss: (case-insensitive), else none. */
typedef enum wst_scheme {
    WST_SCHEME_NONE = 0,
    WST_SCHEME_WS = 1,
    WST_SCHEME_WSS = 2
} wst_scheme;
wst_scheme wst_scheme_of(const char *url);
/* Answer 426 with the Upgrade the route expects. */
int wst_upgrade_required(request_rec *r, const char *expected);
/* The client's headers as the core's view of them (pool memory). */
wst_header *wst_request_headers(request_rec *r, size_t *n);

/* ---- wst_handler.c ---- */

int wst_handler(request_rec *r, proxy_worker *worker, proxy_server_conf *conf,
                char *url, const char *proxyname, apr_port_t proxyport);

/* ---- wst_relay.c ---- */

/* A non-101 answer: relay it as an ordinary HTTP response, body included
 * (buf holds len bytes of it from the head on, in a buffer of cap), and
 * never tunnel. */
int wst_relay_response(request_rec *r, conn_rec *backconn,
                       apr_bucket_brigade *inbb, wst_response *resp,
                       char *buf, apr_size_t len, apr_size_t cap);
/* Copy the backend's end-to-end headers into r->headers_out; relay: also
 * Content-Type, and ProxyPassReverse on Location & co. and Set-Cookie. */
void wst_copy_response_headers(request_rec *r, const wst_response *resp,
                               int relay);
/* A response header's value (repeated fields joined with ", "), or NULL. */
const char *wst_response_header(apr_pool_t *p, const wst_response *resp,
                                const char *name);
/* Read what the backend has, blocking, into buf (at most cap bytes).
 * Returns APR_EOF at the end of its stream. */
apr_status_t wst_read_backend(conn_rec *backconn, apr_bucket_brigade *bb,
                              char *buf, apr_size_t cap, apr_size_t *got);

/* ---- wst_drain.c ---- */

typedef struct wst_drain {
    request_rec *r;
    apr_socket_t *client_sock;
    apr_os_sock_t client_fd;
    apr_interval_time_t window;   /* ProxyWebsocketDrain, 0: none */
    apr_time_t moment;            /* when this tunnel says 1001 (0: not yet chosen) */
    apr_uint32_t seed;            /* random per tunnel */
} wst_drain;

void wst_drain_init(wst_drain *d, request_rec *r, apr_socket_t *client_sock,
                    apr_interval_time_t window);
/* The tunnel's should_stop. */
wst_stop wst_drain_should_stop(void *drain);

/* ---- wst_io.c ---- */

/* 1 when a connection has only the filters the core may bypass (core,
 * core_in, mod_logio's): its socket can be read and written directly once
 * its input filters are drained. */
int wst_is_raw(request_rec *r, conn_rec *c, const char *name);

/* Run the tunnel between the client and the backend connection; `pending`
 * holds bytes the backend sent after its 101, `client_pending` bytes the
 * client sent that were already read from its filters (each at most 64 KiB);
 * `websocket`: the tunnel carries RFC 6455 frames. Returns the stats. */
void wst_run_tunnel(request_rec *r, proxy_conn_rec *backend,
                    const char *pending, apr_size_t pending_len,
                    const char *client_pending, apr_size_t client_pending_len,
                    int websocket, wst_tunnel_stats *stats);

/* Remove every filter named `name` from a connection's filter chain
 * (ap_remove_*_filter_byhandle exist only from 2.4). */
void wst_remove_filter(conn_rec *c, const char *name, int input);

/* Write a whole buffer through a connection's output filters and flush,
 * using (and emptying) the brigade bb. */
apr_status_t wst_write_flush(conn_rec *c, apr_bucket_brigade *bb,
                             const char *buf, apr_size_t len);

/* Read at most cap bytes from a connection's input filters into buf
 * (blocking or not), using (and emptying) the brigade bb: *got the bytes,
 * *eos whether an EOS bucket came. Returns ap_get_brigade's status
 * (APR_EAGAIN, APR_EOF, ...) or apr_brigade_flatten's. */
apr_status_t wst_read_flat(conn_rec *c, apr_bucket_brigade *bb,
                           apr_read_type_e block, char *buf, apr_size_t cap,
                           apr_size_t *got, int *eos);

/* ---- wst_tlog.c ---- */

/* ProxyWebsocketTunnelLog's format: NULL when it is valid, else why not. */
const char *wst_tlog_check_format(apr_pool_t *p, const char *fmt);
/* Open every server's tunnel log (post_config). */
int wst_tlog_post_config(apr_pool_t *pconf, server_rec *s);
/* The tunnel log record's request-side part for r (codes known at the
 * 101 expanded, the tunnel's own left for wst_tlog_write), or NULL when r's
 * server has no tunnel log. path: "async" or "threaded". Pool memory. */
char *wst_tlog_begin(request_rec *r, const char *path);
/* The descriptor r's server's tunnel log is written to, or -1. */
int wst_tlog_fd(server_rec *s);
/* Expand the rest of the record and write it, one write() of at most
 * 4 KiB. No pools, no httpd calls: safe on the reactor's thread. */
void wst_tlog_write(int fd, const char *record, const wst_tunnel_stats *stats,
                    apr_uint64_t duration_ms);

/* ---- wst_async.c ---- */

void wst_async_register_hooks(void);
void wst_async_child_init(apr_pool_t *pchild, server_rec *s);

/* What wst_async_hand_over did. */
typedef enum wst_handed {
    WST_KEPT = 0,      /* not handed over, nothing consumed: run it here */
    WST_HANDED = 1,    /* the reactor has it: the handler returns DONE */
    WST_KEPT_FED = 2   /* not handed over after the filters were drained:
                        * run it here, starting with the bytes in the
                        * wst_fed (malloc'd; wst_fed_free) */
} wst_handed;

/* Bytes read from httpd's filters and not relayed yet. */
typedef struct wst_fed {
    char *to_backend;          /* from the client */
    apr_size_t to_backend_len;
    char *to_client;           /* from the backend (its bytes after the 101 first) */
    apr_size_t to_client_len;
} wst_fed;

void wst_fed_free(wst_fed *fed);

/* After the 101: hand the tunnel to the child's reactor when it can go.
 * pending: the backend's bytes after its 101 head. */
wst_handed wst_async_hand_over(request_rec *r, proxy_worker *worker,
                               proxy_conn_rec *backend, const char *pending,
                               apr_size_t pending_len, int websocket,
                               wst_fed *fed);

#endif /* WST_SHIM_H */
