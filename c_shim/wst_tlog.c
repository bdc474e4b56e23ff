/*
 * wst_tlog.c: ProxyWebsocketTunnelLog, one record per tunnel when it ends.
 *
 * The access log's line for a tunnel is written when its 101 goes out (a
 * handed-over tunnel's request is over then), so the tunnel's own figures
 * go here: a file (O_APPEND, relative to ServerRoot) or a piped logger,
 * opened in post_config as mod_log_config opens its logs, inherited by the
 * children. Each record is one write() of at most 4 KiB, so records of
 * tunnels ending at once in different children or threads never mix (a
 * pipe writes up to PIPE_BUF = 4096 bytes atomically).
 *
 * A record is made in two passes over the format. At the 101 (wst_tlog_begin,
 * with r) the codes known then are expanded; the tunnel's codes stay as they
 * are and a '%' inside an expanded value is doubled. At the end
 * (wst_tlog_write, no r, no pools: it runs on the reactor's thread too) the
 * tunnel's codes are expanded and the line is written.
 *
 *   known at the 101:  %a client IP   %U path   %q ?query (or "")   %v ServerName
 *                      %R backend URL   %t start time [05/Dec/2026:15:38:13 +0000]
 *                      %p "async" or "threaded"   %P child pid
 *                      %{VAR}e environment variable (e.g. %{UNIQUE_ID}e)
 *                      %{Name}i request header   %% a '%'
 *   known at the end:  %D duration in ms   %I bytes from the client
 *                      %O bytes to the client   %B bytes from the backend
 *                      %b bytes to the backend   %m messages from the client
 *                      %M messages from the backend   %c %C Close code the
 *                      client / the backend sent ("-": none)   %f who closed
 *                      first (client, backend, none)   %r end reason
 * Values that may come from clients are escaped as mod_log_config escapes
 * them (\" \\ \xhh); a missing value is "-".
 */
#include "wst_shim.h"
#include "apr_file_io.h"
#include "apr_portable.h"
#include <unistd.h>
#include <errno.h>

#define WST_TLOG_MAX 4096
#define WST_TLOG_DEFAULT_FORMAT \
    "%t %a \"%v\" \"%U%q\" %p %{UNIQUE_ID}e %D %I %O %B %b %m %M %c %C %f %r"

static const char *const wst_months[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};

static int wst_tlog_late_code(char c)
{
    return c && strchr("DIOBbmMcCfr", c) != NULL;
}

static int wst_tlog_early_code(char c)
{
    return c && strchr("aUqvRtpP%", c) != NULL;
}

const char *wst_tlog_check_format(apr_pool_t *p, const char *fmt)
{
    const char *s = fmt;

    while ((s = strchr(s, '%')) != NULL) {
        s++;
        if (*s == '{') {
            const char *end = strchr(s, '}');
            if (!end || end == s + 1 || (end[1] != 'e' && end[1] != 'i')) {
                return apr_psprintf(p, "bad %%{...} code in format '%s' "
                                    "(%%{VAR}e or %%{Header}i)", fmt);
            }
            s = end + 2;
            continue;
        }
        if (!wst_tlog_early_code(*s) && !wst_tlog_late_code(*s)) {
            return apr_psprintf(p, "unknown code %%%c in format '%s'",
                                *s ? *s : ' ', fmt);
        }
        s++;
    }
    if (strlen(fmt) > WST_TLOG_MAX / 2) {
        return "format too long";
    }
    return NULL;
}

/* A value as it goes into the record's first pass: NULL or "" as "-",
 * escaped, '%' doubled. */
static const char *wst_tlog_value(apr_pool_t *p, const char *v)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s;
    char *out, *d;

    if (!v || !*v) {
        return "-";
    }
    out = d = apr_palloc(p, strlen(v) * 4 + 1);
    for (s = (const unsigned char *)v; *s; s++) {
        if (*s == '%') {
            *d++ = '%';
            *d++ = '%';
        }
        else if (*s == '"' || *s == '\\') {
            *d++ = '\\';
            *d++ = (char)*s;
        }
        else if (*s < 0x20 || *s >= 0x7f) {
            *d++ = '\\';
            *d++ = 'x';
            *d++ = hex[*s >> 4];
            *d++ = hex[*s & 15];
        }
        else {
            *d++ = (char)*s;
        }
    }
    *d = '\0';
    return out;
}

