//! The users' configurations from shared/seeds, as unchanged as a test allows (host names and
//! ports substituted; log file directives of the vhosts dropped so the harness sees the logs).

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{check_101, close, http_get, next_data, roundtrip, RawClient};
use wst_e2e::{Browser, Httpd, Pki, Target, UpgradeRequest, Websocketd, WsClient, WstEcho};

fn echo_once(target: &Target, path: &str, browser: Browser) {
    let (_r, mut ws) = WsClient::connect(target, path, browser)
        .unwrap_or_else(|e| panic!("{browser:?} upgrade of {path}: {e}"));
    let text = format!("hello via {path} from {browser:?}");
    let m = roundtrip(&mut ws, Message::text(text.clone())).unwrap();
    assert_eq!(m, Message::text(text));
    let m = roundtrip(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(m, Message::binary(vec![0u8, 1, 2, 255]));
    close(&mut ws);
}

// ---------------------------------------------------------------------------------------------
// Seed 004: RewriteCond %{HTTP:Upgrade} websocket [NC] + RewriteRule ... ws:// [proxy,last],
// then RewriteRule ... http:// [proxy,last] (note the seed's missing slash: /eventbus$1).
// ---------------------------------------------------------------------------------------------

const SEED_004: &str = r#"
RewriteEngine On
#-----
# Start WebSockets Test Configuration for eventbus
#-----

RewriteCond                %{HTTP:Upgrade} websocket [NC]
RewriteRule                /eventbus/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/eventbus/$1 [proxy,last]

RewriteRule                /eventbus/(.*)$ http://127.0.0.1:{BACKEND_PORT}/eventbus$1 [proxy,last]
ProxyPassReverse           /eventbus http://127.0.0.1:{BACKEND_PORT}/eventbus

#-----
# End WebSockets Test Configuration for eventbus
#-----
"#;

fn seed_004() -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("rewrite")
        .var("BACKEND_PORT", b.port())
        .config(SEED_004)
        .start();
    (b, h)
}

#[test]
fn seed_004_rewrite_proxy_last_chrome_and_firefox() {
    let (b, h) = seed_004();
    for br in Browser::ALL {
        echo_once(&h.target(), "/eventbus/726/5p8l3sxxw/websocket", br);
    }
    let reqs = b.requests();
    assert_eq!(
        reqs.iter()
            .filter(|r| r.starts_with("GET /eventbus/726/5p8l3sxxw/websocket "))
            .count(),
        2,
        "backend requests: {reqs:?}"
    );
}

#[test]
fn seed_004_plain_request_goes_to_http_rule() {
    let (_b, h) = seed_004();
    let r = http_get(&h.target(), "/eventbus/info?t=1").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    // The seed's second rule drops the slash: /eventbus/(.*) -> /eventbus$1.
    assert_eq!(r.body_str(), "plain GET /eventbusinfo?t=1\n");
}

