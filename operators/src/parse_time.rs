//! parse_time: turns a timestamp column into `elapsed_ms`, the trading time since the first
//! session's start on a market's [`TradingClock`] (SEMANTICS.md, "parse_time").
//!
//! The kernel, [`elapsed_ms`], converts one Arrow array for one date:
//!
//! ```
//! use arrow::array::Int64Array;
//! use vizflow_operators::clock::{Session, TradingClock};
//! use vizflow_operators::parse_time::{OutOfSession, TimestampFormat, elapsed_ms};
//!
//! let cn = TradingClock::new(
//!     chrono_tz::Asia::Shanghai,
//!     vec![
//!         Session { start_ms: 34_200_000, end_ms: 41_400_000 },
//!         Session { start_ms: 46_800_000, end_ms: 54_000_000 },
//!     ],
//! )
//! .unwrap();
//! let ticktime = Int64Array::from(vec![93_000_500, 121_000_000, 130_000_000]);
//! let date = chrono::NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
//! let times =
//!     elapsed_ms(&ticktime, TimestampFormat::Auto, &cn, date, OutOfSession::Clamp).unwrap();
//! assert_eq!(times.elapsed_ms.values(), &[500, 7_200_000, 7_200_000]);
//! assert_eq!(times.clamped, 1); // 12:10, lunch break
//! ```

// ---- kernel ----

use std::fmt;

use arrow::array::{
    Array, AsArray, BooleanArray, BooleanBufferBuilder, Int64Array, StringArrayType, UInt32Array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, NaiveTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::batch::SelectedRows;
use crate::clock::{TradingClock, format_ms_of_day};
use crate::columns::{ELAPSED_MS, ELAPSED_SECONDS, ROW_ID};

const MS_PER_HOUR: i64 = 3_600_000;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// How an integer or Float64 timestamp column is encoded. Ignored for Arrow `Timestamp` and
/// string columns, whose type fixes the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// Decide from the largest absolute value in the array: <= 235_959 -> `Hhmmss`,
    /// <= 235_959_999 -> `Hhmmssmmm`, < 1e11 -> epoch seconds, < 1e14 -> epoch ms,
    /// < 1e17 -> epoch us, else epoch ns. An explicit format is safer: an array holding only
    /// early times (a crypto file's first rows, 00:00:01.000 = 1000) is ambiguous.
    #[default]
    Auto,
    /// Local wall-clock `HHMMSSmmm` as an integer: 93000500 is 09:30:00.500.
    Hhmmssmmm,
    /// Local wall-clock `HHMMSS` as an integer: 93000 is 09:30:00.
    Hhmmss,
    /// Seconds since the Unix epoch, an instant converted into the clock's time zone.
    EpochSeconds,
    /// Milliseconds since the Unix epoch.
    EpochMillis,
    /// Microseconds since the Unix epoch.
    EpochMicros,
    /// Nanoseconds since the Unix epoch.
    EpochNanos,
}

/// What to do with a row outside every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfSession {
    /// Clamp (before the open -> 0, in a break -> end of the previous session, after the
    /// close -> the day's total) and count the row in [`ElapsedTimes::clamped`].
    #[default]
    Clamp,
    /// Mark the row in [`ElapsedTimes::keep`] and count it in [`ElapsedTimes::dropped`].
    Drop,
    /// Fail with [`TimeError::OutOfSession`].
    Error,
}

/// Result of converting one array of timestamps.
#[derive(Clone, Debug)]
pub struct ElapsedTimes {
    /// Trading ms since the first session's start; no nulls. 0 for dropped rows.
    pub elapsed_ms: Int64Array,
    /// Some only under [`OutOfSession::Drop`] when a row was dropped: true = keep the row.
    pub keep: Option<BooleanArray>,
    /// Rows clamped into the sessions.
    pub clamped: u64,
    /// Rows dropped.
    pub dropped: u64,
}

