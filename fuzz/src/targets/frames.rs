//! The WebSocket frame-boundary tracker (`frames::FrameTracker`) and the
//! frame writers.
//!
//! Modes, by the first byte:
//! * raw: arbitrary bytes, either direction, fed in fuzzer-chosen pieces;
//!   the events (header, frame end, violation) and where they happen must be
//!   exactly those of an independent whole-buffer reference parser written
//!   here from RFC 6455, whatever the split; counters and state queries
//!   agree with the events; once sync is lost every byte is consumed and
//!   nothing more is reported;
//! * generated: a valid stream built with the module's own `write_frame` /
//!   `write_ping` / `write_pong` / `write_close` (fragmented messages with
//!   control frames between fragments, RSV bits, masks as the direction
//!   requires), optionally with an armed `expect_pong` whose Pong is in the
//!   stream: no violation, every frame and message counted, the close code
//!   seen, the own Pong reported exactly once, and while that Pong is being
//!   read `held()` covers every byte of it fed so far (the tunnel never
//!   writes a byte of it).

use wstunnel_core::frames::{
    write_close, write_frame, write_ping, write_pong, FrameTracker, Opcode, Violation,
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN, MAX_PONG_TOKEN,
};

use crate::Input;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// A header ended at this absolute offset: (opcode bits, payload length).
    Header(usize, u8, u64),
    /// A frame ended at this offset.
    End(usize),
    /// Sync lost at the byte ending at this offset.
    Violation(usize, Violation),
}

/// The reference: parse `s` as a whole, RFC 6455 5.2 and 5.4/5.5.
fn reference(s: &[u8], masked: bool) -> Vec<Ev> {
    let mut ev = Vec::new();
    let mut pos = 0usize;
    let mut in_message = false;
    while pos < s.len() {
        let b0 = s[pos];
        let op = b0 & 0x0F;
        let fin = b0 & 0x80 != 0;
        let control = op & 0x8 != 0;
        if !matches!(op, 0 | 1 | 2 | 8 | 9 | 10) {
            ev.push(Ev::Violation(pos + 1, Violation::ReservedOpcode(op)));
            return ev;
        }
        if control && !fin {
            ev.push(Ev::Violation(pos + 1, Violation::FragmentedControl));
            return ev;
        }
        if op == 0 && !in_message {
            ev.push(Ev::Violation(pos + 1, Violation::UnexpectedContinuation));
            return ev;
        }
        if (op == 1 || op == 2) && in_message {
            ev.push(Ev::Violation(pos + 1, Violation::UnfinishedMessage));
            return ev;
        }
        let Some(&b1) = s.get(pos + 1) else { return ev };
        let m = b1 & 0x80 != 0;
        if m != masked {
            ev.push(Ev::Violation(
                pos + 2,
                Violation::MaskMismatch { masked: m },
            ));
            return ev;
        }
        let len7 = b1 & 0x7F;
        if control && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            ev.push(Ev::Violation(pos + 2, Violation::ControlTooLong));
            return ev;
        }
        let ext = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if len7 == 127 {
            match s.get(pos + 2) {
                Some(&b) if b & 0x80 != 0 => {
                    ev.push(Ev::Violation(pos + 3, Violation::LengthOverflow));
                    return ev;
                }
                Some(_) => {}
                None => return ev,
            }
        }
        let hl = 2 + ext + if masked { 4 } else { 0 };
        if s.len() < pos + hl {
            return ev;
        }
        let len = match len7 {
            126 => u64::from(u16::from_be_bytes([s[pos + 2], s[pos + 3]])),
            127 => u64::from_be_bytes(s[pos + 2..pos + 10].try_into().unwrap()),
            n => u64::from(n),
        };
        pos += hl;
        ev.push(Ev::Header(pos, op, len));
        if (op == 1 || op == 2) && !fin {
            in_message = true;
        }
        let left = (s.len() - pos) as u64;
        if len > left {
            return ev;
        }
        pos += len as usize;
        if op <= 2 && fin {
            in_message = false;
        }
        ev.push(Ev::End(pos));
    }
    ev
}

