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

#include "ap_mpm.h"
#include <signal.h>
#include <errno.h>

#define WST_SHM_KEY "wstunnel-counters"

/* What each child holds, so that the tunnels of a child that died without
 * running its cleanups (killed, crashed) can be given back. */
typedef struct wst_child_count {
    volatile apr_uint32_t pid;
    volatile apr_uint32_t open;
    volatile apr_uint32_t open_async;   /* of which handed over */
} wst_child_count;

typedef struct wst_counters {
    volatile apr_uint32_t open;     /* tunnels open (101 relayed), all children */
    volatile apr_uint32_t open_async; /* of which handed to a reactor */
    volatile apr_uint32_t total;    /* tunnels started (101 relayed) since start (wraps) */
    volatile apr_uint32_t refused;  /* upgrades refused by the cap */
    apr_uint32_t n_children;        /* entries in child[] */
    wst_child_count child[1];       /* n_children of them */
} wst_counters;

static wst_counters *counters;       /* NULL: no segment (counts disabled) */
static wst_counters local_counters;  /* fallback when shm is unavailable */
static wst_child_count *my_count;    /* this child's entry, or NULL */
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
    int limit = 0;
    apr_uint32_t n;

    (void)pconf;
    apr_pool_userdata_get(&data, WST_SHM_KEY, ppool);
    if (data) {
        counters = data;
        return OK;
    }
    /* Old and new generations overlap during a graceful restart. */
    ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit);
    n = (apr_uint32_t)(limit > 0 ? limit : 256) * 2 + 16;
    rv = apr_shm_create(&shm, sizeof(wst_counters) + n * sizeof(wst_child_count),
                        NULL, ppool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, WSTNO(040)
                     "no shared memory for the tunnel count: "
                     "ProxyWebsocketMaxTunnels counts per child");
        counters = &local_counters;
        return OK;
    }
    counters = apr_shm_baseaddr_get(shm);
    memset((void *)counters, 0, sizeof(wst_counters)
                                + n * sizeof(wst_child_count));
    counters->n_children = n + 1;
    apr_pool_userdata_set(counters, WST_SHM_KEY, apr_pool_cleanup_null, ppool);
    return OK;
}

static int wst_pid_gone(apr_uint32_t pid)
{
    return pid && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Give back what children that are gone still hold. */
static void wst_reap(void)
{
    apr_uint32_t i;

    for (i = 0; counters && i < counters->n_children; i++) {
        wst_child_count *cc = &counters->child[i];
        apr_uint32_t pid = apr_atomic_read32(&cc->pid);
        if (pid && wst_pid_gone(pid)
                && apr_atomic_cas32(&cc->pid, 0, pid) == pid) {
            apr_uint32_t stale = apr_atomic_xchg32(&cc->open, 0);
            apr_uint32_t stale_async = apr_atomic_xchg32(&cc->open_async, 0);
            while (stale--) {
                apr_atomic_dec32(&counters->open);
            }
            while (stale_async--) {
                apr_atomic_dec32(&counters->open_async);
            }
        }
    }
}

void wst_limits_child_init(void)
{
    apr_uint32_t i, me = (apr_uint32_t)getpid();

    my_count = NULL;
    if (!counters || counters == &local_counters) {
        return;
    }
    wst_reap();
    for (i = 0; i < counters->n_children; i++) {
        wst_child_count *cc = &counters->child[i];
        if (apr_atomic_cas32(&cc->pid, me, 0) == 0) {
            apr_atomic_set32(&cc->open, 0);
            apr_atomic_set32(&cc->open_async, 0);
            my_count = cc;
            return;
        }
    }
}

/* A tunnel's slot back: from r->pool's cleanup (threaded tunnels) or from
 * the end of a handed-over tunnel, on the reactor's thread (atomics only). */
void wst_tunnel_release(int async)
{
    if (!counters) {
        return;
    }
    apr_atomic_dec32(&counters->open);
    if (async) {
        apr_atomic_dec32(&counters->open_async);
    }
    if (my_count) {
        apr_atomic_dec32(&my_count->open);
        if (async) {
            apr_atomic_dec32(&my_count->open_async);
        }
    }
}

static apr_status_t wst_tunnel_closed(void *unused)
{
    (void)unused;
    wst_tunnel_release(0);
    return APR_SUCCESS;
}

/* The tunnel leaves its worker (wst_async.c): its slot stays taken past
 * r->pool, until wst_tunnel_release(1) at its end. */
void wst_tunnel_to_async(request_rec *r)
{
    if (!counters) {
        return;
    }
    apr_pool_cleanup_kill(r->pool, NULL, wst_tunnel_closed);
    apr_atomic_inc32(&counters->open_async);
    if (my_count) {
        apr_atomic_inc32(&my_count->open_async);
    }
}

/* The reactor did not take it after all: back to r->pool's lifetime. */
void wst_tunnel_from_async(request_rec *r)
{
    if (!counters) {
        return;
    }
    apr_atomic_dec32(&counters->open_async);
    if (my_count) {
        apr_atomic_dec32(&my_count->open_async);
    }
    apr_pool_cleanup_register(r->pool, NULL, wst_tunnel_closed,
                              apr_pool_cleanup_null);
}

static int wst_refuse(request_rec *r, const char *when)
{
    apr_atomic_inc32(&counters->refused);
    apr_table_setn(r->err_headers_out, "Retry-After", "10");
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, WSTNO(041)
                  "ProxyWebsocketMaxTunnels %u %s: upgrade refused with 503",
                  (unsigned)max_tunnels, when);
    return HTTP_SERVICE_UNAVAILABLE;
}

