//! The backend's answer to the upgrade has one deadline for its whole head.
//!
//! ProxyTimeout (or the worker's `timeout=`) bounds each read from the backend; a backend
//! that sends its head a byte at a time would otherwise hold an httpd worker for as long as
//! it likes (the head may be 64 KiB). The module bounds the whole head by that same
//! timeout: the client gets 504 and the error log says why (WST019).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wst_e2e::{Browser, Httpd, RawClient, UpgradeRequest};

/// A backend that reads the upgrade request, then sends a 101 head one byte every
/// `gap`, never finishing it (for at most 60 s). Returns its port, a count of bytes
/// sent and a stop flag.
fn trickling_backend(gap: Duration) -> (u16, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent2, stop2) = (sent.clone(), stop.clone());
    thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\n"
            .to_vec();
        head.extend(std::iter::repeat_n(b'a', 4096).collect::<Vec<u8>>());
        let t0 = Instant::now();
        for byte in head {
            if stop2.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(60) {
                return;
            }
            if s.write_all(&[byte]).is_err() {
                return; // the proxy gave up: what this test wants
            }
            sent2.fetch_add(1, Ordering::Relaxed);
            thread::sleep(gap);
        }
    });
    (port, sent, stop)
}

#[test]
fn trickled_head_ends_with_504_at_the_deadline() {
    let (port, sent, stop) = trickling_backend(Duration::from_millis(100));
    let h = Httpd::builder()
        .var("BACKEND_PORT", port)
        .config("ProxyTimeout 2\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    let mut c = RawClient::connect(&t).expect("connect");
    c.timeout = Duration::from_secs(20);
    let req = UpgradeRequest::new("/ws/trickle", &t.host, Browser::Chrome);
    let t0 = Instant::now();
    c.send(&req.to_bytes()).expect("send upgrade");
    let r = c.read_head().expect("an answer, not a hang");
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    eprintln!(
        "answer {} after {took:?}; the backend had sent {} bytes of its head",
        r.status,
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(r.status, 504, "{}", r.head);
    // Each byte came well within ProxyTimeout, so only a deadline on the whole head ends
    // this: about 2 s, not the 40 s the trickle would take.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "504 after {took:?}, expected ~2 s (ProxyTimeout 2)"
    );
    if !Httpd::flavor().wst_is_stock {
        assert!(
            h.wait_error_line(Duration::from_secs(3), &["WST019", "did not complete"])
                .is_some(),
            "no WST019 line:\n{}",
            h.error_log()
        );
    }
}

/// The deadline is ProxyPass's `timeout=` when the worker has one.
#[test]
fn worker_timeout_is_the_head_deadline() {
    let (port, _sent, stop) = trickling_backend(Duration::from_millis(100));
    let h = Httpd::builder()
        .var("BACKEND_PORT", port)
        .config("ProxyTimeout 30\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/ timeout=1\n")
        .start();
    let t = h.target();
    let mut c = RawClient::connect(&t).expect("connect");
    c.timeout = Duration::from_secs(20);
    let req = UpgradeRequest::new("/ws/trickle", &t.host, Browser::Firefox);
    let t0 = Instant::now();
    c.send(&req.to_bytes()).expect("send upgrade");
    let r = c.read_head().expect("an answer, not a hang");
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(r.status, 504, "{}", r.head);
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "504 after {took:?}, expected ~1 s (timeout=1)"
    );
}
