//! The syntax and contexts of this module's directives: a bad value or a directive in a context
//! it does not allow stops httpd at start-up with a syntax error naming the directive;
//! `ProxyWebsocketAllowOrigin` needs at least one origin; every allowed context loads. What the
//! directives do: one test file each (upgrade_http.rs, allow_origin.rs, max_tunnels.rs, ...).
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::panic::AssertUnwindSafe;

use wst_e2e::{need, Httpd};

/// `ProxyWebsocketAllowOrigin` without an origin must not load (and leave every origin
/// allowed): httpd 2.4's core refuses an ITERATE directive without arguments, 2.2's calls the
/// directive's function zero times and says nothing.
#[test]
fn allow_origin_without_arguments_is_a_syntax_error() {
    if !need::ours() {
        return;
    }
    match start_result("ProxyWebsocketAllowOrigin\n") {
        Ok(_h) => panic!("httpd accepted a ProxyWebsocketAllowOrigin line without any origin"),
        Err(msg) => assert!(
            msg.contains("ProxyWebsocketAllowOrigin") && msg.contains("Syntax error"),
            "the failure does not name ProxyWebsocketAllowOrigin:\n{msg}"
        ),
    }
}

/// Start an httpd with `snippet`; Err(the failure text) if it does not start.
fn start_result(snippet: &str) -> Result<Httpd, String> {
    let snippet = snippet.to_string();
    std::panic::catch_unwind(AssertUnwindSafe(move || {
        Httpd::builder().config(&snippet).start()
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn directive_syntax_and_contexts() {
    if !need::ours() {
        return;
    }
    let bad = [
        (
            "<VirtualHost 127.0.0.1:{PORT}>\n    ProxyWebsocketMaxTunnels 3\n</VirtualHost>\n",
            "ProxyWebsocketMaxTunnels",
        ),
        (
            "<Location /x>\n    ProxyWebsocketMaxTunnels 3\n</Location>\n",
            "ProxyWebsocketMaxTunnels",
        ),
        (
            "ProxyWebsocketMaxTunnels many\n",
            "ProxyWebsocketMaxTunnels",
        ),
        ("ProxyWebsocketMaxTunnels -1\n", "ProxyWebsocketMaxTunnels"),
        ("ProxyWebsocketUpgrade maybe\n", "ProxyWebsocketUpgrade"),
        // httpd's time syntax and nothing else: no sign, no unknown unit, nothing after it.
        (
            "ProxyWebsocketIdleTimeout -5\n",
            "ProxyWebsocketIdleTimeout",
        ),
        (
            "ProxyWebsocketIdleTimeout 5x\n",
            "ProxyWebsocketIdleTimeout",
        ),
        (
            "ProxyWebsocketIdleTimeout 5sec\n",
            "ProxyWebsocketIdleTimeout",
        ),
        (
            "ProxyWebsocketIdleTimeout ms\n",
            "ProxyWebsocketIdleTimeout",
        ),
        ("ProxyWebsocketPing 1.5\n", "ProxyWebsocketPing"),
        ("ProxyWebsocketDrain 400d\n", "ProxyWebsocketDrain"),
        (
            "ProxyWebsocketAsyncDelay soon\n",
            "ProxyWebsocketAsyncDelay",
        ),
    ];
    for (snippet, name) in bad {
        match start_result(snippet) {
            Ok(_h) => panic!("httpd accepted:\n{snippet}"),
            Err(msg) => assert!(
                msg.contains(name) && msg.contains("Syntax error"),
                "{snippet}: the failure does not name {name}:\n{msg}"
            ),
        }
    }
    // Every allowed context loads.
    let good = r#"
ProxyWebsocketMaxTunnels 0
ProxyWebsocketUpgrade Off
ProxyWebsocketAllowOrigin *
<VirtualHost 127.0.0.1:{PORT}>
    ProxyWebsocketUpgrade On
    ProxyWebsocketAllowOrigin same https://a.example
</VirtualHost>
<Location /a>
    ProxyWebsocketUpgrade On
    ProxyWebsocketAllowOrigin same
</Location>
<Proxy "http://127.0.0.1:1/">
    ProxyWebsocketUpgrade On
    ProxyWebsocketAllowOrigin https://a.example
</Proxy>
"#;
    if let Err(msg) = start_result(good) {
        panic!("valid configuration refused:\n{msg}");
    }
}
