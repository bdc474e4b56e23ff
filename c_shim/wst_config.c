/*
 * wst_config.c: directives and per-directory configuration.
 *
 *   ProxyWebsocketFallbackToProxyHttp On|Off   accepted as in httpd 2.4.48+;
 *       only an explicit On hands the tunnel to mod_proxy_http (where that
 *       can tunnel); unset, this module tunnels itself.
 *   ProxyWebsocketIdleTimeout <time>           httpd trunk's name; ends
 *       tunnels idle that long. Default: none.
 * (<time>: httpd's syntax, seconds or 1500ms, 30s, 2mi (2m), 1h; set_time)
 *   ProxyWebsocketUpgrade On|Off               tunnel WebSocket upgrades on
 *       http:// and https:// routes too.
 *   ProxyWebsocketAllowOrigin <origin>...      Origin policy (403 otherwise).
 *   ProxyWebsocketMaxTunnels <n>               server-wide cap (503 above).
 *   ProxyWebsocketPing <time>                  keepalive pings, both sides.
 *   ProxyWebsocketDrain <time>                 spread Close 1001 on graceful.
 *   ProxyWebsocketAsyncDelay <time>            httpd trunk's name; accepted
 *       so configurations written for trunk load, and ignored.
 *   ProxyWebsocketAsync On|Off                 plain-socket tunnels leave
 *       their worker for the child's reactor (default On; wst_async.c).
 *   ProxyWebsocketTunnelLog <file|"|cmd"> [fmt] one record per tunnel at its
 *       end (server, virtual host; wst_tlog.c).
 */
#include "wst_shim.h"

int wst_proxy_http_loaded = 0;

void *wst_create_dir_conf(apr_pool_t *p, char *dir)
{
    wst_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->fallback_to_proxy_http = -1;
    conf->idle_timeout = -1;
    conf->upgrade_http = -1;
    conf->ping = -1;
    conf->drain = -1;
    conf->async = -1;
    return conf;
}

void *wst_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    wst_dir_conf *base = basev, *add = addv;
    wst_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->fallback_to_proxy_http = add->fallback_to_proxy_http != -1
                                   ? add->fallback_to_proxy_http
                                   : base->fallback_to_proxy_http;
    conf->idle_timeout = add->idle_timeout != -1 ? add->idle_timeout
                                                 : base->idle_timeout;
    conf->upgrade_http = add->upgrade_http != -1 ? add->upgrade_http
                                                 : base->upgrade_http;
    conf->allow_origins = add->allow_origins ? add->allow_origins
                                             : base->allow_origins;
    conf->ping = add->ping != -1 ? add->ping : base->ping;
    conf->drain = add->drain != -1 ? add->drain : base->drain;
    conf->async = add->async != -1 ? add->async : base->async;
    return conf;
}

void *wst_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    wst_srv_conf *conf = apr_pcalloc(p, sizeof(*conf));
    (void)s;
    conf->tlog_fd = -1;
    return conf;
}

/* A virtual host without its own ProxyWebsocketTunnelLog writes to the main
 * server's (wst_tlog_post_config opens each file or pipe once). */
void *wst_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    wst_srv_conf *base = basev, *add = addv;
    wst_srv_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->tlog_spec = add->tlog_spec ? add->tlog_spec : base->tlog_spec;
    conf->tlog_format = add->tlog_spec ? add->tlog_format : base->tlog_format;
    conf->tlog_fd = -1;
    return conf;
}

int wst_proxy_http_serves_ws(void)
{
#if WST_PROXY_HTTP_TUNNELS
    return wst_proxy_http_loaded;
#else
    return 0;
#endif
}

int wst_hand_over_to_proxy_http(request_rec *r)
{
    wst_dir_conf *conf = ap_get_module_config(r->per_dir_config,
                                              &proxy_wstunnel_module);
    return conf->fallback_to_proxy_http == 1 && wst_proxy_http_serves_ws();
}

static const char *set_fallback(cmd_parms *cmd, void *dconf, int on)
{
    wst_dir_conf *conf = dconf;
    (void)cmd;
    conf->fallback_to_proxy_http = on ? 1 : 0;
    return NULL;
}

