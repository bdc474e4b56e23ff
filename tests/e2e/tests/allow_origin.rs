//! `ProxyWebsocketAllowOrigin same|*|<origin>...`: an upgrade from an Origin not allowed is
//! refused with 403 (logged at warning level as WST042, naming the Origin) before the backend
//! is contacted; no Origin header: allowed. `same` compares with the request's own scheme, host
//! and port (on a TLS front too), a list compares scheme, host and port exactly (case aside,
//! default ports implied), `*` allows every Origin; per `<Location>`; on a
//! `ProxyWebsocketUpgrade` route it applies to upgrades only; a refused Origin is a 403 even
//! with the cap of `ProxyWebsocketMaxTunnels` reached.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use tungstenite::Message;
use wst_e2e::client::{check_101, close, roundtrip, End, Response};
use wst_e2e::notes::{notes_for, NOTES_LOG};
use wst_e2e::observe::try_upgrade;
use wst_e2e::tunnels::{
    backend_got, counts, open_tunnel, raw_tunnel, with_server_status, CAP_2, WAIT,
};
use wst_e2e::ws::{client_frame, server_frame, OP_BINARY};
use wst_e2e::{binary_payload, need, Browser, Httpd, Target, UpgradeRequest, WstEcho};

/// Upgrade to `path` with `origin` (None: no Origin header) and `host`; Ok(()) for a working
/// tunnel (echo checked), Err(response) otherwise.
fn upgrade_with_origin(
    t: &Target,
    path: &str,
    host: &str,
    origin: Option<&str>,
) -> Result<(), Box<Response>> {
    let mut req = UpgradeRequest::new(path, host, Browser::Chrome).remove("Origin");
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    let (mut r, c) = try_upgrade(t, &req).unwrap_or_else(|e| panic!("{path} {origin:?}: {e}"));
    if r.status != 101 {
        let mut c = c;
        let _ = c.read_body(&mut r, false);
        return Err(Box::new(r));
    }
    check_101(&req, &r).unwrap();
    let mut ws = c.into_websocket();
    assert_eq!(
        roundtrip(&mut ws, Message::text("origin ok")).unwrap(),
        Message::text("origin ok"),
        "{path} {origin:?}"
    );
    close(&mut ws);
    Ok(())
}

/// Run `cases` of (Host, Origin, allowed) against `path_prefix`, each on its own backend path;
/// a refused one must be a 403 that never reached the backend and is logged (warning level,
/// WST042, naming the origin).
fn origin_cases(
    h: &Httpd,
    b: &WstEcho,
    path_prefix: &str,
    backend_prefix: &str,
    cases: &[(String, Option<String>, bool)],
) {
    origin_cases_on(h, &h.target(), b, path_prefix, backend_prefix, cases);
}

fn origin_cases_on(
    h: &Httpd,
    t: &Target,
    b: &WstEcho,
    path_prefix: &str,
    backend_prefix: &str,
    cases: &[(String, Option<String>, bool)],
) {
    for (i, (host, origin, allowed)) in cases.iter().enumerate() {
        let path = format!("{path_prefix}case{i}/echo");
        let backend_path = format!("{backend_prefix}case{i}/echo");
        let got = upgrade_with_origin(t, &path, host, origin.as_deref());
        match (allowed, got) {
            (true, Ok(())) => {
                assert_eq!(backend_got(b, &backend_path), 1, "{path}");
            }
            (false, Err(r)) => {
                assert_eq!(
                    r.status, 403,
                    "Host {host}, Origin {origin:?}: expected 403:\n{}",
                    r.head
                );
                assert_eq!(
                    backend_got(b, &backend_path),
                    0,
                    "Host {host}, Origin {origin:?}: refused, yet the backend got the request: {:?}",
                    b.requests()
                );
                let o = origin.as_deref().unwrap_or("(none)");
                let line = h
                    .wait_error_line(WAIT, &["WST042", &format!("Origin {o} "), &backend_path])
                    .unwrap_or_else(|| {
                        panic!(
                            "no WST042 line naming origin {o} and {backend_path}:\n{}",
                            h.error_log()
                        )
                    });
                assert!(
                    line.contains(":warn]") || line.contains("[warn]"),
                    "WST042 not at warning level: {line}"
                );
            }
            (true, Err(r)) => panic!(
                "Host {host}, Origin {origin:?} must be allowed, got:\n{}{}",
                r.head,
                r.body_str()
            ),
            (false, Ok(())) => {
                panic!("Host {host}, Origin {origin:?} must be refused, got a tunnel")
            }
        }
    }
}