/// The upgrade request shown in seed 004 (Upgrade: WebSocket capitalised, extensions, cookies,
/// X-Forwarded-* already present), through the seed's config.
#[test]
fn seed_004_request_from_the_seed() {
    let (_b, h) = seed_004();
    let t = h.target();
    let req = UpgradeRequest::plain_get("/eventbus/726/5p8l3sxxw/headers", &t.host)
        .header("Pragma", "no-cache")
        .header("Cache-Control", "no-cache")
        .header("Origin", "https://int.post.ch")
        .header("Sec-WebSocket-Version", "13")
        .header("User-Agent", Browser::Chrome.user_agent())
        .header("Accept-Language", "en-US,en;q=0.8,de;q=0.6")
        .header("Cookie", "ittrksessid=4f8e3827.5242fdad0c097; NSESSIONID=6980775628415330683; NCTRL=108161021:null;")
        .header("Sec-WebSocket-Key", "L7lnvkZ6/AmVYHf3y38jWQ==")
        .header("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
        .header("X-RP-UNIQUE_ID", "VkICigoCZiAAADnKKfoAAAP")
        .header("Upgrade", "WebSocket")
        .header("Connection", "Upgrade");
    let (resp, mut ws) = WsClient::connect_with(&t, &req).unwrap();
    // The seed prints "4s20mf0q2z5k..." (a transcription of O as 0); connect_with has already
    // checked the real value.
    assert_eq!(
        resp.header("Sec-WebSocket-Accept"),
        Some("4s20mfOq2z5kJbK4ivlpm75HidQ=")
    );
    let head = next_data(&mut ws).unwrap().into_text().unwrap().to_string();
    for line in [
        "Origin: https://int.post.ch",
        "Cookie: ittrksessid=4f8e3827.5242fdad0c097; NSESSIONID=6980775628415330683; NCTRL=108161021:null;",
        "Sec-WebSocket-Key: L7lnvkZ6/AmVYHf3y38jWQ==",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        "Sec-WebSocket-Version: 13",
    ] {
        assert!(head.contains(line), "backend did not get {line:?}:\n{head}");
    }
    close(&mut ws);
}

// ---------------------------------------------------------------------------------------------
// Seed 003: RewriteCond Upgrade + Connection [NC], RewriteRule .* "wss://backend%{REQUEST_URI}" [P]
// then ProxyPass / https://backend/.
// ---------------------------------------------------------------------------------------------

const SEED_003_WS: &str = r#"
<VirtualHost 127.0.0.1:{PORT}>
    ServerName openqa.happyassassin.net
    RewriteEngine on
    RewriteCond %{HTTP:Upgrade} websocket [NC]
    RewriteCond %{HTTP:Connection} upgrade [NC]
    RewriteRule .* "ws://127.0.0.1:{BACKEND_PORT}%{REQUEST_URI}" [P]
    ProxyPass / http://127.0.0.1:{BACKEND_PORT}/
    ProxyPassReverse / http://127.0.0.1:{BACKEND_PORT}/
    ProxyRequests off
</VirtualHost>
"#;

const SEED_003_WSS: &str = r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
    ServerName openqa.happyassassin.net
    SSLEngine on
    SSLCertificateFile "{CERT}"
    SSLCertificateKeyFile "{KEY}"
    SSLProxyEngine on
    SSLProxyCheckPeerName off
    SSLProxyVerify none
    RewriteEngine on
    RewriteCond %{HTTP:Upgrade} websocket [NC]
    RewriteCond %{HTTP:Connection} upgrade [NC]
    RewriteRule .* "wss://127.0.0.1:{BACKEND_PORT}%{REQUEST_URI}" [P]
    ProxyPass / https://127.0.0.1:{BACKEND_PORT}/
    ProxyPassReverse / https://127.0.0.1:{BACKEND_PORT}/
    ProxyRequests off
</VirtualHost>
"#;

#[test]
fn seed_003_rewrite_p_ws_backend() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("rewrite")
        .var("BACKEND_PORT", b.port())
        .config(SEED_003_WS)
        .start();
    for br in Browser::ALL {
        echo_once(
            &h.target(),
            "/liveviewhandler/tests/1/developer/ws-proxy",
            br,
        );
    }
    let r = http_get(&h.target(), "/tests/overview?distri=fedora").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "plain GET /tests/overview?distri=fedora\n");
}

#[test]
fn seed_003_rewrite_p_wss_backend_tls_front() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl in this httpd");
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = Httpd::builder()
        .modules(&["rewrite", "ssl"])
        .pki(&pki)
        .listen("TLS_PORT")
        .var("BACKEND_PORT", b.port())
        .config(SEED_003_WSS)
        .start();
    let t = h.tls_target(h.port_of("TLS_PORT"));
    let r = http_get(&t, "/tests/overview").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "plain GET /tests/overview\n");
    // The backend sends TLS 1.3 session tickets (as OpenSSL does by default) around its 101:
    // the module must not wait in poll() for bytes already decrypted by mod_ssl.
    for br in Browser::ALL {
        echo_once(&t, "/liveviewhandler/tests/1/developer/ws-proxy", br);
    }
}

/// The stricter variant the seed warns about would not match Firefox; the generic one must.
#[test]
fn seed_003_firefox_connection_keep_alive_upgrade_is_tunneled_not_proxied_as_http() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("rewrite")
        .var("BACKEND_PORT", b.port())
        .config(SEED_003_WS)
        .start();
    let t = h.target();
    let req = UpgradeRequest::new("/ws/headers", &t.host, Browser::Firefox);
    let mut c = RawClient::connect(&t).unwrap();
    c.send(&req.to_bytes()).unwrap();
    let resp = c.read_head().unwrap();
    check_101(&req, &resp).unwrap();
    let mut ws = c.into_websocket();
    let head = next_data(&mut ws).unwrap().into_text().unwrap().to_string();
    assert!(head.starts_with("GET /ws/headers HTTP/1.1\r\n"), "{head}");
    close(&mut ws);
}

// ---------------------------------------------------------------------------------------------
// Seed 000: SSL vhost, <Proxy *> Order/Allow, ProxyPassMatch on __sockjs__ paths to ws://,
// ProxyPass / http:// max=1 disablereuse=on keepalive=on, LogLevel debug.
// ---------------------------------------------------------------------------------------------

const SEED_000: &str = r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
  LogLevel debug
  ServerName shiny-demo.example.com
  SSLEngine ON
  SSLCertificateFile "{CERT}"
  SSLCertificateKeyFile "{KEY}"
  ProxyRequests Off
  ProxyPreserveHost Off
  <Proxy *>
    Order allow,deny
    Allow from all
  </Proxy>

  # websockets?
  ProxyPassMatch ^/(.*/__sockjs__/[0-9]+/.*) ws://127.0.0.1:{BACKEND_PORT}/$1

  ProxyPass / http://127.0.0.1:{BACKEND_PORT}/ max=1 disablereuse=on keepalive=on
  ProxyPassReverse / http://127.0.0.1:{BACKEND_PORT}/
