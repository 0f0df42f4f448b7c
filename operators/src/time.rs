//! The time model shared by replay and live feeds.
//!
//! A timely timestamp is a `u64` that packs the trading **date** (`YYYYMMDD`) in the
//! high 32 bits and a coarse **bucket** of trading time in the low 32 bits:
//!
//! ```text
//! time = (yyyymmdd << 32) | bucket        bucket = elapsed_ms / BUCKET_MS
//! ```
//!
//! The packing is a total order that agrees with calendar order, so dates flow through
//! one dataflow in sequence and a frontier tells which dates are complete.
//!
//! Timely times are only a *watermark*: operators never read a row's time from its
//! timely timestamp. The exact event time of a row is its `elapsed_ms` column (and
//! ties are broken by `row_id`), computed by `parse_time` from the data itself.
//!
//! * **Replay** (files) sends every row of a date at `(date, 0)` and then advances to
//!   the next date. A date is complete when the frontier passes [`date_end`].
//! * **Live feeds** may also advance the bucket within a date to say "no row earlier
//!   than this trading time will arrive any more". Keyed operators hold their state
//!   per date and emit when the date completes, so the results are the same in both
//!   modes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{Datelike, NaiveDate};

/// The timely timestamp type of every VizFlow dataflow.
pub type Time = u64;

/// The width of a bucket of trading time, in milliseconds.
pub const BUCKET_MS: i64 = 1_000;

/// Packs a date key (`YYYYMMDD`) and a bucket into a timestamp.
pub const fn pack(date_key: u32, bucket: u32) -> Time {
    ((date_key as u64) << 32) | bucket as u64
}

/// The date key (`YYYYMMDD`) of a timestamp.
pub const fn date_key_of(time: Time) -> u32 {
    (time >> 32) as u32
}

/// The bucket of a timestamp.
pub const fn bucket_of(time: Time) -> u32 {
    time as u32
}

/// The last timestamp of a date: once a frontier is past it, the date is complete.
pub const fn date_end(date_key: u32) -> Time {
    pack(date_key, u32::MAX)
}

/// The first timestamp of a date.
pub const fn date_start(date_key: u32) -> Time {
    pack(date_key, 0)
}

/// The bucket holding `elapsed_ms` (negative values fall into bucket 0).
pub fn bucket_for_elapsed(elapsed_ms: i64) -> u32 {
    (elapsed_ms.max(0) / BUCKET_MS).min(u32::MAX as i64 - 1) as u32
}

/// The time at which the keyed stage sends the provisional result of a date at
/// watermark `at_ms` (`[stream] emit_every`), and after which the aggregate builds it:
/// the bucket of `at_ms`. Once the frontier has passed it, every row at or before
/// `at_ms` is in.
pub fn provisional_time(date_key: u32, at_ms: i64) -> Time {
    pack(date_key, bucket_for_elapsed(at_ms))
}

/// `YYYYMMDD` as a number, e.g. 20240102.
pub fn date_key(date: NaiveDate) -> u32 {
    date.year() as u32 * 10_000 + date.month() * 100 + date.day()
}

/// The date of a `YYYYMMDD` key.
///
/// # Panics
/// Never for keys made by [`date_key`]; an invalid key gives the Unix epoch date,
/// which is only possible through a bug in the caller.
pub fn date_of_key(key: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt((key / 10_000) as i32, (key / 100) % 100, key % 100)
        .unwrap_or(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default())
}

/// The date of a timestamp.
pub fn date_of(time: Time) -> NaiveDate {
    date_of_key(date_key_of(time))
}

/// Which worker owns each date: the one that builds the date's partial (and, with
/// [`Partition::Date`](crate::batch::Partition::Date), reads and processes all its rows).
///
/// The engine assigns owners as dates begin (the `i`-th date begun goes to worker
/// `i mod peers`, the same in every process because every process begins the same
/// dates in the same order); operators read them when they route a date's data. A date
/// that was never assigned belongs to worker `date_key mod peers`.
#[derive(Clone, Debug, Default)]
pub struct DateOwners {
    owners: Arc<RwLock<BTreeMap<u32, usize>>>,
}

impl DateOwners {
    /// Makes `worker` (a global worker index) the owner of `date_key`.
    pub fn assign(&self, date_key: u32, worker: usize) {
        self.owners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(date_key, worker);
    }

    /// The owner of `date_key`, to be taken modulo the number of workers.
    pub fn worker_of(&self, date_key: u32) -> usize {
        self.owners
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&date_key)
            .copied()
            .unwrap_or(date_key as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_orders_by_date_then_bucket() {
        let d1 = date_key(NaiveDate::from_ymd_opt(2024, 1, 2).unwrap());
        let d2 = date_key(NaiveDate::from_ymd_opt(2024, 1, 3).unwrap());
        assert_eq!(d1, 20240102);
        assert!(pack(d1, 5) < pack(d1, 6));
        assert!(date_end(d1) < date_start(d2));
        assert_eq!(date_key_of(pack(d2, 7)), d2);
        assert_eq!(bucket_of(pack(d2, 7)), 7);
        assert_eq!(
            date_of(pack(d2, 0)),
            NaiveDate::from_ymd_opt(2024, 1, 3).unwrap()
        );
        assert_eq!(bucket_for_elapsed(14_400_000), 14_400);
        assert_eq!(bucket_for_elapsed(-5), 0);
    }
}
