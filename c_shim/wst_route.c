/*
 * wst_route.c: which requests this module takes.
 *
 *  - canon: ws:// and wss:// URLs are canonicalised the way httpd 2.4.39+
 *    does it (default ports omitted, nocanon / mapping=encoded honoured,
 *    control characters refused with 403).
 *  - check_trans (2.4.47+): a ProxyPass alias to ws:// is skipped for a
 *    request without Upgrade when nothing could serve it, so a later alias
 *    (ProxyPass / http://...) can; the translate hook below answers 426 when
 *    no alias took the request at all.
 */
#include "wst_shim.h"

#define WST_NOTE_UPGRADE_REQUIRED "wstunnel-upgrade-required"

wst_scheme wst_scheme_of(const char *url)
{
    if (!url) {
        return WST_SCHEME_NONE;
    }
    if (WST_CASECMPN(url, "ws:", 3) == 0) {
        return WST_SCHEME_WS;
    }
    if (WST_CASECMPN(url, "wss:", 4) == 0) {
        return WST_SCHEME_WSS;
    }
    return WST_SCHEME_NONE;
}

wst_header *wst_request_headers(request_rec *r, size_t *n)
{
    const apr_array_header_t *arr = apr_table_elts(r->headers_in);
    const apr_table_entry_t *elts = (const apr_table_entry_t *)arr->elts;
    wst_header *out = apr_pcalloc(r->pool,
                                  sizeof(*out) * (arr->nelts ? arr->nelts : 1));
    size_t count = 0;
    int i;

    for (i = 0; i < arr->nelts; i++) {
        if (!elts[i].key) {
            continue;
        }
        out[count].name.ptr = elts[i].key;
        out[count].name.len = strlen(elts[i].key);
        out[count].value.ptr = elts[i].val ? elts[i].val : "";
        out[count].value.len = elts[i].val ? strlen(elts[i].val) : 0;
        count++;
    }
    *n = count;
    return out;
}

int wst_upgrade_required(request_rec *r, const char *expected)
{
    apr_table_setn(r->err_headers_out, "Upgrade",
                   (expected && *expected) ? expected : "websocket");
    apr_table_setn(r->err_headers_out, "Connection", "Upgrade");
    return HTTP_UPGRADE_REQUIRED;
}

