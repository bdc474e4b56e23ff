//! The handshake: the client request check, the bytes of the backend
//! request, the backend response head parse and verification, and the
//! chunked decoder for non-101 bodies.
//!
//! Everything here is safe, allocation-free Rust over byte slices; the C
//! exports in [`crate::ffi::handshake`] are thin wrappers over:
//!
//! * [`check_request`]: what to do with a client request (tunnel, decline,
//!   426, 400), which Upgrade protocol to ask the backend for;
//! * [`request_size`] / [`build_request`]: the HTTP/1.1 request to send to
//!   the backend, hop-by-hop headers dropped, written into a caller buffer;
//! * [`parse_response`]: the backend's response head (interim 1xx skipped),
//!   a 101 verified against the request (Upgrade, Connection,
//!   Sec-WebSocket-Accept), or the body framing of any other status;
//! * [`ChunkedDecoder`]: an in-place, resumable chunked decoder.

mod chunked;
mod request;
pub(crate) mod response;
mod tokens;

pub use chunked::{ChunkedDecoder, ChunkedError, Decoded, MAX_LINE};
pub use request::{
    build_request, check_request, request_size, BackendRequest, BuildError, OutBuf, RequestCheck,
    Verdict,
};
pub use response::{
    parse_response, response_hop_by_hop, websocket_accept, BodyMode, Expect, ParsedResponse, ResponseKind,
    MAX_RESPONSE_HEADERS,
};

/// One header field, name and value as given (not NUL-terminated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Header<'a> {
    pub const fn new(name: &'a [u8], value: &'a [u8]) -> Self {
        Header { name, value }
    }
}

/// Randomised robustness tests across the module: mutated inputs never
/// panic, and whatever build_request accepts parses back as exactly one
/// request head (no injection).
#[cfg(test)]
mod robustness_tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }
        fn byte(&mut self) -> u8 {
            // Bias towards the interesting bytes.
            const SPECIAL: &[u8] = b"\r\n\0\t :;,/=\"\x7f\x80\xffaZ09";
            if self.next() % 2 == 0 {
                SPECIAL[self.next() % SPECIAL.len()]
            } else {
                self.next() as u8
            }
        }
        fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
            let mut v = input.to_vec();
            for _ in 0..1 + self.next() % 4 {
                let pos = if v.is_empty() {
                    0
                } else {
                    self.next() % v.len()
                };
                match self.next() % 3 {
                    0 if !v.is_empty() => v[pos] = self.byte(),
                    1 => v.insert(pos, self.byte()),
                    _ if !v.is_empty() => {
                        v.remove(pos);
                    }
                    _ => {}
                }
            }
            v
        }
    }

    #[test]
    fn mutated_responses() {
        let seeds: &[&[u8]] = &[
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nxx",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\nContent-Length: 10, 10\r\n\r\n",
        ];
        let expect = Expect {
            protocol: b"websocket",
            is_websocket: true,
            key: b"dGhlIHNhbXBsZSBub25jZQ==",
        };
        let mut rng = Lcg(7);
        for i in 0..20_000 {
            let input = rng.mutate(seeds[i % seeds.len()]);
            let mut hs = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            if let Some(r) = parse_response(&input, &expect, i % 5 == 0, &mut hs) {
                assert!(r.header_len <= input.len());
                if r.kind == ResponseKind::Tunnel {
                    assert_eq!(r.status, 101);
                }
            }
        }
    }

    #[test]
    fn mutated_chunked() {
        let seed: &[u8] = b"4;a=b\r\nWiki\r\n5\r\npedia\r\n0\r\nX: y\r\n\r\ntail";
        let mut rng = Lcg(11);
        for _ in 0..20_000 {
            let input = rng.mutate(seed);
            let cut = rng.next() % (input.len() + 1);
            let mut d = ChunkedDecoder::default();
            let mut total = 0;
            for piece in [&input[..cut], &input[cut..]] {
                let mut buf = piece.to_vec();
                match d.decode(&mut buf) {
                    Ok(r) => {
                        assert!(r.data_len <= r.consumed && r.consumed <= buf.len());
                        total += r.data_len;
                        if r.done {
                            break;
                        }
                    }
                    Err(e) => {
                        assert_eq!(e, ChunkedError::Invalid);
                        break;
                    }
                }
            }
            assert!(total <= input.len());
        }
    }

    #[test]
    fn built_requests_parse_back() {
        let mut rng = Lcg(3);
        let names: &[&[u8]] = &[
            b"Origin",
            b"Connection",
            b"X-Forwarded-For",
            b"Proxy-X",
            b"Host",
            b"Cookie",
            b"Upgrade",
        ];
        let values: &[&[u8]] = &[b"a", b"Upgrade, Cookie", b"1.2.3.4", b"", b"x y"];
        let mut accepted = 0;
        for i in 0..20_000 {
            let mut owned: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for _ in 0..rng.next() % 6 {
                let mut n = names[rng.next() % names.len()].to_vec();
                let mut v = values[rng.next() % values.len()].to_vec();
                if rng.next() % 4 == 0 {
                    n = rng.mutate(&n);
                }
                if rng.next() % 4 == 0 {
                    v = rng.mutate(&v);
                }
                owned.push((n, v));
            }
            let headers: Vec<Header<'_>> = owned.iter().map(|(n, v)| Header::new(n, v)).collect();
            // (httparse only takes UTF-8 paths; build_request passes obs-text through.)
            let path: Vec<u8> = if i % 3 == 0 {
                rng.mutate(b"/p?q=1")
            } else {
                b"/p?q=1".to_vec()
            };
            let path: Vec<u8> = path
                .into_iter()
                .map(|b| if b >= 0x80 { b'x' } else { b })
                .collect();
            let req = BackendRequest {
                method: b"GET",
                path: &path,
                host: b"h",
                headers: headers.iter().copied(),
                protocol: b"websocket",
                add_forwarded: i % 2 == 0,
                forwarded_for: b"192.0.2.1",
                forwarded_host: b"h",
                forwarded_server: b"s",
            };
            let mut buf = vec![0u8; request_size(&req)];
            let Ok(n) = build_request(&req, &mut buf[..]) else {
                continue;
            };
            accepted += 1;
            let mut parsed = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut parsed);
            assert_eq!(
                r.parse(&buf[..n]),
                Ok(httparse::Status::Complete(n)),
                "{}",
                String::from_utf8_lossy(&buf[..n])
            );
            assert_eq!(r.path.map(str::as_bytes), Some(&path[..]));
            let hs = &r.headers;
            assert_eq!(
                hs.iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("host"))
                    .count(),
                1
            );
            assert_eq!(
                hs.iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
                    .count(),
                1
            );
            assert_eq!(
                hs.iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                    .count(),
                1
            );
            assert!(!hs
                .iter()
                .any(|h| h.name.len() > 5 && h.name[..6].eq_ignore_ascii_case("proxy-")));
        }
        assert!(accepted > 5_000, "{accepted}");
    }
}
