//! What every scenario shares when it reports: the refusal to report lost work, latency
//! summaries, JSON results and SVG charts.
//!
//! Charts use `plotters`' SVG backend only: text goes into the SVG as `<text>` elements, so
//! drawing needs no system fonts and no C library.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// Why a scenario refused to report a figure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Some accepted work did not complete (or failed): the figures would flatter the engine.
    #[error(
        "{scenario}: lost work, {completed} of {accepted} accepted {what} completed ({detail}); refusing to report"
    )]
    LostWork {
        scenario: &'static str,
        what: &'static str,
        accepted: usize,
        completed: usize,
        detail: String,
    },
    /// A chart could not be drawn or written.
    #[error("drawing {path}: {message}")]
    Chart { path: PathBuf, message: String },
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Summarises `samples` (milliseconds, any order); sorts them in place.
    pub fn of(samples: &mut [f64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_by(f64::total_cmp);
        Latency {
            count: samples.len(),
            mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
            p50_ms: percentile(samples, 0.50),
            p90_ms: percentile(samples, 0.90),
            p99_ms: percentile(samples, 0.99),
            p999_ms: percentile(samples, 0.999),
            max_ms: samples[samples.len() - 1],
        }
    }
}

/// The `p` quantile (0 to 1) of `sorted` (ascending, not empty): the nearest-rank value.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Writes `value` as pretty JSON to `out`, creating its directory.
pub fn write_json(out: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(value)?)?;
    println!("written to {}", out.display());
    Ok(())
}

/// `path` with its extension replaced by `svg`: where a result's chart goes.
pub fn chart_path(json: &Path) -> PathBuf {
    json.with_extension("svg")
}

/// The percentile points of a latency curve: 0 to 99.9 (denser towards the tail).
const CURVE: &[f64] = &[
    0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.0,
    98.0, 99.0, 99.5, 99.9, 100.0,
];

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn chart_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Chart {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Draws latency distributions: for each named series (samples sorted ascending, in ms), the
/// latency at each percentile, so series of different sizes share one chart.
pub fn latency_chart(path: &Path, title: &str, series: &[(String, &[f64])]) -> Result<(), Error> {
    let err = |e: &dyn std::fmt::Display| chart_error(path, e);
    let top = series
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(_, s)| percentile(s, 0.999))
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.1;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..100.0_f64, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms), up to p99.9")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, samples)) in series.iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = CURVE
            .iter()
            .map(|&p| (p, percentile(samples, p / 100.0).min(top)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    println!("chart written to {}", path.display());
    Ok(())
}

/// Draws throughput against worker replicas, beside the ideal (linear from the first point).
pub fn scaling_chart(path: &Path, title: &str, points: &[(usize, f64)]) -> Result<(), Error> {
    let err = |e: &dyn std::fmt::Display| chart_error(path, e);
    let Some(&(first_n, first_rate)) = points.first() else {
        return Ok(());
    };
    let max_n = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let ideal = |n: f64| first_rate * n / first_n as f64;
    let top = points
        .iter()
        .map(|p| p.1)
        .fold(ideal(max_n), f64::max)
        .max(1.0)
        * 1.1;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_n + 0.5, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("worker replicas (processes)")
        .y_desc("workflows/s")
        .draw()
        .map_err(|e| err(&e))?;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(
            [
                (first_n as f64, ideal(first_n as f64)),
                (max_n, ideal(max_n)),
            ],
            grey.stroke_width(1),
        ))
        .map_err(|e| err(&e))?
        .label("linear")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    let colour = COLOURS[0];
    let measured: Vec<(f64, f64)> = points.iter().map(|&(n, r)| (n as f64, r)).collect();
    chart
        .draw_series(LineSeries::new(measured.clone(), colour.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("measured")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    chart
        .draw_series(measured.iter().map(|&p| Circle::new(p, 4, colour.filled())))
        .map_err(|e| err(&e))?;
    chart
        .draw_series(measured.iter().map(|&(n, r)| {
            Text::new(
                format!("{r:.0}/s"),
                (n, r + top * 0.03),
                ("sans-serif", 14).into_font(),
            )
        }))
        .map_err(|e| err(&e))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    println!("chart written to {}", path.display());
    Ok(())
}

/// Draws named rates side by side as bars (e.g. Switchyard against Celery).
pub fn bar_chart(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[(String, f64)],
) -> Result<(), Error> {
    let err = |e: &dyn std::fmt::Display| chart_error(path, e);
    let top = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let n = bars.len().max(1);
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (_, value)) in bars.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let x = i as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x + 0.15, 0.0), (x + 0.85, *value)],
                colour.filled(),
            )))
            .map_err(|e| err(&e))?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("{value:.0}"),
                (x + 0.35, value + top * 0.02),
                ("sans-serif", 14).into_font(),
            )))
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    println!("chart written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let l = Latency::of(&mut samples);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 51.0);
        assert_eq!(l.p99_ms, 100.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(l.mean_ms, 50.5);
        assert_eq!(samples[0], 1.0, "sorted in place");
    }

    #[test]
    fn charts_are_svg_files_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let latency = dir.path().join("latency.svg");
        let samples: Vec<f64> = (0..1000).map(|i| f64::from(i) / 100.0).collect();
        latency_chart(
            &latency,
            "3-step at 100/s",
            &[("switchyard".into(), &samples)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&latency).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("3-step at 100/s") && svg.contains("switchyard"));

        let scaling = dir.path().join("scaling.svg");
        scaling_chart(
            &scaling,
            "50 ms jobs",
            &[(1, 150.0), (2, 300.0), (4, 590.0)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&scaling).unwrap();
        assert!(svg.contains("590/s") && svg.contains("worker replicas"));

        let bars = dir.path().join("bars.svg");
        bar_chart(
            &bars,
            "3-step chains/s",
            "chains/s",
            &[("Switchyard".into(), 2000.0), ("Celery".into(), 300.0)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&bars).unwrap();
        assert!(svg.contains("Celery") && svg.contains("2000"));
    }
}
