//! A raw-TCP WebSocket backend that performs the 101 handshake itself and records every frame
//! it receives (opcode, mask bit, payload, arrival time), for tests of what the module sends
//! to the backend (its own Pings and Closes, and that Pongs are not relayed).
//!
//! Behaviour per connection: echo data frames (unmasked, same FIN/opcode/payload); answer a
//! Ping with a Pong carrying the same payload when `answer_pings`; answer a Close with a Close
//! carrying the same payload, then shut down its write side and read until EOF.
//! Every connection lives at most `lifetime`; reads poll every 100 ms so the backend stops
//! promptly when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rawbackend::{is_timeout, read_request_head, response_101, NoHead, Recorder};
use crate::ws::{self, Frame, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};

/// What one backend connection saw.
#[derive(Clone, Debug, Default)]
pub struct BackendConn {
    /// The upgrade request head.
    pub request: String,
    /// Every frame received after the handshake, with its arrival time.
    pub frames: Vec<(Instant, Frame)>,
    /// "eof", "reset: ...", "lifetime", "stopped", "bad-request" once the connection ended.
    pub end: String,
}

impl BackendConn {
    pub fn frames_with(&self, opcode: u8) -> Vec<Frame> {
        self.frames
            .iter()
            .filter(|(_, f)| f.opcode == opcode)
            .map(|(_, f)| f.clone())
            .collect()
    }
    /// Close code of the first Close frame received, if any (None also for an empty Close).
    pub fn close_code(&self) -> Option<u16> {
        self.frames_with(OP_CLOSE)
            .first()
            .and_then(|f| close_code(&f.payload))
    }
}

/// Close code from a Close frame's payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

pub struct FrameBackend {
    conns: Recorder<BackendConn>,
}

impl FrameBackend {
    /// Start on a free port. Connections live at most `lifetime`.
    pub fn start(answer_pings: bool, lifetime: Duration) -> FrameBackend {
        let conns = Recorder::start(lifetime + Duration::from_secs(60), move |s, rec, stop| {
            let end = serve(s, answer_pings, &rec, &stop, lifetime);
            rec.lock().unwrap().end = end;
        });
        FrameBackend { conns }
    }

    pub fn port(&self) -> u16 {
        self.conns.port()
    }
    pub fn connections(&self) -> usize {
        self.conns.connections()
    }
    /// Snapshot of connection `i`.
    pub fn conn(&self, i: usize) -> Option<BackendConn> {
        self.conns.get(i)
    }
    pub fn all(&self) -> Vec<BackendConn> {
        self.conns.all()
    }
    /// Wait until connection `i` satisfies `pred`.
    pub fn wait_conn(
        &self,
        i: usize,
        timeout: Duration,
        pred: impl Fn(&BackendConn) -> bool,
    ) -> Option<BackendConn> {
        self.conns.wait(i, timeout, pred)
    }
}

fn serve(
    mut s: TcpStream,
    answer_pings: bool,
    rec: &Mutex<BackendConn>,
    stop: &AtomicBool,
    lifetime: Duration,
) -> String {
    let started = Instant::now();
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let (head, mut buf) = match read_request_head(&mut s, stop, started + lifetime) {
        Ok(got) => got,
        Err(NoHead::Stopped | NoHead::Eof(_)) => return "bad-request".into(),
        Err(NoHead::Io(e, _)) => return format!("reset: {e}"),
    };
    let resp = response_101(&head);
    rec.lock().unwrap().request = String::from_utf8_lossy(&head).into_owned();
    if s.write_all(&resp).is_err() {
        return "write-error".into();
    }
    let mut chunk = [0u8; 16 * 1024];
    let mut close_sent = false;
    loop {
        while let Some((f, used)) = ws::decode_frame(&buf) {
            buf.drain(..used);
            let reply = match f.opcode {
                OP_PING if answer_pings => Some(ws::encode_frame(true, OP_PONG, &f.payload, None)),
                OP_TEXT | OP_BINARY | OP_CONT if !close_sent => {
                    Some(ws::encode_frame(f.fin, f.opcode, &f.payload, None))
                }
                OP_CLOSE if !close_sent => {
                    close_sent = true;
                    Some(ws::encode_frame(true, OP_CLOSE, &f.payload, None))
                }
                _ => None,
            };
            let is_close = f.opcode == OP_CLOSE;
            rec.lock().unwrap().frames.push((Instant::now(), f));
            if let Some(r) = reply {
                let _ = s.write_all(&r);
            }
            if is_close {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
        if stop.load(Ordering::Relaxed) {
            return "stopped".into();
        }
        if started.elapsed() > lifetime {
            return "lifetime".into();
        }
        match s.read(&mut chunk) {
            Ok(0) => return "eof".into(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return format!("reset: {e}"),
        }
    }
}
