//! PNG plots of a run, next to summary.md:
//!
//! - `latency_percentiles.png`: p50..max at 50% of each system's sustainable
//!   rate (log scale);
//! - `fanout_p99.png`: p99 at each fan-out step, against the offered rate;
//! - `throughput_over_time.png`: deliveries per second through the fan-out
//!   steps, one after the other, so the knee of each system shows;
//! - `soak_rss.png`: the RSS of each process through the soak.
//!
//! Text needs a TrueType font; DejaVu Sans is read from the system
//! (Debian's `fonts-dejavu-core`, installed by bench/setup.sh).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use plotters::prelude::*;

use crate::scenarios::SystemResult;

const FONT_PATHS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];
const SIZE: (u32, u32) = (1000, 600);

/// Writes the plots into `dir` and returns their paths.
pub fn write(dir: &Path, results: &[SystemResult]) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    let mut written = Vec::new();
    let percentiles = dir.join("latency_percentiles.png");
    if latency_percentiles(&percentiles, results)? {
        written.push(percentiles);
    }
    let fanout = dir.join("fanout_p99.png");
    if fanout_p99(&fanout, results)? {
        written.push(fanout);
    }
    let over_time = dir.join("throughput_over_time.png");
    if throughput_over_time(&over_time, results)? {
        written.push(over_time);
    }
    let soak = dir.join("soak_rss.png");
    if soak_rss(&soak, results)? {
        written.push(soak);
    }
    Ok(written)
}

fn register_font() -> anyhow::Result<()> {
    let path = FONT_PATHS
        .iter()
        .find(|p| Path::new(p).is_file())
        .context("no DejaVu Sans font for the plots: run bench/setup.sh")?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| anyhow!("bad font {path}"))
}

fn color(i: usize) -> RGBColor {
    [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ][i % 8]
}

fn latency_percentiles(path: &Path, results: &[SystemResult]) -> anyhow::Result<bool> {
    const NAMES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];
    let series: Vec<(&str, [f64; 5])> = results
        .iter()
        .filter_map(|r| {
            let l = r.latency.as_ref()?;
            Some((r.name, [l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms].map(|v| v.max(0.1))))
        })
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let top = series.iter().flat_map(|(_, v)| v.iter().copied()).fold(1.0, f64::max) * 2.0;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency percentiles at 50% of each system's sustainable rate", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..4.0, (0.1..top).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x: &f64| NAMES.get(x.round() as usize).copied().unwrap_or("").to_string())
        .y_desc("ms (log scale)")
        .y_label_formatter(&|y: &f64| format!("{y}"))
        .draw()?;
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, values)| (*name, values.iter().enumerate().map(|(x, &y)| (x as f64, y)).collect()))
        .collect();
    lines(&mut chart, &series, true)?;
    root.present()?;
    Ok(true)
}

fn fanout_p99(path: &Path, results: &[SystemResult]) -> anyhow::Result<bool> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = results
        .iter()
        .filter(|r| !r.steps.is_empty())
        .map(|r| (r.name, r.steps.iter().map(|s| (s.report.rate_target, s.report.p99_ms.max(0.1))).collect()))
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    let max_rate = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0)).fold(1.0, f64::max) * 1.5;
    let top = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(200.0, f64::max) * 2.0;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Fan-out (rooms of 10): p99 latency per offered rate", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((200.0..max_rate).log_scale(), (0.1..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("messages/s offered (log scale)")
        .y_desc("p99 ms (log scale)")
        .x_label_formatter(&|x: &f64| format!("{x:.0}"))
        .y_label_formatter(&|y: &f64| format!("{y}"))
        .draw()?;
    // The limit a step must stay under to count as sustainable.
    chart.draw_series(LineSeries::new([(200.0, 100.0), (max_rate, 100.0)], BLACK.stroke_width(1)))?;
    lines(&mut chart, &series, true)?;
    root.present()?;
    Ok(true)
}

