//! Progress on stderr: a redrawn bar on a terminal, plain periodic lines otherwise.

use std::io::Write;
use std::time::{Duration, Instant};

use super::device::human;

pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    start: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            label,
            total,
            start: now,
            last: now,
            tty: super::sys::stderr_is_tty(),
        }
    }

    pub fn update(&mut self, done: u64) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.draw(done);
        }
    }

    fn draw(&self, done: u64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let mut line = format!("{:<7}", self.label);
        if let Some(t) = self.total.filter(|t| *t > 0) {
            let frac = (done as f64 / t as f64).min(1.0);
            let eta = if rate > 0.0 {
                (t.saturating_sub(done)) as f64 / rate
            } else {
                0.0
            };
            if self.tty {
                let w = 30;
                let fill = (frac * w as f64) as usize;
                line += &format!("[{}{}] ", "#".repeat(fill), "-".repeat(w - fill));
            }
            line += &format!(
                "{:>3.0}%  {} of {}  {}/s  ETA {}",
                frac * 100.0,
                human(done),
                human(t),
                human(rate as u64),
                clock(eta)
            );
        } else {
            line += &format!("{}  {}/s", human(done), human(rate as u64));
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the bar (a last redraw, then a new line); returns the elapsed time.
    pub fn finish(&mut self, done: u64) -> Duration {
        if self.tty {
            self.draw(done);
            eprintln!();
        }
        self.start.elapsed()
    }
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// `1.2 GB in 3.4 s (350 MB/s)`.
pub fn rate(bytes: u64, t: Duration) -> String {
    let s = t.as_secs_f64().max(1e-3);
    format!(
        "{} in {:.1} s ({}/s)",
        human(bytes),
        s,
        human((bytes as f64 / s) as u64)
    )
}
