//! What the client's 101 carries: the backend's headers (and the Upgrade/Connection pair),
//! never what the front end gathered for a response it will not send. A `RewriteCond` on
//! `%{HTTP:Upgrade}` makes mod_rewrite add `Vary: Upgrade` to the response headers; neither
//! stock mode sends it on the 101, and neither does this module.

use wst_e2e::client::check_101;
use wst_e2e::{Browser, Httpd, RawClient, UpgradeRequest, WstEcho};

#[test]
fn rewrite_vary_stays_off_the_101() {
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
RewriteCond %{HTTP:Upgrade} websocket [NC]
RewriteCond %{HTTP:Connection} upgrade [NC]
RewriteRule ^/app/(.*)$ ws://127.0.0.1:{BACKEND_PORT}/$1 [P,L]
Header always set X-Front-End "added by httpd"
"#,
        )
        .module("headers")
        .start();
    let t = h.target();
    for br in Browser::ALL {
        let req = UpgradeRequest::new("/app/echo", &t.host, br);
        let mut c = RawClient::connect(&t).expect("connect");
        c.send(&req.to_bytes()).expect("send upgrade");
        let r = c.read_head().expect("101");
        check_101(&req, &r).unwrap_or_else(|e| panic!("{br:?}: {e}\n{}", r.head));
        assert!(
            r.header("Vary").is_none(),
            "{br:?}: the 101 carries a Vary the backend did not send:\n{}",
            r.head
        );
    }
}
