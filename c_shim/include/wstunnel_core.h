/*
 * wstunnel_core.h: the one contract between the C shim and the Rust core.
 *
 * Plain C types only: no httpd or APR header is included here, so the Rust
 * core (whose view of this file, src/ffi/contract.rs, bindgen generates:
 * run `cargo run --manifest-path tools/contract-gen/Cargo.toml` after a
 * change) does not depend on the httpd version.  Every function declared here is implemented in Rust (src/ffi/);
 * a signature drift between this header and the Rust exports fails the Rust
 * build.
 *
 * Conventions:
 *  - strings are (pointer, length) pairs and need not be NUL-terminated;
 *  - every buffer the core fills is owned by the caller (only the reactor
 *    allocates, for the tunnels it holds);
 *  - outputs are written only when the function returns success;
 *  - every pointer argument is checked for NULL (WST_ERR_ARG).
 */
#ifndef WSTUNNEL_CORE_H
#define WSTUNNEL_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Results shared by the core's functions. */
typedef enum wst_status {
    WST_OK = 0,
    WST_PARTIAL = 1,      /* need more input */
    WST_ERR_ARG = 2,      /* NULL pointer or impossible argument */
    WST_ERR_SPACE = 3,    /* output buffer too small */
    WST_ERR_INVALID = 4,  /* input violates the protocol */
    WST_DONE = 5          /* a stream decoder reached the end of its input */
} wst_status;

/* The status's name for a log line ("ok", "partial", "bad argument",
 * "no space", "invalid", "done"; "unknown" for another value): static,
 * NUL-terminated. */
const char *wst_status_name(wst_status status);

typedef struct wst_str {
    const char *ptr;
    size_t len;
} wst_str;

typedef struct wst_header {
    wst_str name;
    wst_str value;
} wst_header;

/* ------------------------------------------------------------------ */
/* Client request check                                               */
/* ------------------------------------------------------------------ */

typedef enum wst_upgrade_verdict {
    WST_UPGRADE_OK = 0,          /* tunnel it: protocol says what to send */
    WST_UPGRADE_NONE = 1,        /* no upgrade was asked for */
    WST_UPGRADE_MISMATCH = 2,    /* an upgrade, but not to what the route allows: 426 */
    WST_UPGRADE_BAD_REQUEST = 3  /* a malformed WebSocket upgrade: 400 */
} wst_upgrade_verdict;

typedef struct wst_request_check {
    wst_upgrade_verdict verdict;
    /* The Upgrade value to send to the backend (WST_UPGRADE_OK, and
     * WST_UPGRADE_NONE with is_websocket); points into the input headers or
     * into static storage. */
    wst_str protocol;
    /* 1 when the upgrade is a WebSocket one (RFC 6455), whose 101 must carry
     * the Sec-WebSocket-Accept answering `key`. With WST_UPGRADE_NONE: a
     * WebSocket upgrade valid in every respect (the route allows websocket;
     * GET, HTTP/1.1, one good key, a version, no body) but for the missing
     * "upgrade" token in Connection; protocol and key are set as for
     * WST_UPGRADE_OK. A ws:// route tunnels it (stock httpd does, in both its
     * modes); an http:// route (ProxyWebsocketUpgrade) leaves it to
     * mod_proxy_http. */
    int is_websocket;
    /* The client's Sec-WebSocket-Key (points into the input), or empty. */
    wst_str key;
    /* Static NUL-terminated explanation for the log (every verdict). */
    const char *reason;
} wst_request_check;

/*
 * Decide what to do with a client request on a tunnel route.
 *
 * method:       the request method ("GET", ...).
 * proto_num:    HTTP version as httpd encodes it (1001 for HTTP/1.1).
 * headers:      the client's request headers, in order (repeats allowed).
 * worker_upgrade: the route's upgrade= setting: NULL or "" for the default
 *               (WebSocket), "NONE", "ANY", "*", or a comma list of tokens.
 */
wst_status wst_check_request(wst_str method, int proto_num,
                             const wst_header *headers, size_t n_headers,
                             wst_str worker_upgrade,
                             wst_request_check *out);

