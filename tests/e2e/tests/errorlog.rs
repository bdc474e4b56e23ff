//! What the error log says: nothing at error/warn level for tunnels that end normally, whoever
//! ends them; one clear error (naming the backend) for each request that fails.

use std::time::{Duration, Instant};

use tungstenite::Message;
use wst_e2e::client::{close, next_data, roundtrip, RawClient};
use wst_e2e::{Browser, Httpd, Pki, Target, UpgradeRequest, WsClient, WstEcho};

/// Error-log lines at `error` or `warn` level (any module), after start-up (mod_ssl may warn
/// about its OpenSSL version at start-up; that is not about tunnels).
fn error_or_warn_lines(h: &Httpd) -> Vec<String> {
    let log = h.error_log();
    let after_start = log
        .lines()
        .skip_while(|l| !l.contains("resuming normal operations"))
        .collect::<Vec<_>>();
    after_start
        .into_iter()
        .filter(|l| matches!(level(l), Some("error" | "warn")))
        .map(str::to_string)
        .collect()
}

/// The level of an error-log line (`[proxy:error]` on 2.4, `[error]` on 2.2).
fn level(line: &str) -> Option<&str> {
    Httpd::flavor().log_line_level(line)
}

/// Whether `line` may be from `module` (2.2's lines carry no module tag: any line may).
fn from(line: &str, module: &str) -> bool {
    Httpd::flavor().log_line_from(line, module)
}

/// Wait until `n` tunnels have ended (their `tunnel closed` debug lines are there).
fn wait_tunnels_closed(h: &Httpd, n: usize) {
    let ok = wst_e2e::wait_for(Duration::from_secs(10), || {
        let c = h
            .error_log()
            .lines()
            .filter(|l| from(l, "proxy_wstunnel") && l.contains("tunnel closed"))
            .count();
        (c >= n).then_some(())
    });
    if ok.is_none() && !Httpd::flavor().wst_is_stock {
        panic!("fewer than {n} `tunnel closed` lines after 10 s");
    }
}

/// The ways a tunnel ends normally: the client closes (close handshake, or FIN only, or a
/// half-close), the backend closes (close frame + FIN, or FIN only), both at once.
fn routine_tunnels(t: &Target) -> usize {
    let mut n = 0;
    // 1. Client closes politely.
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(t, "/ws/echo", br).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text("a")).unwrap(),
            Message::text("a")
        );
        close(&mut ws);
        n += 1;
    }
    // 2. Client drops the connection (FIN, no close frame).
    {
        let (_r, mut ws) = WsClient::connect(t, "/ws/echo", Browser::Chrome).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text("b")).unwrap(),
            Message::text("b")
        );
        drop(ws);
        n += 1;
    }
    // 3. Client half-closes, the backend answers and closes.
    {
        let req = UpgradeRequest::new("/ws/halfclose", &t.host, Browser::Chrome);
        let mut c = RawClient::connect(t).unwrap();
        c.send(&req.to_bytes()).unwrap();
        assert_eq!(c.read_head().unwrap().status, 101);
        c.send(&wst_e2e::ws::client_frame(wst_e2e::ws::OP_TEXT, b"12345"))
            .unwrap();
        c.shutdown_write().unwrap();
        let f = c.read_frame().unwrap();
        assert_eq!(f.payload, b"11");
        let (_rest, end) = c.read_until_close(Duration::from_secs(5));
        assert_ne!(end, wst_e2e::client::End::Timeout);
        n += 1;
    }
    // 4. Backend closes politely (close frame, FIN); the client answers the close.
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(t, "/ws/bye", br).unwrap();
        assert_eq!(next_data(&mut ws).unwrap(), Message::text("bye"));
        match next_data(&mut ws) {
            Ok(Message::Close(_)) => {}
            other => panic!("expected the backend's close, got {other:?}"),
        }
        close(&mut ws);
        n += 1;
    }
    // 5. Backend drops the connection (FIN without a close frame).
    {
        let (_r, mut ws) = WsClient::connect(t, "/ws/drop", Browser::Firefox).unwrap();
        assert_eq!(next_data(&mut ws).unwrap(), Message::text("bye"));
        assert!(next_data(&mut ws).is_err(), "connection should end");
        n += 1;
    }
    // 6. Both close at the same time: the client sends its close frame while the backend's
    //    close is on its way.
    {
        let req = UpgradeRequest::new("/ws/bye", &t.host, Browser::Chrome);
        let mut c = RawClient::connect(t).unwrap();
        c.send(&req.to_bytes()).unwrap();
        c.send(&wst_e2e::ws::client_frame(
            wst_e2e::ws::OP_CLOSE,
            &[0x03, 0xe8],
        ))
        .unwrap();
        let _ = c.read_head();
        c.shutdown_write().unwrap();
        let (_rest, end) = c.read_until_close(Duration::from_secs(5));
        assert_ne!(end, wst_e2e::client::End::Timeout);
        n += 1;
    }
    n
}