static const char *set_upgrade_http(cmd_parms *cmd, void *dconf, int on)
{
    wst_dir_conf *conf = dconf;
    (void)cmd;
    conf->upgrade_http = on ? 1 : 0;
    return NULL;
}

static const char *add_allow_origin(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    wst_dir_conf *conf = dconf;
    wst_str *entry;

    if (!*arg) {
        return "ProxyWebsocketAllowOrigin: empty origin";
    }
    if (!conf->allow_origins) {
        conf->allow_origins = apr_array_make(cmd->pool, 4, sizeof(wst_str));
    }
    entry = apr_array_push(conf->allow_origins);
    entry->ptr = apr_pstrdup(cmd->pool, arg);
    entry->len = strlen(arg);
    return NULL;
}

/* RAW_ARGS rather than ITERATE: httpd 2.2 calls an ITERATE function zero
 * times for a line without arguments and says nothing. */
static const char *set_allow_origins(cmd_parms *cmd, void *dconf,
                                     const char *args)
{
    const char *w;
    int n = 0;

    while (*(w = ap_getword_conf(cmd->temp_pool, &args)) != '\0') {
        const char *err = add_allow_origin(cmd, dconf, w);
        if (err) {
            return err;
        }
        n++;
    }
    if (!n) {
        return "ProxyWebsocketAllowOrigin needs at least one origin: 'same', "
               "'*', or an origin such as https://app.example.com";
    }
    return NULL;
}

/* httpd's time syntax, as ap_timeout_parameter_parse() reads it (2.2.11+,
 * and trunk's ProxyWebsocketIdleTimeout): a whole number with an optional
 * unit, ms, s (the default), mi or h. "m" alone is read as minutes too,
 * since that is how admins write it (httpd's parser refuses it). Stricter
 * than httpd's parser where that one is lax: no sign, nothing after the
 * unit ("5sec" is refused, not 5 s), at most a year. 0 = none. */
static const char *set_time(cmd_parms *cmd, const char *arg,
                            apr_interval_time_t *out)
{
    const char *unit = arg;
    const char *value = arg;
    apr_interval_time_t t = 0;

    while (*unit >= '0' && *unit <= '9') {
        unit++;
    }
    if (unit == arg || unit - arg > 12) {
        unit = "?";                     /* no number, or one too long */
    }
    else if (strcmp(unit, "m") == 0) {
        value = apr_pstrcat(cmd->temp_pool,
                            apr_pstrmemdup(cmd->temp_pool, arg, unit - arg),
                            "mi", NULL);
        unit = "mi";
    }
    if ((*unit && strcmp(unit, "ms") && strcmp(unit, "s")
                && strcmp(unit, "mi") && strcmp(unit, "h"))
            || ap_timeout_parameter_parse(value, &t, "s") != APR_SUCCESS
            || t < 0 || t > apr_time_from_sec(86400 * 365)) {
        return apr_psprintf(cmd->pool, "%s takes a time: seconds, or a number "
                            "with a unit (1500ms, 30s, 2m or 2mi, 1h), at most "
                            "a year; 0 = none (got '%s')", cmd->cmd->name, arg);
    }
    *out = t;
    return NULL;
}

static const char *set_idle_timeout(cmd_parms *cmd, void *dconf,
                                    const char *arg)
{
    wst_dir_conf *conf = dconf;
    return set_time(cmd, arg, &conf->idle_timeout);
}

static const char *set_ping(cmd_parms *cmd, void *dconf, const char *arg)
{
    wst_dir_conf *conf = dconf;
    return set_time(cmd, arg, &conf->ping);
}

static const char *set_drain(cmd_parms *cmd, void *dconf, const char *arg)
{
    wst_dir_conf *conf = dconf;
    return set_time(cmd, arg, &conf->drain);
}

static const char *set_async(cmd_parms *cmd, void *dconf, int on)
{
    wst_dir_conf *conf = dconf;
    (void)cmd;
    conf->async = on ? 1 : 0;
    return NULL;
}