struct Fed {
    events: Vec<Ev>,
    /// (bytes fed so far, held() after that call)
    held: Vec<(usize, usize)>,
    own_pongs: Vec<(usize, u64)>,
    messages: u64,
    frames: u64,
}

fn feed_all(t: &mut FrameTracker, s: &[u8], cuts: &[usize]) -> Fed {
    let mut out = Fed {
        events: Vec::new(),
        held: Vec::new(),
        own_pongs: Vec::new(),
        messages: 0,
        frames: 0,
    };
    let mut from = 0;
    let mut lost = false;
    for &to in cuts.iter().chain(std::iter::once(&s.len())) {
        if to < from {
            continue;
        }
        let mut piece = &s[from..to];
        let mut at = from;
        let mut guard = 0;
        let calls_max = piece.len();
        while !piece.is_empty() {
            guard += 1;
            assert!(guard <= calls_max, "feed makes no progress");
            let f = t.feed(piece);
            assert!(
                f.consumed > 0,
                "nothing consumed from {} bytes",
                piece.len()
            );
            assert!(f.consumed <= piece.len());
            at += f.consumed;
            piece = &piece[f.consumed..];
            if lost {
                assert_eq!(f.header, None);
                assert_eq!(f.end, None);
                assert_eq!(f.violation, None);
                assert!(piece.is_empty(), "bytes left after sync was lost");
            }
            if let Some(h) = f.header {
                assert!(usize::from(h.header_len) <= MAX_HEADER_LEN);
                assert_eq!(h.mask.is_some(), t.masked());
                out.events
                    .push(Ev::Header(at, h.opcode.bits(), h.payload_len));
            }
            if let Some(e) = f.end {
                out.events.push(Ev::End(at));
                out.frames += 1;
                if e.message_end {
                    out.messages += 1;
                }
                if e.own_pong {
                    assert_eq!(e.header.opcode, Opcode::Pong);
                    out.own_pongs.push((at, e.header.frame_len()));
                }
                assert!(t.at_boundary() || t.lost_sync().is_some());
            }
            if let Some(v) = f.violation {
                assert!(!lost, "violation reported twice");
                lost = true;
                assert_eq!(t.lost_sync(), Some(v));
                assert!(!t.at_boundary() && !t.can_inject());
                assert_eq!(t.held(), 0);
                out.events.push(Ev::Violation(at, v));
            }
            // Stops only at events: consumed everything, or an event happened.
            if !piece.is_empty() {
                assert!(
                    f.header.is_some() || f.end.is_some() || f.violation.is_some(),
                    "stopped early for nothing"
                );
            }
            let held = t.held();
            assert!(held <= MAX_HEADER_LEN + MAX_PONG_TOKEN, "held {held}");
            out.held.push((at, held));
        }
        from = to;
    }
    assert_eq!(t.frames(), out.frames);
    assert_eq!(t.messages(), out.messages);
    out
}

fn cuts_from(inp: &mut Input<'_>, len: usize) -> Vec<usize> {
    let n = inp.below(12);
    let mut c: Vec<usize> = (0..n)
        .map(|_| if len == 0 { 0 } else { inp.below(len + 1) })
        .collect();
    c.sort_unstable();
    c
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let masked = mode & 2 != 0;
    if mode & 1 == 0 {
        let cut_bytes = inp.bytes(24);
        let s = inp.rest();
        let mut ci = Input::new(cut_bytes);
        let cuts = cuts_from(&mut ci, s.len());
        let want = reference(s, masked);
        let mut t = FrameTracker::new(masked);
        let got = feed_all(&mut t, s, &cuts);
        assert_eq!(got.events, want, "cuts {cuts:?}");
        let mut whole = FrameTracker::new(masked);
        let one = feed_all(&mut whole, s, &[]);
        assert_eq!(one.events, want);
        assert_eq!(t, whole, "state differs with the split {cuts:?}");
    } else {
        generated(&mut inp, masked);
    }
}

