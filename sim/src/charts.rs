//! SVG charts for `--report`, drawn with plotters' SVG backend. Without its `ttf` feature
//! plotters estimates text sizes itself and writes labels as SVG `<text>` elements, which the
//! viewer renders with its own fonts: labels work and no system font is needed at build or
//! run time.
//!
//! They answer a planner's questions: the opening second by second (where a day-long chart
//! squeezes it into a few pixels), then the whole window; time in seconds, minutes or hours as
//! the span asks; what the nodes can serve and the p99 target as lines; queues as a share of
//! their bound (so that a short queue does not hide on the axis); faults shaded.

use plotters::prelude::*;

use crate::distribution::MICROS_PER_SECOND;
use crate::metrics::{Metrics, SecondStats};
use crate::report::merged_latency;
use crate::scenario::Scenario;

const CHART_SIZE: (u32, u32) = (960, 420);
/// The opening panels cover the spike and half as long again, within these bounds, in seconds.
const OPENING_SECONDS_MIN: u64 = 30;
pub const OPENING_SECONDS_MAX: u64 = 120;
/// Spans up to this many seconds are labelled in seconds, up to `MINUTES_UP_TO_SECONDS` in
/// minutes, longer ones in hours.
const SECONDS_UP_TO_SECONDS: f64 = 180.0;
const MINUTES_UP_TO_SECONDS: f64 = 3.0 * 3_600.0;
const FAULT_SHADE: RGBColor = RGBColor(255, 150, 150);
const LIMIT_COLOR: RGBColor = RGBColor(90, 90, 90);

/// One line of a chart; `dashed` lines are limits (capacity, target, bounds), not measurements.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

