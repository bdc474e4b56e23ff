//! Faults on tunnels handed to the child's reactor, with one child process (so descriptor
//! counts compare; under prefork that child has a single worker, so every tunnel beyond the
//! first exists only because the earlier ones left it):
//!
//! * the backend resets in the middle of a frame: the client gets exactly the bytes sent
//!   before, then its connection ends; the record says the backend ended it;
//! * clients that stop reading while their backends flood: the child's memory stays bounded
//!   and the backends are held back (backpressure), and a client reset ends each tunnel;
//! * 200 tunnels ended at random (Close, FIN, RST, RST in mid-frame, the backend closing):
//!   afterwards no CLOSE_WAIT, the child's descriptors back to their baseline, every tunnel
//!   logged, no crashed child.
//!
//! Only meaningful for this module: with the stock module every test says SKIP.

use std::net::TcpStream;
use std::time::Duration;

use wst_e2e::client::{End, RawClient};
use wst_e2e::faults::{
    assert_released, close_wait, rst, worker_pids, After, Baseline, Behaviour, FaultBackend,
    SHORT_TIMEOUTS,
};
use wst_e2e::handover::{assert_handed_over, builder, crashes, mpms, wait_records};
use wst_e2e::procfs::total_rss_kib;
use wst_e2e::tunnellog::tunnel_record;
use wst_e2e::tunnels::{raw_tunnel, wait_split, WAIT};
use wst_e2e::ws::{client_frame, server_frame, OP_BINARY, OP_CLOSE, OP_TEXT};
use wst_e2e::{need, Httpd, WstEcho};

const RELEASE: Duration = Duration::from_secs(10);

fn one_child(backend_port: u16, mpm: &str) -> (Httpd, Baseline) {
    let h = builder(backend_port)
        .mpm(mpm)
        .one_child()
        .config(SHORT_TIMEOUTS)
        .start();
    // The child is up and has served a request (mod_status's) before the baseline.
    wait_split(&h.target(), (0, 0));
    std::thread::sleep(Duration::from_millis(100));
    let base = Baseline::take(&h);
    assert_eq!(
        base.fds.len(),
        1,
        "one child process expected: {:?}",
        base.fds
    );
    (h, base)
}

fn tcp_of(c: &RawClient) -> TcpStream {
    c.stream.tcp().try_clone().unwrap()
}

/// The backend sends 104 bytes of a 1004-byte frame right behind its 101, then resets.
#[test]
fn backend_rst_mid_frame_after_hand_over() {
    if !need::ours() {
        return;
    }
    let frame = server_frame(OP_BINARY, &[b'x'; 1000]);
    let partial = frame[..104].to_vec();
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::SendThenRst(partial.clone()),
    });
    let (h, base) = one_child(b.port(), "event");
    let mut c = raw_tunnel(&h.target(), "/ws/rst-mid-frame");
    let (bytes, end) = c.read_until_close(Duration::from_secs(5));
    assert_eq!(
        bytes, partial,
        "the client gets exactly the bytes sent before the RST"
    );
    assert_ne!(end, End::Timeout, "the client's connection must end");
    let rec = tunnel_record(&h, "/ws/rst-mid-frame", WAIT);
    assert_handed_over(&rec);
    assert_eq!(rec.get("first"), "backend", "{}", rec.raw);
    assert_eq!(rec.num("from_backend"), partial.len() as u64, "{}", rec.raw);
    drop(c);
    assert_released(&h, &base, 0, RELEASE, "backend RST mid-frame");
    assert!(crashes(&h).is_empty(), "{:?}", crashes(&h));
}

