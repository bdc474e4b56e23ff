/*
 * wst_ctun.c: ProxyWebsocketMaxClientTunnels, open tunnels per client
 * address.
 *
 * The default store is a shared-memory table of the module's own, created
 * once in the process pool (like wst_limits.c's counters: it survives
 * graceful restarts, old and new generations count together):
 *
 *   - 4096 buckets of 16 slots {count, address as 16 bytes (IPv4 as
 *     IPv4-mapped IPv6)}; an address hashes to one bucket and is counted in
 *     one of its slots. A bucket has a spin lock (apr_atomic_cas32 on a word
 *     holding the owner's pid; a waiter takes over the lock of a process
 *     that died holding it). A bucket whose 16 slots all hold other clients
 *     admits without counting (WST062, said at most once a minute).
 *   - 65536 records {pid, slot, armed}, one per counted tunnel: the count
 *     of a child that died without giving back (kill -9, a crash) is given
 *     back by whoever next finds the client at its cap, by every new child
 *     at its start, and by mod_status. Without a free record a tunnel is
 *     still counted, but a crash of its child would not give it back.
 *
 * The optional store (httpd 2.4): an ap_socache provider named as mod_ssl's
 * SSLSessionCache is ("shmcb:/path(512000)", "memcache:host:port", ...),
 * one entry per client address holding its count, each read-modify-write
 * under a global mutex of this server, stored with an expiry that every
 * open and close renews, so that a server that dies gives its clients'
 * counts back. Across servers sharing it the cap is approximate.
 *
 * The count is taken at admission (before the backend is contacted) and
 * given back by r->pool's cleanup (no tunnel, or a tunnel that ran on its
 * worker) or, for a tunnel handed to the child's reactor, by the end
 * callback on the reactor's thread (wst_ctun_release: no request, no pool
 * of the request; thread-safe).
 */
#include "wst_shim.h"
#include "apr_shm.h"
#include "apr_atomic.h"
#include "ap_provider.h"
#if WST_HAVE_SOCACHE
#include "ap_socache.h"
#include "util_mutex.h"
#include "apr_global_mutex.h"
#endif
#include "mod_status.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sched.h>
#include <signal.h>
#include <errno.h>
#include <unistd.h>

#define WST_CT_SHM_KEY "wstunnel-client-tunnels"
#define WST_CT_BUCKETS 4096
#define WST_CT_WAYS 16
#define WST_CT_RECORDS 65536
#define WST_CT_RETRY_AFTER "10"
/* Default expiry of a socache entry (renewed at each open and close). */
#define WST_CT_TTL_DEFAULT apr_time_from_sec(600)
#define WST_CT_MUTEX_TYPE "proxy-wstunnel-clients"

typedef struct wst_ct_slot {
    volatile apr_uint32_t count;
    unsigned char key[16];
} wst_ct_slot;

typedef struct wst_ct_bucket {
    volatile apr_uint32_t lock;          /* owner's pid, 0 free */
    wst_ct_slot slot[WST_CT_WAYS];
} wst_ct_bucket;

typedef struct wst_ct_record {
    volatile apr_uint32_t pid;           /* 0 free */
    volatile apr_uint32_t slot;          /* bucket * WST_CT_WAYS + way */
    volatile apr_uint32_t armed;         /* 1: the slot's count includes it */
} wst_ct_record;

typedef struct wst_ct_table {
    apr_uint32_t magic;
    volatile apr_uint32_t cursor;        /* where the next record search starts */
    volatile apr_uint32_t refused;       /* upgrades refused (wraps) */
    volatile apr_uint32_t reaped;        /* counts given back for dead children */
    wst_ct_bucket bucket[WST_CT_BUCKETS];
    wst_ct_record record[WST_CT_RECORDS];
} wst_ct_table;

static wst_ct_table *table;              /* NULL: no table (not configured) */
static int any_configured;               /* some server has a cap > 0 */
static server_rec *ct_main_server;
static volatile apr_time_t last_reap;
static volatile apr_time_t last_notice;

/* The optional store: given in the main server config only. */
static const char *store_spec;           /* "name:args", NULL: the table */
static apr_interval_time_t store_ttl;

