//! Messages of several MiB, byte-exact, through TLS on both sides (wss:// client to mod_ssl,
//! wss:// backend through SSLProxyEngine), and through plain TCP for reference.

use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip};
use wst_e2e::{binary_payload, payload, Browser, Httpd, Pki, Target, WsClient, WstEcho};

const MIB: usize = 1024 * 1024;

fn big_roundtrips(t: &Target, what: &str) {
    let (_r, mut ws) = WsClient::connect(t, "/ws/echo", Browser::Chrome).unwrap();
    let started = Instant::now();
    for (i, n) in [4 * MIB, 16 * MIB].into_iter().enumerate() {
        let bin = binary_payload(n, 3 + i as u8);
        let back = roundtrip(&mut ws, Message::binary(bin.clone()))
            .unwrap_or_else(|e| panic!("{what}: {n} bytes binary: {e}"));
        let back = back.into_data();
        assert_eq!(back.len(), bin.len(), "{what}: binary length");
        if let Some(pos) = back.iter().zip(bin.iter()).position(|(a, b)| a != b) {
            panic!("{what}: {n}-byte binary message differs at byte {pos}");
        }
        let text = String::from_utf8(payload(n + 1, 9 + i as u8)).unwrap();
        let back = roundtrip(&mut ws, Message::text(text.clone()))
            .unwrap_or_else(|e| panic!("{what}: {n} bytes text: {e}"));
        match back {
            Message::Text(s) => assert!(s.as_str() == text, "{what}: text message differs"),
            other => panic!("{what}: expected text back, got {:?}", other.len()),
        }
    }
    // Fragmented: one 16 MiB message in 16 frames of 1 MiB, written raw on the connection.
    {
        use std::io::Write;
        use wst_e2e::ws::{encode_frame, OP_BINARY, OP_CONT};
        let bin = binary_payload(16 * MIB, 77);
        for (i, chunk) in bin.chunks(MIB).enumerate() {
            let op = if i == 0 { OP_BINARY } else { OP_CONT };
            let last = (i + 1) * MIB >= bin.len();
            let frame = encode_frame(last, op, chunk, Some([0x11, 0x22, 0x33, i as u8]));
            ws.get_mut().write_all(&frame).unwrap();
        }
        ws.get_mut().flush().unwrap();
        let back = wst_e2e::client::next_data(&mut ws).unwrap();
        assert!(
            back.into_data()[..] == bin[..],
            "{what}: fragmented 16 MiB differs"
        );
    }
    close(&mut ws);
    eprintln!("{what}: done in {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{what}: took {:?}",
        started.elapsed()
    );
}

#[test]
fn sixteen_mib_messages_wss_front_wss_backend() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl");
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = wst_e2e::start_tls_both_sides(&pki, b.port());
    big_roundtrips(&h.tls_target(h.port_of("TLS_PORT")), "wss->wss");
    let line = h
        .wait_access(Duration::from_secs(5), |l| l.status == 101)
        .expect("no 101 in the access log");
    // 4+4+16+16+16 MiB each way, plus framing and TLS records on the front side.
    assert!(
        line.bytes_in > 56 * MIB as u64 && line.bytes_out > 56 * MIB as u64,
        "access log counts too small: {}",
        line.raw
    );
}

#[test]
fn sixteen_mib_messages_plain() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    big_roundtrips(&h.target(), "ws->ws");
}