fn generated(inp: &mut Input<'_>, masked: bool) {
    let mut s = Vec::new();
    let mut frames = 0u64;
    let mut messages = 0u64;
    let mut close = None;
    let token_len = inp.below(MAX_PONG_TOKEN + 1);
    let token: Vec<u8> = (0..token_len).map(|i| inp.u8() ^ i as u8).collect();
    let arm = inp.bool();
    let mut pong_placed = false;
    let mut in_message = false;
    let n = inp.below(12);
    let mut buf = vec![0u8; 70_000 + MAX_HEADER_LEN];
    for _ in 0..n {
        if close.is_some() {
            break;
        }
        let mask = masked.then(|| [inp.u8(), inp.u8(), inp.u8(), inp.u8()]);
        let kind = inp.u8() % 8;
        let w = match kind {
            0 | 1 | 2 => {
                let len = match inp.u8() % 4 {
                    0 => inp.below(126),
                    1 => 126 + inp.below(300),
                    2 => inp.below(8),
                    _ => 65_536 + inp.below(1000),
                };
                let payload = vec![inp.u8(); len];
                let fin = inp.bool();
                let op = if in_message {
                    Opcode::Continuation
                } else if kind == 0 {
                    Opcode::Text
                } else {
                    Opcode::Binary
                };
                let n = write_frame(&mut buf, fin, op, &payload, mask).expect("data frame");
                // RSV bits are the extensions' business: set some.
                if inp.u8() % 4 == 0 {
                    buf[0] |= 0x40;
                }
                in_message = !fin;
                if fin {
                    messages += 1;
                }
                n
            }
            3 => write_ping(&mut buf, inp.bytes(MAX_CONTROL_PAYLOAD), mask).expect("ping"),
            4 => write_pong(&mut buf, inp.bytes(MAX_CONTROL_PAYLOAD), mask).expect("pong"),
            5 if !pong_placed => {
                pong_placed = true;
                write_pong(&mut buf, &token, mask).expect("own pong")
            }
            6 => {
                let code = [1000u16, 1001, 1011, 3000, 4999][inp.below(5)];
                close = Some(code);
                write_close(&mut buf, code, mask).expect("close")
            }
            _ => write_ping(&mut buf, b"", mask).expect("ping"),
        };
        s.extend_from_slice(&buf[..w]);
        frames += 1;
    }
    let cuts = cuts_from(inp, s.len());
    let mut t = FrameTracker::new(masked);
    if arm {
        assert!(t.expect_pong(&token));
    }
    let fed = feed_all(&mut t, &s, &cuts);
    assert_eq!(
        t.lost_sync(),
        None,
        "a valid stream lost sync: {:?}",
        fed.events
    );
    assert_eq!(fed.frames, frames);
    assert_eq!(t.messages(), messages);
    assert!(t.at_boundary());
    assert_eq!(t.in_fragmented_message(), in_message);
    assert_eq!(t.close_seen(), close.is_some());
    assert_eq!(t.close_code(), close);
    assert_eq!(
        reference(&s, masked)
            .iter()
            .filter(|e| matches!(e, Ev::End(_)))
            .count() as u64,
        frames
    );
    if arm && pong_placed {
        // The first Pong carrying the token is ours (another Pong with the
        // same payload placed earlier by kind 4 is possible but rare: then
        // that one is taken; either way exactly one).
        assert_eq!(
            fed.own_pongs.len(),
            1,
            "own pong not reported once: {:?}",
            fed.own_pongs
        );
        let (end, len) = fed.own_pongs[0];
        let start = end - len as usize;
        for &(at, held) in &fed.held {
            if at > start && at <= end {
                assert!(
                    held >= at - start || at == end,
                    "byte {at} of our own Pong ({start}..{end}) released: held {held}"
                );
            }
        }
        assert!(!t.pong_expected());
    } else if !arm {
        assert!(fed.own_pongs.is_empty());
    }
}