#[test]
fn routine_closes_log_nothing_at_error_or_warn() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n")
        .start();
    let n = routine_tunnels(&h.target());
    wait_tunnels_closed(&h, n);
    let bad = error_or_warn_lines(&h);
    assert!(
        bad.is_empty(),
        "routine tunnel ends logged at error/warn level:\n{}",
        bad.join("\n")
    );
}

/// The same through mod_ssl on the client side (filtered endpoint) and to a wss:// backend.
#[test]
fn routine_closes_over_tls_log_nothing_at_error_or_warn() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl");
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = wst_e2e::start_tls_both_sides(&pki, b.port());
    let n = routine_tunnels(&h.tls_target(h.port_of("TLS_PORT")));
    wait_tunnels_closed(&h, n);
    let bad: Vec<String> = error_or_warn_lines(&h)
        .into_iter()
        .filter(|l| {
            ["proxy_wstunnel", "proxy", "proxy_http", "ssl", "core"]
                .iter()
                .any(|m| from(l, m))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "routine tunnel ends over TLS logged at error/warn level:\n{}",
        bad.join("\n")
    );
}

/// Backend down: every attempt is a 503 with an error-level line that names the backend; no
/// flood of lines per failure.
#[test]
fn backend_down_logs_one_error_per_failure() {
    let port = wst_e2e::net::closed_port();
    let h = Httpd::builder()
        .var("DEAD_PORT", port)
        .config("ProxyPass /ws/ ws://127.0.0.1:{DEAD_PORT}/\n")
        .start();
    let t = h.target();
    const N: usize = 3;
    for i in 0..N {
        let before = error_lines(&h).len();
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&UpgradeRequest::new("/ws/echo", &t.host, Browser::ALL[i % 2]).to_bytes())
            .unwrap();
        let r = c.read_head().unwrap();
        assert_eq!(r.status, 503, "{}", r.head);
        let lines = wst_e2e::wait_for(Duration::from_secs(3), || {
            let l = error_lines(&h);
            (l.len() > before).then_some(l)
        })
        .unwrap_or_else(|| panic!("failure #{i}: no error-level line"));
        let new = &lines[before..];
        for l in new {
            assert!(
                l.contains("127.0.0.1"),
                "failure #{i}: an error line that does not name the backend: {l}"
            );
        }
        assert!(
            new.len() <= 3,
            "failure #{i}: {} error lines for one failed request:\n{}",
            new.len(),
            new.join("\n")
        );
        eprintln!("failure #{i}:\n{}", new.join("\n"));
    }
}

fn error_lines(h: &Httpd) -> Vec<String> {
    h.error_log()
        .lines()
        .filter(|l| level(l) == Some("error"))
        .map(str::to_string)
        .collect()
}

/// mod_proxy's error line for a wss:// backend it cannot speak TLS to: AH00961 "SSL Proxy
/// requested ... [Hint: SSLProxyEngine]" (2.4); 2.2's mod_proxy says "proxy: WSS: failed to
/// enable ssl support for ..." and has no hint.
fn is_ssl_proxy_hint(l: &str) -> bool {
    level(l) == Some("error")
        && (l.contains("SSLProxyEngine")
            || l.contains("SSL Proxy requested")
            || (!Httpd::flavor().is_24() && l.contains("failed to enable ssl support")))
}

/// A wss:// backend with mod_ssl loaded but no `SSLProxyEngine on`: 500, and the log says why
/// (mod_proxy's AH00961 "SSL Proxy requested ... [Hint: SSLProxyEngine]").
#[test]
fn wss_backend_without_sslproxyengine_is_500_with_hint() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl");
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = Httpd::builder()
        .module("ssl")
        .pki(&pki)
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ wss://localhost:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    let started = Instant::now();
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&UpgradeRequest::new("/ws/echo", &t.host, Browser::Chrome).to_bytes())
        .unwrap();
    let r = c.read_head().unwrap();
    assert_eq!(r.status, 500, "{}", r.head);
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = h
        .error_log()
        .lines()
        .find(|l| is_ssl_proxy_hint(l))
        .map(str::to_string);
    assert!(
        line.is_some(),
        "no error line mentioning SSLProxyEngine:\n{}",
        h.error_log()
    );
    assert!(
        b.requests().is_empty(),
        "the backend got a request in clear text: {:?}",
        b.requests()
    );
}

/// A wss:// backend with no mod_ssl loaded at all: the same 500 and hint.
#[test]
fn wss_backend_without_mod_ssl_is_500_with_hint() {
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config("ProxyPass /ws/ wss://localhost:{BACKEND_PORT}/\n")
        .start();
    let t = h.target();
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&UpgradeRequest::new("/ws/echo", &t.host, Browser::Firefox).to_bytes())
        .unwrap();
    let r = c.read_head().unwrap();
    assert_eq!(r.status, 500, "{}", r.head);
    assert!(
        h.error_log().lines().any(is_ssl_proxy_hint),
        "no error line mentioning SSLProxyEngine:\n{}",
        h.error_log()
    );
    assert!(b.requests().is_empty(), "{:?}", b.requests());
}
