//! Upgrade policy decisions that are not about the protocol itself: which
//! `Origin` may open a tunnel (`ProxyWebsocketAllowOrigin`).
//!
//! A browser always sends `Origin` with a WebSocket handshake; the check is
//! the server-side defence against cross-site WebSocket hijacking. Clients
//! that send no `Origin` (non-browser programs) are not subject to it.

/// One entry of `ProxyWebsocketAllowOrigin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedOrigin<'a> {
    /// `same`: the Origin's host (and port) must be the request's `Host`.
    Same,
    /// `*`: any origin.
    Any,
    /// A serialized origin such as `https://app.example.com` or
    /// `http://localhost:8080`: the scheme must be the one written (a
    /// `wss://` Origin does not match an `https://` entry), host and scheme
    /// compared case-insensitively, the scheme's default port made explicit
    /// on both sides.
    Exact(&'a [u8]),
}

impl<'a> AllowedOrigin<'a> {
    /// Parse one directive argument.
    pub fn parse(arg: &'a [u8]) -> AllowedOrigin<'a> {
        if arg.eq_ignore_ascii_case(b"same") {
            AllowedOrigin::Same
        } else if arg == b"*" {
            AllowedOrigin::Any
        } else {
            AllowedOrigin::Exact(trim_slash(arg))
        }
    }
}

/// The verdict on a request's `Origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginVerdict {
    /// No policy, no Origin header, or an allowed origin.
    Allowed,
    /// An Origin the policy does not allow: 403.
    Refused,
}

/// Decide on `origin` (the header value, `None` when absent) for a request
/// whose `Host` header is `host`, arriving over TLS when `tls`.
/// An empty `allowed` list means no policy.
pub fn check_origin<'a, I>(origin: Option<&[u8]>, host: &[u8], tls: bool, allowed: I) -> OriginVerdict
where
    I: IntoIterator<Item = AllowedOrigin<'a>>,
{
    let mut any_rule = false;
    let Some(origin) = origin else {
        // Browsers always send Origin on a WebSocket handshake; a client that
        // sends none is not a browser and CSWSH does not apply.
        return OriginVerdict::Allowed;
    };
    let origin = trim_slash(trim(origin));
    let parsed = parse_origin(origin);
    for rule in allowed {
        any_rule = true;
        let ok = match rule {
            AllowedOrigin::Any => true,
            AllowedOrigin::Exact(want) => match (parsed, parse_origin(want)) {
                (Some(a), Some(b)) => a.same_as(&b),
                _ => origin.eq_ignore_ascii_case(want),
            },
            AllowedOrigin::Same => parsed.is_some_and(|o| o.matches_host(host, tls)),
        };
        if ok {
            return OriginVerdict::Allowed;
        }
    }
    if any_rule {
        OriginVerdict::Refused
    } else {
        OriginVerdict::Allowed
    }
}

/// The scheme of an origin. Browsers send `http` and `https` only; `ws`
/// and `wss` come from other clients. Each matches only itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
    Ws,
    Wss,
}