/* ------------------------------------------------------------------ */
/* Backend request                                                    */
/* ------------------------------------------------------------------ */

typedef struct wst_backend_request {
    wst_str method;           /* normally "GET" */
    wst_str path;             /* canonical path and query, starts with '/' */
    wst_str host;             /* the Host header value to send */
    const wst_header *headers;/* the client's headers, in order */
    size_t n_headers;
    wst_str protocol;         /* the Upgrade value to send */
    int add_forwarded;        /* ProxyAddHeaders: 1 adds X-Forwarded-* */
    wst_str forwarded_for;    /* client IP, appended to X-Forwarded-For */
    wst_str forwarded_host;   /* client's Host, appended to X-Forwarded-Host */
    wst_str forwarded_server; /* our ServerName, appended to X-Forwarded-Server */
} wst_backend_request;

/* Upper bound of the bytes wst_build_request writes for `req`. */
size_t wst_request_size(const wst_backend_request *req);

/*
 * Write the HTTP/1.1 request to send to the backend into buf.
 * Hop-by-hop headers (Connection and what it names, Keep-Alive, TE, Trailer,
 * Transfer-Encoding, Upgrade, Proxy-*) are dropped, Host is replaced, every
 * other header is copied verbatim; then X-Forwarded-* (when asked) and
 * `Upgrade: <protocol>` and `Connection: Upgrade`.  A name or value that
 * could inject a line (CR, LF, NUL; a name that is not a token) gives
 * WST_ERR_INVALID and writes nothing.
 */
wst_status wst_build_request(const wst_backend_request *req,
                             unsigned char *buf, size_t cap, size_t *written);

/* ------------------------------------------------------------------ */
/* Backend response                                                   */
/* ------------------------------------------------------------------ */

#define WST_MAX_RESPONSE_HEADERS 100

typedef enum wst_response_kind {
    WST_RESP_TUNNEL = 0,       /* a 101 that answers the client: tunnel */
    WST_RESP_BAD_UPGRADE = 1,  /* a 101 that does not answer it: 502 */
    WST_RESP_OTHER = 2,        /* any other final status: relay as HTTP */
    WST_RESP_INVALID = 3       /* not an HTTP/1.x response: 502 */
} wst_response_kind;

typedef enum wst_body_mode {
    WST_BODY_NONE = 0,     /* no body (1xx, 204, 304, HEAD, Content-Length: 0) */
    WST_BODY_LENGTH = 1,   /* exactly content_length bytes */
    WST_BODY_CHUNKED = 2,  /* chunked: decode with wst_chunked_decode */
    WST_BODY_CLOSE = 3     /* until the backend closes */
} wst_body_mode;

typedef struct wst_response {
    wst_response_kind kind;
    int status;
    int minor_version;
    size_t header_len;         /* bytes of status line + headers + blank line */
    wst_str reason;            /* points into the parsed buffer */
    size_t n_headers;          /* header fields of the head */
    wst_header *headers;       /* set by the caller: headers_cap slots, filled
                                * with the first n_headers fields (they point
                                * into the buffer) */
    size_t headers_cap;        /* set by the caller; a head with more fields
                                * gives WST_ERR_SPACE with n_headers set: call
                                * again with that many slots (never more than
                                * WST_MAX_RESPONSE_HEADERS) */
    wst_body_mode body_mode;
    uint64_t content_length;   /* WST_BODY_LENGTH only */
    const char *why;           /* static text when kind is BAD_UPGRADE/INVALID */
} wst_response;

/*
 * Parse the backend's response head in buf[0..len).
 * Returns WST_PARTIAL while the head is incomplete (read more and call again
 * with the whole buffer), WST_OK with *out filled once it is complete,
 * WST_ERR_SPACE (only n_headers set) when out->headers_cap is too small.
 * The caller sets out->headers and out->headers_cap (the slots may be few:
 * a 101 has a handful of fields); the rest of *out is written here.
 * Interim 1xx responses other than 101 are skipped (header_len covers them).
 * A head larger than the buffer the caller is willing to grow gives
 * WST_PARTIAL forever: the caller bounds it.
 *
 * check: the wst_request_check of the client request (protocol, key).
 * head_request: 1 when the client's method was HEAD.
 */