/// Why a timestamp column could not be converted. Rows are 0-based within the array; the
/// caller adds the date, file and column.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    /// A number that is not a valid time in its encoding.
    #[error("invalid {encoding} timestamp {value} at row {row}: {reason}")]
    Invalid {
        /// Row within the array.
        row: usize,
        /// The value as text.
        value: String,
        /// The encoding, e.g. `HHMMSSmmm` or `epoch seconds (auto-detected)`.
        encoding: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A string that is not `HH:MM:SS[.fff]`.
    #[error(
        "invalid time string {value:?} at row {row}: {reason}; expected HH:MM:SS or HH:MM:SS.fff"
    )]
    InvalidString {
        /// Row within the array.
        row: usize,
        /// The string.
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A null timestamp.
    #[error("null timestamp at row {row}; fill or filter out rows without a timestamp first")]
    Null {
        /// Row within the array.
        row: usize,
    },
    /// A column type that holds no supported timestamp encoding.
    #[error(
        "unsupported timestamp column type {data_type}; supported: integers (HHMMSSmmm, \
         HHMMSS, epoch s/ms/us/ns), Float64 holding integral values, Timestamp of any unit \
         with or without a time zone, Utf8/LargeUtf8/Utf8View \"HH:MM:SS[.fff]\""
    )]
    UnsupportedType {
        /// The column's type.
        data_type: DataType,
    },
    /// An integer column that does not fit Int64 (UInt64 above i64::MAX), or a column of
    /// digit strings with a value that is not a number.
    #[error("cannot read the {data_type} timestamp column as Int64: {source}")]
    Cast {
        /// The column's type.
        data_type: DataType,
        /// Arrow's complaint, naming the value.
        source: ArrowError,
    },
    /// A row outside the sessions under [`OutOfSession::Error`].
    #[error(
        "row {row} (value {value}) at {time} is outside the sessions {sessions}; \
         use out_of_session = \"clamp\" or \"drop\""
    )]
    OutOfSession {
        /// Row within the array.
        row: usize,
        /// The value as text.
        value: String,
        /// Local wall-clock time of the row, as by [`format_ms_of_day`].
        time: String,
        /// The clock's sessions and time zone.
        sessions: String,
    },
}

/// Converts one timestamp column of `date` into `elapsed_ms` on `clock`.
///
/// Accepted: integers of any width as `HHMMSSmmm`, `HHMMSS` (local wall-clock time) or epoch
/// s/ms/us/ns (instants) per `format`, also as strings of digits ("093000000"); Float64 holding the same as integral values (NaN is an
/// error; Float32 is rejected as it cannot hold `HHMMSSmmm` exactly); Arrow `Timestamp` of
/// any unit, without a zone as local wall-clock time, with a zone as an instant;
/// `HH:MM:SS[.f]` strings (1-9 fraction digits, truncated to ms). Instants are converted into
/// the clock's zone and measured from the local midnight starting `date`, so an instant on the
/// next local day lands after the close and one on the previous day before the open; wall-clock
/// times are as read, so on a DST day 09:30 is still 09:30. Nulls are errors.
pub fn elapsed_ms(
    column: &dyn Array,
    format: TimestampFormat,
    clock: &TradingClock,
    date: NaiveDate,
    policy: OutOfSession,
) -> Result<ElapsedTimes, TimeError> {
    let kernel = Kernel {
        clock,
        policy,
        nulls: column.nulls(),
    };
    let data_type = column.data_type();
    if digit_strings(column) {
        // HHMMSSmmm or epoch times as text ("093000000", a CSV column kept as text for
        // its leading zero): read as the integers they spell.
        let ints = int64s(column)?;
        return elapsed_ms(ints.as_ref(), format, clock, date, policy);
    }
    match data_type {
        DataType::Float64 => {
            let values = column.as_primitive::<Float64Type>().values();
            let max_abs = || values.iter().fold(0f64, |max, v| max.max(v.abs())) as u64;
            kernel.numbers(values.iter().copied(), format, max_abs, date, float_to_int)
        }
        DataType::Timestamp(unit, zone) => {
            let raw = int64s(column)?;
            let values = raw.as_primitive::<Int64Type>().values().iter().copied();
            let label = data_type.to_string();
            let unit = *unit;
            if zone.is_some() {
                let day = LocalDay::new(clock.time_zone(), date);
                kernel.run(values, &label, |v| Ok(day.ms_of_day(to_millis(v, unit)?)))
            } else {
                let midnight_ms = naive_midnight_ms(date);
                kernel.run(values, &label, |v| {
                    Ok(to_millis(v, unit)?.saturating_sub(midnight_ms))
                })
            }
        }
        DataType::Utf8 => kernel.strings(column.as_string::<i32>()),
        DataType::LargeUtf8 => kernel.strings(column.as_string::<i64>()),
        DataType::Utf8View => kernel.strings(column.as_string_view()),
        integer if integer.is_integer() => {
            let ints = int64s(column)?;
            let values = ints.as_primitive::<Int64Type>().values();
            let max_abs = || values.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
            kernel.numbers(values.iter().copied(), format, max_abs, date, Ok)
        }
        _ => Err(TimeError::UnsupportedType {
            data_type: data_type.clone(),
        }),
    }
}

