//! `ProxyWebsocketMaxTunnels` counts open tunnels, not handshakes in progress.
//!
//! With a cap of 2, two upgrades stuck on a backend that never answers must not lock the
//! next client out (they are bounded by ProxyTimeout instead); two real tunnels fill the cap
//! and the third upgrade gets 503 with Retry-After.

use std::io::Read;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::roundtrip;
use wst_e2e::{Browser, Httpd, RawClient, UpgradeRequest, WsClient, WstEcho};

/// Accepts connections and reads them, never answering, for `hold`.
fn silent_backend(hold: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        let t0 = Instant::now();
        l.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        while t0.elapsed() < hold {
            if let Ok((s, _)) = l.accept() {
                s.set_read_timeout(Some(Duration::from_millis(50))).ok();
                held.push(s);
            }
            for s in held.iter_mut() {
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b);
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    port
}

#[test]
fn handshakes_in_progress_do_not_hold_the_cap() {
    if Httpd::flavor().wst_is_stock {
        eprintln!("SKIP: the stock module has no ProxyWebsocketMaxTunnels");
        return;
    }
    let silent = silent_backend(Duration::from_secs(30));
    let echo = WstEcho::start();
    let h = Httpd::builder()
        .var("SILENT_PORT", silent)
        .var("ECHO_PORT", echo.port())
        .config(
            "ProxyWebsocketMaxTunnels 2\nProxyTimeout 20\n\
ProxyPass /silent/ ws://127.0.0.1:{SILENT_PORT}/\n\
ProxyPass /ws/ ws://127.0.0.1:{ECHO_PORT}/\n",
        )
        .start();
    let t = h.target();

    // Two upgrades that the backend never answers: in progress for up to 20 s.
    let mut stuck = Vec::new();
    for i in 0..2 {
        let mut c = RawClient::connect(&t).expect("connect");
        let req = UpgradeRequest::new(&format!("/silent/{i}"), &t.host, Browser::Chrome);
        c.send(&req.to_bytes()).expect("send upgrade");
        stuck.push(c);
    }
    thread::sleep(Duration::from_millis(500));

    // Real tunnels still get in, up to the cap.
    let mut open = Vec::new();
    for i in 0..2 {
        let (resp, mut ws) = WsClient::connect(&t, &format!("/ws/open-{i}"), Browser::Firefox)
            .unwrap_or_else(|e| panic!("tunnel {i} refused while only handshakes were in progress: {e}"));
        assert_eq!(resp.status, 101);
        let m = Message::text(format!("tunnel {i}"));
        assert_eq!(roundtrip(&mut ws, m.clone()).unwrap(), m);
        open.push(ws);
    }

    // The cap is reached by open tunnels: the next upgrade is refused before the backend.
    let mut c = RawClient::connect(&t).expect("connect");
    let req = UpgradeRequest::new("/ws/third", &t.host, Browser::Chrome);
    c.send(&req.to_bytes()).expect("send upgrade");
    let r = c.read_response().expect("an answer");
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("Retry-After"), Some("10"), "{}", r.head);

    // A tunnel that closes gives its slot back.
    drop(open.pop());
    let ok = wst_e2e::wait_for(Duration::from_secs(5), || {
        WsClient::connect(&t, "/ws/after-close", Browser::Chrome).ok()
    });
    assert!(ok.is_some(), "no slot came back after a tunnel closed");
    drop(stuck);
}
