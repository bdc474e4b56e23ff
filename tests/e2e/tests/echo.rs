//! Basic tunneling through `ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/`.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{close, next_data, roundtrip};
use wst_e2e::{binary_payload, payload, Browser, Httpd, WsClient, WstEcho};

const PROXYPASS: &str = "ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n";

fn start() -> (WstEcho, Httpd) {
    let backend = WstEcho::start();
    let httpd = Httpd::builder()
        .var("BACKEND_PORT", backend.port())
        .config(PROXYPASS)
        .start();
    (backend, httpd)
}

const SIZES: [usize; 8] = [0, 1, 125, 126, 65535, 65536, 1 << 20, 8 << 20];

#[test]
fn echo_text_and_binary_all_sizes_byte_exact() {
    let (_b, h) = start();
    let (_resp, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Chrome).unwrap();
    for (i, &n) in SIZES.iter().enumerate() {
        let text = String::from_utf8(payload(n, i as u8)).unwrap();
        match roundtrip(&mut ws, Message::text(text.clone())).unwrap() {
            Message::Text(t) => {
                assert_eq!(t.len(), n, "text size {n}");
                assert!(t.as_str() == text, "text of {n} bytes differs");
            }
            m => panic!("text {n}: unexpected {m:?}"),
        }
        let bin = binary_payload(n, i as u8);
        match roundtrip(&mut ws, Message::binary(bin.clone())).unwrap() {
            Message::Binary(b) => {
                assert_eq!(b.len(), n, "binary size {n}");
                assert!(b[..] == bin[..], "binary of {n} bytes differs");
            }
            m => panic!("binary {n}: unexpected {m:?}"),
        }
    }
    close(&mut ws);
}

#[test]
fn echo_with_firefox_headers() {
    let (_b, h) = start();
    let (_resp, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Firefox).unwrap();
    let m = roundtrip(&mut ws, Message::text("hello from firefox")).unwrap();
    assert_eq!(m, Message::text("hello from firefox"));
    close(&mut ws);
}

#[test]
fn many_messages_both_directions_interleaved() {
    let (_b, h) = start();
    let (_resp, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Chrome).unwrap();
    // Send a burst without reading, then read all answers in order.
    for i in 0..200u32 {
        ws.send(Message::binary(binary_payload(1000 + i as usize, i as u8)))
            .unwrap();
    }
    for i in 0..200u32 {
        let m = next_data(&mut ws).unwrap();
        assert_eq!(
            m.into_data()[..],
            binary_payload(1000 + i as usize, i as u8)[..],
            "message {i}"
        );
    }
    close(&mut ws);
}

#[test]
fn access_log_shows_101_and_counts_tunneled_bytes() {
    // A tunnel that keeps its worker (ProxyWebsocketAsync Off; stock's only way) is logged when
    // it ends, with its bytes; a handed-over one at the hand-over (next test).
    let backend = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", backend.port())
        .config(PROXYPASS)
        .async_tunnels(false)
        .start();
    let (_resp, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Chrome).unwrap();
    let n = 1 << 20;
    let data = binary_payload(n, 7);
    let m = roundtrip(&mut ws, Message::binary(data.clone())).unwrap();
    assert_eq!(m.into_data().len(), n);
    close(&mut ws);
    drop(ws);
    let line = h
        .wait_access(Duration::from_secs(10), |l| l.request.contains("/ws/echo"))
        .unwrap_or_else(|| panic!("no access log line for /ws/echo:\n{}", h.access_log()));
    assert_eq!(line.status, 101, "access log: {}", line.raw);
    // %I counts the request head plus the client's tunneled bytes (>= 1 MiB payload), %O the
    // 101 head plus the echoed bytes (>= 1 MiB).
    assert!(line.bytes_in >= n as u64, "%I too small: {}", line.raw);
    assert!(line.bytes_out >= n as u64, "%O too small: {}", line.raw);
    // ...and not wildly more than what was moved (frame headers, masks, handshake, close).
    assert!(
        line.bytes_in < n as u64 + 4096,
        "%I too large: {}",
        line.raw
    );
    assert!(
        line.bytes_out < n as u64 + 4096,
        "%O too large: {}",
        line.raw
    );
}

/// A tunnel handed to the child's reactor: its 101 line is in the access log while it is still
/// open, counting the handshake only (its bytes go to ProxyWebsocketTunnelLog).
#[test]
fn access_log_line_of_a_handed_over_tunnel_is_written_at_the_hand_over() {
    if !wst_e2e::need::ours() {
        return;
    }
    let backend = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", backend.port())
        .config(PROXYPASS)
        .async_tunnels(true)
        .start();
    let (_resp, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Chrome).unwrap();
    let n = 1 << 20;
    let m = roundtrip(&mut ws, Message::binary(binary_payload(n, 7))).unwrap();
    assert_eq!(m.into_data().len(), n);
    let line = h
        .wait_access(Duration::from_secs(10), |l| l.request.contains("/ws/echo"))
        .unwrap_or_else(|| panic!("no access log line while the tunnel is open:\n{}", h.access_log()));
    assert_eq!(line.status, 101, "access log: {}", line.raw);
    assert!(line.bytes_in < 4096 && line.bytes_out < 4096, "handshake only: {}", line.raw);
    close(&mut ws);
}

#[test]
fn debug_log_names_serving_url() {
    let (b, h) = start();
    let (_resp, mut ws) = WsClient::connect(&h.target(), "/ws/echo", Browser::Chrome).unwrap();
    roundtrip(&mut ws, Message::text("x")).unwrap();
    close(&mut ws);
    let want = format!("serving URL ws://127.0.0.1:{}/echo", b.port());
    assert!(
        // 2.2's error log has no module tag: the line names the URL only.
        h.wait_error_line(
            Duration::from_secs(5),
            if Httpd::flavor().version < (2, 4, 0) {
                vec![want.as_str()]
            } else {
                vec!["proxy_wstunnel", want.as_str()]
            }
            .as_slice()
        )
        .is_some(),
        "error log lacks a proxy_wstunnel line with {want:?}"
    );
}
