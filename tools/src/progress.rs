//! Progress on long work, drawn on stderr only when it is a terminal:
//! scripts and pipes see nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

fn visible() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with `message` and the time elapsed, for work whose size is
/// unknown (a verification, a compaction). Clear it with
/// `finish_and_clear` before printing results.
pub fn spinner(message: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner()
        .with_style(style)
        .with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A counter of `unit` (such as "entries") for work done item by item: a
/// bar when the total is known, a running count otherwise.
pub fn counter(message: &str, total: Option<u64>, unit: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            format!("{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{eta}} left)"),
        ),
        None => (
            ProgressBar::new_spinner(),
            format!("{{spinner}} {{msg}} {{human_pos}} {unit} ({{elapsed}})"),
        ),
    };
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = bar.with_style(style).with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