#if WST_HAVE_SOCACHE
typedef struct wst_ct_store {
    const char *spec;
    const ap_socache_provider_t *provider;
    ap_socache_instance_t *instance;
    apr_global_mutex_t *mutex;
    const char *mutex_file;
} wst_ct_store;
static wst_ct_store *store;              /* NULL: the table */
#endif

/* ---- configuration ---- */

const char *wst_set_max_client_tunnels(cmd_parms *cmd, void *dconf,
                                       const char *arg, const char *cache,
                                       const char *ttl)
{
    wst_srv_conf *conf = ap_get_module_config(cmd->server->module_config,
                                              &proxy_wstunnel_module);
    char *end = NULL;
    apr_int64_t n = apr_strtoi64(arg, &end, 10);

    (void)dconf;
    if (!end || end == arg || *end || n < 0 || n > 1000000) {
        return "ProxyWebsocketMaxClientTunnels takes a number of tunnels per "
               "client address (0 = no limit)";
    }
    conf->ctun_max = (int)n;
    if (cache) {
        if (cmd->server->is_virtual) {
            return "ProxyWebsocketMaxClientTunnels: the store (second "
                   "argument) is server-wide: name it in the main server "
                   "config, not in a <VirtualHost>";
        }
#if WST_HAVE_SOCACHE
        {
            const char *sep = ap_strchr_c(cache, ':');
            const char *name = sep ? apr_pstrmemdup(cmd->temp_pool, cache,
                                                    (apr_size_t)(sep - cache))
                                   : cache;
            if (!ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                    AP_SOCACHE_PROVIDER_VERSION)) {
                return apr_psprintf(cmd->pool, "ProxyWebsocketMaxClientTunnels: "
                                    "no socache provider '%s' (load its "
                                    "mod_socache_%s first)", name, name);
            }
        }
        store_spec = apr_pstrdup(cmd->pool, cache);
        store_ttl = WST_CT_TTL_DEFAULT;
        if (ttl) {
            char *tend = NULL;
            apr_int64_t secs = apr_strtoi64(ttl, &tend, 10);
            if (!tend || tend == ttl || *tend || secs < 10 || secs > 86400 * 7) {
                return "ProxyWebsocketMaxClientTunnels: the expiry (third "
                       "argument) is a number of seconds, 10 to 604800";
            }
            store_ttl = apr_time_from_sec(secs);
        }
#else
        (void)ttl;
        return "ProxyWebsocketMaxClientTunnels: a shared store (second "
               "argument, an ap_socache provider) needs httpd 2.4; on 2.2 "
               "the count lives in this server's shared memory";
#endif
    }
    else if (ttl) {
        return "ProxyWebsocketMaxClientTunnels: an expiry without a store";
    }
    if (n > 0) {
        any_configured = 1;
    }
    return NULL;
}

static int ctun_max_of(server_rec *s)
{
    wst_srv_conf *conf = ap_get_module_config(s->module_config,
                                              &proxy_wstunnel_module);
    return conf && conf->ctun_max > 0 ? conf->ctun_max : 0;
}

/* ---- the shared-memory table ---- */

