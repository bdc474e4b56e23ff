//! The resumable in-place chunked decoder (`ChunkedDecoder::decode`).
//!
//! Two modes, chosen by the first byte:
//! * raw: arbitrary bytes decoded whole and again split at fuzzer-chosen
//!   points: the same verdict (done / failed / incomplete), the same body,
//!   the same end of body;
//! * round trip: a body cut into chunks by the fuzzer, encoded with
//!   fuzzer-chosen extensions, trailers and hex case, then decoded in random
//!   pieces: exactly the body comes back and the decoder stops exactly at
//!   the end of the encoding (the bytes after it are left alone).
//!
//! Always: `data_len <= consumed <= len`; `consumed == len` unless done;
//! once done it stays done and consumes nothing; once failed it stays
//! failed.

use wstunnel_core::handshake::{ChunkedDecoder, ChunkedError};

use crate::Input;

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Body complete: the input bytes used.
    Done(usize),
    Failed,
    Incomplete,
}

/// Decode `input` fed in pieces ending at `cuts` (sorted, within input).
fn decode(input: &[u8], cuts: &[usize]) -> (Vec<u8>, End) {
    let mut d = ChunkedDecoder::default();
    let mut body = Vec::new();
    let mut pos = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        if end < pos {
            continue;
        }
        let mut piece = input[pos..end].to_vec();
        let len = piece.len();
        match d.decode(&mut piece) {
            Ok(r) => {
                assert!(
                    r.data_len <= r.consumed && r.consumed <= len,
                    "{r:?} of {len}"
                );
                body.extend_from_slice(&piece[..r.data_len]);
                if r.done {
                    assert!(d.is_done());
                    // Done is sticky and consumes nothing more.
                    let mut more = input[pos + r.consumed..].to_vec();
                    let again = d.decode(&mut more).expect("done stays done");
                    assert!(again.done && again.data_len == 0 && again.consumed == 0);
                    return (body, End::Done(pos + r.consumed));
                }
                assert_eq!(r.consumed, len, "not done, yet input left over");
            }
            Err(e) => {
                assert_eq!(e, ChunkedError::Invalid);
                // Failed is sticky.
                let mut more = b"0\r\n\r\n".to_vec();
                assert_eq!(d.decode(&mut more), Err(ChunkedError::Invalid));
                return (body, End::Failed);
            }
        }
        pos = end;
    }
    (body, End::Incomplete)
}

fn cuts_from(inp: &mut Input<'_>, len: usize) -> Vec<usize> {
    let n = inp.below(9);
    let mut cuts: Vec<usize> = (0..n)
        .map(|_| if len == 0 { 0 } else { inp.below(len + 1) })
        .collect();
    cuts.sort_unstable();
    cuts
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    if inp.u8() & 1 == 0 {
        let cut_bytes = inp.bytes(18);
        let input = inp.rest();
        let mut ci = Input::new(cut_bytes);
        let cuts = cuts_from(&mut ci, input.len());
        let (body_whole, end_whole) = decode(input, &[]);
        let (body_split, end_split) = decode(input, &cuts);
        assert_eq!(
            end_whole, end_split,
            "split at {cuts:?} changed the verdict"
        );
        if end_whole != End::Failed {
            assert_eq!(body_whole, body_split, "split at {cuts:?} changed the body");
        }
        if let End::Done(_) = end_whole {
            assert!(body_whole.len() <= input.len());
        }
    } else {
        round_trip(&mut inp);
    }
}

fn round_trip(inp: &mut Input<'_>) {
    let mut body = Vec::new();
    let mut enc = Vec::new();
    let upper = inp.bool();
    let n_chunks = inp.below(8);
    for _ in 0..n_chunks {
        let len = 1 + inp.below(300);
        let fill = inp.u8();
        let chunk: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
        let zeros = inp.below(3);
        let hex = if upper {
            format!("{len:X}")
        } else {
            format!("{len:x}")
        };
        enc.extend(std::iter::repeat_n(b'0', zeros));
        enc.extend_from_slice(hex.as_bytes());
        match inp.below(4) {
            0 => enc.extend_from_slice(b";name=value"),
            1 => enc.extend_from_slice(b" ; q=\"a;b\""),
            2 => enc.extend_from_slice(b"\t"),
            _ => {}
        }
        enc.extend_from_slice(b"\r\n");
        enc.extend_from_slice(&chunk);
        enc.extend_from_slice(b"\r\n");
        body.extend_from_slice(&chunk);
    }
    enc.extend_from_slice(b"0");
    if inp.bool() {
        enc.extend_from_slice(b";last");
    }
    enc.extend_from_slice(b"\r\n");
    for _ in 0..inp.below(3) {
        enc.extend_from_slice(b"X-Trailer: v\x80 \t1\r\n");
    }
    enc.extend_from_slice(b"\r\n");
    let encoded_len = enc.len();
    // What follows the body (the next response, or garbage) is left alone.
    enc.extend_from_slice(inp.bytes(16));
    let cuts = cuts_from(inp, enc.len());
    let (got, end) = decode(&enc, &cuts);
    assert_eq!(end, End::Done(encoded_len), "cuts {cuts:?}");
    assert_eq!(got, body);
}
