//! Progress for work that can take a while (key generation, enrollment, bulk commands): a
//! spinner on standard error, only when it is a terminal and `--quiet` was not given, shown
//! only once the work has taken longer than [`DELAY`] so quick commands print nothing.
//!
//! ```ignore
//! let spin = progress::Spinner::start("generating an RSA-3072 key pair on the token");
//! let out = work()?;
//! spin.finish(); // or just drop it
//! ```
//! For many items, [`Bar`] counts them (`bar.inc()` per item).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before a spinner appears.
pub const DELAY: Duration = Duration::from_millis(300);

/// Whether progress is shown at all: standard error is a terminal and not `--quiet`.
pub fn enabled() -> bool {
    !super::output::quiet() && std::io::stderr().is_terminal()
}

fn hidden_unless_enabled(bar: ProgressBar) -> ProgressBar {
    if !enabled() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// A spinner with a message; cleared when finished or dropped.
pub struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    /// Starts a spinner saying `what` (drawn from [`DELAY`] on, when [`enabled`]).
    pub fn start(what: &str) -> Spinner {
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_string());
        // Hidden until DELAY has passed: a quick job finishes before anything is drawn.
        if enabled() {
            let later = bar.clone();
            std::thread::spawn(move || {
                std::thread::sleep(DELAY);
                if !later.is_finished() {
                    later.set_draw_target(ProgressDrawTarget::stderr());
                    later.enable_steady_tick(Duration::from_millis(100));
                }
            });
        }
        Spinner { bar }
    }

    /// Changes what the spinner says.
    pub fn set_message(&self, what: &str) {
        self.bar.set_message(what.to_string());
    }

    /// Stops and clears the spinner.
    pub fn finish(self) {}
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A bar counting `len` items (bulk commands).
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// Starts a bar over `len` items saying `what`.
    pub fn start(what: &str, len: u64) -> Bar {
        let bar = hidden_unless_enabled(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        Bar { bar }
    }

    /// One item done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Prints a line above the bar (instead of `eprintln!`, which would tear it).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            if !super::output::quiet() {
                eprintln!("{line}");
            }
        } else {
            self.bar.println(line);
        }
    }

    /// Stops and clears the bar.
    pub fn finish(self) {}
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
