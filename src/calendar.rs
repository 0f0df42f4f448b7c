//! Trading calendars and `--dates` specs. Dates are [`NaiveDate`]s, printed and parsed as
//! `YYYYMMDD`.
//!
//! ```
//! use vizflow::calendar::{TradingCalendar, format_date, parse_date, parse_date_spec};
//! let days = ["20240102", "20240103", "20240105"].map(|d| parse_date(d).unwrap());
//! let calendar = TradingCalendar::new(days);
//! let dates = parse_date_spec("20240101..20240104", &calendar).unwrap();
//! assert_eq!(dates.iter().map(|&d| format_date(d)).collect::<Vec<_>>(), ["20240102", "20240103"]);
//! assert_eq!(calendar.next(days[1]), Some(days[2]));
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use chrono::NaiveDate;

use crate::io::{DateFile, IoError};

/// Why a calendar, date or date spec could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// Text that is not a date.
    #[error("invalid date {value:?}; expected YYYYMMDD (e.g. 20240102) or YYYY-MM-DD")]
    InvalidDate {
        /// The text.
        value: String,
    },
    /// A file or directory that could not be read or decoded.
    #[error("cannot read {}: {message}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        message: String,
    },
    /// A calendar file that opens but does not decode (the message names the file).
    #[error(transparent)]
    File(#[from] IoError),
    /// A calendar file of an unknown kind.
    #[error(
        "calendar file {} is not .csv, .parquet or .feather; convert it, \
         or list the dates in a text file",
        path.display()
    )]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
    },
    /// A calendar file without a `date` column.
    #[error(
        "calendar file {} has no `date` column (columns: {columns}); \
         name the column `date` or keep a single column",
        path.display()
    )]
    NoDateColumn {
        /// The file.
        path: PathBuf,
        /// Its columns, comma-separated.
        columns: String,
    },
    /// A date column of a type that holds no dates.
    #[error(
        "the date column of {} is {data_type}; store YYYYMMDD integers or strings, \
         YYYY-MM-DD strings or Date32/Date64",
        path.display()
    )]
    UnsupportedColumnType {
        /// The file.
        path: PathBuf,
        /// The column's type.
        data_type: DataType,
    },
    /// A value of a calendar file that is not a date.
    #[error(
        "invalid date {value:?} in {} at row {row}; expected YYYYMMDD or YYYY-MM-DD",
        path.display()
    )]
    InvalidDateInFile {
        /// The file.
        path: PathBuf,
        /// 0-based data row.
        row: usize,
        /// The value as text ("null" for a missing value).
        value: String,
    },
    /// A line of a dates file that is not a date.
    #[error(
        "invalid date {value:?} in {} at line {line}; expected one YYYYMMDD or YYYY-MM-DD \
         per line",
        path.display()
    )]
    InvalidDateOnLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The line, without comment and surrounding blanks.
        value: String,
    },
    /// A file pattern without exactly one `{date}`.
    #[error("file pattern {pattern:?} must contain {{date}} once, e.g. \"alpha_{{date}}.feather\"")]
    BadPattern {
        /// The pattern.
        pattern: String,
    },
    /// A directory without files matching the pattern.
    #[error(
        "no file in {} matches {pattern:?} with a YYYYMMDD date; check the directory and the pattern",
        dir.display()
    )]
    NothingDiscovered {
        /// The directory.
        dir: PathBuf,
        /// The pattern.
        pattern: String,
    },
    /// A listed date that the calendar does not hold.
    #[error(
        "{date} is not a trading day ({nearest}); list trading days only, or give a range FROM..TO"
    )]
    NotTradingDay {
        /// The date, YYYYMMDD.
        date: String,
        /// The nearest trading days, as text.
        nearest: String,
    },
    /// A range whose end is before its start.
    #[error("date range {spec:?} ends before it starts; write FROM..TO")]
    ReversedRange {
        /// The range as given.
        spec: String,
    },
    /// A range without trading days.
    #[error("date range {spec:?} holds no trading day of the calendar; check the range")]
    EmptyRange {
        /// The range as given.
        spec: String,
    },
}

/// The trading days of a market, sorted and unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TradingCalendar {
    dates: Vec<NaiveDate>,
}

impl TradingCalendar {
    /// A calendar of the given days, in any order, duplicates ignored.
    pub fn new(dates: impl IntoIterator<Item = NaiveDate>) -> Self {
        let mut dates: Vec<_> = dates.into_iter().collect();
        dates.sort_unstable();
        dates.dedup();
        Self { dates }
    }

