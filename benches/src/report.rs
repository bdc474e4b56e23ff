//! Samples, medians, per-run ratios, the Markdown table and the PNG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const OURS: &str = "ours";
pub const STOCK_DEFAULT: &str = "stock-default";
pub const STOCK_LEGACY: &str = "stock-legacy";
pub const DIRECT: &str = "direct";
pub const COLUMNS: [&str; 7] = [OURS, STOCK_DEFAULT, STOCK_LEGACY, "nginx", "haproxy", DIRECT, "ours-alt"];

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
    m("tp_wss_64k", "Throughput wss://, 1 conn × 64 KiB msgs", "MB/s", true),
    m("tp_wss_4k", "Throughput wss://, 8 conns × 4 KiB msgs", "MB/s", true),
    m("cpu_ws_64k", "Proxy CPU per GB, ws:// 64 KiB", "s/GB", false),
    m("cpu_ws_4k", "Proxy CPU per GB, ws:// 4 KiB", "s/GB", false),
    m("cpu_wss_64k", "Proxy CPU per GB, wss:// 64 KiB", "s/GB", false),
    m("cpu_wss_4k", "Proxy CPU per GB, wss:// 4 KiB", "s/GB", false),
    m("mem_idle", "Memory per open idle tunnel", "KiB", false),
    m("max_tunnels", "Concurrent tunnels held", "tunnels", true),
];

const fn m(id: &'static str, label: &'static str, unit: &'static str, hb: bool) -> Metric {
    Metric {
        id,
        label,
        unit,
        higher_better: hb,
    }
}

/// A target the issue sets, as a ratio of ours to a reference.
pub struct Goal {
    pub metric: &'static str,
    /// STOCK (both stock paths) or DIRECT.
    pub against: &'static str,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

pub const STOCK: &str = "stock";

pub const GOALS: &[Goal] = &[
    g("rt1_rps", STOCK, Some(1.1), None),
    g("rt50_rps", STOCK, Some(1.1), None),
    g("rt1_p99", STOCK, None, Some(1.0)),
    g("rt50_p99", STOCK, None, Some(1.0)),
    g("tp_ws_64k", STOCK, Some(1.3), None),
    g("tp_ws_4k", STOCK, Some(1.3), None),
    g("tp_wss_64k", STOCK, Some(1.3), None),
    g("tp_wss_4k", STOCK, Some(1.3), None),
    g("tp_ws_64k", DIRECT, Some(0.8), None),
    g("tp_ws_4k", DIRECT, Some(0.8), None),
    g("cpu_ws_64k", STOCK, None, Some(0.7)),
    g("cpu_ws_4k", STOCK, None, Some(0.7)),
    g("cpu_wss_64k", STOCK, None, Some(0.7)),
    g("cpu_wss_4k", STOCK, None, Some(0.7)),
    g("mem_idle", STOCK, None, Some(1.0)),
];

const fn g(metric: &'static str, against: &'static str, min: Option<f64>, max: Option<f64>) -> Goal {
    Goal {
        metric,
        against,
        min,
        max,
    }
}

/// (metric, target) → [(run, value)].
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<(String, String), Vec<(usize, f64)>>,
    /// Capacity figures that hit the configured cap (shown as "≥").
    pub capped: BTreeMap<String, bool>,
    pub failures: Vec<String>,
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

    pub fn values(&self, metric: &str, target: &str) -> Vec<f64> {
        self.samples
            .get(&(metric.to_string(), target.to_string()))
            .map(|v| v.iter().map(|x| x.1).collect())
            .unwrap_or_default()
    }

    /// ours ÷ reference, one ratio per run in which both were measured.
    pub fn ratios(&self, metric: &str, reference: &str) -> Vec<f64> {
        let key = |t: &str| (metric.to_string(), t.to_string());
        let (Some(a), Some(b)) = (self.samples.get(&key(OURS)), self.samples.get(&key(reference)))
        else {
            return vec![];
        };
        a.iter()
            .filter_map(|(r, x)| {
                b.iter()
                    .find(|(r2, _)| r2 == r)
                    .filter(|(_, y)| *y > 0.0)
                    .map(|(_, y)| x / y)
            })
            .collect()
    }

    pub fn ratio(&self, metric: &str, reference: &str) -> Option<Spread> {
        spread(&self.ratios(metric, reference))
    }

