//! mod_status shows the tunnel counts on every form of its page, not only in `?auto`:
//!
//! * the HTML page (`/server-status`): a "WebSocket tunnels" section with the open tunnels, the
//!   tunnels opened since start and the upgrades refused by `ProxyWebsocketMaxTunnels`, in
//!   mod_status's own `<dl><dt>` style, before the page's signature and `</body>`, whether or
//!   not a cap is set, with `ExtendedStatus On` (what loading mod_status sets) and
//!   `ExtendedStatus Off`;
//! * the HTML page without the worker table (`?notable`), and with a refresh (`?refresh=N`);
//! * `?auto`: exactly the three `Key: value` lines, no HTML;
//! * the HTML figures are the `?auto` figures, read from the same shared counters, while
//!   tunnels open and close.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::time::Duration;

use tungstenite::Message;
use wst_e2e::client::{close, http_get, roundtrip};
use wst_e2e::observe::{status_auto, status_num};
use wst_e2e::{Browser, Httpd, Target, WsClient, WstEcho};

const WAIT: Duration = Duration::from_secs(10);

fn ready() -> bool {
    let f = Httpd::flavor();
    if f.wst_is_stock {
        eprintln!("SKIP: the stock module has no tunnel counts");
        return false;
    }
    if !f.has_module("status") {
        eprintln!("SKIP: no mod_status in this httpd");
        return false;
    }
    true
}

fn status_config(extra: &str) -> String {
    format!(
        r#"
<Location /server-status>
    SetHandler server-status
</Location>
{extra}
ProxyPass /ws/ ws://127.0.0.1:{{BACKEND_PORT}}/
"#
    )
}

fn start(extra: &str, backend: &WstEcho) -> Httpd {
    Httpd::builder()
        .module("status")
        .var("BACKEND_PORT", backend.port())
        .config(&status_config(extra))
        .start()
}

type Ws = tungstenite::WebSocket<wst_e2e::net::Stream>;

fn open_tunnel(t: &Target, i: usize) -> Ws {
    let (_r, mut ws) = WsClient::connect(t, "/ws/echo", Browser::ALL[i % 2])
        .unwrap_or_else(|e| panic!("tunnel {i}: {e}"));
    let m = format!("tunnel {i}");
    assert_eq!(
        roundtrip(&mut ws, Message::text(m.clone())).unwrap(),
        Message::text(m)
    );
    ws
}

/// The HTML page (or a variant: `?notable`, `?refresh=60`) and its body.
fn html(t: &Target, query: &str) -> String {
    let r = http_get(t, &format!("/server-status{query}")).unwrap();
    assert_eq!(r.status, 200, "/server-status{query}:\n{}", r.head);
    let ct = r.header("Content-Type").unwrap_or("").to_ascii_lowercase();
    assert!(ct.starts_with("text/html"), "/server-status{query}: {ct}");
    r.body_str()
}

