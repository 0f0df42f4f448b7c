//! The progress of a run, shown one way for `vizflow run` and `vizflow cluster --local`.
//!
//! Each finished date makes one [`DateProgress`]: how far the run is, the date, what
//! happened to it and the rows per second so far. A [`Progress`] display shows it as an
//! indicatif bar on a terminal (failed dates printed above the bar), as a log line
//! (`[3/10] 20240104: 70000 rows -> 12 groups, out/20240104.parquet (1.25M rows/s
//! overall)`) when stderr is not a terminal, or not at all when quiet.
//!
//! The processes that `vizflow cluster --local` starts do not print their progress:
//! with [`MESSAGES_ON_STDOUT`] set, each writes one [`ProcessMessage`] per line on its
//! standard output, as JSON, and the supervisor shows them in its own display, each
//! line prefixed with the process (`[process 1] [3/10] ...`). No log line is read back.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use chrono::NaiveDate;

use crate::calendar;

/// How to show progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Log lines (to stderr).
    Log,
    /// Nothing.
    Quiet,
    /// One [`ProcessMessage`] per line, as JSON, on standard output: a process of
    /// `vizflow cluster --local` tells its supervisor (see [`MESSAGES_ON_STDOUT`]).
    Messages,
}

/// Set by `vizflow cluster --local` for the processes it starts: their progress goes
/// to standard output as [`ProcessMessage`]s ([`ProgressStyle::Messages`]), for the
/// supervisor to show.
pub const MESSAGES_ON_STDOUT: &str = "VIZFLOW_MESSAGES_ON_STDOUT";

/// What a process of a local cluster tells its supervisor, one JSON object per line:
/// `{"message":"date","done":1,"total":3,"date":20240102,"status":{"written":{...}},
/// "rows_per_second":1250000.0}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub enum ProcessMessage {
    /// A date is done (written, skipped, failed or not run).
    Date(DateProgress),
}

/// One finished date, as the progress display shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DateProgress {
    /// Dates done so far by this process, this one included.
    pub done: usize,
    /// Dates this process reports in all.
    pub total: usize,
    /// The date (`YYYYMMDD` on the wire).
    #[serde(with = "date_key")]
    pub date: NaiveDate,
    /// What happened to it.
    pub status: DateProgressStatus,
    /// Input rows per second of this process since its run began.
    pub rows_per_second: f64,
}

/// What happened to a date, as the progress display says it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateProgressStatus {
    /// Its partial was written.
    Written {
        /// Input rows read.
        rows: u64,
        /// Groups (rows of the partial).
        groups: usize,
        /// The partial, as displayed.
        partial: String,
        /// Late rows dropped (`[stream] late = "drop"`).
        #[serde(default)]
        late_rows: u64,
        /// Provisional results written beside the partial (`[stream] emit_every`).
        #[serde(default)]
        provisional: u64,
    },
    /// An existing partial from the same pipeline was kept.
    Skipped,
    /// The date failed.
    Failed {
        /// Why, starting with the date.
        error: String,
    },
    /// Not run: an earlier date failed and the run was `--fail-fast`.
    NotRun,
}

impl DateProgress {
    /// What happened, as the log line says it.
    fn status_text(&self) -> String {
        match &self.status {
            DateProgressStatus::Written {
                rows,
                groups,
                partial,
                late_rows,
                provisional,
            } => {
                let late = match *late_rows {
                    0 => String::new(),
                    // Many late rows: the input is not in event order within the
                    // lateness, which is more likely a setting to fix than a feed.
                    n if n.saturating_mul(100) >= (*rows).max(1) => format!(
                        " ({n} late, dropped: {:.1}% of the date's rows; an input out of \
                         event order by more than [stream] lateness wants a larger lateness, \
                         or no [stream]; see late_row_ids in the report)",
                        100.0 * n as f64 / (*rows).max(1) as f64
                    ),
                    n => format!(" ({n} late, dropped; see late_row_ids in the report)"),
                };
                let provisional = match provisional {
                    0 => String::new(),
                    n => format!(", {n} provisional results beside it"),
                };
                format!("{rows} rows{late} -> {groups} groups, {partial}{provisional}")
            }
            DateProgressStatus::Skipped => "skipped (partial exists)".to_owned(),
            DateProgressStatus::Failed { error } => format!("FAILED: {error}"),
            DateProgressStatus::NotRun => {
                "not run (an earlier date failed, --fail-fast)".to_owned()
            }
        }
    }

