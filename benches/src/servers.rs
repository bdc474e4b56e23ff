//! The targets: generated configs in a temp dir, processes started on
//! loopback ports, their CPU time and RSS read from /proc, and stopping.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::Pki;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// httpd + this project's module (mod_proxy_http loaded too).
    Ours,
    /// httpd + Debian's mod_proxy_wstunnel + mod_proxy_http: since 2.4.47
    /// mod_proxy_http tunnels ws:// (the stock default).
    StockDefault,
    /// The same with `ProxyWebsocketFallbackToProxyHttp Off`: the stock
    /// module's own tunnel.
    StockLegacy,
    Nginx,
    Haproxy,
    /// The echo backend itself, no proxy.
    Direct,
    /// A second build of the module (BENCH_ALT_MODULE), for A/B runs.
    OursAlt,
    /// httpd + this module with `ProxyWebsocketAsync On`: plain-socket
    /// tunnels leave their worker for the child's reactor (issue 11). Only
    /// when the module knows the directive; `Ours` then runs with
    /// `ProxyWebsocketAsync Off` (the threaded path).
    OursAsync,
    /// ours-async with every limit of issue 15 set, none of them reached:
    /// what the limits cost (message size, message rate, lifetime, per-client
    /// tunnels).
    OursLimits,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::StockDefault => "stock-default",
            Kind::StockLegacy => "stock-legacy",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Direct => "direct",
            Kind::OursAlt => "ours-alt",
            Kind::OursAsync => "ours-async",
            Kind::OursLimits => "ours-limits",
        }
    }
    pub fn is_httpd(self) -> bool {
        matches!(self, Kind::Ours | Kind::OursAlt | Kind::OursAsync | Kind::OursLimits | Kind::StockDefault | Kind::StockLegacy)
    }
    pub fn is_ours(self) -> bool {
        matches!(self, Kind::Ours | Kind::OursAlt | Kind::OursAsync | Kind::OursLimits)
    }
}

/// What is installed where.
pub struct Env {
    pub httpd: PathBuf,
    pub modules_dir: PathBuf,
    pub ours_so: PathBuf,
    /// BENCH_ALT_MODULE: another build to compare (development aid).
    pub alt_so: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub httpd_version: String,
    /// The module knows `ProxyWebsocketAsync` (httpd -t accepts it).
    pub async_ok: bool,
    /// How async_ok was decided (for the results).
    pub async_why: String,
}

