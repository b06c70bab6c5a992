//! Plots of a run, each written as SVG and PNG with plotters: the latency CDF per tier and
//! time series of arrival rate, cold starts and warm instances.
//!
//! Text needs a TrueType font. Nothing is bundled: the first of a few usual system fonts
//! found (Debian's `fonts-dejavu-core` is the first) is loaded once; without one the plots
//! are drawn without text, which keeps report generation working on a bare machine.

use super::Report;
use crate::sim::Outcome;
use crate::sim::stats::Tier;
use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// The plots: (title, file stem).
pub const FILES: [(&str, &str); 4] = [
    ("Latency CDF per tier", "latency-cdf"),
    ("Arrival, local and forwarded rate", "rate"),
    ("Cold starts per second", "cold-starts"),
    ("Warm instances", "warm-instances"),
];

/// The keep-alive comparison's plot (with a `[keepalive]` section): the CDF over
/// applications of their cold-start share, one line per policy (the paper's Figure 15).
pub const KEEPALIVE: (&str, &str) = (
    "Application cold-start % CDF per keep-alive policy",
    "keepalive-cdf",
);

const SIZE: (u32, u32) = (960, 540);

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Whether text can be drawn: registers the first font found, once per process.
pub fn has_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_PATHS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps fonts for the life of the process; this runs once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// One line of a chart.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One chart.
struct Chart {
    title: &'static str,
    x_label: &'static str,
    y_label: &'static str,
    /// x values are log10 of the real value.
    log_x: bool,
    lines: Vec<Line>,
}

/// Writes every plot of [`FILES`] as SVG and PNG into `dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_all(dir: &Path, report: &Report, outcome: &Outcome) -> anyhow::Result<()> {
    let text = has_font();
    let mut charts = charts(report, outcome);
    let mut files = FILES.to_vec();
    if let Some(rows) = &report.keepalive {
        charts.push(keepalive_chart(rows));
        files.push(KEEPALIVE);
    }
    for (chart, (_, stem)) in charts.iter().zip(files) {
        let svg = dir.join(format!("{stem}.svg"));
        draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart, text)?;
        let png = dir.join(format!("{stem}.png"));
        draw(
            BitMapBackend::new(&png, SIZE).into_drawing_area(),
            chart,
            text,
        )?;
    }
    Ok(())
}

fn charts(report: &Report, outcome: &Outcome) -> Vec<Chart> {
    let cdf = |tier: Tier| {
        let h = &outcome.recorder.latency[tier.index()];
        if h.is_empty() {
            return Vec::new();
        }
        (0..=400)
            .map(|i| {
                let q = f64::from(i) / 400.0;
                let ms = h.value_at_quantile(q) as f64 / 1000.0;
                (ms.max(1e-3).log10(), q)
            })
            .collect()
    };
    let series = |f: fn(&super::SeriesPoint) -> f64| -> Vec<(f64, f64)> {
        report.series.iter().map(|p| (p.t_s, f(p))).collect()
    };
    vec![
        Chart {
            title: "Latency CDF per tier",
            x_label: "latency (ms, log scale)",
            y_label: "fraction of invocations",
            log_x: true,
            lines: vec![
                Line {
                    label: "pop",
                    color: BLUE,
                    points: cdf(Tier::Pop),
                },
                Line {
                    label: "region",
                    color: RED,
                    points: cdf(Tier::Region),
                },
            ],
        },
        Chart {
            title: "Invocations per second",
            x_label: "time (s)",
            y_label: "per second",
            log_x: false,
            lines: vec![
                Line {
                    label: "arrivals",
                    color: BLACK,
                    points: series(|p| p.rate),
                },
                Line {
                    label: "local",
                    color: BLUE,
                    points: series(|p| p.local_rate),
                },
                Line {
                    label: "forwarded",
                    color: RED,
                    points: series(|p| p.forward_rate),
                },
                Line {
                    label: "refused",
                    color: MAGENTA,
                    points: series(|p| p.refused_rate),
                },
            ],
        },
        Chart {
            title: "Cold starts per second",
            x_label: "time (s)",
            y_label: "per second",
            log_x: false,
            lines: vec![Line {
                label: "cold starts",
                color: RED,
                points: series(|p| p.cold_start_rate),
            }],
        },
        Chart {
            title: "Warm instances",
            x_label: "time (s)",
            y_label: "instances",
            log_x: false,
            lines: vec![
                Line {
                    label: "pop",
                    color: BLUE,
                    points: series(|p| p.warm_pop as f64),
                },
                Line {
                    label: "region",
                    color: RED,
                    points: series(|p| p.warm_region as f64),
                },
            ],
        },
    ]
}

fn keepalive_chart(rows: &[crate::keepalive::KeepAliveRow]) -> Chart {
    const COLORS: [RGBColor; 3] = [RED, BLUE, GREEN];
    let lines = rows
        .iter()
        .zip(crate::keepalive::evaluate::POLICIES)
        .zip(COLORS)
        .map(|((r, label), color)| {
            let n = r.per_app_cold_pct.len().max(1) as f64;
            // A step CDF: fraction of apps at or below each app's cold-start share.
            let points = std::iter::once((0.0, 0.0))
                .chain(
                    r.per_app_cold_pct
                        .iter()
                        .enumerate()
                        .map(|(i, &pct)| (pct, (i + 1) as f64 / n)),
                )
                .chain(std::iter::once((100.0, 1.0)))
                .collect();
            Line {
                label,
                color,
                points,
            }
        })
        .collect();
    Chart {
        title: KEEPALIVE.0,
        x_label: "application cold starts (% of its invocations)",
        y_label: "fraction of applications",
        log_x: false,
        lines,
    }
}

fn bounds(chart: &Chart) -> ((f64, f64), (f64, f64)) {
    let pts = chart.lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    ((x0, x1), (0.0, if y1 > 0.0 { y1 * 1.05 } else { 1.0 }))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    chart: &Chart,
    text: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing {}: {e}", chart.title);
    root.fill(&WHITE).map_err(err)?;
    let ((x0, x1), (y0, y1)) = bounds(chart);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(chart.title, ("sans-serif", 22))
            .x_label_area_size(44)
            .y_label_area_size(64);
    }
    let mut ctx = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?;
    let log_x = chart.log_x;
    let format_x = move |v: &f64| {
        if log_x {
            let ms = 10f64.powf(*v);
            if ms >= 10.0 {
                format!("{ms:.0}")
            } else {
                format!("{ms:.2}")
            }
        } else {
            format!("{v:.0}")
        }
    };
    let format_y = move |v: &f64| {
        if y1 > 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    let mut mesh = ctx.configure_mesh();
    if text {
        mesh.x_desc(chart.x_label)
            .y_desc(chart.y_label)
            .x_label_formatter(&format_x)
            .y_label_formatter(&format_y)
            .label_style(("sans-serif", 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    for line in &chart.lines {
        let color = line.color;
        let series = ctx
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            series.label(line.label).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
    }
    if text {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