    /// Reads a `.csv` (with a header line), `.parquet` or `.feather`/`.arrow` file with a column
    /// named `date`, or a single column, holding YYYYMMDD integers or strings, YYYY-MM-DD
    /// strings or Arrow Date32/Date64 values.
    pub fn from_file(path: &Path) -> Result<Self, CalendarError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !extension
            .is_some_and(|e| ["csv", "parquet", "feather", "arrow", "ipc"].contains(&e.as_str()))
        {
            return Err(CalendarError::UnsupportedFile { path: path.into() });
        }
        let batches = read_batches(path)?;
        let mut dates = Vec::new();
        for batch in &batches {
            push_dates(path, batch, &mut dates)?;
        }
        Ok(Self::new(dates))
    }

    /// The dates of the files in `dir` named by `pattern`, e.g. `alpha_{date}.feather` finds
    /// `alpha_20240102.feather`; names whose `{date}` part is not a YYYYMMDD date are skipped.
    pub fn discover(dir: &Path, pattern: &str) -> Result<Self, CalendarError> {
        let bad_pattern = || CalendarError::BadPattern {
            pattern: pattern.into(),
        };
        let (prefix, suffix) = pattern.split_once("{date}").ok_or_else(bad_pattern)?;
        if suffix.contains("{date}") {
            return Err(bad_pattern());
        }
        let read_error = |error: std::io::Error| CalendarError::Read {
            path: dir.into(),
            message: format!(
                "{error}; the trading days are discovered from the input files: check \
                 [input] dir or --input-dir, or set [input] calendar"
            ),
        };
        let mut dates = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let name = entry.map_err(read_error)?.file_name();
            let date = name
                .to_str()
                .and_then(|name| name.strip_prefix(prefix)?.strip_suffix(suffix));
            if let Some(Ok(date)) = date.filter(|date| date.len() == 8).map(parse_date) {
                dates.push(date);
            }
        }
        if dates.is_empty() {
            return Err(CalendarError::NothingDiscovered {
                dir: dir.into(),
                pattern: pattern.into(),
            });
        }
        Ok(Self::new(dates))
    }

    /// The trading days, sorted.
    pub fn dates(&self) -> &[NaiveDate] {
        &self.dates
    }

    /// Whether `date` is a trading day.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.dates.binary_search(&date).is_ok()
    }

    /// The first trading day strictly after `date` (which need not be a trading day).
    pub fn next(&self, date: NaiveDate) -> Option<NaiveDate> {
        self.dates
            .get(self.dates.partition_point(|&d| d <= date))
            .copied()
    }

    /// The last trading day strictly before `date` (which need not be a trading day).
    pub fn previous(&self, date: NaiveDate) -> Option<NaiveDate> {
        let index = self.dates.partition_point(|&d| d < date);
        index.checked_sub(1).map(|i| self.dates[i])
    }

    /// The trading days from `from` to `to`, both inclusive; empty if `from > to`.
    pub fn range(&self, from: NaiveDate, to: NaiveDate) -> &[NaiveDate] {
        let start = self.dates.partition_point(|&d| d < from);
        let end = self.dates.partition_point(|&d| d <= to).max(start);
        &self.dates[start..end]
    }
}

/// Every row of a calendar file, read by the input reader ([`DateFile`]).
fn read_batches(path: &Path) -> Result<Vec<RecordBatch>, CalendarError> {
    // A file that cannot be opened says so in the calendar's words (the reader's speak
    // of input files).
    File::open(path).map_err(|error| CalendarError::Read {
        path: path.into(),
        message: error.to_string(),
    })?;
    let file = DateFile::open(path)?;
    let schema = file.schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut batches = Vec::new();
    for part in 0..file.num_parts() {
        let part = file.read_part(part, &columns, CALENDAR_BATCH_ROWS)?;
        batches.extend(part.into_iter().map(|(_, batch)| batch));
    }
    Ok(batches)
}

/// Rows per batch when reading a calendar file (a calendar has a few thousand).
const CALENDAR_BATCH_ROWS: usize = 1 << 16;