/// The figure in the HTML line `<dt>label: N...</dt>` (mod_status's own `<dl>` style, which
/// `?notable` keeps: no tables).
fn html_figure(body: &str, label: &str) -> Option<u64> {
    let needle = format!("<dt>{label}: ");
    let at = body.find(&needle)?;
    let rest = &body[at + needle.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// (open, total, refused) from the HTML page; panics with the page when the section is missing.
fn html_counts(body: &str) -> (u64, u64, u64) {
    let get = |label: &str| {
        html_figure(body, label)
            .unwrap_or_else(|| panic!("no \"{label}\" row on the HTML status page:\n{body}"))
    };
    (
        get("Open tunnels"),
        get("Opened since start"),
        get("Refused by ProxyWebsocketMaxTunnels"),
    )
}

fn auto_counts(t: &Target) -> (u64, u64, u64) {
    let m = status_auto(t, "/server-status").unwrap();
    let get = |k: &str| status_num(&m, k).unwrap_or_else(|| panic!("no {k} in ?auto: {m:?}"));
    (
        get("WebSocketTunnels"),
        get("WebSocketTunnelsTotal"),
        get("WebSocketTunnelsRefused"),
    )
}

/// The section is in the page's body: after mod_status's own content, before the signature
/// and `</body>`, and it is the only one.
fn assert_section_placed(body: &str) {
    let heading = "<h2>WebSocket tunnels (mod_proxy_wstunnel)</h2>";
    let at = body
        .find(heading)
        .unwrap_or_else(|| panic!("no WebSocket tunnels heading:\n{body}"));
    assert_eq!(body.matches(heading).count(), 1, "{body}");
    let end = body.rfind("</body>").expect("no </body>");
    assert!(at < end, "section after </body>:\n{body}");
    if let Some(sig) = body.rfind("<address>") {
        assert!(at < sig, "section after the signature:\n{body}");
    }
    assert!(
        body[..at].contains("Server uptime"),
        "section before mod_status's own:\n{body}"
    );
    assert!(
        !body.contains("WebSocketTunnels:"),
        "?auto lines on the HTML page:\n{body}"
    );
}

fn wait_both(t: &Target, want: (u64, u64, u64)) {
    let mut last = ((0, 0, 0), (0, 0, 0));
    let ok = wst_e2e::wait_for(WAIT, || {
        last = (auto_counts(t), html_counts(&html(t, "")));
        (last == (want, want)).then_some(())
    });
    assert!(
        ok.is_some(),
        "want {want:?} on both pages, have (?auto, HTML) {last:?}"
    );
}

#[test]
fn html_page_shows_counts_without_a_cap() {
    if !ready() {
        return;
    }
    let b = WstEcho::start();
    let h = start("ServerSignature On", &b);
    let t = h.target();
    let body = html(&t, "");
    assert!(
        body.contains("<address>"),
        "ServerSignature On: no signature:\n{body}"
    );
    assert_section_placed(&body);
    assert_eq!(html_counts(&body), (0, 0, 0));
    assert!(
        body.contains("no limit"),
        "no cap set, the page should say so:\n{body}"
    );

    let mut a = open_tunnel(&t, 0);
    let mut c = open_tunnel(&t, 1);
    let body = html(&t, "");
    assert_section_placed(&body);
    assert_eq!(html_counts(&body), (2, 2, 0), "{body}");
    assert_eq!(auto_counts(&t), (2, 2, 0));

    close(&mut a);
    drop(a);
    wait_both(&t, (1, 2, 0));
    close(&mut c);
    drop(c);
    wait_both(&t, (0, 2, 0));
}

#[test]
fn html_page_shows_the_cap_and_refusals() {
    if !ready() {
        return;
    }
    let b = WstEcho::start();
    let h = start("ProxyWebsocketMaxTunnels 1", &b);
    let t = h.target();
    let mut a = open_tunnel(&t, 0);
    let refused = WsClient::connect(&t, "/ws/echo", Browser::Firefox)
        .err()
        .expect("a second tunnel over a cap of 1 was accepted");
    assert!(refused.contains(" 503 "), "over the cap: {refused}");
    let body = html(&t, "");
    assert_section_placed(&body);
    assert_eq!(html_counts(&body), (1, 1, 1), "{body}");
    assert!(body.contains("1 of at most 1"), "{body}");
    assert_eq!(auto_counts(&t), (1, 1, 1));
    close(&mut a);
    drop(a);
    wait_both(&t, (0, 1, 1));
}

#[test]
fn html_page_with_extended_status_off() {
    if !ready() {
        return;
    }
    let b = WstEcho::start();
    let h = start("ExtendedStatus Off", &b);
    let t = h.target();
    let mut a = open_tunnel(&t, 0);
    let body = html(&t, "");
    assert_section_placed(&body);
    assert_eq!(html_counts(&body), (1, 1, 0), "{body}");
    close(&mut a);
}

#[test]
fn html_variants_notable_and_refresh() {
    if !ready() {
        return;
    }
    let b = WstEcho::start();
    let h = start("", &b);
    let t = h.target();
    let mut a = open_tunnel(&t, 0);
    for q in ["?notable", "?refresh=60"] {
        let body = html(&t, q);
        assert_section_placed(&body);
        assert_eq!(html_counts(&body), (1, 1, 0), "{q}:\n{body}");
    }
    close(&mut a);
}

#[test]
fn auto_page_has_only_the_key_lines() {
    if !ready() {
        return;
    }
    let b = WstEcho::start();
    let h = start("ProxyWebsocketMaxTunnels 5", &b);
    let t = h.target();
    let mut a = open_tunnel(&t, 0);
    let r = http_get(&t, "/server-status?auto").unwrap();
    assert_eq!(r.status, 200);
    let body = r.body_str();
    assert!(!body.contains('<'), "HTML in ?auto:\n{body}");
    for line in [
        "WebSocketTunnels: 1\n",
        "WebSocketTunnelsTotal: 1\n",
        "WebSocketTunnelsRefused: 0\n",
    ] {
        assert_eq!(
            body.matches(line).count(),
            1,
            "{line:?} once in ?auto:\n{body}"
        );
    }
    close(&mut a);
}
