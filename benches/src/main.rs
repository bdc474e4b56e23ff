//! `make bench`: the same workloads through httpd with this module, the
//! same httpd with Debian's stock mod_proxy_wstunnel (default path: the
//! mod_proxy_http tunnel; legacy path: `ProxyWebsocketFallbackToProxyHttp
//! Off`), nginx and HAProxy, and the echo backend directly. Runs are
//! interleaved (the target order rotates every round) and repeated;
//! medians, spreads and per-run ratios go to results/latest.md, the raw
//! samples to results/latest-raw.tsv and the ratio chart to
//! results/ratios.png. Loopback only; every phase is bounded in time.
//!
//! Usage: wst-bench [run] [--quick] [--module PATH] [--out DIR] [--rounds N]
//!        wst-bench echo PORT        (the echo backend; started by run)
//!        wst-bench chart [DIR [TITLE]]  (redraw DIR/ratios.png from DIR/latest-raw.tsv)
//! BENCH_QUICK=1 is --quick. Needs: apache2, nginx (nginx-light), haproxy,
//! fonts-dejavu-core (the chart's font). Installs nothing.

mod climb;
mod echo;
mod load;
mod pki;
mod report;
mod servers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use load::Dest;
use report::Results;
use servers::{Env, Kind, Server, Sizing};