wst_status wst_parse_response(const unsigned char *buf, size_t len,
                              const wst_request_check *check,
                              int head_request,
                              wst_response *out);

/*
 * Is resp->headers[index] hop-by-hop, i.e. not to be relayed to the client:
 * Connection, Keep-Alive, TE, Trailer(s), Transfer-Encoding, Upgrade,
 * Proxy-Connection, Proxy-Authenticate, and every field a token of the
 * response's Connection fields (all of them) names. 1 or 0 (0 also for an
 * index past n_headers). resp: filled by wst_parse_response, its buffer alive.
 */
int wst_response_hop_by_hop(const wst_response *resp, size_t index);

/* Chunked transfer decoding, in place. Zero-initialise before first use. */
typedef struct wst_chunked {
    uint64_t remaining;   /* bytes left in the current chunk */
    uint32_t state;       /* decoder state, private */
    uint32_t line_len;    /* length of the size/trailer line so far, private */
} wst_chunked;

/*
 * Decode buf[0..len): the decoded body bytes are moved to the front of buf
 * (*data_len of them); *consumed says how much of the input was used (the
 * rest, if any, follows the body).
 *   WST_OK           more input is expected
 *   WST_DONE         the body is complete (last chunk and trailers seen)
 *   WST_ERR_INVALID  malformed chunked encoding
 */
wst_status wst_chunked_decode(wst_chunked *st, unsigned char *buf, size_t len,
                              size_t *data_len, size_t *consumed);

/*
 * What was wrong with a body wst_chunked_decode refused (WST_ERR_INVALID),
 * for the log: static, NUL-terminated ("a chunk-size line, CRLF, extension
 * or trailer the chunked syntax does not allow", "a chunk size larger than
 * 64 bits", "a chunk-size or trailer line longer than 8192 bytes"); NULL
 * while st has not failed (and for a NULL st).
 */
const char *wst_chunked_failure(const wst_chunked *st);

/* ------------------------------------------------------------------ */
/* Policy                                                             */
/* ------------------------------------------------------------------ */

/*
 * ProxyWebsocketAllowOrigin: 1 when a request may open a tunnel, 0 when it
 * is refused (403). `origin` is the Origin header's value (has_origin = 0
 * when the request has none: not a browser, allowed); `host` the request's
 * Host header; tls non-zero for a TLS connection; `allowed` the directive's
 * arguments: "same" (Origin's host and port are the request's Host), "*",
 * or serialized origins ("https://app.example.com"). n_allowed == 0: no
 * policy, everything allowed. Invalid arguments refuse.
 */
int wst_origin_allowed(wst_str origin, int has_origin, wst_str host, int tls,
                       const wst_str *allowed, size_t n_allowed);

/* ------------------------------------------------------------------ */
/* The tunnel                                                         */
/* ------------------------------------------------------------------ */

typedef enum wst_io {
    WST_IO_OK = 0,      /* *n bytes moved (n > 0 for reads) */
    WST_IO_AGAIN = 1,   /* nothing now, would block */
    WST_IO_EOF = 2,     /* orderly end of input */
    WST_IO_ERROR = 3    /* reset or failure: the endpoint is dead */
} wst_io;

/*
 * Filtered I/O through httpd's connection filters (mod_ssl, ...),
 * implemented by the shim.
 *  read:  non-blocking; up to cap bytes.
 *  write: writes and flushes all len bytes (may block up to the connection's
 *         timeout); *n = len on WST_IO_OK.
 *  shutdown_write: end the stream in this direction (TLS close_notify, FIN).
 * On WST_IO_ERROR each sets *os_error to what failed: an errno, or the
 * apr_status_t the filters returned (on Unix APR's system errors are errno
 * values); it ends up in wst_tunnel_stats.os_error.
 */
