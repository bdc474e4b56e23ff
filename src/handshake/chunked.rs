//! In-place, resumable decoder of the chunked transfer coding
//! (RFC 7230 4.1), for relaying a non-101 response body.
//!
//! The input may be split at any byte boundary across calls: the whole
//! state is three integers (the `wst_chunked` struct of the contract).
//! Line endings must be CRLF; bare LF or CR is an error.

/// The longest chunk-size line (with extensions) or trailer line accepted,
/// CRLF not counted.
pub const MAX_LINE: u32 = 8192;

// Decoder states (the zero state is the start of the first chunk-size line).
const SIZE_START: u32 = 0; // expecting the first hex digit of a chunk size
const SIZE: u32 = 1; // in the hex digits
const EXT_WS: u32 = 2; // whitespace after the digits: ';' or CR must follow
const EXT: u32 = 3; // in chunk extensions, until CR
const SIZE_LF: u32 = 4; // CR seen at the end of the size line
const DATA: u32 = 5; // `remaining` bytes of chunk data
const DATA_CR: u32 = 6; // expecting the CR after the data
const DATA_LF: u32 = 7; // expecting the LF after the data
const TRAILER_START: u32 = 8; // start of a trailer line, or the final CRLF
const TRAILER: u32 = 9; // in a trailer field line, until CR
const TRAILER_LF: u32 = 10; // CR seen at the end of a trailer line
const FINAL_LF: u32 = 11; // CR of the final empty line seen
const DONE: u32 = 12; // body complete

// Malformed input seen: every later call fails. One state per kind of
// fault, so that [`ChunkedDecoder::failure`] can say which for the log.
const FAILED: u32 = 13; // bad framing syntax
const FAILED_SIZE: u32 = 14; // a chunk size beyond 64 bits
const FAILED_LINE: u32 = 15; // a size or trailer line over MAX_LINE

/// The decoder state (the fields of `wst_chunked`). Start from
/// `ChunkedDecoder::default()` (all zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkedDecoder {
    /// Bytes left in the current chunk (or the chunk size being read).
    pub remaining: u64,
    /// Private state.
    pub state: u32,
    /// Length of the size or trailer line so far.
    pub line_len: u32,
}

/// The result of one [`ChunkedDecoder::decode`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The body ended (last chunk and trailer section seen).
    pub done: bool,
    /// Decoded body bytes now at the front of the buffer.
    pub data_len: usize,
    /// Input bytes used: all of them unless `done`; when `done`, the bytes
    /// from `consumed` on follow the body.
    pub consumed: usize,
}

/// What was wrong with a body the decoder refused (see
/// [`ChunkedDecoder::failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedFailure {
    /// A byte the chunked syntax does not allow where it came: a chunk size
    /// that is not hex, a missing or bare CR/LF, control characters in an
    /// extension or trailer, an obs-fold trailer line.
    Syntax,
    /// A chunk size that does not fit 64 bits.
    SizeOverflow,
    /// A chunk-size line (with extensions) or a trailer line longer than
    /// [`MAX_LINE`] bytes.
    LineTooLong,
}

impl ChunkedFailure {
    /// Static text for the log.
    pub const fn reason(self) -> &'static core::ffi::CStr {
        match self {
            ChunkedFailure::Syntax => {
                c"a chunk-size line, CRLF, extension or trailer the chunked syntax does not allow"
            }
            ChunkedFailure::SizeOverflow => c"a chunk size larger than 64 bits",
            ChunkedFailure::LineTooLong => c"a chunk-size or trailer line longer than 8192 bytes",
        }
    }

    const fn state(self) -> u32 {
        match self {
            ChunkedFailure::Syntax => FAILED,
            ChunkedFailure::SizeOverflow => FAILED_SIZE,
            ChunkedFailure::LineTooLong => FAILED_LINE,
        }
    }
}

/// Why [`ChunkedDecoder::step`] stopped: the kind of malformed input, or a
/// state the decoder never produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Malformed(ChunkedFailure),
    BadState,
}

const SYNTAX: Fault = Fault::Malformed(ChunkedFailure::Syntax);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedError {
    /// Malformed chunked coding (also: every call after one).
    Invalid,
    /// The state is not one this decoder produces (a corrupted struct).
    BadState,
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b.wrapping_sub(b'0')),
        b'a'..=b'f' => Some(b.wrapping_sub(b'a').wrapping_add(10)),
        b'A'..=b'F' => Some(b.wrapping_sub(b'A').wrapping_add(10)),
        _ => None,
    }
}

