/*
 * mod_proxy_wstunnel.c: the module record and its hooks.
 *
 * A drop-in replacement for httpd's mod_proxy_wstunnel: the same module name
 * and LoadModule line; the work is done by a Rust core (src/) through the
 * contract in include/wstunnel_core.h. This file only wires it into httpd.
 */
#define WST_MODULE_RECORD_FILE
#include "wst_shim.h"

static int wst_pre_config(apr_pool_t *pconf, apr_pool_t *plog,
                          apr_pool_t *ptemp)
{
    (void)pconf;
    (void)plog;
    (void)ptemp;
    wst_limits_pre_config();
    return OK;
}

static int wst_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                           apr_pool_t *ptemp, server_rec *s)
{
    (void)plog;
    (void)ptemp;
    wst_proxy_http_loaded = ap_find_linked_module("mod_proxy_http.c") != NULL;
    if (wst_tlog_post_config(pconf, s) != OK) {
        return DONE;
    }
    return wst_limits_post_config(pconf, s);
}

static void wst_child_init(apr_pool_t *pchild, server_rec *s)
{
    wst_limits_child_init();
    wst_async_child_init(pchild, s);
}

static void wst_register_hooks(apr_pool_t *p)
{
    /* Ahead of mod_proxy_http, which also claims ws:// on 2.4.47+. */
    static const char *const succ[] = { "mod_proxy_http.c", NULL };

    (void)p;
    ap_hook_pre_config(wst_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(wst_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(wst_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    wst_limits_register_hooks();
    wst_async_register_hooks();
    proxy_hook_scheme_handler(wst_handler, NULL, succ, APR_HOOK_FIRST);
    proxy_hook_canon_handler(wst_canon, NULL, succ, APR_HOOK_FIRST);
#if WST_HAVE_CHECK_TRANS
    proxy_hook_check_trans(wst_check_trans, NULL, succ, APR_HOOK_MIDDLE);
#endif
    /* After mod_proxy's and mod_rewrite's translation, before the core's. */
    ap_hook_translate_name(wst_translate_upgrade_required, NULL, NULL,
                           APR_HOOK_LAST);
}

#if WST_HTTPD_24
AP_DECLARE_MODULE(proxy_wstunnel) = {
#else
module AP_MODULE_DECLARE_DATA proxy_wstunnel_module = {
#endif
    STANDARD20_MODULE_STUFF,
    wst_create_dir_conf,   /* per-directory config */
    wst_merge_dir_conf,    /* merge per-directory config */
    wst_create_srv_conf,   /* per-server config */
    wst_merge_srv_conf,    /* merge per-server config */
    wst_cmds,              /* directives */
    wst_register_hooks     /* hooks */
};
