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
/* ap_scan_vchar_obstext(): 2.4.24. */
#define WST_HAVE_SCAN_VCHAR AP_MODULE_MAGIC_AT_LEAST(20120211, 67)
/* conn_rec->master (HTTP/2 secondary connections): 2.4.17. */
#define WST_HAVE_CONN_MASTER AP_MODULE_MAGIC_AT_LEAST(20120211, 52)
/* ProxyAddHeaders (proxy_dir_conf->add_forwarded_headers): every 2.4. */
#define WST_HAVE_ADD_FORWARDED WST_HTTPD_24
/* ap_proxy_port_of_scheme(): 2.4.8 (knows ws/wss from 2.4.34). */
#define WST_HAVE_PROXY_PORT_OF_SCHEME AP_MODULE_MAGIC_AT_LEAST(20120211, 31)

/* ap_get_conn_socket(): 2.3.13; 2.2 keeps the socket in core's conn_config. */
#if AP_MODULE_MAGIC_AT_LEAST(20110605, 2)
#define WST_CONN_SOCKET(c) ap_get_conn_socket(c)
#else
#define WST_CONN_SOCKET(c) \
    ((apr_socket_t *)ap_get_module_config((c)->conn_config, &core_module))
#endif

#if WST_HTTPD_24
#define WST_CLIENT_IP(r) ((r)->useragent_ip)
#define WST_CASECMP(a, b) ap_cstr_casecmp((a), (b))
#define WST_CASECMPN(a, b, n) ap_cstr_casecmpn((a), (b), (n))
#else
#define WST_CLIENT_IP(r) ((r)->connection->remote_ip)
#define WST_CASECMP(a, b) strcasecmp((a), (b))
#define WST_CASECMPN(a, b, n) strncasecmp((a), (b), (n))
#endif

#if !AP_MODULE_MAGIC_AT_LEAST(20120211, 61)
/* ap_cstr_casecmp() appeared in 2.4.21. */
#undef WST_CASECMP
#undef WST_CASECMPN
#define WST_CASECMP(a, b) strcasecmp((a), (b))
#define WST_CASECMPN(a, b, n) strncasecmp((a), (b), (n))
#endif

#endif /* WST_COMPAT_H */
