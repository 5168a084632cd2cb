//! The scaling plot: guest time of add, online, offline and remove against the size added, one
//! line per granule (and memmap mode: deferred dashed), as an SVG.
//!
//! Drawn with `plotters`' SVG backend and no font library: without its `ttf` feature plotters
//! estimates text extents itself and the SVG carries plain `<text>` elements that the viewer
//! renders, so the driver builds on a bare machine (no fontconfig/freetype).
//! Both axes are logarithmic when the sizes span a decade or more (the size axis in powers of two,
//! the time axis in powers of ten), linear otherwise (sizes in GiB).

use super::record::{GuestRecord, MemmapInit};
use mm::size::Size;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no in-guest records to plot")]
    Empty,
    #[error("drawing the plot: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// The four timed operations: name and the record's time in µs.
type Op = (&'static str, fn(&GuestRecord) -> f64);
const OPS: [Op; 4] = [
    ("add", |g| g.bench.add_us()),
    ("online", |g| g.bench.online_us()),
    ("offline", |g| g.bench.offline_us()),
    ("remove", |g| g.bench.remove_us()),
];

/// One line of a panel: a granule (and mode), its (size, record) points sorted by size.
struct Line<'a> {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, &'a GuestRecord)>,
}

fn color(granule: &str) -> RGBColor {
    match granule {
        "4k" => RGBColor(0xd6, 0x27, 0x28),
        "16k" => RGBColor(0x1f, 0x77, 0xb4),
        "64k" => RGBColor(0x2c, 0xa0, 0x2c),
        _ => RGBColor(0x55, 0x55, 0x55),
    }
}

/// The lines to draw: records with memmap on memory, one line per (granule, VA, CPU, mode).
fn lines(records: &[GuestRecord]) -> Vec<Line<'_>> {
    let mut by: BTreeMap<(u32, String, String, MemmapInit), Vec<&GuestRecord>> = BTreeMap::new();
    for g in records.iter().filter(|g| g.bench.memmap_on_memory) {
        let order = g.bench.granule.trim_end_matches('k').parse().unwrap_or(u32::MAX);
        by.entry((order, g.bench.config(), g.cpu.clone(), g.mode))
            .or_default()
            .push(g);
    }
    let cpus: std::collections::BTreeSet<String> = by.keys().map(|k| k.2.clone()).collect();
    let modes: std::collections::BTreeSet<MemmapInit> = by.keys().map(|k| k.3).collect();
    by.into_iter()
        .map(|((_, config, cpu, mode), mut recs)| {
            recs.sort_by_key(|g| g.bench.size);
            let mut label = config;
            if cpus.len() > 1 {
                label = format!("{label} {cpu}");
            }
            if modes.len() > 1 {
                label = format!("{label} {mode}");
            }
            Line {
                label,
                color: color(&recs[0].bench.granule),
                dashed: mode == MemmapInit::Deferred,
                points: recs.into_iter().map(|g| (g.bench.size as f64, g)).collect(),
            }
        })
        .collect()
}

/// Where a size sits on the x axis: log2(bytes) on a logarithmic axis, GiB on a linear one.
fn x_of(size: f64, log: bool) -> f64 {
    if log {
        size.log2()
    } else {
        size / (1u64 << 30) as f64
    }
}

fn x_label(v: f64, log: bool) -> String {
    if !log {
        return format!("{v} GiB");
    }
    if (v - v.round()).abs() > 1e-9 || !(0.0..64.0).contains(&v) {
        return String::new();
    }
    format!("{:#}", Size(1u64 << v.round() as u32))
}

fn us_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{} s", v / 1e6)
    } else if v >= 1e3 {
        format!("{} ms", v / 1e3)
    } else {
        format!("{v} µs")
    }
}

/// One of the four panels: an operation's guest time against the size added.
struct Panel<'a, Y> {
    op: &'a Op,
    /// The x range, and whether x is log-scaled.
    x: (std::ops::Range<f64>, bool),
    y: Y,
    lines: &'a [Line<'a>],
    /// Draw the legend (in the first panel only).
    legend: bool,
}

