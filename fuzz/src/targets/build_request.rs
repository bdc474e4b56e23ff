//! The bytes sent to the backend (`request_size` / `build_request`) for any
//! request fields: whatever is accepted is exactly one well-formed request
//! head (no header injection, no smuggled body framing, no hop-by-hop or
//! Proxy-* field, exactly one Host/Upgrade/Connection), its size is what
//! `request_size` said, a buffer one byte short is refused, and the
//! uninitialised-buffer path writes the same bytes.

use std::mem::MaybeUninit;

use wstunnel_core::handshake::{build_request, request_size, BackendRequest, BuildError, Header};

use crate::{named, trim, Headers, Input, METHODS};

const PATHS: &[&[u8]] = &[
    b"/",
    b"/ws/echo",
    b"/a?b=c&d",
    b"/%0d%0a",
    b"/x y",
    b"/\r\nX: y",
    b"",
];
const HOSTS: &[&[u8]] = &[b"127.0.0.1:8080", b"[::1]:80", b"h", b"", b"h\r\nX: y"];
const PROTOCOLS: &[&[u8]] = &[
    b"websocket",
    b"WebSocket",
    b"h2c, websocket",
    b" ",
    b"",
    b"a\nb",
];
const FWD: &[&[u8]] = &[b"127.0.0.1", b"", b"x, y", b"a\rb"];

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_value(s: &[u8]) -> bool {
    s.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let method = inp.pick_or_raw(METHODS, 8);
    let path = inp.pick_or_raw(PATHS, 32);
    let host = inp.pick_or_raw(HOSTS, 24);
    let protocol = inp.pick_or_raw(PROTOCOLS, 16);
    let add_forwarded = inp.bool();
    let ff = inp.pick_or_raw(FWD, 16);
    let fh = inp.pick_or_raw(FWD, 16);
    let fs = inp.pick_or_raw(FWD, 16);
    let headers = Headers::generate(&mut inp, 32);
    let hs = headers.views();
    let req = BackendRequest {
        method: &method,
        path: &path,
        host: &host,
        headers: hs.iter().copied(),
        protocol: &protocol,
        add_forwarded,
        forwarded_for: &ff,
        forwarded_host: &fh,
        forwarded_server: &fs,
    };

    let valid = is_token(&method)
        && path.first() == Some(&b'/')
        && path.iter().all(|&b| b > 0x20 && b != 0x7f)
        && is_value(&host)
        && !trim(&protocol).is_empty()
        && is_value(&protocol)
        && hs.iter().all(|h| is_token(h.name) && is_value(h.value))
        && (!add_forwarded || (is_value(&ff) && is_value(&fh) && is_value(&fs)));

    let size = request_size(&req);
    let mut buf = vec![0u8; size];
    let result = build_request(&req, &mut buf[..]);
    if !valid {
        assert_eq!(result, Err(BuildError::Invalid));
        return;
    }
    let n = result.expect("a valid request is built into a buffer of request_size bytes");
    assert_eq!(n, size);
    if size > 0 {
        let mut short = vec![0u8; size - 1];
        assert_eq!(build_request(&req, &mut short[..]), Err(BuildError::Space));
    }
    let mut uninit = vec![MaybeUninit::<u8>::uninit(); size + 7];
    assert_eq!(build_request(&req, &mut uninit[..]), Ok(n));
    // SAFETY: build_request wrote the first n bytes.
    let written: Vec<u8> = uninit[..n]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    assert_eq!(written, buf);

    check_wire(
        &buf,
        &req.method,
        &path,
        &host,
        &protocol,
        &hs,
        add_forwarded,
        &ff,
    );
}

#[allow(clippy::too_many_arguments)]
fn check_wire(
    buf: &[u8],
    method: &[u8],
    path: &[u8],
    host: &[u8],
    protocol: &[u8],
    client: &[Header<'_>],
    add_forwarded: bool,
    ff: &[u8],
) {
    // Exactly one head, ending where the buffer ends.
    assert!(buf.ends_with(b"\r\n\r\n"));
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    assert_eq!(
        head_end + 4,
        buf.len(),
        "a second head or a body inside the request"
    );
    // No bare CR or LF anywhere (no line injection, no obs-fold).
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(buf.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if b == b'\n' {
            assert!(i > 0 && buf[i - 1] == b'\r', "bare LF at {i}");
        }
        assert!(b != 0 && b != 0x7f, "control byte {b:#x} at {i}");
    }
    let mut lines = buf[..head_end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().expect("request line");
    let mut want = method.to_vec();
    want.push(b' ');
    want.extend_from_slice(path);
    want.extend_from_slice(b" HTTP/1.1");
    assert_eq!(first, &want[..]);
    let fields: Vec<(&[u8], &[u8])> = lines
        .map(|l| {
            assert!(
                !l.is_empty() && l[0] != b' ' && l[0] != b'\t',
                "continuation line"
            );
            let colon = l
                .iter()
                .position(|&b| b == b':')
                .expect("field line with a colon");
            (
                &l[..colon],
                l[colon + 1..].strip_prefix(b" ").unwrap_or(&l[colon + 1..]),
            )
        })
        .collect();
    let count = |n: &str| fields.iter().filter(|(k, _)| named(k, n)).count();
    assert_eq!(count("host"), 1);
    assert_eq!(fields[0], (&b"Host"[..], host));
    assert_eq!(count("upgrade"), 1);
    assert_eq!(count("connection"), 1);
    for hop in ["transfer-encoding", "keep-alive", "te", "trailer"] {
        assert_eq!(count(hop), 0, "{hop} forwarded");
    }
    assert!(!fields
        .iter()
        .any(|(k, _)| k.len() >= 6 && k[..6].eq_ignore_ascii_case(b"proxy-")));
    let last = fields.len() - 1;
    assert_eq!(fields[last], (&b"Connection"[..], &b"Upgrade"[..]));
    assert_eq!(fields[last - 1], (&b"Upgrade"[..], protocol));
    // Fields the client's Connection header named are not forwarded as the
    // client's (ours may still be added for X-Forwarded-*).
    let named_by_conn: Vec<&[u8]> = client
        .iter()
        .filter(|h| named(h.name, "connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty())
        .collect();
    for (k, v) in &fields[1..last - 1] {
        let from_client = client.iter().any(|h| h.name == *k && h.value == *v);
        let is_fwd = k.len() > 12 && k[..12].eq_ignore_ascii_case(b"x-forwarded-");
        if !(add_forwarded && is_fwd) {
            assert!(
                from_client,
                "field {:?} not from the client",
                String::from_utf8_lossy(k)
            );
            assert!(!named_by_conn.iter().any(|t| t.eq_ignore_ascii_case(k)));
        }
    }
    if add_forwarded {
        assert!(count("x-forwarded-for") <= 1);
        if !ff.is_empty() {
            let xff = fields
                .iter()
                .find(|(k, _)| named(k, "x-forwarded-for"))
                .map(|f| f.1);
            assert!(
                xff.is_some_and(|v| v.ends_with(ff)),
                "our X-Forwarded-For is not last"
            );
        }
    }
    // And httparse agrees it is one complete request.
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Request::new(&mut storage);
    match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, buf.len()),
        // httparse refuses some bytes RFC 7230 allows (obs-text in the path).
        Err(_) => {}
        Ok(httparse::Status::Partial) => panic!("httparse: partial"),
    }
}
