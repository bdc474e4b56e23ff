//! Samples, medians, per-run ratios, the Markdown table and the PNG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const OURS: &str = "ours";
pub const ASYNC: &str = "ours-async";
pub const STOCK_DEFAULT: &str = "stock-default";
pub const STOCK_LEGACY: &str = "stock-legacy";
pub const DIRECT: &str = "direct";
/// A pseudo-target: per round, the better of nginx and HAProxy.
pub const BEST_PEER: &str = "best of nginx/HAProxy";
pub const COLUMNS: [&str; 9] = [ASYNC, LIMITS, OURS, STOCK_DEFAULT, STOCK_LEGACY, "nginx", "haproxy", DIRECT, "ours-alt"];
/// ours-async with every limit of issue 15 set (none reached).
pub const LIMITS: &str = "ours-limits";

#[derive(Clone, Debug)]
pub struct Metric {
    pub id: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_better: bool,
}

pub const METRICS: &[Metric] = &[
    m("rt1_rps", "Echo round trips/s, 1 conn, 64 B", "RT/s", true),
    m("rt1_p50", "p50 latency, 1 conn", "µs", false),
    m("rt1_p99", "p99 latency, 1 conn", "µs", false),
    m("rt50_rps", "Echo round trips/s, 50 conns, 64 B", "RT/s", true),
    m("rt50_p50", "p50 latency, 50 conns", "µs", false),
    m("rt50_p99", "p99 latency, 50 conns", "µs", false),
    m("tp_ws_64k", "Throughput ws://, 1 conn × 64 KiB msgs", "MB/s", true),
    m("tp_ws_4k", "Throughput ws://, 8 conns × 4 KiB msgs", "MB/s", true),
    m("cpu_ws_64k", "Proxy CPU per GB, ws:// 64 KiB", "s/GB", false),
    m("cpu_ws_4k", "Proxy CPU per GB, ws:// 4 KiB", "s/GB", false),
    m("mem_idle", "Memory per open idle tunnel", "KiB", false),
    m("climb_event", "Idle tunnels held, event 6×25 (MaxRequestWorkers 150)", "tunnels", true),
    m("climb_prefork", "Idle tunnels held, prefork 256", "tunnels", true),
    m("climb_event_mem", "RSS per tunnel at the event climb's top", "KiB", false),
    m("climb_prefork_mem", "RSS per tunnel at the prefork climb's top", "KiB", false),
    // TLS apart: wss:// tunnels stay on the threaded path in ours.
    m("tp_wss_64k", "TLS: throughput wss://, 1 conn × 64 KiB msgs", "MB/s", true),
    m("tp_wss_4k", "TLS: throughput wss://, 8 conns × 4 KiB msgs", "MB/s", true),
    m("cpu_wss_64k", "TLS: proxy CPU per GB, wss:// 64 KiB", "s/GB", false),
    m("cpu_wss_4k", "TLS: proxy CPU per GB, wss:// 4 KiB", "s/GB", false),
];

const fn m(id: &'static str, label: &'static str, unit: &'static str, hb: bool) -> Metric {
    Metric {
        id,
        label,
        unit,
        higher_better: hb,
    }
}

pub fn metric(id: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.id == id)
}

