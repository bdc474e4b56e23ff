//! The client side of the handshake: deciding what to do with a client
//! request ([`check_request`]) and writing the request the backend gets
//! ([`request_size`], [`build_request`]).

use core::ffi::CStr;
use core::mem::MaybeUninit;

use base64::Engine as _;

use super::tokens::{
    comma_tokens, count_named, first_named, is_field_value, is_token, is_websocket_token,
    list_tokens, trim_ows, upgrade_token_matches,
};
use super::Header;

/// What the shim should do with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tunnel it: send `protocol` to the backend.
    Ok,
    /// No upgrade was asked for (no Upgrade token, or Connection without
    /// `upgrade`): a plain HTTP request.
    ///
    /// With `is_websocket` set, the request is a WebSocket upgrade that is
    /// valid in every other respect (the route allows websocket; GET,
    /// HTTP/1.1, one good key, a version, no body) and only its Connection
    /// header lacks the `upgrade` token (clients and middleboxes drop it):
    /// `protocol` and `key` are filled as for `Ok`, and `reason` says so
    /// (`reasons::NO_CONNECTION_WEBSOCKET`). A ws:// route tunnels it, as
    /// stock httpd does in both its modes (its 101 is checked as any);
    /// an http:// route (ProxyWebsocketUpgrade) leaves it to mod_proxy_http,
    /// whose rules then apply. Only the shim knows which route it is.
    None,
    /// An upgrade to a protocol the route does not allow: 426.
    Mismatch,
    /// A malformed upgrade request: 400.
    BadRequest,
}

/// The result of [`check_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestCheck<'a> {
    pub verdict: Verdict,
    /// The Upgrade value to send to the backend (empty unless `Ok`): a slice
    /// of a client header value, or static storage.
    pub protocol: &'a [u8],
    /// The upgrade is a WebSocket one: its 101 must carry the
    /// Sec-WebSocket-Accept that answers `key`.
    pub is_websocket: bool,
    /// The client's Sec-WebSocket-Key (OWS-trimmed slice of the client's
    /// header value), or empty.
    pub key: &'a [u8],
    /// Static explanation for the log (also for `Ok`, and for a `None`
    /// that is a WebSocket upgrade without the Connection token).
    pub reason: &'static CStr,
}

/// The protocol sent to the backend with `upgrade=NONE` (static storage).
const WEBSOCKET: &[u8] = b"websocket";

pub(crate) mod reasons {
    use core::ffi::CStr;
    pub const ACCEPTED: &CStr = c"upgrade accepted";
    pub const ACCEPTED_NONE: &CStr = c"upgrade=NONE: tunnelled without checking the request";
    pub const NO_UPGRADE: &CStr = c"no Upgrade header";
    pub const NO_CONNECTION_UPGRADE: &CStr = c"Connection header lacks the upgrade token";
    pub const NO_CONNECTION_WEBSOCKET: &CStr =
        c"WebSocket upgrade whose Connection header lacks the upgrade token";
    pub const MISMATCH: &CStr = c"Upgrade protocol not allowed on this route";
    pub const NOT_GET: &CStr = c"WebSocket upgrade with a method other than GET";
    pub const OLD_HTTP: &CStr = c"WebSocket upgrade requires HTTP/1.1 or later";
    pub const NO_KEY: &CStr = c"missing Sec-WebSocket-Key";
    pub const REPEATED_KEY: &CStr = c"repeated Sec-WebSocket-Key";
    pub const BAD_KEY: &CStr = c"Sec-WebSocket-Key is not 16 base64-encoded bytes";
    pub const NO_VERSION: &CStr = c"missing Sec-WebSocket-Version";
    pub const REPEATED_VERSION: &CStr = c"repeated Sec-WebSocket-Version";
    pub const BODY_LENGTH: &CStr = c"upgrade request with a body (Content-Length)";
    pub const BODY_CHUNKED: &CStr = c"upgrade request with a body (Transfer-Encoding)";
}

/// The route's `upgrade=` setting.
#[derive(Clone, Copy)]
enum Policy<'w> {
    /// Unset: WebSocket only.
    Default,
    /// `NONE`: no check, always ask for WebSocket.
    NoCheck,
    /// `ANY` or `*`: whatever the client asks for.
    Any,
    /// A comma list of accepted tokens.
    List(&'w [u8]),
}

fn policy(worker_upgrade: &[u8]) -> Policy<'_> {
    let w = trim_ows(worker_upgrade);
    if comma_tokens(w).next().is_none() {
        Policy::Default
    } else if w.eq_ignore_ascii_case(b"NONE") {
        Policy::NoCheck
    } else if w.eq_ignore_ascii_case(b"ANY") || w == b"*" {
        Policy::Any
    } else {
        Policy::List(w)
    }
}

/// RFC 6455 4.2.1 checks of a WebSocket opening handshake (the Upgrade and
/// Connection tokens are checked by the caller). Returns the key.
fn websocket_checks<'a, I>(
    method: &[u8],
    proto_num: i32,
    headers: I,
) -> Result<&'a [u8], &'static CStr>
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    if method != b"GET" {
        return Err(reasons::NOT_GET);
    }
    if proto_num < 1001 {
        return Err(reasons::OLD_HTTP);
    }
    let key = match count_named(headers.clone(), b"sec-websocket-key") {
        0 => return Err(reasons::NO_KEY),
        1 => first_named(headers.clone(), b"sec-websocket-key")
            .map_or(&[][..], |h| trim_ows(h.value)),
        _ => return Err(reasons::REPEATED_KEY),
    };
    if !valid_key(key) {
        return Err(reasons::BAD_KEY);
    }
    match count_named(headers, b"sec-websocket-version") {
        0 => Err(reasons::NO_VERSION),
        1 => Ok(key),
        _ => Err(reasons::REPEATED_VERSION),
    }
}

/// The key is the canonical base64 of exactly 16 bytes (24 characters).
fn valid_key(key: &[u8]) -> bool {
    if key.len() != 24 {
        return false;
    }
    let mut out = [0u8; 18];
    matches!(
        base64::engine::general_purpose::STANDARD.decode_slice(key, &mut out),
        Ok(16)
    )
}