static const char *wst_tlog_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t xt;
    long off;

    apr_time_exp_lt(&xt, t);
    off = xt.tm_gmtoff / 60;
    return apr_psprintf(p, "[%02d/%s/%d:%02d:%02d:%02d %c%02ld%02ld]",
                        xt.tm_mday, wst_months[xt.tm_mon % 12],
                        xt.tm_year + 1900, xt.tm_hour, xt.tm_min, xt.tm_sec,
                        off < 0 ? '-' : '+', (off < 0 ? -off : off) / 60,
                        (off < 0 ? -off : off) % 60);
}

int wst_tlog_fd(server_rec *s)
{
    wst_srv_conf *conf = ap_get_module_config(s->module_config,
                                              &proxy_wstunnel_module);
    return conf ? conf->tlog_fd : -1;
}

char *wst_tlog_begin(request_rec *r, const char *path)
{
    wst_srv_conf *conf = ap_get_module_config(r->server->module_config,
                                              &proxy_wstunnel_module);
    const char *fmt, *s;
    char *out = "";

    if (!conf || conf->tlog_fd < 0) {
        return NULL;
    }
    fmt = conf->tlog_format ? conf->tlog_format : WST_TLOG_DEFAULT_FORMAT;
    s = fmt;
    while (*s) {
        const char *pct = strchr(s, '%');
        const char *v = NULL;

        if (!pct) {
            out = apr_pstrcat(r->pool, out, s, NULL);   /* no '%' in it */
            break;
        }
        if (pct > s) {
            out = apr_pstrcat(r->pool, out,
                              apr_pstrmemdup(r->pool, s, (apr_size_t)(pct - s)),
                              NULL);
        }
        s = pct + 1;
        if (*s == '{') {
            const char *end = strchr(s, '}');
            char *name;
            if (!end) {
                break;                  /* checked at configuration */
            }
            name = apr_pstrmemdup(r->pool, s + 1, (apr_size_t)(end - s - 1));
            v = end[1] == 'e' ? apr_table_get(r->subprocess_env, name)
                              : apr_table_get(r->headers_in, name);
            out = apr_pstrcat(r->pool, out, wst_tlog_value(r->pool, v), NULL);
            s = end + (end[1] ? 2 : 1);
            continue;
        }
        if (wst_tlog_late_code(*s)) {
            out = apr_pstrcat(r->pool, out,
                              apr_pstrmemdup(r->pool, pct, 2), NULL);
            s++;
            continue;
        }
        switch (*s) {
        case 'a':
            v = wst_tlog_value(r->pool, WST_CLIENT_IP(r));
            break;
        case 'U':
            v = wst_tlog_value(r->pool, r->uri);
            break;
        case 'q':
            v = r->args ? wst_tlog_value(r->pool,
                                         apr_pstrcat(r->pool, "?", r->args,
                                                     NULL))
                        : "";
            break;
        case 'v':
            v = wst_tlog_value(r->pool, r->server->server_hostname);
            break;
        case 'R':
            v = wst_tlog_value(r->pool,
                               r->filename && strncmp(r->filename, "proxy:",
                                                      6) == 0
                               ? r->filename + 6 : r->filename);
            break;
        case 't':
            v = wst_tlog_time(r->pool, apr_time_now());
            break;
        case 'p':
            v = path;
            break;
        case 'P':
            v = apr_psprintf(r->pool, "%ld", (long)getpid());
            break;
        case '%':
            v = "%%";
            break;
        default:
            v = "";                     /* checked at configuration */
            if (!*s) {
                s--;
            }
            break;
        }
        out = apr_pstrcat(r->pool, out, v, NULL);
        s++;
    }
    return out;
}

/* Append to the record being written; what does not fit is dropped. */
typedef struct wst_tlog_buf {
    char b[WST_TLOG_MAX];
    apr_size_t len;
} wst_tlog_buf;

static void wst_tlog_put(wst_tlog_buf *o, const char *s, apr_size_t n)
{
    if (n > sizeof(o->b) - 1 - o->len) {
        n = sizeof(o->b) - 1 - o->len;     /* room for the newline */
    }
    memcpy(o->b + o->len, s, n);
    o->len += n;
}

static void wst_tlog_u64(wst_tlog_buf *o, apr_uint64_t v)
{
    char num[32];
    int n = apr_snprintf(num, sizeof(num), "%" APR_UINT64_T_FMT, v);
    wst_tlog_put(o, num, (apr_size_t)n);
}

static void wst_tlog_code(wst_tlog_buf *o, int code)
{
    if (code < 0) {
        wst_tlog_put(o, "-", 1);
    }
    else {
        wst_tlog_u64(o, (apr_uint64_t)code);
    }
}