static int ct_pid_gone(apr_uint32_t pid)
{
    return pid && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

static void ct_lock(wst_ct_bucket *b)
{
    apr_uint32_t me = (apr_uint32_t)getpid();
    unsigned long spins = 0;

    for (;;) {
        apr_uint32_t owner = apr_atomic_cas32(&b->lock, me, 0);
        if (owner == 0) {
            return;
        }
        spins++;
        if (spins % 64 == 0) {
            sched_yield();
        }
        if (spins % 4096 == 0 && owner != me && ct_pid_gone(owner)) {
            /* its owner died inside the few instructions it holds it */
            apr_atomic_cas32(&b->lock, 0, owner);
        }
    }
}

static void ct_unlock(wst_ct_bucket *b)
{
    apr_atomic_xchg32(&b->lock, 0);      /* a full barrier, then free */
}

/* The address as 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d, anything
 * else (never seen: httpd gives numeric addresses) as a hash of the text. */
static void ct_key(const char *ip, unsigned char key[16])
{
    memset(key, 0, 16);
    if (inet_pton(AF_INET6, ip, key) == 1) {
        return;
    }
    if (inet_pton(AF_INET, ip, key + 12) == 1) {
        key[10] = key[11] = 0xff;
        return;
    }
    {
        apr_uint32_t h = 2166136261u;
        int i;
        const unsigned char *p = (const unsigned char *)ip;
        key[0] = 0xfe;                   /* not a unicast address */
        for (; *p; p++) {
            h = (h ^ *p) * 16777619u;
        }
        for (i = 0; i < 4; i++) {
            key[4 + i] = (unsigned char)(h >> (8 * i));
        }
    }
}

static apr_uint32_t ct_bucket_of(const unsigned char key[16])
{
    apr_uint32_t h = 2166136261u;
    int i;

    for (i = 0; i < 16; i++) {
        h = (h ^ key[i]) * 16777619u;
    }
    return (h ^ (h >> 16)) % WST_CT_BUCKETS;
}

static int ct_claim_record(void)
{
    apr_uint32_t me = (apr_uint32_t)getpid();
    apr_uint32_t start = apr_atomic_inc32(&table->cursor) % WST_CT_RECORDS;
    apr_uint32_t k;

    for (k = 0; k < WST_CT_RECORDS; k++) {
        apr_uint32_t i = (start + k) % WST_CT_RECORDS;
        wst_ct_record *rec = &table->record[i];
        if (apr_atomic_read32(&rec->pid) == 0
                && apr_atomic_cas32(&rec->pid, me, 0) == 0) {
            apr_atomic_set32(&rec->armed, 0);
            return (int)i;
        }
    }
    return -1;
}

static void ct_free_record(int rec)
{
    if (rec >= 0) {
        apr_atomic_set32(&table->record[rec].armed, 0);
        apr_atomic_xchg32(&table->record[rec].pid, 0);
    }
}

/* Give back the counts of processes that are gone. Returns how many. */
static apr_uint32_t ct_reap(void)
{
    apr_uint32_t seen[32], dead[32];
    int n_seen = 0, next = 0;
    apr_uint32_t i, given = 0;

    if (!table) {
        return 0;
    }
    last_reap = apr_time_now();
    for (i = 0; i < WST_CT_RECORDS; i++) {
        wst_ct_record *rec = &table->record[i];
        apr_uint32_t pid = apr_atomic_read32(&rec->pid);
        int j, gone = -1;

        if (!pid) {
            continue;
        }
        for (j = 0; j < n_seen; j++) {
            if (seen[j] == pid) {
                gone = (int)dead[j];
                break;
            }
        }
        if (gone < 0) {
            gone = ct_pid_gone(pid);
            if (n_seen < 32) {
                j = n_seen++;
            }
            else {
                j = next;
                next = (next + 1) % 32;
            }
            seen[j] = pid;
            dead[j] = (apr_uint32_t)gone;
        }
        if (!gone) {
            continue;
        }
        if (apr_atomic_read32(&rec->armed)) {
            apr_uint32_t idx = apr_atomic_read32(&rec->slot);
            wst_ct_bucket *b = &table->bucket[(idx / WST_CT_WAYS)
                                              % WST_CT_BUCKETS];
            ct_lock(b);
            if (apr_atomic_read32(&rec->armed)
                    && apr_atomic_read32(&rec->pid) == pid) {
                wst_ct_slot *sl = &b->slot[idx % WST_CT_WAYS];
                if (sl->count > 0) {
                    sl->count--;
                    given++;
                }
                rec->armed = 0;
            }
            ct_unlock(b);
        }
        apr_atomic_cas32(&rec->pid, 0, pid);
    }
    for (i = 0; i < given; i++) {
        apr_atomic_inc32(&table->reaped);
    }
    return given;
}

/* Records of this pid left by an earlier process with the same pid (this
 * child has just started and holds none). */
static void ct_forget_own_pid(void)
{
    apr_uint32_t me = (apr_uint32_t)getpid();
    apr_uint32_t i;

    for (i = 0; i < WST_CT_RECORDS; i++) {
        wst_ct_record *rec = &table->record[i];
        if (apr_atomic_read32(&rec->pid) == me) {
            if (apr_atomic_read32(&rec->armed)) {
                apr_uint32_t idx = apr_atomic_read32(&rec->slot);
                wst_ct_bucket *b = &table->bucket[(idx / WST_CT_WAYS)
                                                  % WST_CT_BUCKETS];
                ct_lock(b);
                if (apr_atomic_read32(&rec->armed)
                        && b->slot[idx % WST_CT_WAYS].count > 0) {
                    b->slot[idx % WST_CT_WAYS].count--;
                }
                rec->armed = 0;
                ct_unlock(b);
            }
            apr_atomic_cas32(&rec->pid, 0, me);
        }
    }
}

/* Results of a try to count a tunnel. */
#define CT_COUNTED 0
#define CT_REFUSED 1
#define CT_UNCOUNTED 2    /* the bucket is full: admitted without a count */

static int ct_table_take(const unsigned char key[16], apr_uint32_t max,
                         wst_ctun_ticket *t, apr_uint32_t *count)
{
    apr_uint32_t bi = ct_bucket_of(key);
    wst_ct_bucket *b = &table->bucket[bi];
    int rec = ct_claim_record();
    int found = -1, free_way = -1, i;
    wst_ct_slot *sl;

    ct_lock(b);
    for (i = 0; i < WST_CT_WAYS; i++) {
        if (b->slot[i].count > 0) {
            if (memcmp(b->slot[i].key, key, 16) == 0) {
                found = i;
                break;
            }
        }
        else if (free_way < 0) {
            free_way = i;
        }
    }
    if (found < 0) {
        if (free_way < 0) {
            ct_unlock(b);
            ct_free_record(rec);
            *count = 0;
            return CT_UNCOUNTED;
        }
        found = free_way;
        memcpy(b->slot[found].key, key, 16);
    }
    sl = &b->slot[found];
    *count = sl->count;
    if (sl->count >= max) {
        ct_unlock(b);
        ct_free_record(rec);
        return CT_REFUSED;
    }
    sl->count++;
    *count = sl->count;
    t->slot = bi * WST_CT_WAYS + (apr_uint32_t)found;
    t->rec = rec;
    if (rec >= 0) {
        table->record[rec].slot = t->slot;
        table->record[rec].armed = 1;
    }
    ct_unlock(b);
    return CT_COUNTED;
}

static void ct_table_give(const wst_ctun_ticket *t)
{
    wst_ct_bucket *b = &table->bucket[(t->slot / WST_CT_WAYS) % WST_CT_BUCKETS];
    wst_ct_slot *sl = &b->slot[t->slot % WST_CT_WAYS];
    int mine = 1;

    ct_lock(b);
    if (t->rec >= 0) {
        wst_ct_record *rec = &table->record[t->rec];
        /* a reaper may have taken it already (only if we were thought dead) */
        mine = rec->armed && rec->pid == (apr_uint32_t)getpid();
        rec->armed = 0;
    }
    if (mine && sl->count > 0 && memcmp(sl->key, t->key, 16) == 0) {
        sl->count--;
    }
    ct_unlock(b);
    if (t->rec >= 0) {
        apr_atomic_cas32(&table->record[t->rec].pid, 0,
                         (apr_uint32_t)getpid());
    }
}

/* ---- the optional store (2.4): an ap_socache provider ---- */

#if WST_HAVE_SOCACHE
static unsigned int ct_store_id(const char *addr, unsigned char *id,
                                unsigned int cap)
{
    int n = apr_snprintf((char *)id, cap, "wstct:%s", addr);
    return n > 0 ? (unsigned int)n : 0;
}

/* delta +1: take (refused when at max), -1: give back. */
static int ct_store_adjust(const char *addr, int delta, apr_uint32_t max,
                           apr_pool_t *p, apr_uint32_t *count)
{
    unsigned char id[80], val[32];
    unsigned int idlen = ct_store_id(addr, id, sizeof(id));
    unsigned int vlen = sizeof(val) - 1;
    apr_uint32_t now = 0;
    apr_status_t rv;
    int result = CT_COUNTED;

    if (store->mutex) {
        apr_global_mutex_lock(store->mutex);
    }
    rv = store->provider->retrieve(store->instance, ct_main_server, id, idlen,
                                   val, &vlen, p);
    if (rv == APR_SUCCESS && vlen < sizeof(val)) {
        val[vlen] = '\0';
        now = (apr_uint32_t)apr_strtoi64((char *)val, NULL, 10);
    }
    if (delta > 0 && now >= max) {
        result = CT_REFUSED;
    }
    else {
        now = delta > 0 ? now + 1 : (now > 0 ? now - 1 : 0);
        if (now == 0) {
            rv = store->provider->remove(store->instance, ct_main_server, id,
                                         idlen, p);
            if (APR_STATUS_IS_NOTFOUND(rv)) {
                rv = APR_SUCCESS;
            }
        }
        else {
            vlen = (unsigned int)apr_snprintf((char *)val, sizeof(val), "%u",
                                              (unsigned)now);
            rv = store->provider->store(store->instance, ct_main_server, id,
                                        idlen, apr_time_now() + store_ttl,
                                        val, vlen, p);
        }
        if (rv != APR_SUCCESS && delta > 0) {
            result = CT_UNCOUNTED;
        }
    }
    if (store->mutex) {
        apr_global_mutex_unlock(store->mutex);
    }
    if (rv != APR_SUCCESS && !APR_STATUS_IS_NOTFOUND(rv)) {
        apr_time_t t = apr_time_now();
        if (t - last_notice > apr_time_from_sec(60)) {
            last_notice = t;
            ap_log_error(APLOG_MARK, APLOG_WARNING, rv, ct_main_server,
                         WSTNO(063) "ProxyWebsocketMaxClientTunnels: the store "
                         "%s failed for client %s (%s); said at most once a "
                         "minute", store->spec, addr,
                         delta > 0 ? "admitted without a count" : "give-back");
        }
    }
    *count = now;
    return result;
}

static apr_status_t ct_store_destroy(void *data)
{
    wst_ct_store *st = data;

    st->provider->destroy(st->instance, ct_main_server);
    return APR_SUCCESS;
}

/* The store, made anew by each generation in pconf (as mod_ssl makes its
 * session cache): httpd reloads the provider's module at a restart, so
 * nothing of an older generation's provider may be kept. memcache and redis
 * keep their counts across a restart (they live in the servers); shmcb
 * starts over with each generation. */
static int ct_store_init(apr_pool_t *pconf, server_rec *s)
{
    const char *sep, *name, *arg, *err;
    wst_ct_store *st;
    apr_status_t rv;
    struct ap_socache_hints hints;

    store = NULL;
    if (!store_spec) {
        return OK;
    }
    st = apr_pcalloc(pconf, sizeof(*st));
    st->spec = store_spec;
    sep = ap_strchr_c(st->spec, ':');
    name = sep ? apr_pstrmemdup(pconf, st->spec, (apr_size_t)(sep - st->spec))
               : st->spec;
    arg = sep ? sep + 1 : NULL;
    st->provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                      AP_SOCACHE_PROVIDER_VERSION);
    if (!st->provider) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, WSTNO(064)
                     "ProxyWebsocketMaxClientTunnels: no socache provider "
                     "'%s'", name);
        return DONE;
    }
    err = st->provider->create(&st->instance, arg, pconf, pconf);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, WSTNO(064)
                     "ProxyWebsocketMaxClientTunnels: store %s: %s",
                     st->spec, err);
        return DONE;
    }
    memset(&hints, 0, sizeof(hints));
    hints.avg_id_len = 24;
    hints.avg_obj_size = 4;
    hints.expiry_interval = 30;
    rv = st->provider->init(st->instance, "wstunnel-ct", &hints, s, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, WSTNO(064)
                     "ProxyWebsocketMaxClientTunnels: store %s could not be "
                     "initialised", st->spec);
        return DONE;
    }
    /* Every read-modify-write of a count under one lock of this server
     * (socache has no atomic increment), whatever the provider's flags. */
    rv = ap_global_mutex_create(&st->mutex, &st->mutex_file, WST_CT_MUTEX_TYPE,
                                NULL, s, pconf, 0);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, WSTNO(064)
                     "ProxyWebsocketMaxClientTunnels: no mutex for the "
                     "store %s", st->spec);
        return DONE;
    }
    if (st->provider->destroy) {
        apr_pool_cleanup_register(pconf, st, ct_store_destroy,
                                  apr_pool_cleanup_null);
    }
    store = st;
    return OK;
}
#endif