fn line(label: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Line {
    Line { label: label.to_string(), color, points, dashed: false }
}

/// A horizontal limit across `0..x_max` seconds.
fn limit(label: String, y: f64, x_max: f64) -> Line {
    Line { label, color: LIMIT_COLOR, points: vec![(0.0, y), (x_max, y)], dashed: true }
}

/// A chart ready to be written: its file-name suffix, its title and its SVG text.
#[derive(Debug)]
pub struct Chart {
    pub suffix: &'static str,
    pub title: String,
    pub svg: String,
}

/// How long the opening panels run, in seconds.
pub fn opening_seconds(metrics: &Metrics, spike_seconds: f64) -> u64 {
    ((spike_seconds * 1.5).ceil() as u64)
        .clamp(OPENING_SECONDS_MIN, OPENING_SECONDS_MAX)
        .min(metrics.window.seconds())
}

/// What the charts cover, for the report.
pub fn caption(metrics: &Metrics) -> String {
    format!(
        "The first two charts are the opening, second by second; the others cover the first {} s after opening in \
         buckets of {} s. Dashed lines are limits: what the nodes' HTTP workers can serve per second, the p99 target, \
         each queue's bound. Faults are shaded.\n\n",
        metrics.window.seconds(),
        metrics.window.bucket_seconds
    )
}

/// Every chart of a report.
pub fn draw(
    scenario: &Scenario,
    metrics: &Metrics,
    target_p99_ms: Option<f64>,
) -> Result<Vec<Chart>, String> {
    let opening = opening_seconds(metrics, scenario.arrivals.spike_seconds);
    let whole = metrics.window.seconds() as f64;
    let faults: Vec<(f64, f64)> = metrics
        .faults
        .iter()
        .map(|fault| {
            (fault.start as f64 / MICROS_PER_SECOND as f64, fault.end as f64 / MICROS_PER_SECOND as f64)
        })
        .collect();
    let serve = serving_rate(scenario);
    let target =
        |x_max: f64| target_p99_ms.map(|target| limit(format!("p99 target {target} ms"), target, x_max));
    let mut opening_rates = rate_lines(metrics, 1, opening as usize);
    opening_rates.push(limit(format!("HTTP workers can serve {serve:.0}/s"), serve, opening as f64));
    let mut opening_latency = latency_lines(&opening_latency_points(metrics, opening));
    opening_latency.extend(target(opening as f64));
    let mut rates = rate_lines(metrics, metrics.window.bucket_seconds as usize, metrics.window.buckets);
    rates.push(limit(format!("HTTP workers can serve {serve:.0}/s"), serve, whole));
    let mut latency = latency_lines(&window_latency_points(metrics));
    latency.extend(target(whole));
    let specs = [
        (
            "opening",
            format!("The opening: requests per second (first {opening} s)"),
            "per second",
            opening as f64,
            opening_rates,
        ),
        (
            "opening-latency",
            format!("The opening: latency of answers (first {opening} s)"),
            "milliseconds",
            opening as f64,
            opening_latency,
        ),
        ("arrivals", "Arrivals, admissions and refusals".to_string(), "per second", whole, rates),
        (
            "queues",
            "Queue depths, as a share of their bound (largest in each bucket)".to_string(),
            "% of the bound",
            whole,
            queue_lines(scenario, metrics, whole),
        ),
        ("latency", "Latency of answers received".to_string(), "milliseconds", whole, latency),
    ];
    specs
        .into_iter()
        .map(|(suffix, title, y_label, x_max, lines)| {
            let svg = line_chart(&title, y_label, x_max, &lines, &faults)?;
            Ok(Chart { suffix, title, svg })
        })
        .collect()
}

/// Requests per second all nodes' HTTP workers can serve: workers over the mean service time.
fn serving_rate(scenario: &Scenario) -> f64 {
    let system = &scenario.system;
    let workers = f64::from(system.nodes) * f64::from(system.http_workers_per_node);
    workers * 1_000.0 / system.http_service.mean_ms().max(f64::MIN_POSITIVE)
}

/// Per bucket of `width` seconds: x at the bucket's start, y = `value(stats of its seconds)`.
fn per_bucket(
    metrics: &Metrics,
    width: usize,
    buckets: usize,
    value: impl Fn(&[SecondStats]) -> f64,
) -> Vec<(f64, f64)> {
    (0..buckets)
        .map(|bucket| {
            let from = (bucket * width).min(metrics.seconds.len());
            let to = (from + width).min(metrics.seconds.len());
            ((bucket * width) as f64, value(&metrics.seconds[from..to]))
        })
        .collect()
}

fn rate_lines(metrics: &Metrics, width: usize, buckets: usize) -> Vec<Line> {
    let mean = |pick: fn(&SecondStats) -> u32| {
        per_bucket(metrics, width, buckets, |seconds| {
            seconds.iter().map(|stats| f64::from(pick(stats))).sum::<f64>() / width as f64
        })
    };
    vec![
        line("new registrants/s", BLUE, mean(|stats| stats.arrivals)),
        line("requests/s (with retries)", CYAN, mean(|stats| stats.requests)),
        line("admissions/s", GREEN, mean(|stats| stats.admissions)),
        line("503+429/s", RED, mean(|stats| stats.refused_for_load)),
    ]
}

fn queue_lines(scenario: &Scenario, metrics: &Metrics, x_max: f64) -> Vec<Line> {
    let system = &scenario.system;
    let width = metrics.window.bucket_seconds as usize;
    let share = |pick: fn(&SecondStats) -> u32, bound: f64| {
        per_bucket(metrics, width, metrics.window.buckets, move |seconds| {
            let largest = seconds.iter().map(|stats| f64::from(pick(stats))).fold(0.0, f64::max);
            100.0 * largest / bound.max(1.0)
        })
    };
    let node_bound = f64::from(system.nodes) * f64::from(system.http_queue_max);
    vec![
        line("node queues", BLUE, share(|stats| stats.node_queue_max, node_bound)),
        line("actor mailbox", RED, share(|stats| stats.mailbox_max, f64::from(system.mailbox_capacity_max))),
        line("write queue", GREEN, share(|stats| stats.write_queue_max, f64::from(system.write_queue_max))),
        limit("bound: more is 503".to_string(), 100.0, x_max),
    ]
}

/// (seconds, p50, p95, p99 in ms) of each second of the opening that had answers.
fn opening_latency_points(metrics: &Metrics, seconds: u64) -> Vec<(f64, [f64; 3])> {
    metrics
        .opening_latency
        .iter()
        .take(seconds as usize)
        .enumerate()
        .filter_map(|(second, histogram)| Some((second as f64, quantiles(histogram.as_ref()?))))
        .collect()
}

fn window_latency_points(metrics: &Metrics) -> Vec<(f64, [f64; 3])> {
    let width = metrics.window.bucket_seconds as f64;
    (0..metrics.window.buckets)
        .filter_map(|bucket| {
            let histogram = merged_latency(metrics, bucket..bucket + 1)?;
            Some((bucket as f64 * width, quantiles(&histogram)))
        })
        .collect()
}

fn quantiles(histogram: &hdrhistogram::Histogram<u32>) -> [f64; 3] {
    [0.50, 0.95, 0.99].map(|quantile| histogram.value_at_quantile(quantile) as f64 / 1_000.0)
}

fn latency_lines(points: &[(f64, [f64; 3])]) -> Vec<Line> {
    let series = |index: usize| points.iter().map(|(x, values)| (*x, values[index])).collect();
    vec![line("p50", GREEN, series(0)), line("p95", BLUE, series(1)), line("p99", RED, series(2))]
}

/// The x axis's unit for a span of `x_max` seconds: its name and how many seconds one is.
fn time_unit(x_max: f64) -> (&'static str, f64) {
    if x_max <= SECONDS_UP_TO_SECONDS {
        ("seconds after opening", 1.0)
    } else if x_max <= MINUTES_UP_TO_SECONDS {
        ("minutes after opening", 60.0)
    } else {
        ("hours after opening", 3_600.0)
    }
}

fn line_chart(
    title: &str,
    y_label: &str,
    x_max: f64,
    lines: &[Line],
    faults: &[(f64, f64)],
) -> Result<String, String> {
    let (x_label, unit) = time_unit(x_max);
    let x_end = (x_max / unit).max(1.0 / unit);
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
            .build_cartesian_2d(0.0..x_end, 0.0..y_max)
            .map_err(|error| error.to_string())?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|error| error.to_string())?;
        let shaded = faults.iter().filter(|(start, _)| *start < x_max).map(|(start, end)| {
            Rectangle::new(
                [(start / unit, 0.0), (end.min(x_max) / unit, y_max)],
                FAULT_SHADE.mix(0.35).filled(),
            )
        });
        chart.draw_series(shaded).map_err(|error| error.to_string())?;
        for line in lines {
            let color = line.color;
            let points = line.points.iter().map(|(x, y)| (x / unit, *y));
            let style = color.stroke_width(if line.dashed { 1 } else { 2 });
            let series = if line.dashed {
                chart.draw_series(DashedLineSeries::new(points, 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(points, style))
            };
            series
                .map_err(|error| error.to_string())?
                .label(line.label.as_str())
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
