//! A real httpd per test: config generation, start, logs, stop.
//!
//! Environment:
//! * `HTTPD`: httpd binary (default /usr/sbin/apache2).
//! * `APXS`: apxs of that httpd (default `apxs`, then `apxs2` on PATH); `apxs -q LIBEXECDIR` gives
//!   the modules directory.
//! * `WST_MODULE`: the mod_proxy_wstunnel.so under test (default `<repo>/build/mod_proxy_wstunnel.so`,
//!   or, while that does not exist, the stock module of the httpd under test with
//!   `ProxyWebsocketFallbackToProxyHttp Off`).
//! * `WST_MPM`: default MPM (event); ignored by httpd 2.2, whose MPM is compiled in.
//! * `WST_KEEP=1`: keep every test's temp dir.
//! * `WST_ASYNC=off`: every generated config says `ProxyWebsocketAsync Off` (tunnels keep their
//!   worker: the threaded path); unset or `on`: the module's default (plain-socket tunnels are
//!   handed to the child's reactor). Never written for the stock module.
//!
//! All differences between httpd 2.2 and 2.4 in the generated configuration live in [`Flavor`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::client::Target;
use crate::net::{free_port, port_accepts};
use crate::pki::Pki;

/// Make a path readable (and a dir traversable) by httpd's unprivileged children.
pub fn make_world_readable(p: &Path) {
    let mode = if p.is_dir() { 0o755 } else { 0o644 };
    let _ = fs::set_permissions(p, fs::Permissions::from_mode(mode));
}

// ---------------------------------------------------------------------------------------------
// The httpd under test and its version differences
// ---------------------------------------------------------------------------------------------

/// What the httpd under test is, and every version-dependent piece of configuration.
#[derive(Debug, Clone)]
pub struct Flavor {
    pub httpd: PathBuf,
    pub version: (u32, u32, u32),
    pub version_string: String,
    /// Modules directory (apxs -q LIBEXECDIR).
    pub modules_dir: PathBuf,
    /// Modules compiled into the binary (`httpd -l`), e.g. "mod_logio".
    pub static_modules: Vec<String>,
    /// 2.2: the compiled-in MPM ("event", "worker", "prefork").
    pub builtin_mpm: Option<String>,
    /// The module under test.
    pub wst_module: PathBuf,
    /// True when the module under test is the httpd's own stock module.
    pub wst_is_stock: bool,
    /// httpd's request-line parser is the strict one (`HttpProtocolOptions`,
    /// 2.4.25+ and 2.2.32+; CentOS 6's 2.2.15-69.el6 has it backported, so the
    /// version number alone does not tell).
    pub strict_request_line: bool,
    /// `WST_ASYNC=off`: generated configs say `ProxyWebsocketAsync Off` (see
    /// [`HttpdBuilder::async_tunnels`]).
    pub async_off: bool,
}