/// Whether `column` holds strings whose first value is a (signed) number of digits.
fn digit_strings(column: &dyn Array) -> bool {
    fn first_is_digits<'a>(mut strings: impl Iterator<Item = Option<&'a str>>) -> bool {
        let first = strings.find_map(|s| s).unwrap_or_default();
        let digits = first.strip_prefix('-').unwrap_or(first);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    }
    match column.data_type() {
        DataType::Utf8 => first_is_digits(column.as_string::<i32>().iter()),
        DataType::LargeUtf8 => first_is_digits(column.as_string::<i64>().iter()),
        DataType::Utf8View => first_is_digits(column.as_string_view().iter()),
        _ => false,
    }
}

/// The per-call state shared by every encoding's row loop.
struct Kernel<'a> {
    clock: &'a TradingClock,
    policy: OutOfSession,
    nulls: Option<&'a NullBuffer>,
}

impl Kernel<'_> {
    /// Integer or float values, resolving `Auto` from the largest absolute value.
    fn numbers<T: Copy + fmt::Display>(
        &self,
        values: impl Iterator<Item = T>,
        format: TimestampFormat,
        max_abs: impl FnOnce() -> u64,
        date: NaiveDate,
        as_int: impl Fn(T) -> Result<i64, Invalid>,
    ) -> Result<ElapsedTimes, TimeError> {
        let encoding = Encoding::resolve(format, max_abs);
        let auto = if format == TimestampFormat::Auto {
            " (auto-detected)"
        } else {
            ""
        };
        let label = format!("{encoding}{auto}");
        match encoding {
            Encoding::Hhmmssmmm => self.run(values, &label, |v| hhmmssmmm(as_int(v)?)),
            Encoding::Hhmmss => self.run(values, &label, |v| hhmmss(as_int(v)?)),
            Encoding::Epoch(unit) => {
                let day = LocalDay::new(self.clock.time_zone(), date);
                self.run(values, &label, |v| match as_int(v)? {
                    ..0 => Err(Invalid::Negative),
                    v => Ok(day.ms_of_day(to_millis(v, unit)?)),
                })
            }
        }
    }

    fn strings<'s>(&self, strings: impl StringArrayType<'s>) -> Result<ElapsedTimes, TimeError> {
        let values = strings.iter().map(Option::unwrap_or_default);
        self.run(values, "", |text| {
            let time = NaiveTime::parse_from_str(text, "%H:%M:%S%.f").map_err(Invalid::Text)?;
            let millis = i64::from(time.nanosecond() / 1_000_000);
            Ok(i64::from(time.num_seconds_from_midnight()) * 1000 + millis)
        })
    }

    /// The row loop: every encoding ends here with its own `to_ms_of_day`, monomorphised so
    /// the `HHMMSSmmm` path stays a tight integer loop.
    fn run<T: Copy + fmt::Display>(
        &self,
        values: impl Iterator<Item = T>,
        encoding: &str,
        to_ms_of_day: impl Fn(T) -> Result<i64, Invalid>,
    ) -> Result<ElapsedTimes, TimeError> {
        let first_null = self.nulls.filter(|nulls| nulls.null_count() > 0);
        if let Some(row) = first_null.and_then(|nulls| nulls.iter().position(|valid| !valid)) {
            return Err(TimeError::Null { row });
        }
        let mut elapsed = Vec::with_capacity(values.size_hint().0);
        let (mut clamped, mut dropped_rows) = (0, Vec::new());
        for (row, value) in values.enumerate() {
            let ms = to_ms_of_day(value).map_err(|why| why.at(row, value, encoding))?;
            let (mut elapsed_ms, outside) = self.clock.elapsed_ms_clamped(ms);
            if outside {
                match self.policy {
                    OutOfSession::Clamp => clamped += 1,
                    OutOfSession::Drop => {
                        dropped_rows.push(row);
                        elapsed_ms = 0;
                    }
                    OutOfSession::Error => {
                        let (value, time) = (value.to_string(), format_ms_of_day(ms));
                        let sessions = self.clock.to_string();
                        return Err(TimeError::OutOfSession {
                            row,
                            value,
                            time,
                            sessions,
                        });
                    }
                }
            }
            elapsed.push(elapsed_ms);
        }
        let keep = (!dropped_rows.is_empty()).then(|| {
            let mut keep = BooleanBufferBuilder::new(elapsed.len());
            keep.append_n(elapsed.len(), true);
            for &row in &dropped_rows {
                keep.set_bit(row, false);
            }
            BooleanArray::new(keep.finish(), None)
        });
        let dropped = dropped_rows.len() as u64;
        Ok(ElapsedTimes {
            elapsed_ms: Int64Array::from(elapsed),
            keep,
            clamped,
            dropped,
        })
    }
}