/// Appends the dates of a calendar file's batch; rows are numbered from `dates.len()`.
fn push_dates(
    path: &Path,
    batch: &RecordBatch,
    dates: &mut Vec<NaiveDate>,
) -> Result<(), CalendarError> {
    let schema = batch.schema();
    let index = match schema.index_of("date") {
        Ok(index) => index,
        Err(_) if schema.fields().len() == 1 => 0,
        Err(_) => {
            let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let columns = names.join(", ");
            return Err(CalendarError::NoDateColumn {
                path: path.into(),
                columns,
            });
        }
    };
    let column = batch.column(index);
    let read_error = |error: ArrowError| CalendarError::Read {
        path: path.into(),
        message: error.to_string(),
    };
    let column = match column.data_type() {
        // Date64 prints with a time of day; as Date32 it prints YYYY-MM-DD.
        DataType::Date64 => cast(column, &DataType::Date32).map_err(read_error)?,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Date32 => {
            column.clone()
        }
        integer if integer.is_integer() => column.clone(),
        other => {
            let data_type = other.clone();
            return Err(CalendarError::UnsupportedColumnType {
                path: path.into(),
                data_type,
            });
        }
    };
    // Integers print as YYYYMMDD and dates as YYYY-MM-DD: one parser for all.
    let texts = cast(&column, &DataType::Utf8).map_err(read_error)?;
    for text in texts.as_string::<i32>() {
        let row = dates.len();
        let date = text
            .ok_or("null")
            .and_then(|text| parse_date(text).map_err(|_| text));
        dates.push(date.map_err(|value| CalendarError::InvalidDateInFile {
            path: path.into(),
            row,
            value: value.into(),
        })?);
    }
    Ok(())
}