typedef struct wst_endpoint_ops {
    wst_io (*read)(void *ctx, unsigned char *buf, size_t cap, size_t *n,
                   int *os_error);
    wst_io (*write)(void *ctx, const unsigned char *buf, size_t len, size_t *n,
                    int *os_error);
    wst_io (*shutdown_write)(void *ctx, int *os_error);
} wst_endpoint_ops;

typedef struct wst_endpoint {
    int fd;                      /* the socket, for poll() */
    /* 1: no connection filters beyond httpd's core: after the ops' read
     * first says WST_IO_AGAIN (filters drained), the core reads and writes
     * the fd directly. 0: all I/O goes through ops. */
    int raw;
    void *ctx;
    const wst_endpoint_ops *ops;
    /* Buffer for the bytes read FROM this endpoint (owned by the caller);
     * buf_len bytes at its start are already pending (e.g. what the backend
     * sent right after its 101). */
    unsigned char *buf;
    size_t buf_cap;
    size_t buf_len;
} wst_endpoint;

/* What should_stop answers. */
typedef enum wst_stop {
    WST_STOP_NO = 0,          /* carry on */
    WST_STOP_NOW = 1,         /* end the tunnel at once (bare TCP close) */
    WST_STOP_GOING_AWAY = 2,  /* WebSocket tunnels: send Close 1001 to both
                               * sides at a frame boundary, then end once both
                               * Closes are through, the peers closed, or
                               * should_stop says WST_STOP_NOW; plain tunnels:
                               * as WST_STOP_NOW */
    WST_STOP_SHUTDOWN = 3     /* hard stop. WebSocket tunnels: Close 1001 to
                               * both sides at their next frame boundary, not
                               * waiting for answers, ending within 500 ms (an
                               * ending under way is cut short so); plain
                               * tunnels: as WST_STOP_NOW */
} wst_stop;

typedef struct wst_tunnel_config {
    int idle_timeout_ms;  /* end the tunnel after this long without traffic; <= 0: never */
    int tick_ms;          /* how often should_stop is asked; <= 0: 1000 */
    int half_close;       /* 1: forward one side's EOF as a write shutdown and keep the other direction */
    void *stop_ctx;
    wst_stop (*should_stop)(void *stop_ctx);  /* may be NULL */
    /* 1: both directions carry RFC 6455 frames (a WebSocket upgrade): track
     * frame boundaries (headers only), count messages, note Close codes.
     * Must never change the bytes relayed except as described below. */
    int websocket;
    /* websocket only: after this long without traffic, send a Ping to both
     * sides at a frame boundary (the answering Pongs are consumed, never
     * relayed); no answer from a side within the same interval ends the
     * tunnel with Close 1001 to both sides (WST_END_PING_TIMEOUT). 0: off. */
    int ping_interval_ms;
    /* websocket only: at the idle timeout send Close 1001 to both sides at
     * a frame boundary instead of a bare TCP close. */
    int idle_close_frame;
    /* Seed for mask keys (frames to the backend are masked) and ping tokens. */
    uint32_t random_seed;
    /* Optional: memory of at least wst_tunnel_state_size() bytes, aligned
     * for any type (as pool memory is), for the tunnel's state during the
     * call (otherwise it is on the calling thread's stack, whose pages stay
     * resident once touched). NULL/0: the stack. */
    void *state;
    size_t state_len;
    /* Limits (0: off). websocket only: a data message (all its fragments)
     * whose payload is larger than max_message_size, from either side, ends
     * the tunnel at that frame's header, before any of it is relayed: Close
     * 1009 to its sender, 1001 to the other side (WST_END_MESSAGE_TOO_BIG).
     * Control frames keep RFC 6455's 125-byte limit (the core stops
     * tracking a stream that breaks it). */
    uint64_t max_message_size;
    /* websocket only: the client may send max_message_rate messages per
     * second (Pings, Pongs and Closes count, Pongs answering the module's
     * Pings do not) with bursts of max_message_burst (<= 0: the rate); more
     * ends the tunnel: Close 1008 to the client, 1001 to the backend
     * (WST_END_RATE_LIMITED). */
    int max_message_rate;
    int max_message_burst;
    /* Any tunnel: end it at a random moment within the last tenth of this
     * lifetime (WebSocket: Close 1001 to both sides; WST_END_LIFETIME). */
    int64_t max_lifetime_ms;
} wst_tunnel_config;

