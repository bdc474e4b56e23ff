//! The backend's response head: parsed with httparse, interim 1xx skipped,
//! a 101 verified against what the client asked for, and the body framing
//! of any other final status (RFC 7230 3.3.3).

use core::ffi::CStr;

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use super::tokens::{
    comma_tokens, count_named, first_named, is_websocket_token, list_tokens, parse_decimal,
    protocol_name, trim_ows,
};
use super::Header;

/// The most header fields a response head may have (WST_MAX_RESPONSE_HEADERS).
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// The RFC 6455 GUID appended to the key.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether the response header field `name` is hop-by-hop, i.e. not relayed
/// to the client when the response is: the fields RFC 9110 §7.6.1 names
/// (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade), the
/// Proxy-Connection and Proxy-Authenticate fields, "Trailers" (httpd's
/// list), and every field that a token of any of the response's own
/// Connection fields names.
pub fn response_hop_by_hop<'a, I>(headers: I, name: &[u8]) -> bool
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    const HOP: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authenticate",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || list_tokens(headers, b"connection").any(|t| t.eq_ignore_ascii_case(name))
}

/// `base64(sha1(key + GUID))`: the Sec-WebSocket-Accept answering `key`.
pub fn websocket_accept(key: &[u8]) -> [u8; 28] {
    let mut h = Sha1::new();
    h.update(key);
    h.update(WEBSOCKET_GUID);
    let digest = h.finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 characters.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut out);
    out
}

/// What the client's request check chose (the parts of `wst_request_check`
/// a response is checked against).
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect<'a> {
    /// The Upgrade value sent to the backend (a token or a comma list).
    pub protocol: &'a [u8],
    /// A 101 switching to WebSocket must answer `key`.
    pub is_websocket: bool,
    pub key: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseKind {
    /// A 101 that answers the client: tunnel.
    Tunnel,
    /// A 101 that does not answer it: 502.
    BadUpgrade,
    /// Any other final status: relay as HTTP.
    Other,
    /// Not a valid HTTP/1.x response head: 502.
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMode {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// A complete response head.
#[derive(Debug)]
pub struct ParsedResponse<'b, 'h> {
    pub kind: ResponseKind,
    /// 0 when the head could not be parsed.
    pub status: u16,
    pub minor_version: u8,
    /// Bytes of the head, including skipped interim responses: the body or
    /// tunnel data start at `buf[header_len..]`. 0 when kind is Invalid
    /// because the head could not be parsed.
    pub header_len: usize,
    pub reason: &'b [u8],
    /// The final response's fields (empty when the head could not be parsed).
    pub headers: &'h [httparse::Header<'b>],
    /// Meaningful for `Other`; `None` for the other kinds.
    pub body: BodyMode,
    /// Why the head got its kind (text for the log: [`Why::text`]).
    pub why: Why,
}

/// Why a response head is judged as it is: one value per verdict or
/// rejection, its text for the log in one place ([`Why::text`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Tunnel,
    Other,
    Malformed,
    TooManyHeaders,
    BadStatus,
    BadLength,
    NotAsked,
    NoUpgrade,
    WrongUpgrade,
    NoConnection,
    NoAccept,
    RepeatedAccept,
    WrongAccept,
}

impl Why {
    /// The static, NUL-terminated text the shim logs.
    pub const fn text(self) -> &'static CStr {
        match self {
            Why::Tunnel => c"101 Switching Protocols answers the request",
            Why::Other => c"final response other than 101",
            Why::Malformed => c"malformed response head",
            Why::TooManyHeaders => c"too many response header fields",
            Why::BadStatus => c"invalid status code",
            Why::BadLength => c"invalid or conflicting Content-Length",
            Why::NotAsked => c"101 to a request that asked for no upgrade",
            Why::NoUpgrade => c"101 without an Upgrade header",
            Why::WrongUpgrade => c"101 with an Upgrade protocol the client did not ask for",
            Why::NoConnection => c"101 without Connection: upgrade",
            Why::NoAccept => c"101 without a Sec-WebSocket-Accept",
            Why::RepeatedAccept => c"101 with repeated Sec-WebSocket-Accept",
            Why::WrongAccept => c"101 without a matching Sec-WebSocket-Accept",
        }
    }
}

fn as_headers<'s, 'b>(
    hs: &'s [httparse::Header<'b>],
) -> impl Iterator<Item = Header<'b>> + Clone + 's {
    hs.iter().map(|h| Header {
        name: h.name.as_bytes(),
        value: h.value,
    })
}