void wst_tlog_write(int fd, const char *record, const wst_tunnel_stats *st,
                    apr_uint64_t duration_ms)
{
    wst_tlog_buf o;
    const char *s = record;
    const char *v;

    if (fd < 0 || !record) {
        return;
    }
    o.len = 0;
    while (*s) {
        const char *pct = strchr(s, '%');
        if (!pct) {
            wst_tlog_put(&o, s, strlen(s));
            break;
        }
        wst_tlog_put(&o, s, (apr_size_t)(pct - s));
        s = pct + 1;
        switch (*s) {
        case 'D': wst_tlog_u64(&o, duration_ms); break;
        case 'I': wst_tlog_u64(&o, st->bytes_from_client); break;
        case 'O': wst_tlog_u64(&o, st->bytes_to_client); break;
        case 'B': wst_tlog_u64(&o, st->bytes_from_backend); break;
        case 'b': wst_tlog_u64(&o, st->bytes_to_backend); break;
        case 'm': wst_tlog_u64(&o, st->messages_from_client); break;
        case 'M': wst_tlog_u64(&o, st->messages_from_backend); break;
        case 'c': wst_tlog_code(&o, st->close_code_from_client); break;
        case 'C': wst_tlog_code(&o, st->close_code_from_backend); break;
        case 'f':
            v = st->closed_first == 1 ? "client"
                : st->closed_first == 2 ? "backend" : "none";
            wst_tlog_put(&o, v, strlen(v));
            break;
        case 'r':
            v = wst_end_reason_name(st->reason);
            wst_tlog_put(&o, v, strlen(v));
            break;
        case '%':
            wst_tlog_put(&o, "%", 1);
            break;
        case '\0':
            s--;
            break;
        default:                        /* cannot happen: first pass's output */
            wst_tlog_put(&o, pct, 2);
            break;
        }
        s++;
    }
    o.b[o.len++] = '\n';
    /* One write: a short one (a full disk) is not retried, a record is
     * never written in two pieces. */
    while (write(fd, o.b, o.len) < 0 && errno == EINTR) {
    }
}

/* Open each server's tunnel log; servers naming the same file or command
 * (a virtual host inheriting the main server's) share one descriptor. */
int wst_tlog_post_config(apr_pool_t *pconf, server_rec *s)
{
    server_rec *sv, *prev;

    for (sv = s; sv; sv = sv->next) {
        wst_srv_conf *conf = ap_get_module_config(sv->module_config,
                                                  &proxy_wstunnel_module);
        apr_os_file_t fd = -1;
        apr_file_t *f = NULL;

        conf->tlog_fd = -1;
        if (!conf->tlog_spec) {
            continue;
        }
        for (prev = s; prev != sv; prev = prev->next) {
            wst_srv_conf *pc = ap_get_module_config(prev->module_config,
                                                    &proxy_wstunnel_module);
            if (pc->tlog_spec && pc->tlog_fd >= 0
                    && strcmp(pc->tlog_spec, conf->tlog_spec) == 0) {
                conf->tlog_fd = pc->tlog_fd;
                break;
            }
        }
        if (conf->tlog_fd >= 0) {
            continue;
        }
        if (*conf->tlog_spec == '|') {
            piped_log *pl = ap_open_piped_log(pconf, conf->tlog_spec + 1);
            if (!pl || !(f = WST_PIPED_LOG_FILE(pl))) {
                ap_log_error(APLOG_MARK, APLOG_ERR, 0, sv, WSTNO(036)
                             "ProxyWebsocketTunnelLog: could not start the "
                             "piped logger %s", conf->tlog_spec + 1);
                return DONE;
            }
        }
        else {
            const char *path = ap_server_root_relative(pconf, conf->tlog_spec);
            apr_status_t rv = path
                ? apr_file_open(&f, path, APR_WRITE | APR_APPEND | APR_CREATE,
                                APR_OS_DEFAULT, pconf)
                : APR_EBADPATH;
            if (rv != APR_SUCCESS) {
                ap_log_error(APLOG_MARK, APLOG_ERR, rv, sv, WSTNO(036)
                             "ProxyWebsocketTunnelLog: could not open %s",
                             path ? path : conf->tlog_spec);
                return DONE;
            }
        }
        if (apr_os_file_get(&fd, f) != APR_SUCCESS || fd < 0) {
            return DONE;
        }
        conf->tlog_fd = (int)fd;
    }
    return OK;
}