/* Bytes wst_tunnel_config.state must have. */
size_t wst_tunnel_state_size(void);

typedef enum wst_end_reason {
    WST_END_CLOSED = 0,    /* both directions ended normally */
    WST_END_CLIENT_ERROR = 1,
    WST_END_BACKEND_ERROR = 2,
    WST_END_IDLE = 3,
    WST_END_STOPPED = 4,   /* should_stop said WST_STOP_NOW */
    WST_END_POLL_ERROR = 5,
    WST_END_PING_TIMEOUT = 6, /* a side did not answer the module's Ping */
    WST_END_GOING_AWAY = 7,   /* should_stop said WST_STOP_GOING_AWAY */
    WST_END_MESSAGE_TOO_BIG = 8, /* max_message_size */
    WST_END_RATE_LIMITED = 9,    /* max_message_rate */
    WST_END_LIFETIME = 10        /* max_lifetime_ms */
} wst_end_reason;

/* The end reason's name, as the wstunnel-end note and the log say it
 * ("closed", "client-error", "backend-error", "idle", "stopped",
 * "poll-error", "ping-timeout", "going-away", "message-too-big",
 * "rate-limited", "lifetime"; "unknown" for another value):
 * static, NUL-terminated. */
const char *wst_end_reason_name(wst_end_reason reason);

typedef struct wst_tunnel_stats {
    uint64_t bytes_from_client;   /* read from the client (and written to the backend) */
    uint64_t bytes_from_backend;  /* read from the backend (and written to the client) */
    uint64_t bytes_to_client;     /* written to the client */
    uint64_t bytes_to_backend;    /* written to the backend */
    int closed_first;             /* 0 neither, 1 client, 2 backend */
    wst_end_reason reason;
    int os_error;                 /* what failed (an errno, or the apr_status_t
                                   * a callback reported), or 0 */
    /* websocket only (else 0 / -1): */
    uint64_t messages_from_client;   /* complete data messages */
    uint64_t messages_from_backend;
    int close_code_from_client;      /* code of the Close the client sent, -1 none */
    int close_code_from_backend;     /* code of the Close the backend sent, -1 none */
    uint32_t pings_sent;             /* Pings the module injected (both sides) */
    uint32_t pongs_consumed;         /* answers to them, swallowed */
    int frames_lost_sync;            /* 1 client, 2 backend, 3 both: a protocol
                                      * violation stopped tracking that side */
    uint64_t largest_message_from_client;  /* payload bytes of the largest data
                                            * message (a cut one: as announced) */
    uint64_t largest_message_from_backend;
    /* Round trips of the module's Pings (ms): the last and the largest, per
     * side; -1 when none was answered. */
    int ping_rtt_client_last_ms;
    int ping_rtt_client_max_ms;
    int ping_rtt_backend_last_ms;
    int ping_rtt_backend_max_ms;
} wst_tunnel_stats;

/* Run the tunnel until both directions have ended (or an error, the idle
 * timeout or should_stop). Returns WST_OK, or WST_ERR_ARG on bad arguments. */
wst_status wst_tunnel_run(wst_endpoint *client, wst_endpoint *backend,
                          const wst_tunnel_config *cfg,
                          wst_tunnel_stats *stats);

/* ------------------------------------------------------------------ */
/* Tunnels without a worker: the per-child reactor                    */
/* ------------------------------------------------------------------ */

/*
 * A tunnel whose two ends are plain sockets can leave its httpd worker once
 * the 101 is out: the shim dups both descriptors and hands them, with the
 * bytes its filters had already read, to the child's reactor, which runs
 * every such tunnel on one thread (epoll, edge-triggered), with the same
 * engine as wst_tunnel_run. The reactor never calls httpd or APR itself:
 * the only code of the shim it runs is each tunnel's `end` callback.
 *
 * Lifetime: wst_reactor_create (child_init), a thread runs wst_reactor_run;
 * workers call wst_reactor_adopt; when the child goes away wst_reactor_stop
 * says how, wst_reactor_tunnels tells when they are gone; wst_reactor_quit
 * ends what is left and makes wst_reactor_run return; then
 * wst_reactor_destroy. Every function but create, run and destroy may be
 * called from any thread at any time in between.
 */