impl Env {
    pub fn probe(ours_so: PathBuf) -> Result<Env, String> {
        let httpd = PathBuf::from(env_or("HTTPD", "/usr/sbin/apache2"));
        let out = Command::new(&httpd)
            .arg("-v")
            .output()
            .map_err(|e| format!("{} -v: {e}", httpd.display()))?;
        let httpd_version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("Server version"))
            .map(|l| l.trim_start_matches("Server version:").trim().to_string())
            .unwrap_or_default();
        let apxs = env_or("APXS", "apxs");
        let modules_dir = Command::new(&apxs)
            .args(["-q", "LIBEXECDIR"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| PathBuf::from("/usr/lib/apache2/modules"));
        if !modules_dir.join("mod_proxy_wstunnel.so").exists() {
            return Err(format!(
                "no stock mod_proxy_wstunnel.so in {}",
                modules_dir.display()
            ));
        }
        if !ours_so.exists() {
            return Err(format!("{} not built (run make)", ours_so.display()));
        }
        let find = |name: &str| {
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.exists())
        };
        let mut env = Env {
            httpd,
            modules_dir,
            ours_so,
            alt_so: std::env::var_os("BENCH_ALT_MODULE").map(PathBuf::from),
            nginx: find("nginx"),
            haproxy: find("haproxy"),
            httpd_version,
            async_ok: false,
            async_why: String::new(),
        };
        env.probe_async();
        Ok(env)
    }

    /// Does httpd accept `ProxyWebsocketAsync On` with our module loaded?
    /// (httpd refuses unknown directives, so the async rows and the
    /// `ProxyWebsocketAsync Off` of the threaded row depend on it.)
    /// BENCH_ASYNC=0 or 1 overrides the probe.
    pub fn probe_async(&mut self) {
        match std::env::var("BENCH_ASYNC").ok().as_deref() {
            Some("0") => {
                self.async_ok = false;
                self.async_why = "BENCH_ASYNC=0".into();
                return;
            }
            Some("1") => {
                self.async_ok = true;
                self.async_why = "BENCH_ASYNC=1".into();
                return;
            }
            _ => {}
        }
        let Ok(dir) = tempfile::Builder::new().prefix("wst-bench-probe-").tempdir() else { return };
        let d = dir.path();
        let m = |n: &str| self.modules_dir.join(format!("mod_{n}.so")).display().to_string();
        let conf = format!(
            "ServerRoot \"{0}\"\nPidFile \"{0}/p.pid\"\nErrorLog \"{0}/e.log\"\nDefaultRuntimeDir \"{0}\"\nServerName 127.0.0.1\nListen 127.0.0.1:1\n\
LoadModule mpm_event_module \"{1}\"\nLoadModule authz_core_module \"{2}\"\nLoadModule proxy_module \"{3}\"\nLoadModule proxy_wstunnel_module \"{4}\"\nProxyWebsocketAsync On\n",
            d.display(),
            m("mpm_event"),
            m("authz_core"),
            m("proxy"),
            self.ours_so.display()
        );
        let path = d.join("probe.conf");
        if fs::write(&path, conf).is_err() {
            return;
        }
        match Command::new(&self.httpd).arg("-t").arg("-f").arg(&path).output() {
            Ok(o) => {
                self.async_ok = o.status.success();
                let msg = String::from_utf8_lossy(&o.stderr);
                self.async_why = if self.async_ok {
                    "httpd -t accepts ProxyWebsocketAsync".into()
                } else {
                    format!("httpd -t refuses ProxyWebsocketAsync: {}", msg.lines().next().unwrap_or("").trim())
                };
            }
            Err(e) => self.async_why = format!("httpd -t: {e}"),
        }
    }

    pub fn has(&self, k: Kind) -> bool {
        match k {
            Kind::Nginx => self.nginx.is_some(),
            Kind::Haproxy => self.haproxy.is_some(),
            Kind::OursAlt => self.alt_so.is_some(),
            Kind::OursAsync | Kind::OursLimits => self.async_ok,
            _ => true,
        }
    }
}

pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_string(),
    }
}

/// Processes and threads: httpd's event MPM gets `servers` children of
/// `threads` workers each, all started up front and never reaped (so that
/// CPU and RSS sums see the same processes throughout); nginx and HAProxy
/// get connection limits to match.
#[derive(Clone, Copy, Debug)]
pub struct Sizing {
    pub servers: u32,
    pub threads: u32,
    /// Prefork (threads must be 1) instead of event.
    pub prefork: bool,
}

impl Sizing {
    pub const fn event(servers: u32, threads: u32) -> Sizing {
        Sizing { servers, threads, prefork: false }
    }
    pub fn slots(self) -> u32 {
        self.servers * self.threads
    }
    pub fn mpm(self) -> &'static str {
        if self.prefork { "prefork" } else { "event" }
    }
}

/// What a server is started with: its routes to the backend(s), httpd's
/// sizing, and the peers' scale (connections they must allow, processes).
#[derive(Clone, Debug)]
pub struct Setup {
    /// (path, backend port): `/ws` → one backend in the perf phase, `/wsN`
    /// → N backend listeners in the climb.
    pub routes: Vec<(String, u16)>,
    pub sz: Sizing,
    /// Tunnels nginx and HAProxy must allow (their connection limits).
    pub peer_tunnels: u32,
    /// nginx worker processes (2 on this 2-core machine; the climb needs
    /// more, each worker being a process capped at 20,000 descriptors).
    pub nginx_workers: u32,
    /// HAProxy processes sharing the ports with SO_REUSEPORT (one process
    /// cannot hold more than ~10,000 tunnels under a 20,000-descriptor cap).
    pub haproxy_procs: u32,
}

