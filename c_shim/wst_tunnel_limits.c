/*
 * wst_tunnel_limits.c: a tunnel's settings from its configuration, and the
 * limits of issue 15 on what goes through a tunnel.
 *
 *   ProxyWebsocketMaxMessageSize <bytes>       a WebSocket message (all its
 *       fragments) larger than this, from either side, ends the tunnel:
 *       Close 1009 to its sender, 1001 to the other side (K, M, G: 1024,
 *       1024^2, 1024^3; 0 = off, the default).
 *   ProxyWebsocketMaxMessageRate <rate> [<burst>]  messages per second the
 *       client may send (a token bucket of <burst>, default the rate); more
 *       ends the tunnel: Close 1008 to the client, 1001 to the backend
 *       (0 = off, the default).
 *   ProxyWebsocketMaxLifetime <time>           every tunnel ends at a random
 *       moment in the last tenth of this (WebSocket: Close 1001 both ways;
 *       0 = off, the default).
 *
 * The Rust core does the work (wst_tunnel_config's max_* fields); this file
 * reads the directives, fills the wst_tunnel_config both tunnel paths use
 * (threaded: wst_io.c; handed to the reactor: wst_async.c), and says which
 * limit ended a tunnel (WST080-WST082, info).
 */
#include "wst_shim.h"

/* At most 1 TiB: a larger message limit is no limit. */
#define WST_MAX_SIZE_LIMIT ((apr_int64_t)1 << 40)
#define WST_MAX_RATE_LIMIT 1000000

/* <bytes>: a whole number, optionally followed by K, M or G (either case;
 * powers of 1024). */
const char *wst_set_max_message_size(cmd_parms *cmd, void *dconf,
                                     const char *arg)
{
    wst_dir_conf *conf = dconf;
    const char *p = arg;
    apr_int64_t v = 0, unit = 1;

    while (*p >= '0' && *p <= '9') {
        if (v > WST_MAX_SIZE_LIMIT) {
            break;
        }
        v = v * 10 + (*p - '0');
        p++;
    }
    if (p != arg && *p && !p[1]) {
        switch (*p) {
        case 'k': case 'K': unit = (apr_int64_t)1 << 10; p++; break;
        case 'm': case 'M': unit = (apr_int64_t)1 << 20; p++; break;
        case 'g': case 'G': unit = (apr_int64_t)1 << 30; p++; break;
        default: break;
        }
    }
    if (p == arg || *p || v > WST_MAX_SIZE_LIMIT / unit) {
        return apr_psprintf(cmd->pool, "%s takes a size in bytes: a whole "
                            "number, optionally with K, M or G (64K, 1M), at "
                            "most 1024G; 0 = off (got '%s')", cmd->cmd->name,
                            arg);
    }
    conf->max_message_size = v * unit;
    return NULL;
}

static int wst_parse_count(const char *s, int max)
{
    const char *p = s;
    long v = 0;

    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > max) {
            return -1;
        }
        p++;
    }
    return (p == s || *p) ? -1 : (int)v;
}

const char *wst_set_max_message_rate(cmd_parms *cmd, void *dconf,
                                     const char *rate, const char *burst)
{
    wst_dir_conf *conf = dconf;
    int r = wst_parse_count(rate, WST_MAX_RATE_LIMIT);
    int b = burst ? wst_parse_count(burst, WST_MAX_RATE_LIMIT) : 0;

    if (r < 0) {
        return apr_psprintf(cmd->pool, "%s takes the messages per second a "
                            "client may send: a whole number up to %d, 0 = off "
                            "(got '%s')", cmd->cmd->name, WST_MAX_RATE_LIMIT,
                            rate);
    }
    if (burst && (b < 1 || r == 0)) {
        return apr_psprintf(cmd->pool, "%s: the burst (messages a client may "
                            "send at once) is a whole number from 1 to %d, "
                            "after a rate that is not 0 (got '%s %s')",
                            cmd->cmd->name, WST_MAX_RATE_LIMIT, rate, burst);
    }
    conf->max_message_rate = r;
    conf->max_message_burst = b;
    return NULL;
}