/// Bytes allowed inside a chunk extension or trailer line: anything but
/// control characters (HTAB allowed) and DEL.
const fn is_line_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

impl ChunkedDecoder {
    pub const fn new() -> Self {
        ChunkedDecoder {
            remaining: 0,
            state: SIZE_START,
            line_len: 0,
        }
    }

    /// The body has been fully decoded.
    pub const fn is_done(&self) -> bool {
        self.state == DONE
    }

    /// What was wrong, once [`decode`](Self::decode) has refused the input
    /// (`ChunkedError::Invalid`); None before (and for a corrupted state).
    pub const fn failure(&self) -> Option<ChunkedFailure> {
        match self.state {
            FAILED => Some(ChunkedFailure::Syntax),
            FAILED_SIZE => Some(ChunkedFailure::SizeOverflow),
            FAILED_LINE => Some(ChunkedFailure::LineTooLong),
            _ => None,
        }
    }

    /// Count one more byte of the current line.
    fn line_byte(&mut self) -> Result<(), Fault> {
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > MAX_LINE {
            Err(Fault::Malformed(ChunkedFailure::LineTooLong))
        } else {
            Ok(())
        }
    }

    /// Process one framing byte (any state but DATA, DONE, FAILED*).
    fn step(&mut self, b: u8) -> Result<(), Fault> {
        let invalid = Err(SYNTAX);
        match self.state {
            SIZE_START | SIZE => {
                if let Some(d) = hex_value(b) {
                    self.line_byte()?;
                    self.remaining = self
                        .remaining
                        .checked_mul(16)
                        .and_then(|r| r.checked_add(u64::from(d)))
                        .ok_or(Fault::Malformed(ChunkedFailure::SizeOverflow))?;
                    self.state = SIZE;
                    return Ok(());
                }
                if self.state == SIZE_START {
                    return invalid;
                }
                match b {
                    b'\r' => {
                        self.state = SIZE_LF;
                        return Ok(());
                    }
                    b';' => self.state = EXT,
                    b' ' | b'\t' => self.state = EXT_WS,
                    _ => return invalid,
                }
                self.line_byte()
            }
            EXT_WS => {
                match b {
                    b'\r' => {
                        self.state = SIZE_LF;
                        return Ok(());
                    }
                    b';' => self.state = EXT,
                    b' ' | b'\t' => {}
                    _ => return invalid,
                }
                self.line_byte()
            }
            EXT => {
                if b == b'\r' {
                    self.state = SIZE_LF;
                    return Ok(());
                }
                if !is_line_byte(b) {
                    return invalid;
                }
                self.line_byte()
            }
            SIZE_LF => {
                if b != b'\n' {
                    return invalid;
                }
                self.line_len = 0;
                self.state = if self.remaining == 0 {
                    TRAILER_START
                } else {
                    DATA
                };
                Ok(())
            }
            DATA_CR => {
                if b != b'\r' {
                    return invalid;
                }
                self.state = DATA_LF;
                Ok(())
            }
            DATA_LF => {
                if b != b'\n' {
                    return invalid;
                }
                self.state = SIZE_START;
                self.line_len = 0;
                Ok(())
            }
            TRAILER_START => {
                if b == b'\r' {
                    self.state = FINAL_LF;
                    return Ok(());
                }
                // A field line: it cannot start with whitespace (obs-fold)
                // or a control character.
                if b == b' ' || b == b'\t' || !is_line_byte(b) {
                    return invalid;
                }
                self.state = TRAILER;
                self.line_byte()
            }
            TRAILER => {
                if b == b'\r' {
                    self.state = TRAILER_LF;
                    return Ok(());
                }
                if !is_line_byte(b) {
                    return invalid;
                }
                self.line_byte()
            }
            TRAILER_LF => {
                if b != b'\n' {
                    return invalid;
                }
                self.state = TRAILER_START;
                self.line_len = 0;
                Ok(())
            }
            FINAL_LF => {
                if b != b'\n' {
                    return invalid;
                }
                self.state = DONE;
                Ok(())
            }
            _ => Err(Fault::BadState),
        }
    }