fn panel<Y>(area: &DrawingArea<SVGBackend<'_>, Shift>, p: Panel<'_, Y>) -> Result<(), PlotError>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let Panel {
        op,
        x: (x, log),
        y,
        lines,
        legend,
    } = p;
    let mut chart = ChartBuilder::on(area)
        .caption(op.0, ("sans-serif", 20))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("size added")
        .y_desc("guest time")
        .x_label_formatter(&|v| x_label(*v, log))
        .y_label_formatter(&|v| us_label(*v))
        .draw()
        .map_err(draw_err)?;
    for l in lines {
        let pts: Vec<(f64, f64)> = l.points.iter().map(|(s, g)| (x_of(*s, log), (op.1)(g))).collect();
        let style = l.color.stroke_width(2);
        let drawn = if l.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))
        }
        .map_err(draw_err)?;
        let c = l.color;
        drawn
            .label(l.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, l.color.filled())))
            .map_err(draw_err)?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Whether the values span a decade or more (then the axis is logarithmic).
pub fn spans_decades(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo >= 10.0
}

/// The plot of `records` as an SVG document; `title` heads it.
pub fn scaling_svg(records: &[GuestRecord], title: &str) -> Result<String, PlotError> {
    let lines = lines(records);
    if lines.is_empty() {
        return Err(PlotError::Empty);
    }
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (xlo, xhi) = all().fold((f64::MAX, 0f64), |(a, b), (s, _)| (a.min(*s), b.max(*s)));
    let log = spans_decades(xlo, xhi);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 820)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let root = root.titled(title, ("sans-serif", 18)).map_err(draw_err)?;
        for (i, (op, area)) in OPS.iter().zip(root.split_evenly((2, 2))).enumerate() {
            let ts = || all().map(|(_, g)| (op.1)(g));
            let ylo = ts().fold(f64::MAX, f64::min).max(1e-3);
            let yhi = ts().fold(0f64, f64::max).max(ylo * 1.01);
            let (x0, x1) = (x_of(xlo, log), x_of(xhi, log));
            let legend = i == 0;
            if log {
                let x = (x0 - 0.5..x1 + 0.5, log);
                let y = (ylo / 2.0..yhi * 2.0).log_scale();
                panel(
                    &area,
                    Panel {
                        op,
                        x,
                        y,
                        lines: &lines,
                        legend,
                    },
                )?;
            } else {
                let pad = (x1 - x0).max(x0) * 0.1;
                let x = ((x0 - pad).max(0.0)..x1 + pad, log);
                let y = 0.0..yhi * 1.15;
                panel(
                    &area,
                    Panel {
                        op,
                        x,
                        y,
                        lines: &lines,
                        legend,
                    },
                )?;
            }
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::tests::guest;

    #[test]
    fn one_line_per_granule_with_memmap_on_memory_only() {
        let recs = vec![
            guest("4k", 128 << 20, true, 887_000),
            guest("4k", 1 << 30, true, 7_438_000),
            guest("4k", 16 << 30, true, 71_512_000),
            guest("4k", 16 << 30, false, 79_111_000),
            guest("64k", 512 << 20, true, 240_000),
            guest("64k", 64 << 30, true, 19_393_000),
        ];
        let ls = lines(&recs);
        let labels: Vec<&str> = ls.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["4k-48", "64k-48"]);
        assert_eq!(ls[0].points.len(), 3);
        let svg = scaling_svg(&recs, "test plot").unwrap();
        if let Ok(p) = std::env::var("HOTMEM_PLOT_TEST_OUT") {
            std::fs::write(p, &svg).unwrap();
        }
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for t in [
            "add",
            "online",
            "offline",
            "remove",
            "4k-48",
            "64k-48",
            "test plot",
            "1 GiB",
        ] {
            assert!(svg.contains(&format!(">{t}<")) || svg.contains(t), "no {t}");
        }
        // Sizes span 128 MiB .. 64 GiB: log axes, labelled at powers of two.
        assert!(spans_decades(128.0, 65536.0));
        assert!(svg.contains("16 GiB"));
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        assert!(matches!(scaling_svg(&[], "t"), Err(PlotError::Empty)));
        // Only records without memmap on memory: nothing drawn either.
        assert!(matches!(
            scaling_svg(&[guest("4k", 1 << 30, false, 1)], "t"),
            Err(PlotError::Empty)
        ));
    }

    #[test]
    fn linear_axes_for_a_narrow_span() {
        assert!(!spans_decades(512.0, 1024.0));
        let svg = scaling_svg(
            &[
                guest("64k", 512 << 20, true, 240_000),
                guest("64k", 1 << 30, true, 480_000),
            ],
            "t",
        )
        .unwrap();
        assert!(svg.contains("64k-48"));
    }
}