fn throughput_over_time(path: &Path, results: &[SystemResult]) -> anyhow::Result<bool> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = results
        .iter()
        .filter(|r| !r.steps.is_empty())
        .map(|r| {
            let mut points = Vec::new();
            let mut offset = 0u64;
            for step in &r.steps {
                for &(second, _, _, delivered) in &step.report.timeline {
                    points.push(((offset + second) as f64, delivered as f64));
                }
                offset += step.report.timeline.len() as u64;
            }
            (r.name, points)
        })
        .collect();
    if series.iter().all(|(_, v)| v.is_empty()) {
        return Ok(false);
    }
    let right = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0)).fold(1.0, f64::max) + 1.0;
    let top = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.1;
    let axes = Axes {
        caption: "Deliveries per second through the fan-out steps",
        x_desc: "seconds of measured load (steps back to back)",
        y_desc: "deliveries/s",
    };
    over_time(path, &axes, &series, right, 0.0..top)?;
    Ok(true)
}

fn soak_rss(path: &Path, results: &[SystemResult]) -> anyhow::Result<bool> {
    let mut owned: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        let Some(soak) = &r.soak else { continue };
        let names: std::collections::BTreeSet<&String> = soak.rss.iter().flat_map(|(_, m)| m.keys()).collect();
        for name in names {
            let points =
                soak.rss.iter().filter_map(|(t, m)| Some((*t, *m.get(name)? as f64 / 1024.0))).collect::<Vec<_>>();
            owned.push((format!("{}: {name}", r.name), points));
        }
    }
    if owned.iter().all(|(_, v)| v.is_empty()) {
        return Ok(false);
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = owned.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    let right = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0)).fold(1.0, f64::max) * 1.02;
    let top = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(1.0, f64::max) * 1.5;
    let axes = Axes {
        caption: "Soak: resident memory of each process",
        x_desc: "seconds of the soak",
        y_desc: "RSS MiB (log scale)",
    };
    over_time(path, &axes, &series, right, (1.0..top).log_scale())?;
    Ok(true)
}

/// The words of an [`over_time`] plot.
struct Axes {
    caption: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
}

/// A plot of values over seconds, one line per series, the y axis given
/// as a range (linear or `log_scale()`).
fn over_time<Y>(path: &Path, axes: &Axes, series: &[(&str, Vec<(f64, f64)>)], right: f64, y: Y) -> anyhow::Result<()>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..right, y)?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(&|x: &f64| format!("{x:.0}"))
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .draw()?;
    lines(&mut chart, series, false)?;
    root.present()?;
    Ok(())
}

/// One line per system (with dots on its points if `dots`), and the legend.
fn lines<'a, CT: plotters::coord::CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    series: &[(&str, Vec<(f64, f64)>)],
    dots: bool,
) -> anyhow::Result<()> {
    for (i, (name, points)) in series.iter().enumerate() {
        chart
            .draw_series(LineSeries::new(points.clone(), color(i).stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color(i).stroke_width(2)));
        if dots {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color(i).filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow!("legend: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Report;
    use crate::scenarios::Step;
    use crate::systems::SystemKind;

    fn report(rate: f64, p99: f64) -> Report {
        Report {
            rate_target: rate,
            p50_ms: p99 / 4.0,
            p90_ms: p99 / 2.0,
            p99_ms: p99,
            p999_ms: p99 * 1.5,
            max_ms: p99 * 2.0,
            timeline: (0..5).map(|s| (s, p99 / 4.0, p99, (rate * 10.0) as u64)).collect(),
            ..Report::default()
        }
    }

    #[test]
    fn draws_four_pngs() {
        let steps = [(500.0, 5.0), (1000.0, 20.0), (2000.0, 300.0)]
            .map(|(rate, p99)| Step { report: report(rate, p99), passed: p99 < 100.0, why_not: None })
            .to_vec();
        let result = SystemResult {
            steps,
            sustainable: Some((10_000.0, 1000.0)),
            latency: Some(report(500.0, 8.0)),
            soak: Some(crate::soak::Soak {
                rate: 500.0,
                churn_rate: 5.0,
                seconds: 30.0,
                report: report(500.0, 8.0),
                churn: Default::default(),
                stored: Some(1),
                rss: (0..10)
                    .map(|t| (t as f64 * 3.0, [("edge".to_owned(), 50_000 + t), ("kafka".to_owned(), 900_000)].into()))
                    .collect(),
                growth: Default::default(),
                findings: Vec::new(),
            }),
            ..SystemResult::new(SystemKind::Ceiling)
        };
        let dir = tempfile::tempdir().unwrap();
        let written = write(dir.path(), &[result]).unwrap();
        assert_eq!(written.len(), 4);
        for path in written {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
            assert!(bytes.len() > 5_000, "{} has something drawn", path.display());
        }
    }
}
