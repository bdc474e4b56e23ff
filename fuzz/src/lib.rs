//! Helpers shared by the fuzz targets: a byte-stream reader that turns the
//! fuzzer's input into structured choices, and dictionaries of the header
//! names, values and tokens the core gives meaning to.
//!
//! Every target is also a plain function here (`run_*`), so that the
//! regression tests in `tests/` can replay corpus files and past crashes
//! with `cargo test` on stable, without libFuzzer.

pub mod targets;

/// Reads choices from the fuzzer's bytes; once they run out every read gives
/// zero / empty, so every input decodes to something.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.u8() as usize % n
        } else {
            self.u16() as usize % n
        }
    }

    /// Up to `max` raw bytes (length byte first).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let want = self.below(max.saturating_add(1).max(1));
        let n = want.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// One of `choices`, or (one time in four) raw bytes.
    pub fn pick_or_raw(&mut self, choices: &[&'static [u8]], max_raw: usize) -> Vec<u8> {
        let c = self.u8() as usize;
        if c % 4 == 3 || choices.is_empty() {
            self.bytes(max_raw).to_vec()
        } else {
            choices[c / 4 % choices.len()].to_vec()
        }
    }
}

/// The RFC 6455 sample key and the accept value answering it.
pub const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const HEADER_NAMES: &[&[u8]] = &[
    b"Host",
    b"Upgrade",
    b"upgrade",
    b"Connection",
    b"CONNECTION",
    b"Sec-WebSocket-Key",
    b"sec-websocket-key",
    b"Sec-WebSocket-Version",
    b"Sec-WebSocket-Accept",
    b"Sec-WebSocket-Protocol",
    b"Sec-WebSocket-Extensions",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"Proxy-Authorization",
    b"Proxy-Connection",
    b"X-Forwarded-For",
    b"X-Forwarded-Host",
    b"X-Forwarded-Server",
    b"Cookie",
    b"Authorization",
    b"Origin",
    b"X-Custom",
];

pub const HEADER_VALUES: &[&[u8]] = &[
    b"websocket",
    b"WebSocket",
    b"websocket/13",
    b"h2c",
    b"h2c, websocket",
    b"Upgrade",
    b"upgrade",
    b"keep-alive, Upgrade",
    b"Upgrade, X-Forwarded-For",
    b"Upgrade, Cookie",
    b"close",
    KEY,
    b" dGhlIHNhbXBsZSBub25jZQ== ",
    b"AAAAAAAAAAAAAAAAAAAAAA==",
    b"AAAAAAAAAAAAAAAAAAAAAB==",
    ACCEPT,
    b"13",
    b"0",
    b"00",
    b"5",
    b"chunked",
    b"gzip, chunked",
    b"127.0.0.1",
    b"example.com",
    b"",
    b" ",
    b"a\r\nInjected: yes",
    b"a\nb",
    b"a\0b",
    b"\x80\xff",
];

pub const WORKER_UPGRADES: &[&[u8]] = &[
    b"",
    b"NONE",
    b"none",
    b"ANY",
    b"*",
    b"websocket",
    b"WebSocket",
    b"h2c, websocket",
    b"foo/2",
    b" , ",
];

pub const METHODS: &[&[u8]] = &[b"GET", b"get", b"POST", b"CONNECT", b"OPTIONS"];

/// An owned header list; `views()` gives the `Header`s the core takes.
#[derive(Debug, Default, Clone)]
pub struct Headers(pub Vec<(Vec<u8>, Vec<u8>)>);

impl Headers {
    pub fn generate(inp: &mut Input<'_>, max: usize) -> Headers {
        let n = inp.below(max + 1);
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let name = inp.pick_or_raw(HEADER_NAMES, 24);
            let value = inp.pick_or_raw(HEADER_VALUES, 48);
            v.push((name, value));
        }
        Headers(v)
    }

    pub fn views(&self) -> Vec<wstunnel_core::handshake::Header<'_>> {
        self.0
            .iter()
            .map(|(n, v)| wstunnel_core::handshake::Header::new(n, v))
            .collect()
    }
}

/// Case-insensitive name comparison.
pub fn named(h: &[u8], name: &str) -> bool {
    h.eq_ignore_ascii_case(name.as_bytes())
}

/// `s` without leading and trailing SP / HTAB (RFC 7230 OWS).
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

/// True when `inner` lies inside `outer` (same memory).
pub fn points_into(inner: &[u8], outer: &[u8]) -> bool {
    let o = outer.as_ptr_range();
    let i = inner.as_ptr_range();
    o.start <= i.start && i.end <= o.end
}