fn invalid<'b, 'h>(why: Why) -> ParsedResponse<'b, 'h> {
    ParsedResponse {
        kind: ResponseKind::Invalid,
        status: 0,
        minor_version: 0,
        header_len: 0,
        reason: &[],
        headers: &[],
        body: BodyMode::None,
        why,
    }
}

/// Check a 101 against what the client asked for.
fn check_101(expect: &Expect<'_>, hs: &[httparse::Header<'_>]) -> Result<(), Why> {
    if comma_tokens(expect.protocol).next().is_none() {
        return Err(Why::NotAsked);
    }
    let mut upgrade = list_tokens(as_headers(hs), b"upgrade");
    if upgrade.clone().next().is_none() {
        return Err(Why::NoUpgrade);
    }
    let chosen = upgrade.find(|t| {
        let name = protocol_name(t);
        comma_tokens(expect.protocol).any(|p| protocol_name(p).eq_ignore_ascii_case(name))
    });
    let Some(chosen) = chosen else {
        return Err(Why::WrongUpgrade);
    };
    if !is_websocket_token(chosen) {
        return Ok(());
    }
    // RFC 6455 4.1: the client fails the connection without these.
    if !list_tokens(as_headers(hs), b"connection").any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
        return Err(Why::NoConnection);
    }
    if expect.is_websocket {
        match count_named(as_headers(hs), b"sec-websocket-accept") {
            0 => return Err(Why::NoAccept),
            1 => {}
            _ => return Err(Why::RepeatedAccept),
        }
        let got = first_named(as_headers(hs), b"sec-websocket-accept")
            .map_or(&[][..], |h| trim_ows(h.value));
        if got != websocket_accept(expect.key) {
            return Err(Why::WrongAccept);
        }
    }
    Ok(())
}