/* ---- hooks ---- */

static int ct_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                         apr_pool_t *ptemp)
{
    (void)plog;
    (void)ptemp;
    any_configured = 0;
    store_spec = NULL;
    store_ttl = WST_CT_TTL_DEFAULT;
#if WST_HAVE_SOCACHE
    ap_mutex_register(pconf, WST_CT_MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
#else
    (void)pconf;
#endif
    return OK;
}

static int ct_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp, server_rec *s)
{
    apr_pool_t *ppool = s->process->pool;
    void *data = NULL;
    apr_shm_t *shm = NULL;
    apr_status_t rv;

    (void)plog;
    (void)ptemp;
    ct_main_server = s;
    table = NULL;
    if (!any_configured) {
        return OK;
    }
#if WST_HAVE_SOCACHE
    if (store_spec) {
        return ct_store_init(pconf, s);
    }
    store = NULL;
#endif
    apr_pool_userdata_get(&data, WST_CT_SHM_KEY, ppool);
    if (data) {
        table = data;
        return OK;
    }
    rv = apr_shm_create(&shm, sizeof(wst_ct_table), NULL, ppool);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, rv, s, WSTNO(061)
                     "no shared memory (%lu bytes) for the count of tunnels "
                     "per client: ProxyWebsocketMaxClientTunnels has no "
                     "effect", (unsigned long)sizeof(wst_ct_table));
        return OK;
    }
    table = apr_shm_baseaddr_get(shm);
    memset(table, 0, sizeof(*table));
    table->magic = 0x77637431;
    apr_pool_userdata_set(table, WST_CT_SHM_KEY, apr_pool_cleanup_null, ppool);
    return OK;
}

