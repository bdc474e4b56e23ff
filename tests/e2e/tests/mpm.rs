//! The basic echo under each MPM the httpd under test can run (httpd 2.2: only its compiled-in
//! one; the others are reported as skipped).

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip};
use wst_e2e::{binary_payload, Browser, Httpd, WsClient, WstEcho};

fn echo_under(mpm: &str) {
    if !Httpd::flavor().supports_mpm(mpm) {
        eprintln!("SKIP: this httpd cannot run the {mpm} MPM");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .mpm(mpm)
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    assert!(
        h.config_text().contains(&format!("mpm_{mpm}")) || !Httpd::flavor().is_24(),
        "config does not load mpm_{mpm}"
    );
    if Httpd::flavor().is_24() {
        assert!(
            h.wait_error_line(std::time::Duration::from_secs(5), &[&format!("mpm_{mpm}:")])
                .is_some(),
            "error log does not show the {mpm} MPM running"
        );
    }
    // Several tunnels open at once, then used in turn.
    let mut conns = Vec::new();
    for i in 0..4 {
        let br = Browser::ALL[i % 2];
        let (_r, ws) = WsClient::connect(&h.target(), "/ws/echo", br)
            .unwrap_or_else(|e| panic!("{mpm} {br:?}: {e}"));
        conns.push(ws);
    }
    for (i, ws) in conns.iter_mut().enumerate() {
        for n in [0usize, 1, 125, 126, 65535, 65536] {
            let text = format!("{mpm} #{i} {n}");
            assert_eq!(
                roundtrip(ws, Message::text(text.clone())).unwrap(),
                Message::text(text)
            );
            let bin = binary_payload(n, i as u8);
            assert_eq!(
                roundtrip(ws, Message::binary(bin.clone())).unwrap(),
                Message::binary(bin)
            );
        }
    }
    for ws in conns.iter_mut() {
        close(ws);
    }
    assert!(!h.child_pids().is_empty(), "{mpm}: no httpd children");
}

#[test]
fn echo_under_prefork() {
    echo_under("prefork");
}

#[test]
fn echo_under_worker() {
    echo_under("worker");
}

#[test]
fn echo_under_event() {
    echo_under("event");
}
