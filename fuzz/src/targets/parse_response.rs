//! The backend's response head (`parse_response`): interim 1xx skipped, a
//! 101 verified against what the client asked for, the body framing of
//! anything else.
//!
//! Invariants: no panic; `header_len` within the buffer; a `Tunnel` is a
//! 101 whose Upgrade names the protocol asked for and, for WebSocket, whose
//! single Sec-WebSocket-Accept answers the key; the verdict on a complete
//! head does not depend on the bytes after it (the first tunnel bytes), and
//! every strict prefix of a complete, valid head is "incomplete".

use wstunnel_core::handshake::{
    parse_response, websocket_accept, BodyMode, Expect, ParsedResponse, ResponseKind,
    MAX_RESPONSE_HEADERS,
};

use crate::{named, trim, Input, KEY};

const PROTOCOLS: &[&[u8]] = &[
    b"websocket",
    b"WebSocket",
    b"h2c",
    b"h2c, websocket",
    b"foo/2",
    b"",
];
const KEYS: &[&[u8]] = &[KEY, b"AAAAAAAAAAAAAAAAAAAAAA==", b""];

#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    kind: ResponseKind,
    status: u16,
    header_len: usize,
    body: BodyMode,
    why: &'static std::ffi::CStr,
}

fn verdict(r: &ParsedResponse<'_, '_>) -> Verdict {
    Verdict {
        kind: r.kind,
        status: r.status,
        header_len: r.header_len,
        body: r.body,
        why: r.why.text(),
    }
}

fn parse(buf: &[u8], expect: &Expect<'_>, head: bool) -> Option<Verdict> {
    let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    parse_response(buf, expect, head, &mut hs).map(|r| verdict(&r))
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let protocol = PROTOCOLS[inp.below(PROTOCOLS.len())];
    let key = KEYS[inp.below(KEYS.len())];
    let is_websocket = inp.bool();
    let head = inp.u8() % 8 == 0;
    let splice_accept = inp.bool();
    let cut_seed = inp.u32() as usize;
    let raw = inp.rest();
    // Make valid 101s reachable: replace the sample accept value with the
    // one answering this key.
    let mut buf = raw.to_vec();
    if splice_accept {
        let good = websocket_accept(key);
        if let Some(pos) = buf.windows(4).position(|w| w == b"@ACC") {
            buf.splice(pos..pos + 4, good.iter().copied());
        }
    }
    let expect = Expect {
        protocol,
        is_websocket,
        key,
    };

    let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let Some(r) = parse_response(&buf, &expect, head, &mut hs) else {
        return;
    };
    assert!(r.header_len <= buf.len());
    assert!(!r.why.text().to_bytes().is_empty());
    assert!(r.headers.len() <= MAX_RESPONSE_HEADERS);
    if r.kind != ResponseKind::Other {
        assert_eq!(r.body, BodyMode::None);
    }
    if r.kind == ResponseKind::Invalid && r.header_len == 0 {
        return;
    }
    assert!(r.header_len >= 4 && buf[..r.header_len].ends_with(b"\n"));
    if r.kind == ResponseKind::Tunnel {
        assert_eq!(r.status, 101);
        let upgrades: Vec<&[u8]> = r
            .headers
            .iter()
            .filter(|h| named(h.name.as_bytes(), "upgrade"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(trim)
            .filter(|t| !t.is_empty())
            .collect();
        assert!(!upgrades.is_empty());
        let name = |t: &[u8]| -> Vec<u8> {
            let t = match t.iter().position(|&b| b == b'/') {
                Some(i) => trim(&t[..i]),
                None => t,
            };
            t.to_ascii_lowercase()
        };
        let asked: Vec<Vec<u8>> = protocol
            .split(|&b| b == b',')
            .map(trim)
            .filter(|t| !t.is_empty())
            .map(name)
            .collect();
        let chosen = upgrades
            .iter()
            .find(|u| asked.contains(&name(u)))
            .expect("a tunnel to a protocol nobody asked for");
        if name(chosen) == b"websocket" {
            let conn_upgrade = r
                .headers
                .iter()
                .filter(|h| named(h.name.as_bytes(), "connection"))
                .flat_map(|h| h.value.split(|&b| b == b','))
                .any(|t| named(trim(t), "upgrade"));
            assert!(conn_upgrade, "WebSocket 101 without Connection: upgrade");
            if is_websocket {
                let accepts: Vec<&[u8]> = r
                    .headers
                    .iter()
                    .filter(|h| named(h.name.as_bytes(), "sec-websocket-accept"))
                    .map(|h| trim(h.value))
                    .collect();
                assert_eq!(
                    accepts,
                    vec![&websocket_accept(key)[..]],
                    "accept not verified"
                );
            }
        }
    }
    let whole = verdict(&r);
    let header_len = r.header_len;
    drop(r);
    // The head alone gives the same verdict: the bytes after it (tunnel
    // data, body) play no part.
    assert_eq!(
        parse(&buf[..header_len], &expect, head).as_ref(),
        Some(&whole)
    );
    // Strict prefixes of a head that parsed are incomplete.
    if whole.kind != ResponseKind::Invalid {
        let mut cuts = vec![0, header_len - 1, header_len / 2];
        for i in 0..4 {
            cuts.push((cut_seed >> (8 * i)) % header_len);
        }
        for cut in cuts {
            assert_eq!(
                parse(&buf[..cut], &expect, head),
                None,
                "prefix of {cut} bytes is complete"
            );
        }
    }
}
