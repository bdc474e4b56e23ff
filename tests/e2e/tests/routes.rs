//! Route kinds beyond the seeds: balancer:// groups of ws:// members (stickysession honoured),
//! ProxyPass inside <Location>.

use tungstenite::Message;
use wst_e2e::client::{close, roundtrip};
use wst_e2e::{Browser, Httpd, UpgradeRequest, WsClient, WstEcho};

const BALANCER: &str = r#"
<Proxy "balancer://wsgroup">
    BalancerMember "ws://127.0.0.1:{B1}" route=one
    BalancerMember "ws://127.0.0.1:{B2}" route=two
    ProxySet stickysession=ROUTEID lbmethod=byrequests
</Proxy>
ProxyPass "/bal/" "balancer://wsgroup/"
"#;

fn count(b: &WstEcho, path: &str) -> usize {
    b.requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path} ")))
        .count()
}

#[test]
fn balancer_of_ws_members_spreads_and_honours_stickysession() {
    if !Httpd::flavor().has_module("proxy_balancer") {
        eprintln!("SKIP: no mod_proxy_balancer");
        return;
    }
    let b1 = WstEcho::start();
    let b2 = WstEcho::start();
    let h = Httpd::builder()
        .module("proxy_balancer")
        .var("B1", b1.port())
        .var("B2", b2.port())
        .config(BALANCER)
        .start();
    let t = h.target();
    for i in 0..4 {
        let (_r, mut ws) = WsClient::connect(&t, "/bal/echo", Browser::ALL[i % 2]).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text("lb")).unwrap(),
            Message::text("lb")
        );
        close(&mut ws);
    }
    assert_eq!(
        count(&b1, "/echo"),
        2,
        "byrequests: b1 got {:?}",
        b1.requests()
    );
    assert_eq!(
        count(&b2, "/echo"),
        2,
        "byrequests: b2 got {:?}",
        b2.requests()
    );

    // Sticky: every upgrade carrying route "two" lands on b2.
    for br in Browser::ALL.iter().chain(Browser::ALL.iter()) {
        let req = UpgradeRequest::new("/bal/headers", &t.host, *br)
            .header("Cookie", "ROUTEID=session.two");
        let (_r, mut ws) = WsClient::connect_with(&t, &req).unwrap();
        let _head = wst_e2e::client::next_data(&mut ws).unwrap();
        close(&mut ws);
    }
    assert_eq!(
        count(&b2, "/headers"),
        4,
        "sticky: b2 got {:?}",
        b2.requests()
    );
    assert_eq!(
        count(&b1, "/headers"),
        0,
        "sticky: b1 got {:?}",
        b1.requests()
    );
}

#[test]
fn proxypass_in_location() {
    let b = WstEcho::start();
    let h = Httpd::builder()
        .var("BACKEND_PORT", b.port())
        .config(
            "<Location /loc/>\n    ProxyPass ws://127.0.0.1:{BACKEND_PORT}/inner/\n</Location>\n",
        )
        .start();
    for br in Browser::ALL {
        let (_r, mut ws) = WsClient::connect(&h.target(), "/loc/echo", br).unwrap();
        assert_eq!(
            roundtrip(&mut ws, Message::text("loc")).unwrap(),
            Message::text("loc")
        );
        close(&mut ws);
    }
    assert_eq!(count(&b, "/inner/echo"), 2, "{:?}", b.requests());
}