</VirtualHost>
"#;

#[test]
fn seed_000_sockjs_proxypassmatch_in_ssl_vhost() {
    if !Httpd::flavor().has_module("ssl") {
        eprintln!("SKIP: no mod_ssl in this httpd");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("ssl")
        .listen("TLS_PORT")
        .var("BACKEND_PORT", b.port())
        .config(SEED_000)
        .start();
    let t = h.tls_target(h.port_of("TLS_PORT"));
    let ws_path = "/sample-apps/rmd/__sockjs__/510/w2kfd1y0/websocket";
    for br in Browser::ALL {
        echo_once(&t, ws_path, br);
    }
    let want = format!("serving URL ws://127.0.0.1:{}{ws_path}", b.port());
    assert!(
        h.wait_error_line(Duration::from_secs(5), &["proxy_wstunnel", &want])
            .is_some(),
        "error log lacks a proxy_wstunnel line with {want:?}"
    );

    // SockJS fallback transports hit the same ProxyPassMatch without an upgrade.
    let r = http_get(&t, "/sample-apps/rmd/__sockjs__/510/w2kfd1y0/xhr").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(
        r.body_str(),
        "plain GET /sample-apps/rmd/__sockjs__/510/w2kfd1y0/xhr\n"
    );
    // And everything else the ProxyPass / http://.
    let r = http_get(&t, "/sample-apps/rmd/").unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "plain GET /sample-apps/rmd/\n");
}

// ---------------------------------------------------------------------------------------------
// Seed 002: websocketd --ssl behind SSLProxyEngine on, SSLProxyCheckPeerName off,
// ProxyPass "/wss/wss-test/" "wss://localhost:8080/".
// ---------------------------------------------------------------------------------------------

const SEED_002: &str = r#"
<VirtualHost 127.0.0.1:{TLS_PORT}>
ServerName www.example.com
SSLEngine on
SSLCertificateFile "{CERT}"
SSLCertificateKeyFile "{KEY}"
SSLProxyEngine on
# Edit 2022-10-02: with Apache 2.4.43, the following flag had to be added
SSLProxyCheckPeerName off
ProxyRequests Off
ProxyPass "/wss/wss-test/" "wss://localhost:{WSD_PORT}/"
ProxyPassReverse "/wss/wss-test/" "wss://localhost:{WSD_PORT}/"
</VirtualHost>
"#;

const COUNTER: &str = "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.05; done";

#[test]
fn seed_002_websocketd_ssl_counter() {
    if !Httpd::flavor().has_module("ssl") || !Websocketd::available() {
        eprintln!("SKIP: needs mod_ssl and websocketd");
        return;
    }
    let pki = Pki::generate();
    let wsd = Websocketd::start(COUNTER, Some(&pki));
    let h = Httpd::builder()
        .module("ssl")
        .pki(&pki)
        .listen("TLS_PORT")
        .var("WSD_PORT", wsd.port())
        .config(SEED_002)
        .start();
    let t = h.tls_target(h.port_of("TLS_PORT"));
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(&t, "/wss/wss-test/", br).unwrap();
        let mut got = Vec::new();
        while got.len() < 10 {
            match next_data(&mut ws) {
                Ok(Message::Text(s)) => got.push(s.to_string()),
                Ok(m) => panic!("{br:?}: unexpected {m:?} after {got:?}"),
                Err(e) => panic!("{br:?}: {e} after {got:?}"),
            }
        }
        let want: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "{br:?}");
        // websocketd closes when the program ends.
        match next_data(&mut ws) {
            Ok(Message::Close(_)) | Err(_) => {}
            Ok(m) => panic!("{br:?}: unexpected {m:?} after the count"),
        }
    }
}

/// Seed 002's backend without TLS on the backend side (plain websocketd, `cat` echoes lines).
#[test]
fn websocketd_plain_cat_echo() {
    if !Websocketd::available() {
        eprintln!("SKIP: needs websocketd");
        return;
    }
    let wsd = Websocketd::start("exec cat", None);
    let h = Httpd::builder()
        .var("WSD_PORT", wsd.port())
        .config("ProxyPass /cat/ ws://127.0.0.1:{WSD_PORT}/\n")
        .start();
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/cat/", br).unwrap();
        for i in 0..5 {
            let line = format!("line {i} from {br:?}");
            let m = roundtrip(&mut ws, Message::text(line.clone())).unwrap();
            assert_eq!(m.into_text().unwrap().trim_end(), line);
        }
        close(&mut ws);
    }
}