/// RFC 7230 3.3.3 body length of a final, non-101 response.
fn body_mode(
    status: u16,
    head_request: bool,
    hs: &[httparse::Header<'_>],
) -> Result<BodyMode, Why> {
    if head_request || status < 200 || status == 204 || status == 304 {
        return Ok(BodyMode::None);
    }
    if count_named(as_headers(hs), b"transfer-encoding") > 0 {
        let last = list_tokens(as_headers(hs), b"transfer-encoding").last();
        // A transfer-coding may carry parameters: compare its name.
        let last_name = last.map(|t| trim_ows(t.split(|&b| b == b';').next().unwrap_or(&[])));
        return Ok(
            if last_name.is_some_and(|n| n.eq_ignore_ascii_case(b"chunked")) {
                BodyMode::Chunked
            } else {
                BodyMode::Close
            },
        );
    }
    let mut length: Option<u64> = None;
    for h in hs
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        // "Content-Length: 42, 42" is a list of identical values; an empty
        // element is as bad as a non-numeric one.
        for element in h.value.split(|&b| b == b',') {
            let n = parse_decimal(trim_ows(element)).ok_or(Why::BadLength)?;
            match length {
                Some(l) if l != n => return Err(Why::BadLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(match length {
        Some(0) => BodyMode::None,
        Some(n) => BodyMode::Length(n),
        None => BodyMode::Close,
    })
}

/// Parse the backend's response head in `buf`.
///
/// `None` while the head is incomplete (read more and call again with the
/// whole buffer). Interim 1xx responses other than 101 are skipped.
/// `headers` is the storage for the final response's fields (give it
/// [`MAX_RESPONSE_HEADERS`] entries); more fields than it holds make the
/// response `Invalid`.
pub fn parse_response<'b, 'h>(
    buf: &'b [u8],
    expect: &Expect<'_>,
    head_request: bool,
    headers: &'h mut [httparse::Header<'b>],
) -> Option<ParsedResponse<'b, 'h>> {
    // Skip interim responses. Only offsets leave this loop: the final head
    // is parsed again below into the caller's storage.
    let mut start = 0usize;
    loop {
        let rest = buf.get(start..)?;
        let mut resp = httparse::Response::new(&mut headers[..]);
        match resp.parse(rest) {
            Ok(httparse::Status::Partial) => return None,
            Ok(httparse::Status::Complete(n)) => {
                let code = resp.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    start = start.checked_add(n)?;
                    continue;
                }
                break;
            }
            Err(httparse::Error::TooManyHeaders) => return Some(invalid(Why::TooManyHeaders)),
            Err(_) => return Some(invalid(Why::Malformed)),
        }
    }
    let rest = buf.get(start..)?;
    let mut resp = httparse::Response::new(headers);
    let n = match resp.parse(rest) {
        Ok(httparse::Status::Complete(n)) => n,
        // Cannot happen: the same bytes parsed above.
        _ => return Some(invalid(Why::Malformed)),
    };
    let status = resp.code.unwrap_or(0);
    let hs: &'h [httparse::Header<'b>] = resp.headers;
    let mut out = ParsedResponse {
        kind: ResponseKind::Other,
        status,
        minor_version: resp.version.unwrap_or(0),
        header_len: start.checked_add(n)?,
        reason: resp.reason.map_or(&[][..], str::as_bytes),
        headers: hs,
        body: BodyMode::None,
        why: Why::Other,
    };
    if !(100..=999).contains(&status) {
        out.kind = ResponseKind::Invalid;
        out.why = Why::BadStatus;
        return Some(out);
    }
    if status == 101 {
        match check_101(expect, hs) {
            Ok(()) => {
                out.kind = ResponseKind::Tunnel;
                out.why = Why::Tunnel;
            }
            Err(why) => {
                out.kind = ResponseKind::BadUpgrade;
                out.why = why;
            }
        }
        return Some(out);
    }
    match body_mode(status, head_request, hs) {
        Ok(mode) => out.body = mode,
        Err(why) => {
            out.kind = ResponseKind::Invalid;
            out.why = why;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn ws() -> Expect<'static> {
        Expect {
            protocol: b"websocket",
            is_websocket: true,
            key: KEY,
        }
    }

    /// Parse and return (kind, status, header_len, body, why), None if partial.
    fn parse(
        buf: &[u8],
        expect: &Expect<'_>,
        head: bool,
    ) -> Option<(ResponseKind, u16, usize, BodyMode, Why)> {
        let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        parse_response(buf, expect, head, &mut hs)
            .map(|r| (r.kind, r.status, r.header_len, r.body, r.why))
    }

    const GOOD_101: &str = "HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    #[test]
    fn rfc6455_sample_key() {
        assert_eq!(&websocket_accept(KEY), ACCEPT.as_bytes());
    }

    #[test]
    fn good_101_and_trailing_bytes() {
        let mut buf = GOOD_101.as_bytes().to_vec();
        buf.extend_from_slice(b"\x81\x05hello");
        let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let r = parse_response(&buf, &ws(), false, &mut hs).unwrap();
        assert_eq!(r.kind, ResponseKind::Tunnel, "{:?}", r.why);
        assert_eq!(r.status, 101);
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.header_len, GOOD_101.len());
        assert_eq!(&buf[r.header_len..], b"\x81\x05hello");
        assert_eq!(r.reason, b"Switching Protocols");
        assert_eq!(r.headers.len(), 3);
        assert_eq!(r.headers[2].name, "Sec-WebSocket-Accept");
        assert_eq!(r.body, BodyMode::None);
        // Pointers into buf.
        let range = buf.as_ptr_range();
        assert!(range.contains(&r.reason.as_ptr()));
        assert!(r
            .headers
            .iter()
            .all(|h| range.contains(&h.name.as_ptr()) && range.contains(&h.value.as_ptr())));
    }

    #[test]
    fn partial_at_every_offset() {
        let full = format!("HTTP/1.1 100 Continue\r\nX: y\r\n\r\n{GOOD_101}");
        let full = full.as_bytes();
        for cut in 0..full.len() {
            assert!(parse(&full[..cut], &ws(), false).is_none(), "cut at {cut}");
        }
        let r = parse(full, &ws(), false).unwrap();
        assert_eq!((r.0, r.1, r.2), (ResponseKind::Tunnel, 101, full.len()));
        let other = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
        let head_len = other.len() - 3;
        for cut in 0..head_len {
            assert!(parse(&other[..cut], &ws(), false).is_none(), "cut at {cut}");
        }
        for cut in head_len..=other.len() {
            let r = parse(&other[..cut], &ws(), false).unwrap();
            assert_eq!(
                (r.0, r.1, r.2, r.3),
                (ResponseKind::Other, 404, head_len, BodyMode::Length(3))
            );
        }
    }

    #[test]
    fn interim_responses_skipped() {
        let interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n\
            HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
        let buf = format!("{interim}{GOOD_101}tail");
        let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let r = parse_response(buf.as_bytes(), &ws(), false, &mut hs).unwrap();
        assert_eq!(r.kind, ResponseKind::Tunnel);
        assert_eq!(r.header_len, buf.len() - 4);
        assert_eq!(r.headers.len(), 3);
        // Interim alone: partial.
        assert!(parse(interim.as_bytes(), &ws(), false).is_none());
        let buf = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
            .to_string();
        let r = parse(buf.as_bytes(), &ws(), false).unwrap();
        assert_eq!(
            (r.0, r.1, r.2, r.3),
            (ResponseKind::Other, 500, buf.len(), BodyMode::None)
        );
    }

    #[test]
    fn bad_101s() {
        let cases: &[(&str, Why)] = &[
            ("HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", Why::NoUpgrade),
            ("HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", Why::WrongUpgrade),
            ("HTTP/1.1 101 OK\r\nUpgrade: websockets\r\nConnection: Upgrade\r\n\r\n", Why::WrongUpgrade),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", Why::NoConnection),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", Why::NoConnection),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", Why::NoAccept),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", Why::RepeatedAccept),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: S3PPLMBITXAQ9KYGZZHZRBK+XOO=\r\n\r\n", Why::WrongAccept),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", Why::WrongAccept),
            ("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \r\n\r\n", Why::WrongAccept),
        ];
        for (resp, why) in cases {
            let r = parse(resp.as_bytes(), &ws(), false).unwrap();
            assert_eq!(
                (r.0, r.1, r.2, r.4),
                (ResponseKind::BadUpgrade, 101, resp.len(), *why),
                "{resp}"
            );
        }
        // A 101 to a check that chose nothing.
        let none = Expect::default();
        let r = parse(GOOD_101.as_bytes(), &none, false).unwrap();
        assert_eq!((r.0, r.4), (ResponseKind::BadUpgrade, Why::NotAsked));
    }

    #[test]
    fn lenient_but_correct_101s() {
        let cases: &[&str] = &[
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\nsec-websocket-accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n",
            "HTTP/1.1 101\r\nUpgrade: websocket/13\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            "HTTP/1.1 101 OK\r\nConnection: x\r\nConnection: Upgrade\r\nUpgrade: foo, websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            "HTTP/1.1 101 OK\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n",
        ];
        for resp in cases {
            let r = parse(resp.as_bytes(), &ws(), false).unwrap();
            assert_eq!(
                (r.0, r.2),
                (ResponseKind::Tunnel, resp.len()),
                "{resp}: {:?}",
                r.4
            );
        }
        // Without a key to answer (upgrade=NONE without a valid client
        // handshake), no Accept is required; Connection still is.
        let e = Expect {
            protocol: b"websocket",
            is_websocket: false,
            key: b"",
        };
        let r = parse(
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            &e,
            false,
        )
        .unwrap();
        assert_eq!(r.0, ResponseKind::Tunnel);
        // Other protocols need Upgrade only.
        let e = Expect {
            protocol: b"foo/1, bar",
            is_websocket: false,
            key: b"",
        };
        for (resp, kind) in [
            (
                &b"HTTP/1.1 101 OK\r\nUpgrade: BAR\r\n\r\n"[..],
                ResponseKind::Tunnel,
            ),
            (
                b"HTTP/1.1 101 OK\r\nUpgrade: foo/2\r\n\r\n",
                ResponseKind::Tunnel,
            ),
            (
                b"HTTP/1.1 101 OK\r\nUpgrade: baz\r\n\r\n",
                ResponseKind::BadUpgrade,
            ),
            (b"HTTP/1.1 101 OK\r\n\r\n", ResponseKind::BadUpgrade),
        ] {
            assert_eq!(
                parse(resp, &e, false).unwrap().0,
                kind,
                "{}",
                String::from_utf8_lossy(resp)
            );
        }
        // is_websocket with a non-websocket choice (ANY with "h2c, websocket"):
        // the backend picked h2c, no Accept needed.
        let e = Expect {
            protocol: b"h2c, websocket",
            is_websocket: true,
            key: KEY,
        };
        assert_eq!(
            parse(b"HTTP/1.1 101 OK\r\nUpgrade: h2c\r\n\r\n", &e, false)
                .unwrap()
                .0,
            ResponseKind::Tunnel
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                &e,
                false
            )
            .unwrap()
            .4,
            Why::NoAccept
        );
    }

    #[test]
    fn body_modes() {
        use BodyMode::*;
        let cases: &[(&str, bool, ResponseKind, BodyMode)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                false,
                ResponseKind::Other,
                Length(10),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                true,
                ResponseKind::Other,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                ResponseKind::Other,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10, 10\r\ncontent-length: 010\r\n\r\n",
                false,
                ResponseKind::Other,
                Length(10),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n",
                false,
                ResponseKind::Other,
                Length(u64::MAX),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10, 11\r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10,\r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
                false,
                ResponseKind::Invalid,
                None,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                ResponseKind::Other,
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                false,
                ResponseKind::Other,
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                ResponseKind::Other,
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false,
                ResponseKind::Other,
                Close,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                ResponseKind::Other,
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
                false,
                ResponseKind::Other,
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
                false,
                ResponseKind::Other,
                Close,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true,
                ResponseKind::Other,
                None,
            ),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
                ResponseKind::Other,
                None,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                ResponseKind::Other,
                None,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, ResponseKind::Other, Close),
            (
                "HTTP/1.0 400 Bad Request\r\nServer: x\r\n\r\n",
                false,
                ResponseKind::Other,
                Close,
            ),
            (
                "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\n",
                false,
                ResponseKind::Other,
                Length(2),
            ),
        ];
        for (resp, head, kind, mode) in cases {
            let r = parse(resp.as_bytes(), &ws(), *head).unwrap();
            assert_eq!(
                (r.0, r.2, r.3),
                (*kind, resp.len(), *mode),
                "{resp} head={head}"
            );
            if *kind == ResponseKind::Invalid {
                assert_eq!(r.4, Why::BadLength);
            }
        }
    }

    #[test]
    fn garbage_and_limits() {
        let cases: &[(&[u8], Why)] = &[
            (b"SSH-2.0-OpenSSH_9.6\r\n", Why::Malformed),
            (b"HTTP/2 200\r\n\r\n", Why::Malformed),
            (b"HTTP/1.1 20 OK\r\n\r\n", Why::Malformed),
            (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", Why::Malformed),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n  folded\r\n\r\n",
                Why::Malformed,
            ),
            (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", Why::Malformed),
            (b"HTTP/1.1 099 Low\r\n\r\n", Why::BadStatus),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX:\x00\r\n\r\n",
                Why::Malformed,
            ),
        ];
        for (resp, why) in cases {
            let r = parse(resp, &ws(), false).unwrap();
            assert_eq!(
                (r.0, r.4),
                (ResponseKind::Invalid, *why),
                "{}",
                String::from_utf8_lossy(resp)
            );
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..MAX_RESPONSE_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut exactly = many.clone();
        exactly.extend_from_slice(b"\r\n");
        let r = parse(&exactly, &ws(), false).unwrap();
        assert_eq!((r.0, r.3), (ResponseKind::Other, BodyMode::Close));
        many.extend_from_slice(b"X-last: v\r\n\r\n");
        let r = parse(&many, &ws(), false).unwrap();
        assert_eq!((r.0, r.4), (ResponseKind::Invalid, Why::TooManyHeaders));
        // Too many in an interim response too.
        let mut interim = b"HTTP/1.1 103 Early Hints\r\n".to_vec();
        for i in 0..=MAX_RESPONSE_HEADERS {
            interim.extend_from_slice(format!("Link: <{i}>\r\n").as_bytes());
        }
        interim.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&interim, &ws(), false).unwrap().4,
            Why::TooManyHeaders
        );
    }

    #[test]
    fn hop_by_hop_response_fields() {
        let hs = [
            Header::new(b"Connection", b"close, X-Secret"),
            Header::new(b"connection", b" x-other ,"),
            Header::new(b"X-Secret", b"1"),
            Header::new(b"X-Kept", b"2"),
        ];
        let hop = |n: &[u8]| response_hop_by_hop(hs.iter().copied(), n);
        for n in [
            &b"Connection"[..],
            b"KEEP-ALIVE",
            b"te",
            b"Trailer",
            b"Trailers",
            b"Transfer-Encoding",
            b"upgrade",
            b"Proxy-Connection",
            b"proxy-authenticate",
            b"x-secret",
            b"X-Other",
        ] {
            assert!(hop(n), "{}", String::from_utf8_lossy(n));
        }
        for n in [&b"X-Kept"[..], b"Content-Type", b"Set-Cookie", b"Proxy-Authorization-X"] {
            assert!(!hop(n), "{}", String::from_utf8_lossy(n));
        }
        assert!(!response_hop_by_hop([].into_iter(), b"X-Secret"));
    }

}
