//! What happened to the rows of each date: counters and errors, shared by the
//! operators of all workers in a process.
//!
//! Operators record once per batch (never per row), under a short lock. A date with an
//! error is not written: the run reports the error with its date and goes on with the
//! other dates.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Counters and errors of one date.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DateReport {
    /// Named counts, e.g. `rows_read`, `parse_time.clamped`, `bin.null.alpha1`.
    pub counts: BTreeMap<String, u64>,
    /// Errors that make the date fail, each naming the stage, column, row and value.
    pub errors: Vec<String>,
    /// True when an error came from opening or reading the date's input file
    /// ([`Diagnostics::input_error`]): its message names the file, so a run need not.
    #[serde(default)]
    pub errors_name_input: bool,
    /// The `row_id`s of the date's late rows under `[stream] late = "drop"`, ascending,
    /// the first [`crate::watermark::LATE_ROW_IDS_SHOWN`] of them (all of them are
    /// counted as `stream.late_rows`).
    #[serde(default)]
    pub late_row_ids: Vec<u64>,
    /// Seconds each stage spent on the date, summed over the workers of this process
    /// (`vizflow bench` shows them). Not written to report files, which stay the same
    /// from run to run.
    #[serde(skip)]
    pub stage_seconds: BTreeMap<String, f64>,
}

impl DateReport {
    /// A count, 0 when absent.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Adds another part of the same date's report (another process's): counts add up,
    /// errors are collected (put in [`first_errors`] order once all parts are in).
    pub fn merge(&mut self, other: DateReport) {
        for (name, count) in other.counts {
            *self.counts.entry(name).or_default() += count;
        }
        self.errors.extend(other.errors);
        self.errors_name_input |= other.errors_name_input;
        self.add_late_row_ids(other.late_row_ids);
        for (stage, seconds) in other.stage_seconds {
            *self.stage_seconds.entry(stage).or_default() += seconds;
        }
    }

    /// Adds late rows' `row_id`s, keeping the first
    /// [`LATE_ROW_IDS_SHOWN`](crate::watermark::LATE_ROW_IDS_SHOWN).
    pub fn add_late_row_ids(&mut self, row_ids: impl IntoIterator<Item = u64>) {
        self.late_row_ids.extend(row_ids);
        self.late_row_ids.sort_unstable();
        self.late_row_ids.dedup();
        self.late_row_ids
            .truncate(crate::watermark::LATE_ROW_IDS_SHOWN);
    }
}

/// The shared diagnostics of a run, by date key (`YYYYMMDD`).
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    dates: Arc<Mutex<BTreeMap<u32, DateReport>>>,
}

impl Diagnostics {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, DateReport>> {
        // A poisoned lock means a worker panicked; the counters are still usable.
        self.dates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `amount` to a named count of a date. Zero amounts are not recorded.
    pub fn add(&self, date_key: u32, name: &str, amount: u64) {
        if amount > 0 {
            *self
                .lock()
                .entry(date_key)
                .or_default()
                .counts
                .entry(name.to_owned())
                .or_default() += amount;
        }
    }

    /// Adds several counts at once.
    pub fn add_all<'a>(&self, date_key: u32, counts: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut dates = self.lock();
        let report = dates.entry(date_key).or_default();
        for (name, amount) in counts {
            if amount > 0 {
                *report.counts.entry(name.to_owned()).or_default() += amount;
            }
        }
    }

    /// Adds the time since `started` to what `stage` spent on a date.
    pub fn time(&self, date_key: u32, stage: &str, started: std::time::Instant) {
        let seconds = started.elapsed().as_secs_f64();
        let mut dates = self.lock();
        let stages = &mut dates.entry(date_key).or_default().stage_seconds;
        match stages.get_mut(stage) {
            Some(total) => *total += seconds,
            None => {
                stages.insert(stage.to_owned(), seconds);
            }
        }
    }

