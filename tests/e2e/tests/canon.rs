//! Canonical URLs: what request-target a ws:// route sends to the backend.
//!
//! The reference is mod_proxy_http on the same httpd: every request is sent once as an upgrade
//! through a `ws://` route (this module's canon hook) and once as a plain GET through the
//! equivalent `http://` route (mod_proxy_http's), and the request lines wst-echo received must
//! be the same. A few well-known canonical forms are also checked literally, so that the test
//! does not only compare two things that could be wrong together.
//!
//! Control characters and spaces: a client cannot put them into the request-target itself
//! (httpd's request-line parser answers 400 for a raw CTL, and a space ends the target), and a
//! query string that mod_rewrite builds from a %-decoded back-reference is refused by mod_rewrite
//! itself (AH10410, 403) before any proxy module sees it. The one real way to bring a decoded
//! space or CTL to the canon step is a path: `RewriteRule ... ws://...$1 [P,NE]` puts the
//! decoded back-reference into a URL marked `proxy-nocanon`; that must be 403 (AH10419 for
//! proxy_wstunnel, AH10415 for proxy_http), never forwarded.

use std::time::Duration;

use wst_e2e::client::RawClient;
use wst_e2e::{Browser, Httpd, Target, UpgradeRequest, WstEcho};

/// The request bytes of a browser-like upgrade (or, with `upgrade == false`, a plain GET) whose
/// request-target is exactly `target` (raw bytes, sent as they are).
fn request_bytes(target: &[u8], host: &str, upgrade: bool) -> Vec<u8> {
    let req = if upgrade {
        UpgradeRequest::new("/", host, Browser::Chrome)
    } else {
        UpgradeRequest::plain_get("/", host).header("Connection", "close")
    };
    let text = req.to_bytes();
    let first_eol = text.windows(2).position(|w| w == b"\r\n").unwrap();
    let mut out = b"GET ".to_vec();
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1");
    out.extend_from_slice(&text[first_eol..]);
    out
}

/// Send `target` to httpd; return the status and the request line the backend received for
/// it (None if the backend got no request).
fn through(h: &Httpd, b: &WstEcho, target: &[u8], upgrade: bool) -> (u16, Option<String>) {
    through_t(&h.target(), b, target, upgrade)
}

fn through_t(t: &Target, b: &WstEcho, target: &[u8], upgrade: bool) -> (u16, Option<String>) {
    let before = b.requests().len();
    let mut c = RawClient::connect(t).unwrap();
    c.send(&request_bytes(target, &t.host, upgrade)).unwrap();
    let r = c
        .read_head()
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(target)));
    drop(c);
    // wst-echo logs the request line before it answers, so it is there by now if the request
    // reached it at all; give the log writer a moment anyway.
    let line = wst_e2e::wait_for(
        Duration::from_millis(if r.status < 300 { 2000 } else { 300 }),
        || {
            let reqs = b.requests();
            (reqs.len() > before).then(|| reqs[before].clone())
        },
    );
    (r.status, line)
}

/// "GET /x HTTP/1.1" -> "/x"
fn target_of(line: &str) -> &str {
    line.split(' ').nth(1).unwrap_or("")
}

struct Case {
    /// after the route prefix, raw
    suffix: &'static [u8],
    /// the backend's request-target, when it is well known (None: only compared with
    /// mod_proxy_http)
    want: Option<&'static str>,
}

const fn case(suffix: &'static [u8], want: Option<&'static str>) -> Case {
    Case { suffix, want }
}