/* 1 if every byte is visible ASCII or obs-text (no CTL, no space). */
static int wst_all_vchar(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 0x20 || ch == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/*
 * mod_rewrite before 2.4.7 (so every 2.2) does not know that ws:// and
 * wss:// are absolute URLs: for "RewriteRule ... ws://b/x [P]" it proxies
 * "http://<this server>[:port]/ws://b/x". Recognise that shape, only with
 * this server's own name, and give back the ws:// URL.
 */
static char *wst_unmangle_rewrite(request_rec *r, char *url)
{
    const char *self = ap_get_server_name(r);
    apr_size_t self_len = self ? strlen(self) : 0;
    char *p, *slash;

    if (WST_CASECMPN(url, "http://", 7) == 0) {
        p = url + 7;
    }
    else if (WST_CASECMPN(url, "https://", 8) == 0) {
        p = url + 8;
    }
    else {
        return NULL;
    }
    slash = strchr(p, '/');
    if (!slash || !self_len || (apr_size_t)(slash - p) < self_len
            || WST_CASECMPN(p, self, self_len) != 0) {
        return NULL;
    }
    p += self_len;
    if (*p == ':') {                       /* this server's port */
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    }
    if (p != slash) {
        return NULL;
    }
    p = slash + 1;
    if ((WST_CASECMPN(p, "ws://", 5) == 0) || (WST_CASECMPN(p, "wss://", 6) == 0)) {
        return p;
    }
    return NULL;
}

int wst_canon(request_rec *r, char *url)
{
    wst_scheme scheme;
    char *unmangled = wst_unmangle_rewrite(r, url);
    const char *scheme_str;
    char *host, *path, *search = NULL, sport[8];
    const char *err;
    apr_port_t port, def_port;

    if (unmangled) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, WSTNO(030)
                      "RewriteRule target %s read as %s (mod_rewrite of "
                      "this httpd does not know ws:// URLs)", url, unmangled);
        url = unmangled;
    }
    scheme = wst_scheme_of(url);

    if (scheme == WST_SCHEME_NONE || wst_hand_over_to_proxy_http(r)) {
        return DECLINED;
    }
    if (scheme == WST_SCHEME_WS) {
        url += 3;
        scheme_str = "ws:";
        def_port = 80;
    }
    else {
        url += 4;
        scheme_str = "wss:";
        def_port = 443;
    }
    port = def_port;

    ap_log_rerror(APLOG_MARK, APLOG_TRACE1, 0, r,
                  "canonicalising URL %s%s", scheme_str, url);

    err = ap_proxy_canon_netloc(r->pool, &url, NULL, NULL, &host, &port);
    if (err) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(02439)
                      "error parsing URL %s: %s", url, err);
        return HTTP_BAD_REQUEST;
    }

    if (apr_table_get(r->notes, "proxy-nocanon")) {
        path = url;                      /* raw, as the client sent it */
    }
    else if (apr_table_get(r->notes, "proxy-noencode")) {
        path = url;                      /* mapping=encoded: already encoded */
        search = r->args;
    }
    else {
#if WST_HAVE_CANONENC_EX
        core_dir_config *d = ap_get_core_module_config(r->per_dir_config);
        int flags = (d->allow_encoded_slashes && !d->decode_encoded_slashes)
                    ? PROXY_CANONENC_NOENCODEDSLASHENCODING : 0;
        path = ap_proxy_canonenc_ex(r->pool, url, (int)strlen(url), enc_path,
                                    flags, r->proxyreq);
#else
        path = ap_proxy_canonenc(r->pool, url, (int)strlen(url), enc_path, 0,
                                 r->proxyreq);
#endif
        if (!path) {
            return HTTP_BAD_REQUEST;
        }
        search = r->args;
    }

    /* What goes to the backend must not carry raw controls or spaces. */
    if (path == url && !wst_all_vchar(path)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(10419)
                      "To be forwarded path contains control "
                      "characters or spaces");
        return HTTP_FORBIDDEN;
    }
    if (search && !wst_all_vchar(search)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, APLOGNO(10409)
                      "To be forwarded query string contains control "
                      "characters or spaces");
        return HTTP_FORBIDDEN;
    }

    if (port != def_port) {
        apr_snprintf(sport, sizeof(sport), ":%u", (unsigned)port);
    }
    else {
        sport[0] = '\0';
    }
    if (ap_strchr_c(host, ':')) {        /* literal IPv6 address */
        host = apr_pstrcat(r->pool, "[", host, "]", NULL);
    }
    r->filename = apr_pstrcat(r->pool, "proxy:", scheme_str, "//", host, sport,
                              "/", path, search ? "?" : "",
                              search ? search : "", NULL);
    return OK;
}

#if WST_HAVE_CHECK_TRANS
int wst_check_trans(request_rec *r, const char *url)
{
    if (wst_scheme_of(url) == WST_SCHEME_NONE || wst_hand_over_to_proxy_http(r)) {
        return DECLINED;
    }
    if (apr_table_get(r->headers_in, "Upgrade") || wst_proxy_http_loaded) {
        /* An upgrade is ours; a plain request is handed by the handler to
         * mod_proxy_http, to the same backend. */
        return OK;
    }
    /* Nothing here can serve a plain request to this alias: skip it, so a
     * later alias may take the request. */
    apr_table_setn(r->notes, WST_NOTE_UPGRADE_REQUIRED, url);
    return HTTP_UPGRADE_REQUIRED;
}
#endif

int wst_translate_upgrade_required(request_rec *r)
{
    const char *url = apr_table_get(r->notes, WST_NOTE_UPGRADE_REQUIRED);

    if (!url || (r->filename && strncmp(r->filename, "proxy:", 6) == 0)) {
        return DECLINED;
    }
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, APLOGNO(02900)
                  "require upgrade for URL %s (Upgrade header is missing, "
                  "expecting websocket)", url);
    return wst_upgrade_required(r, "websocket");
}

