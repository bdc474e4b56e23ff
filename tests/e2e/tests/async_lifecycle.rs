//! Handed-over tunnels (`ProxyWebsocketAsync On`) and the server's lifecycle, under each MPM:
//!
//! * graceful restart with `ProxyWebsocketDrain 2`: every old tunnel gets Close 1001 within the
//!   window, new tunnels open and work meanwhile (and are not drained), the old children exit;
//! * hard stop (`-k stop`, SIGTERM): every client gets Close 1001 and its connection closed
//!   within a second, the backend gets Close 1001, httpd exits without SIGKILL;
//! * graceful restart without a drain window: the tunnel carries on in its old child, which
//!   exits once the tunnel ends.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use wst_e2e::client::{End, RawClient};
use wst_e2e::framebackend::{close_code, FrameBackend};
use wst_e2e::handover::{builder, crashes, mpms};
use wst_e2e::tunnels::{raw_tunnel, wait_split, WAIT};
use wst_e2e::ws::{client_frame, OP_CLOSE, OP_TEXT};
use wst_e2e::{need, Httpd};

const LIFETIME: Duration = Duration::from_secs(40);

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// One echoed text frame through a raw tunnel.
fn echo(c: &mut RawClient, text: &str) -> Result<(), String> {
    c.send(&client_frame(OP_TEXT, text.as_bytes()))
        .map_err(|e| e.to_string())?;
    let f = c.read_frame().map_err(|e| e.to_string())?;
    if (f.opcode, f.payload.as_slice()) == (OP_TEXT, text.as_bytes()) {
        Ok(())
    } else {
        Err(format!("got {f:?}"))
    }
}

/// Send SIGUSR1 and wait for a child of the new generation (not in `old`); returns it.
fn graceful_restart(h: &Httpd, old: &BTreeSet<u32>) -> u32 {
    h.signal(libc::SIGUSR1);
    wst_e2e::wait_for(WAIT, || {
        h.child_pids().into_iter().find(|p| !old.contains(p))
    })
    .expect("no new generation of children after SIGUSR1")
}