/// An integer encoding after resolving `Auto`.
#[derive(Clone, Copy)]
enum Encoding {
    Hhmmssmmm,
    Hhmmss,
    Epoch(TimeUnit),
}

impl Encoding {
    fn resolve(format: TimestampFormat, max_abs: impl FnOnce() -> u64) -> Self {
        use TimeUnit::*;
        match format {
            TimestampFormat::Auto => match max_abs() {
                max if max <= 235_959 => Self::Hhmmss,
                max if max <= 235_959_999 => Self::Hhmmssmmm,
                max if max < 100_000_000_000 => Self::Epoch(Second),
                max if max < 100_000_000_000_000 => Self::Epoch(Millisecond),
                max if max < 100_000_000_000_000_000 => Self::Epoch(Microsecond),
                _ => Self::Epoch(Nanosecond),
            },
            TimestampFormat::Hhmmssmmm => Self::Hhmmssmmm,
            TimestampFormat::Hhmmss => Self::Hhmmss,
            TimestampFormat::EpochSeconds => Self::Epoch(Second),
            TimestampFormat::EpochMillis => Self::Epoch(Millisecond),
            TimestampFormat::EpochMicros => Self::Epoch(Microsecond),
            TimestampFormat::EpochNanos => Self::Epoch(Nanosecond),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hhmmssmmm => "HHMMSSmmm",
            Self::Hhmmss => "HHMMSS",
            Self::Epoch(TimeUnit::Second) => "epoch seconds",
            Self::Epoch(TimeUnit::Millisecond) => "epoch milliseconds",
            Self::Epoch(TimeUnit::Microsecond) => "epoch microseconds",
            Self::Epoch(TimeUnit::Nanosecond) => "epoch nanoseconds",
        })
    }
}

/// Why one value is not a time; small and `Copy` so the row loop's `Result` stays cheap.
#[derive(Clone, Copy)]
enum Invalid {
    Negative,
    NotANumber,
    NotWhole,
    TooLarge,
    Field {
        name: &'static str,
        value: i64,
        max: i64,
    },
    Text(chrono::ParseError),
}

impl Invalid {
    #[cold]
    fn at(self, row: usize, value: impl fmt::Display, encoding: &str) -> TimeError {
        let value = value.to_string();
        let reason = match self {
            Self::Negative => "negative value; check [time] format".to_string(),
            Self::NotANumber => "NaN is not a time; fill or filter out such rows first".into(),
            Self::NotWhole => "not a whole number; check [time] format".into(),
            Self::TooLarge => "too large for a timestamp; check [time] format".into(),
            Self::Field { name, value, max } => {
                format!("{name} {value} is out of range (expected 0-{max}); check [time] format")
            }
            Self::Text(error) => {
                return TimeError::InvalidString {
                    row,
                    value,
                    reason: error.to_string(),
                };
            }
        };
        TimeError::Invalid {
            row,
            value,
            encoding: encoding.to_string(),
            reason,
        }
    }
}

#[inline]
fn hhmmssmmm(value: i64) -> Result<i64, Invalid> {
    match value {
        ..0 => Err(Invalid::Negative),
        _ => Ok(hhmmss(value / 1000)? + value % 1000),
    }
}

