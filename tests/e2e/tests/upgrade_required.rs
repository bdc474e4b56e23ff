//! A plain request (no Upgrade) to a ws:// route: without mod_proxy_http, `426 Upgrade
//! Required` with `Upgrade: websocket` and `Connection: Upgrade`, the backend never contacted;
//! with mod_proxy_http, the backend's own plain HTTP answer. For ProxyPass, ProxyPassMatch and
//! `RewriteRule ... ws://... [P]` without a RewriteCond on Upgrade.

use wst_e2e::client::http_get;
use wst_e2e::{Httpd, Response, WstEcho};

const ROUTES: &str = r#"
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
ProxyPassMatch ^/match/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/m/$1
<IfModule mod_rewrite.c>
RewriteEngine On
RewriteRule ^/rw/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/r/$1 [P]
</IfModule>
"#;

fn start(with_proxy_http: bool) -> (WstEcho, Httpd) {
    let b = WstEcho::start();
    let mut builder = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(ROUTES);
    if Httpd::flavor().has_module("rewrite") {
        builder = builder.module("rewrite");
    }
    if !with_proxy_http {
        builder = builder.without_module("proxy_http");
    }
    (b, builder.start())
}

fn paths() -> Vec<&'static str> {
    let mut p = vec!["/ws/page?x=1", "/match/page?x=1"];
    if Httpd::flavor().has_module("rewrite") {
        p.push("/rw/page?x=1");
    } else {
        eprintln!("note: no mod_rewrite, RewriteRule route not tested");
    }
    p
}

fn assert_426(path: &str, r: &Response) {
    assert_eq!(r.status, 426, "{path}:\n{}", r.head);
    assert!(
        r.header_has_token("Upgrade", "websocket"),
        "{path}: 426 without `Upgrade: websocket`:\n{}",
        r.head
    );
    assert!(
        r.header_has_token("Connection", "Upgrade"),
        "{path}: 426 without `Connection: Upgrade`:\n{}",
        r.head
    );
}

#[test]
fn plain_get_without_proxy_http_is_426_with_upgrade_headers() {
    let (b, h) = start(false);
    for path in paths() {
        let r = http_get(&h.target(), path).unwrap();
        assert_426(path, &r);
    }
    assert!(
        b.requests().is_empty(),
        "backend contacted: {:?}",
        b.requests()
    );
}

/// HEAD too (no body, same status and headers).
#[test]
fn plain_head_without_proxy_http_is_426() {
    let (b, h) = start(false);
    let t = h.target();
    for path in paths() {
        let mut req =
            wst_e2e::UpgradeRequest::plain_get(path, &t.host).header("Connection", "close");
        req.method = "HEAD".into();
        let r = wst_e2e::client::http_request(&t, &req).unwrap();
        assert_426(path, &r);
        assert!(r.body.is_empty(), "{path}: HEAD answer with a body");
    }
    assert!(
        b.requests().is_empty(),
        "backend contacted: {:?}",
        b.requests()
    );
}

#[test]
fn plain_get_with_proxy_http_gets_the_backends_answer() {
    let (b, h) = start(true);
    for (path, backend_path) in [
        ("/ws/page?x=1", "/page?x=1"),
        ("/match/page?x=1", "/m/page?x=1"),
        ("/rw/page?x=1", "/r/page?x=1"),
    ] {
        if path.starts_with("/rw/") && !Httpd::flavor().has_module("rewrite") {
            continue;
        }
        let r = http_get(&h.target(), path).unwrap();
        assert_eq!(r.status, 200, "{path}:\n{}", r.head);
        assert_eq!(
            r.body_str(),
            format!("plain GET {backend_path}\n"),
            "{path}"
        );
        assert!(
            !r.header_has_token("Connection", "Upgrade"),
            "{path}: plain answer says Connection: Upgrade:\n{}",
            r.head
        );
    }
    assert!(b.requests().len() >= 2, "{:?}", b.requests());
}
