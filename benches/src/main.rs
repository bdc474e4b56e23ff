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
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("echo") {
        let port = args.get(1).and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            eprintln!("usage: wst-bench echo PORT");
            std::process::exit(2)
        });
        echo::serve(port);
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
            idle_tunnels: 300,
            cap_sizing: Sizing { servers: 4, threads: 150 },
        }
    } else {
        Plan {
            rounds: o.rounds.unwrap_or(5),
            warmup: Duration::from_millis(100),
            rt_dur: Duration::from_millis(1500),
            tp_dur: Duration::from_millis(1500),
            slices: 6,
            mem_rounds: 3,
            idle_tunnels: 1000,
            cap_sizing: Sizing { servers: 16, threads: 256 },
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
    let kinds: Vec<Kind> = [Kind::Ours, Kind::StockDefault, Kind::StockLegacy, Kind::Nginx, Kind::Haproxy, Kind::OursAlt]
        .into_iter()
        .filter(|k| *k != Kind::OursAlt || env.alt_so.is_some())
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
    if !missing.is_empty() {
        res.failures.push(format!("not installed, skipped: {}", missing.join(", ")));
    }

    // ---- Phase 1: latency and throughput, interleaved and repeated ----
    let perf = Sizing { servers: 2, threads: 64 };
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
                targets.push((name, server, Dest { port, tls: tls_needed.then(|| tls.clone()) }));
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
    let cap = p.cap_sizing.slots() as usize;
    let mem_rounds = if o.no_mem { 0 } else { p.mem_rounds };
    for round in 0..mem_rounds {
        let last = round + 1 == p.mem_rounds;
        let n = kinds.len();
        for i in 0..n {
            let Some(&k) = kinds.get((i + round) % n) else { continue };
            eprintln!("memory {}/{}: {} ({:.0} s)", round + 1, p.mem_rounds, k.name(), started.elapsed().as_secs_f64());
            let s = match Server::start(&env, k, backend.port, &pki, p.cap_sizing) {
                Ok(s) => s,
                Err(e) => {
                    fail(&mut res, "mem_idle", k.name(), &e);
                    continue;
                }
            };
            let dest = Dest { port: s.port, tls: None };
            // Warm up (code pages, allocators' first blocks: one-time costs,
            // not per tunnel), close, then measure with none open.
            let mut warm = Vec::new();
            let _ = rt.block_on(load::open_idle(&dest, 100, 50, &mut warm));
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
            if last && err.is_none() {
                // Up to the configured capacity, 250 at a time; stop at the first failure.
                let deadline = Instant::now() + Duration::from_secs(if o.quick { 20 } else { 60 });
                let mut error = None;
                while held.len() < cap && Instant::now() < deadline {
                    let want = (cap - held.len()).min(250);
                    let (_, e) = rt.block_on(load::open_idle(&dest, want, 50, &mut held));
                    if e.is_some() {
                        // Once more after a pause (a slot may still be
                        // finishing an earlier connection), then stop.
                        std::thread::sleep(Duration::from_secs(2));
                        let want = (cap - held.len()).min(10);
                        let (_, e2) = rt.block_on(load::open_idle(&dest, want, 10, &mut held));
                        if e2.is_some() {
                            error = e2;
                            break;
                        }
                    }
                }
                let bad = rt.block_on(load::verify_held(&mut held, 10));
                let total = held.len();
                res.add("max_tunnels", k.name(), round, total as f64);
                res.capped.insert(k.name().to_string(), error.is_none() && total >= cap);
                eprintln!(
                    "  max_tunnels {:<13} {total} held (cap {cap}){}{}",
                    k.name(),
                    error.map_or(String::new(), |e| format!(", next failed: {e}")),
                    if bad > 0 { format!(", {bad} sampled tunnels broken") } else { String::new() }
                );
                if bad > 0 {
                    res.failures.push(format!("{}: {bad} held tunnels failed their echo", k.name()));
                }
            }
            drop(held);
            std::thread::sleep(Duration::from_millis(300));
            s.stop();
        }
    }
    backend.stop();

    write_results(o, &p, &env, &res, started.elapsed())?;
    Ok(())
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
    let _ = writeln!(md, "All traffic on 127.0.0.1: one load generator (tokio-tungstenite) and one echo backend (tokio-tungstenite) for every target. **ours**: httpd + this module; **stock-default**: the same httpd with Debian's mod_proxy_wstunnel and mod_proxy_http (which tunnels ws:// since 2.4.47); **stock-legacy**: the same with `ProxyWebsocketFallbackToProxyHttp Off` (the stock module's own tunnel); **nginx**, **haproxy**: Debian's, as peers; **direct**: the backend without a proxy. httpd runs the event MPM. In each round every workload runs on every target: all targets' connections stay open and the targets take turns in {} slices (order rotating), so that the shared machine's noise falls on all alike; a target's figure for the round is the median over its slices (latency: per-slice p50/p99). Cells are the median over rounds ± half their range; ratios are the median of per-round ratios (min–max). Throughput is echoed payload received back by the clients (10^6 B/s) with at most {} KiB in flight per connection; CPU is utime+stime of all the proxy's processes (/proc) per 10^9 B tunneled (both directions); memory is (RSS with {} open idle tunnels − RSS with none, after a warm-up) ÷ {}, all processes of the server; the tunnel count is how many one server held (each checked with an echo) under a configuration of {} × {} threads (nginx, HAProxy: that many connections).\n", p.slices, load::window_bytes() / 1024, p.idle_tunnels, p.idle_tunnels, p.cap_sizing.servers, p.cap_sizing.threads);
    let _ = writeln!(md, "{}", res.table());
    let _ = writeln!(md, "![ours ÷ stock, per metric](benches/results/ratios.png)\n");
    let _ = writeln!(md, "Targets (ratios to the stock module in the same run): {met} of {total} met.\n");
    md.push_str(&goals);
    if !res.failures.is_empty() {
        let _ = writeln!(md, "\nIncidents during the run:\n");
        for f in &res.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
    }
    let _ = writeln!(md, "\nReproduce: `{}` (needs apache2, nginx-light, haproxy, fonts-dejavu-core; `make bench` takes about 8 minutes, `BENCH_QUICK=1 make bench` is a 2-minute smoke run). Raw samples: `benches/results/latest-raw.tsv`.", o.command);
    let w = |name: &str, s: &str| {
        let p = o.out.join(name);
        std::fs::write(&p, s).map_err(|e| format!("{}: {e}", p.display()))
    };
    w("latest.md", &md)?;
    w("latest-raw.tsv", &res.raw_tsv())?;
    let png = o.out.join("ratios.png");
    if let Err(e) = report::chart(res, &png, &format!("mod_proxy_wstunnel (Rust) ÷ stock, {date}")) {
        eprintln!("wst-bench: chart not drawn: {e}");
    }
    println!("{md}");
    eprintln!("wrote {}, {}, {}", o.out.join("latest.md").display(), o.out.join("latest-raw.tsv").display(), png.display());
    Ok(())
}