#[inline]
fn hhmmss(value: i64) -> Result<i64, Invalid> {
    if value < 0 {
        return Err(Invalid::Negative);
    }
    let (hour, minute, second) = (value / 10_000, value / 100 % 100, value % 100);
    let check = |name, value, max| {
        if value > max {
            Err(Invalid::Field { name, value, max })
        } else {
            Ok(())
        }
    };
    check("hour", hour, 23)?;
    check("minute", minute, 59)?;
    check("second", second, 59)?;
    Ok(((hour * 60 + minute) * 60 + second) * 1000)
}

fn float_to_int(value: f64) -> Result<i64, Invalid> {
    match value {
        _ if value.is_nan() => Err(Invalid::NotANumber),
        _ if value.fract() != 0.0 => Err(Invalid::NotWhole),
        _ if value.abs() >= i64::MAX as f64 => Err(Invalid::TooLarge),
        _ => Ok(value as i64),
    }
}

/// Whole ms, rounding toward the past.
fn to_millis(value: i64, unit: TimeUnit) -> Result<i64, Invalid> {
    match unit {
        TimeUnit::Second => value.checked_mul(1000).ok_or(Invalid::TooLarge),
        TimeUnit::Millisecond => Ok(value),
        TimeUnit::Microsecond => Ok(value.div_euclid(1000)),
        TimeUnit::Nanosecond => Ok(value.div_euclid(1_000_000)),
    }
}

/// Integer, timestamp and digit-string columns as Int64 values; fails for UInt64 above
/// i64::MAX and for a string that is not a number.
fn int64s(column: &dyn Array) -> Result<arrow::array::ArrayRef, TimeError> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    cast_with_options(column, &DataType::Int64, &options).map_err(|source| TimeError::Cast {
        data_type: column.data_type().clone(),
        source,
    })
}