/// An httpd (log level warn: the WST042 lines) with `config` (`{BACKEND_PORT}`: `b`).
fn origin_httpd(b: &WstEcho, config: &str) -> Httpd {
    Httpd::builder()
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config(config)
        .start()
}

fn s(x: &str) -> String {
    x.to_string()
}

#[test]
fn allow_origin_same() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = origin_httpd(
        &b,
        "ProxyWebsocketAllowOrigin same\nProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/\n",
    );
    let p = h.port();
    let hp = format!("127.0.0.1:{p}");
    let lh = format!("localhost:{p}");
    let cases = vec![
        (hp.clone(), Some(format!("http://127.0.0.1:{p}")), true),
        (hp.clone(), Some(format!("HTTP://127.0.0.1:{p}")), true),
        // An https page may open a ws:// tunnel to the same host and port.
        (hp.clone(), Some(format!("https://127.0.0.1:{p}")), true),
        (lh.clone(), Some(format!("http://localhost:{p}")), true),
        (hp.clone(), None, true),
        (hp.clone(), Some(s("http://evil.example")), false),
        (hp.clone(), Some(format!("http://evil.example:{p}")), false),
        (
            hp.clone(),
            Some(format!("http://127.0.0.1:{}", p.wrapping_add(1))),
            false,
        ),
        (hp.clone(), Some(s("http://127.0.0.1")), false),
        (hp.clone(), Some(s("null")), false),
        (lh.clone(), Some(format!("http://127.0.0.1:{p}")), false),
        (
            hp.clone(),
            Some(format!("http://127.0.0.1.evil.example:{p}")),
            false,
        ),
    ];
    origin_cases(&h, &b, "/ws/", "/", &cases);
}

#[test]
fn allow_origin_list_and_missing_origin() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = origin_httpd(
        &b,
        r#"
ProxyWebsocketAllowOrigin https://app.example.com http://localhost:8080
ProxyWebsocketAllowOrigin https://second-line.example.org
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
    );
    let hp = format!("127.0.0.1:{}", h.port());
    let cases: Vec<(String, Option<String>, bool)> = [
        (Some("https://app.example.com"), true),
        (Some("HTTPS://APP.EXAMPLE.COM"), true),
        (Some("https://app.example.com:443"), true),
        (Some("http://localhost:8080"), true),
        (Some("https://second-line.example.org"), true),
        (None, true),
        (Some("http://app.example.com"), false),
        (Some("https://app.example.com:8443"), false),
        (Some("https://app.example.com.evil.net"), false),
        (Some("http://localhost"), false),
        (Some("https://evil.example"), false),
        (Some("null"), false),
    ]
    .into_iter()
    .map(|(o, ok)| (hp.clone(), o.map(s), ok))
    .collect();
    origin_cases(&h, &b, "/ws/", "/", &cases);
    // Not 'same' unless listed: the request's own origin is refused here.
    let own = vec![(hp.clone(), Some(format!("http://{hp}")), false)];
    origin_cases(&h, &b, "/ws/own-", "/own-", &own);
}

#[test]
fn allow_origin_star_and_per_location_override() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = origin_httpd(
        &b,
        r#"
ProxyWebsocketAllowOrigin same
<Location /ws/open/>
    ProxyWebsocketAllowOrigin *
</Location>
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
"#,
    );
    let hp = format!("127.0.0.1:{}", h.port());
    let open: Vec<_> = [
        Some("https://evil.example"),
        Some("null"),
        Some("http://anything:1"),
        None,
    ]
    .into_iter()
    .map(|o| (hp.clone(), o.map(s), true))
    .collect();
    origin_cases(&h, &b, "/ws/open/", "/open/", &open);
    let closed = vec![
        (hp.clone(), Some(s("https://evil.example")), false),
        (hp.clone(), Some(format!("http://{hp}")), true),
    ];
    origin_cases(&h, &b, "/ws/closed/", "/closed/", &closed);
}