/// A target of issue 11: `num` ÷ `den` within [min, max], or, with `den`
/// None, `num`'s own figure at least `min`.
pub struct Goal {
    pub metric: &'static str,
    pub num: &'static str,
    pub den: Option<&'static str>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

pub const GOALS: &[Goal] = &[
    g("climb_event", ASYNC, None, Some(20_000.0), None),
    g("climb_prefork", ASYNC, None, Some(10_000.0), None),
    g("mem_idle", ASYNC, Some("haproxy"), None, Some(1.0)),
    g("rt50_rps", ASYNC, Some(BEST_PEER), Some(1.0), None),
    g("rt50_p99", ASYNC, Some(BEST_PEER), None, Some(1.0)),
    g("tp_ws_64k", ASYNC, Some(OURS), Some(1.0), None),
    g("tp_ws_4k", ASYNC, Some(OURS), Some(1.0), None),
    g("cpu_ws_64k", ASYNC, Some(OURS), None, Some(1.0)),
    g("cpu_ws_4k", ASYNC, Some(OURS), None, Some(1.0)),
];

const fn g(metric: &'static str, num: &'static str, den: Option<&'static str>, min: Option<f64>, max: Option<f64>) -> Goal {
    Goal { metric, num, den, min, max }
}

/// One climb, for the details table.
#[derive(Clone, Debug, Default)]
pub struct ClimbRow {
    #[allow(dead_code)]
    pub metric: String,
    pub target: String,
    pub mpm: String,
    pub cap: usize,
    pub held: usize,
    pub stopped: Option<String>,
    pub secs: f64,
    pub echo_bad: usize,
    pub kib_per: f64,
    /// Descriptors of all the proxy's processes: before, at the top, after
    /// every tunnel closed.
    pub fds: (usize, usize, usize),
    /// The most loaded processes' descriptor counts at the top.
    pub spread: Vec<usize>,
    /// (CLOSE_WAIT sockets, backend connections) left after the close.
    pub leftover: (usize, usize),
    pub log_errors: usize,
}

/// (metric, target) → [(run, value)].
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<(String, String), Vec<(usize, f64)>>,
    /// "metric:target" figures that hit the configured cap (shown as "≥").
    pub capped: BTreeMap<String, bool>,
    pub failures: Vec<String>,
    pub climbs: Vec<ClimbRow>,
    /// Whether ours-async was measured, and why (not).
    pub async_note: String,
    /// Kernel and process limits seen at the start.
    pub limits: Vec<(String, String)>,
}

pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn spread(v: &[f64]) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: s[0],
        max: s[n - 1],
        n,
    })
}

impl Results {
    pub fn add(&mut self, metric: &str, target: &str, run: usize, v: f64) {
        if v.is_finite() {
            self.samples
                .entry((metric.to_string(), target.to_string()))
                .or_default()
                .push((run, v));
        }
    }

    /// (run, value) samples; BEST_PEER is, per run, the better of nginx
    /// and HAProxy.
    pub fn runs(&self, metric: &str, target: &str) -> Vec<(usize, f64)> {
        if target == BEST_PEER {
            let hb = metric_higher_better(metric);
            let a = self.runs(metric, "nginx");
            let b = self.runs(metric, "haproxy");
            let mut out = Vec::new();
            for (r, x) in &a {
                let v = match b.iter().find(|(r2, _)| r2 == r) {
                    Some((_, y)) if hb => x.max(*y),
                    Some((_, y)) => x.min(*y),
                    None => *x,
                };
                out.push((*r, v));
            }
            for (r, y) in &b {
                if !a.iter().any(|(r2, _)| r2 == r) {
                    out.push((*r, *y));
                }
            }
            return out;
        }
        self.samples.get(&(metric.to_string(), target.to_string())).cloned().unwrap_or_default()
    }

    pub fn values(&self, metric: &str, target: &str) -> Vec<f64> {
        self.runs(metric, target).into_iter().map(|x| x.1).collect()
    }

    /// num ÷ den, one ratio per run in which both were measured.
    pub fn ratios_of(&self, metric: &str, num: &str, den: &str) -> Vec<f64> {
        let a = self.runs(metric, num);
        let b = self.runs(metric, den);
        a.iter()
            .filter_map(|(r, x)| b.iter().find(|(r2, _)| r2 == r).filter(|(_, y)| *y > 0.0).map(|(_, y)| x / y))
            .collect()
    }

    pub fn ratio_of(&self, metric: &str, num: &str, den: &str) -> Option<Spread> {
        spread(&self.ratios_of(metric, num, den))
    }

    pub fn has(&self, target: &str) -> bool {
        self.samples.keys().any(|(_, t)| t == target)
    }

    /// Goal verdict: the measured ratio (or figure) and met or not (None:
    /// not measured).
    pub fn goal(&self, g: &Goal) -> (Option<Spread>, Option<bool>) {
        let s = match g.den {
            Some(d) => self.ratio_of(g.metric, g.num, d),
            None => spread(&self.values(g.metric, g.num)),
        };
        let ok = s.as_ref().map(|s| g.min.is_none_or(|m| s.median >= m) && g.max.is_none_or(|m| s.median <= m));
        (s, ok)
    }
}

