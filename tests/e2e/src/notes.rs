//! The module's request notes in a log of their own: [`NOTES_LOG`] logs `wstunnel-client-bytes`,
//! `wstunnel-backend-bytes`, `wstunnel-duration-ms`, `wstunnel-closed-first` and `wstunnel-end`
//! (LogFormat `%{...}n`) with the status and request line of every request to
//! `logs/notes.log`; [`notes_for`] waits for a request's line and parses it into [`Notes`].

use crate::httpd::Httpd;
use crate::observe::{log_lines, wait_log_line};
use crate::tunnels::WAIT;

/// LogFormat `wstnotes` and a CustomLog `{DIR}/logs/notes.log` with it (server or vhost
/// context).
pub const NOTES_LOG: &str = r#"
LogFormat "%{wstunnel-client-bytes}n|%{wstunnel-backend-bytes}n|%{wstunnel-duration-ms}n|%{wstunnel-closed-first}n|%{wstunnel-end}n|%>s|%r" wstnotes
CustomLog "{DIR}/logs/notes.log" wstnotes
"#;

/// One line of [`NOTES_LOG`]; a note httpd did not set reads `-`.
#[derive(Debug)]
pub struct Notes {
    pub client_bytes: String,
    pub backend_bytes: String,
    pub duration_ms: String,
    pub closed_first: String,
    pub end: String,
    pub status: String,
    pub raw: String,
}

impl Notes {
    pub fn parse(line: &str) -> Option<Notes> {
        let f: Vec<&str> = line.splitn(7, '|').collect();
        (f.len() == 7).then(|| Notes {
            client_bytes: f[0].into(),
            backend_bytes: f[1].into(),
            duration_ms: f[2].into(),
            closed_first: f[3].into(),
            end: f[4].into(),
            status: f[5].into(),
            raw: line.into(),
        })
    }

    /// `wstunnel-duration-ms` as a number (fails the test if it is none).
    pub fn duration(&self) -> u64 {
        self.duration_ms
            .parse()
            .unwrap_or_else(|_| panic!("duration not a number: {}", self.raw))
    }
}

/// The notes of `GET <path>`, waiting up to [`WAIT`] for its line (which httpd writes when
/// the request, the tunnel, is over); fails the test without one.
pub fn notes_for(h: &Httpd, path: &str) -> Notes {
    let needle = format!("|GET {path} HTTP/1.1");
    let line = notes_line(h, |l| l.ends_with(&needle)).unwrap_or_else(|| {
        panic!(
            "no notes line for {path}:\n{}",
            log_lines(h, "notes.log").join("\n")
        )
    });
    Notes::parse(&line).unwrap_or_else(|| panic!("unparsable notes line {line:?}"))
}

/// The first line of `logs/notes.log` that satisfies `pred`, waiting up to [`WAIT`].
pub fn notes_line(h: &Httpd, pred: impl Fn(&str) -> bool) -> Option<String> {
    wait_log_line(h, "notes.log", WAIT, pred)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_a_tunnel_and_a_plain_request() {
        let n = Notes::parse("12|34|567|client|closed|101|GET /ws/a|b HTTP/1.1").unwrap();
        assert_eq!(
            (
                n.client_bytes.as_str(),
                n.backend_bytes.as_str(),
                n.closed_first.as_str(),
                n.end.as_str(),
                n.status.as_str()
            ),
            ("12", "34", "client", "closed", "101")
        );
        assert_eq!(n.duration(), 567);
        let n = Notes::parse("-|-|-|-|-|200|GET /ws/plain HTTP/1.1").unwrap();
        assert_eq!((n.end.as_str(), n.status.as_str()), ("-", "200"));
        assert!(Notes::parse("1|2|3").is_none());
    }
}
