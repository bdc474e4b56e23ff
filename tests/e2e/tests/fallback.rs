//! `ProxyWebsocketFallbackToProxyHttp`: only an explicit `On` hands upgrades to mod_proxy_http
//! (which tunnels them itself on 2.4.47+); `Off` or unset, this module serves them.
//!
//! Evidence of who served a tunnel, from the debug log: this module logs `AH02451: serving URL`
//! under proxy_wstunnel; mod_proxy_http logs `AH10239: HTTP: tunneling protocol websocket`
//! under proxy_http. (2.2's error log has no module tag; there the messages alone tell, and
//! 2.2's mod_proxy_http never tunnels.)

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip};
use wst_e2e::{Browser, Httpd, WsClient, WstEcho};

fn start(directive: Option<&str>) -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let mut cfg = String::new();
    if let Some(d) = directive {
        cfg.push_str(&format!("ProxyWebsocketFallbackToProxyHttp {d}\n"));
    }
    cfg.push_str("ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n");
    let h = Httpd::builder()
        .no_fallback_directive()
        .log_level("warn proxy_wstunnel:debug proxy_http:debug")
        .var("BACKEND_PORT", b.port())
        .config(&cfg)
        .start();
    (b, h)
}

/// Open a tunnel, exchange messages both ways, close it; wait for its access-log line.
fn tunnel_works(h: &Httpd) {
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/ws/echo", br)
            .unwrap_or_else(|e| panic!("{br:?}: {e}"));
        for i in 0..3 {
            let m = format!("message {i} via {br:?}");
            assert_eq!(
                roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
                Message::text(m)
            );
        }
        let big = wst_e2e::binary_payload(200_000, 7);
        assert_eq!(
            roundtrip(&mut ws, Message::binary(big.clone()))
                .unwrap()
                .into_data()[..],
            big[..]
        );
        close(&mut ws);
    }
    let done = wst_e2e::wait_for(Duration::from_secs(5), || {
        let n = h
            .access_lines()
            .iter()
            .filter(|l| l.status == 101 && l.request.contains("/ws/echo"))
            .count();
        (n == 2).then_some(())
    });
    assert!(done.is_some(), "expected two 101 lines in the access log");
}

fn served_by_us(h: &Httpd) -> bool {
    h.error_log().lines().any(|l| is_ours(l))
}

fn is_ours(l: &str) -> bool {
    Httpd::flavor().log_line_from(l, "proxy_wstunnel") && l.contains("serving URL")
}

fn served_by_proxy_http(h: &Httpd) -> bool {
    let f = Httpd::flavor();
    h.error_log()
        .lines()
        .any(|l| f.log_line_from(l, "proxy_http") && l.contains("tunneling protocol"))
}

#[test]
fn fallback_on_hands_upgrades_to_proxy_http() {
    let f = Httpd::flavor();
    if f.version < (2, 4, 47) {
        eprintln!("SKIP: mod_proxy_http tunnels upgrades on 2.4.47+ only");
        return;
    }
    let (_b, h) = start(Some("On"));
    tunnel_works(&h);
    assert!(
        served_by_proxy_http(&h),
        "mod_proxy_http did not log AH10239 (tunneling protocol)"
    );
    assert!(
        !served_by_us(&h),
        "proxy_wstunnel served a tunnel although ProxyWebsocketFallbackToProxyHttp is On"
    );
}

#[test]
fn fallback_off_is_served_by_this_module() {
    let (_b, h) = start(Some("Off"));
    tunnel_works(&h);
    assert!(
        served_by_us(&h),
        "no `serving URL` line from proxy_wstunnel"
    );
    assert!(
        !served_by_proxy_http(&h),
        "mod_proxy_http tunnelled although ProxyWebsocketFallbackToProxyHttp is Off"
    );
}

#[test]
fn fallback_unset_is_served_by_this_module() {
    if Httpd::flavor().wst_is_stock && Httpd::flavor().version >= (2, 4, 47) {
        eprintln!(
            "SKIP: the stock module falls back to mod_proxy_http when the directive is unset"
        );
        return;
    }
    let (_b, h) = start(None);
    tunnel_works(&h);
    assert!(
        served_by_us(&h),
        "no `serving URL` line from proxy_wstunnel"
    );
    assert!(
        !served_by_proxy_http(&h),
        "mod_proxy_http tunnelled although ProxyWebsocketFallbackToProxyHttp is unset"
    );
}

/// `On` in one <Location>, unset elsewhere: the directive is per-directory.
#[test]
fn fallback_on_in_a_location_only() {
    let f = Httpd::flavor();
    if f.version < (2, 4, 47) {
        eprintln!("SKIP: mod_proxy_http tunnels upgrades on 2.4.47+ only");
        return;
    }
    if f.wst_is_stock {
        eprintln!("SKIP: the stock module falls back when the directive is unset");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .no_fallback_directive()
        .log_level("warn proxy_wstunnel:debug proxy_http:debug")
        .var("BACKEND_PORT", b.port())
        .config(
            "ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n\
             ProxyPass /viahttp/ ws://127.0.0.1:{BACKEND_PORT}/\n\
             <Location /viahttp/>\n    ProxyWebsocketFallbackToProxyHttp On\n</Location>\n",
        )
        .start();
    for path in ["/viahttp/echo", "/ws/echo"] {
        let (_r, mut ws) = WsClient::connect(&h.target(), path, Browser::Chrome).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text(path)).unwrap(),
            Message::text(path)
        );
        close(&mut ws);
    }
    let log = h.error_log();
    let ours: Vec<&str> = log.lines().filter(|l| is_ours(l)).collect();
    assert_eq!(ours.len(), 1, "exactly /ws/echo is ours:\n{log}");
    assert!(
        served_by_proxy_http(&h),
        "/viahttp/ not tunnelled by mod_proxy_http:\n{log}"
    );
}

/// `On` but mod_proxy_http not loaded: nothing to hand over to, so this module serves.
#[test]
fn fallback_on_without_proxy_http_is_served_by_this_module() {
    if Httpd::flavor().wst_is_stock {
        eprintln!("SKIP: this module's behaviour");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .no_fallback_directive()
        .without_module("proxy_http")
        .var("BACKEND_PORT", b.port())
        .config(
            "ProxyWebsocketFallbackToProxyHttp On\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n",
        )
        .start();
    tunnel_works(&h);
    assert!(
        served_by_us(&h),
        "no `serving URL` line from proxy_wstunnel"
    );
}