impl Flavor {
    /// Probe the environment once per process.
    pub fn get() -> &'static Flavor {
        static F: OnceLock<Flavor> = OnceLock::new();
        F.get_or_init(Flavor::probe)
    }

    fn probe() -> Flavor {
        let httpd = PathBuf::from(env_or("HTTPD", "/usr/sbin/apache2"));
        let out = Command::new(&httpd)
            .arg("-v")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} -v: {e}", httpd.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version_string = text
            .lines()
            .find(|l| l.contains("Server version"))
            .unwrap_or("")
            .trim()
            .to_string();
        let version = parse_version(&version_string).unwrap_or_else(|| {
            panic!("cannot parse version from {} -v: {text:?}", httpd.display())
        });

        let l_out = Command::new(&httpd).arg("-l").output().ok();
        let static_modules: Vec<String> = l_out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| l.ends_with(".c"))
            .map(|l| l.trim_end_matches(".c").to_string())
            .collect();
        let builtin_mpm = if version < (2, 4, 0) {
            ["event", "worker", "prefork"]
                .iter()
                .find(|m| static_modules.iter().any(|s| s == *m))
                .map(|m| m.to_string())
        } else {
            None
        };

        // 2.2 has its MPM built in, so `-L` lists the directives with no configuration.
        let strict_request_line = version >= (2, 4, 25)
            || ((2, 2, 32)..(2, 3, 0)).contains(&version)
            || (version < (2, 4, 0)
                && Command::new(&httpd)
                    .args(["-d", "/tmp", "-f", "/dev/null", "-L"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("HttpProtocolOptions"))
                    .unwrap_or(false));

        let modules_dir = modules_dir(&httpd);
        let stock = modules_dir.join("mod_proxy_wstunnel.so");
        let (wst_module, wst_is_stock) = match std::env::var("WST_MODULE") {
            Ok(m) if !m.is_empty() => {
                let p = PathBuf::from(m);
                let is_stock = same_file(&p, &stock);
                (p, is_stock)
            }
            _ => {
                let ours = crate::repo_root().join("build/mod_proxy_wstunnel.so");
                if ours.exists() {
                    (ours, false)
                } else {
                    (stock, true)
                }
            }
        };
        assert!(
            wst_module.exists(),
            "module under test {} does not exist (set WST_MODULE)",
            wst_module.display()
        );
        let async_off = async_off_from_env(std::env::var("WST_ASYNC").ok().as_deref());
        let f = Flavor {
            httpd,
            version,
            version_string,
            modules_dir,
            static_modules,
            builtin_mpm,
            wst_module,
            wst_is_stock,
            strict_request_line,
            async_off,
        };
        eprintln!(
            "wst-e2e: {} ({}), modules {}, module under test {}{}",
            f.httpd.display(),
            f.version_string,
            f.modules_dir.display(),
            f.wst_module.display(),
            if f.wst_is_stock {
                " (STOCK)"
            } else if f.async_off {
                ", ProxyWebsocketAsync Off (WST_ASYNC=off: the threaded path)"
            } else {
                ""
            }
        );
        f
    }

    pub fn is_24(&self) -> bool {
        self.version >= (2, 4, 0)
    }

    /// Path of `mod_<name>.so`, if it exists and `name` is not compiled in.
    pub fn module_file(&self, name: &str) -> Option<PathBuf> {
        if self.is_static(name) {
            return None;
        }
        let p = self.modules_dir.join(format!("mod_{name}.so"));
        p.exists().then_some(p)
    }

    pub fn is_static(&self, name: &str) -> bool {
        let m = format!("mod_{name}");
        self.static_modules.contains(&m)
    }

    /// True if module `name` can be had (compiled in or as a file).
    pub fn has_module(&self, name: &str) -> bool {
        self.is_static(name) || self.modules_dir.join(format!("mod_{name}.so")).exists()
    }

    /// True if this httpd can run `mpm`.
    pub fn supports_mpm(&self, mpm: &str) -> bool {
        match &self.builtin_mpm {
            Some(b) => b == mpm,
            None => self.is_24() && self.module_file(&format!("mpm_{mpm}")).is_some(),
        }
    }

    /// Modules every generated config loads (besides the MPM and the proxy modules).
    fn base_modules(&self) -> Vec<&'static str> {
        if self.is_24() {
            // access_compat: seeds use `Order allow,deny` / `Allow from all` in <Proxy *>.
            vec![
                "unixd",
                "authz_core",
                "authz_host",
                "access_compat",
                "log_config",
                "logio",
            ]
        } else {
            vec!["authz_host", "log_config", "logio"]
        }
    }

    /// LoadModule line for the MPM (none on 2.2, where the MPM is compiled in).
    fn mpm_load(&self, mpm: &str) -> Option<String> {
        if !self.is_24() {
            return None;
        }
        self.module_file(&format!("mpm_{mpm}"))
            .map(|p| format!("LoadModule mpm_{mpm}_module \"{}\"", p.display()))
    }

    /// The name `<IfModule>` knows `mpm` by: `mpm_prefork_module` (2.4), `prefork.c` (2.2).
    pub fn mpm_module_name(&self, mpm: &str) -> String {
        if self.is_24() {
            format!("mpm_{mpm}_module")
        } else {
            format!("{mpm}.c")
        }
    }

    /// The directive limiting simultaneous connections: `MaxRequestWorkers` (2.4),
    /// `MaxClients` (2.2).
    pub fn max_workers_directive(&self) -> &'static str {
        if self.is_24() {
            "MaxRequestWorkers"
        } else {
            "MaxClients"
        }
    }

    /// `directives` (one per line) inside `<IfModule>` for `mpm`, under the name this httpd
    /// knows it by; `MaxRequestWorkers` is written `MaxClients` on 2.2.
    pub fn if_mpm(&self, mpm: &str, directives: &str) -> String {
        let mut s = format!("<IfModule {}>\n", self.mpm_module_name(mpm));
        for l in directives.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let l = match l.strip_prefix("MaxRequestWorkers") {
                Some(rest) => format!("{}{rest}", self.max_workers_directive()),
                None => l.to_string(),
            };
            let _ = writeln!(s, "  {l}");
        }
        s.push_str("</IfModule>\n");
        s
    }

    /// MPM settings for exactly one child process for the whole run (so that per-process
    /// descriptor counts compare): event/worker with 16 threads; prefork with one process,
    /// which serves one connection at a time.
    pub fn one_child_tuning(&self) -> String {
        let threaded = "StartServers 1\nServerLimit 1\nThreadsPerChild 16\nMinSpareThreads 1\n\
                        MaxSpareThreads 16\nMaxRequestWorkers 16\n";
        let mut s = self.if_mpm(
            "prefork",
            "StartServers 1\nMinSpareServers 1\nMaxSpareServers 1\nServerLimit 1\n\
             MaxRequestWorkers 1\n",
        );
        s.push_str(&self.if_mpm("worker", threaded));
        s.push_str(&self.if_mpm("event", threaded));
        s
    }

    /// Whether an error-log line may come from `module` ("proxy_wstunnel", "proxy_http", ...):
    /// 2.4 tags every line `[module:level]`; 2.2's lines carry no module tag (debug lines name
    /// a source file, other levels nothing), so there every line may, and the message itself
    /// has to tell.
    pub fn log_line_from(&self, line: &str, module: &str) -> bool {
        if self.is_24() {
            line.contains(&format!("[{module}:"))
        } else {
            true
        }
    }

    /// The level of an error-log line: `debug` from `[Sat ...] [proxy:debug] ...` (2.4) or
    /// from `[Sat ...] [debug] ...` (2.2).
    pub fn log_line_level<'a>(&self, line: &'a str) -> Option<&'a str> {
        let rest = &line[line.find("] [")? + 3..];
        let tag = &rest[..rest.find(']')?];
        tag.rsplit(':').next()
    }

    /// Small process/thread limits so that many instances fit on 2 cores.
    fn mpm_tuning(&self) -> String {
        let (prefork, threaded, max_workers) = if self.is_24() {
            (
                "mpm_prefork_module",
                ["mpm_worker_module", "mpm_event_module"],
                "MaxRequestWorkers",
            )
        } else {
            ("prefork.c", ["worker.c", "event.c"], "MaxClients")
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<IfModule {prefork}>\n  StartServers 2\n  MinSpareServers 1\n  MaxSpareServers 4\n  ServerLimit 32\n  {max_workers} 32\n</IfModule>"
        );
        for m in threaded {
            let _ = writeln!(
                s,
                "<IfModule {m}>\n  StartServers 1\n  ServerLimit 4\n  ThreadsPerChild 16\n  MinSpareThreads 4\n  MaxSpareThreads 32\n  {max_workers} 64\n</IfModule>"
            );
        }
        s
    }

    /// Runtime files (mutexes, scoreboard, shm) inside `dir`.
    fn runtime_dirs(&self, dir: &Path) -> String {
        let run = dir.join("run");
        if self.is_24() {
            format!(
                "DefaultRuntimeDir \"{0}\"\nMutex file:{0} default\n",
                run.display()
            )
        } else {
            format!("LockFile \"{0}/accept.lock\"\n", run.display())
        }
    }

    /// Access control granting everything, for `{ALLOW_ALL}` in test snippets.
    pub fn allow_all(&self) -> &'static str {
        if self.is_24() {
            "Require all granted"
        } else {
            "Order allow,deny\n    Allow from all"
        }
    }

    /// LogLevel line: 2.2 has no per-module levels, so use the most verbose level given.
    pub fn log_level(&self, spec: &str) -> String {
        if self.is_24() {
            return format!("LogLevel {spec}");
        }
        const ORDER: [&str; 8] = [
            "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
        ];
        let rank = |l: &str| ORDER.iter().position(|o| l.starts_with(o));
        let best = spec
            .split_whitespace()
            .map(|w| w.rsplit(':').next().unwrap_or(w))
            .filter_map(|l| rank(l).map(|r| (r, l)))
            .max_by_key(|(r, _)| *r)
            .map(|(r, _)| ORDER[r])
            .unwrap_or("warn");
        format!("LogLevel {best}")
    }
}

