//! The terminal: whether to colour, and the spinner shown while waiting.
//!
//! Colour only when stdout is a terminal and `NO_COLOR` is unset or empty (no-color.org);
//! the spinner only when stderr is a terminal, so pipes and scripts see neither.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

/// A colour for a table cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Good,
    Bad,
    Warn,
    Bold,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Good => "32",
            Style::Bad => "1;31",
            Style::Warn => "33",
            Style::Bold => "1",
        }
    }

    /// `text` wrapped in this style's ANSI codes.
    pub fn paint(self, text: &str) -> String {
        format!("\x1b[{}m{text}\x1b[0m", self.code())
    }
}

/// Whether stdout gets colour: a terminal, and no `NO_COLOR`.
pub fn colour_stdout() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// A spinner with elapsed time on stderr while a trace runs; nothing when stderr is not a
/// terminal. Stopped (and its line cleared) by [`Spinner::stop`] or on drop.
pub struct Spinner {
    task: Option<tokio::task::JoinHandle<()>>,
    status: tokio::sync::watch::Sender<String>,
}

impl Spinner {
    /// Starts spinning with `status` as its text (e.g. the phase).
    pub fn start(status: &str) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(status.to_string());
        if !std::io::stderr().is_terminal() {
            return Spinner {
                task: None,
                status: tx,
            };
        }
        const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let started = Instant::now();
        let draw = move |i: usize, text: &str| {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K{} {text} {:.1}s",
                FRAMES[i % FRAMES.len()],
                started.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        };
        // The first frame now: a trace that ends within a millisecond still showed it was
        // being waited for, whenever the task below first runs.
        draw(0, status);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.tick().await;
            for i in 1.. {
                tick.tick().await;
                let text = rx.borrow().clone();
                draw(i, &text);
            }
        });
        Spinner {
            task: Some(task),
            status: tx,
        }
    }

    /// Changes the text after the spinner (e.g. `Running, 3 observations`).
    pub fn set(&self, status: String) {
        self.status.send_replace(status);
    }

    /// Stops and clears the line.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Columns aligned on visible width, each cell optionally coloured.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<(String, Option<Style>)>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<(String, Option<Style>)>) {
        self.rows.push(cells);
    }

    /// The table, two spaces between columns, no trailing spaces; colour only when `colour`.
    pub fn render(&self, colour: bool) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, (text, _)) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<(String, Option<Style>)> = self
            .headers
            .iter()
            .map(|h| (h.to_string(), Some(Style::Bold)))
            .collect();
        for r in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (text, style)) in r.iter().enumerate().take(n) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(text.chars().count());
                match style {
                    Some(s) if colour => line.push_str(&s.paint(text)),
                    _ => line.push_str(text),
                }
                if i + 1 < r.len().min(n) {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell without colour.
pub fn plain(text: impl Into<String>) -> (String, Option<Style>) {
    (text.into(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_visible_width_and_colour_is_optional() {
        let mut t = Table::new(&["A", "ACTION", "C"]);
        t.row(vec![
            plain("xyz"),
            (String::from("Dropped"), Some(Style::Bad)),
            plain("1"),
        ]);
        t.row(vec![
            plain("q"),
            (String::from("Forwarded"), Some(Style::Good)),
            plain(""),
        ]);
        let text = t.render(false);
        assert_eq!(
            text,
            "A    ACTION     C\nxyz  Dropped    1\nq    Forwarded\n"
        );
        let coloured = t.render(true);
        assert!(
            coloured.contains("\x1b[1;31mDropped\x1b[0m    1"),
            "{coloured:?}"
        );
        assert!(!text.contains('\x1b'));
    }
}