static void ct_child_init(apr_pool_t *pchild, server_rec *s)
{
    (void)s;
#if WST_HAVE_SOCACHE
    if (store && store->mutex) {
        apr_status_t rv = apr_global_mutex_child_init(&store->mutex,
                                                      store->mutex_file,
                                                      pchild);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, WSTNO(064)
                         "ProxyWebsocketMaxClientTunnels: the store's mutex "
                         "could not be opened in this child");
        }
    }
#else
    (void)pchild;
#endif
    if (table) {
        ct_forget_own_pid();
        ct_reap();
    }
}

/* mod_status: how many were refused and given back for dead children. */
static int ct_status_hook(request_rec *r, int flags)
{
    if (!table) {
        return OK;
    }
    ct_reap();
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "WebSocketClientTunnelsRefused: %u\n"
                   "WebSocketClientTunnelsReaped: %u\n",
                   (unsigned)apr_atomic_read32(&table->refused),
                   (unsigned)apr_atomic_read32(&table->reaped));
    }
    return OK;
}

void wst_ctun_register_hooks(void)
{
    ap_hook_pre_config(ct_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ct_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(ct_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, ct_status_hook, NULL, NULL,
                      APR_HOOK_MIDDLE);
}

/* ---- admission and give-back ---- */

#define WST_CT_POOL_KEY "wstunnel-client-ticket"

static apr_status_t ct_request_done(void *data)
{
    wst_ctun_release(data);
    return APR_SUCCESS;
}

static void ct_notice_uncounted(request_rec *r, const char *why)
{
    apr_time_t now = apr_time_now();

    if (now - last_notice < apr_time_from_sec(60)) {
        return;
    }
    last_notice = now;
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, WSTNO(062)
                  "ProxyWebsocketMaxClientTunnels: %s (said at most once a "
                  "minute)", why);
}