/// Ten clients that stop reading, ten backends flooding 64 KiB frames (from the client's first
/// frame on, so after the hand-over): over 3 s the child's RSS grows by less than 16 MiB and
/// each backend gets less than 4 MiB more out; then the clients reset, the backends' writes
/// fail, and the child is back to its baseline.
fn clients_stop_reading(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    const N: usize = 10;
    let b = FaultBackend::start(Behaviour::Upgrade {
        then: After::FloodAfterFirstBytes(64 * 1024),
    });
    let (h, base) = one_child(b.port(), mpm);
    let mut clients: Vec<RawClient> = (0..N)
        .map(|i| raw_tunnel(&h.target(), &format!("/ws/stalled/{i}")))
        .collect();
    wait_split(&h.target(), (0, N as u64));
    for c in clients.iter_mut() {
        c.send(&client_frame(OP_TEXT, b"go")).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let pids = worker_pids(&h);
    let sent =
        |b: &FaultBackend| -> Vec<u64> { (0..N).map(|i| b.seen(i).unwrap().bytes_sent).collect() };
    let rss0 = total_rss_kib(&pids);
    let sent0 = sent(&b);
    let mut rss_max = rss0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        rss_max = rss_max.max(total_rss_kib(&pids));
    }
    let sent1 = sent(&b);
    let growth = rss_max.saturating_sub(rss0);
    eprintln!("{mpm}: {N} stalled clients: child RSS {rss0} KiB, max {rss_max} KiB");
    assert!(
        growth < 16 * 1024,
        "{mpm}: the child grew by {growth} KiB in 3 s"
    );
    for i in 0..N {
        let more = sent1[i] - sent0[i];
        assert!(
            more < 4 << 20,
            "{mpm}: backend {i} could send {} KiB more in 3 s to a client that does not read",
            more / 1024
        );
    }
    for c in clients {
        let s = tcp_of(&c);
        drop(c);
        rst(s);
    }
    for i in 0..N {
        let seen = b.wait_end(i, RELEASE).expect("the backend's writes end");
        assert!(
            seen.end.starts_with("write-"),
            "{mpm}: backend {i}: {seen:?}"
        );
    }
    assert_released(&h, &base, 0, RELEASE, "stalled clients reset");
    wait_records(&h, N, WAIT)
        .iter()
        .for_each(assert_handed_over);
}

#[test]
fn clients_stop_reading_event() {
    clients_stop_reading("event");
}

#[test]
fn clients_stop_reading_prefork() {
    clients_stop_reading("prefork");
}

/// How tunnel `i` of the random-disconnect test ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    CloseFrame,
    Fin,
    Rst,
    RstMidFrame,
    HalfClose,
    BackendCloses,
}

const ENDINGS: [Ending; 6] = [
    Ending::CloseFrame,
    Ending::Fin,
    Ending::Rst,
    Ending::RstMidFrame,
    Ending::HalfClose,
    Ending::BackendCloses,
];

fn random_disconnects(mpm: &str) {
    if !need::ours() || !mpms().contains(&mpm) {
        return;
    }
    const N: usize = 200;
    let b = WstEcho::start();
    let (h, base) = one_child(b.port(), mpm);
    let t = h.target();
    // A fixed seed: a failure reproduces.
    let mut x: u32 = 0x2545_f491;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut tunnels = Vec::new();
    for i in 0..N {
        let ending = ENDINGS[next() as usize % ENDINGS.len()];
        // /bye: the backend sends "bye" and Close 1000, then closes.
        let path = match ending {
            Ending::BackendCloses => format!("/ws/bye/{i}"),
            _ => format!("/ws/echo/{i}"),
        };
        let mut c = raw_tunnel(&t, &path);
        if !matches!(ending, Ending::BackendCloses) {
            let m = format!("tunnel {i}");
            c.send(&client_frame(OP_TEXT, m.as_bytes())).unwrap();
            let f = c.read_frame().unwrap();
            assert_eq!(f.payload, m.as_bytes(), "{mpm}: tunnel {i}");
        }
        tunnels.push((ending, c, next() % 1000));
    }
    // Endings in a shuffled order (by a random key).
    tunnels.sort_by_key(|(_, _, k)| *k);
    for (ending, mut c, _) in tunnels {
        match ending {
            Ending::CloseFrame => {
                let _ = c.send(&client_frame(OP_CLOSE, &1000u16.to_be_bytes()));
                let _ = c.read_until_close(Duration::from_secs(2));
            }
            Ending::Fin => drop(c),
            Ending::Rst => rst(tcp_of(&c)),
            Ending::RstMidFrame => {
                let f = client_frame(OP_BINARY, &[7u8; 4000]);
                let _ = c.send(&f[..1500]);
                rst(tcp_of(&c));
            }
            Ending::HalfClose => {
                let _ = c.shutdown_write();
                let _ = c.read_until_close(Duration::from_secs(2));
            }
            Ending::BackendCloses => {
                let _ = c.read_until_close(Duration::from_secs(2));
            }
        }
    }
    assert_released(
        &h,
        &base,
        0,
        RELEASE,
        &format!("{mpm}: {N} random disconnects"),
    );
    assert!(
        close_wait(&h).is_empty(),
        "{mpm}: CLOSE_WAIT {:?}",
        close_wait(&h)
    );
    wait_split(&t, (0, 0));
    let recs = wait_records(&h, N, WAIT);
    assert_eq!(recs.len(), N, "{mpm}: one record per tunnel");
    recs.iter().for_each(assert_handed_over);
    assert!(crashes(&h).is_empty(), "{mpm}: {:?}", crashes(&h));
}

#[test]
fn random_disconnects_200_event() {
    random_disconnects("event");
}

#[test]
fn random_disconnects_200_worker() {
    random_disconnects("worker");
}

#[test]
fn random_disconnects_200_prefork() {
    random_disconnects("prefork");
}