impl Scheme {
    /// The schemes an origin may have, with their prefix.
    const ALL: [(Scheme, &'static [u8]); 4] = [
        (Scheme::Https, b"https://"),
        (Scheme::Http, b"http://"),
        (Scheme::Wss, b"wss://"),
        (Scheme::Ws, b"ws://"),
    ];

    const fn default_port(self) -> u16 {
        match self {
            Scheme::Https | Scheme::Wss => 443,
            Scheme::Http | Scheme::Ws => 80,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Origin<'a> {
    scheme: Scheme,
    host: &'a [u8],
    port: u16,
}

impl Origin<'_> {
    /// Same serialized origin: scheme exactly (`wss` is not `https`), host
    /// case-insensitively, port (the scheme's default made explicit).
    fn same_as(&self, other: &Origin<'_>) -> bool {
        self.scheme == other.scheme
            && self.port == other.port
            && self.host.eq_ignore_ascii_case(other.host)
    }

    /// Does this origin name the server the request was sent to? The Host
    /// header carries no scheme: the request's own transport decides the
    /// default port, and the origin's scheme must be the page's, which may
    /// differ (an http page may open ws:// to the same host), so only host
    /// and port are compared.
    fn matches_host(&self, host: &[u8], tls: bool) -> bool {
        let default = if tls { 443 } else { 80 };
        let Some((h, p)) = split_host_port(trim(host), default) else {
            return false;
        };
        h.eq_ignore_ascii_case(self.host) && p == self.port
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    s.get(start..end).unwrap_or(&[])
}

fn trim_slash(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"/").unwrap_or(s)
}

/// `scheme://host[:port]` with scheme http or https (also ws/wss, as some
/// non-browser clients send; they keep their own scheme).
fn parse_origin(s: &[u8]) -> Option<Origin<'_>> {
    let (scheme, rest) = Scheme::ALL
        .iter()
        .find_map(|&(scheme, prefix)| strip_prefix_ci(s, prefix).map(|r| (scheme, r)))?;
    if rest.iter().any(|&b| b == b'/' || b == b'?' || b == b'#' || b == b'@') {
        return None;
    }
    let (host, port) = split_host_port(rest, scheme.default_port())?;
    Some(Origin { scheme, host, port })
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &[u8], default: u16) -> Option<(&[u8], u16)> {
    let (host, port) = if s.first() == Some(&b'[') {
        let close = s.iter().position(|&b| b == b']')?;
        let host = s.get(..=close)?;
        match s.get(close + 1..)? {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return None,
        }
    } else {
        match s.iter().rposition(|&b| b == b':') {
            Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => default,
        Some(digits) => parse_port(digits)?,
    };
    Some((host, port))
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(d - b'0');
    }
    u16::try_from(v).ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(origin: Option<&str>, host: &str, tls: bool, rules: &[&str]) -> OriginVerdict {
        check_origin(
            origin.map(str::as_bytes),
            host.as_bytes(),
            tls,
            rules.iter().map(|r| AllowedOrigin::parse(r.as_bytes())),
        )
    }

    #[test]
    fn no_policy_allows_everything() {
        assert_eq!(check(Some("https://evil.example"), "a.example", true, &[]), OriginVerdict::Allowed);
    }

    #[test]
    fn missing_origin_is_not_a_browser() {
        assert_eq!(check(None, "a.example", true, &["same"]), OriginVerdict::Allowed);
    }

    #[test]
    fn exact_origins() {
        let rules = ["https://app.example.com", "http://localhost:8080"];
        let cases = [
            ("https://app.example.com", true),
            ("HTTPS://APP.EXAMPLE.COM", true),
            ("https://app.example.com:443", true),
            ("https://app.example.com/", true),
            ("http://app.example.com", false),
            ("https://app.example.com:8443", false),
            ("https://app.example.com.evil", false),
            ("https://evil.example/app.example.com", false),
            ("http://localhost:8080", true),
            ("http://localhost", false),
            ("null", false),
            ("", false),
        ];
        for (origin, ok) in cases {
            let want = if ok { OriginVerdict::Allowed } else { OriginVerdict::Refused };
            assert_eq!(check(Some(origin), "x", true, &rules), want, "{origin}");
        }
    }

    #[test]
    fn scheme_is_matched_as_written() {
        // A wss:// (or ws://) Origin is not the https:// (http://) origin of
        // the same host: browsers send http and https only.
        let cases = [
            ("https://app.example.com", "https://app.example.com", true),
            ("wss://app.example.com", "https://app.example.com", false),
            ("WSS://app.example.com:443", "https://app.example.com", false),
            ("ws://app.example.com", "https://app.example.com", false),
            ("ws://app.example.com", "http://app.example.com", false),
            ("http://app.example.com", "ws://app.example.com", false),
            ("https://app.example.com", "wss://app.example.com", false),
            // An entry written with ws/wss matches exactly that scheme.
            ("wss://app.example.com", "wss://app.example.com", true),
            ("wss://app.example.com:443", "wss://app.example.com", true),
            ("WS://App.Example.Com:80/", "ws://app.example.com", true),
            ("ws://app.example.com:443", "wss://app.example.com", false),
            ("https://app.example.com:80", "http://app.example.com", false),
            // The default port is the scheme's own.
            ("http://app.example.com:80", "http://app.example.com", true),
            ("https://app.example.com:443", "https://app.example.com:443", true),
        ];
        for (origin, rule, ok) in cases {
            let want = if ok { OriginVerdict::Allowed } else { OriginVerdict::Refused };
            assert_eq!(check(Some(origin), "x", true, &[rule]), want, "{origin} vs {rule}");
        }
        // Other schemes never parse: only the same text matches.
        assert_eq!(check(Some("ftp://a"), "x", true, &["ftp://a"]), OriginVerdict::Allowed);
        assert_eq!(check(Some("ftp://a"), "x", true, &["http://a"]), OriginVerdict::Refused);
        assert_eq!(check(Some("httpx://a"), "x", true, &["https://a"]), OriginVerdict::Refused);
        // `same` has no scheme to compare (the page's scheme may differ
        // from the request's transport): host and port only, as before.
        assert_eq!(check(Some("https://a.example"), "a.example", false, &["same"]), OriginVerdict::Refused);
        assert_eq!(check(Some("https://a.example:80"), "a.example", false, &["same"]), OriginVerdict::Allowed);
        assert_eq!(check(Some("wss://a.example"), "a.example", true, &["same"]), OriginVerdict::Allowed);
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let cases = [
            ("https://a.example", "a.example", true, true),
            ("https://a.example", "a.example:443", true, true),
            ("https://A.Example", "a.example", true, true),
            ("http://a.example:8080", "a.example:8080", false, true),
            ("http://a.example", "a.example:8080", false, false),
            ("https://b.example", "a.example", true, false),
            ("https://a.example:8443", "a.example", true, false),
            ("http://[::1]:8080", "[::1]:8080", false, true),
            ("null", "a.example", true, false),
        ];
        for (origin, host, tls, ok) in cases {
            let want = if ok { OriginVerdict::Allowed } else { OriginVerdict::Refused };
            assert_eq!(check(Some(origin), host, tls, &["same"]), want, "{origin} vs {host}");
        }
    }

    #[test]
    fn star_allows_any_and_rules_combine() {
        assert_eq!(check(Some("https://x"), "y", true, &["*"]), OriginVerdict::Allowed);
        assert_eq!(
            check(Some("https://b.example"), "a.example", true, &["same", "https://b.example"]),
            OriginVerdict::Allowed
        );
    }

    #[test]
    fn malformed_ports_never_match() {
        for origin in ["https://a:0", "https://a:99999", "https://a:x", "https://a:", "https://:443"] {
            assert_eq!(check(Some(origin), "a", true, &["same"]), OriginVerdict::Refused, "{origin}");
        }
    }
}