    /// The log line: `[done/total] YYYYMMDD: status (R.RRM rows/s overall)`.
    pub fn log_line(&self) -> String {
        format!(
            "[{}/{}] {}: {} ({:.2}M rows/s overall)",
            self.done,
            self.total,
            calendar::format_date(self.date),
            self.status_text(),
            self.rows_per_second / 1e6
        )
    }

    fn failed(&self) -> bool {
        matches!(self.status, DateProgressStatus::Failed { .. })
    }
}

/// Where progress goes.
enum Sink {
    Bar(indicatif::ProgressBar),
    Log,
    Quiet,
    Messages,
}

/// The progress display of one run, or of the processes of a local cluster together.
pub struct Progress {
    sink: Sink,
    /// For a cluster's supervisor: each process's number of dates, from its messages.
    process_totals: Option<Vec<u64>>,
    started: Instant,
    rows: u64,
}

impl Progress {
    /// The display of a run of `dates` dates in this process.
    pub fn run(style: ProgressStyle, dates: usize) -> Progress {
        let sink = match style {
            ProgressStyle::Messages => Sink::Messages,
            _ => Progress::sink(
                style,
                "{elapsed_precise} [{bar:30}] {pos}/{len} dates  {msg}  ETA {eta}",
                dates,
            ),
        };
        Progress {
            sink,
            process_totals: None,
            started: Instant::now(),
            rows: 0,
        }
    }

    /// The display of the `processes` processes of a local cluster.
    pub fn cluster(style: ProgressStyle, processes: usize) -> Progress {
        let style = match style {
            ProgressStyle::Messages => ProgressStyle::Log,
            style => style,
        };
        Progress {
            sink: Progress::sink(
                style,
                "{elapsed_precise} [{bar:30}] {pos}/{len} dates  ETA {eta}",
                0,
            ),
            process_totals: Some(vec![0; processes]),
            started: Instant::now(),
            rows: 0,
        }
    }

    fn sink(style: ProgressStyle, template: &str, length: usize) -> Sink {
        let terminal = std::io::stderr().is_terminal();
        match style {
            ProgressStyle::Auto if terminal => {
                let bar = indicatif::ProgressBar::new(length as u64);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                Sink::Bar(bar)
            }
            ProgressStyle::Quiet => Sink::Quiet,
            _ => Sink::Log,
        }
    }

    /// A date of this process is done, with `rows` input rows read and `status`.
    pub fn date(
        &mut self,
        date: NaiveDate,
        rows: u64,
        status: DateProgressStatus,
        done: usize,
        total: usize,
    ) {
        self.rows += rows;
        let rows_per_second = self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let progress = DateProgress {
            done,
            total,
            date,
            status,
            rows_per_second,
        };
        match &self.sink {
            Sink::Bar(bar) => {
                bar.set_message(format!("{:.2}M rows/s", rows_per_second / 1e6));
                bar.inc(1);
                if progress.failed() {
                    bar.println(format!(
                        "{}: {}",
                        calendar::format_date(date),
                        progress.status_text()
                    ));
                }
            }
            Sink::Log => eprintln!("{}", progress.log_line()),
            Sink::Quiet => {}
            Sink::Messages => send(&ProcessMessage::Date(progress)),
        }
    }

    /// A message from process `process` of a local cluster.
    pub fn process_message(&mut self, process: usize, message: ProcessMessage) {
        let ProcessMessage::Date(progress) = message;
        match &self.sink {
            Sink::Bar(bar) => {
                if let Some(totals) = self.process_totals.as_mut() {
                    totals[process] = progress.total as u64;
                    bar.set_length(totals.iter().sum());
                }
                bar.inc(1);
                if progress.failed() {
                    bar.println(format!("[process {process}] {}", progress.log_line()));
                }
            }
            Sink::Log | Sink::Messages => {
                eprintln!("[process {process}] {}", progress.log_line())
            }
            Sink::Quiet => {}
        }
    }

    /// A line process `process` of a local cluster wrote on stderr, passed on.
    pub fn process_output(&self, process: usize, line: &str) {
        self.message(&format!("[process {process}] {line}"));
    }