/// Compare `ws_prefix` (upgrade) with `http_prefix` (plain GET) for every case.
fn compare(h: &Httpd, b: &WstEcho, ws_prefix: &str, http_prefix: &str, cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let mut ws_t = ws_prefix.as_bytes().to_vec();
        ws_t.extend_from_slice(c.suffix);
        let mut http_t = http_prefix.as_bytes().to_vec();
        http_t.extend_from_slice(c.suffix);
        let (ws_status, ws_line) = through(h, b, &ws_t, true);
        let (http_status, http_line) = through(h, b, &http_t, false);
        let shown = String::from_utf8_lossy(c.suffix);
        let ws_target = ws_line.as_deref().map(target_of);
        let http_target = http_line.as_deref().map(target_of);
        eprintln!(
            "{ws_prefix}{shown}: ws {ws_status} {ws_target:?} | http {http_status} {http_target:?}"
        );
        let ws_ok_status = if ws_status == 101 { 200 } else { ws_status };
        if ws_ok_status != http_status || ws_target != http_target {
            failures.push(format!(
                "{shown:?}: {ws_prefix} (upgrade) -> {ws_status} {ws_target:?}, \
                 {http_prefix} (mod_proxy_http) -> {http_status} {http_target:?}"
            ));
        }
        if let Some(want) = c.want {
            if ws_target != Some(want) {
                failures.push(format!(
                    "{shown:?}: {ws_prefix} sent {ws_target:?} to the backend, expected {want:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "canonical forms differ:\n{}",
        failures.join("\n")
    );
}

const ROUTES: &str = r#"
ProxyPass /ws/ ws://127.0.0.1:{BACKEND_PORT}/
ProxyPass /http/ http://127.0.0.1:{BACKEND_PORT}/
ProxyPass /wsraw/ ws://127.0.0.1:{BACKEND_PORT}/ nocanon
ProxyPass /httpraw/ http://127.0.0.1:{BACKEND_PORT}/ nocanon
ProxyPassMatch ^/wsm/([^/]*)/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/m/$2?q=$1
ProxyPassMatch ^/httpm/([^/]*)/(.*)$ http://127.0.0.1:{BACKEND_PORT}/m/$2?q=$1
"#;

/// Percent-encoded paths and queries through a plain ProxyPass: canonicalised exactly as
/// mod_proxy_http does it.
#[test]
fn canonical_path_and_query_match_proxy_http() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(ROUTES)
        .start();
    // MergeSlashes (2.4.39+, on by default) merges them; older httpd keeps them.
    let double_slash = if Httpd::flavor().version >= (2, 4, 39) {
        "/a/b"
    } else {
        "/a//b"
    };
    compare(
        &h,
        &b,
        "/ws/",
        "/http/",
        &[
            case(b"plain/path", Some("/plain/path")),
            case(b"a%20b/c", Some("/a%20b/c")),
            // unreserved characters are decoded by httpd's URI normalisation
            case(b"%7Euser/a%41b%2d", Some("/~user/aAb-")),
            // dot segments and double slashes
            case(b"a/./b/../c", Some("/a/c")),
            case(b"a//b", Some(double_slash)),
            // reserved characters that were encoded stay encoded
            case(b"a%3Fb%23c%25d", Some("/a%3Fb%23c%25d")),
            // sub-delims and ':' '@' are allowed in a path as they are
            case(b"a;p=1/b,c(d)*$!'&+:@", Some("/a;p=1/b,c(d)*$!'&+:@")),
            // characters that must be encoded in a path
            case(b"%5B%5D%7B%7D%60%22%3C%3E%5C%5E%7C", None),
            // UTF-8, encoded and raw (obs-text is allowed in the request line)
            case(b"caf%C3%A9", Some("/caf%C3%A9")),
            case(b"caf%c3%a9", None),
            case(b"caf\xc3\xa9", Some("/caf%C3%A9")),
            // the query string is passed as the client sent it
            case(
                b"x?q=a%20b&r=%zz&s=1+2&t=%00",
                Some("/x?q=a%20b&r=%zz&s=1+2&t=%00"),
            ),
            case(b"x?", Some("/x?")),
            case(b"x?a=%C3%A9&b=\xc3\xa9", None),
            // an encoded slash is a 404 unless AllowEncodedSlashes
            case(b"a%2Fb", None),
            // encoded NUL in the path: refused (404/400), never forwarded
            case(b"a%00b", None),
        ],
    );
}

/// ProxyPassMatch with back-references (decoded) placed in the path and after a `?`: the
/// whole substitution is canonicalised as a path (the `?` becomes %3F), as mod_proxy_http does.
#[test]
fn proxypassmatch_backreferences_match_proxy_http() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(ROUTES)
        .start();
    compare(
        &h,
        &b,
        "/wsm/",
        "/httpm/",
        &[
            case(b"a%20b/c%41d", None),
            case(b"k%3Dv%26x/p?real=1", None),
            case(b"%C3%A9/x", None),
        ],
    );
}

/// AllowEncodedSlashes NoDecode: %2F stays %2F (2.4.57+: not double-encoded to %252F).
/// NoDecode is 2.2.18+/2.3.12+: older httpd is checked with `On` (accepted, then decoded).
#[test]
fn encoded_slashes_nodecode_match_proxy_http() {
    let v = Httpd::flavor().version;
    let mode = if v >= (2, 3, 12) || ((2, 2, 18)..(2, 3, 0)).contains(&v) {
        "NoDecode"
    } else {
        "On"
    };
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(&format!("AllowEncodedSlashes {mode}\n{ROUTES}"))
        .start();
    let want = if Httpd::flavor().version >= (2, 4, 57) {
        Some("/a%2Fb/c")
    } else {
        None
    };
    compare(&h, &b, "/ws/", "/http/", &[case(b"a%2Fb/c", want)]);
}

/// `nocanon`: the raw path and query as the client sent them.
#[test]
fn nocanon_passes_the_raw_path() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(ROUTES)
        .start();
    compare(
        &h,
        &b,
        "/wsraw/",
        "/httpraw/",
        &[
            case(b"a%41b%20c?x=%20y", Some("/a%41b%20c?x=%20y")),
            case(b"caf%c3%a9;p=%7e", Some("/caf%c3%a9;p=%7e")),
            case(b"sp%20ace/%5B%5D", Some("/sp%20ace/%5B%5D")),
            // dot segments after the prefix: still raw
            case(b"a/../b%41", Some("/a/../b%41")),
        ],
    );
    // The prefix itself is only reached by a reducing transformation: mod_proxy ignores
    // nocanon (AH01136) and the path is canonicalised.
    compare(
        &h,
        &b,
        "/x/../wsraw/",
        "/x/../httpraw/",
        &[case(b"a%41b%20c", Some("/aAb%20c"))],
    );
}