fn metric_higher_better(id: &str) -> bool {
    metric(id).is_none_or(|m| m.higher_better)
}

fn sig(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.0}", v)
    } else if a >= 100.0 {
        format!("{:.0}", v)
    } else if a >= 10.0 {
        format!("{:.1}", v)
    } else if a >= 1.0 {
        format!("{:.2}", v)
    } else {
        format!("{:.3}", v)
    }
}

fn cell(s: &Spread, capped: bool) -> String {
    let pre = if capped { "≥" } else { "" };
    if s.n <= 1 || s.median == 0.0 {
        return format!("{pre}{}", sig(s.median));
    }
    let pct = (s.max - s.min) / 2.0 / s.median.abs() * 100.0;
    format!("{pre}{} ±{:.0}%", sig(s.median), pct)
}

fn ratio_cell(s: &Option<Spread>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.n <= 1 => format!("{:.2}×", s.median),
        Some(s) => format!("{:.2}× ({:.2}–{:.2})", s.median, s.min, s.max),
    }
}

/// The ratio columns: (numerator, denominator, header).
fn ratio_columns(r: &Results) -> Vec<(&'static str, &'static str, String)> {
    let mut v = Vec::new();
    if r.has(ASYNC) {
        v.push((ASYNC, OURS, "ours-async ÷ ours (threaded)".to_string()));
        v.push((ASYNC, BEST_PEER, "ours-async ÷ best of nginx/HAProxy".to_string()));
    } else {
        v.push((OURS, BEST_PEER, "ours ÷ best of nginx/HAProxy".to_string()));
    }
    v.push((OURS, STOCK_DEFAULT, "ours (threaded) ÷ stock-default".to_string()));
    if r.has(LIMITS) {
        v.push((LIMITS, ASYNC, "ours-limits ÷ ours-async".to_string()));
    }
    v
}

impl Results {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let cols: Vec<&str> = COLUMNS.iter().copied().filter(|c| self.has(c)).collect();
        let rc = ratio_columns(self);
        let head: Vec<String> = cols.iter().map(|c| if *c == OURS && self.has(ASYNC) { "ours (threaded)".to_string() } else { c.to_string() }).collect();
        let _ = writeln!(
            t,
            "| Metric | unit | {} | {} |",
            head.join(" | "),
            rc.iter().map(|x| x.2.as_str()).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(t, "|---|---|{}{}", "---:|".repeat(cols.len()), "---|".repeat(rc.len()));
        for m in METRICS {
            let mut row = format!("| {} | {} |", m.label, m.unit);
            let mut any = false;
            for &c in &cols {
                let capped = self.capped.get(&format!("{}:{c}", m.id)).copied().unwrap_or(false);
                match spread(&self.values(m.id, c)) {
                    Some(s) => {
                        any = true;
                        let _ = write!(row, " {} |", cell(&s, capped));
                    }
                    None => row.push_str(" – |"),
                }
            }
            if !any {
                continue;
            }
            for (a, b, _) in &rc {
                let _ = write!(row, " {} |", ratio_cell(&self.ratio_of(m.id, a, b)));
            }
            row.push('\n');
            t.push_str(&row);
        }
        t
    }

