//! Skip guards: each returns `true` when the httpd under test can run the test, and otherwise
//! prints why (`SKIP: ...`, visible with `--nocapture`) and returns `false`, so that a test
//! starts with `if !need::ours() || !need::ssl() { return; }`.

use crate::httpd::Httpd;

/// The module under test is this project's (its directives and counters exist), not the
/// httpd's stock mod_proxy_wstunnel.
pub fn ours() -> bool {
    or_skip(!Httpd::flavor().wst_is_stock, || {
        "the stock module has none of these directives".into()
    })
}

/// The httpd has mod_ssl.
pub fn ssl() -> bool {
    module("ssl")
}

/// The httpd has `mod_<m>` (loadable or compiled in).
pub fn module(m: &str) -> bool {
    or_skip(Httpd::flavor().has_module(m), || {
        format!("no mod_{m} in this httpd")
    })
}

/// The httpd can run the `mpm` MPM.
pub fn mpm(mpm: &str) -> bool {
    or_skip(Httpd::flavor().supports_mpm(mpm), || {
        format!("this httpd cannot run the {mpm} MPM")
    })
}

fn or_skip(ok: bool, why: impl FnOnce() -> String) -> bool {
    if !ok {
        eprintln!("SKIP: {}", why());
    }
    ok
}