/// The Origin policy on a ProxyWebsocketUpgrade route: upgrades only; plain requests with any
/// Origin are mod_proxy_http's as before.
#[test]
fn allow_origin_on_upgrade_route_applies_to_upgrades_only() {
    if !need::ours() {
        return;
    }
    let b = WstEcho::start();
    let h = origin_httpd(
        &b,
        "ProxyWebsocketUpgrade On\nProxyWebsocketAllowOrigin same\nProxyPass / http://127.0.0.1:{BACKEND_PORT}/\n",
    );
    let hp = format!("127.0.0.1:{}", h.port());
    let cases = vec![
        (hp.clone(), Some(format!("http://{hp}")), true),
        (hp.clone(), Some(s("https://evil.example")), false),
        (hp.clone(), None, true),
    ];
    origin_cases(&h, &b, "/sock/", "/sock/", &cases);
    let t = h.target();
    let req = UpgradeRequest::plain_get("/xhr", &t.host)
        .header("Origin", "https://evil.example")
        .header("Connection", "close");
    let r = wst_e2e::client::http_request(&t, &req).unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, "plain GET /xhr\n".to_string())
    );
}

/// On a TLS front: `same` compares with the https default port, and the notes count the
/// plaintext frame bytes that went through mod_ssl.
#[test]
fn origin_same_and_notes_on_tls_front() {
    if !need::ours() || !need::ssl() {
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("ssl")
        .listen("TLS_PORT")
        .log_level("warn")
        .var("BACKEND_PORT", b.port())
        .config(NOTES_LOG)
        .config(
            r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName localhost
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    ProxyWebsocketAllowOrigin same
    ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
</VirtualHost>
"#,
        )
        .start();
    let tp = h.port_of("TLS_PORT");
    let t = h.tls_target(tp);
    let with_port = format!("localhost:{tp}");
    let cases = vec![
        (
            with_port.clone(),
            Some(format!("https://localhost:{tp}")),
            true,
        ),
        (s("localhost"), Some(s("https://localhost")), true),
        (s("localhost:443"), Some(s("https://localhost")), true),
        (s("localhost"), Some(s("http://localhost")), false),
        (with_port.clone(), Some(s("https://localhost")), false),
        (with_port.clone(), Some(s("https://evil.example")), false),
    ];
    origin_cases_on(&h, &t, &b, "/ws/", "/", &cases);

    let mut c = raw_tunnel(&t, "/ws/echo/tls-notes");
    let mut sent = 0;
    let mut back = 0;
    for (i, n) in [10usize, 40_000].into_iter().enumerate() {
        let p = binary_payload(n, i as u8);
        let f = client_frame(OP_BINARY, &p);
        sent += f.len();
        c.send(&f).unwrap();
        let want = server_frame(OP_BINARY, &p);
        back += want.len();
        assert_eq!(c.read_exact_bytes(want.len()).unwrap(), want);
    }
    c.shutdown_write().unwrap();
    let (rest, end) = c.read_until_close(WAIT);
    assert!(rest.is_empty() && end == End::Eof, "{rest:?} {end:?}");
    let n = notes_for(&h, "/ws/echo/tls-notes");
    assert_eq!(n.client_bytes, sent.to_string(), "{n:?}");
    assert_eq!(n.backend_bytes, back.to_string(), "{n:?}");
    assert_eq!(n.closed_first, "client", "{n:?}");
    assert_eq!(n.end, "closed", "{n:?}");
}

/// A refused Origin is a 403 whatever the tunnel count: with the cap reached, a cross-site
/// upgrade is still refused for its Origin (403, WST042), not counted as a cap refusal.
#[test]
fn refused_origin_is_403_even_with_the_cap_reached() {
    if !need::ours() || !need::module("status") {
        return;
    }
    let b = WstEcho::start();
    let h = with_server_status(&b)
        .config(CAP_2)
        .config("ProxyWebsocketAllowOrigin same\n")
        .start();
    let t = h.target();
    let mut a = open_tunnel(&t, "/ws/echo", 0);
    let mut b2 = open_tunnel(&t, "/ws/echo", 1);
    let req = UpgradeRequest::new("/ws/cross-site", &t.host, Browser::Chrome)
        .set("Origin", "https://evil.example");
    let (mut r, mut c) = try_upgrade(&t, &req).unwrap();
    let _ = c.read_body(&mut r, false);
    let refused = counts(&t).2;
    close(&mut a);
    close(&mut b2);
    assert_eq!(
        r.status, 403,
        "cross-site upgrade with the cap reached:\n{}",
        r.head
    );
    assert_eq!(refused, 0, "a forbidden Origin counted as a cap refusal");
}
