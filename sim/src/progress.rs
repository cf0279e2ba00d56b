//! A progress bar on stderr for runs that take more than a moment, and only when stderr is a
//! terminal: it never touches stdout, so reports stay byte-identical.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A run shorter than this shows no bar at all.
const SHOW_AFTER: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    shown: bool,
}

impl Progress {
    /// A bar counting to `total` `unit`s; inert unless `wanted` and stderr is a terminal.
    pub fn new(wanted: bool, total: u64, unit: &str) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            let template = format!("{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress { bar, started: Instant::now(), shown: false }
    }

    pub fn update(&mut self, position: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        if !self.shown && self.started.elapsed() >= SHOW_AFTER {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        bar.set_position(position);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
