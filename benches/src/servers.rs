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
        }
    }
    pub fn is_httpd(self) -> bool {
        matches!(self, Kind::Ours | Kind::OursAlt | Kind::StockDefault | Kind::StockLegacy)
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
        Ok(Env {
            httpd,
            modules_dir,
            ours_so,
            alt_so: std::env::var_os("BENCH_ALT_MODULE").map(PathBuf::from),
            nginx: find("nginx"),
            haproxy: find("haproxy"),
            httpd_version,
        })
    }

    pub fn has(&self, k: Kind) -> bool {
        match k {
            Kind::Nginx => self.nginx.is_some(),
            Kind::Haproxy => self.haproxy.is_some(),
            Kind::OursAlt => self.alt_so.is_some(),
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
}

impl Sizing {
    pub fn slots(self) -> u32 {
        self.servers * self.threads
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
    child: Option<Child>,
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
    let dir = tempfile::Builder::new()
        .prefix("wst-bench-echo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("echo").arg(port.to_string());
    let child = spawn(&mut cmd, &dir.path().join("echo.log"))?;
    let s = Server {
        kind: Kind::Direct,
        port,
        tls_port: 0,
        child: Some(child),
        dir,
    };
    s.wait_ready(0)?;
    Ok(s)
}

impl Server {
    pub fn start(
        env: &Env,
        kind: Kind,
        backend: u16,
        pki: &Pki,
        sz: Sizing,
    ) -> Result<Server, String> {
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
        let (child, children) = match kind {
            Kind::Ours | Kind::OursAlt | Kind::StockDefault | Kind::StockLegacy => {
                let conf = httpd_conf(env, kind, &d, port, tls_port, backend, pki, sz);
                let path = d.join("httpd.conf");
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let mut cmd = Command::new(&env.httpd);
                cmd.arg("-d").arg(&d).arg("-f").arg(&path).arg("-DFOREGROUND");
                (spawn(&mut cmd, &log)?, sz.servers as usize)
            }
            Kind::Nginx => {
                for sub in ["tmp"] {
                    let _ = fs::create_dir_all(d.join(sub));
                    world_readable(&d.join(sub));
                }
                let conf = nginx_conf(&d, port, tls_port, backend, pki, sz);
                let path = d.join("nginx.conf");
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let bin = env.nginx.clone().ok_or("nginx not installed")?;
                let mut cmd = Command::new(bin);
                cmd.arg("-p").arg(&d).arg("-c").arg(&path).arg("-e").arg(d.join("error.log"));
                (spawn(&mut cmd, &log)?, 2)
            }
            Kind::Haproxy => {
                let conf = haproxy_conf(port, tls_port, backend, pki, sz);
                let path = d.join("haproxy.cfg");
                fs::write(&path, conf).map_err(|e| e.to_string())?;
                let bin = env.haproxy.clone().ok_or("haproxy not installed")?;
                let mut cmd = Command::new(bin);
                cmd.arg("-db").arg("-f").arg(&path);
                (spawn(&mut cmd, &log)?, 0)
            }
            Kind::Direct => return Err("direct is the backend".into()),
        };
        let s = Server {
            kind,
            port,
            tls_port,
            child: Some(child),
            dir,
        };
        s.wait_ready(children)?;
        Ok(s)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
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
            if ports_ok && descendants(pid).len() >= children + 1 {
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
        descendants(self.pid())
            .iter()
            .filter_map(|&p| proc_stat(p))
            .map(|s| (s.utime + s.stime) as f64 / hz)
            .sum()
    }

    /// VmRSS of the process and its descendants, KiB.
    pub fn rss_kib(&self) -> u64 {
        descendants(self.pid()).iter().map(|&p| rss_kib(p)).sum()
    }

    /// Debugging aid (BENCH_SMAPS=1): RSS KiB by kind of mapping, summed
    /// over the processes.
    pub fn rss_by_mapping(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for p in descendants(self.pid()) {
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
        descendants(self.pid()).len()
    }

    /// Is the SIGPIPE disposition "ignore" in every process? (The module's
    /// splice path relies on httpd ignoring it, as it always does.)
    pub fn ignores_sigpipe(&self) -> bool {
        descendants(self.pid()).iter().all(|&p| {
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
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: signals to the process group we started.
        unsafe { libc::killpg(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above; harmless if the group is gone.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
        let _ = child.wait();
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

#[allow(clippy::too_many_arguments)]
fn httpd_conf(
    env: &Env,
    kind: Kind,
    d: &Path,
    port: u16,
    tls_port: u16,
    backend: u16,
    pki: &Pki,
    sz: Sizing,
) -> String {
    let m = |n: &str| env.modules_dir.join(format!("mod_{n}.so")).display().to_string();
    let wst = match kind {
        Kind::Ours => env.ours_so.display().to_string(),
        Kind::OursAlt => env.alt_so.as_ref().map_or(String::new(), |p| p.display().to_string()),
        _ => m("proxy_wstunnel"),
    };
    let dd = d.display();
    let mut c = String::new();
    let _ = writeln!(c, "# wst-bench: {}", kind.name());
    let _ = writeln!(c, "ServerRoot \"{dd}\"\nDocumentRoot \"{dd}\"");
    let _ = writeln!(c, "PidFile \"{dd}/httpd.pid\"\nErrorLog \"{dd}/error.log\"");
    let _ = writeln!(c, "DefaultRuntimeDir \"{dd}\"\nMutex file:{dd} default");
    let _ = writeln!(c, "ServerName 127.0.0.1\nTimeout 600\nLogLevel warn");
    let _ = writeln!(c, "Listen 127.0.0.1:{port}\nListen 127.0.0.1:{tls_port}");
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        c.push_str("User daemon\nGroup daemon\n");
    }
    let _ = writeln!(c, "LoadModule mpm_event_module \"{}\"", m("mpm_event"));
    for n in ["authz_core", "proxy", "proxy_http", "socache_shmcb", "ssl"] {
        let _ = writeln!(c, "LoadModule {n}_module \"{}\"", m(n));
    }
    let _ = writeln!(c, "LoadModule proxy_wstunnel_module \"{wst}\"");
    if kind == Kind::StockLegacy {
        c.push_str("ProxyWebsocketFallbackToProxyHttp Off\n");
    }
    let (s, t) = (sz.servers, sz.threads);
    let _ = writeln!(
        c,
        "<IfModule mpm_event_module>\n  ServerLimit {s}\n  StartServers {s}\n  ThreadLimit {t}\n  ThreadsPerChild {t}\n  MaxRequestWorkers {}\n  MinSpareThreads 1\n  MaxSpareThreads {}\n  MaxConnectionsPerChild 0\n  ListenBacklog 4096\n</IfModule>",
        s * t,
        s * t
    );
    let _ = writeln!(c, "SSLSessionCache \"shmcb:{dd}/ssl_scache(512000)\"");
    let _ = writeln!(c, "ProxyPass /ws ws://127.0.0.1:{backend}/ws");
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

fn nginx_conf(d: &Path, port: u16, tls_port: u16, backend: u16, pki: &Pki, sz: Sizing) -> String {
    let dd = d.display();
    let conns = (sz.slots() * 2 + 64).max(1024);
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {dd}/nginx.pid;\nerror_log {dd}/error.log warn;\nworker_rlimit_nofile {};\n\
events {{ worker_connections {conns}; }}\n\
http {{\n  access_log off;\n  client_body_temp_path {dd}/tmp/body;\n  proxy_temp_path {dd}/tmp/proxy;\n  fastcgi_temp_path {dd}/tmp/fcgi;\n  uwsgi_temp_path {dd}/tmp/uwsgi;\n  scgi_temp_path {dd}/tmp/scgi;\n\
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
  server {{\n    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{tls_port} ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
    location /ws {{\n      proxy_pass http://127.0.0.1:{backend};\n      proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n      proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n    }}\n  }}\n}}\n",
        conns * 2 + 64,
        pki.cert.display(),
        pki.key.display()
    )
}

fn haproxy_conf(port: u16, tls_port: u16, backend: u16, pki: &Pki, sz: Sizing) -> String {
    let conns = (sz.slots() + 64).max(1024);
    format!(
        "global\n  maxconn {conns}\n  nbthread 2\n\
defaults\n  mode http\n  timeout connect 5s\n  timeout client 600s\n  timeout server 600s\n  timeout tunnel 3600s\n\
frontend fe\n  bind 127.0.0.1:{port}\n  bind 127.0.0.1:{tls_port} ssl crt {}\n  maxconn {conns}\n  default_backend be\n\
backend be\n  server s1 127.0.0.1:{backend} maxconn {conns}\n",
        pki.combined.display()
    )
}