    /// A line of the supervisor's own, above the bar when there is one.
    pub fn message(&self, message: &str) {
        match &self.sink {
            Sink::Bar(bar) => bar.println(message),
            _ => eprintln!("{message}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Sink::Bar(bar) = &self.sink {
            bar.finish_and_clear();
        }
    }
}

/// Writes `message` as one line of JSON on standard output. A message that cannot be
/// sent is said on stderr (which the supervisor passes on), not dropped silently.
fn send(message: &ProcessMessage) {
    let sent = serde_json::to_string(message)
        .map_err(std::io::Error::from)
        .and_then(|json| writeln!(std::io::stdout().lock(), "{json}"));
    if let Err(error) = sent {
        eprintln!("error: cannot send a progress message to `vizflow cluster`: {error}");
    }
}

/// A date as its `YYYYMMDD` number on the wire.
mod date_key {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer};
    use vizflow_operators::time::{date_key, date_of_key};

    pub fn serialize<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(date_key(*date))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        Ok(date_of_key(u32::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_goes_through_json_unchanged_and_logs_as_before() {
        let date = NaiveDate::from_ymd_opt(2024, 1, 4).unwrap();
        let message = ProcessMessage::Date(DateProgress {
            done: 2,
            total: 3,
            date,
            status: DateProgressStatus::Written {
                rows: 70_000,
                groups: 12,
                partial: "out/20240104.parquet".into(),
                late_rows: 0,
                provisional: 0,
            },
            rows_per_second: 1_234_567.891,
        });
        let json = serde_json::to_string(&message).unwrap();
        assert!(json.starts_with(r#"{"message":"date","done":2,"total":3,"date":20240104,"#));
        let back: ProcessMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, message);
        let ProcessMessage::Date(progress) = back;
        assert_eq!(
            progress.log_line(),
            "[2/3] 20240104: 70000 rows -> 12 groups, out/20240104.parquet (1.23M rows/s overall)"
        );
    }

    /// The only date of a run, written: 70,000 rows, 12 groups.
    fn written(late_rows: u64, provisional: u64) -> DateProgress {
        DateProgress {
            done: 1,
            total: 1,
            date: NaiveDate::from_ymd_opt(2024, 1, 4).unwrap(),
            status: DateProgressStatus::Written {
                rows: 70_000,
                groups: 12,
                partial: "out/20240104.parquet".into(),
                late_rows,
                provisional,
            },
            rows_per_second: 1e6,
        }
    }

    #[test]
    fn a_date_with_late_rows_says_how_many_were_dropped() {
        assert_eq!(
            written(17, 240).log_line(),
            "[1/1] 20240104: 70000 rows (17 late, dropped; see late_row_ids in the report) -> \
             12 groups, out/20240104.parquet, 240 provisional results beside it (1.00M rows/s \
             overall)"
        );
    }

    #[test]
    fn a_date_with_many_late_rows_says_what_to_change() {
        let line = |late_rows| written(late_rows, 0).log_line();
        assert_eq!(
            line(35_000),
            "[1/1] 20240104: 70000 rows (35000 late, dropped: 50.0% of the date's rows; an \
             input out of event order by more than [stream] lateness wants a larger lateness, \
             or no [stream]; see late_row_ids in the report) -> 12 groups, \
             out/20240104.parquet (1.00M rows/s overall)"
        );
        // Under 1% of the rows: counted, without the advice.
        assert!(!line(699).contains("lateness"));
        assert!(line(700).contains("1.0% of the date's rows"));
    }

    #[test]
    fn failed_and_not_run_dates_log_as_before() {
        let date = NaiveDate::from_ymd_opt(2024, 1, 5).unwrap();
        let line = |status| DateProgress {
            done: 1,
            total: 1,
            date,
            status,
            rows_per_second: 0.0,
        };
        assert_eq!(
            line(DateProgressStatus::Failed {
                error: "20240105: bad".into()
            })
            .log_line(),
            "[1/1] 20240105: FAILED: 20240105: bad (0.00M rows/s overall)"
        );
        assert_eq!(
            line(DateProgressStatus::NotRun).log_line(),
            "[1/1] 20240105: not run (an earlier date failed, --fail-fast) (0.00M rows/s overall)"
        );
    }
}