    /// Records late rows that were dropped: counts them as `stream.late_rows` and lists
    /// their `row_id`s (the first of them) in the date's report.
    pub fn late_rows(&self, date_key: u32, row_ids: &[u64]) {
        if row_ids.is_empty() {
            return;
        }
        let mut dates = self.lock();
        let report = dates.entry(date_key).or_default();
        *report
            .counts
            .entry(crate::watermark::LATE_ROWS.to_owned())
            .or_default() += row_ids.len() as u64;
        report.add_late_row_ids(row_ids.iter().copied());
    }

    /// Records an error that fails the date.
    pub fn error(&self, date_key: u32, message: String) {
        self.lock()
            .entry(date_key)
            .or_default()
            .errors
            .push(message);
    }

    /// Records an error of opening or reading the date's input file, whose message
    /// names the file; it fails the date like [`Diagnostics::error`].
    ///
    /// ```
    /// use vizflow_operators::report::Diagnostics;
    /// let diagnostics = Diagnostics::default();
    /// diagnostics.error(20240102, "bin: alpha1 is NaN at row 3".into());
    /// assert!(!diagnostics.get(20240102).errors_name_input);
    /// diagnostics.input_error(20240102, "cannot read alpha_20240102.feather: gone".into());
    /// assert!(diagnostics.get(20240102).errors_name_input);
    /// ```
    pub fn input_error(&self, date_key: u32, message: String) {
        let mut dates = self.lock();
        let report = dates.entry(date_key).or_default();
        report.errors.push(message);
        report.errors_name_input = true;
    }

    /// True when the date has an error.
    pub fn has_error(&self, date_key: u32) -> bool {
        self.lock()
            .get(&date_key)
            .is_some_and(|r| !r.errors.is_empty())
    }

    /// The dates with something recorded, in date order.
    pub fn dates(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    /// Removes and returns a date's report, with every error as recorded (to be merged
    /// with other processes' parts, then put in [`first_errors`] order).
    pub fn take(&self, date_key: u32) -> DateReport {
        self.lock().remove(&date_key).unwrap_or_default()
    }

    /// A copy of a date's report, its errors in [`first_errors`] order.
    pub fn get(&self, date_key: u32) -> DateReport {
        let mut report = self.lock().get(&date_key).cloned().unwrap_or_default();
        report.errors = first_errors(std::mem::take(&mut report.errors));
        report
    }
}

/// How many of a date's errors a report shows.
pub const ERRORS_SHOWN: usize = 3;

/// A date's errors as a report shows them: each once, in natural order (numbers by
/// value, so `row 300` before `row 1000`: the first rows of the file first), the first
/// [`ERRORS_SHOWN`] of them and a last line saying how many more there were.
///
/// Workers report errors in whatever order they meet them, and every batch of a bad
/// column reports its own first bad row; this order makes the message the same for
/// any number of workers and batch sizes that find the same errors.
///
/// ```
/// use vizflow_operators::report::first_errors;
/// let errors = ["bad row 1000", "bad row 300", "bad row 20", "bad row 300", "bad row 9"];
/// assert_eq!(
///     first_errors(errors.map(String::from).to_vec()),
///     ["bad row 9", "bad row 20", "bad row 300", "and 1 more error"]
/// );
/// ```
pub fn first_errors(mut errors: Vec<String>) -> Vec<String> {
    errors.sort_by(|a, b| natural_order(a, b));
    errors.dedup();
    if errors.len() > ERRORS_SHOWN {
        let more = errors.len() - ERRORS_SHOWN;
        errors.truncate(ERRORS_SHOWN);
        errors.push(format!(
            "and {more} more error{}",
            if more == 1 { "" } else { "s" }
        ));
    }
    errors
}

/// Compares text with runs of ASCII digits compared by value.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (m, n) = (digits(a), digits(b));
                let trim = |s: &[u8]| -> usize { s.iter().take_while(|c| **c == b'0').count() };
                let (x, y) = (&a[trim(&a[..m]).min(m)..m], &b[trim(&b[..n]).min(n)..n]);
                let by_value = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
                if by_value != std::cmp::Ordering::Equal {
                    return by_value;
                }
                (a, b) = (&a[m..], &b[n..]);
            }
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => (a, b) = (&a[1..], &b[1..]),
        }
    }
}