/* Take one slot if the cap allows it. */
static int wst_take_slot(void)
{
    for (;;) {
        apr_uint32_t now = apr_atomic_read32(&counters->open);
        if (max_tunnels && now >= max_tunnels) {
            return 0;
        }
        if (apr_atomic_cas32(&counters->open, now + 1, now) == now) {
            return 1;
        }
    }
}

/* Before the backend is contacted: refuse at once when the cap is reached.
 * Nothing is counted yet: handshakes in progress do not hold slots (a silent
 * backend would otherwise lock every client out until its timeout); they
 * are bounded by the head deadline (timeout=, ProxyTimeout) and by
 * MaxRequestWorkers. */
int wst_tunnel_admit(request_rec *r)
{
    apr_uint32_t now;

    if (!counters || !max_tunnels) {
        return OK;
    }
    now = apr_atomic_read32(&counters->open);
    if (now >= max_tunnels) {
        wst_reap();                /* a dead child's tunnels may be stale */
        now = apr_atomic_read32(&counters->open);
    }
    if (now >= max_tunnels) {
        return wst_refuse(r, "reached");
    }
    return OK;
}

/* The backend said 101: take the tunnel's slot (until r->pool goes), or
 * refuse with 503 when handshakes that were admitted together outran the
 * cap. */
int wst_tunnel_open(request_rec *r)
{
    if (!counters) {
        return OK;
    }
    if (!wst_take_slot()) {
        wst_reap();
        if (!wst_take_slot()) {
            return wst_refuse(r, "reached while the backend answered");
        }
    }
    if (my_count) {
        apr_atomic_inc32(&my_count->open);
    }
    apr_atomic_inc32(&counters->total);
    apr_pool_cleanup_register(r->pool, NULL, wst_tunnel_closed,
                              apr_pool_cleanup_null);
    return OK;
}

/* mod_status runs this for every form of its page: AP_STATUS_SHORT is the
 * machine-readable ?auto (plain "Key: value" lines); every other call is the
 * HTML page (with or without AP_STATUS_NOTABLE, ExtendedStatus on or off),
 * which gets a section in mod_status's own <dl><dt> style (no table, so that
 * ?notable stays table-free), one line each, before the signature. */
static int wst_status_hook(request_rec *r, int flags)
{
    apr_uint32_t open, open_async, total, refused;

    if (!counters) {
        return OK;
    }
    wst_reap();                    /* children that died with tunnels open */
    open = apr_atomic_read32(&counters->open);
    open_async = apr_atomic_read32(&counters->open_async);
    if (open_async > open) {
        open_async = open;         /* read between two updates */
    }
    total = apr_atomic_read32(&counters->total);
    refused = apr_atomic_read32(&counters->refused);
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "WebSocketTunnels: %u\nWebSocketTunnelsThreaded: %u\n"
                   "WebSocketTunnelsAsync: %u\nWebSocketTunnelsTotal: %u\n"
                   "WebSocketTunnelsRefused: %u\n", open, open - open_async,
                   open_async, total, refused);
        return OK;
    }
    ap_rprintf(r, "<hr />\n<h2>WebSocket tunnels (mod_proxy_wstunnel)</h2>\n"
               "<dl>\n<dt>Open tunnels: %u%s</dt>\n"
               "<dt>On a worker thread: %u; handed to the children's "
               "reactors: %u</dt>\n"
               "<dt>Opened since start: %u</dt>\n"
               "<dt>Refused by ProxyWebsocketMaxTunnels: %u</dt>\n</dl>\n",
               open,
               max_tunnels ? apr_psprintf(r->pool, " of at most %u", max_tunnels)
                           : " (no limit)",
               open - open_async, open_async, total, refused);
    return OK;
}

void wst_limits_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, wst_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
}