/// An environment variable, empty counting as unset.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_string(),
    }
}

/// `WST_ASYNC`: `off` (or `0`, `no`) selects the threaded path; unset, empty, `on` (`1`, `yes`)
/// the module's default. Anything else stops the run rather than test the wrong path.
fn async_off_from_env(v: Option<&str>) -> bool {
    match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "on" | "1" | "yes") => false,
        Some("off" | "0" | "no") => true,
        Some(other) => panic!("WST_ASYNC={other:?}: expected on or off"),
    }
}

fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let v = s.split("Apache/").nth(1)?;
    let v: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

fn modules_dir(httpd: &Path) -> PathBuf {
    let candidates: Vec<String> = match std::env::var("APXS") {
        Ok(a) if !a.is_empty() => vec![a],
        _ => vec!["apxs".into(), "apxs2".into()],
    };
    for apxs in &candidates {
        if let Ok(o) = Command::new(apxs).args(["-q", "LIBEXECDIR"]).output() {
            let d = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if o.status.success() && !d.is_empty() && Path::new(&d).is_dir() {
                return PathBuf::from(d);
            }
        }
    }
    // No apxs: <HTTPD_ROOT>/modules, or the httpd binary's ../modules.
    if let Some(p) = httpd
        .parent()
        .and_then(|b| b.parent())
        .map(|r| r.join("modules"))
    {
        if p.is_dir() {
            return p;
        }
    }
    panic!("cannot find the httpd modules directory: set APXS (tried {candidates:?})");
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Builds and starts an [`Httpd`].
///
/// The test's config snippet may use placeholders `{NAME}` for: `PORT` (the main Listen port),
/// each extra port from [`listen`](Self::listen), every [`var`](Self::var), `DIR` (the server
/// root), `CERT`/`KEY`/`CA` (TLS files, see [`pki`](Self::pki)), `ALLOW_ALL` (version-specific
/// "allow everything" lines). Unknown `{...}` (regex quantifiers) are left as they are.
pub struct HttpdBuilder {
    snippet: String,
    vars: BTreeMap<String, String>,
    modules: Vec<String>,
    without: Vec<String>,
    mpm: Option<String>,
    log_level: String,
    extra_ports: Vec<String>,
    pki: Option<Pki>,
    fallback_directive: bool,
    one_child: bool,
    async_tunnels: Option<bool>,
}

impl Default for HttpdBuilder {
    fn default() -> Self {
        HttpdBuilder {
            snippet: String::new(),
            vars: BTreeMap::new(),
            modules: Vec::new(),
            without: Vec::new(),
            mpm: None,
            log_level: "warn proxy_wstunnel:debug".into(),
            extra_ports: Vec::new(),
            pki: None,
            fallback_directive: true,
            one_child: false,
            async_tunnels: None,
        }
    }
}

impl HttpdBuilder {
    /// The test's own configuration (appended after the generated part).
    pub fn config(mut self, snippet: &str) -> Self {
        self.snippet.push_str(snippet);
        self.snippet.push('\n');
        self
    }
    /// A placeholder value: `{name}` in the snippet becomes `value`.
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }
    /// Load `mod_<name>.so` too (skipped if compiled in; panics if absent, see
    /// [`Flavor::has_module`] to skip a test instead).
    pub fn module(mut self, name: &str) -> Self {
        self.modules.push(name.to_string());
        self
    }
    pub fn modules(mut self, names: &[&str]) -> Self {
        self.modules.extend(names.iter().map(|s| s.to_string()));
        self
    }
    /// Do not load a module loaded by default (`proxy_http`, ...).
    pub fn without_module(mut self, name: &str) -> Self {
        self.without.push(name.to_string());
        self
    }
    /// MPM (prefork, worker, event); default `WST_MPM` or event.
    pub fn mpm(mut self, mpm: &str) -> Self {
        self.mpm = Some(mpm.to_string());
        self
    }
    /// LogLevel arguments, default `warn proxy_wstunnel:debug`.
    pub fn log_level(mut self, spec: &str) -> Self {
        self.log_level = spec.to_string();
        self
    }
    /// One more `Listen 127.0.0.1:<free port>`, available as `{NAME}` and via [`Httpd::port_of`].
    pub fn listen(mut self, name: &str) -> Self {
        self.extra_ports.push(name.to_string());
        self
    }
    /// TLS material for `{CERT}`, `{KEY}`, `{CA}` (generated if not given).
    pub fn pki(mut self, pki: &Pki) -> Self {
        self.pki = Some(pki.clone());
        self
    }
    /// Do not add `ProxyWebsocketFallbackToProxyHttp Off` even for the stock module.
    pub fn no_fallback_directive(mut self) -> Self {
        self.fallback_directive = false;
        self
    }

    /// `ProxyWebsocketAsync On` (true) or `Off` (false) in the server config whatever
    /// `WST_ASYNC` says: for tests of one path (nothing is written for the stock module).
    pub fn async_tunnels(mut self, on: bool) -> Self {
        self.async_tunnels = Some(on);
        self
    }

    /// One child process for the whole run ([`Flavor::one_child_tuning`]): per-process
    /// descriptor counts compare. Under prefork that child serves one connection at a time.
    pub fn one_child(mut self) -> Self {
        self.one_child = true;
        self
    }

    /// Write the config and start httpd; panics (with the error log) if it does not come up.
    pub fn start(self) -> Httpd {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match self.try_start() {
                Ok(h) => return h,
                Err((msg, retry)) => {
                    last_err = msg;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("httpd did not start:\n{last_err}");
    }

    fn try_start(&self) -> Result<Httpd, (String, bool)> {
        let flavor = Flavor::get();
        let tmp = tempfile::Builder::new()
            .prefix("wst-e2e-httpd-")
            .tempdir()
            .map_err(|e| (format!("tempdir: {e}"), false))?;
        let dir = tmp.path().to_path_buf();
        make_world_readable(&dir);
        for sub in ["htdocs", "run", "logs"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| (format!("mkdir: {e}"), false))?;
            make_world_readable(&p);
        }
        let _ = fs::write(dir.join("htdocs/index.html"), "httpd docroot\n");
        let pki = self.pki.clone().unwrap_or_else(Pki::generate);

        let port = free_port();
        let mut ports = vec![("PORT".to_string(), port)];
        for name in &self.extra_ports {
            ports.push((name.clone(), free_port()));
        }

        let mpm = self
            .mpm
            .clone()
            .or_else(|| {
                std::env::var("WST_MPM")
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            })
            .unwrap_or_else(|| "event".into());
        // 2.2: the MPM is compiled in, whatever was asked for.
        let mpm = flavor.builtin_mpm.clone().unwrap_or(mpm);

        let conf = self.render(flavor, &dir, &ports, &mpm, &pki)?;
        let conf_path = dir.join("httpd.conf");
        fs::write(&conf_path, &conf).map_err(|e| (format!("write conf: {e}"), false))?;

        let stderr_path = dir.join("logs/stderr.log");
        let stderr = fs::File::create(&stderr_path).map_err(|e| (e.to_string(), false))?;
        let stdout = stderr.try_clone().map_err(|e| (e.to_string(), false))?;
        let mut cmd = Command::new(&flavor.httpd);
        cmd.arg("-d")
            .arg(&dir)
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        crate::net::die_with_parent(&mut cmd, libc::SIGTERM);
        let mut child = cmd
            .spawn()
            .map_err(|e| (format!("spawn {}: {e}", flavor.httpd.display()), false))?;

        let started = Instant::now();
        let pid_file = dir.join("run/httpd.pid");
        let deadline = started + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = read(&dir.join("logs/error.log")) + &read(&stderr_path);
                let retry =
                    log.contains("Address already in use") || log.contains("could not bind");
                return Err((
                    format!(
                        "httpd exited early ({status}).\n--- config {} ---\n{conf}\n--- logs ---\n{log}",
                        conf_path.display()
                    ),
                    retry,
                ));
            }
            let pid_ok = read(&pid_file).trim() == child.id().to_string();
            if pid_ok && ports.iter().all(|(_, p)| port_accepts(*p)) {
                break;
            }
            if Instant::now() > deadline {
                let _ = unsafe_kill(child.id() as i32, libc::SIGKILL, true);
                let _ = child.wait();
                let log = read(&dir.join("logs/error.log")) + &read(&stderr_path);
                return Err((format!("httpd not ready after 20 s\n{log}"), false));
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        Ok(Httpd {
            dir: Some(tmp),
            dir_path: dir,
            conf,
            child: Some(child),
            ports,
            pki,
            mpm,
            stop_report: None,
        })
    }

    fn render(
        &self,
        f: &Flavor,
        dir: &Path,
        ports: &[(String, u16)],
        mpm: &str,
        pki: &Pki,
    ) -> Result<String, (String, bool)> {
        let mut c = String::new();
        let d = dir.display();
        let _ = writeln!(
            c,
            "# Generated by wst-e2e for {} ({})",
            f.httpd.display(),
            f.version_string
        );
        let _ = writeln!(c, "ServerRoot \"{d}\"");
        let _ = writeln!(c, "DocumentRoot \"{d}/htdocs\"");
        let _ = writeln!(c, "PidFile \"{d}/run/httpd.pid\"");
        let _ = writeln!(c, "ErrorLog \"{d}/logs/error.log\"");
        c.push_str(&f.runtime_dirs(dir));
        let _ = writeln!(c, "ServerName 127.0.0.1");
        let _ = writeln!(c, "Timeout 30");
        for (_, p) in ports {
            let _ = writeln!(c, "Listen 127.0.0.1:{p}");
        }
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            c.push_str("User daemon\nGroup daemon\n");
        }

        // Modules.
        if let Some(l) = f.mpm_load(mpm) {
            c.push_str(&l);
            c.push('\n');
        } else if f.is_24() {
            return Err((
                format!("MPM {mpm} not available in {}", f.modules_dir.display()),
                false,
            ));
        }
        let mut mods: Vec<String> = f.base_modules().iter().map(|s| s.to_string()).collect();
        mods.push("proxy".into());
        mods.push("proxy_http".into());
        for m in &self.modules {
            if m == "ssl" && f.is_24() {
                mods.push("socache_shmcb".into());
            }
            if m == "proxy_balancer" {
                mods.push("slotmem_shm".into());
                mods.push("lbmethod_byrequests".into());
            }
            mods.push(m.clone());
        }
        let mut seen = Vec::new();
        for m in mods {
            if seen.contains(&m) || self.without.contains(&m) || m == "proxy_wstunnel" {
                continue;
            }
            seen.push(m.clone());
            if let Some(p) = f.module_file(&m) {
                let _ = writeln!(c, "LoadModule {m}_module \"{}\"", p.display());
            } else if !f.is_static(&m) && self.modules.contains(&m) {
                return Err((
                    format!("module mod_{m} not found in {}", f.modules_dir.display()),
                    false,
                ));
            }
        }
        let _ = writeln!(
            c,
            "LoadModule proxy_wstunnel_module \"{}\"",
            f.wst_module.display()
        );
        if f.wst_is_stock && self.fallback_directive && f.version >= (2, 4, 47) {
            c.push_str("ProxyWebsocketFallbackToProxyHttp Off\n");
        }
        let async_on = self.async_tunnels.or(f.async_off.then_some(false));
        if let (false, Some(on)) = (f.wst_is_stock, async_on) {
            let _ = writeln!(c, "ProxyWebsocketAsync {}", if on { "On" } else { "Off" });
        }
        if f.is_24() && self.modules.iter().any(|m| m == "ssl") {
            let _ = writeln!(c, "SSLSessionCache \"shmcb:{d}/run/ssl_scache(512000)\"");
        }

        let _ = writeln!(c, "LogFormat \"%h %l %u %t \\\"%r\\\" %>s %b %I %O\" wst");
        let _ = writeln!(c, "CustomLog \"{d}/logs/access.log\" wst");
        c.push_str(&f.log_level(&self.log_level));
        c.push('\n');
        c.push_str(&f.mpm_tuning());
        if self.one_child {
            c.push_str(&f.one_child_tuning());
        }
        let _ = writeln!(
            c,
            "<Directory \"{d}/htdocs\">\n    {}\n</Directory>",
            f.allow_all()
        );

        // The test's own config.
        let mut vars = self.vars.clone();
        for (n, p) in ports {
            vars.insert(n.clone(), p.to_string());
        }
        vars.insert("DIR".into(), d.to_string());
        vars.insert("CERT".into(), pki.cert_file().display().to_string());
        vars.insert("KEY".into(), pki.key_file().display().to_string());
        vars.insert("CA".into(), pki.ca_file().display().to_string());
        vars.insert("ALLOW_ALL".into(), f.allow_all().to_string());
        c.push_str("\n# ---- test configuration ----\n");
        c.push_str(&substitute(&self.snippet, &vars));
        Ok(c)
    }
}