/// `date` 00:00 read as if it were UTC: wall-clock ms of a row = its naive ms minus this.
fn naive_midnight_ms(date: NaiveDate) -> i64 {
    date.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

/// Converts UTC instants into wall-clock ms since the local midnight starting a date.
struct LocalDay {
    time_zone: Tz,
    midnight_ms: i64,
    /// The zone's UTC offset when it is constant around the date, so rows need no lookup.
    fixed_offset_ms: Option<i64>,
}

impl LocalDay {
    fn new(time_zone: Tz, date: NaiveDate) -> Self {
        let midnight_ms = naive_midnight_ms(date);
        // Instants outside [midnight - 1 day, midnight + 3 days] fall before the open or past
        // the latest close (48 h) whatever the offset (at most 14 h). If the offset is the same
        // at every 6 h across that window (zones never change twice within 6 h), it is constant.
        let probe =
            |hours: i64| utc_offset_ms(time_zone, midnight_ms - MS_PER_DAY + hours * MS_PER_HOUR);
        let first = probe(0);
        let constant = (6..=96).step_by(6).all(|hours| probe(hours) == first);
        Self {
            time_zone,
            midnight_ms,
            fixed_offset_ms: constant.then_some(first),
        }
    }

    #[inline]
    fn ms_of_day(&self, utc_ms: i64) -> i64 {
        let offset = self
            .fixed_offset_ms
            .unwrap_or_else(|| utc_offset_ms(self.time_zone, utc_ms));
        utc_ms
            .saturating_add(offset)
            .saturating_sub(self.midnight_ms)
    }
}

fn utc_offset_ms(time_zone: Tz, utc_ms: i64) -> i64 {
    DateTime::from_timestamp_millis(utc_ms).map_or(0, |instant| {
        let offset = time_zone.offset_from_utc_datetime(&instant.naive_utc());
        i64::from(offset.fix().local_minus_utc()) * 1000
    })
}

// ---- operator ----

/// What `parse_time` does.
#[derive(Clone, Debug)]
pub struct ParseTimeSpec {
    /// The timestamp column.
    pub column: String,
    /// Its encoding.
    pub format: TimestampFormat,
    /// The market's trading clock.
    pub clock: TradingClock,
    /// What to do with rows outside the sessions.
    pub policy: OutOfSession,
    /// A label for messages, e.g. the market's name.
    pub market: String,
    /// When set, the columns to keep afterwards (in this order), e.g. without the raw
    /// timestamp; `elapsed_seconds` is only computed when kept.
    pub keep: Option<Vec<String>>,
}

impl TimeError {
    /// Whose fault the error is: a column type that holds no timestamp encoding is the
    /// configuration's (the wrong column), every other error the data's.
    pub fn fault(&self) -> crate::Fault {
        match self {
            TimeError::UnsupportedType { .. } => crate::Fault::Config,
            _ => crate::Fault::Data,
        }
    }

    /// The same error with its row replaced by `row(old)`, e.g. to report a row of the
    /// file instead of a row of the batch.
    pub fn map_row(self, row: impl Fn(usize) -> usize) -> TimeError {
        match self {
            TimeError::Invalid {
                row: r,
                value,
                encoding,
                reason,
            } => TimeError::Invalid {
                row: row(r),
                value,
                encoding,
                reason,
            },
            TimeError::InvalidString {
                row: r,
                value,
                reason,
            } => TimeError::InvalidString {
                row: row(r),
                value,
                reason,
            },
            TimeError::Null { row: r } => TimeError::Null { row: row(r) },
            TimeError::OutOfSession {
                row: r,
                value,
                time,
                sessions,
            } => TimeError::OutOfSession {
                row: row(r),
                value,
                time,
                sessions,
            },
            other => other,
        }
    }
}

/// Why [`parse_time_batch`] failed on a batch: the [`TimeError`] of its timestamp
/// column, with the column and market, or a missing column.
#[derive(Debug, thiserror::Error)]
pub enum ParseTimeError {
    /// The batch has no timestamp column.
    #[error("parse_time: timestamp column '{column}' is missing")]
    MissingColumn {
        /// The timestamp column.
        column: String,
    },
    /// The timestamp column could not be converted; the row is the file's.
    #[error("parse_time: column '{column}' ({market} market): {source}")]
    Time {
        /// The timestamp column.
        column: String,
        /// The market whose clock the times are on.
        market: String,
        /// What is wrong with the column, naming the row of the file (boxed to keep the
        /// error small).
        source: Box<TimeError>,
    },
    /// Projecting or filtering the batch failed (a bug: the indices and the filter are
    /// the batch's own).
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

impl ParseTimeError {
    /// Whose fault the error is (see [`TimeError::fault`]; a missing column is the
    /// data's: the date's file lacks it).
    pub fn fault(&self) -> crate::Fault {
        match self {
            ParseTimeError::MissingColumn { .. } => crate::Fault::Data,
            ParseTimeError::Time { source, .. } => source.fault(),
            ParseTimeError::Arrow(_) => crate::Fault::Bug,
        }
    }
}

/// Adds `elapsed_ms` and `elapsed_seconds` to a batch of `date`, dropping rows under
/// [`OutOfSession::Drop`]. Errors name the column and the row of the file (from the
/// `row_id` column when the batch has one).
pub fn parse_time_batch(
    batch: &arrow::array::RecordBatch,
    spec: &ParseTimeSpec,
    date: NaiveDate,
) -> Result<(arrow::array::RecordBatch, ElapsedTimes), ParseTimeError> {
    let (out, times) = parse_time_unfiltered(batch, spec, date)?;
    let out = match &times.keep {
        Some(keep) => arrow::compute::filter_record_batch(&out, keep)?,
        None => out,
    };
    Ok((out, times))
}

/// [`parse_time_batch`] with the rows it keeps as a selection of the batch rather than
/// copied out of it (`None`: all of them): for a stage whose rows go on to the exchange
/// by symbol, which reads through a selection.
pub fn parse_time_selected(
    batch: &arrow::array::RecordBatch,
    spec: &ParseTimeSpec,
    date: NaiveDate,
) -> Result<(SelectedRows, ElapsedTimes), ParseTimeError> {
    let (out, times) = parse_time_unfiltered(batch, spec, date)?;
    let selection = (times.keep.as_ref())
        .map(|keep| UInt32Array::from_iter_values(keep.values().set_indices().map(|i| i as u32)));
    Ok(((out, selection), times))
}

/// [`parse_time_batch`] with the dropped rows left in, and `keep` in the times.
fn parse_time_unfiltered(
    batch: &arrow::array::RecordBatch,
    spec: &ParseTimeSpec,
    date: NaiveDate,
) -> Result<(arrow::array::RecordBatch, ElapsedTimes), ParseTimeError> {
    let column =
        batch
            .column_by_name(&spec.column)
            .ok_or_else(|| ParseTimeError::MissingColumn {
                column: spec.column.clone(),
            })?;
    let times = elapsed_ms(column.as_ref(), spec.format, &spec.clock, date, spec.policy).map_err(
        |error| {
            let row_ids = batch
                .column_by_name(ROW_ID)
                .map(|c| c.as_primitive::<arrow::datatypes::UInt64Type>().clone());
            ParseTimeError::Time {
                column: spec.column.clone(),
                market: spec.market.clone(),
                source: Box::new(
                    error.map_row(|r| row_ids.as_ref().map_or(r, |ids| ids.value(r) as usize)),
                ),
            }
        },
    )?;
    let mut columns = vec![(
        ELAPSED_MS.to_owned(),
        std::sync::Arc::new(times.elapsed_ms.clone()) as arrow::array::ArrayRef,
    )];
    if spec
        .keep
        .as_ref()
        .is_none_or(|keep| keep.iter().any(|c| c == ELAPSED_SECONDS))
    {
        let seconds: Int64Array = times.elapsed_ms.unary(|ms| ms.div_euclid(1000));
        columns.push((ELAPSED_SECONDS.to_owned(), std::sync::Arc::new(seconds)));
    }
    let mut out = crate::batch::with_columns(batch, columns);
    if let Some(keep) = &spec.keep {
        let schema = out.schema();
        let indices: Vec<usize> = keep
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        out = out.project(&indices)?;
    }
    Ok((out, times))
}

/// The `parse_time` operator.
pub trait ParseTime<'scope> {
    /// Adds `elapsed_ms` and `elapsed_seconds` to every batch (see the module docs).
    fn parse_time(
        self,
        spec: ParseTimeSpec,
        diagnostics: crate::report::Diagnostics,
    ) -> timely::dataflow::Stream<'scope, crate::time::Time, crate::batch::Batch>;
}

impl<'scope> ParseTime<'scope>
    for timely::dataflow::Stream<'scope, crate::time::Time, crate::batch::Batch>
{
    fn parse_time(
        self,
        spec: ParseTimeSpec,
        diagnostics: crate::report::Diagnostics,
    ) -> timely::dataflow::Stream<'scope, crate::time::Time, crate::batch::Batch> {
        crate::batch::map_batches(self, "ParseTime", diagnostics, parse_time_fn(spec))
    }
}