/// How a client's connection ended: the close code of the Close it got (None: no Close) and
/// when the connection itself ended (EOF or reset), or None if it was still open after `wait`.
fn until_closed(mut c: RawClient, wait: Duration) -> (Option<u16>, Option<Instant>) {
    c.timeout = wait;
    let code = loop {
        match c.read_frame() {
            Ok(f) if f.opcode == OP_CLOSE => break close_code(&f.payload),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    let (_, end) = c.read_until_close(wait);
    (code, (end != End::Timeout).then(Instant::now))
}

fn graceful_with_drain(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    const WINDOW: Duration = Duration::from_secs(2);
    let b = FrameBackend::start(true, LIFETIME);
    let h = builder(b.port())
        .mpm(mpm)
        .config("ProxyWebsocketDrain 2\n")
        .start();
    let t = h.target();
    let old_tunnels: Vec<RawClient> = (0..10)
        .map(|i| raw_tunnel(&t, &format!("/ws/drain/old/{i}")))
        .collect();
    wait_split(&t, (0, 10));
    let old: BTreeSet<u32> = h.child_pids().into_iter().collect();
    let t0 = Instant::now();
    let readers: Vec<_> = old_tunnels
        .into_iter()
        .map(|c| std::thread::spawn(move || until_closed(c, WINDOW + Duration::from_secs(5))))
        .collect();
    graceful_restart(&h, &old);

    // Within the window a new tunnel opens and works.
    let mut fresh = raw_tunnel(&t, "/ws/drain/new");
    echo(&mut fresh, "new during the window").unwrap();
    let opened_after = t0.elapsed();
    assert!(
        opened_after < WINDOW,
        "the new tunnel took {opened_after:?}"
    );

    let ends: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for (i, (code, ended)) in ends.iter().enumerate() {
        assert_eq!(*code, Some(1001), "{mpm}: old tunnel {i}: close code");
        let ended = ended.unwrap_or_else(|| panic!("{mpm}: old tunnel {i} still open"));
        let after = ended.duration_since(t0);
        assert!(
            after < WINDOW + Duration::from_millis(1500),
            "{mpm}: old tunnel {i} ended {after:?} after SIGUSR1 (window {WINDOW:?})"
        );
    }
    // The new generation's tunnel is not drained.
    std::thread::sleep(Duration::from_millis(500));
    echo(&mut fresh, "new after the window").unwrap();
    let gone = wst_e2e::wait_for(Duration::from_secs(5), || {
        old.iter().all(|p| !alive(*p)).then_some(())
    });
    let left: Vec<_> = old.iter().filter(|p| alive(**p)).collect();
    assert!(
        gone.is_some(),
        "{mpm}: old children alive after the window: {left:?}"
    );
    assert!(crashes(&h).is_empty(), "{mpm}: {:?}", crashes(&h));
}

#[test]
fn graceful_with_drain_event() {
    graceful_with_drain("event");
}

#[test]
fn graceful_with_drain_worker() {
    graceful_with_drain("worker");
}

#[test]
fn graceful_with_drain_prefork() {
    graceful_with_drain("prefork");
}

fn hard_stop(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = FrameBackend::start(true, LIFETIME);
    let mut h = builder(b.port()).mpm(mpm).start();
    let t = h.target();
    let tunnels: Vec<RawClient> = (0..20)
        .map(|i| raw_tunnel(&t, &format!("/ws/stop/{i}")))
        .collect();
    wait_split(&t, (0, 20));
    let readers: Vec<_> = tunnels
        .into_iter()
        .map(|c| std::thread::spawn(move || until_closed(c, Duration::from_secs(12))))
        .collect();
    let t0 = Instant::now();
    let r = h.stop();
    let ends: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    eprintln!(
        "{mpm}: stop with 20 handed-over tunnels took {:?}",
        r.elapsed
    );
    assert!(!r.killed, "{mpm}: httpd needed SIGKILL ({:?})", r.elapsed);
    for (i, (code, ended)) in ends.iter().enumerate() {
        let after = ended
            .map(|e| e.duration_since(t0))
            .unwrap_or_else(|| panic!("{mpm}: tunnel {i} still open after the stop"));
        assert!(
            after < Duration::from_millis(1200),
            "{mpm}: tunnel {i} ended {after:?} after SIGTERM"
        );
        assert_eq!(*code, Some(1001), "{mpm}: tunnel {i}: close code");
    }
    assert!(
        r.elapsed < Duration::from_secs(3),
        "{mpm}: httpd took {:?} to stop",
        r.elapsed
    );
    for i in 0..20 {
        let c = b
            .wait_conn(i, Duration::from_secs(2), |c| !c.end.is_empty())
            .unwrap_or_else(|| panic!("{mpm}: backend connection {i} still open"));
        assert_eq!(
            c.close_code(),
            Some(1001),
            "{mpm}: backend connection {i}: {c:?}"
        );
    }
    assert!(crashes(&h).is_empty(), "{mpm}: {:?}", crashes(&h));
}

#[test]
fn hard_stop_event() {
    hard_stop("event");
}

#[test]
fn hard_stop_worker() {
    hard_stop("worker");
}

#[test]
fn hard_stop_prefork() {
    hard_stop("prefork");
}

fn graceful_without_drain(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    let b = FrameBackend::start(true, LIFETIME);
    let h = builder(b.port()).mpm(mpm).start();
    let t = h.target();
    let mut c = raw_tunnel(&t, "/ws/survivor");
    wait_split(&t, (0, 1));
    let old: BTreeSet<u32> = h.child_pids().into_iter().collect();
    graceful_restart(&h, &old);
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        echo(&mut c, &format!("across the restart {i}"))
            .unwrap_or_else(|e| panic!("{mpm}: echo {i} after SIGUSR1: {e}"));
    }
    let mut fresh = raw_tunnel(&t, "/ws/fresh");
    echo(&mut fresh, "new generation").unwrap();
    assert!(
        old.iter().any(|p| alive(*p)),
        "{mpm}: every old child exited while its tunnel was open"
    );
    c.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()))
        .unwrap();
    let (_, end) = c.read_until_close(WAIT);
    assert_ne!(end, End::Timeout, "{mpm}: the tunnel did not end");
    let gone = wst_e2e::wait_for(Duration::from_secs(8), || {
        old.iter().all(|p| !alive(*p)).then_some(())
    });
    let left: Vec<_> = old.iter().filter(|p| alive(**p)).collect();
    assert!(
        gone.is_some(),
        "{mpm}: old children alive after their last tunnel ended: {left:?}"
    );
    echo(&mut fresh, "still there").unwrap();
    assert!(crashes(&h).is_empty(), "{mpm}: {:?}", crashes(&h));
}

#[test]
fn graceful_without_drain_event() {
    graceful_without_drain("event");
}

#[test]
fn graceful_without_drain_worker() {
    graceful_without_drain("worker");
}

#[test]
fn graceful_without_drain_prefork() {
    graceful_without_drain("prefork");
}