/// Replace `{NAME}` for every NAME in `vars`; other braces are left alone.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn read(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn unsafe_kill(pid: i32, sig: i32, group: bool) -> i32 {
    // SAFETY: kill/killpg only send a signal; pid is a process (group) we started.
    unsafe {
        if group {
            libc::killpg(pid, sig)
        } else {
            libc::kill(pid, sig)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running httpd
// ---------------------------------------------------------------------------------------------

/// How a stop went.
#[derive(Debug, Clone, Copy)]
pub struct StopReport {
    /// From SIGTERM to the parent's exit.
    pub elapsed: Duration,
    /// True if SIGKILL was needed.
    pub killed: bool,
}

/// A running httpd; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Httpd {
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    conf: String,
    child: Option<Child>,
    ports: Vec<(String, u16)>,
    pki: Pki,
    mpm: String,
    stop_report: Option<StopReport>,
}

/// One parsed access-log line (`%h %l %u %t "%r" %>s %b %I %O`).
#[derive(Debug, Clone)]
pub struct AccessLine {
    pub raw: String,
    pub request: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl AccessLine {
    pub fn parse(line: &str) -> Option<AccessLine> {
        let open = line.find('"')?;
        let close = line.rfind('"')?;
        if close <= open {
            return None;
        }
        let request = line[open + 1..close].to_string();
        let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
        if rest.len() < 4 {
            return None;
        }
        Some(AccessLine {
            raw: line.to_string(),
            request,
            status: rest[0].parse().ok()?,
            bytes_in: rest[2].parse().ok()?,
            bytes_out: rest[3].parse().ok()?,
        })
    }
}

impl Httpd {
    pub fn builder() -> HttpdBuilder {
        HttpdBuilder::default()
    }

    pub fn flavor() -> &'static Flavor {
        Flavor::get()
    }

    /// The main Listen port.
    pub fn port(&self) -> u16 {
        self.ports[0].1
    }
    /// An extra port declared with [`HttpdBuilder::listen`].
    pub fn port_of(&self, name: &str) -> u16 {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no port named {name}"))
    }
    /// Plain-TCP target on the main port.
    pub fn target(&self) -> Target {
        Target::plain(self.port())
    }
    /// TLS target on `port` trusting this server's CA.
    pub fn tls_target(&self, port: u16) -> Target {
        Target::tls(port, &self.pki)
    }
    pub fn pki(&self) -> &Pki {
        &self.pki
    }
    pub fn mpm(&self) -> &str {
        &self.mpm
    }
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }
    pub fn config_text(&self) -> &str {
        &self.conf
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn error_log(&self) -> String {
        read(&self.dir_path.join("logs/error.log"))
    }
    pub fn stderr_log(&self) -> String {
        read(&self.dir_path.join("logs/stderr.log"))
    }
    pub fn access_log(&self) -> String {
        read(&self.dir_path.join("logs/access.log"))
    }
    pub fn access_lines(&self) -> Vec<AccessLine> {
        self.access_log()
            .lines()
            .filter_map(AccessLine::parse)
            .collect()
    }
    /// Wait until an access-log line satisfies `pred` (lines are written when a request ends).
    pub fn wait_access(
        &self,
        timeout: Duration,
        pred: impl Fn(&AccessLine) -> bool,
    ) -> Option<AccessLine> {
        crate::wait_for(timeout, || {
            self.access_lines().into_iter().find(|l| pred(l))
        })
    }
    /// Wait until one error-log line contains every one of `needles`; returns that line.
    pub fn wait_error_line(&self, timeout: Duration, needles: &[&str]) -> Option<String> {
        crate::wait_for(timeout, || {
            self.error_log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
    }
    /// Wait until one error-log line from `module` ([`Flavor::log_line_from`]: on 2.2 any
    /// line) contains every one of `needles`; returns that line.
    pub fn wait_module_line(
        &self,
        timeout: Duration,
        module: &str,
        needles: &[&str],
    ) -> Option<String> {
        let f = Flavor::get();
        crate::wait_for(timeout, || {
            self.error_log()
                .lines()
                .find(|l| f.log_line_from(l, module) && needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
    }
    /// Wait until the error log contains `needle`.
    pub fn wait_error_log(&self, timeout: Duration, needle: &str) -> bool {
        crate::wait_for(timeout, || self.error_log().contains(needle).then_some(())).is_some()
    }

    /// PIDs of the parent's children (from /proc).
    pub fn child_pids(&self) -> Vec<u32> {
        let Some(ppid) = self.pid() else {
            return Vec::new();
        };
        children_of(ppid)
    }

    /// Send `sig` to the parent (SIGUSR1: `-k graceful`, SIGWINCH: `-k graceful-stop`); fails
    /// the test if it cannot be sent.
    pub fn signal(&self, sig: i32) {
        let pid = self.pid().expect("httpd is running") as i32;
        assert_eq!(unsafe_kill(pid, sig, false), 0, "kill({pid}, {sig})");
    }

    /// Stop like `apachectl -k stop`: SIGTERM to the parent, wait up to 10 s, then SIGKILL the
    /// whole process group. Returns how long it took.
    pub fn stop(&mut self) -> StopReport {
        if let Some(r) = self.stop_report {
            return r;
        }
        let Some(mut child) = self.child.take() else {
            return StopReport {
                elapsed: Duration::ZERO,
                killed: false,
            };
        };
        let pid = child.id() as i32;
        let start = Instant::now();
        unsafe_kill(pid, libc::SIGTERM, false);
        let mut killed = false;
        let elapsed = loop {
            if let Ok(Some(_)) = child.try_wait() {
                break start.elapsed();
            }
            if start.elapsed() > Duration::from_secs(10) {
                killed = true;
                unsafe_kill(pid, libc::SIGKILL, true);
                let _ = child.wait();
                break start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // Stragglers of the group (children that outlived the parent).
        unsafe_kill(pid, libc::SIGKILL, true);
        let r = StopReport { elapsed, killed };
        eprintln!(
            "wst-e2e: httpd {pid} stopped in {:?}{}",
            r.elapsed,
            if killed { " (SIGKILL needed)" } else { "" }
        );
        self.stop_report = Some(r);
        r
    }

    /// Print the config and logs (done automatically when a test panics).
    pub fn dump(&self) {
        eprintln!(
            "===== httpd dir {} =====\n----- httpd.conf -----\n{}\n----- error.log -----\n{}\n----- stderr -----\n{}\n----- access.log -----\n{}\n=====",
            self.dir_path.display(),
            self.conf,
            self.error_log(),
            self.stderr_log(),
            self.access_log()
        );
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.dump();
        }
        let keep = std::env::var("WST_KEEP").is_ok_and(|v| v == "1");
        if keep {
            if let Some(d) = self.dir.take() {
                eprintln!("wst-e2e: keeping {}", d.keep().display());
            }
        }
    }
}

/// PIDs whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = read(&e.path().join("stat"));
        // comm may contain spaces: parse after the last ')'.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid) {
                out.push(pid);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: (u32, u32, u32)) -> Flavor {
        Flavor {
            httpd: PathBuf::from("/nonexistent/httpd"),
            version,
            version_string: format!(
                "Server version: Apache/{}.{}.{}",
                version.0, version.1, version.2
            ),
            modules_dir: PathBuf::from("/nonexistent/modules"),
            static_modules: vec!["mod_so".into(), "mod_log_config".into()],
            builtin_mpm: (version < (2, 4, 0)).then(|| "prefork".to_string()),
            wst_module: PathBuf::from("/x/mod_proxy_wstunnel.so"),
            wst_is_stock: false,
            strict_request_line: version >= (2, 4, 25),
            async_off: false,
        }
    }

    fn render(f: &Flavor) -> String {
        let dir = Path::new("/tmp/wst-e2e-test-dir");
        let pki = Pki::generate();
        HttpdBuilder::default()
            .config("<Proxy *>\n    {ALLOW_ALL}\n</Proxy>\nProxyPassMatch ^/(a[0-9]{2})$ ws://127.0.0.1:{BACKEND_PORT}/$1")
            .var("BACKEND_PORT", 4321)
            .render(f, dir, &[("PORT".into(), 1234)], "event", &pki)
            .map_err(|(e, _)| e)
            .unwrap()
    }

    #[test]
    fn config_for_httpd_22() {
        let c = render(&fake((2, 2, 15)));
        assert!(
            c.contains("LockFile \"/tmp/wst-e2e-test-dir/run/accept.lock\""),
            "{c}"
        );
        assert!(
            !c.contains("DefaultRuntimeDir") && !c.contains("Mutex "),
            "{c}"
        );
        assert!(!c.contains("LoadModule mpm_"), "{c}");
        assert!(
            c.contains("MaxClients") && !c.contains("MaxRequestWorkers"),
            "{c}"
        );
        assert!(c.contains("<IfModule prefork.c>"), "{c}");
        assert!(c.contains("Order allow,deny\n    Allow from all"), "{c}");
        assert!(!c.contains("Require all granted"), "{c}");
        assert!(
            c.contains("LogLevel debug\n"),
            "2.2 has no per-module LogLevel: {c}"
        );
        assert!(c.contains("Listen 127.0.0.1:1234"), "{c}");
        assert!(
            c.contains("LoadModule proxy_wstunnel_module \"/x/mod_proxy_wstunnel.so\""),
            "{c}"
        );
        // Placeholders substituted, regex braces kept.
        assert!(
            c.contains("ProxyPassMatch ^/(a[0-9]{2})$ ws://127.0.0.1:4321/$1"),
            "{c}"
        );
    }

    #[test]
    fn config_for_httpd_24_refuses_missing_mpm() {
        // The fake modules dir has no mpm_event: rendering must say so rather than start an
        // httpd without an MPM.
        let f = fake((2, 4, 71));
        let pki = Pki::generate();
        let err = HttpdBuilder::default()
            .render(
                &f,
                Path::new("/tmp/x"),
                &[("PORT".into(), 1)],
                "event",
                &pki,
            )
            .unwrap_err();
        assert!(err.0.contains("MPM event not available"), "{}", err.0);
    }

    #[test]
    fn config_for_real_httpd() {
        let f = Flavor::get();
        let pki = Pki::generate();
        let c = HttpdBuilder::default()
            .config("<Proxy *>\n    {ALLOW_ALL}\n</Proxy>\n")
            .render(
                f,
                Path::new("/tmp/x"),
                &[("PORT".into(), 1), ("TLS".into(), 2)],
                "event",
                &pki,
            )
            .unwrap();
        assert!(
            c.contains("Listen 127.0.0.1:1\nListen 127.0.0.1:2\n"),
            "{c}"
        );
        if f.is_24() {
            assert!(c.contains("DefaultRuntimeDir \"/tmp/x/run\""), "{c}");
            assert!(c.contains("LoadModule mpm_event_module"), "{c}");
            assert!(c.contains("Require all granted"), "{c}");
            assert!(c.contains("LogLevel warn proxy_wstunnel:debug"), "{c}");
        }
        assert!(c.contains("%I %O"), "{c}");
    }

    #[test]
    fn async_directive_follows_wst_async_and_the_builder() {
        let pki = Pki::generate();
        let conf = |f: &Flavor, b: HttpdBuilder| {
            b.render(
                f,
                Path::new("/tmp/x"),
                &[("PORT".into(), 1)],
                "prefork",
                &pki,
            )
            .map_err(|(e, _)| e)
            .unwrap()
        };
        let mut f = fake((2, 2, 15));
        assert!(!conf(&f, HttpdBuilder::default()).contains("ProxyWebsocketAsync"));
        f.async_off = true;
        let c = conf(&f, HttpdBuilder::default());
        assert_eq!(c.matches("ProxyWebsocketAsync").count(), 1, "{c}");
        assert!(
            c.contains("LoadModule proxy_wstunnel_module \"/x/mod_proxy_wstunnel.so\"\nProxyWebsocketAsync Off\n"),
            "{c}"
        );
        let c = conf(&f, HttpdBuilder::default().async_tunnels(true));
        assert!(
            c.contains("ProxyWebsocketAsync On\n") && !c.contains("Async Off"),
            "{c}"
        );
        // The stock module does not know the directive.
        f.wst_is_stock = true;
        assert!(!conf(&f, HttpdBuilder::default()).contains("ProxyWebsocketAsync"));
        assert!(!conf(&f, HttpdBuilder::default().async_tunnels(false)).contains("Async"));
        assert!(!async_off_from_env(None) && !async_off_from_env(Some("")));
        assert!(!async_off_from_env(Some("On")) && async_off_from_env(Some(" OFF ")));
        assert!(std::panic::catch_unwind(|| async_off_from_env(Some("of"))).is_err());
    }

    #[test]
    fn log_level_mapping() {
        assert_eq!(
            fake((2, 2, 15)).log_level("warn proxy_wstunnel:debug"),
            "LogLevel debug"
        );
        assert_eq!(fake((2, 2, 15)).log_level("info"), "LogLevel info");
        assert_eq!(
            fake((2, 4, 1)).log_level("warn proxy:trace2"),
            "LogLevel warn proxy:trace2"
        );
    }

    #[test]
    fn mpm_blocks_and_one_child() {
        let (f22, f24) = (fake((2, 2, 15)), fake((2, 4, 62)));
        assert_eq!(
            f22.if_mpm("worker", "StartServers 2\nMaxRequestWorkers 8\n"),
            "<IfModule worker.c>\n  StartServers 2\n  MaxClients 8\n</IfModule>\n"
        );
        assert_eq!(
            f24.if_mpm("prefork", "MaxRequestWorkers 8"),
            "<IfModule mpm_prefork_module>\n  MaxRequestWorkers 8\n</IfModule>\n"
        );
        let c = f22.one_child_tuning();
        assert!(
            c.contains("<IfModule prefork.c>\n  StartServers 1\n"),
            "{c}"
        );
        assert!(c.contains("  ServerLimit 1\n  MaxClients 1\n"), "{c}");
        assert!(
            !c.contains("MaxRequestWorkers") && !c.contains("mpm_"),
            "{c}"
        );
        let c = f24.one_child_tuning();
        assert!(
            c.contains("<IfModule mpm_event_module>\n  StartServers 1\n"),
            "{c}"
        );
        assert!(!c.contains("MaxClients") && !c.contains(".c>"), "{c}");
    }

    #[test]
    fn error_log_lines() {
        let (f22, f24) = (fake((2, 2, 15)), fake((2, 4, 62)));
        let l24 = "[Sat Nov 21 13:18:37.123456 2026] [proxy_wstunnel:debug] [pid 1:tid 2] wst_handler.c(644): [client 127.0.0.1:5] AH02451: serving URL ws://x/";
        let l22 = "[Sat Nov 21 13:18:37 2026] [debug] wst_handler.c(644): [client 127.0.0.1] AH02451: serving URL ws://x/";
        let e22 = "[Sat Nov 21 13:18:37 2026] [error] [client 127.0.0.1] AH02452: failed";
        assert_eq!(f24.log_line_level(l24), Some("debug"));
        assert_eq!(f22.log_line_level(l22), Some("debug"));
        assert_eq!(f22.log_line_level(e22), Some("error"));
        assert!(f24.log_line_from(l24, "proxy_wstunnel"));
        assert!(!f24.log_line_from(l24, "proxy"));
        assert!(f22.log_line_from(l22, "proxy_wstunnel") && f22.log_line_from(e22, "proxy"));
    }

    #[test]
    fn version_parsing() {
        assert_eq!(
            parse_version("Server version: Apache/2.4.71 (Debian)"),
            Some((2, 4, 71))
        );
        assert_eq!(
            parse_version("Server version: Apache/2.2.15 (Unix)"),
            Some((2, 2, 15))
        );
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn access_line_parsing() {
        let l = AccessLine::parse(
            "127.0.0.1 - - [21/Nov/2026:12:59:18 +0000] \"GET /ws/echo HTTP/1.1\" 101 - 1048904 1048717",
        )
        .unwrap();
        assert_eq!(l.request, "GET /ws/echo HTTP/1.1");
        assert_eq!((l.status, l.bytes_in, l.bytes_out), (101, 1048904, 1048717));
        assert!(AccessLine::parse("garbage").is_none());
    }
}