/// An upgrade request must not carry a body: the body would be forwarded
/// into the tunnel and read by the backend as something else.
fn body_check<'a, I>(headers: I) -> Result<(), &'static CStr>
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    for h in headers {
        if h.name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(reasons::BODY_CHUNKED);
        }
        if h.name.eq_ignore_ascii_case(b"content-length") {
            let v = trim_ows(h.value);
            if v.is_empty() || v.iter().any(|&b| b != b'0') {
                return Err(reasons::BODY_LENGTH);
            }
        }
    }
    Ok(())
}

fn verdict<'a>(verdict: Verdict, reason: &'static CStr) -> RequestCheck<'a> {
    RequestCheck {
        verdict,
        protocol: &[],
        is_websocket: false,
        key: &[],
        reason,
    }
}

/// Decide what to do with a client request on a tunnel route.
///
/// * `method`: the request method, case-sensitive (`GET`);
/// * `proto_num`: the HTTP version as httpd encodes it (1001 = HTTP/1.1);
/// * `headers`: the client's header fields, in order, repeats allowed;
/// * `worker_upgrade`: the route's `upgrade=` value: empty for the default
///   (WebSocket), `NONE`, `ANY`, `*`, or a comma list of tokens.
///
/// `Upgrade` and `Connection` are comma lists, possibly split over repeated
/// fields; their tokens are matched case-insensitively. An Upgrade token
/// `name/version` matches an accepted token `name`.
pub fn check_request<'a, I>(
    method: &[u8],
    proto_num: i32,
    headers: I,
    worker_upgrade: &[u8],
) -> RequestCheck<'a>
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    let mut upgrade = list_tokens(headers.clone(), b"upgrade");
    let has_upgrade = upgrade.clone().next().is_some();
    let connection_upgrade =
        list_tokens(headers.clone(), b"connection").any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let policy = policy(worker_upgrade);

    if let Policy::NoCheck = policy {
        // No check of the upgrade itself, but a body is still refused.
        if let Err(reason) = body_check(headers.clone()) {
            return verdict(Verdict::BadRequest, reason);
        }
        let key = first_named(headers.clone(), b"sec-websocket-key")
            .map_or(&[][..], |h| trim_ows(h.value));
        let is_websocket = connection_upgrade
            && upgrade.clone().any(is_websocket_token)
            && websocket_checks(method, proto_num, headers).is_ok();
        return RequestCheck {
            verdict: Verdict::Ok,
            protocol: WEBSOCKET,
            is_websocket,
            key,
            reason: reasons::ACCEPTED_NONE,
        };
    }

    if !has_upgrade {
        return verdict(Verdict::None, reasons::NO_UPGRADE);
    }

    let chosen: Option<(&'a [u8], bool)> = match policy {
        Policy::Any => {
            let protocol = if count_named(headers.clone(), b"upgrade") == 1 {
                first_named(headers.clone(), b"upgrade").map(|h| trim_ows(h.value))
            } else {
                upgrade.clone().next()
            };
            protocol.map(|p| (p, upgrade.clone().any(is_websocket_token)))
        }
        // The default route sends the canonical `websocket` whatever case the
        // client used: strict backends (ejabberd) compare it exactly.
        Policy::Default => upgrade.find(|t| is_websocket_token(t)).map(|_| (WEBSOCKET, true)),
        Policy::List(allowed) => upgrade
            .find(|t| comma_tokens(allowed).any(|a| upgrade_token_matches(t, a)))
            .map(|t| (t, is_websocket_token(t))),
        Policy::NoCheck => None, // handled above
    };
    if !connection_upgrade {
        return without_connection_token(method, proto_num, headers, chosen);
    }
    let Some((protocol, is_websocket)) = chosen else {
        return verdict(Verdict::Mismatch, reasons::MISMATCH);
    };

    let mut key: &'a [u8] = &[];
    if is_websocket {
        match websocket_checks(method, proto_num, headers.clone()) {
            Ok(k) => key = k,
            Err(reason) => return verdict(Verdict::BadRequest, reason),
        }
    }
    if let Err(reason) = body_check(headers) {
        return verdict(Verdict::BadRequest, reason);
    }
    RequestCheck {
        verdict: Verdict::Ok,
        protocol,
        is_websocket,
        key,
        reason: reasons::ACCEPTED,
    }
}

/// An Upgrade without the `upgrade` token in Connection: not an upgrade by
/// HTTP's rules (`None`), but reported as a WebSocket one (see
/// [`Verdict::None`]) when the route allows websocket and every WebSocket
/// and body check passes. Anything less stays a plain request, as before.
fn without_connection_token<'a, I>(
    method: &[u8],
    proto_num: i32,
    headers: I,
    chosen: Option<(&'a [u8], bool)>,
) -> RequestCheck<'a>
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    let plain = verdict(Verdict::None, reasons::NO_CONNECTION_UPGRADE);
    let Some((protocol, true)) = chosen else {
        return plain;
    };
    let Ok(key) = websocket_checks(method, proto_num, headers.clone()) else {
        return plain;
    };
    if body_check(headers).is_err() {
        return plain;
    }
    RequestCheck {
        verdict: Verdict::None,
        protocol,
        is_websocket: true,
        key,
        reason: reasons::NO_CONNECTION_WEBSOCKET,
    }
}

// ---------------------------------------------------------------------------
// The backend request
// ---------------------------------------------------------------------------

/// What to send to the backend (mirrors `wst_backend_request`).
#[derive(Clone, Debug)]
pub struct BackendRequest<'a, I> {
    pub method: &'a [u8],
    /// Canonical path and query, starting with `/`.
    pub path: &'a [u8],
    /// The Host value to send.
    pub host: &'a [u8],
    /// The client's header fields, in order.
    pub headers: I,
    /// The Upgrade value to send.
    pub protocol: &'a [u8],
    /// Merge X-Forwarded-For/-Host/-Server (ProxyAddHeaders).
    pub add_forwarded: bool,
    pub forwarded_for: &'a [u8],
    pub forwarded_host: &'a [u8],
    pub forwarded_server: &'a [u8],
}

/// Why [`build_request`] wrote nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A field could inject a line or is not valid syntax.
    Invalid,
    /// The buffer is smaller than the request.
    Space,
}

