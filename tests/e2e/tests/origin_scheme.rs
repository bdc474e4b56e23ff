//! `ProxyWebsocketAllowOrigin <origin>`: the scheme is matched exactly as written. Browsers
//! send http and https origins only, so `Origin: wss://app.example.com` is not the allowed
//! `https://app.example.com` (403, logged as WST042, the backend never contacted), while
//! `https://app.example.com` (default port or explicit :443, any case) opens the tunnel. An
//! entry written with ws:// or wss:// matches exactly that scheme.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{check_101, close, roundtrip};
use wst_e2e::{need, Browser, Httpd, RawClient, Target, UpgradeRequest, WstEcho};

/// Upgrade to `path` with `Origin: origin`: Ok(()) for a working tunnel, Err(status) else.
fn upgrade_with_origin(t: &Target, path: &str, origin: &str) -> Result<(), u16> {
    let req = UpgradeRequest::new(path, &t.host, Browser::Chrome).set("Origin", origin);
    let mut c = RawClient::connect(t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let r = c
        .read_head()
        .unwrap_or_else(|e| panic!("{origin}: no answer: {e}"));
    if r.status != 101 {
        return Err(r.status);
    }
    check_101(&req, &r).unwrap_or_else(|e| panic!("{origin}: {e}"));
    let mut ws = c.into_websocket();
    assert_eq!(
        roundtrip(&mut ws, Message::text(origin)).unwrap(),
        Message::text(origin)
    );
    close(&mut ws);
    Ok(())
}

#[test]
fn origin_scheme_is_matched_as_written() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(
            "<Location /app/>\n\
             ProxyWebsocketAllowOrigin https://app.example.com\n\
             </Location>\n\
             <Location /tool/>\n\
             ProxyWebsocketAllowOrigin wss://tool.example.com\n\
             </Location>\n\
             ProxyPass /app/ ws://127.0.0.1:{BACKEND_PORT}/app/\n\
             ProxyPass /tool/ ws://127.0.0.1:{BACKEND_PORT}/tool/\n",
        )
        .start();
    let t = h.target();
    let cases: &[(&str, &str, Result<(), u16>)] = &[
        ("/app/", "wss://app.example.com", Err(403)),
        ("/app/", "WSS://APP.EXAMPLE.COM:443", Err(403)),
        ("/app/", "ws://app.example.com", Err(403)),
        ("/app/", "http://app.example.com", Err(403)),
        ("/app/", "https://app.example.com", Ok(())),
        ("/app/", "HTTPS://App.Example.Com:443", Ok(())),
        ("/tool/", "wss://tool.example.com", Ok(())),
        ("/tool/", "https://tool.example.com", Err(403)),
    ];
    for (i, (prefix, origin, want)) in cases.iter().enumerate() {
        let path = format!("{prefix}case-{i}");
        assert_eq!(
            upgrade_with_origin(&t, &path, origin),
            *want,
            "{origin} on {prefix}"
        );
        let reached = b
            .requests()
            .iter()
            .any(|r| r.contains(&format!("case-{i} ")));
        assert_eq!(
            reached,
            want.is_ok(),
            "{origin} on {prefix}: backend contacted?"
        );
        if want.is_err() {
            let line = h
                .wait_error_line(Duration::from_secs(5), &["WST042", origin])
                .unwrap_or_else(|| panic!("{origin}: no WST042 line:\n{}", h.error_log()));
            assert!(line.contains("refused"), "{line}");
        }
    }
}