struct Opts {
    quick: bool,
    module: PathBuf,
    out: PathBuf,
    rounds: Option<usize>,
    command: String,
    /// Development filters: only these targets / workloads / phases.
    targets: Option<Vec<String>>,
    works: Option<Vec<String>>,
    no_mem: bool,
    no_perf: bool,
    no_climb: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("echo") {
        // wst-bench echo PORT[,PORT...] [small]
        let ports: Vec<u16> = args
            .get(1)
            .map(|p| p.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default();
        if ports.is_empty() {
            eprintln!("usage: wst-bench echo PORT[,PORT...] [small]");
            std::process::exit(2)
        }
        raise_nofile();
        echo::serve(&ports, args.get(2).map(String::as_str) == Some("small"));
    }
    if args.first().map(String::as_str) == Some("hold") {
        raise_nofile();
        climb::hold();
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if args.first().map(String::as_str) == Some("chart") {
        // Redraw results/ratios.png from results/latest-raw.tsv.
        let dir = args.get(1).map_or(here.join("results"), PathBuf::from);
        let raw = std::fs::read_to_string(dir.join("latest-raw.tsv")).unwrap_or_default();
        let title = args.get(2).cloned().unwrap_or_else(|| "mod_proxy_wstunnel (Rust) ÷ stock".into());
        if let Err(e) = report::chart(&Results::from_tsv(&raw), &dir.join("ratios.png"), &title) {
            eprintln!("wst-bench chart: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut o = Opts {
        quick: std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0"),
        module: here.join("../build/mod_proxy_wstunnel.so"),
        out: here.join("results"),
        rounds: None,
        command: String::new(),
        targets: None,
        works: None,
        no_mem: false,
        no_perf: false,
        no_climb: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "run" => {}
            "--quick" => o.quick = true,
            "--module" => o.module = it.next().map(PathBuf::from).unwrap_or(o.module),
            "--out" => o.out = it.next().map(PathBuf::from).unwrap_or(o.out),
            "--rounds" => o.rounds = it.next().and_then(|v| v.parse().ok()),
            "--targets" => o.targets = it.next().map(|v| v.split(',').map(String::from).collect()),
            "--works" => o.works = it.next().map(|v| v.split(',').map(String::from).collect()),
            "--no-mem" => o.no_mem = true,
            "--no-perf" => o.no_perf = true,
            "--no-climb" => o.no_climb = true,
            _ => {
                eprintln!("usage: wst-bench [run] [--quick] [--module PATH] [--out DIR] [--rounds N]");
                std::process::exit(2)
            }
        }
    }
    o.command = if o.quick { "BENCH_QUICK=1 make bench" } else { "make bench" }.to_string();
    o.module = std::fs::canonicalize(&o.module).unwrap_or(o.module);
    // A hard bound on the whole run, whatever happens (the servers die with
    // this process: PR_SET_PDEATHSIG).
    let limit = Duration::from_secs(if o.quick { 600 } else { 2400 });
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("wst-bench: still running after {} s: giving up", limit.as_secs());
        std::process::exit(3);
    });
    if let Err(e) = run(&o) {
        eprintln!("wst-bench: {e}");
        std::process::exit(1);
    }
}

fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: l is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[derive(Clone, Copy)]
enum Work {
    Rt { conns: usize, prefix: &'static str },
    Tp { conns: usize, size: usize, tls: bool, id: &'static str, cpu_id: &'static str },
}

struct Plan {
    rounds: usize,
    warmup: Duration,
    /// Measured time per target per round, in `slices` turns.
    rt_dur: Duration,
    tp_dur: Duration,
    slices: usize,
    mem_rounds: usize,
    idle_tunnels: usize,
    cap_sizing: Sizing,
    /// The climb: tunnels to reach under Debian's event sizing and under
    /// prefork with 256 processes, per step, parallel handshakes per client
    /// process, how long the tunnels are held before the echo on all.
    climb_event: usize,
    climb_prefork: usize,
    climb_step: usize,
    climb_hold: Duration,
    climb_deadline: Duration,
}

fn plan(o: &Opts) -> Plan {
    if o.quick {
        Plan {
            rounds: o.rounds.unwrap_or(2),
            warmup: Duration::from_millis(60),
            rt_dur: Duration::from_millis(600),
            tp_dur: Duration::from_millis(600),
            slices: 3,
            mem_rounds: 1,
            idle_tunnels: 500,
            cap_sizing: Sizing::event(4, 150),
            climb_event: env_usize("BENCH_CLIMB_EVENT", 3000),
            climb_prefork: env_usize("BENCH_CLIMB_PREFORK", 1500),
            climb_step: 500,
            climb_hold: Duration::from_secs(2),
            climb_deadline: Duration::from_secs(60),
        }
    } else {
        Plan {
            rounds: o.rounds.unwrap_or(5),
            warmup: Duration::from_millis(100),
            rt_dur: Duration::from_millis(1500),
            tp_dur: Duration::from_millis(1500),
            slices: 6,
            mem_rounds: 2,
            idle_tunnels: 3000,
            cap_sizing: Sizing::event(16, 256),
            climb_event: env_usize("BENCH_CLIMB_EVENT", 20_000),
            climb_prefork: env_usize("BENCH_CLIMB_PREFORK", 10_000),
            climb_step: 1000,
            climb_hold: Duration::from_secs(env_usize("BENCH_CLIMB_HOLD", 5) as u64),
            climb_deadline: Duration::from_secs(150),
        }
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let started = Instant::now();
    let p = plan(o);
    raise_nofile();
    let env = Env::probe(o.module.clone())?;
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("wst-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let pki = pki::Pki::generate(tmp.path())?;
    // httpd maps the module file: a rebuild in place during the run would
    // crash its children, so run a private copy.
    let so = tmp.path().join("mod_proxy_wstunnel.so");
    std::fs::copy(&env.ours_so, &so).map_err(|e| format!("copy {}: {e}", env.ours_so.display()))?;
    let mut env = env;
    env.ours_so = so;
    if let Some(alt) = env.alt_so.take() {
        let so = tmp.path().join("mod_proxy_wstunnel-alt.so");
        std::fs::copy(&alt, &so).map_err(|e| format!("copy {}: {e}", alt.display()))?;
        env.alt_so = Some(so);
    }
    let tls = pki.client_config();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let backend = servers::start_backend(servers::free_port()?)?;
    eprintln!(
        "wst-bench: {} ({}), module {}, echo backend on 127.0.0.1:{}{}",
        env.httpd.display(),
        env.httpd_version,
        o.module.display(),
        backend.port,
        if o.quick { ", QUICK" } else { "" }
    );
    let mut missing = Vec::new();
    let kinds: Vec<Kind> = [Kind::OursAsync, Kind::OursLimits, Kind::Ours, Kind::StockDefault, Kind::StockLegacy, Kind::Nginx, Kind::Haproxy, Kind::OursAlt]
        .into_iter()
        .filter(|k| *k != Kind::OursAlt || env.alt_so.is_some())
        .filter(|k| !matches!(k, Kind::OursAsync | Kind::OursLimits) || env.async_ok)
        .filter(|k| o.targets.as_ref().is_none_or(|t| t.iter().any(|n| n == k.name())))
        .filter(|k| {
            let ok = env.has(*k);
            if !ok {
                missing.push(k.name());
            }
            ok
        })
        .collect();
    let mut res = Results::default();
    res.async_note = format!("ours-async: {} ({})", if env.async_ok { "measured" } else { "not measured" }, env.async_why);
    eprintln!("wst-bench: {}", res.async_note);
    for (k, v) in climb::limits() {
        eprintln!("wst-bench: {k} = {v}");
        res.limits.push((k, v));
    }
    if !missing.is_empty() {
        res.failures.push(format!("not installed, skipped: {}", missing.join(", ")));
    }

    // ---- Phase 1: latency and throughput, interleaved and repeated ----
    let perf = Sizing::event(2, 64);
    let mut running: Vec<Server> = Vec::new();
    for &k in kinds.iter().filter(|_| !o.no_perf) {
        running.push(Server::start(&env, k, backend.port, &pki, perf)?);
    }
    for s in running.iter().filter(|s| s.kind.is_httpd()) {
        if !s.ignores_sigpipe() {
            res.failures.push(format!("{}: SIGPIPE not ignored by every httpd process", s.kind.name()));
        }
    }
    let works = [
        Work::Rt { conns: 1, prefix: "rt1" },
        Work::Rt { conns: 50, prefix: "rt50" },
        Work::Tp { conns: 1, size: 65536, tls: false, id: "tp_ws_64k", cpu_id: "cpu_ws_64k" },
        Work::Tp { conns: 8, size: 4096, tls: false, id: "tp_ws_4k", cpu_id: "cpu_ws_4k" },
        Work::Tp { conns: 1, size: 65536, tls: true, id: "tp_wss_64k", cpu_id: "cpu_wss_64k" },
        Work::Tp { conns: 8, size: 4096, tls: true, id: "tp_wss_4k", cpu_id: "cpu_wss_4k" },
    ];
    // Index into `running`, or None for the backend itself.
    let mut order: Vec<Option<usize>> = (0..running.len()).map(Some).collect();
    if o.targets.as_ref().is_none_or(|t| t.iter().any(|n| n == report::DIRECT)) {
        order.push(None);
    }
    let works: Vec<Work> = works
        .into_iter()
        .filter(|w| {
            let id = match w {
                Work::Rt { prefix, .. } => *prefix,
                Work::Tp { id, .. } => *id,
            };
            o.works.as_ref().is_none_or(|ws| ws.iter().any(|x| x == id))
        })
        .collect();
    let rounds = if o.no_perf { 0 } else { p.rounds };
    for round in 0..rounds {
        eprintln!("round {}/{} ({:.0} s)", round + 1, p.rounds, started.elapsed().as_secs_f64());
        for &w in &works {
            let tls_needed = matches!(w, Work::Tp { tls: true, .. });
            // This round's targets, in this round's order.
            let n = order.len();
            let mut targets: Vec<(&'static str, Option<&Server>, Dest)> = Vec::new();
            for i in 0..n {
                let Some(&slot) = order.get((i + round) % n) else { continue };
                let server = slot.map(|j| &running[j]);
                if tls_needed && server.is_none() {
                    continue; // wss:// is TLS at the proxy: no direct figure
                }
                let name = server.map_or(report::DIRECT, |s| s.kind.name());
                let port = match server {
                    Some(s) if tls_needed => s.tls_port,
                    Some(s) => s.port,
                    None => backend.port,
                };
                targets.push((name, server, Dest::new(port, tls_needed.then(|| tls.clone()))));
            }
            let nt = targets.len().max(1);
            match w {
                Work::Rt { conns, prefix } => {
                    let mut groups: Vec<Option<load::RtGroup>> = Vec::new();
                    for (name, _, dest) in &targets {
                        let g = rt.block_on(async {
                            tokio::time::timeout(Duration::from_secs(60), load::RtGroup::connect(dest, conns, 64)).await
                        });
                        groups.push(match g {
                            Ok(Ok(g)) => Some(g),
                            Ok(Err(e)) => { fail(&mut res, prefix, name, &e); None }
                            Err(_) => { fail(&mut res, prefix, name, "connect timeout"); None }
                        });
                    }
                    let slice = p.rt_dur / p.slices as u32;
                    // One warm-up slice each, then the measured slices, the
                    // targets taking turns (order rotating per slice).
                    for k in 0..=p.slices {
                        for i in 0..nt {
                            let idx = (i + k) % nt;
                            let (Some(Some(g)), Some((name, _, _))) = (groups.get_mut(idx), targets.get(idx)) else { continue };
                            let d = if k == 0 { p.warmup } else { slice };
                            let r = rt.block_on(async { tokio::time::timeout(d + Duration::from_secs(30), g.slice(d)).await });
                            let err = match r {
                                Ok(Ok(())) => None,
                                Ok(Err(e)) => Some(e),
                                Err(_) => Some("timeout".to_string()),
                            };
                            if let Some(e) = err {
                                fail(&mut res, prefix, name, &e);
                                groups[idx] = None;
                            } else if k == 0 {
                                g.reset();
                            }
                        }
                    }
                    for (g, (name, _, _)) in groups.into_iter().zip(&targets) {
                        let Some(g) = g else { continue };
                        match g.result() {
                            Ok(r) => {
                                res.add(&format!("{prefix}_rps"), name, round, r.per_sec);
                                res.add(&format!("{prefix}_p50"), name, round, r.p50_us);
                                res.add(&format!("{prefix}_p99"), name, round, r.p99_us);
                                eprintln!("  {prefix:<10} {name:<14} {:>9.0} RT/s  p50 {:>7.1} µs  p99 {:>7.1} µs", r.per_sec, r.p50_us, r.p99_us);
                            }
                            Err(e) => fail(&mut res, prefix, name, &e),
                        }
                    }
                }
                Work::Tp { conns, size, id, cpu_id, .. } => {
                    let mut flows: Vec<Option<load::Flow>> = Vec::new();
                    for (name, _, dest) in &targets {
                        let f = rt.block_on(async {
                            tokio::time::timeout(Duration::from_secs(60), load::Flow::connect(dest, conns, size)).await
                        });
                        flows.push(match f {
                            Ok(Ok(f)) => Some(f),
                            Ok(Err(e)) => { fail(&mut res, id, name, &e); None }
                            Err(_) => { fail(&mut res, id, name, "connect timeout"); None }
                        });
                    }
                    let slice = p.tp_dur / p.slices as u32;
                    for k in 0..p.slices {
                        for i in 0..nt {
                            let idx = (i + k) % nt;
                            let (Some(Some(f)), Some((name, server, _))) = (flows.get_mut(idx), targets.get(idx)) else { continue };
                            let cpu = || server.map(|s| s.cpu_seconds());
                            let r = rt.block_on(async {
                                tokio::time::timeout(slice + Duration::from_secs(30), f.slice(size, p.warmup, slice, &cpu)).await
                            });
                            let err = match r {
                                Ok(Ok(())) => None,
                                Ok(Err(e)) => Some(e),
                                Err(_) => Some("timeout".to_string()),
                            };
                            if let Some(e) = err {
                                fail(&mut res, id, name, &e);
                                flows[idx] = None;
                            }
                        }
                    }
                    for (f, (name, _, _)) in flows.into_iter().zip(&targets) {
                        let Some(f) = f else { continue };
                        match rt.block_on(async { f.result() }) {
                            Ok(r) => {
                                res.add(id, name, round, r.mb_per_s);
                                if let Some(c) = r.cpu_s_per_gb {
                                    res.add(cpu_id, name, round, c);
                                }
                                eprintln!(
                                    "  {id:<10} {name:<14} {:>9.1} MB/s  {}",
                                    r.mb_per_s,
                                    r.cpu_s_per_gb.map_or(String::new(), |c| format!("{c:.2} CPU s/GB"))
                                );
                            }
                            Err(e) => fail(&mut res, id, name, &e),
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for s in running.drain(..) {
        s.stop();
    }

    // ---- Phase 2: memory per idle tunnel, then how many tunnels one server holds ----
    let mem_rounds = if o.no_mem { 0 } else { p.mem_rounds };
    for round in 0..mem_rounds {
        let n = kinds.len();
        for i in 0..n {
            let Some(&k) = kinds.get((i + round) % n) else { continue };
            eprintln!("memory {}/{}: {} ({:.0} s)", round + 1, p.mem_rounds, k.name(), started.elapsed().as_secs_f64());
            // A tunnel handed to the reactor holds no worker: ours-async is
            // measured with Debian's sizing (issue 11's condition), the
            // threaded targets need a worker per tunnel (cap_sizing). Either
            // way the warm-up below touches every worker thread once.
            let sizing = if matches!(k, Kind::OursAsync | Kind::OursLimits) { Sizing::event(6, 25) } else { p.cap_sizing };
            let s = match Server::start(&env, k, backend.port, &pki, sizing) {
                Ok(s) => s,
                Err(e) => {
                    fail(&mut res, "mem_idle", k.name(), &e);
                    continue;
                }
            };
            let dest = Dest::new(s.port, None);
            // Warm up (code pages, allocators' first blocks: one-time costs,
            // not per tunnel), close, then measure with none open.
            let mut warm = Vec::new();
            // Every worker thread's first request (its stack, its allocator)
            // is a one-time cost too: ours-async's 150 threads get two
            // warm-up tunnels each.
            let warm_n = env_usize("BENCH_MEM_WARM", 100);
            let warm_n = if matches!(k, Kind::OursAsync | Kind::OursLimits) { warm_n.max(300) } else { warm_n };
            let _ = rt.block_on(load::open_idle(&dest, warm_n, 50, &mut warm));
            drop(warm);
            std::thread::sleep(Duration::from_millis(1000));
            let rss0 = settle_rss(&s);
            let open0 = servers::connections_to(backend.port);
            let smaps0 = std::env::var_os("BENCH_SMAPS").map(|_| s.rss_by_mapping());
            let mut held = Vec::new();
            let (opened, err) = rt.block_on(load::open_idle(&dest, p.idle_tunnels, 50, &mut held));
            if let Some(e) = &err {
                fail(&mut res, "mem_idle", k.name(), &format!("{opened} opened, then: {e}"));
            } else {
                std::thread::sleep(Duration::from_millis(1000));
                let rss1 = settle_rss(&s);
                if let Some(m0) = &smaps0 {
                    for (k, v) in s.rss_by_mapping() {
                        let before = m0.get(&k).copied().unwrap_or(0);
                        if v.abs_diff(before) > 100 {
                            eprintln!("    {k:<30} {before:>8} -> {v:>8} KiB");
                        }
                    }
                }
                let per = (rss1 as f64 - rss0 as f64) / opened as f64;
                res.add("mem_idle", k.name(), round, per);
                let open1 = servers::connections_to(backend.port);
                eprintln!("  mem_idle   {:<14} {per:>8.1} KiB/tunnel (RSS {rss0} → {rss1} KiB, {} processes, backend connections {open0} → {open1})", k.name(), s.processes());
                if open0 != 0 {
                    res.failures.push(format!("{}: {open0} connections to the backend still open after the warm-up tunnels closed", k.name()));
                }
            }
            drop(held);
            std::thread::sleep(Duration::from_millis(300));
            s.stop();
        }
    }
    backend.stop();

    // ---- Phase 3: the climb: open idle tunnels one server holds ----
    if !o.no_climb {
        run_climbs(o, &p, &env, &pki, &kinds, &mut res, started);
    }

    write_results(o, &p, &env, &res, started.elapsed())?;
    Ok(())
}

/// Wait (at most `max`) while the machine's 1-minute load says someone
/// else is mid-test: the climb is heavy and its figures are absolute.
fn wait_quiet(max: Duration) {
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
            .unwrap_or(0.0)
    };
    let until = Instant::now() + max;
    let mut said = false;
    while load() > 3.0 && Instant::now() < until {
        if !said {
            eprintln!("  load average {:.2}: waiting up to {} s for the machine to quiet down", load(), max.as_secs());
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn run_climbs(o: &Opts, p: &Plan, env: &Env, pki: &pki::Pki, kinds: &[Kind], res: &mut Results, started: Instant) {
    let quick = o.quick;
    // (metric, sizing, cap, targets)
    let event = Sizing::event(6, 25); // Debian: ThreadsPerChild 25, MaxRequestWorkers 150
    let prefork = Sizing { servers: 256, threads: 1, prefork: true };
    let legs: [(&str, Sizing, usize, &[Kind]); 2] = [
        ("climb_event", event, p.climb_event, &[Kind::OursAsync, Kind::Ours, Kind::StockDefault, Kind::Nginx, Kind::Haproxy]),
        ("climb_prefork", prefork, p.climb_prefork, &[Kind::OursAsync, Kind::Ours, Kind::StockDefault]),
    ];
    let mut leg_no = 0u8;
    for (metric, sz, cap, targets) in legs {
        for &k in targets.iter().filter(|k| kinds.contains(k)) {
            leg_no += 1;
            // Once, before the first climb: give a test of someone else's
            // on this shared machine a chance to finish.
            if leg_no == 1 {
                wait_quiet(Duration::from_secs(if quick { 10 } else { 45 }));
            }
            eprintln!("{metric}: {} ({}, cap {cap}) ({:.0} s)", k.name(), sz.mpm(), started.elapsed().as_secs_f64());
            // Backends: one echo process per 5,000 tunnels (at least 2),
            // 2 listeners each, one route per listener.
            let nb = cap.div_ceil(5000).max(2);
            let mut backends = Vec::new();
            let mut routes = Vec::new();
            let mut ok = true;
            for b in 0..nb {
                let ports: Vec<u16> = (0..2).filter_map(|_| servers::free_port().ok()).collect();
                for &pt in &ports {
                    routes.push((format!("/ws{}", routes.len()), pt));
                }
                match servers::start_backends(&ports, true) {
                    Ok(s) => backends.push(s),
                    Err(e) => {
                        fail(res, metric, k.name(), &format!("backend {b}: {e}"));
                        ok = false;
                    }
                }
            }
            if !ok {
                continue;
            }
            let backend_ports: Vec<u16> = routes.iter().map(|r| r.1).collect();
            let paths: Vec<String> = routes.iter().map(|r| r.0.clone()).collect();
            let setup = servers::Setup {
                routes,
                sz,
                peer_tunnels: cap as u32,
                nginx_workers: if cap > 8000 { 4 } else { 2 },
                haproxy_procs: (cap as u32).div_ceil(8000).max(1),
            };
            let server = match Server::start_with(env, k, &setup, pki) {
                Ok(s) => s,
                Err(e) => {
                    fail(res, metric, k.name(), &e);
                    continue;
                }
            };
            // Client processes: one per 5,000 tunnels (+1), each from its
            // own source address.
            let nh = cap.div_ceil(5000) + 1;
            let mut holders = Vec::new();
            for h in 0..nh {
                let src = std::net::Ipv4Addr::new(127, 10 + leg_no, h as u8 + 1, 1);
                match climb::Holder::spawn(src) {
                    Ok(x) => holders.push(x),
                    Err(e) => fail(res, metric, k.name(), &e),
                }
            }
            let plan = climb::ClimbPlan {
                cap,
                step: p.climb_step,
                parallel: 64,
                connect_timeout: Duration::from_secs(5),
                hold: p.climb_hold,
                deadline: p.climb_deadline,
            };
            let c = climb::climb(&server, server.port, &paths, &backend_ports, &mut holders, &plan);
            drop(holders);
            let (log_n, log_first) = server.log_errors();
            let per = if c.held > 0 { (c.rss_top as f64 - c.rss0 as f64) / c.held as f64 } else { f64::NAN };
            eprintln!(
                "  {metric:<14} {:<14} {} held in {:.1} s{}; echo after {} s: {} failed; RSS {} → {} KiB ({per:.1} KiB/tunnel); fds {} → {} → {} after close; top processes' fds {:?}; CLOSE_WAIT {} backend conns left {}; error-log lines {log_n}",
                k.name(),
                c.held,
                c.secs,
                c.stopped.as_ref().map_or(String::from(" (cap reached)"), |e| format!(", stopped: {e}")),
                p.climb_hold.as_secs(),
                c.echo_bad,
                c.rss0,
                c.rss_top,
                c.fds0,
                c.fds_top,
                c.fds_after,
                &c.spread[..c.spread.len().min(8)],
                c.close_wait_after,
                c.backend_open_after,
            );
            res.add(metric, k.name(), 0, c.held as f64);
            res.capped.insert(format!("{metric}:{}", k.name()), c.stopped.is_none() && c.held >= cap);
            if c.held > 0 {
                res.add(&format!("{metric}_mem"), k.name(), 0, per);
            }
            let ours = k.is_ours();
            if c.echo_bad > 0 {
                res.failures.push(format!("{metric} {}: {} of {} held tunnels failed their echo after the hold ({})", k.name(), c.echo_bad, c.held, c.echo_err.clone().unwrap_or_default()));
            }
            if c.fds_after > c.fds0 + 8 {
                res.failures.push(format!("{metric} {}: descriptors {} before the climb, {} after every tunnel closed (+{}, 15 s later)", k.name(), c.fds0, c.fds_after, c.fds_after - c.fds0));
            }
            if c.close_wait_after > 0 || c.backend_open_after > 0 {
                res.failures.push(format!("{metric} {}: after every client closed, {} sockets in CLOSE_WAIT and {} backend connections still open", k.name(), c.close_wait_after, c.backend_open_after));
            }
            if log_n > 0 && ours {
                res.failures.push(format!("{metric} {}: {log_n} error-level lines in the error log, first: {}", k.name(), log_first.join(" | ")));
            }
            if c.procs_top < c.procs0 {
                res.failures.push(format!("{metric} {}: {} processes at the start, {} at the top", k.name(), c.procs0, c.procs_top));
            }
            res.climbs.push(report::ClimbRow {
                metric: metric.to_string(),
                target: k.name().to_string(),
                mpm: format!("{} {}×{}", sz.mpm(), sz.servers, sz.threads),
                cap,
                held: c.held,
                stopped: c.stopped.clone(),
                secs: c.secs,
                echo_bad: c.echo_bad,
                kib_per: per,
                fds: (c.fds0, c.fds_top, c.fds_after),
                spread: c.spread.iter().take(6).copied().collect(),
                leftover: (c.close_wait_after, c.backend_open_after),
                log_errors: log_n,
            });
            server.stop();
            for b in backends {
                b.stop();
            }
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fail(res: &mut Results, what: &str, target: &str, e: &str) {
    eprintln!("  {what:<10} {target:<14} FAILED: {e}");
    res.failures.push(format!("{what} {target}: {e}"));
}

/// RSS once it has stopped moving (bounded: 10 samples).
fn settle_rss(s: &Server) -> u64 {
    let mut last = s.rss_kib();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        let now = s.rss_kib();
        if now.abs_diff(last) < 64 {
            return now;
        }
        last = now;
    }
    last
}

fn cmd_out(bin: &str, args: &[&str]) -> String {
    std::process::Command::new(bin)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn write_results(o: &Opts, p: &Plan, env: &Env, res: &Results, took: Duration) -> Result<(), String> {
    let date = cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = cmd_out("uname", &["-r"]);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nginx = env.nginx.as_ref().map_or(String::from("not installed"), |b| cmd_out(&b.display().to_string(), &["-v"]));
    let haproxy = env.haproxy.as_ref().map_or(String::from("not installed"), |b| cmd_out(&b.display().to_string(), &["-v"]));
    let (goals, met, total) = res.goals_table();
    let mut md = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(md, "## Performance\n");
    let _ = writeln!(md, "Measured {date} with `{}` ({} rounds, {:.0} s in all), on {cpus} shared cores, Linux {kernel}; {}; {nginx}; {haproxy}.\n", o.command, p.rounds, took.as_secs_f64(), env.httpd_version);
    let _ = writeln!(md, "All traffic on loopback: one load generator (tokio-tungstenite) and echo backends (tokio-tungstenite) for every target. **ours-async**: httpd + this module with `ProxyWebsocketAsync On` (plain-socket tunnels leave their worker for the child's reactor); **ours (threaded)**: the same module with `ProxyWebsocketAsync Off` (before the directive existed: the module as built, which is threaded); **stock-default**: the same httpd with Debian's mod_proxy_wstunnel and mod_proxy_http (which tunnels ws:// since 2.4.47); **stock-legacy**: the same with `ProxyWebsocketFallbackToProxyHttp Off`; **nginx**, **haproxy**: Debian's, as peers; **direct**: the backend without a proxy. {}.\n", res.async_note);
    let _ = writeln!(md, "Round trips, throughput, CPU (event MPM, 2 × 64 threads; nginx 2 workers; HAProxy 2 threads): in each round every workload runs on every target; all targets' connections stay open and the targets take turns in {} slices (order rotating), so that the shared machine's noise falls on all alike; a target's figure for the round is the median over its slices (latency: per-slice p50/p99). Cells are the median over rounds ± half their range; ratios are the median of per-round ratios (min–max); \"best of nginx/HAProxy\" is, per round, the better of the two. Throughput is echoed payload received back by the clients (10^6 B/s) with at most {} KiB in flight per connection; CPU is utime+stime of all the proxy's processes (/proc) per 10^9 B tunnelled (both directions). Memory: (RSS with {} open idle tunnels − RSS with none, after a warm-up) ÷ {}, all processes of the server; httpd event {} × {} threads for the threaded targets (a worker per tunnel), Debian's 6 × 25 for ours-async ({} rounds).\n", p.slices, load::window_bytes() / 1024, p.idle_tunnels, p.idle_tunnels, p.cap_sizing.servers, p.cap_sizing.threads, p.mem_rounds);
    let _ = writeln!(md, "Climb: one fresh server per target; idle ws:// tunnels opened {} at a time (64 handshakes in flight per client process, 5 s handshake timeout), each checked with an echo, until the cap ({} event, {} prefork) or a step fails twice (the second time 10 tunnels after a 2 s pause); then held {} s and echoed on every tunnel; then all closed, and the server's descriptors, CLOSE_WAIT sockets and backend connections checked. httpd: Debian's event sizing (ThreadsPerChild 25, MaxRequestWorkers 150: 6 children, all started, none retired) and prefork with MaxRequestWorkers 256 (all 256 started, none retired). Each process here may hold at most 20,000 descriptors, so: clients in one process per 5,000 tunnels (+1), each from its own source address in 127.0.0.0/8; backends in one echo process per 5,000 tunnels (at least 2) with 2 listeners each, one route (/wsN) per listener; nginx with 4 workers (`reuseport`) and HAProxy as several processes on the same port (SO_REUSEPORT) above 8,000 tunnels, their connection limits set for the cap plus 30%. RSS/tunnel at the top = (RSS at the top − RSS before) ÷ tunnels, no warm-up.\n", p.climb_step, p.climb_event, p.climb_prefork, p.climb_hold.as_secs());
    let _ = writeln!(md, "{}", res.table());
    let _ = writeln!(md, "![ratios per metric](benches/results/ratios.png)\n");
    let _ = writeln!(md, "Targets of issue 11, in this run: {met} of {total} met.\n");
    md.push_str(&goals);
    let ct = res.climb_table();
    if !ct.is_empty() {
        let _ = writeln!(md, "\nThe climbs:\n\n{ct}");
    }
    let _ = writeln!(md, "\nLimits at the start: {}.", res.limits.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join("; "));
    if !res.failures.is_empty() {
        let _ = writeln!(md, "\nIncidents during the run:\n");
        for f in &res.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
    }
    let _ = writeln!(md, "\nReproduce: `{}` (needs apache2, nginx-light, haproxy, fonts-dejavu-core; `make bench` takes about 12 minutes, `BENCH_QUICK=1 make bench` about 3). Raw samples: `benches/results/latest-raw.tsv`.", o.command);
    let w = |name: &str, s: &str| {
        let p = o.out.join(name);
        std::fs::write(&p, s).map_err(|e| format!("{}: {e}", p.display()))
    };
    w("latest.md", &md)?;
    w("latest-raw.tsv", &res.raw_tsv())?;
    let png = o.out.join("ratios.png");
    if let Err(e) = report::chart(res, &png, &format!("mod_proxy_wstunnel (Rust): ratios, {date}")) {
        eprintln!("wst-bench: chart not drawn: {e}");
    }
    println!("{md}");
    eprintln!("wrote {}, {}, {}", o.out.join("latest.md").display(), o.out.join("latest-raw.tsv").display(), png.display());
    Ok(())
}