    pub fn goals_table(&self) -> (String, usize, usize) {
        let mut t = String::from("| Target (issue 11) | measured | met |\n|---|---|---|\n");
        let (mut met, mut total) = (0, 0);
        for g in GOALS {
            let label = metric(g.metric).map_or(g.metric, |m| m.label);
            let want = match (g.den, g.min, g.max) {
                (None, Some(a), _) => format!("{} ≥ {a:.0}", g.num),
                (Some(d), Some(a), _) => format!("{} ÷ {d} ≥ {a}×", g.num),
                (Some(d), _, Some(b)) => format!("{} ÷ {d} ≤ {b}×", g.num),
                _ => String::new(),
            };
            let (s, ok) = self.goal(g);
            // A climb capped below the target (BENCH_QUICK, BENCH_CLIMB_*)
            // says nothing either way.
            let capped_low = g.den.is_none()
                && self.capped.get(&format!("{}:{}", g.metric, g.num)).copied().unwrap_or(false)
                && s.as_ref().is_some_and(|s| g.min.is_some_and(|m| s.median < m));
            if capped_low {
                let shown = s.as_ref().map_or("–".to_string(), |s| cell(s, true));
                let _ = writeln!(t, "| {label}: {want} | {shown} | not measured (the climb's cap is below the target) |");
                continue;
            }
            total += 1;
            let verdict = match ok {
                Some(true) => {
                    met += 1;
                    "yes"
                }
                Some(false) => "**no**",
                None => "not measured",
            };
            let shown = match (&s, g.den) {
                (None, _) => "–".to_string(),
                (Some(s), None) => {
                    let capped = self.capped.get(&format!("{}:{}", g.metric, g.num)).copied().unwrap_or(false);
                    cell(s, capped)
                }
                (Some(_), Some(_)) => ratio_cell(&s),
            };
            let _ = writeln!(t, "| {label}: {want} | {shown} | {verdict} |");
        }
        (t, met, total)
    }

    /// The climbs, one row each.
    pub fn climb_table(&self) -> String {
        if self.climbs.is_empty() {
            return String::new();
        }
        let mut t = String::from("| Climb | target | cap | held | stopped by | s | failed echo after hold | RSS/tunnel KiB | fds before → top → after close | top processes' fds | CLOSE_WAIT, backend conns left | error-log lines |\n|---|---|---:|---:|---|---:|---:|---:|---|---|---|---:|\n");
        for c in &self.climbs {
            let stop = c.stopped.as_deref().map_or("cap reached".to_string(), |s| s.chars().take(90).collect::<String>().replace('|', "/"));
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} → {} → {} | {:?} | {}, {} | {} |",
                c.mpm, c.target, c.cap, c.held, stop, c.secs, c.echo_bad, sig(c.kib_per), c.fds.0, c.fds.1, c.fds.2, c.spread, c.leftover.0, c.leftover.1, c.log_errors
            );
        }
        t
    }

    /// Samples back from [`raw_tsv`](Self::raw_tsv)'s text.
    pub fn from_tsv(t: &str) -> Results {
        let mut r = Results::default();
        for l in t.lines().skip(1) {
            let f: Vec<&str> = l.split('\t').collect();
            if let (Some(m), Some(tg), Some(run), Some(v)) = (f.first(), f.get(1), f.get(2), f.get(3)) {
                if let (Ok(run), Ok(v)) = (run.parse(), v.parse()) {
                    r.add(m, tg, run, v);
                }
            }
        }
        r
    }

    pub fn raw_tsv(&self) -> String {
        let mut s = String::from("metric\ttarget\trun\tvalue\n");
        for ((m, t), v) in &self.samples {
            for (r, x) in v {
                let _ = writeln!(s, "{m}\t{t}\t{r}\t{x}");
            }
        }
        s
    }
}