static int ct_refuse(request_rec *r, const char *addr, apr_uint32_t count,
                     apr_uint32_t max)
{
    if (table) {
        apr_atomic_inc32(&table->refused);
    }
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, WSTNO(060)
                  "client %s has %u open tunnel%s, "
                  "ProxyWebsocketMaxClientTunnels %u: upgrade refused with 429",
                  addr, (unsigned)count, count == 1 ? "" : "s", (unsigned)max);
    apr_table_setn(r->err_headers_out, "Retry-After", WST_CT_RETRY_AFTER);
#if WST_HTTPD_24
    r->status = HTTP_TOO_MANY_REQUESTS;
    ap_send_error_response(r, 0);
#else
    /* 2.2 knows no 429: its status line and page are spelled out here. */
    r->status = 429;
    r->status_line = "429 Too Many Requests";
    ap_set_content_type(r, "text/html; charset=iso-8859-1");
    ap_rprintf(r, "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n"
               "<html><head>\n<title>429 Too Many Requests</title>\n"
               "</head><body>\n<h1>Too Many Requests</h1>\n<p>The user has "
               "sent too many requests\nin a given amount of time.</p>\n"
               "</body></html>\n");
#endif
    return DONE;
}

int wst_ctun_admit(request_rec *r)
{
    apr_uint32_t max = (apr_uint32_t)ctun_max_of(r->server);
    const char *ip = WST_CLIENT_IP(r);
    wst_ctun_ticket *t;
    apr_uint32_t count = 0;
    int res;

    if (!max || !ip) {
        return OK;
    }
#if WST_HAVE_SOCACHE
    if (!table && !store) {
        return OK;
    }
#else
    if (!table) {
        return OK;
    }
#endif
    t = apr_pcalloc(r->pool, sizeof(*t));
    apr_cpystrn(t->addr, ip, sizeof(t->addr));
    ct_key(ip, t->key);
    t->rec = -1;
#if WST_HAVE_SOCACHE
    if (store) {
        t->store = 1;
        res = ct_store_adjust(t->addr, 1, max, r->pool, &count);
    }
    else
#endif
    {
        res = ct_table_take(t->key, max, t, &count);
        if (res == CT_REFUSED
                && apr_time_now() - last_reap > apr_time_from_sec(1)
                && ct_reap()) {
            res = ct_table_take(t->key, max, t, &count);
        }
        if (res == CT_COUNTED && t->rec < 0) {
            ct_notice_uncounted(r, "no free record (65536 counted tunnels): "
                                "this tunnel's count would not come back if "
                                "its child died");
        }
        if (res == CT_UNCOUNTED) {
            ct_notice_uncounted(r, apr_psprintf(r->pool, "the table's bucket "
                                "of client %s is full: admitted without a "
                                "count", t->addr));
        }
    }
    if (res == CT_REFUSED) {
        return ct_refuse(r, t->addr, count, max);
    }
    if (res == CT_COUNTED) {
        t->held = 1;
        apr_pool_cleanup_register(r->pool, t, ct_request_done,
                                  apr_pool_cleanup_null);
        apr_pool_userdata_set(t, WST_CT_POOL_KEY, apr_pool_cleanup_null,
                              r->pool);
    }
    return OK;
}