/// The `parse_time` operator's work on one batch of a date (`date_key`), counts
/// included: what the operator maps every batch with.
pub fn parse_time_fn(
    spec: ParseTimeSpec,
) -> impl FnMut(
    u32,
    arrow::array::RecordBatch,
    &crate::report::Diagnostics,
) -> Result<arrow::array::RecordBatch, ParseTimeError> {
    counted(spec, parse_time_batch)
}

/// [`parse_time_fn`] with the rows kept as a selection ([`parse_time_selected`]): what a
/// worker runs on a batch as it arrives when the pipeline streams.
pub fn parse_time_selected_fn(
    spec: ParseTimeSpec,
) -> impl FnMut(
    u32,
    arrow::array::RecordBatch,
    &crate::report::Diagnostics,
) -> Result<SelectedRows, ParseTimeError> {
    counted(spec, parse_time_selected)
}

/// A batch's rows with their times: [`parse_time_batch`] or [`parse_time_selected`].
type ParseFn<T> = fn(
    &arrow::array::RecordBatch,
    &ParseTimeSpec,
    NaiveDate,
) -> Result<(T, ElapsedTimes), ParseTimeError>;

/// `parse` on each batch of a date, its clamped and dropped rows counted.
fn counted<T>(
    spec: ParseTimeSpec,
    parse: ParseFn<T>,
) -> impl FnMut(u32, arrow::array::RecordBatch, &crate::report::Diagnostics) -> Result<T, ParseTimeError>
{
    move |date_key, batch, diagnostics| {
        let date = crate::time::date_of_key(date_key);
        let (out, times) = parse(&batch, &spec, date)?;
        diagnostics.add_all(
            date_key,
            [
                ("parse_time.clamped", times.clamped),
                ("parse_time.dropped", times.dropped),
            ],
        );
        Ok(out)
    }
}