    /// Decode `buf` in place: the body bytes it carries are moved to its
    /// front. On error the decoder is left failed, and `buf` may have been
    /// partly rewritten.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Decoded, ChunkedError> {
        match self.state {
            DONE => {
                return Ok(Decoded {
                    done: true,
                    data_len: 0,
                    consumed: 0,
                })
            }
            FAILED | FAILED_SIZE | FAILED_LINE => return Err(ChunkedError::Invalid),
            s if s > FAILED_LINE => return Err(ChunkedError::BadState),
            _ => {}
        }
        let len = buf.len();
        let mut read = 0usize; // next input byte
        let mut written = 0usize; // end of the decoded data, <= read
        while read < len {
            if self.state == DATA {
                let avail = len.saturating_sub(read);
                let take = usize::try_from(self.remaining).map_or(avail, |r| r.min(avail));
                let end = read.saturating_add(take);
                if written != read {
                    // Move buf[read..end] to buf[written..]; written < read.
                    match buf.get_mut(written..end) {
                        Some(window) => window.copy_within(read.saturating_sub(written).., 0),
                        None => return self.fail(SYNTAX),
                    }
                }
                written = written.saturating_add(take);
                read = end;
                self.remaining = self.remaining.saturating_sub(take as u64);
                if self.remaining == 0 {
                    self.state = DATA_CR;
                }
                continue;
            }
            let Some(&b) = buf.get(read) else { break };
            read = read.saturating_add(1);
            if let Err(e) = self.step(b) {
                return self.fail(e);
            }
            if self.state == DONE {
                return Ok(Decoded {
                    done: true,
                    data_len: written,
                    consumed: read,
                });
            }
        }
        Ok(Decoded {
            done: false,
            data_len: written,
            consumed: read,
        })
    }

    fn fail(&mut self, fault: Fault) -> Result<Decoded, ChunkedError> {
        match fault {
            Fault::Malformed(kind) => {
                self.state = kind.state();
                Err(ChunkedError::Invalid)
            }
            Fault::BadState => Err(ChunkedError::BadState),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in the pieces given by `cuts`; returns the body,
    /// the number of input bytes consumed, and whether it completed.
    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        for end in bounds {
            let mut piece = input[pos..end].to_vec();
            let r = d.decode(&mut piece)?;
            body.extend_from_slice(&piece[..r.data_len]);
            if r.done {
                assert!(d.is_done());
                return Ok((body, pos + r.consumed, true));
            }
            assert_eq!(r.consumed, piece.len());
            pos = end;
        }
        Ok((body, pos, false))
    }

    fn whole(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        decode_split(input, &[])
    }

    const WIKI: &[u8] = b"4\r\nWiki\r\n7\r\npedia i\r\nB\r\nn \r\nchunks.\r\n0\r\n\r\n";

    #[test]
    fn simple() {
        assert_eq!(
            whole(WIKI),
            Ok((b"Wikipedia in \r\nchunks.".to_vec(), WIKI.len(), true))
        );
        assert_eq!(whole(b"0\r\n\r\n"), Ok((vec![], 5, true)));
        assert_eq!(whole(b"000\r\n\r\nNEXT"), Ok((vec![], 7, true)));
    }

    #[test]
    fn extensions_trailers_and_tail() {
        let input = b"5;name=value;x=\"q; \\\" r\"\r\nhello\r\n\
            6 ; a\r\n world\r\n\
            1\t\r\n!\r\n\
            0;last\r\nExpires: never\r\nX-Checksum: 1\r\n\r\nHTTP/1.1 200 OK\r\n";
        let (body, consumed, done) = whole(input).unwrap();
        assert_eq!(body, b"hello world!");
        assert!(done);
        assert_eq!(&input[consumed..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn every_split_matches_whole() {
        let inputs: &[&[u8]] = &[
            WIKI,
            b"1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\ntrailing",
            b"3\r\n\r\n\r\r\n2\r\n\x00\xff\r\n0\r\n\r\n",
        ];
        for input in inputs {
            let expect = whole(input).unwrap();
            assert!(expect.2);
            for cut in 0..=input.len() {
                assert_eq!(decode_split(input, &[cut]).unwrap(), expect, "cut at {cut}");
            }
            // Byte by byte.
            let cuts: Vec<usize> = (1..input.len()).collect();
            assert_eq!(decode_split(input, &cuts).unwrap(), expect);
            // Every pair of cuts.
            for a in 0..=input.len() {
                for b in a..=input.len() {
                    assert_eq!(
                        decode_split(input, &[a, b]).unwrap(),
                        expect,
                        "cuts {a} {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn pseudo_random_bodies() {
        // A small LCG, so the test needs no crate.
        let mut seed = 0x1234_5678u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..200 {
            let mut body = Vec::new();
            let mut enc = Vec::new();
            for _ in 0..next() % 6 {
                let n = 1 + next() % 300;
                let chunk: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                enc.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                enc.extend_from_slice(&chunk);
                enc.extend_from_slice(b"\r\n");
                body.extend_from_slice(&chunk);
            }
            enc.extend_from_slice(b"0\r\n\r\n");
            let mut cuts: Vec<usize> = (0..next() % 8).map(|_| next() % (enc.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(decode_split(&enc, &cuts), Ok((body, enc.len(), true)));
        }
    }

    #[test]
    fn incomplete_is_not_done() {
        for cut in 0..WIKI.len() {
            let (body, consumed, done) = whole(&WIKI[..cut]).unwrap();
            assert!(!done, "cut {cut}");
            assert_eq!(consumed, cut);
            assert!(b"Wikipedia in \r\nchunks.".starts_with(&body));
        }
    }

    #[test]
    fn malformed() {
        let cases: &[&[u8]] = &[
            b"\r\n",
            b"x\r\n",
            b";ext\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"-1\r\n",
            b"0x5\r\nhello\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\rhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r0\r\n\r\n",
            b"5 6\r\nhello\r\n",
            b"5g\r\n",
            b"5;a\nb\r\n",
            b"5;a\x00\r\n",
            b"0\r\n\n",
            b"0\r\n\r\r",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: \x01\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"10000000000000000\r\n",
            b"ffffffffffffffff0\r\n",
        ];
        for input in cases {
            assert_eq!(
                whole(input),
                Err(ChunkedError::Invalid),
                "{}",
                String::from_utf8_lossy(input)
            );
            for cut in 0..input.len() {
                assert_eq!(
                    decode_split(input, &[cut]),
                    Err(ChunkedError::Invalid),
                    "{input:?} cut {cut}"
                );
            }
        }
        // The largest chunk size is fine (it never completes).
        let mut d = ChunkedDecoder::default();
        let mut buf = b"ffffffffffffffff\r\nabc".to_vec();
        let r = d.decode(&mut buf).unwrap();
        assert_eq!((r.done, r.data_len, &buf[..3]), (false, 3, &b"abc"[..]));
        assert_eq!(d.remaining, u64::MAX - 3);
    }

    /// Feed `input` whole or split at `cut`; the failure the decoder names.
    fn failure_of(input: &[u8], cut: Option<usize>) -> Option<ChunkedFailure> {
        let mut d = ChunkedDecoder::default();
        let pieces: Vec<&[u8]> = match cut {
            Some(c) => vec![&input[..c], &input[c..]],
            None => vec![input],
        };
        for p in pieces {
            match d.decode(&mut p.to_vec()) {
                Ok(_) => assert_eq!(d.failure(), None, "{input:?}"),
                Err(e) => {
                    assert_eq!(e, ChunkedError::Invalid, "{input:?}");
                    return d.failure();
                }
            }
        }
        None
    }

    #[test]
    fn failure_names_what_was_wrong() {
        let long_ext = {
            let mut v = b"1;".to_vec();
            v.resize(MAX_LINE as usize + 1, b'a');
            v
        };
        let long_trailer = {
            let mut v = b"0\r\nX: ".to_vec();
            v.resize(MAX_LINE as usize + 4, b'v');
            v
        };
        let cases: Vec<(Vec<u8>, ChunkedFailure)> = vec![
            (b"zz\r\n".to_vec(), ChunkedFailure::Syntax),
            (b"5\r\nhelloX\r\n".to_vec(), ChunkedFailure::Syntax),
            (b"5\nhello\r\n".to_vec(), ChunkedFailure::Syntax),
            (b"0\r\n folded\r\n\r\n".to_vec(), ChunkedFailure::Syntax),
            (
                b"10000000000000000\r\n".to_vec(),
                ChunkedFailure::SizeOverflow,
            ),
            (
                b"4\r\nWiki\r\nffffffffffffffff0\r\n".to_vec(),
                ChunkedFailure::SizeOverflow,
            ),
            (long_ext, ChunkedFailure::LineTooLong),
            (long_trailer, ChunkedFailure::LineTooLong),
        ];
        for (input, want) in &cases {
            assert_eq!(
                failure_of(input, None),
                Some(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            for cut in 0..input.len() {
                assert_eq!(failure_of(input, Some(cut)), Some(*want), "cut {cut}");
            }
            assert!(!want.reason().to_bytes().is_empty());
        }
        // Every kind has its own text.
        let texts = [
            ChunkedFailure::Syntax.reason(),
            ChunkedFailure::SizeOverflow.reason(),
            ChunkedFailure::LineTooLong.reason(),
        ];
        assert!(texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2]);
        assert!(String::from_utf8_lossy(texts[2].to_bytes()).contains(&MAX_LINE.to_string()));
        // No failure while decoding well, when done, or when cut short
        // (an incomplete body is the caller's to notice at EOF).
        assert_eq!(failure_of(WIKI, None), None);
        assert_eq!(failure_of(&WIKI[..10], None), None);
        let mut d = ChunkedDecoder::default();
        assert!(d.decode(&mut WIKI.to_vec()).unwrap().done);
        assert_eq!(d.failure(), None);
        // The failure is sticky, and so is its kind.
        let mut d = ChunkedDecoder::default();
        assert!(d.decode(&mut b"10000000000000000".to_vec()).is_err());
        assert_eq!(
            d.decode(&mut b"0\r\n\r\n".to_vec()),
            Err(ChunkedError::Invalid)
        );
        assert_eq!(d.failure(), Some(ChunkedFailure::SizeOverflow));
        // A state past the failed ones is corrupted, not a failure.
        let mut d = ChunkedDecoder {
            remaining: 0,
            state: FAILED_LINE + 1,
            line_len: 0,
        };
        assert_eq!(d.decode(&mut []), Err(ChunkedError::BadState));
        assert_eq!(d.failure(), None);
    }

    #[test]
    fn line_limits() {
        let mut ok = b"1;".to_vec();
        ok.resize(MAX_LINE as usize, b'a');
        ok.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(whole(&ok).unwrap().0, b"x");
        let mut long = b"1;".to_vec();
        long.resize(MAX_LINE as usize + 1, b'a');
        assert_eq!(whole(&long), Err(ChunkedError::Invalid));
        let mut zeros = vec![b'0'; MAX_LINE as usize + 1];
        zeros.extend_from_slice(b"1\r\n");
        assert_eq!(whole(&zeros), Err(ChunkedError::Invalid));
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(MAX_LINE as usize + 4, b'v');
        assert_eq!(whole(&trailer), Err(ChunkedError::Invalid));
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(MAX_LINE as usize + 3, b'v');
        trailer.extend_from_slice(b"\r\n\r\n");
        assert!(whole(&trailer).unwrap().2);
    }

    #[test]
    fn sticky_states() {
        let mut d = ChunkedDecoder::default();
        assert_eq!(d.decode(&mut b"zz".to_vec()), Err(ChunkedError::Invalid));
        assert_eq!(
            d.decode(&mut b"0\r\n\r\n".to_vec()),
            Err(ChunkedError::Invalid)
        );
        let mut d = ChunkedDecoder::default();
        assert!(d.decode(&mut b"0\r\n\r\n".to_vec()).unwrap().done);
        assert_eq!(
            d.decode(&mut b"more".to_vec()),
            Ok(Decoded {
                done: true,
                data_len: 0,
                consumed: 0
            })
        );
        let mut d = ChunkedDecoder {
            remaining: 0,
            state: 99,
            line_len: 0,
        };
        assert_eq!(
            d.decode(&mut b"0\r\n\r\n".to_vec()),
            Err(ChunkedError::BadState)
        );
        assert_eq!(d.decode(&mut []), Err(ChunkedError::BadState));
        let mut d = ChunkedDecoder::new();
        assert_eq!(
            d.decode(&mut []),
            Ok(Decoded {
                done: false,
                data_len: 0,
                consumed: 0
            })
        );
    }
}
