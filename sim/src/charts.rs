//! SVG charts for `--report`, drawn with plotters' SVG backend. Without its `ttf` feature
//! plotters estimates text sizes itself and writes labels as SVG `<text>` elements, which the
//! viewer renders with its own fonts: labels work and no system font is needed at build or
//! run time.

use plotters::prelude::*;

use crate::metrics::{Metrics, SecondStats};
use crate::report::merged_latency;

const CHART_SIZE: (u32, u32) = (960, 420);

/// One line of a chart.
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A chart ready to be written: its file-name suffix, its title and its SVG text.
#[derive(Debug)]
pub struct Chart {
    pub suffix: &'static str,
    pub title: &'static str,
    pub svg: String,
}

/// The three charts of a report: arrivals against admissions, queue depths, latency.
pub fn draw(metrics: &Metrics) -> Result<Vec<Chart>, String> {
    let specs: [(&'static str, &'static str, &'static str, Vec<Line>); 3] = [
        ("arrivals", "Arrivals and admissions", "per second", arrival_lines(metrics)),
        ("queues", "Queue depths (largest in each bucket)", "entries", queue_lines(metrics)),
        ("latency", "Latency of answers received", "milliseconds", latency_lines(metrics)),
    ];
    let x_max = metrics.window.seconds() as f64;
    specs
        .into_iter()
        .map(|(suffix, title, y_label, lines)| {
            let svg = line_chart(title, y_label, x_max, &lines)?;
            Ok(Chart { suffix, title, svg })
        })
        .collect()
}

/// Per chart bucket: x at the bucket's start, y = `value(stats of the bucket's seconds)`.
fn per_bucket(metrics: &Metrics, value: impl Fn(&[SecondStats]) -> f64) -> Vec<(f64, f64)> {
    let width = metrics.window.bucket_seconds as usize;
    (0..metrics.window.buckets)
        .map(|bucket| {
            let from = (bucket * width).min(metrics.seconds.len());
            let to = (from + width).min(metrics.seconds.len());
            ((bucket * width) as f64, value(&metrics.seconds[from..to]))
        })
        .collect()
}

fn mean_rate(metrics: &Metrics, pick: fn(&SecondStats) -> u32) -> Vec<(f64, f64)> {
    let width = metrics.window.bucket_seconds as f64;
    per_bucket(metrics, |seconds| seconds.iter().map(|stats| f64::from(pick(stats))).sum::<f64>() / width)
}

fn largest(metrics: &Metrics, pick: fn(&SecondStats) -> u32) -> Vec<(f64, f64)> {
    per_bucket(metrics, |seconds| seconds.iter().map(|stats| f64::from(pick(stats))).fold(0.0, f64::max))
}

fn arrival_lines(metrics: &Metrics) -> Vec<Line> {
    vec![
        Line { label: "new registrants/s", color: BLUE, points: mean_rate(metrics, |stats| stats.arrivals) },
        Line {
            label: "requests/s (with retries)",
            color: CYAN,
            points: mean_rate(metrics, |stats| stats.requests),
        },
        Line { label: "admissions/s", color: GREEN, points: mean_rate(metrics, |stats| stats.admissions) },
        Line { label: "503+429/s", color: RED, points: mean_rate(metrics, |stats| stats.refused_for_load) },
    ]
}

fn queue_lines(metrics: &Metrics) -> Vec<Line> {
    vec![
        Line { label: "node queues", color: BLUE, points: largest(metrics, |stats| stats.node_queue_max) },
        Line { label: "actor mailbox", color: RED, points: largest(metrics, |stats| stats.mailbox_max) },
        Line { label: "write queue", color: GREEN, points: largest(metrics, |stats| stats.write_queue_max) },
    ]
}

fn latency_lines(metrics: &Metrics) -> Vec<Line> {
    let quantile_points = |quantile: f64| {
        let width = metrics.window.bucket_seconds as f64;
        (0..metrics.window.buckets)
            .filter_map(|bucket| {
                let histogram = merged_latency(metrics, bucket..bucket + 1)?;
                Some((bucket as f64 * width, histogram.value_at_quantile(quantile) as f64 / 1_000.0))
            })
            .collect()
    };
    vec![
        Line { label: "p50", color: GREEN, points: quantile_points(0.50) },
        Line { label: "p95", color: BLUE, points: quantile_points(0.95) },
        Line { label: "p99", color: RED, points: quantile_points(0.99) },
    ]
}

fn line_chart(title: &str, y_label: &str, x_max: f64, lines: &[Line]) -> Result<String, String> {
    let y_top = lines.iter().flat_map(|line| line.points.iter().map(|point| point.1)).fold(0.0, f64::max);
    let y_max = (y_top * 1.1).max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|error| error.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max.max(1.0), 0.0..y_max)
            .map_err(|error| error.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds after opening")
            .y_desc(y_label)
            .draw()
            .map_err(|error| error.to_string())?;
        for line in lines {
            let color = line.color;
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
                .map_err(|error| error.to_string())?
                .label(line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|error| error.to_string())?;
        root.present().map_err(|error| error.to_string())?;
    }
    Ok(svg)
}
