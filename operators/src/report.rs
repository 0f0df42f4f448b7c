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
}

impl DateReport {
    /// A count, 0 when absent.
    pub fn count(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Adds another part of the same date's report (another process's): counts add up,
    /// errors are kept once each, sorted, so the merged report does not depend on the
    /// order the parts arrived in.
    pub fn merge(&mut self, other: DateReport) {
        for (name, count) in other.counts {
            *self.counts.entry(name).or_default() += count;
        }
        self.errors.extend(other.errors);
        self.errors.sort();
        self.errors.dedup();
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

    /// Records an error that fails the date.
    pub fn error(&self, date_key: u32, message: String) {
        self.lock()
            .entry(date_key)
            .or_default()
            .errors
            .push(message);
    }

    /// True when the date has an error.
    pub fn has_error(&self, date_key: u32) -> bool {
        self.lock()
            .get(&date_key)
            .is_some_and(|r| !r.errors.is_empty())
    }

    /// Removes and returns a date's report.
    pub fn take(&self, date_key: u32) -> DateReport {
        self.lock().remove(&date_key).unwrap_or_default()
    }

    /// A copy of a date's report.
    pub fn get(&self, date_key: u32) -> DateReport {
        self.lock().get(&date_key).cloned().unwrap_or_default()
    }
}
