/*
 * wst_limits.c: the server-wide count of open tunnels.
 *
 * One small shared-memory segment, created once per httpd process tree (it
 * lives in the process pool, so it survives graceful restarts and old and
 * new generations count together), holds the number of open tunnels across
 * all children. ProxyWebsocketMaxTunnels caps it; mod_status shows it.
 */
#include "wst_shim.h"
#include "apr_shm.h"
#include "apr_atomic.h"
#include "mod_status.h"

#define WST_SHM_KEY "wstunnel-counters"

typedef struct wst_counters {
    volatile apr_uint32_t open;     /* tunnels open now */
    volatile apr_uint32_t total;    /* tunnels opened since start (wraps) */
    volatile apr_uint32_t refused;  /* upgrades refused by the cap */
} wst_counters;

static wst_counters *counters;       /* NULL: no segment (counts disabled) */
static wst_counters local_counters;  /* fallback when shm is unavailable */
static apr_uint32_t max_tunnels;     /* 0: no cap */

const char *wst_set_max_tunnels(cmd_parms *cmd, void *dconf, const char *arg)
{
    char *end = NULL;
    apr_int64_t n = apr_strtoi64(arg, &end, 10);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);

    (void)dconf;
    if (err) {
        return err;
    }
    if (!end || end == arg || *end || n < 0 || n > 1000000) {
        return "ProxyWebsocketMaxTunnels takes a number of tunnels "
               "(0 = no limit)";
    }
    max_tunnels = (apr_uint32_t)n;
    return NULL;
}

void wst_limits_pre_config(void)
{
    max_tunnels = 0;    /* a restart re-reads the configuration */
}

int wst_limits_post_config(apr_pool_t *pconf, server_rec *s)
{
    apr_pool_t *ppool = s->process->pool;
    apr_shm_t *shm = NULL;
    void *data = NULL;
    apr_status_t rv;

    (void)pconf;
    apr_pool_userdata_get(&data, WST_SHM_KEY, ppool);
    if (data) {
        counters = data;
        return OK;
    }
    rv = apr_shm_create(&shm, sizeof(wst_counters), NULL, ppool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, WSTNO(040)
                     "no shared memory for the tunnel count: "
                     "ProxyWebsocketMaxTunnels counts per child");
        counters = &local_counters;
        return OK;
    }
    counters = apr_shm_baseaddr_get(shm);
    memset((void *)counters, 0, sizeof(*counters));
    apr_pool_userdata_set(counters, WST_SHM_KEY, apr_pool_cleanup_null, ppool);
    return OK;
}

static apr_status_t wst_tunnel_closed(void *unused)
{
    (void)unused;
    if (counters) {
        apr_atomic_dec32(&counters->open);
    }
    return APR_SUCCESS;
}

int wst_tunnel_admit(request_rec *r)
{
    apr_uint32_t before;

    if (!counters) {
        return OK;
    }
    before = apr_atomic_inc32(&counters->open);
    if (max_tunnels && before >= max_tunnels) {
        apr_atomic_dec32(&counters->open);
        apr_atomic_inc32(&counters->refused);
        apr_table_setn(r->err_headers_out, "Retry-After", "10");
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, WSTNO(041)
                      "ProxyWebsocketMaxTunnels %u reached: upgrade refused "
                      "with 503", (unsigned)max_tunnels);
        return HTTP_SERVICE_UNAVAILABLE;
    }
    apr_atomic_inc32(&counters->total);
    apr_pool_cleanup_register(r->pool, NULL, wst_tunnel_closed,
                              apr_pool_cleanup_null);
    return OK;
}

static int wst_status_hook(request_rec *r, int flags)
{
    apr_uint32_t open, total, refused;

    if (!counters) {
        return OK;
    }
    open = apr_atomic_read32(&counters->open);
    total = apr_atomic_read32(&counters->total);
    refused = apr_atomic_read32(&counters->refused);
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "WebSocketTunnels: %u\nWebSocketTunnelsTotal: %u\n"
                   "WebSocketTunnelsRefused: %u\n", open, total, refused);
    }
    else {
        ap_rprintf(r, "<hr /><h2>WebSocket tunnels (mod_proxy_wstunnel)</h2>"
                   "<dl><dt>Open tunnels: %u%s</dt>"
                   "<dt>Opened since start: %u</dt>"
                   "<dt>Refused by ProxyWebsocketMaxTunnels: %u</dt></dl>",
                   open,
                   max_tunnels ? apr_psprintf(r->pool, " of at most %u",
                                              max_tunnels) : "",
                   total, refused);
    }
    return OK;
}

void wst_limits_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, wst_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
}