    /// Goal verdict: Some(true/false) per reference, None if unmeasured.
    pub fn goal(&self, g: &Goal) -> Vec<(&'static str, Option<Spread>, Option<bool>)> {
        let refs: &[&'static str] = if g.against == STOCK {
            &[STOCK_DEFAULT, STOCK_LEGACY]
        } else {
            &[DIRECT]
        };
        refs.iter()
            .map(|r| {
                let s = self.ratio(g.metric, r);
                let ok = s.as_ref().map(|s| {
                    g.min.is_none_or(|m| s.median >= m) && g.max.is_none_or(|m| s.median <= m)
                });
                (*r, s, ok)
            })
            .collect()
    }
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

impl Results {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let cols: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|c| self.samples.keys().any(|(_, t)| t == c))
            .collect();
        let _ = writeln!(
            t,
            "| Metric | unit | {} | ours ÷ stock-default | ours ÷ stock-legacy | ours ÷ direct |",
            cols.join(" | ")
        );
        let _ = writeln!(t, "|---|---|{}---|---|---|", "---:|".repeat(cols.len()));
        for m in METRICS {
            let mut row = format!("| {} | {} |", m.label, m.unit);
            let mut any = false;
            for &c in &cols {
                let capped = m.id == "max_tunnels" && self.capped.get(c).copied().unwrap_or(false);
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
            let d = if m.id.starts_with("tp_ws_") || m.id.starts_with("rt") {
                ratio_cell(&self.ratio(m.id, DIRECT))
            } else {
                "–".into()
            };
            let _ = writeln!(
                row,
                " {} | {} | {} |",
                ratio_cell(&self.ratio(m.id, STOCK_DEFAULT)),
                ratio_cell(&self.ratio(m.id, STOCK_LEGACY)),
                d
            );
            t.push_str(&row);
        }
        t
    }

    pub fn goals_table(&self) -> (String, usize, usize) {
        let mut t = String::from("| Target | vs | measured (median of per-run ratios) | met |\n|---|---|---|---|\n");
        let (mut met, mut total) = (0, 0);
        for g in GOALS {
            let label = METRICS.iter().find(|m| m.id == g.metric).map_or(g.metric, |m| m.label);
            let want = match (g.min, g.max) {
                (Some(a), _) => format!("≥ {a}×"),
                (_, Some(b)) => format!("≤ {b}×"),
                _ => String::new(),
            };
            for (r, s, ok) in self.goal(g) {
                total += 1;
                let verdict = match ok {
                    Some(true) => {
                        met += 1;
                        "yes"
                    }
                    Some(false) => "**no**",
                    None => "not measured",
                };
                let _ = writeln!(t, "| {label} {want} | {r} | {} | {verdict} |", ratio_cell(&s));
            }
        }
        (t, met, total)
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
    let mut rows: Vec<Row> = Vec::new();
    for m in METRICS {
        let sd = r.ratio(m.id, STOCK_DEFAULT);
        let sl = r.ratio(m.id, STOCK_LEGACY);
        if sd.is_none() && sl.is_none() {
            continue;
        }
        let goal = GOALS
            .iter()
            .find(|g| g.metric == m.id && g.against == STOCK)
            .and_then(|g| g.min.or(g.max));
        let arrow = if m.higher_better { "↑" } else { "↓" };
        rows.push(Row {
            label: format!("{} {arrow}", m.label),
            bars: vec![(sd, RGBColor(31, 119, 180)), (sl, RGBColor(255, 127, 14))],
            goal,
        });
    }
    let max_x = rows
        .iter()
        .flat_map(|r| r.bars.iter().filter_map(|b| b.0.as_ref().map(|s| s.max)))
        .fold(2.0f64, f64::max)
        .min(4.0)
        * 1.08;
    let n = rows.len().max(1);
    let h = 180 + 46 * n as u32;
    let root = BitMapBackend::new(path, (1200, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut ch = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_bottom(56)
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
        .x_desc("ratio ours ÷ stock (↑: higher is better, ↓: lower is better)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, row) in rows.iter().enumerate() {
        let y0 = (n - 1 - i) as f64;
        for (j, (s, col)) in row.bars.iter().enumerate() {
            let Some(s) = s else { continue };
            let top = y0 + 0.85 - j as f64 * 0.35;
            let bot = top - 0.3;
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
                format!("{:.2}×", s.median),
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
    // Legend.
    let lx = 200;
    let ly = h as i32 - 22;
    for (k, (name, col)) in [
        ("ours ÷ stock-default (mod_proxy_http tunnel)", RGBColor(31, 119, 180)),
        ("ours ÷ stock-legacy (FallbackToProxyHttp Off)", RGBColor(255, 127, 14)),
        ("target", RED),
    ]
    .iter()
    .enumerate()
    {
        let x = lx + k as i32 * 380;
        root.draw(&Rectangle::new([(x, ly - 6), (x + 14, ly + 6)], col.filled()))
            .map_err(|e| e.to_string())?;
        root.draw(&Text::new(name.to_string(), (x + 20, ly - 8), ("sans-serif", 14)))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