impl Setup {
    pub fn simple(backend: u16, sz: Sizing) -> Setup {
        Setup {
            routes: vec![("/ws".into(), backend)],
            sz,
            peer_tunnels: sz.slots(),
            nginx_workers: 2,
            haproxy_procs: 1,
        }
    }
}

/// Established TCP connections on loopback whose remote port is `port`
/// (from /proc/net/tcp): e.g. the proxy's tunnels to the backend.
pub fn connections_to(port: u16) -> usize {
    let Ok(t) = fs::read_to_string("/proc/net/tcp") else { return 0 };
    t.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rport = f.get(2).and_then(|r| r.split(':').nth(1)).and_then(|p| u16::from_str_radix(p, 16).ok());
            rport == Some(port) && f.get(3) == Some(&"01")
        })
        .count()
}

/// Sockets in CLOSE_WAIT on loopback whose local port is `local` (the
/// proxy's client side) or whose remote port is one of `remote` (its
/// backend side): peers that closed and the proxy did not.
pub fn close_wait(local: u16, remote: &[u16]) -> usize {
    let Ok(t) = fs::read_to_string("/proc/net/tcp") else { return 0 };
    let port = |a: Option<&&str>| a.and_then(|r| r.split(':').nth(1)).and_then(|p| u16::from_str_radix(p, 16).ok());
    t.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"08") && (port(f.get(1)) == Some(local) || port(f.get(2)).is_some_and(|p| remote.contains(&p)))
        })
        .count()
}

pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn port_accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A started process (group) with its temp dir.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    /// wss:// port (TLS at the proxy); 0 when it has none.
    pub tls_port: u16,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

fn world_readable(p: &Path) {
    let mode = if p.is_dir() { 0o755 } else { 0o644 };
    let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode));
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, String> {
    let f = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(f).stderr(f2).process_group(0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of ours: the child dies with the driver.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            let core = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("spawn: {e}"))
}

/// The echo backend: this same binary, `echo <port>`.
pub fn start_backend(port: u16) -> Result<Server, String> {
    start_backends(&[port], false)
}