/// A byte buffer the request can be written into: plain bytes, or
/// uninitialised memory (a C caller's fresh allocation).
pub trait OutBuf {
    fn out_len(&self) -> usize;
    /// Copy `src` to `pos..pos + src.len()`; false (nothing written) when it
    /// does not fit.
    fn put_at(&mut self, pos: usize, src: &[u8]) -> bool;
}

impl OutBuf for [u8] {
    fn out_len(&self) -> usize {
        self.len()
    }
    fn put_at(&mut self, pos: usize, src: &[u8]) -> bool {
        match pos
            .checked_add(src.len())
            .and_then(|end| self.get_mut(pos..end))
        {
            Some(dst) => {
                dst.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

impl OutBuf for [MaybeUninit<u8>] {
    fn out_len(&self) -> usize {
        self.len()
    }
    fn put_at(&mut self, pos: usize, src: &[u8]) -> bool {
        match pos
            .checked_add(src.len())
            .and_then(|end| self.get_mut(pos..end))
        {
            Some(dst) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s);
                }
                true
            }
            None => false,
        }
    }
}

trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// Counts the bytes instead of writing them.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

struct Writer<'b, B: OutBuf + ?Sized> {
    buf: &'b mut B,
    pos: usize,
    ok: bool,
}

impl<B: OutBuf + ?Sized> Sink for Writer<'_, B> {
    fn put(&mut self, bytes: &[u8]) {
        if self.ok && self.buf.put_at(self.pos, bytes) {
            self.pos = self.pos.saturating_add(bytes.len());
        } else {
            self.ok = false;
        }
    }
}

/// The X-Forwarded-* fields, in the order they are emitted.
const FORWARDED: [&[u8]; 3] = [
    b"X-Forwarded-For",
    b"X-Forwarded-Host",
    b"X-Forwarded-Server",
];

/// Hop-by-hop fields (RFC 7230 6.1) and the proxy's own fields.
fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
}

/// A field named by one of the client's Connection tokens.
fn named_by_connection<'a, I>(headers: I, name: &[u8]) -> bool
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    list_tokens(headers, b"connection").any(|t| t.eq_ignore_ascii_case(name))
}

fn is_forwarded(name: &[u8]) -> bool {
    FORWARDED.iter().any(|f| name.eq_ignore_ascii_case(f))
}

/// Every byte of the path is visible (no CTL, space or DEL) and it starts with '/'.
fn valid_path(path: &[u8]) -> bool {
    path.first() == Some(&b'/') && path.iter().all(|&b| b > 0x20 && b != 0x7f)
}

fn validate<'a, I>(req: &BackendRequest<'a, I>) -> Result<(), BuildError>
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    let ok = is_token(req.method)
        && valid_path(req.path)
        && is_field_value(req.host)
        && !trim_ows(req.protocol).is_empty()
        && is_field_value(req.protocol)
        && req
            .headers
            .clone()
            .all(|h| is_token(h.name) && is_field_value(h.value))
        && (!req.add_forwarded
            || (is_field_value(req.forwarded_for)
                && is_field_value(req.forwarded_host)
                && is_field_value(req.forwarded_server)));
    if ok {
        Ok(())
    } else {
        Err(BuildError::Invalid)
    }
}

fn emit<'a, I, S>(req: &BackendRequest<'a, I>, s: &mut S)
where
    I: Iterator<Item = Header<'a>> + Clone,
    S: Sink,
{
    s.put(req.method);
    s.put(b" ");
    s.put(req.path);
    s.put(b" HTTP/1.1\r\nHost: ");
    s.put(req.host);
    s.put(b"\r\n");
    for h in req.headers.clone() {
        let dropped = h.name.eq_ignore_ascii_case(b"host")
            || is_hop_by_hop(h.name)
            || (req.add_forwarded && is_forwarded(h.name))
            || named_by_connection(req.headers.clone(), h.name);
        if !dropped {
            s.put(h.name);
            s.put(b": ");
            s.put(h.value);
            s.put(b"\r\n");
        }
    }
    if req.add_forwarded {
        let ours = [req.forwarded_for, req.forwarded_host, req.forwarded_server];
        for (name, our_value) in FORWARDED.iter().zip(ours) {
            // The client's values (unless its Connection header named the
            // field: CVE-2022-31813 order, as httpd 2.4.54+), then ours.
            let clients = req
                .headers
                .clone()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| trim_ows(h.value))
                .filter(|v| !v.is_empty());
            let clients = if named_by_connection(req.headers.clone(), name) {
                None
            } else {
                Some(clients)
            };
            let mut first = true;
            for v in clients
                .into_iter()
                .flatten()
                .chain(Some(our_value).filter(|v| !v.is_empty()))
            {
                if first {
                    s.put(name);
                    s.put(b": ");
                    first = false;
                } else {
                    s.put(b", ");
                }
                s.put(v);
            }
            if !first {
                s.put(b"\r\n");
            }
        }
    }
    s.put(b"Upgrade: ");
    s.put(req.protocol);
    s.put(b"\r\nConnection: Upgrade\r\n\r\n");
}

/// The size of the request [`build_request`] writes for `req` (exact when
/// `req` is valid; [`build_request`] rejects an invalid one whatever the
/// buffer). Saturates at `usize::MAX`.
pub fn request_size<'a, I>(req: &BackendRequest<'a, I>) -> usize
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    let mut c = Counter(0);
    emit(req, &mut c);
    c.0
}

