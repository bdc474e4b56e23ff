//! What the raw-TCP test backends ([`crate::faults::FaultBackend`],
//! [`crate::framebackend::FrameBackend`]) share: a listener on 127.0.0.1 whose accept thread
//! records one `R` per connection and serves each on its own thread ([`Recorder`]), reading the
//! upgrade request head ([`read_request_head`]), and the 101 that answers it ([`response_101`]).
//!
//! Everything is bounded: the accept thread stops when the backend is dropped or after its
//! `accept_for`, and waits for its connection threads, which see the same stop flag.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ws;

/// Accepts on a free port of 127.0.0.1; every connection gets a fresh `R::default()` record
/// (in accept order) and a thread that runs `serve(stream, record, stop)`.
pub struct Recorder<R> {
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Arc<Mutex<R>>>>>,
    accept: Option<JoinHandle<()>>,
}

impl<R: Clone + Default + Send + 'static> Recorder<R> {
    /// Start accepting, for at most `accept_for` (or until dropped).
    pub fn start<F>(accept_for: Duration, serve: F) -> Recorder<R>
    where
        F: Fn(TcpStream, Arc<Mutex<R>>, Arc<AtomicBool>) + Clone + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Arc<Mutex<R>>>>> = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            let started = Instant::now();
            let mut threads = Vec::new();
            while !stop2.load(Ordering::Relaxed) && started.elapsed() < accept_for {
                match listener.accept() {
                    Ok((s, _)) => {
                        let rec = Arc::new(Mutex::new(R::default()));
                        conns2.lock().unwrap().push(rec.clone());
                        let (serve, st) = (serve.clone(), stop2.clone());
                        threads.push(std::thread::spawn(move || serve(s, rec, st)));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
            for t in threads {
                let _ = t.join();
            }
        });
        Recorder {
            port,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Snapshot of connection `i`'s record.
    pub fn get(&self, i: usize) -> Option<R> {
        self.conns
            .lock()
            .unwrap()
            .get(i)
            .map(|c| c.lock().unwrap().clone())
    }

    /// Snapshots of every connection's record, in accept order.
    pub fn all(&self) -> Vec<R> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// Wait (at most `timeout`) until connection `i` exists and its record satisfies `pred`.
    pub fn wait(&self, i: usize, timeout: Duration, pred: impl Fn(&R) -> bool) -> Option<R> {
        crate::wait_for(timeout, || self.get(i).filter(|r| pred(r)))
    }
}

impl<R> Drop for Recorder<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

/// A read that timed out (the backends poll with short read timeouts), not an error.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Why [`read_request_head`] has no head, with the bytes read before the peer closed or a
/// read failed.
#[derive(Debug)]
pub enum NoHead {
    /// The stop flag was set, or the deadline passed.
    Stopped,
    /// The peer closed before the end of the head.
    Eof(Vec<u8>),
    /// A read failed.
    Io(io::Error, Vec<u8>),
}

/// Read a request head (through its blank line) from `s`, whose read timeout must be short
/// (the stop flag and `deadline` are checked between reads). Ok((head, the bytes that came
/// after it)), or why not.
pub fn read_request_head(
    s: &mut TcpStream,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<(Vec<u8>, Vec<u8>), NoHead> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = ws::head_end(&head) {
            let extra = head.split_off(end);
            return Ok((head, extra));
        }
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return Err(NoHead::Stopped);
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(NoHead::Eof(head)),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(NoHead::Io(e, head)),
        }
    }
}

/// A 101 that accepts the WebSocket upgrade `request` (its Sec-WebSocket-Key answered).
pub fn response_101(request: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(request);
    let key = text
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(&key)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Clone, Debug, Default)]
    struct Head {
        request: Vec<u8>,
        extra: Vec<u8>,
        end: String,
    }

    fn head_recorder() -> Recorder<Head> {
        Recorder::start(
            Duration::from_secs(30),
            |mut s, rec: Arc<Mutex<Head>>, stop| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                let deadline = Instant::now() + Duration::from_secs(5);
                let got = read_request_head(&mut s, &stop, deadline);
                if let Ok((head, _)) = &got {
                    let _ = s.write_all(&response_101(head));
                }
                let mut r = rec.lock().unwrap();
                match got {
                    Ok((head, extra)) => (r.request, r.extra, r.end) = (head, extra, "head".into()),
                    Err(NoHead::Eof(partial)) => (r.request, r.end) = (partial, "eof".into()),
                    Err(why) => r.end = format!("{why:?}"),
                }
            },
        )
    }

    #[test]
    fn recorder_reads_heads_and_answers_101() {
        let b = head_recorder();
        let req =
            b"GET /x HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let mut c = TcpStream::connect(("127.0.0.1", b.port())).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(req).unwrap();
        c.write_all(b"extra").unwrap();
        let mut resp = Vec::new();
        let mut buf = [0u8; 1024];
        while ws::head_end(&resp).is_none() {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "EOF before the 101");
            resp.extend_from_slice(&buf[..n]);
        }
        let resp = String::from_utf8(resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 "), "{resp}");
        // RFC 6455's example key and accept value.
        assert!(
            resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{resp}"
        );
        let r = b
            .wait(0, Duration::from_secs(5), |r| !r.end.is_empty())
            .unwrap();
        assert_eq!((r.request.as_slice(), r.end.as_str()), (&req[..], "head"));
        assert!(b"extra".starts_with(&r.extra), "{:?}", r.extra);

        // A peer that closes mid-head; both connections are recorded, in accept order.
        let mut c2 = TcpStream::connect(("127.0.0.1", b.port())).unwrap();
        c2.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        drop(c2);
        let r = b
            .wait(1, Duration::from_secs(5), |r| !r.end.is_empty())
            .unwrap();
        assert_eq!(
            (r.request.as_slice(), r.end.as_str()),
            (&b"GET / HTTP/1.1\r\n"[..], "eof")
        );
        assert_eq!(b.connections(), 2);
        assert_eq!(b.all().len(), 2);
        drop(c);
    }

    #[test]
    fn recorder_stops_promptly_when_dropped() {
        let b = head_recorder();
        let c = TcpStream::connect(("127.0.0.1", b.port())).unwrap();
        assert!(b.wait(0, Duration::from_secs(5), |_| true).is_some());
        let t0 = Instant::now();
        drop(b);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        drop(c);
    }
}