static const char *set_tunnel_log(cmd_parms *cmd, void *dconf,
                                  const char *spec, const char *fmt)
{
    wst_srv_conf *conf = ap_get_module_config(cmd->server->module_config,
                                              &proxy_wstunnel_module);
    const char *err;

    (void)dconf;
    if (!*spec || (*spec == '|' && !spec[1])) {
        return "ProxyWebsocketTunnelLog needs a file name or \"|command\"";
    }
    if (fmt && (err = wst_tlog_check_format(cmd->pool, fmt)) != NULL) {
        return apr_pstrcat(cmd->pool, "ProxyWebsocketTunnelLog: ", err, NULL);
    }
    conf->tlog_spec = spec;
    conf->tlog_format = fmt;
    return NULL;
}

static const char *set_async_delay(cmd_parms *cmd, void *dconf,
                                   const char *arg)
{
    apr_interval_time_t ignored;
    const char *err = set_time(cmd, arg, &ignored);

    (void)dconf;
    if (err) {
        return err;
    }
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, cmd->server,
                 "%s is accepted for compatibility with httpd trunk "
                 "and has no effect", cmd->cmd->name);
    return NULL;
}

const command_rec wst_cmds[] = {
    AP_INIT_FLAG("ProxyWebsocketFallbackToProxyHttp", set_fallback, NULL,
                 RSRC_CONF | ACCESS_CONF,
                 "On hands WebSocket tunnels to mod_proxy_http where it can "
                 "tunnel them (httpd 2.4.47+); Off or unset: this module "
                 "tunnels them"),
    AP_INIT_TAKE1("ProxyWebsocketIdleTimeout", set_idle_timeout, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "time (seconds, or 1500ms, 2m, 1h) a tunnel may stay idle before it is closed "
                  "(0 = no limit, the default)"),
    AP_INIT_FLAG("ProxyWebsocketUpgrade", set_upgrade_http, NULL,
                 RSRC_CONF | ACCESS_CONF,
                 "On: on http:// and https:// proxy routes, WebSocket "
                 "upgrades are tunnelled by this module (plain requests still "
                 "go to mod_proxy_http)"),
    AP_INIT_RAW_ARGS("ProxyWebsocketAllowOrigin", set_allow_origins, NULL,
                    RSRC_CONF | ACCESS_CONF,
                    "origins allowed to open tunnels: 'same' (the request's "
                    "host), '*', or origins such as https://app.example.com"),
    AP_INIT_TAKE1("ProxyWebsocketMaxTunnels", wst_set_max_tunnels, NULL,
                  RSRC_CONF,
                  "server-wide limit of open tunnels across all children "
                  "(0 = none); above it upgrades get 503"),
    AP_INIT_TAKE1("ProxyWebsocketPing", set_ping, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "time of silence (seconds, or 1500ms, 2m) after which the module pings both "
                  "sides; no answer within as long ends the tunnel with "
                  "Close 1001 (0 = off, the default)"),
    AP_INIT_TAKE1("ProxyWebsocketDrain", set_drain, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "on graceful restart or stop, close each tunnel with 1001 "
                  "at a random moment within this time (seconds, or 1500ms, 2m), and cut "
                  "what is left at the end (0 = off, the default)"),
    AP_INIT_FLAG("ProxyWebsocketAsync", set_async, NULL,
                 RSRC_CONF | ACCESS_CONF,
                 "On (the default): tunnels between plain sockets leave their "
                 "worker for the child's reactor thread once the 101 is out; "
                 "Off: they keep their worker, as with stock httpd"),
    AP_INIT_TAKE12("ProxyWebsocketTunnelLog", set_tunnel_log, NULL, RSRC_CONF,
                   "file (relative to ServerRoot) or \"|program\" that gets "
                   "one line per tunnel when it ends, and an optional format "
                   "(%a %U %v %t %D %I %O %B %b %m %M %c %C %f %r %p "
                   "%{VAR}e %{Header}i ...)"),
    AP_INIT_TAKE1("ProxyWebsocketAsyncDelay", set_async_delay, NULL,
                  RSRC_CONF | ACCESS_CONF,
                  "accepted for compatibility with httpd trunk; no effect"),
    {NULL}
};