/// Write the HTTP/1.1 request to send to the backend into `buf`; returns the
/// number of bytes written. On error nothing is written.
///
/// The request line, `Host`, then every client field in order except Host,
/// hop-by-hop fields (Connection and the fields it names, Keep-Alive, TE,
/// Trailer, Transfer-Encoding, Upgrade, Proxy-*) and, with `add_forwarded`,
/// X-Forwarded-For/-Host/-Server, which follow merged with our values
/// (`client, client, ours`); then `Upgrade: <protocol>` and
/// `Connection: Upgrade`. Names and values are copied byte for byte.
pub fn build_request<'a, I, B>(
    req: &BackendRequest<'a, I>,
    buf: &mut B,
) -> Result<usize, BuildError>
where
    I: Iterator<Item = Header<'a>> + Clone,
    B: OutBuf + ?Sized,
{
    validate(req)?;
    let size = request_size(req);
    if size > buf.out_len() {
        return Err(BuildError::Space);
    }
    let mut w = Writer {
        buf,
        pos: 0,
        ok: true,
    };
    emit(req, &mut w);
    if w.ok && w.pos == size {
        Ok(size)
    } else {
        Err(BuildError::Space)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn hs<'a>(list: &[(&'a str, &'a str)]) -> Vec<Header<'a>> {
        list.iter()
            .map(|(n, v)| Header::new(n.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn check<'a>(
        method: &str,
        proto: i32,
        headers: &'a [Header<'a>],
        worker: &str,
    ) -> RequestCheck<'a> {
        check_request(
            method.as_bytes(),
            proto,
            headers.iter().copied(),
            worker.as_bytes(),
        )
    }

    fn chrome() -> Vec<Header<'static>> {
        hs(&[
            ("Host", "example.com"),
            ("Connection", "Upgrade"),
            ("Pragma", "no-cache"),
            ("Cache-Control", "no-cache"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0"),
            ("Upgrade", "websocket"),
            ("Origin", "https://example.com"),
            ("Sec-WebSocket-Version", "13"),
            ("Accept-Encoding", "gzip, deflate, br, zstd"),
            ("Accept-Language", "en-US,en;q=0.9"),
            ("Cookie", "a=b; c=d"),
            ("Sec-WebSocket-Key", KEY),
            (
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            ),
        ])
    }

    fn firefox() -> Vec<Header<'static>> {
        hs(&[
            ("Host", "example.com"),
            (
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            ),
            ("Accept", "*/*"),
            ("Accept-Language", "en-US,en;q=0.5"),
            ("Accept-Encoding", "gzip, deflate, br"),
            ("Sec-WebSocket-Version", "13"),
            ("Origin", "https://example.com"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("Sec-WebSocket-Key", KEY),
            ("DNT", "1"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-Fetch-Dest", "empty"),
            ("Sec-Fetch-Mode", "websocket"),
            ("Sec-Fetch-Site", "same-origin"),
            ("Pragma", "no-cache"),
            ("Cache-Control", "no-cache"),
            ("Upgrade", "websocket"),
        ])
    }

    fn ws_with(extra: &[(&'static str, &'static str)], drop: &[&str]) -> Vec<Header<'static>> {
        let mut v: Vec<Header<'static>> = chrome()
            .into_iter()
            .filter(|h| {
                !drop
                    .iter()
                    .any(|d| h.name.eq_ignore_ascii_case(d.as_bytes()))
            })
            .collect();
        v.extend(hs(extra));
        v
    }

    #[test]
    fn browsers_accepted() {
        for (name, headers) in [("chrome", chrome()), ("firefox", firefox())] {
            for worker in [
                "",
                "websocket",
                "WebSocket",
                "ANY",
                "*",
                "h2c, websocket",
                "NONE",
            ] {
                let c = check("GET", 1001, &headers, worker);
                assert_eq!(c.verdict, Verdict::Ok, "{name} {worker}: {:?}", c.reason);
                assert!(c.is_websocket, "{name} {worker}");
                assert_eq!(c.key, KEY.as_bytes(), "{name} {worker}");
                assert_eq!(c.protocol, b"websocket", "{name} {worker}");
            }
        }
    }

    #[test]
    fn key_points_into_input() {
        let headers = chrome();
        let c = check("GET", 1001, &headers, "");
        let key_hdr = headers
            .iter()
            .find(|h| h.name == b"Sec-WebSocket-Key")
            .unwrap();
        assert_eq!(c.key.as_ptr(), key_hdr.value.as_ptr());
        // The default route's protocol is the static canonical token.
        assert_eq!(c.protocol, WEBSOCKET);
    }

    #[test]
    fn case_and_list_variants() {
        let variants: &[&[(&str, &str)]] = &[
            &[("upgrade", "WebSocket"), ("connection", "upgrade")],
            &[("UPGRADE", "WEBSOCKET"), ("CONNECTION", "UPGRADE")],
            &[
                ("Upgrade", "websocket"),
                ("Connection", "keep-alive, Upgrade"),
            ],
            &[
                ("Upgrade", "websocket"),
                ("Connection", "keep-alive"),
                ("Connection", "Upgrade"),
            ],
            &[("Upgrade", " websocket \t"), ("Connection", ",\tupgrade ,")],
            &[
                ("Upgrade", "h2c, websocket"),
                ("Connection", "Upgrade, HTTP2-Settings"),
            ],
            &[
                ("Upgrade", "h2c"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
            ],
            &[("Upgrade", "websocket/13"), ("Connection", "Upgrade")],
        ];
        for v in variants {
            let mut headers = hs(v);
            headers.extend(hs(&[
                ("Sec-WebSocket-Key", KEY),
                ("Sec-WebSocket-Version", "13"),
            ]));
            let c = check("GET", 1001, &headers, "");
            assert_eq!(c.verdict, Verdict::Ok, "{v:?}: {:?}", c.reason);
            assert!(c.is_websocket);
            assert!(
                c.protocol.eq_ignore_ascii_case(b"websocket")
                    || c.protocol.eq_ignore_ascii_case(b"websocket/13")
            );
        }
        // The default route sends the canonical token, whatever the client's case.
        let headers = hs(&[
            ("Upgrade", "h2c, WebSocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ]);
        assert_eq!(check("GET", 1001, &headers, "").protocol, b"websocket");
    }

    #[test]
    fn not_an_upgrade() {
        let cases: &[(&[(&str, &str)], &CStr)] = &[
            (&[], reasons::NO_UPGRADE),
            (
                &[("Host", "x"), ("Connection", "Upgrade")],
                reasons::NO_UPGRADE,
            ),
            (
                &[("Upgrade", " , "), ("Connection", "Upgrade")],
                reasons::NO_UPGRADE,
            ),
            (&[("Upgrade", "websocket")], reasons::NO_CONNECTION_UPGRADE),
            (
                &[("Upgrade", "websocket"), ("Connection", "keep-alive")],
                reasons::NO_CONNECTION_UPGRADE,
            ),
            (
                &[("Upgrade", "websocket"), ("Connection", "upgrades")],
                reasons::NO_CONNECTION_UPGRADE,
            ),
            (
                &[("Upgrade", "websocket"), ("X-Connection", "upgrade")],
                reasons::NO_CONNECTION_UPGRADE,
            ),
        ];
        for (v, reason) in cases {
            let headers = hs(v);
            for worker in ["", "ANY", "foo"] {
                let c = check("GET", 1001, &headers, worker);
                assert_eq!(c.verdict, Verdict::None, "{v:?} {worker}");
                assert_eq!(c.reason, *reason, "{v:?} {worker}");
                assert!(c.protocol.is_empty() && c.key.is_empty() && !c.is_websocket);
            }
        }
    }

    #[test]
    fn websocket_without_connection_token() {
        // A complete WebSocket handshake whose Connection header was dropped
        // (or names other options only): still None, but reported as a
        // WebSocket upgrade with its protocol and key, for a ws:// route.
        let variants: Vec<(&str, Vec<Header<'static>>)> = vec![
            ("no Connection", ws_with(&[], &["Connection"])),
            (
                "keep-alive only",
                ws_with(&[("Connection", "keep-alive")], &["Connection"]),
            ),
            (
                "upgrades",
                ws_with(&[("Connection", "upgrades, close")], &["Connection"]),
            ),
            (
                "X-Connection",
                ws_with(&[("X-Connection", "upgrade")], &["Connection"]),
            ),
            (
                "firefox",
                firefox()
                    .into_iter()
                    .filter(|h| !h.name.eq_ignore_ascii_case(b"connection"))
                    .collect(),
            ),
            (
                "case",
                ws_with(&[("upgrade", "WebSocket")], &["Connection", "Upgrade"]),
            ),
            (
                "empty body",
                ws_with(&[("Content-Length", "0")], &["Connection"]),
            ),
        ];
        for (what, headers) in &variants {
            for worker in ["", "websocket", "WebSocket", "h2c, websocket"] {
                let c = check("GET", 1001, headers, worker);
                assert_eq!(c.verdict, Verdict::None, "{what} {worker}");
                assert_eq!(
                    c.reason,
                    reasons::NO_CONNECTION_WEBSOCKET,
                    "{what} {worker}"
                );
                assert!(c.is_websocket, "{what} {worker}");
                assert_eq!(c.key, KEY.as_bytes(), "{what} {worker}");
                assert!(
                    c.protocol.eq_ignore_ascii_case(b"websocket"),
                    "{what} {worker}"
                );
            }
            // The default route sends the canonical token, as with Connection.
            assert_eq!(
                check("GET", 1001, headers, "").protocol,
                WEBSOCKET,
                "{what}"
            );
            for worker in ["ANY", "*"] {
                let c = check("GET", 1001, headers, worker);
                assert_eq!(
                    (c.verdict, c.is_websocket, c.reason),
                    (Verdict::None, true, reasons::NO_CONNECTION_WEBSOCKET),
                    "{what} {worker}"
                );
            }
        }
        // The key points into the input, as for Ok; HTTP/2.0 is fine too.
        let headers = ws_with(&[], &["Connection"]);
        let c = check("GET", 2000, &headers, "");
        let key_hdr = headers
            .iter()
            .find(|h| h.name == b"Sec-WebSocket-Key")
            .unwrap();
        assert_eq!(c.key.as_ptr(), key_hdr.value.as_ptr());
        assert!(c.is_websocket);
        // upgrade=NONE is unchanged: Ok without any check, never websocket
        // without the Connection token.
        let c = check("GET", 1001, &headers, "NONE");
        assert_eq!((c.verdict, c.is_websocket), (Verdict::Ok, false));
    }

    #[test]
    fn without_connection_token_every_other_check_applies() {
        // Anything short of a valid WebSocket handshake without the
        // Connection token stays a plain request (None, nothing reported),
        // as before: not a 400, which the Connection token would give.
        let cases: &[(&str, i32, &[(&'static str, &'static str)], &[&str])] = &[
            ("POST", 1001, &[], &[]),
            ("get", 1001, &[], &[]),
            ("GET", 1000, &[], &[]),
            ("GET", 9, &[], &[]),
            ("GET", 1001, &[], &["Sec-WebSocket-Key"]),
            ("GET", 1001, &[("Sec-WebSocket-Key", KEY)], &[]),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "c2hvcnQ=")],
                &["Sec-WebSocket-Key"],
            ),
            ("GET", 1001, &[], &["Sec-WebSocket-Version"]),
            ("GET", 1001, &[("Sec-WebSocket-Version", "8")], &[]),
            ("GET", 1001, &[("Content-Length", "5")], &[]),
            ("GET", 1001, &[("Transfer-Encoding", "chunked")], &[]),
            // Not a websocket upgrade, or not one the route allows.
            ("GET", 1001, &[("Upgrade", "h2c")], &["Upgrade"]),
            ("GET", 1001, &[("Upgrade", "websockets")], &["Upgrade"]),
        ];
        for (method, proto, extra, drop) in cases {
            let mut drop = drop.to_vec();
            drop.push("Connection");
            let headers = ws_with(extra, &drop);
            for worker in ["", "websocket", "ANY"] {
                let c = check(method, *proto, &headers, worker);
                assert_eq!(
                    (c.verdict, c.reason),
                    (Verdict::None, reasons::NO_CONNECTION_UPGRADE),
                    "{method} {proto} {extra:?} {drop:?} {worker}"
                );
                assert!(
                    c.protocol.is_empty() && c.key.is_empty() && !c.is_websocket,
                    "{method} {proto} {extra:?} {drop:?} {worker}"
                );
            }
        }
        // A route whose upgrade= list does not have websocket.
        let headers = ws_with(&[], &["Connection"]);
        for worker in ["h2c", "foo, bar", "websocket/14"] {
            let c = check("GET", 1001, &headers, worker);
            assert_eq!(
                (c.verdict, c.reason, c.is_websocket),
                (Verdict::None, reasons::NO_CONNECTION_UPGRADE, false),
                "{worker}"
            );
        }
        // ANY with a non-websocket protocol: plain, as before.
        let headers = hs(&[("Upgrade", "foo/1")]);
        let c = check("GET", 1001, &headers, "ANY");
        assert_eq!((c.verdict, c.is_websocket), (Verdict::None, false));
        assert!(c.protocol.is_empty());
    }

    #[test]
    fn mismatch() {
        let cases: &[(&str, &str)] = &[
            ("", "h2c"),
            ("", "websockets"),
            ("", "web socket"),
            ("websocket", "h2c"),
            ("foo, bar", "websocket"),
            ("foo/2", "foo/1"),
            ("foo/2", "foo"),
        ];
        for (worker, upgrade) in cases {
            let headers = hs(&[
                ("Upgrade", upgrade),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", KEY),
            ]);
            let c = check("GET", 1001, &headers, worker);
            assert_eq!(c.verdict, Verdict::Mismatch, "{worker} {upgrade}");
            assert_eq!(c.reason, reasons::MISMATCH);
            assert!(c.protocol.is_empty());
        }
    }

    #[test]
    fn worker_lists() {
        let cases: &[(&str, &str, &str, bool)] = &[
            // worker, client Upgrade, protocol, websocket
            ("foo", "FOO", "FOO", false),
            ("foo, bar", "baz, Bar", "Bar", false),
            ("foo/2", "foo/2", "foo/2", false),
            ("foo", "foo/3", "foo/3", false),
            (" websocket ", "WebSocket", "WebSocket", true),
            ("ANY", "foo/1", "foo/1", false),
            ("any", "foo, bar", "foo, bar", false),
            ("*", "  Foo  ", "Foo", false),
        ];
        for (worker, upgrade, protocol, ws) in cases {
            let mut headers = hs(&[("Upgrade", upgrade), ("Connection", "Upgrade")]);
            if *ws {
                headers.extend(hs(&[
                    ("Sec-WebSocket-Key", KEY),
                    ("Sec-WebSocket-Version", "13"),
                ]));
            }
            let c = check("GET", 1001, &headers, worker);
            assert_eq!(c.verdict, Verdict::Ok, "{worker} {upgrade}: {:?}", c.reason);
            assert_eq!(c.protocol, protocol.as_bytes(), "{worker} {upgrade}");
            assert_eq!(c.is_websocket, *ws);
            assert_eq!(c.key.is_empty(), !ws);
        }
        // ANY with repeated Upgrade fields: the first token.
        let headers = hs(&[
            ("Upgrade", "foo, x"),
            ("Upgrade", "bar"),
            ("Connection", "Upgrade"),
        ]);
        assert_eq!(check("GET", 1001, &headers, "ANY").protocol, b"foo");
        // Non-WebSocket upgrades need neither GET nor a key, but no body.
        let headers = hs(&[("Upgrade", "foo"), ("Connection", "Upgrade")]);
        assert_eq!(check("OPTIONS", 1000, &headers, "foo").verdict, Verdict::Ok);
        let headers = hs(&[
            ("Upgrade", "foo"),
            ("Connection", "Upgrade"),
            ("Content-Length", "5"),
        ]);
        let c = check("POST", 1001, &headers, "foo");
        assert_eq!(
            (c.verdict, c.reason),
            (Verdict::BadRequest, reasons::BODY_LENGTH)
        );
        let headers = hs(&[
            ("Upgrade", "foo"),
            ("Connection", "Upgrade"),
            ("Transfer-Encoding", "chunked"),
        ]);
        let c = check("POST", 1001, &headers, "ANY");
        assert_eq!(
            (c.verdict, c.reason),
            (Verdict::BadRequest, reasons::BODY_CHUNKED)
        );
    }

    #[test]
    fn bad_websocket_requests() {
        type Case = (
            &'static str,
            i32,
            &'static [(&'static str, &'static str)],
            &'static [&'static str],
            &'static CStr,
        );
        let cases: &[Case] = &[
            ("POST", 1001, &[], &[], reasons::NOT_GET),
            ("get", 1001, &[], &[], reasons::NOT_GET),
            ("HEAD", 1001, &[], &[], reasons::NOT_GET),
            ("GET", 1000, &[], &[], reasons::OLD_HTTP),
            ("GET", 9, &[], &[], reasons::OLD_HTTP),
            ("GET", 1001, &[], &["Sec-WebSocket-Key"], reasons::NO_KEY),
            (
                "GET",
                1001,
                &[("sec-websocket-key", KEY)],
                &[],
                reasons::REPEATED_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "x")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            // 17 bytes, 15 bytes, bad alphabet, missing padding, non-canonical trailing bits
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA=")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ!!")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZR==")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==x")],
                &["Sec-WebSocket-Key"],
                reasons::BAD_KEY,
            ),
            (
                "GET",
                1001,
                &[],
                &["Sec-WebSocket-Version"],
                reasons::NO_VERSION,
            ),
            (
                "GET",
                1001,
                &[("Sec-WebSocket-Version", "8")],
                &[],
                reasons::REPEATED_VERSION,
            ),
            (
                "GET",
                1001,
                &[("Content-Length", "1")],
                &[],
                reasons::BODY_LENGTH,
            ),
            (
                "GET",
                1001,
                &[("content-length", "")],
                &[],
                reasons::BODY_LENGTH,
            ),
            (
                "GET",
                1001,
                &[("Content-Length", "0, 1")],
                &[],
                reasons::BODY_LENGTH,
            ),
            (
                "GET",
                1001,
                &[("Transfer-Encoding", "chunked")],
                &[],
                reasons::BODY_CHUNKED,
            ),
            (
                "GET",
                1001,
                &[("transfer-encoding", "identity")],
                &[],
                reasons::BODY_CHUNKED,
            ),
            (
                "GET",
                1001,
                &[("Content-Length", "0"), ("Transfer-Encoding", "")],
                &[],
                reasons::BODY_CHUNKED,
            ),
        ];
        for (method, proto, extra, drop, reason) in cases {
            let headers = ws_with(extra, drop);
            for worker in ["", "websocket", "ANY"] {
                let c = check(method, *proto, &headers, worker);
                assert_eq!(
                    c.verdict,
                    Verdict::BadRequest,
                    "{method} {proto} {extra:?} {drop:?} {worker}"
                );
                assert_eq!(
                    c.reason, *reason,
                    "{method} {proto} {extra:?} {drop:?} {worker}"
                );
                assert!(c.protocol.is_empty() && c.key.is_empty() && !c.is_websocket);
            }
        }
    }

    #[test]
    fn zero_length_body_and_key_whitespace() {
        let headers = ws_with(&[("Content-Length", "0"), ("Content-Length", " 00 ")], &[]);
        assert_eq!(check("GET", 1001, &headers, "").verdict, Verdict::Ok);
        let headers = ws_with(
            &[("Sec-WebSocket-Key", "  dGhlIHNhbXBsZSBub25jZQ==\t")],
            &["Sec-WebSocket-Key"],
        );
        let c = check("GET", 1001, &headers, "");
        assert_eq!(c.verdict, Verdict::Ok);
        assert_eq!(c.key, KEY.as_bytes());
        let headers = ws_with(&[], &[]);
        assert_eq!(check("GET", 2000, &headers, "").verdict, Verdict::Ok);
    }

    #[test]
    fn upgrade_none() {
        // No check at all: even a plain request is tunnelled, as websocket.
        let c = check("POST", 1000, &[], "NONE");
        assert_eq!(c.verdict, Verdict::Ok);
        assert_eq!(c.protocol, b"websocket");
        assert!(!c.is_websocket && c.key.is_empty());
        assert_eq!(c.reason, reasons::ACCEPTED_NONE);
        // The client's key is reported, websocket only when valid.
        let headers = chrome();
        let c = check("GET", 1001, &headers, "none");
        assert!(c.is_websocket && c.key == KEY.as_bytes() && c.verdict == Verdict::Ok);
        let headers = ws_with(&[("Sec-WebSocket-Key", "short")], &["Sec-WebSocket-Key"]);
        let c = check("GET", 1001, &headers, "NONE");
        assert_eq!(c.verdict, Verdict::Ok);
        assert!(!c.is_websocket);
        assert_eq!(c.key, b"short");
        let headers = ws_with(&[("Upgrade", "h2c")], &["Upgrade"]);
        let c = check("GET", 1001, &headers, "NONE");
        assert!(c.verdict == Verdict::Ok && !c.is_websocket && c.key == KEY.as_bytes());
        let headers = ws_with(&[], &["Connection"]);
        assert!(!check("GET", 1001, &headers, "NONE").is_websocket);
        assert!(!check("POST", 1001, &chrome(), "NONE").is_websocket);
        // ... but a body is still refused.
        let headers = ws_with(&[("Transfer-Encoding", "chunked")], &[]);
        let c = check("GET", 1001, &headers, "NONE");
        assert_eq!(
            (c.verdict, c.reason),
            (Verdict::BadRequest, reasons::BODY_CHUNKED)
        );
    }

    // --- build_request -----------------------------------------------------

    fn req<'a>(
        headers: &'a [Header<'a>],
    ) -> BackendRequest<'a, core::iter::Copied<core::slice::Iter<'a, Header<'a>>>> {
        BackendRequest {
            method: b"GET",
            path: b"/chat?room=1",
            host: b"backend:8080",
            headers: headers.iter().copied(),
            protocol: b"websocket",
            add_forwarded: false,
            forwarded_for: b"",
            forwarded_host: b"",
            forwarded_server: b"",
        }
    }

    fn build<'a, I>(r: &BackendRequest<'a, I>) -> Result<String, BuildError>
    where
        I: Iterator<Item = Header<'a>> + Clone,
    {
        let size = request_size(r);
        let mut buf = vec![0xAAu8; size + 8];
        let n = build_request(r, &mut buf[..])?;
        assert_eq!(n, size, "request_size is exact for a valid request");
        assert!(buf[n..].iter().all(|&b| b == 0xAA));
        // One byte less is too small, and writes nothing.
        let mut small = vec![0xAAu8; n - 1];
        assert_eq!(build_request(r, &mut small[..]), Err(BuildError::Space));
        assert!(small.iter().all(|&b| b == 0xAA));
        // Uninitialised memory works the same.
        let mut un = vec![MaybeUninit::<u8>::uninit(); n];
        assert_eq!(build_request(r, &mut un[..]), Ok(n));
        Ok(String::from_utf8(buf[..n].to_vec()).unwrap())
    }

    #[test]
    fn chrome_request() {
        let headers = chrome();
        let out = build(&req(&headers)).unwrap();
        assert_eq!(
            out,
            "GET /chat?room=1 HTTP/1.1\r\n\
             Host: backend:8080\r\n\
             Pragma: no-cache\r\n\
             Cache-Control: no-cache\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0\r\n\
             Origin: https://example.com\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Accept-Encoding: gzip, deflate, br, zstd\r\n\
             Accept-Language: en-US,en;q=0.9\r\n\
             Cookie: a=b; c=d\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\r\n"
        );
    }

    #[test]
    fn firefox_request_drops_hop_by_hop() {
        let mut headers = firefox();
        headers.extend(hs(&[
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X"),
            ("Proxy-Authorization", "Basic eA=="),
            ("proxy-connection", "keep-alive"),
            ("Proxy-Foo", "1"),
            ("HOST", "other"),
            ("ProxyX", "kept"),
        ]));
        let out = build(&req(&headers)).unwrap();
        for gone in [
            "keep-alive",
            "Keep-Alive",
            "TE:",
            "Trailer",
            "Proxy-",
            "proxy-",
            "other",
            "DNT: 1\r\nConnection",
        ] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("\r\nProxyX: kept\r\n"));
        assert!(out.contains("\r\nSec-Fetch-Mode: websocket\r\n"));
        assert_eq!(out.matches("Connection").count(), 1);
        assert_eq!(out.matches("Upgrade: ").count(), 1);
        assert_eq!(out.matches("Host: ").count(), 1);
        assert!(out.ends_with("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"));
    }

    #[test]
    fn connection_named_headers_dropped() {
        let headers = hs(&[
            ("Connection", "Upgrade, X-Secret"),
            ("connection", "close , x-other"),
            ("X-Secret", "1"),
            ("X-Other", "2"),
            ("X-Kept", "3"),
            ("Close", "4"),
        ]);
        let out = build(&req(&headers)).unwrap();
        assert_eq!(
            out,
            "GET /chat?room=1 HTTP/1.1\r\nHost: backend:8080\r\nX-Kept: 3\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_headers() {
        let headers = hs(&[
            ("X-Forwarded-For", "10.0.0.1"),
            ("A", "1"),
            ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
            ("X-Forwarded-Host", "front.example"),
        ]);
        let mut r = req(&headers);
        // Off: the client's values pass verbatim, nothing added.
        let out = build(&r).unwrap();
        assert_eq!(
            out,
            "GET /chat?room=1 HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-For: 10.0.0.1\r\nA: 1\r\n\
             x-forwarded-for: 10.0.0.2, 10.0.0.3\r\nX-Forwarded-Host: front.example\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
        r.add_forwarded = true;
        r.forwarded_for = b"192.0.2.7";
        r.forwarded_host = b"www.example.com";
        r.forwarded_server = b"proxy.example.com";
        let out = build(&r).unwrap();
        assert_eq!(
            out,
            "GET /chat?room=1 HTTP/1.1\r\nHost: backend:8080\r\nA: 1\r\n\
             X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n\
             X-Forwarded-Host: front.example, www.example.com\r\n\
             X-Forwarded-Server: proxy.example.com\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
        // An empty value of ours is not appended; no value at all, no field.
        r.forwarded_host = b"";
        r.forwarded_server = b"";
        let out = build(&r).unwrap();
        assert!(out.contains("\r\nX-Forwarded-Host: front.example\r\n"));
        assert!(!out.contains("X-Forwarded-Server"));
    }

    #[test]
    fn forwarded_named_by_connection() {
        // CVE-2022-31813: the client cannot make us drop our X-Forwarded-For,
        // but its own value named by Connection is dropped.
        let headers = hs(&[
            ("Connection", "X-Forwarded-For"),
            ("X-Forwarded-For", "6.6.6.6"),
        ]);
        let mut r = req(&headers);
        r.add_forwarded = true;
        r.forwarded_for = b"192.0.2.7";
        let out = build(&r).unwrap();
        assert!(out.contains("\r\nX-Forwarded-For: 192.0.2.7\r\n"), "{out}");
        assert!(!out.contains("6.6.6.6"));
        r.add_forwarded = false;
        let out = build(&r).unwrap();
        assert!(!out.contains("X-Forwarded-For"));
    }

    #[test]
    fn injection_rejected() {
        let base = hs(&[("A", "1")]);
        type Edit = fn(
            &mut BackendRequest<
                'static,
                core::iter::Copied<core::slice::Iter<'static, Header<'static>>>,
            >,
        );
        let edits: &[(&str, Edit)] = &[
            ("method space", |r| r.method = b"GET /x"),
            ("method empty", |r| r.method = b""),
            ("method crlf", |r| r.method = b"GET\r\n"),
            ("path empty", |r| r.path = b""),
            ("path relative", |r| r.path = b"chat"),
            ("path absolute uri", |r| r.path = b"http://x/"),
            ("path space", |r| r.path = b"/a b"),
            ("path crlf", |r| r.path = b"/a\r\nX-Evil: 1"),
            ("path nul", |r| r.path = b"/a\0"),
            ("path del", |r| r.path = b"/a\x7f"),
            ("path tab", |r| r.path = b"/a\tb"),
            ("host crlf", |r| r.host = b"h\r\nX-Evil: 1"),
            ("host lf", |r| r.host = b"h\nX: 1"),
            ("host nul", |r| r.host = b"h\0"),
            ("protocol crlf", |r| r.protocol = b"websocket\r\nX: 1"),
            ("protocol empty", |r| r.protocol = b""),
            ("protocol blank", |r| r.protocol = b"  "),
            ("forwarded for", |r| {
                r.add_forwarded = true;
                r.forwarded_for = b"1.2.3.4\r\nX: 1";
            }),
            ("forwarded host", |r| {
                r.add_forwarded = true;
                r.forwarded_host = b"a\nb";
            }),
            ("forwarded server", |r| {
                r.add_forwarded = true;
                r.forwarded_server = b"a\x01b";
            }),
        ];
        for (what, edit) in edits {
            let mut r = req(Box::leak(base.clone().into_boxed_slice()));
            edit(&mut r);
            let mut buf = vec![0xAAu8; 4096];
            assert_eq!(
                build_request(&r, &mut buf[..]),
                Err(BuildError::Invalid),
                "{what}"
            );
            assert!(buf.iter().all(|&b| b == 0xAA), "{what}: nothing written");
        }
        // Bad names or values in any client field, even a dropped one.
        let bad: &[(&str, &str)] = &[
            ("X-Evil\r\nHost", "1"),
            ("X Evil", "1"),
            ("X-Evil:", "1"),
            ("", "1"),
            ("X-Evil", "1\r\nX-Injected: 2"),
            ("X-Evil", "1\n"),
            ("X-Evil", "1\r"),
            ("X-Evil", "a\0b"),
            ("X-Evil", "a\x1bb"),
            ("Upgrade", "websocket\r\nX: 1"),
            ("Proxy-X", "\n"),
        ];
        for (n, v) in bad {
            let headers = hs(&[("A", "1"), (n, v)]);
            let r = req(&headers);
            let mut buf = vec![0xAAu8; 4096];
            assert_eq!(
                build_request(&r, &mut buf[..]),
                Err(BuildError::Invalid),
                "{n:?}: {v:?}"
            );
            assert!(buf.iter().all(|&b| b == 0xAA));
        }
        // HTAB and obs-text in values are fine, and copied verbatim.
        let headers = hs(&[("X-Ok", "a\tb")]);
        let mut headers = headers;
        headers.push(Header::new(b"X-Latin", b"caf\xe9"));
        let r = req(&headers);
        let mut buf = vec![0u8; request_size(&r)];
        let n = build_request(&r, &mut buf[..]).unwrap();
        assert!(buf[..n].windows(15).any(|w| w == b"X-Latin: caf\xe9\r\n"));
    }

    #[test]
    fn size_is_an_upper_bound_for_every_prefix_of_headers() {
        let mut headers = firefox();
        headers.extend(hs(&[
            ("X-Forwarded-For", "1.1.1.1"),
            ("Connection", "X-Forwarded-Host"),
            ("X-Forwarded-Host", "h"),
        ]));
        for n in 0..=headers.len() {
            for add in [false, true] {
                let mut r = req(&headers[..n]);
                r.add_forwarded = add;
                r.forwarded_for = b"192.0.2.1";
                r.forwarded_host = b"www";
                r.forwarded_server = b"srv";
                let size = request_size(&r);
                let mut buf = vec![0u8; size];
                assert_eq!(build_request(&r, &mut buf[..]), Ok(size));
                assert_eq!(build_request(&r, &mut [0u8; 0][..]), Err(BuildError::Space));
            }
        }
    }
}