void wst_ctun_done(request_rec *r)
{
    void *data = NULL;
    wst_ctun_ticket *t;

    apr_pool_userdata_get(&data, WST_CT_POOL_KEY, r->pool);
    t = data;
    if (t && t->held) {
        apr_pool_cleanup_run(r->pool, t, ct_request_done);
    }
}

void wst_ctun_to_async(request_rec *r, wst_ctun_ticket *out)
{
    void *data = NULL;
    wst_ctun_ticket *t;

    memset(out, 0, sizeof(*out));
    apr_pool_userdata_get(&data, WST_CT_POOL_KEY, r->pool);
    t = data;
    if (!t || !t->held) {
        return;
    }
    apr_pool_cleanup_kill(r->pool, t, ct_request_done);
    *out = *t;
    t->held = 0;
}

void wst_ctun_from_async(request_rec *r, wst_ctun_ticket *back)
{
    void *data = NULL;
    wst_ctun_ticket *t;

    apr_pool_userdata_get(&data, WST_CT_POOL_KEY, r->pool);
    t = data;
    if (!t || !back->held) {
        return;
    }
    *t = *back;
    back->held = 0;
    apr_pool_cleanup_register(r->pool, t, ct_request_done,
                              apr_pool_cleanup_null);
}

void wst_ctun_release(wst_ctun_ticket *t)
{
    if (!t || !t->held) {
        return;
    }
    t->held = 0;
#if WST_HAVE_SOCACHE
    if (t->store) {
        apr_allocator_t *alloc = NULL;
        apr_pool_t *p = NULL;
        apr_uint32_t count;

        if (!store) {
            return;
        }
        /* A pool of its own: this may run on the reactor's thread. */
        if (apr_allocator_create(&alloc) != APR_SUCCESS) {
            return;
        }
        if (apr_pool_create_ex(&p, NULL, NULL, alloc) != APR_SUCCESS) {
            apr_allocator_destroy(alloc);
            return;
        }
        apr_allocator_owner_set(alloc, p);
        ct_store_adjust(t->addr, -1, 0, p, &count);
        apr_pool_destroy(p);
        return;
    }
#endif
    if (table) {
        ct_table_give(t);
    }
}