/// `mapping=encoded` (2.4.57+, when it stopped double-encoding): the still-encoded path.
#[test]
fn mapping_encoded_passes_the_encoded_path() {
    if Httpd::flavor().version < (2, 4, 57) {
        eprintln!(
            "SKIP: mapping=encoded is tested on 2.4.57+ only ({})",
            Httpd::flavor().version_string
        );
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(
            "AllowEncodedSlashes NoDecode\n\
             ProxyPass /wsenc/ ws://127.0.0.1:{BACKEND_PORT}/ mapping=encoded\n\
             ProxyPass /httpenc/ http://127.0.0.1:{BACKEND_PORT}/ mapping=encoded\n",
        )
        .start();
    compare(
        &h,
        &b,
        "/wsenc/",
        "/httpenc/",
        &[
            case(b"a%20b%2Fc?x=%20y", Some("/a%20b%2Fc?x=%20y")),
            case(b"%3B%3F", Some("/%3B%3F")),
            case(b"caf%C3%A9", Some("/caf%C3%A9")),
        ],
    );
}

/// A decoded space or control character in a nocanon path (RewriteRule [P,NE] with a
/// back-reference): 403 with AH10419, the backend never contacted. The same path without NE
/// is canonicalised (encoded) and forwarded.
#[test]
fn control_characters_reaching_the_proxy_are_403() {
    if !Httpd::flavor().has_module("rewrite") {
        eprintln!("SKIP: no mod_rewrite");
        return;
    }
    let b = WstEcho::start();
    let h = Httpd::builder()
        .module("rewrite")
        .var("BACKEND_PORT", b.port())
        .config(
            r#"
RewriteEngine On
RewriteRule ^/rwne/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/$1 [P,NE]
RewriteRule ^/rwnehttp/(.*)$ http://127.0.0.1:{BACKEND_PORT}/$1 [P,NE]
RewriteRule ^/rw/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/$1 [P]
RewriteRule ^/rwhttp/(.*)$ http://127.0.0.1:{BACKEND_PORT}/$1 [P]
RewriteRule ^/rwq/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/x?q=$1 [P]
"#,
        )
        .start();
    let t = h.target();
    for bad in [
        &b"a%20b"[..],
        b"a%09b",
        b"a%01b",
        b"a%7Fb",
        b"a%0D%0AX-Injected:%201",
    ] {
        let mut p = b"/rwne/".to_vec();
        p.extend_from_slice(bad);
        let (status, line) = through_t(&t, &b, &p, true);
        let shown = String::from_utf8_lossy(&p).into_owned();
        // 2.2's mod_rewrite: `.` does not match a decoded LF, so the rule does not apply and
        // the request never reaches a proxy (404 from the file system).
        let not_rewritten = !Httpd::flavor().is_24() && bad.windows(3).any(|w| w == b"%0A");
        if not_rewritten {
            assert_eq!(status, 404, "{shown}: expected 404 (rule not applied)");
        } else {
            assert_eq!(status, 403, "{shown}: expected 403");
        }
        assert_eq!(line, None, "{shown}: the backend got a request");
        // mod_proxy_http refuses the same (reference behaviour) since 2.4.57; older
        // mod_proxy_http forwards it (CVE-2023-25690's family), which is not checked here.
        let mut p = b"/rwnehttp/".to_vec();
        p.extend_from_slice(bad);
        let (status, line) = through_t(&t, &b, &p, false);
        if Httpd::flavor().version >= (2, 4, 57) {
            assert_eq!(
                (status, line),
                (403, None),
                "proxy_http reference for {shown}"
            );
        } else {
            eprintln!("{shown}: mod_proxy_http (before 2.4.57): {status} {line:?}");
        }
    }
    assert!(
        h.wait_module_line(
            Duration::from_secs(3),
            "proxy_wstunnel",
            &["AH10419", "control characters or spaces"]
        )
        .is_some(),
        "no AH10419 error from proxy_wstunnel"
    );
    // Without NE the decoded space is canonicalised, like mod_proxy_http does.
    compare(
        &h,
        &b,
        "/rw/",
        "/rwhttp/",
        &[case(b"a%20b", Some("/a%20b")), case(b"ok%41", Some("/okA"))],
    );
    // A decoded space in a query built by mod_rewrite: refused by mod_rewrite (AH10410, 2.4.56+)
    // before the proxy; documented here, as this is why no client can bring one to our canon
    // step there. Older mod_rewrite passes it on, and this module refuses it (AH10409).
    let (status, line) = through_t(&t, &b, b"/rwq/a%20b", true);
    assert_eq!((status, line), (403, None), "/rwq/a%20b");
    let v = Httpd::flavor().version;
    if v < (2, 4, 56) {
        assert!(
            h.wait_module_line(
                Duration::from_secs(3),
                "proxy_wstunnel",
                &["AH10409", "control characters or spaces"]
            )
            .is_some(),
            "no AH10409 error from proxy_wstunnel for /rwq/a%20b"
        );
    }
    // A raw control character in the request line is a 400 from httpd's parser (strict
    // parsing, HttpProtocolOptions: 2.4.25+, 2.2.32+, and backported to CentOS 6's 2.2.15).
    // Older parsers accept it; then it is canonicalised (%01) like mod_proxy_http does.
    if Httpd::flavor().strict_request_line {
        let (status, line) = through_t(&t, &b, b"/rw/a\x01b", true);
        assert_eq!((status, line), (400, None), "raw CTL in the request line");
    } else {
        compare(
            &h,
            &b,
            "/rw/",
            "/rwhttp/",
            &[case(b"a\x01b", Some("/a%01b"))],
        );
    }
}

/// The scheme's default port is dropped from the canonical URL (`ws://127.0.0.1:80/` is
/// served as `ws://127.0.0.1/`, `wss://...:443/` as `wss://.../`), and an IPv6 literal keeps
/// its brackets. When port 80 can be bound here, a backend on it gets `Host: 127.0.0.1`.
#[test]
fn default_ports_are_omitted() {
    let b80 = WstEcho::start_on_port(80);
    if b80.is_none() {
        eprintln!("note: port 80 not bindable here; checking the canonical URLs only");
    }
    // Without mod_ssl (2.2.15 built here) the wss:// route still gets its canonical URL; the
    // connection then fails (500), which is not what this test looks at.
    let ssl = Httpd::flavor().has_module("ssl");
    let mut builder = Httpd::builder();
    if ssl {
        builder = builder.module("ssl").config("SSLProxyEngine on\n");
    }
    let h = builder
        .config(
            "ProxyPass /p80/ ws://127.0.0.1:80/\n\
             ProxyPass /p443/ wss://127.0.0.1:443/\n\
             ProxyPass /v6/ ws://[::1]:8080/\n",
        )
        .start();
    let t = h.target();
    let (status, _) = {
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&request_bytes(b"/p80/headers", &t.host, true))
            .unwrap();
        let r = c.read_head().unwrap();
        if let Some(b) = &b80 {
            assert_eq!(r.status, 101, "{}", r.head);
            let mut ws = c.into_websocket();
            let head = wst_e2e::client::next_data(&mut ws)
                .unwrap()
                .into_text()
                .unwrap()
                .to_string();
            assert!(
                head.lines().any(|l| l.trim_end() == "Host: 127.0.0.1"),
                "backend on port 80 should get `Host: 127.0.0.1`:\n{head}"
            );
            assert!(b.requests().iter().any(|r| r.starts_with("GET /headers ")));
        }
        (r.status, ())
    };
    // (Without our backend on port 80, whatever answers there, if anything, is not checked.)
    let _ = status;
    for (path, want) in [
        ("/p80/x", "serving URL ws://127.0.0.1/x"),
        ("/p443/x", "serving URL wss://127.0.0.1/x"),
        ("/v6/x", "serving URL ws://[::1]:8080/x"),
    ] {
        let mut c = RawClient::connect(&t).unwrap();
        c.send(&request_bytes(path.as_bytes(), &t.host, true))
            .unwrap();
        let _ = c.read_head();
        assert!(
            h.wait_module_line(Duration::from_secs(3), "proxy_wstunnel", &[want])
                .is_some(),
            "{path}: no debug line {want:?}"
        );
    }
}
