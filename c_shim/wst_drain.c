/*
 * wst_drain.c: what a tunnel does when its httpd child is going away.
 *
 *  - Hard stop: the MPM closes the sockets of the connections its workers
 *    serve (event, worker): each WebSocket tunnel sends Close 1001 to both
 *    sides at once (through its own descriptor of the client socket) and
 *    ends within half a second; a prefork child simply exits (no module
 *    code runs), so its clients see the TCP connection close.
 *  - Graceful restart or graceful stop, with ProxyWebsocketDrain <seconds>:
 *    each tunnel of the old generation sends Close 1001 to both sides at a
 *    random moment within the window, so clients reconnect spread out, and
 *    whatever is left is cut at the window's end: no old child outlives it.
 *    Without the directive, tunnels run on as with stock httpd.
 */
#include "wst_shim.h"
#include "ap_mpm.h"
#include "scoreboard.h"
#include "ap_listen.h"

/* When this child first saw that it is going away (0: not yet). Written by
 * the first tunnel thread that notices; a race only moves it by a tick. */
static apr_time_t stopping_since;

static int wst_child_stopping(void)
{
    int state = 0;

    if (ap_mpm_query(AP_MPMQ_MPM_STATE, &state) == APR_SUCCESS
            && state == AP_MPMQ_STOPPING) {
        return 1;
    }
    if (ap_scoreboard_image && ap_scoreboard_image->global) {
#if WST_HTTPD_24
        int gen = 0;
        if (ap_mpm_query(AP_MPMQ_GENERATION, &gen) == APR_SUCCESS
                && gen != ap_scoreboard_image->global->running_generation) {
            return 1;
        }
#else
        if (ap_my_generation
                != ap_scoreboard_image->global->running_generation) {
            return 1;
        }
#endif
    }
#if !WST_HTTPD_24
    {
        /* 2.2 has no MPM state query and a graceful stop keeps the
         * generation, but every way out closes this child's listeners
         * first (prefork: the SIGUSR1 handler; worker: the listener thread
         * as it ends). */
        ap_listen_rec *lr;
        for (lr = ap_listeners; lr; lr = lr->next) {
            if (!lr->active) {
                return 1;
            }
        }
    }
#endif
    return 0;
}

void wst_drain_init(wst_drain *d, request_rec *r, apr_socket_t *client_sock,
                    apr_interval_time_t window)
{
    apr_os_sock_t fd = -1;
    apr_uint32_t rnd = 0;

    memset(d, 0, sizeof(*d));
    d->r = r;
    d->client_sock = client_sock;
    apr_os_sock_get(&fd, client_sock);
    d->client_fd = fd;
    d->window = window > 0 ? window : 0;
    if (apr_generate_random_bytes((unsigned char *)&rnd, sizeof(rnd))
            != APR_SUCCESS) {
        rnd = (apr_uint32_t)(apr_time_now() ^ (apr_time_t)getpid()
                             ^ (apr_time_t)fd);
    }
    d->seed = rnd;
}

wst_stop wst_drain_should_stop(void *vctx)
{
    wst_drain *d = vctx;
    apr_os_sock_t fd = -1;
    apr_time_t now;

    /* Hard stop: the MPM closed the client socket under us. The tunnel
     * holds its own descriptor for it (wst_io.c), so a WebSocket tunnel can
     * still say Close 1001 to both sides before it ends. */
    if (apr_os_sock_get(&fd, d->client_sock) != APR_SUCCESS
            || fd != d->client_fd) {
        return WST_STOP_SHUTDOWN;
    }
    if (!d->window || !wst_child_stopping()) {
        return WST_STOP_NO;
    }
    now = apr_time_now();
    if (!stopping_since) {
        stopping_since = now;
    }
    if (!d->moment) {
        /* A moment spread over the window but its end, which is left for
         * the Close handshakes: 10% of it, and at least a few of the
         * tunnel's ticks (should_stop is asked every 250 ms). */
        apr_interval_time_t margin = d->window / 10 > WST_TIME_FROM_MSEC(600)
                                     ? d->window / 10 : WST_TIME_FROM_MSEC(600);
        apr_interval_time_t span = d->window - margin;
        d->moment = stopping_since
                    + (apr_interval_time_t)((apr_uint64_t)d->seed
                                            % (apr_uint64_t)(span > 0 ? span : 1));
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, d->r, WSTNO(050)
                      "child going away: tunnel closes with 1001 in %"
                      APR_TIME_T_FMT " ms", apr_time_as_msec(d->moment - now));
    }
    if (now >= stopping_since + d->window) {
        return WST_STOP_NOW;
    }
    if (now >= d->moment) {
        return WST_STOP_GOING_AWAY;
    }
    return WST_STOP_NO;
}