/// Horizontal bars: ours ÷ stock-default and ours ÷ stock-legacy per
/// metric (median of per-run ratios, whiskers min–max), with the target.
pub fn chart(r: &Results, path: &Path, title: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .map_err(|e| format!("font DejaVuSans.ttf (fonts-dejavu-core): {e}"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| "bad font".to_string())?;

    struct Row {
        label: String,
        bars: Vec<(Option<Spread>, RGBColor)>,
        goal: Option<f64>,
    }
    let palette = [RGBColor(44, 160, 44), RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(148, 103, 189)];
    let rc = ratio_columns(r);
    let mut legend: Vec<(String, RGBColor)> = rc.iter().enumerate().map(|(i, c)| (c.2.clone(), palette[i % 4])).collect();
    let goal_col = palette[3];
    let mut any_abs = false;
    let mut rows: Vec<Row> = Vec::new();
    for m in METRICS {
        let mut bars: Vec<(Option<Spread>, RGBColor)> =
            rc.iter().enumerate().map(|(i, (a, b, _))| (r.ratio_of(m.id, a, b), palette[i % 4])).collect();
        // Absolute targets (tunnels held): the figure ÷ the target.
        let mut goal = None;
        for g in GOALS.iter().filter(|g| g.metric == m.id) {
            match g.den {
                None => {
                    if let (Some(s), Some(min)) = (spread(&r.values(m.id, g.num)), g.min) {
                        bars.push((Some(Spread { median: s.median / min, min: s.min / min, max: s.max / min, n: s.n }), goal_col));
                        any_abs = true;
                        goal = Some(1.0);
                    }
                }
                Some(d) => {
                    if rc.iter().any(|(a, b, _)| *a == g.num && *b == d) {
                        goal = g.min.or(g.max);
                    }
                }
            }
        }
        if bars.iter().all(|b| b.0.is_none()) {
            continue;
        }
        let arrow = if m.higher_better { "↑" } else { "↓" };
        rows.push(Row { label: format!("{} {arrow}", m.label), bars, goal });
    }
    if any_abs {
        legend.push(("ours-async ÷ issue 11's tunnel target".into(), goal_col));
    }
    legend.push(("target".into(), RED));
    let max_x = rows
        .iter()
        .flat_map(|r| r.bars.iter().filter_map(|b| b.0.as_ref().map(|s| s.max)))
        .fold(2.0f64, f64::max)
        .min(4.0)
        * 1.08;
    let n = rows.len().max(1);
    let nb = rows.iter().map(|r| r.bars.len()).max().unwrap_or(1).max(2);
    let bar_h = 0.84 / nb as f64;
    let h = 200 + (23 * nb as u32).max(46) * n as u32;
    let root = BitMapBackend::new(path, (1200, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut ch = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_bottom(80)
        .x_label_area_size(40)
        .y_label_area_size(400)
        .build_cartesian_2d(0.0..max_x, 0.0..n as f64)
        .map_err(|e| e.to_string())?;
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    ch.configure_mesh()
        .disable_y_mesh()
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let f = y.fract();
            if (f - 0.5).abs() < 0.01 {
                let i = n - 1 - y.floor() as usize;
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("ratio (↑: higher is better, ↓: lower is better; bars past the edge are labelled)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, row) in rows.iter().enumerate() {
        let y0 = (n - 1 - i) as f64;
        for (j, (s, col)) in row.bars.iter().enumerate() {
            let Some(s) = s else { continue };
            let top = y0 + 0.92 - j as f64 * bar_h;
            let bot = top - bar_h * 0.85;
            ch.draw_series(std::iter::once(Rectangle::new(
                [(0.0, bot), (s.median.min(max_x), top)],
                col.filled(),
            )))
            .map_err(|e| e.to_string())?;
            let mid = (top + bot) / 2.0;
            ch.draw_series(std::iter::once(PathElement::new(
                vec![(s.min.min(max_x), mid), (s.max.min(max_x), mid)],
                BLACK.stroke_width(1),
            )))
            .map_err(|e| e.to_string())?;
            ch.draw_series(std::iter::once(Text::new(
                if s.median >= 10.0 { format!("{:.0}×", s.median) } else { format!("{:.2}×", s.median) },
                ((s.max.min(max_x) + max_x * 0.01).min(max_x * 0.93), mid + 0.1),
                ("sans-serif", 13),
            )))
            .map_err(|e| e.to_string())?;
        }
        if let Some(gv) = row.goal {
            ch.draw_series(std::iter::once(PathElement::new(
                vec![(gv, y0 + 0.05), (gv, y0 + 0.95)],
                RED.stroke_width(3),
            )))
            .map_err(|e| e.to_string())?;
        }
    }
    ch.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, 0.0), (1.0, n as f64)],
        BLACK.stroke_width(1),
    )))
    .map_err(|e| e.to_string())?;
    // Legend, two per line.
    let lines = legend.len().div_ceil(2) as i32;
    for (k, (name, col)) in legend.iter().enumerate() {
        let x = 200 + (k as i32 % 2) * 480;
        let y = h as i32 - 16 - (lines - 1 - k as i32 / 2) * 20;
        root.draw(&Rectangle::new([(x, y - 6), (x + 14, y + 6)], col.filled())).map_err(|e| e.to_string())?;
        root.draw(&Text::new(name.to_string(), (x + 20, y - 8), ("sans-serif", 14))).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
