//! Small RFC 7230 helpers shared by the request and response code: token and
//! field-value syntax, OWS trimming, and comma-separated list iteration over
//! (possibly repeated) header fields.

use super::Header;

/// `tchar` of RFC 7230 3.2.6.
pub(crate) const fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.'
        | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// A non-empty RFC 7230 `token`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A field value that cannot inject a line: no control character except
/// HTAB (so no CR, LF, NUL), and no DEL. obs-text (0x80..=0xFF) is allowed.
pub(crate) fn is_field_value(s: &[u8]) -> bool {
    s.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Optional whitespace of RFC 7230 3.2.3.
pub(crate) const fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing SP / HTAB.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| !is_ows(b))
        .map_or(start, |i| i.saturating_add(1));
    s.get(start..end).unwrap_or(&[])
}

/// The non-empty, OWS-trimmed elements of a comma-separated list
/// (RFC 7230 7: empty elements are ignored).
pub(crate) fn comma_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// The list elements of every header named `name` (case-insensitive), in
/// order, as if the repeated fields were one comma-joined field.
pub(crate) fn list_tokens<'a, I>(
    headers: I,
    name: &'static [u8],
) -> impl Iterator<Item = &'a [u8]> + Clone
where
    I: Iterator<Item = Header<'a>> + Clone,
{
    headers
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .flat_map(|h| comma_tokens(h.value))
}

/// How many headers are named `name` (case-insensitive).
pub(crate) fn count_named<'a, I>(headers: I, name: &[u8]) -> usize
where
    I: Iterator<Item = Header<'a>>,
{
    headers
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .count()
}

/// The first header named `name` (case-insensitive).
pub(crate) fn first_named<'a, I>(mut headers: I, name: &[u8]) -> Option<Header<'a>>
where
    I: Iterator<Item = Header<'a>>,
{
    headers.find(|h| h.name.eq_ignore_ascii_case(name))
}

/// The protocol name of an Upgrade token (`protocol-name ["/" protocol-version]`).
pub(crate) fn protocol_name(tok: &[u8]) -> &[u8] {
    match tok.iter().position(|&b| b == b'/') {
        Some(i) => trim_ows(tok.get(..i).unwrap_or(&[])),
        None => tok,
    }
}

/// Whether an Upgrade token offered by a peer matches one we accept: when
/// the accepted token names a version (`foo/2`) the whole token must match,
/// otherwise only the protocol name is compared. Case-insensitive.
pub(crate) fn upgrade_token_matches(offered: &[u8], accepted: &[u8]) -> bool {
    if accepted.contains(&b'/') {
        offered.eq_ignore_ascii_case(accepted)
    } else {
        protocol_name(offered).eq_ignore_ascii_case(accepted)
    }
}

/// Whether the Upgrade token names the WebSocket protocol.
pub(crate) fn is_websocket_token(tok: &[u8]) -> bool {
    protocol_name(tok).eq_ignore_ascii_case(b"websocket")
}

/// A non-empty run of ASCII digits as a u64 (None on overflow or syntax).
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name: name.as_bytes(),
            value: value.as_bytes(),
        }
    }

    #[test]
    fn tchar_table() {
        for b in 0u8..=255 {
            let expect = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), expect, "byte {b:#x}");
        }
    }

    #[test]
    fn tokens_and_values() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"Sec-WebSocket-Key"));
        assert!(!is_token(b""));
        assert!(!is_token(b"Foo Bar"));
        assert!(!is_token(b"Foo:"));
        assert!(!is_token(b"Foo\r\n"));
        assert!(!is_token(b"(x)"));
        assert!(is_field_value(b""));
        assert!(is_field_value(b"a\tb c \x80\xff"));
        assert!(!is_field_value(b"a\rb"));
        assert!(!is_field_value(b"a\nb"));
        assert!(!is_field_value(b"a\0b"));
        assert!(!is_field_value(b"a\x7fb"));
        assert!(!is_field_value(b"a\x0bb"));
    }

    #[test]
    fn trimming() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"   ", b""),
            (b" \t a b \t", b"a b"),
            (b"x", b"x"),
            (b"\r x", b"\r x"),
        ];
        for (input, want) in cases {
            assert_eq!(trim_ows(input), *want, "{input:?}");
        }
    }

    #[test]
    fn comma_lists() {
        let v: Vec<&[u8]> = comma_tokens(b" keep-alive ,, Upgrade,\t").collect();
        assert_eq!(v, vec![&b"keep-alive"[..], &b"Upgrade"[..]]);
        assert_eq!(comma_tokens(b" , ,").count(), 0);
        let hs = [
            h("Connection", "keep-alive"),
            h("X", "y"),
            h("connection", "Upgrade, close"),
        ];
        let v: Vec<&[u8]> = list_tokens(hs.iter().copied(), b"connection").collect();
        assert_eq!(v, vec![&b"keep-alive"[..], &b"Upgrade"[..], &b"close"[..]]);
        assert_eq!(count_named(hs.iter().copied(), b"CONNECTION"), 2);
        assert_eq!(
            first_named(hs.iter().copied(), b"x").map(|h| h.value),
            Some(&b"y"[..])
        );
    }

    #[test]
    fn upgrade_tokens() {
        assert_eq!(protocol_name(b"websocket/13"), b"websocket");
        assert_eq!(protocol_name(b"h2c"), b"h2c");
        assert!(is_websocket_token(b"WebSocket"));
        assert!(is_websocket_token(b"websocket/13"));
        assert!(!is_websocket_token(b"websockets"));
        assert!(upgrade_token_matches(b"WebSocket/13", b"websocket"));
        assert!(upgrade_token_matches(b"FOO/2", b"foo/2"));
        assert!(!upgrade_token_matches(b"foo/1", b"foo/2"));
        assert!(!upgrade_token_matches(b"foo", b"foo/2"));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"00042"), Some(42));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b"1 "), None);
        assert_eq!(parse_decimal(b"0x10"), None);
    }
}