typedef struct wst_reactor wst_reactor;

/* Called once per adopted tunnel, on the reactor's thread, after both
 * descriptors are closed: its figures and how long it ran (from adoption). */
typedef void (*wst_async_end_fn)(void *end_ctx, const wst_tunnel_stats *stats,
                                 uint64_t duration_ms);

typedef struct wst_async_tunnel {
    /* The reactor's own descriptors of the two sockets (dups); taken over
     * on WST_OK (made non-blocking, closed by the reactor), left alone
     * otherwise. */
    int client_fd;
    int backend_fd;
    /* Bytes already read from each side and not yet relayed (copied during
     * the call): what the client's input filters held, and what the backend
     * sent after its 101 (and its filters held). At most
     * WST_ASYNC_PENDING_MAX each. */
    const unsigned char *to_backend;
    size_t to_backend_len;
    const unsigned char *to_client;
    size_t to_client_len;
    /* The tunnel's settings, as for wst_tunnel_run; tick_ms, stop_ctx,
     * should_stop, state and state_len are not used (the reactor asks
     * nobody: see wst_reactor_stop). */
    wst_tunnel_config cfg;
    /* ProxyWebsocketDrain in ms (0: none): after wst_reactor_stop(...,
     * WST_STOP_GOING_AWAY) this tunnel sends Close 1001 at a random moment
     * within the window (as the threaded tunnels do) and is cut at its end;
     * without one it runs on until it ends. */
    int drain_ms;
    wst_async_end_fn end;   /* required */
    void *end_ctx;
} wst_async_tunnel;

#define WST_ASYNC_PENDING_MAX (256 * 1024)

/* A reactor for this process (epoll and wake-up descriptors made here),
 * or NULL when it cannot be made (no memory or descriptors). */
wst_reactor *wst_reactor_create(void);

/* The reactor thread's body: blocks every signal on the calling thread,
 * then runs the tunnels until wst_reactor_quit; returns once every tunnel
 * has ended and its end callback ran. */
void wst_reactor_run(wst_reactor *r);

/* 1 when a tunnel whose highest descriptor is `highest_fd` may be handed
 * over now: the reactor runs and is not quitting, and the descriptors stay
 * clear of the process's limit (the last eighth, at least 64, is left to
 * httpd for accepting connections and to pipes). 0: keep it on its thread. */
int wst_reactor_can_take(const wst_reactor *r, int highest_fd);

/* Hand a tunnel over. WST_OK: the reactor owns the descriptors and calls
 * t->end exactly once, later, on its thread. WST_ERR_ARG (bad arguments),
 * WST_ERR_SPACE (no memory, reactor quitting): nothing was taken, the
 * caller still owns the descriptors. */
wst_status wst_reactor_adopt(wst_reactor *r, const wst_async_tunnel *t);

/* The child is going away. WST_STOP_GOING_AWAY: a graceful restart or stop
 * (each tunnel's drain window starts now; tunnels without one run on);
 * WST_STOP_SHUTDOWN: a hard stop (WebSocket tunnels: Close 1001 to both
 * sides, everything ends within 500 ms); WST_STOP_NOW: cut every tunnel
 * now. A later call may only make it harder. */
void wst_reactor_stop(wst_reactor *r, wst_stop how);

/* Tunnels adopted and not yet ended (their end callback not yet run). */
size_t wst_reactor_tunnels(const wst_reactor *r);

/* End every tunnel now (reason WST_END_STOPPED) and make wst_reactor_run
 * return. */
void wst_reactor_quit(wst_reactor *r);

/* Free the reactor, after wst_reactor_run returned (or was never run:
 * then no tunnel may have been adopted). */
void wst_reactor_destroy(wst_reactor *r);

#ifdef __cplusplus
}
#endif

#endif /* WSTUNNEL_CORE_H */
