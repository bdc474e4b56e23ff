/*
 * wst_compat.h: every difference between the httpd APIs the shim is built
 * against (2.2.x and 2.4.x) lives here, behind AP_MODULE_MAGIC_AT_LEAST.
 */
#ifndef WST_COMPAT_H
#define WST_COMPAT_H

#include "ap_mmn.h"

/* httpd 2.4.0 and later (MMN 20111130 is 2.3.15 / the 2.4 API). */
#define WST_HTTPD_24 AP_MODULE_MAGIC_AT_LEAST(20111130, 0)

/* proxy check_trans hook and mod_proxy_http's own upgrade tunnel: 2.4.47. */
#define WST_HAVE_CHECK_TRANS AP_MODULE_MAGIC_AT_LEAST(20120211, 99)
/* mod_proxy_http knows ws:// and wss:// and tunnels upgrades: 2.4.47. */
#define WST_PROXY_HTTP_TUNNELS AP_MODULE_MAGIC_AT_LEAST(20120211, 99)
/* ProxyPass upgrade= parameter (worker->s->upgrade): 2.4.26. */
#define WST_HAVE_WORKER_UPGRADE AP_MODULE_MAGIC_AT_LEAST(20120211, 68)
/* ap_proxy_connection_create_ex() (per-<Proxy> SSLProxy*): 2.4.30. */
#define WST_HAVE_CONN_CREATE_EX AP_MODULE_MAGIC_AT_LEAST(20120211, 71)
/* ap_proxy_canonenc_ex(): 2.4.56. */
#define WST_HAVE_CANONENC_EX AP_MODULE_MAGIC_AT_LEAST(20120211, 127)
/* conn_rec->master (HTTP/2 secondary connections): 2.4.17. */
#define WST_HAVE_CONN_MASTER AP_MODULE_MAGIC_AT_LEAST(20120211, 52)
/* ap_get_pollfd_from_conn(): 2.4.58 (MMN 20120211.129). */
/* A descriptor to poll for a connection's input, HTTP/2 streams included
 * (mod_http2 gives a stream's notification pipe); 2.4.58 also brought
 * H2WebSockets (RFC 8441). Without it a WebSocket over HTTP/2 cannot be
 * tunnelled by this module (501, or mod_proxy_http's). */
#define WST_HAVE_POLLFD_FROM_CONN AP_MODULE_MAGIC_AT_LEAST(20120211, 129)
/* ProxyAddHeaders (proxy_dir_conf->add_forwarded_headers): every 2.4. */
#define WST_HAVE_ADD_FORWARDED WST_HTTPD_24
/* ap_proxy_connection_create() sets the "proxy-request-hostname" note that
 * mod_ssl checks the backend's certificate name against (and sends as SNI)
 * from the worker's ssl_hostname: every 2.4. On 2.2 the caller sets it. */
#define WST_CONN_CREATE_NOTES_HOSTNAME WST_HTTPD_24
/* ap_get_conn_socket(): 2.3.13; 2.2 keeps the socket in core's conn_config. */
#define WST_HAVE_CONN_SOCKET AP_MODULE_MAGIC_AT_LEAST(20110605, 2)
/* conn_rec->data_in_output_filters (output held back by the core): 2.3. */
#define WST_HAVE_DATA_IN_OUTPUT_FILTERS WST_HTTPD_24
/* The child_stopping(pchild, graceful) hook: 2.4.49 (MMN 20120211.110). */
#define WST_HAVE_CHILD_STOPPING AP_MODULE_MAGIC_AT_LEAST(20120211, 110)
/* A piped log's write end: a function on 2.4 (piped_log is opaque there),
 * the structure's field on 2.2 (whose header has a macro for it, undefined
 * and poisoned below so the one spelling stays 2.4's). */
#define WST_HAVE_PIPED_LOG_FN WST_HTTPD_24
#if WST_HAVE_PIPED_LOG_FN
#define WST_PIPED_LOG_FILE(pl) ap_piped_log_write_fd(pl)
#else
#define WST_PIPED_LOG_FILE(pl) ((pl)->fds[1])
#endif
/* ap_cstr_casecmp(), ap_cstr_casecmpn(): 2.4.21. */
#define WST_HAVE_CSTR_CASECMP AP_MODULE_MAGIC_AT_LEAST(20120211, 61)

#if WST_HAVE_CONN_SOCKET
#define WST_CONN_SOCKET(c) ap_get_conn_socket(c)
#else
#define WST_CONN_SOCKET(c) \
    ((apr_socket_t *)ap_get_module_config((c)->conn_config, &core_module))
#endif

#if WST_HTTPD_24
#define WST_CLIENT_IP(r) ((r)->useragent_ip)
#else
#define WST_CLIENT_IP(r) ((r)->connection->remote_ip)
#endif

#if WST_HAVE_CSTR_CASECMP
#define WST_CASECMP(a, b) ap_cstr_casecmp((a), (b))
#define WST_CASECMPN(a, b, n) ap_cstr_casecmpn((a), (b), (n))
#else
#define WST_CASECMP(a, b) strcasecmp((a), (b))
#define WST_CASECMPN(a, b, n) strncasecmp((a), (b), (n))
#endif

/* Log tags and trace levels: 2.4's. On 2.2, APLOGNO spelled out and the
 * trace levels as debug. */
#ifndef APLOGNO
#define APLOGNO(n) "AH" #n ": "
#endif
#ifndef APLOG_TRACE1
#define APLOG_TRACE1 APLOG_DEBUG
#define APLOG_TRACE2 APLOG_DEBUG
#endif

/* apr_time_from_msec(): APR 1.4.0 (CentOS 6 has APR 1.3.9). */
#define WST_TIME_FROM_MSEC(ms) ((apr_interval_time_t)(ms) * 1000)

#if !WST_HTTPD_24
/* The 2.2 floor is CentOS 6: httpd 2.2.15 on APR 1.3.9 and APR-util 1.3.9.
 * Against those headers a call to something newer is only an implicit
 * declaration (a warning by default) and the module then fails to load with
 * "undefined symbol". Newer functions and macros that the 2.4 path uses or
 * that are easy to reach for are poisoned here, so such a call is a compile
 * error on every 2.2 build. apxs/api-httpd22.txt lists what the 2.2 path may
 * use and apxs/api-newer.txt what it must not; apxs/check-api.sh checks both
 * in CI, where only 2.4 headers exist. */
#pragma GCC poison apr_time_from_msec apr_table_getm apr_socket_atreadeof
#pragma GCC poison apr_pollcb_wakeup apr_skiplist_init
#pragma GCC poison ap_get_conn_socket ap_cstr_casecmp ap_cstr_casecmpn
#pragma GCC poison ap_proxy_connection_create_ex ap_proxy_canonenc_ex
#pragma GCC poison ap_get_pollfd_from_conn
#pragma GCC poison ap_proxy_port_of_scheme proxy_hook_check_trans
#pragma GCC poison ap_log_cserror ap_log_data ap_state_query
#pragma GCC poison ap_mpm_register_timed_callback ap_log_error_ ap_log_rerror_
#pragma GCC poison ap_hook_child_stopping
#if defined(ap_piped_log_write_fd) && WST_HAVE_PIPED_LOG_FN == 0
#undef ap_piped_log_write_fd   /* 2.2's macro: WST_PIPED_LOG_FILE reads the field */
#endif
#pragma GCC poison ap_piped_log_write_fd
#endif

#endif /* WST_COMPAT_H */
