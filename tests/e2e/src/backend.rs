//! Backend processes: `wst-echo` (this crate's binary) and Debian's `websocketd`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::net::{free_port, wait_port};
use crate::pki::Pki;

fn kill_group(child: &mut Child) {
    // SAFETY: killpg only sends a signal to the process group we created for this child.
    unsafe {
        libc::killpg(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Path of the wst-echo binary: `WST_ECHO_BIN`, or next to the running test binary's `deps/`.
pub fn wst_echo_bin() -> PathBuf {
    let p = crate::httpd::env_or("WST_ECHO_BIN", "");
    if !p.is_empty() {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for _ in 0..3 {
        let cand = dir.join("wst-echo");
        if cand.exists() {
            return cand;
        }
        match dir.parent() {
            Some(p) => dir = p.to_path_buf(),
            None => break,
        }
    }
    panic!(
        "wst-echo binary not found near {} (run through `cargo test`, or set WST_ECHO_BIN)",
        exe.display()
    );
}

/// A running `wst-echo` backend (killed on drop).
///
/// Paths: `/echo` (and any path not listed here): echo every message; `/headers`: one text
/// message with the request head received, then echo; `/push`: a text message "pushed" in the
/// same write as the 101, then echo; `/status/<code>`, `/status-chunked/<code>`: that status
/// with a small body; `/bad-accept`: 101 with a wrong Sec-WebSocket-Accept; `/no-upgrade-101`:
/// 101 without Upgrade; `/slow`: never answers; `/halfclose`: after the 101, counts bytes until
/// EOF, sends the count as a text frame and closes. Plain GETs get 200 `plain <METHOD> <path>`
/// (`/headers`: the request head).
pub struct WstEcho {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    tls: bool,
}

impl WstEcho {
    pub fn start() -> WstEcho {
        Self::spawn(None)
    }
    /// TLS backend with the default number of TLS 1.3 session tickets (2, like OpenSSL).
    pub fn start_tls(pki: &Pki) -> WstEcho {
        Self::spawn(Some(pki))
    }
    /// TLS backend sending `tickets` TLS 1.3 session tickets after the handshake.
    pub fn start_tls_tickets(pki: &Pki, tickets: usize) -> WstEcho {
        Self::spawn_with(
            Some(pki),
            &["--tls13-tickets".to_string(), tickets.to_string()],
        )
    }

    fn spawn(pki: Option<&Pki>) -> WstEcho {
        Self::spawn_with(pki, &[])
    }

    /// A plain backend on a given port (e.g. 80, to test default ports); None if that port
    /// cannot be bound (in use, or not allowed).
    pub fn start_on_port(port: u16) -> Option<WstEcho> {
        Self::try_spawn(None, &[], port).ok()
    }

    fn spawn_with(pki: Option<&Pki>, extra: &[String]) -> WstEcho {
        Self::try_spawn(pki, extra, 0).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_spawn(pki: Option<&Pki>, extra: &[String], port: u16) -> Result<WstEcho, String> {
        let dir = tempfile::Builder::new()
            .prefix("wst-e2e-echo-")
            .tempdir()
            .expect("tempdir");
        let log = fs::File::create(dir.path().join("wst-echo.log")).expect("log file");
        let mut cmd = Command::new(wst_echo_bin());
        cmd.arg("--port").arg(port.to_string());
        if let Some(p) = pki {
            cmd.arg("--tls-cert").arg(p.cert_file());
            cmd.arg("--tls-key").arg(p.key_file());
            cmd.args(extra);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0);
        crate::net::die_with_parent(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().expect("spawn wst-echo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(l) => l,
            Err(_) => {
                kill_group(&mut child);
                return Err("wst-echo did not report its port".into());
            }
        };
        let Some(port) = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            kill_group(&mut child);
            let log = fs::read_to_string(dir.path().join("wst-echo.log")).unwrap_or_default();
            return Err(format!("unexpected wst-echo output {line:?}: {log}"));
        };
        Ok(WstEcho {
            port,
            child,
            dir,
            tls: pki.is_some(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    /// The backend's log: one `REQ <request line>` per request head received, plus events.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("wst-echo.log")).unwrap_or_default()
    }
    /// Request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.strip_prefix("REQ ").map(str::to_string))
            .collect()
    }
}

impl Drop for WstEcho {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "----- wst-echo log (port {}) -----\n{}",
                self.port,
                self.log()
            );
        }
    }
}

/// A running `websocketd` serving one script (killed on drop).
pub struct Websocketd {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Websocketd {
    /// Path of the websocketd binary: `WEBSOCKETD` or `websocketd` on PATH.
    pub fn bin() -> String {
        crate::httpd::env_or("WEBSOCKETD", "websocketd")
    }

    /// True if websocketd can be run here.
    pub fn available() -> bool {
        Command::new(Self::bin())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    /// Start websocketd on a free port with `script` (a shell script body) as the program;
    /// TLS (`--ssl`) with the given certificate if `pki` is set.
    pub fn start(script: &str, pki: Option<&Pki>) -> Websocketd {
        let dir = tempfile::Builder::new()
            .prefix("wst-e2e-wsd-")
            .tempdir()
            .expect("tempdir");
        let prog = dir.path().join("prog.sh");
        fs::write(&prog, format!("#!/bin/sh\n{script}\n")).expect("write script");
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = fs::File::create(dir.path().join("websocketd.log")).expect("log");
            let mut cmd = Command::new(Self::bin());
            cmd.arg(format!("--port={port}"))
                .arg("--address=127.0.0.1")
                .arg("--loglevel=access");
            if let Some(p) = pki {
                cmd.arg("--ssl")
                    .arg(format!("--sslcert={}", p.cert_file().display()))
                    .arg(format!("--sslkey={}", p.key_file().display()));
            }
            cmd.arg(&prog)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log)
                .process_group(0);
            crate::net::die_with_parent(&mut cmd, libc::SIGKILL);
            let mut child = cmd.spawn().expect("spawn websocketd");
            if wait_port(port, Duration::from_secs(10)) {
                if let Ok(None) = child.try_wait() {
                    return Websocketd { port, child, dir };
                }
            }
            last = fs::read_to_string(dir.path().join("websocketd.log")).unwrap_or_default();
            kill_group(&mut child);
        }
        panic!("websocketd did not start:\n{last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("websocketd.log")).unwrap_or_default()
    }
}

impl Drop for Websocketd {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "----- websocketd log (port {}) -----\n{}",
                self.port,
                self.log()
            );
        }
    }
}