/// One echo process listening on every port of `ports` (`small`: the
/// climb's small buffers).
pub fn start_backends(ports: &[u16], small: bool) -> Result<Server, String> {
    let dir = tempfile::Builder::new()
        .prefix("wst-bench-echo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    cmd.arg("echo").arg(list.join(","));
    if small {
        cmd.arg("small");
    }
    let child = spawn(&mut cmd, &dir.path().join("echo.log"))?;
    let s = Server {
        kind: Kind::Direct,
        port: ports.first().copied().unwrap_or(0),
        tls_port: 0,
        children: vec![child],
        dir,
    };
    for &p in ports.iter().skip(1) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_accepts(p) {
            if Instant::now() > deadline {
                return Err(format!("echo backend did not listen on {p}:\n{}", s.logs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    s.wait_ready(0)?;
    Ok(s)
}

impl Server {
    pub fn start(env: &Env, kind: Kind, backend: u16, pki: &Pki, sz: Sizing) -> Result<Server, String> {
        Server::start_with(env, kind, &Setup::simple(backend, sz), pki)
    }

    pub fn start_with(env: &Env, kind: Kind, st: &Setup, pki: &Pki) -> Result<Server, String> {
        let sz = st.sz;
        let dir = tempfile::Builder::new()
            .prefix(&format!("wst-bench-{}-", kind.name()))
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path().to_path_buf();
        world_readable(&d);
        if std::env::var_os("BENCH_KEEP").is_some() {
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o1777));
        }
        let port = free_port()?;
        let tls_port = free_port()?;
        let log = d.join("stdout.log");
        let (procs, children) = match kind {
            Kind::Ours | Kind::OursAlt | Kind::OursAsync | Kind::OursLimits | Kind::StockDefault | Kind::StockLegacy => {
                let conf = httpd_conf(env, kind, &d, port, tls_port, st, pki);
                let path = d.join("httpd.conf");
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let mut cmd = Command::new(&env.httpd);
                cmd.arg("-d").arg(&d).arg("-f").arg(&path).arg("-DFOREGROUND");
                (vec![spawn(&mut cmd, &log)?], sz.servers as usize)
            }
            Kind::Nginx => {
                for sub in ["tmp"] {
                    let _ = fs::create_dir_all(d.join(sub));
                    world_readable(&d.join(sub));
                }
                let conf = nginx_conf(&d, port, tls_port, st, pki);
                let path = d.join("nginx.conf");
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let bin = env.nginx.clone().ok_or("nginx not installed")?;
                let mut cmd = Command::new(bin);
                cmd.arg("-p").arg(&d).arg("-c").arg(&path).arg("-e").arg(d.join("error.log"));
                (vec![spawn(&mut cmd, &log)?], st.nginx_workers as usize)
            }
            Kind::Haproxy => {
                let conf = haproxy_conf(port, tls_port, st, pki);
                let path = d.join("haproxy.cfg");
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let bin = env.haproxy.clone().ok_or("haproxy not installed")?;
                // Several processes on the same ports (HAProxy binds with
                // SO_REUSEPORT; the kernel spreads the connections).
                let mut v = Vec::new();
                for i in 0..st.haproxy_procs.max(1) {
                    let mut cmd = Command::new(&bin);
                    cmd.arg("-db").arg("-f").arg(&path);
                    v.push(spawn(&mut cmd, &d.join(format!("haproxy{i}.log")))?);
                }
                (v, 0)
            }
            Kind::Direct => return Err("direct is the backend".into()),
        };
        let s = Server {
            kind,
            port,
            tls_port,
            children: procs,
            dir,
        };
        s.wait_ready(children)?;
        Ok(s)
    }

    fn pid(&self) -> i32 {
        self.children.first().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// The started processes and all their descendants.
    pub fn all_pids(&self) -> Vec<i32> {
        self.children.iter().flat_map(|c| descendants(c.id() as i32)).collect()
    }

    /// Open descriptors of all the server's processes.
    pub fn fds(&self) -> usize {
        self.all_pids()
            .iter()
            .map(|p| fs::read_dir(format!("/proc/{p}/fd")).map(|d| d.count()).unwrap_or(0))
            .sum()
    }

    /// Per process: (pid, open descriptors), for the report on where
    /// tunnels went.
    pub fn fds_by_process(&self) -> Vec<(i32, usize)> {
        self.all_pids()
            .iter()
            .map(|&p| (p, fs::read_dir(format!("/proc/{p}/fd")).map(|d| d.count()).unwrap_or(0)))
            .collect()
    }

    /// Lines of the error log at error level or worse (httpd: `:error]`,
    /// `:crit]`, `:alert]`, `:emerg]`; nginx: `[error]`, `[crit]`, `[alert]`,
    /// `[emerg]`), and the first few of them.
    pub fn log_errors(&self) -> (usize, Vec<String>) {
        let mut n = 0;
        let mut first = Vec::new();
        for f in ["error.log", "stdout.log"] {
            let Ok(t) = fs::read_to_string(self.dir.path().join(f)) else { continue };
            for l in t.lines() {
                let bad = [":error]", ":crit]", ":alert]", ":emerg]", "[error]", "[crit]", "[alert]", "[emerg]", "segfault", "Segmentation", "exit signal"]
                    .iter()
                    .any(|k| l.contains(k))
                    // Reaching MaxRequestWorkers is what a threaded climb
                    // is expected to do, not an incident.
                    && !l.contains("AH00484")
                    && !l.contains("AH00161");
                if bad {
                    n += 1;
                    if first.len() < 3 {
                        first.push(l.chars().take(300).collect());
                    }
                }
            }
        }
        (n, first)
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["stdout.log", "error.log", "echo.log"] {
            if let Ok(t) = fs::read_to_string(self.dir.path().join(f)) {
                let tail: Vec<&str> = t.lines().rev().take(20).collect();
                let _ = writeln!(s, "--- {f} ---");
                for l in tail.into_iter().rev() {
                    let _ = writeln!(s, "{l}");
                }
            }
        }
        s
    }

    /// Ports accept and (httpd, nginx) all `children` processes exist.
    fn wait_ready(&self, children: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let pid = self.pid();
        loop {
            let ports_ok = port_accepts(self.port) && (self.tls_port == 0 || port_accepts(self.tls_port));
            if ports_ok && descendants(pid).len() >= children + 1 && self.children.iter().all(|c| alive(c.id() as i32)) {
                // Let the last children finish starting their threads.
                std::thread::sleep(Duration::from_millis(500));
                return Ok(());
            }
            if !alive(pid) || Instant::now() > deadline {
                return Err(format!(
                    "{} did not start ({}):\n{}",
                    self.kind.name(),
                    if alive(pid) { "timeout" } else { "exited" },
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// utime + stime of the process and its descendants, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.all_pids()
            .iter()
            .filter_map(|&p| proc_stat(p))
            .map(|s| (s.utime + s.stime) as f64 / hz)
            .sum()
    }

    /// VmRSS of the process and its descendants, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.all_pids().iter().map(|&p| rss_kib(p)).sum()
    }

    /// Debugging aid (BENCH_SMAPS=1): RSS KiB by kind of mapping, summed
    /// over the processes.
    pub fn rss_by_mapping(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for p in self.all_pids() {
            let Ok(t) = fs::read_to_string(format!("/proc/{p}/smaps")) else { continue };
            let mut kind = String::new();
            for l in t.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.first().is_some_and(|x| x.contains('-') && !x.ends_with(':')) {
                    let mut it = f[0].split('-').map(|h| u64::from_str_radix(h, 16).unwrap_or(0));
                    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                    let size = (b - a) >> 10;
                    kind = match f.get(5) {
                        Some(n) => n.rsplit('/').next().unwrap_or(n).to_string(),
                        None => format!("anon {} KiB", size),
                    };
                    if kind.starts_with("anon") && size > 1024 {
                        kind = format!("anon {} MiB", size >> 10);
                    }
                } else if f.first() == Some(&"Rss:") {
                    *m.entry(kind.clone()).or_insert(0) += f.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                }
            }
        }
        m
    }

    pub fn processes(&self) -> usize {
        self.all_pids().len()
    }

    /// Is the SIGPIPE disposition "ignore" in every process? (The module's
    /// splice path relies on httpd ignoring it, as it always does.)
    pub fn ignores_sigpipe(&self) -> bool {
        self.all_pids().iter().all(|&p| {
            fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("SigIgn:"))
                        .and_then(|l| u64::from_str_radix(l[7..].trim(), 16).ok())
                })
                .is_some_and(|m| m & (1 << (libc::SIGPIPE - 1)) != 0)
        })
    }

    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let mut kids = std::mem::take(&mut self.children);
        for child in &kids {
            // SAFETY: signals to the process group we started.
            unsafe { libc::killpg(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for child in kids.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for mut child in kids {
            // SAFETY: as above; harmless if the group is gone.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner();
        if std::env::var_os("BENCH_KEEP").is_some() {
            let d = std::mem::replace(&mut self.dir, tempfile::TempDir::new().unwrap_or_else(|_| std::process::exit(1)));
            eprintln!("kept {}", d.keep().display());
        }
    }
}

fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

struct Stat {
    state: char,
    ppid: i32,
    utime: u64,
    stime: u64,
}

fn proc_stat(pid: i32) -> Option<Stat> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `pid` and all its live descendants.
fn descendants(pid: i32) -> Vec<i32> {
    if pid <= 0 || !alive(pid) {
        return vec![];
    }
    let mut all: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                if let Some(s) = proc_stat(p) {
                    if s.state != 'Z' {
                        all.push((p, s.ppid));
                    }
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && i < 100_000 {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

fn httpd_conf(env: &Env, kind: Kind, d: &Path, port: u16, tls_port: u16, st: &Setup, pki: &Pki) -> String {
    let sz = st.sz;
    let m = |n: &str| env.modules_dir.join(format!("mod_{n}.so")).display().to_string();
    let wst = match kind {
        Kind::Ours | Kind::OursAsync | Kind::OursLimits => env.ours_so.display().to_string(),
        Kind::OursAlt => env.alt_so.as_ref().map_or(String::new(), |p| p.display().to_string()),
        _ => m("proxy_wstunnel"),
    };
    let dd = d.display();
    let mut c = String::new();
    let _ = writeln!(c, "# wst-bench: {} ({})", kind.name(), sz.mpm());
    let _ = writeln!(c, "ServerRoot \"{dd}\"\nDocumentRoot \"{dd}\"");
    let _ = writeln!(c, "PidFile \"{dd}/httpd.pid\"\nErrorLog \"{dd}/error.log\"");
    let _ = writeln!(c, "DefaultRuntimeDir \"{dd}\"\nMutex file:{dd} default");
    let _ = writeln!(c, "ServerName 127.0.0.1\nTimeout 600\nLogLevel warn");
    let _ = writeln!(c, "Listen 127.0.0.1:{port}\nListen 127.0.0.1:{tls_port}");
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        c.push_str("User daemon\nGroup daemon\n");
    }
    let _ = writeln!(c, "LoadModule mpm_{0}_module \"{1}\"", sz.mpm(), m(&format!("mpm_{}", sz.mpm())));
    for n in ["authz_core", "proxy", "proxy_http", "socache_shmcb", "ssl"] {
        let _ = writeln!(c, "LoadModule {n}_module \"{}\"", m(n));
    }
    let _ = writeln!(c, "LoadModule proxy_wstunnel_module \"{wst}\"");
    if kind == Kind::StockLegacy {
        c.push_str("ProxyWebsocketFallbackToProxyHttp Off\n");
    }
    // Only once the module knows the directive (httpd refuses unknown ones).
    // (ours-alt: as its module does by default, whatever it is.)
    if env.async_ok && matches!(kind, Kind::Ours | Kind::OursAsync | Kind::OursLimits) {
        let _ = writeln!(c, "ProxyWebsocketAsync {}", if kind == Kind::Ours { "Off" } else { "On" });
    }
    if kind == Kind::OursLimits {
        // Every limit on, none reached by the workloads.
        c.push_str(
            "ProxyWebsocketMaxMessageSize 64M
ProxyWebsocketMaxMessageRate 1000000 1000000
             ProxyWebsocketMaxLifetime 3600
ProxyWebsocketMaxClientTunnels 1000000
",
        );
    }
    let (s, t) = (sz.servers, sz.threads);
    if sz.prefork {
        // MaxRequestWorkers as on CentOS 6 (256); every process started up
        // front and none retired (MaxSpareServers = all), so that the climb
        // measures the module, not prefork's spawn rate.
        let _ = writeln!(
            c,
            "<IfModule mpm_prefork_module>\n  ServerLimit {s}\n  StartServers {s}\n  MinSpareServers 1\n  MaxSpareServers {s}\n  MaxRequestWorkers {s}\n  MaxConnectionsPerChild 0\n  ListenBacklog 4096\n</IfModule>"
        );
    } else {
        let _ = writeln!(
            c,
            "<IfModule mpm_event_module>\n  ServerLimit {s}\n  StartServers {s}\n  ThreadLimit {t}\n  ThreadsPerChild {t}\n  MaxRequestWorkers {}\n  MinSpareThreads 1\n  MaxSpareThreads {}\n  MaxConnectionsPerChild 0\n  ListenBacklog 4096\n</IfModule>",
            s * t,
            s * t
        );
    }
    let _ = writeln!(c, "SSLSessionCache \"shmcb:{dd}/ssl_scache(512000)\"");
    for (path, backend) in &st.routes {
        let _ = writeln!(c, "ProxyPass {path} ws://127.0.0.1:{backend}/ws");
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        let _ = writeln!(c, "CoreDumpDirectory \"{dd}\"");
    }
    let _ = writeln!(
        c,
        "<VirtualHost 127.0.0.1:{tls_port}>\n  SSLEngine on\n  SSLCertificateFile \"{}\"\n  SSLCertificateKeyFile \"{}\"\n</VirtualHost>",
        pki.cert.display(),
        pki.key.display()
    );
    c
}

fn nginx_conf(d: &Path, port: u16, tls_port: u16, st: &Setup, pki: &Pki) -> String {
    let dd = d.display();
    let workers = st.nginx_workers.max(1);
    // Each tunnel is two connections of one worker; reuseport spreads the
    // clients over the workers; 30% headroom for the kernel's uneven hash.
    let conns = (st.peer_tunnels * 2 * 13 / 10 / workers + 64).max(1024);
    let nofile = (conns + 64).min(19_990);
    let conns = conns.min(nofile - 32);
    let reuse = if workers > 2 { " reuseport" } else { "" };
    let mut locs = String::new();
    for (path, backend) in &st.routes {
        let _ = write!(
            locs,
            "    location = {path} {{\n      proxy_pass http://127.0.0.1:{backend}/ws;\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n    }}\n"
        );
    }
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {dd}/nginx.pid;\nerror_log {dd}/error.log warn;\nworker_rlimit_nofile {nofile};\n\
events {{ worker_connections {conns}; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {dd}/tmp/body;\n  proxy_temp_path {dd}/tmp/proxy;\n  fastcgi_temp_path {dd}/tmp/fcgi;\n  uwsgi_temp_path {dd}/tmp/uwsgi;\n  scgi_temp_path {dd}/tmp/scgi;\n\
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
  server {{\n    listen 127.0.0.1:{port}{reuse} backlog=4096;\n    listen 127.0.0.1:{tls_port} ssl{reuse};\n    ssl_certificate {};\n    ssl_certificate_key {};\n{locs}  }}\n}}\n",
        pki.cert.display(),
        pki.key.display()
    )
}

fn haproxy_conf(port: u16, tls_port: u16, st: &Setup, pki: &Pki) -> String {
    let procs = st.haproxy_procs.max(1);
    // Per process; 30% headroom for the kernel's uneven spreading. Two
    // descriptors a tunnel: at most ~9,900 under a 20,000 cap.
    let conns = (st.peer_tunnels * 13 / 10 / procs + 64).clamp(1024, 9_900);
    let mut be = String::new();
    let mut uses = String::new();
    for (i, (path, backend)) in st.routes.iter().enumerate() {
        let _ = write!(uses, "  use_backend be{i} if {{ path {path} }}\n");
        let _ = write!(be, "backend be{i}\n  http-request set-path /ws\n  server s1 127.0.0.1:{backend} maxconn {conns}\n");
    }
    format!(
        "global\n  maxconn {conns}\n  nbthread 2\n\
defaults\n  mode http\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n  timeout tunnel 3600s\n\
frontend fe\n  bind 127.0.0.1:{port}\n  bind 127.0.0.1:{tls_port} ssl crt {}\n  maxconn {conns}\n{uses}  default_backend be0\n\
{be}",
        pki.combined.display()
    )
}