/// Parses `YYYYMMDD` or `YYYY-MM-DD`, ignoring surrounding blanks.
pub fn parse_date(text: &str) -> Result<NaiveDate, CalendarError> {
    let text = text.trim();
    let shape = |dashes: &[usize]| {
        text.bytes().enumerate().all(|(i, b)| {
            if dashes.contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
    };
    let format = match text.len() {
        8 if shape(&[]) => Some("%Y%m%d"),
        10 if shape(&[4, 7]) => Some("%Y-%m-%d"),
        _ => None,
    };
    format
        .and_then(|format| NaiveDate::parse_from_str(text, format).ok())
        .ok_or_else(|| CalendarError::InvalidDate {
            value: text.to_string(),
        })
}

/// The date of an Arrow `Date32` value (days since 1970-01-01); `None` out of range.
pub fn date_of_date32(days: i32) -> Option<NaiveDate> {
    // 1970-01-01 is the 719,163rd day of the common era.
    days.checked_add(719_163)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

/// Formats a date as `YYYYMMDD`.
pub fn format_date(date: NaiveDate) -> String {
    date.format("%Y%m%d").to_string()
}

/// Resolves a `--dates` spec against the calendar: `20240102..20240131` (the trading days of an
/// inclusive range; its ends need not be trading days), `20240102,20240103` (a list, each a
/// trading day) or a single trading day. Returns sorted dates without duplicates.
pub fn parse_date_spec(
    spec: &str,
    calendar: &TradingCalendar,
) -> Result<Vec<NaiveDate>, CalendarError> {
    if let Some((from, to)) = spec.split_once("..") {
        let (from, to) = (parse_date(from)?, parse_date(to)?);
        let spec = spec.trim().to_string();
        if from > to {
            return Err(CalendarError::ReversedRange { spec });
        }
        let dates = calendar.range(from, to);
        return if dates.is_empty() {
            Err(CalendarError::EmptyRange { spec })
        } else {
            Ok(dates.to_vec())
        };
    }
    let dates = spec.split(',').map(|text| {
        let date = parse_date(text)?;
        if calendar.contains(date) {
            return Ok(date);
        }
        let nearest = match (calendar.previous(date), calendar.next(date)) {
            (Some(before), Some(after)) => {
                format!(
                    "nearest trading days: {} and {}",
                    format_date(before),
                    format_date(after)
                )
            }
            (Some(day), None) | (None, Some(day)) => {
                format!("nearest trading day: {}", format_date(day))
            }
            (None, None) => "the calendar is empty".to_string(),
        };
        Err(CalendarError::NotTradingDay {
            date: format_date(date),
            nearest,
        })
    });
    Ok(TradingCalendar::new(dates.collect::<Result<Vec<_>, _>>()?).dates)
}

/// Reads a dates file: one `YYYYMMDD` or `YYYY-MM-DD` per line; `#` starts a comment, blank
/// lines are ignored. Returns sorted dates without duplicates.
pub fn read_dates_file(path: &Path) -> Result<Vec<NaiveDate>, CalendarError> {
    let text = std::fs::read_to_string(path).map_err(|e| CalendarError::Read {
        path: path.into(),
        message: e.to_string(),
    })?;
    let mut dates = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let value = line.split('#').next().unwrap_or_default().trim();
        if !value.is_empty() {
            dates.push(
                parse_date(value).map_err(|_| CalendarError::InvalidDateOnLine {
                    path: path.into(),
                    line: index + 1,
                    value: value.into(),
                })?,
            );
        }
    }
    Ok(TradingCalendar::new(dates).dates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, Date64Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Date32Type, Date64Type};
    use std::sync::Arc;

    fn date(text: &str) -> NaiveDate {
        parse_date(text).unwrap()
    }

    fn dates(texts: &[&str]) -> Vec<NaiveDate> {
        texts.iter().map(|t| date(t)).collect()
    }

    fn calendar() -> TradingCalendar {
        TradingCalendar::new(dates(&[
            "20240105", "20240102", "20240103", "20240108", "20240103",
        ]))
    }

    #[test]
    fn navigation() {
        let calendar = calendar();
        assert_eq!(
            calendar.dates(),
            dates(&["20240102", "20240103", "20240105", "20240108"])
        );
        assert!(calendar.contains(date("20240103")) && !calendar.contains(date("20240104")));
        assert_eq!(calendar.next(date("20240103")), Some(date("20240105")));
        assert_eq!(calendar.next(date("20240106")), Some(date("20240108")));
        assert_eq!(calendar.next(date("20240108")), None);
        assert_eq!(calendar.previous(date("20240105")), Some(date("20240103")));
        assert_eq!(calendar.previous(date("20240107")), Some(date("20240105")));
        assert_eq!(calendar.previous(date("20240102")), None);
        assert_eq!(
            calendar.range(date("20240103"), date("20240107")),
            dates(&["20240103", "20240105"])
        );
        assert_eq!(
            calendar.range(date("20240101"), date("20240131")),
            calendar.dates()
        );
        assert!(
            calendar
                .range(date("20240106"), date("20240107"))
                .is_empty()
        );
        assert!(
            calendar
                .range(date("20240108"), date("20240102"))
                .is_empty()
        );
    }

    #[test]
    fn dates_parse_and_format() {
        assert_eq!(date("2024-01-02"), date(" 20240102 "));
        assert_eq!(format_date(date("2024-12-31")), "20241231");
        for bad in [
            "2024012",
            "202401021",
            "20241301",
            "20240230",
            "2024/01/02",
            "+2024-1-02",
            "",
        ] {
            assert_eq!(
                parse_date(bad).unwrap_err().to_string(),
                format!("invalid date {bad:?}; expected YYYYMMDD (e.g. 20240102) or YYYY-MM-DD")
            );
        }
    }

    #[test]
    fn date_specs() {
        let calendar = calendar();
        let spec = |text| parse_date_spec(text, &calendar).map_err(|e| e.to_string());
        assert_eq!(
            spec("20240101..20240105").unwrap(),
            dates(&["20240102", "20240103", "20240105"])
        );
        assert_eq!(
            spec("20240108,20240102,20240108").unwrap(),
            dates(&["20240102", "20240108"])
        );
        assert_eq!(spec("2024-01-03").unwrap(), dates(&["20240103"]));
        assert_eq!(
            spec("20240102,20240104").unwrap_err(),
            "20240104 is not a trading day (nearest trading days: 20240103 and 20240105); \
             list trading days only, or give a range FROM..TO"
        );
        assert_eq!(
            spec("20240109").unwrap_err(),
            "20240109 is not a trading day (nearest trading day: 20240108); \
             list trading days only, or give a range FROM..TO"
        );
        assert_eq!(
            spec("20240105..20240102").unwrap_err(),
            "date range \"20240105..20240102\" ends before it starts; write FROM..TO"
        );
        assert_eq!(
            spec("20240106..20240107").unwrap_err(),
            "date range \"20240106..20240107\" holds no trading day of the calendar; check the range"
        );
        assert_eq!(
            spec("20240102..2024013").unwrap_err(),
            "invalid date \"2024013\"; expected YYYYMMDD (e.g. 20240102) or YYYY-MM-DD"
        );
    }

    #[test]
    fn dates_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dates.txt");
        std::fs::write(&path, "# backfill\n20240103\n\n2024-01-02  # holiday eve\n").unwrap();
        assert_eq!(
            read_dates_file(&path).unwrap(),
            dates(&["20240102", "20240103"])
        );
        std::fs::write(&path, "20240102\n2024013 # typo\n").unwrap();
        assert_eq!(
            read_dates_file(&path).unwrap_err().to_string(),
            format!(
                "invalid date \"2024013\" in {} at line 2; expected one YYYYMMDD or YYYY-MM-DD per line",
                path.display()
            )
        );
    }

    fn write_batch(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = File::create(path).unwrap();
        if path.extension().unwrap() == "parquet" {
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
        } else {
            let mut writer =
                arrow::ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
        }
    }

    #[test]
    fn calendar_files() {
        let dir = tempfile::tempdir().unwrap();
        let expected = dates(&["20240102", "20240103"]);
        let csv = dir.path().join("calendar.csv");
        std::fs::write(&csv, "date,open\n20240103,1\n20240102,1\n").unwrap();
        assert_eq!(TradingCalendar::from_file(&csv).unwrap().dates(), expected);
        std::fs::write(&csv, "trading_day\n2024-01-02\n2024-01-03\n").unwrap();
        assert_eq!(TradingCalendar::from_file(&csv).unwrap().dates(), expected);
        std::fs::write(&csv, "date\n20240102\n2024013\n").unwrap();
        assert_eq!(
            TradingCalendar::from_file(&csv).unwrap_err().to_string(),
            format!(
                "invalid date \"2024013\" in {} at row 1; expected YYYYMMDD or YYYY-MM-DD",
                csv.display()
            )
        );

        let parquet = dir.path().join("calendar.parquet");
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![20240102, 20240103]));
        write_batch(&parquet, vec![("date", ints)]);
        assert_eq!(
            TradingCalendar::from_file(&parquet).unwrap().dates(),
            expected
        );
        let strings: ArrayRef = Arc::new(StringArray::from(vec![Some("20240102"), None]));
        let other: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        write_batch(&parquet, vec![("x", other.clone()), ("date", strings)]);
        assert_eq!(
            TradingCalendar::from_file(&parquet)
                .unwrap_err()
                .to_string(),
            format!(
                "invalid date \"null\" in {} at row 1; expected YYYYMMDD or YYYY-MM-DD",
                parquet.display()
            )
        );
        write_batch(&parquet, vec![("x", other.clone()), ("y", other)]);
        assert_eq!(
            TradingCalendar::from_file(&parquet)
                .unwrap_err()
                .to_string(),
            format!(
                "calendar file {} has no `date` column (columns: x, y); \
                 name the column `date` or keep a single column",
                parquet.display()
            )
        );
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![20240102.0]));
        write_batch(&parquet, vec![("date", floats)]);
        assert_eq!(
            TradingCalendar::from_file(&parquet)
                .unwrap_err()
                .to_string(),
            format!(
                "the date column of {} is Float64; store YYYYMMDD integers or strings, \
                 YYYY-MM-DD strings or Date32/Date64",
                parquet.display()
            )
        );

        let feather = dir.path().join("calendar.feather");
        let days = expected.iter().map(|&d| Date32Type::from_naive_date(d));
        write_batch(
            &feather,
            vec![("date", Arc::new(Date32Array::from_iter_values(days)))],
        );
        assert_eq!(
            TradingCalendar::from_file(&feather).unwrap().dates(),
            expected
        );
        let millis = expected.iter().map(|&d| Date64Type::from_naive_date(d));
        write_batch(
            &feather,
            vec![("date", Arc::new(Date64Array::from_iter_values(millis)))],
        );
        assert_eq!(
            TradingCalendar::from_file(&feather).unwrap().dates(),
            expected
        );

        let txt = dir.path().join("calendar.txt");
        assert_eq!(
            TradingCalendar::from_file(&txt).unwrap_err().to_string(),
            format!(
                "calendar file {} is not .csv, .parquet or .feather; convert it, \
                 or list the dates in a text file",
                txt.display()
            )
        );
        let missing = dir.path().join("missing.csv");
        let error = TradingCalendar::from_file(&missing)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("cannot read {}: ", missing.display())),
            "{error}"
        );
    }

    #[test]
    fn discover_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "alpha_20240103.feather",
            "alpha_20240102.feather",
            "alpha_latest.feather",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::write(dir.path().join("alpha_20240104.csv"), "").unwrap();
        let found = TradingCalendar::discover(dir.path(), "alpha_{date}.feather").unwrap();
        assert_eq!(found.dates(), dates(&["20240102", "20240103"]));
        assert_eq!(
            TradingCalendar::discover(dir.path(), "beta_{date}.feather")
                .unwrap_err()
                .to_string(),
            format!(
                "no file in {} matches \"beta_{{date}}.feather\" with a YYYYMMDD date; \
                 check the directory and the pattern",
                dir.path().display()
            )
        );
        assert_eq!(
            TradingCalendar::discover(dir.path(), "alpha.feather")
                .unwrap_err()
                .to_string(),
            "file pattern \"alpha.feather\" must contain {date} once, e.g. \"alpha_{date}.feather\""
        );
    }
}
