//! WebSocket protocol helpers: accept key, frames (RFC 6455), request-head parsing.

use base64::Engine as _;
use sha1::{Digest, Sha1};

pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh random Sec-WebSocket-Key (16 random bytes, base64).
pub fn new_key() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Non-cryptographic randomness (time + counter), good enough for keys and masks in tests.
pub fn fill_random(buf: &mut [u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CTR: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t
        ^ CTR.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ (std::process::id() as u64) << 32;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
}

/// Encode one frame. `mask` is required for client-to-server frames.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame with a random mask.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 4];
    fill_random(&mut k);
    encode_frame(true, opcode, payload, Some(k))
}

/// An unmasked server frame.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(true, opcode, payload, None)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Decode one frame from the start of `buf`: `Some((frame, bytes_used))`, or `None` if
/// `buf` does not yet hold a whole frame.
pub fn decode_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut pos = 2;
    let len = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            pos = 4;
            u16::from_be_bytes([buf[2], buf[3]]) as usize
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            pos = 10;
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mask = if masked {
        if buf.len() < pos + 4 {
            return None;
        }
        let k = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(k)
    } else {
        None
    };
    if buf.len() < pos + len {
        return None;
    }
    let mut payload = buf[pos..pos + len].to_vec();
    if let Some(k) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((
        Frame {
            fin,
            opcode,
            masked,
            payload,
        },
        pos + len,
    ))
}

/// Position just past the "\r\n\r\n" ending an HTTP head, if present.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// True if the comma-separated token list `value` contains `token` (case-insensitive).
pub fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_roundtrip_all_length_forms() {
        for n in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let p: Vec<u8> = (0..n).map(|i| i as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let f = encode_frame(true, OP_BINARY, &p, mask);
                assert!(
                    decode_frame(&f[..f.len() - 1]).is_none(),
                    "partial frame decoded"
                );
                let (d, used) = decode_frame(&f).unwrap();
                assert_eq!(used, f.len());
                assert_eq!(d.payload, p);
                assert_eq!(d.masked, mask.is_some());
            }
        }
    }

    #[test]
    fn token_lists() {
        assert!(has_token("keep-alive, Upgrade", "upgrade"));
        assert!(has_token("Upgrade", "upgrade"));
        assert!(!has_token("upgraded", "upgrade"));
        assert!(new_key().len() == 24);
    }
}