const char *wst_set_max_lifetime(cmd_parms *cmd, void *dconf,
                                 const char *arg)
{
    wst_dir_conf *conf = dconf;
    return wst_set_time(cmd, arg, &conf->max_lifetime);
}

void wst_msg_limits_of(request_rec *r, int websocket, wst_msg_limits *l)
{
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);

    l->max_size = dconf->max_message_size > 0
                  ? (apr_uint64_t)dconf->max_message_size : 0;
    l->rate = dconf->max_message_rate > 0 ? dconf->max_message_rate : 0;
    l->burst = l->rate && dconf->max_message_burst > 0
               ? dconf->max_message_burst : l->rate;
    l->lifetime_ms = dconf->max_lifetime > 0
                     ? (apr_int64_t)apr_time_as_msec(dconf->max_lifetime) : 0;
    l->websocket = websocket ? 1 : 0;
}

void wst_tunnel_config_fill(request_rec *r, int websocket,
                            wst_tunnel_config *cfg)
{
    wst_dir_conf *dconf = ap_get_module_config(r->per_dir_config,
                                               &proxy_wstunnel_module);
    wst_msg_limits l;

    wst_msg_limits_of(r, websocket, &l);
    cfg->idle_timeout_ms = dconf->idle_timeout > 0
                           ? (int)apr_time_as_msec(dconf->idle_timeout) : 0;
    cfg->half_close = apr_table_get(r->subprocess_env, "proxy-nohalfclose")
                      ? 0 : 1;
    cfg->websocket = websocket ? 1 : 0;
    cfg->ping_interval_ms = websocket && dconf->ping > 0
                            ? (int)apr_time_as_msec(dconf->ping) : 0;
    cfg->idle_close_frame = websocket ? 1 : 0;
    /* Size and rate: the core applies them to WebSocket tunnels only. */
    cfg->max_message_size = websocket ? (uint64_t)l.max_size : 0;
    cfg->max_message_rate = websocket ? l.rate : 0;
    cfg->max_message_burst = websocket ? l.burst : 0;
    cfg->max_lifetime_ms = (int64_t)l.lifetime_ms;
}

void wst_log_limit_end(request_rec *r, server_rec *s, const char *who,
                       const wst_msg_limits *l, const wst_tunnel_stats *st,
                       apr_uint64_t duration_ms)
{
    char text[320];
    const char *side, *other;
    apr_uint64_t size;

    switch (st->reason) {
    case WST_END_MESSAGE_TOO_BIG:
        /* The sender is the side whose largest message is over the limit
         * (a cut message counts as announced). */
        if (st->largest_message_from_client > l->max_size) {
            side = "the client";
            other = "the backend";
            size = st->largest_message_from_client;
        }
        else {
            side = "the backend";
            other = "the client";
            size = st->largest_message_from_backend;
        }
        apr_snprintf(text, sizeof(text), WSTNO(080) "%s: message of %"
                     APR_UINT64_T_FMT " bytes from %s over "
                     "ProxyWebsocketMaxMessageSize %" APR_UINT64_T_FMT
                     ": closed with 1009 to %s, 1001 to %s", who, size, side,
                     l->max_size, side, other);
        break;
    case WST_END_RATE_LIMITED:
        apr_snprintf(text, sizeof(text), WSTNO(081) "%s: the client sent "
                     "messages faster than ProxyWebsocketMaxMessageRate %d "
                     "(burst %d) (%" APR_UINT64_T_FMT " messages in %"
                     APR_UINT64_T_FMT " ms): closed with 1008 to the client, "
                     "1001 to the backend", who, l->rate, l->burst,
                     (apr_uint64_t)st->messages_from_client, duration_ms);
        break;
    case WST_END_LIFETIME:
        apr_snprintf(text, sizeof(text), WSTNO(082) "%s: tunnel open for %"
                     APR_UINT64_T_FMT " ms, ProxyWebsocketMaxLifetime %"
                     APR_INT64_T_FMT " ms: closed%s", who, duration_ms,
                     l->lifetime_ms,
                     l->websocket ? " with 1001 to both sides" : "");
        break;
    default:
        return;
    }
    if (r) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "%s", text);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "%s", text);
    }
}
