//! TLS on either side of the tunnel: wss:// clients (mod_ssl front) and wss:// backends
//! (SSLProxyEngine), with large messages.

use tungstenite::Message;
use wst_e2e::client::{close, next_data, roundtrip};
use wst_e2e::{binary_payload, Browser, Httpd, Pki, Target, WsClient, WstEcho};

fn need_ssl() -> bool {
    if Httpd::flavor().has_module("ssl") {
        true
    } else {
        eprintln!("SKIP: no mod_ssl in this httpd");
        false
    }
}

fn exercise(t: &Target) {
    for br in Browser::ALL {
        let (_r, mut ws) =
            WsClient::connect(t, "/ws/push", br).unwrap_or_else(|e| panic!("{br:?}: {e}"));
        assert_eq!(next_data(&mut ws).unwrap(), Message::text("pushed"));
        for n in [0usize, 126, 65536, 1 << 20] {
            let bin = binary_payload(n, n as u8);
            let m = roundtrip(&mut ws, Message::binary(bin.clone())).unwrap();
            assert!(m.into_data()[..] == bin[..], "{br:?}: {n} bytes differ");
        }
        close(&mut ws);
    }
}

fn front_tls(backend: &WstEcho, pki: &Pki) -> Httpd {
    Httpd::builder()
        .module("ssl")
        .pki(pki)
        .listen("TLS_PORT")
        .var("SCHEME", if backend.is_tls() { "wss" } else { "ws" })
        .var("BACKEND_PORT", backend.port())
        .config(wst_e2e::TLS_FRONT)
        .start()
}

#[test]
fn wss_client_ws_backend() {
    if !need_ssl() {
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start();
    let h = front_tls(&b, &pki);
    exercise(&h.tls_target(h.port_of("TLS_PORT")));
}

#[test]
fn wss_client_wss_backend_verified() {
    if !need_ssl() {
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls(&pki);
    let h = front_tls(&b, &pki);
    exercise(&h.tls_target(h.port_of("TLS_PORT")));
}

/// Plain client, wss:// backend that sends no TLS 1.3 session tickets.
#[test]
fn ws_client_wss_backend_without_session_tickets() {
    if !need_ssl() {
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls_tickets(&pki, 0);
    let h = Httpd::builder()
        .module("ssl")
        .pki(&pki)
        .var("BACKEND_PORT", b.port())
        .config("SSLProxyEngine on\nSSLProxyVerify require\nSSLProxyCACertificateFile \"{CA}\"\nProxyPass /ws/ wss://localhost:{BACKEND_PORT}/\n")
        .start();
    exercise(&h.target());
}

/// Plain client, wss:// backend sending TLS 1.3 session tickets (OpenSSL's and rustls's
/// default): records that arrive with the 101 must not stall the tunnel.
#[test]
fn ws_client_wss_backend_with_session_tickets() {
    if !need_ssl() {
        return;
    }
    let pki = Pki::generate();
    let b = WstEcho::start_tls_tickets(&pki, 2);
    let h = Httpd::builder()
        .module("ssl")
        .pki(&pki)
        .var("BACKEND_PORT", b.port())
        .config("SSLProxyEngine on\nSSLProxyVerify require\nSSLProxyCACertificateFile \"{CA}\"\nProxyPass /ws/ wss://localhost:{BACKEND_PORT}/\n")
        .start();
    exercise(&h.target());
}
