//! Bad input, end to end: one test per kind of dirty or broken input (issue 6), each
//! run through `vizflow::run::run` on files in a temporary directory, asserting the
//! exact message a user sees (it names the date, the file, the column, the row and the
//! value, and says what to do) or the counted effect in the date's report.
//!
//! The README's "What happens on bad input" table lists the same cases. Lower-level
//! checks live beside the code they test: the readers' errors in `tests/io.rs`
//! (truncated and random bytes in every format, CSV line numbers), the configuration's
//! in `tests/config_errors.rs` (every unknown column and type, `check_schema`), the
//! time parser's in `operators/tests/parse_time.rs`.
//!
//! By topic: files (missing, empty, no rows, truncated, corrupt, CSV lines), columns
//! (missing, type changing between dates, all null), values (impossible timestamps,
//! duplicates, quantities, prices, symbols, casts).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet, write_batches};
use vizflow::operators::report::DateReport;
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, RunSummary, run};
use vizflow::synthetic::{GenSpec, generate_date};

const MARKOUT: &str = include_str!("../examples/markout.toml");
const ALPHA_MARKOUT: &str = include_str!("../examples/alpha_markout.toml");

/// Rows per generated date: small, and more than one batch of [`BATCH_ROWS`].
const ROWS: usize = 2_000;
/// Rows per batch inside the engine, so that row numbers in messages are file rows,
/// not rows of a batch.
const BATCH_ROWS: usize = 300;

fn date(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, day).unwrap()
}

/// Day 2, 3 and 4 of January 2024.
fn dates() -> [NaiveDate; 3] {
    [date(2), date(3), date(4)]
}

fn generated(day: NaiveDate) -> RecordBatch {
    let spec = GenSpec {
        rows: ROWS,
        symbols: 20,
        seed: 7,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    generate_date(&spec, day)
}

/// `batch` with column `name` replaced by `values` (which may have another type).
fn replace(batch: &RecordBatch, name: &str, values: ArrayRef) -> RecordBatch {
    let schema = batch.schema();
    let index = schema.index_of(name).unwrap();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields[index] = Field::new(name, values.data_type().clone(), true);
    let mut columns = batch.columns().to_vec();
    columns[index] = values;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// `batch` with column `name` renamed to `to`.
fn rename(batch: &RecordBatch, name: &str, to: &str) -> RecordBatch {
    let schema = batch.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.name() == name {
            true => f.as_ref().clone().with_name(to),
            false => f.as_ref().clone(),
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec()).unwrap()
}

fn floats(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let column = batch.column_by_name(name).unwrap();
    let column = arrow::compute::cast(column, &DataType::Float64).unwrap();
    let column = column.as_any().downcast_ref::<Float64Array>().unwrap();
    column.iter().collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let column = batch.column_by_name(name).unwrap();
    let column = arrow::compute::cast(column, &DataType::Int64).unwrap();
    let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
    column.iter().collect()
}

/// `batch` with `column[row] = value` for each `(row, value)` (a float column).
fn set_floats(batch: &RecordBatch, column: &str, changes: &[(usize, Option<f64>)]) -> RecordBatch {
    let mut values = floats(batch, column);
    for &(row, value) in changes {
        values[row] = value;
    }
    replace(batch, column, Arc::new(Float64Array::from(values)))
}

/// `batch` with `column[row] = value` for each `(row, value)` (an integer column).
fn set_ints(batch: &RecordBatch, column: &str, changes: &[(usize, Option<i64>)]) -> RecordBatch {
    let mut values = ints(batch, column);
    for &(row, value) in changes {
        values[row] = value;
    }
    replace(batch, column, Arc::new(Int64Array::from(values)))
}

/// A temporary input and output directory, and the files written into the input.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn input(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The input file of `day` in `format`.
    fn path(&self, day: NaiveDate, format: FileFormat) -> PathBuf {
        let name = format!("alpha_{}.{}", day.format("%Y%m%d"), format.extension());
        self.input().join(name)
    }

    /// Writes `batch` as the file of `day`, one part per 1000 rows.
    fn write(&self, day: NaiveDate, format: FileFormat, batch: &RecordBatch) -> PathBuf {
        std::fs::create_dir_all(self.input()).unwrap();
        let path = self.path(day, format);
        let parts: Vec<RecordBatch> = (0..batch.num_rows())
            .step_by(1000)
            .map(|start| batch.slice(start, 1000.min(batch.num_rows() - start)))
            .collect();
        write_batches(&path, format, batch.schema(), &parts, None).unwrap();
        path
    }

    /// Writes the generated rows of each of `days`.
    fn write_generated(&self, days: &[NaiveDate], format: FileFormat) {
        for &day in days {
            self.write(day, format, &generated(day));
        }
    }

    /// Runs `toml` (a pipeline reading feather files) over `days` in `format`.
    fn run_on(
        &self,
        toml: &str,
        format: FileFormat,
        days: &[NaiveDate],
    ) -> Result<RunSummary, String> {
        let toml = toml
            .replace(
                "alpha_{date}.feather",
                &format!("alpha_{{date}}.{}", format.extension()),
            )
            .replace("[input]", &format!("[input]\nbatch_rows = {BATCH_ROWS}"));
        let pipeline = Pipeline::from_toml(&toml).unwrap();
        let dates_file = self.dir.path().join("dates.txt");
        let list: Vec<String> = days
            .iter()
            .map(|d| d.format("%Y%m%d").to_string())
            .collect();
        std::fs::write(&dates_file, list.join("\n")).unwrap();
        let options = RunOptions {
            input_dir: Some(self.input()),
            output_dir: Some(self.output()),
            dates: DateSelection::File(dates_file),
            workers: 2,
            progress: ProgressStyle::Quiet,
            ..RunOptions::default()
        };
        run(&pipeline, &options).map_err(|e| e.to_string())
    }

    fn run(&self, toml: &str, days: &[NaiveDate]) -> Result<RunSummary, String> {
        self.run_on(toml, FileFormat::IpcFile, days)
    }
}

/// The status of `day` in a summary.
fn status(summary: &RunSummary, day: NaiveDate) -> &DateStatus {
    &summary.dates.iter().find(|d| d.date == day).unwrap().status
}

/// The report of `day` in a summary.
fn report(summary: &RunSummary, day: NaiveDate) -> &DateReport {
    &summary.dates.iter().find(|d| d.date == day).unwrap().report
}

/// The error of a failed date.
fn failure(summary: &RunSummary, day: NaiveDate) -> String {
    match status(summary, day) {
        DateStatus::Failed(message) => message.clone(),
        other => panic!("{day} did not fail: {other:?}"),
    }
}

/// The partial of a written date.
fn partial(summary: &RunSummary, day: NaiveDate) -> RecordBatch {
    match status(summary, day) {
        DateStatus::Written { path, .. } => read_parquet(path).unwrap().0,
        other => panic!("{day} was not written: {other:?}"),
    }
}

/// Asserts that every date but `failed` was written.
fn others_written(summary: &RunSummary, failed: &[NaiveDate]) {
    for outcome in &summary.dates {
        if !failed.contains(&outcome.date) {
            assert!(
                matches!(outcome.status, DateStatus::Written { .. }),
                "{}: {:?}",
                outcome.date,
                outcome.status
            );
        }
    }
}

/// The sum of an integer column of a partial.
fn total(partial: &RecordBatch, column: &str) -> i64 {
    ints(partial, column).iter().flatten().sum()
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

// ---- files ----

#[test]
fn missing_date_file_fails_that_date_only() {
    let case = Case::new();
    case.write_generated(&[date(2), date(4)], FileFormat::IpcFile);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: input file not found: {}; check input_dir and pattern",
            display(&case.path(date(3), FileFormat::IpcFile))
        )
    );
    others_written(&summary, &[date(3)]);
}

#[test]
fn empty_file_fails_that_date_only() {
    for format in [FileFormat::IpcFile, FileFormat::Parquet, FileFormat::Csv] {
        let case = Case::new();
        case.write_generated(&dates(), format);
        let path = case.path(date(3), format);
        std::fs::write(&path, b"").unwrap();
        let summary = case.run_on(MARKOUT, format, &dates()).unwrap();
        assert_eq!(
            failure(&summary, date(3)),
            format!(
                "20240103: input file {} is empty (0 bytes); regenerate it or remove the date",
                display(&path)
            )
        );
        others_written(&summary, &[date(3)]);
    }
}

/// A valid file without rows is a date without trades: an empty partial, not an error.
#[test]
fn file_without_rows_gives_an_empty_partial() {
    for format in [FileFormat::IpcFile, FileFormat::Parquet] {
        let case = Case::new();
        case.write_generated(&dates(), format);
        case.write(date(3), format, &generated(date(3)).slice(0, 0));
        let summary = case.run_on(MARKOUT, format, &dates()).unwrap();
        others_written(&summary, &[]);
        assert_eq!(partial(&summary, date(3)).num_rows(), 0, "{format}");
        assert_eq!(report(&summary, date(3)).count("rows_read"), 0);
        assert_eq!(report(&summary, date(2)).count("rows_read"), ROWS as u64);
    }
}

/// A CSV file with a header line only has no values to infer column types from.
#[test]
fn csv_with_header_only_gives_an_empty_partial() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::Csv);
    let header = "ticktime,ukey,orderSide,qty,fillPrice,BidPrice1,AskPrice1,alpha1,alpha2\n";
    std::fs::write(case.path(date(3), FileFormat::Csv), header).unwrap();
    let summary = case.run_on(MARKOUT, FileFormat::Csv, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(partial(&summary, date(3)).num_rows(), 0);
}

#[test]
fn truncated_feather_and_parquet_fail_that_date() {
    for (format, message) in [
        (
            FileFormat::IpcFile,
            "is not a valid Arrow IPC file (truncated or corrupt): Parser error: Arrow file \
             does not contain correct footer",
        ),
        (
            FileFormat::Parquet,
            "is not a valid Parquet file (truncated or corrupt): Parquet error: Invalid \
             Parquet file. Corrupt footer",
        ),
    ] {
        let case = Case::new();
        case.write_generated(&dates(), format);
        let path = case.path(date(3), format);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let summary = case.run_on(MARKOUT, format, &dates()).unwrap();
        assert_eq!(
            failure(&summary, date(3)),
            format!("20240103: {} {message}", display(&path))
        );
        others_written(&summary, &[date(3)]);
    }
}

/// Damaged bytes: a feather file's magic bytes, a Parquet file's footer. Damaged data
/// pages that still decode cannot be told from data (neither format is checksummed as
/// written); their values then meet the checks of the stages, e.g. an impossible
/// timestamp fails the date naming its row.
#[test]
fn corrupt_feather_and_parquet_fail_that_date() {
    for format in [FileFormat::IpcFile, FileFormat::Parquet] {
        let case = Case::new();
        case.write_generated(&dates(), format);
        let path = case.path(date(3), format);
        let mut bytes = std::fs::read(&path).unwrap();
        let damaged = match format {
            FileFormat::IpcFile => 0..4,
            _ => bytes.len() - 208..bytes.len() - 8,
        };
        bytes[damaged].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        let summary = case.run_on(MARKOUT, format, &dates()).unwrap();
        let error = failure(&summary, date(3));
        let prefix = format!(
            "20240103: {} is not a valid {format} (truncated or corrupt): ",
            display(&path)
        );
        assert!(error.starts_with(&prefix), "{error}");
        others_written(&summary, &[date(3)]);
    }
}

#[test]
fn csv_line_that_does_not_parse_names_the_line() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::Csv);
    let path = case.path(date(3), FileFormat::Csv);
    let text = std::fs::read_to_string(&path).unwrap();
    // Line 1502 (row 1500), past the rows the column types are inferred from.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[1501] = lines[1501].replacen(',', ",6x", 1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let summary = case.run_on(MARKOUT, FileFormat::Csv, &dates()).unwrap();
    let ukey = ints(&generated(date(3)), "ukey")[1500].unwrap();
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: cannot parse CSV file {}: line 1502, column 'ukey': value '6x{ukey}' \
             is not a valid Int64 (the type inferred from the first 1000 rows); fix the line \
             or regenerate the file",
            display(&path)
        )
    );
    others_written(&summary, &[date(3)]);
}

// ---- columns ----

/// The configuration names a column the first file lacks: the run stops before any date
/// runs, naming the column, the closest existing name, and the file.
#[test]
fn config_naming_a_missing_column_suggests_the_closest_name() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let toml = MARKOUT.replace("timestamp = \"ticktime\"", "timestamp = \"tick_time\"");
    let error = case.run(&toml, &dates()).unwrap_err();
    assert_eq!(
        error,
        format!(
            "invalid pipeline: [time] unknown timestamp column 'tick_time'; did you mean \
             'ticktime'? available columns: ticktime, ukey, orderSide, qty, fillPrice, \
             BidPrice1, AskPrice1, alpha1, alpha2, row_id, mid (in {})",
            display(&case.path(date(2), FileFormat::IpcFile))
        )
    );
    assert!(!case.output().join("20240102.parquet").exists());
}

/// A later date's file lacks a column the first has (renamed `ticktime` -> `tick_time`).
#[test]
fn column_missing_on_a_later_date_fails_that_date() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let path = case.write(
        date(3),
        FileFormat::IpcFile,
        &rename(&generated(date(3)), "ticktime", "tick_time"),
    );
    let summary = case.run(MARKOUT, &dates()).unwrap();
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: column 'ticktime' is missing, though the first date has it; did \
             you mean 'tick_time'? available columns: tick_time, ukey, orderSide, qty, \
             fillPrice, BidPrice1, AskPrice1, alpha1, alpha2",
            display(&path)
        )
    );
    others_written(&summary, &[date(3)]);
}

/// `ticktime` is Int64 on the first date and Float64 on the next: the run reads it as
/// Float64 on both (it holds every value), with the results of all-Int64 dates.
#[test]
fn column_integer_on_one_date_and_float_on_another_reads_as_float() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let reference = case.run(MARKOUT, &dates()).unwrap();
    let day = generated(date(3));
    let ticktime =
        arrow::compute::cast(day.column_by_name("ticktime").unwrap(), &DataType::Float64);
    case.write(
        date(3),
        FileFormat::IpcFile,
        &replace(&day, "ticktime", ticktime.unwrap()),
    );
    let expected = [partial(&reference, date(2)), partial(&reference, date(3))];
    let summary = case.run(MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(partial(&summary, date(2)), expected[0]);
    assert_eq!(partial(&summary, date(3)), expected[1]);
}

/// A string column on one date and an integer on the next have no common type: the
/// later date fails, naming both types.
#[test]
fn column_string_on_one_date_and_integer_on_another_fails_that_date() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let day = generated(date(3));
    let codes: Vec<i64> = (0..day.num_rows() as i64).collect();
    let path = case.write(
        date(3),
        FileFormat::IpcFile,
        &replace(&day, "orderSide", Arc::new(Int64Array::from(codes))),
    );
    let summary = case.run(MARKOUT, &dates()).unwrap();
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: column 'orderSide' has type Int64 here but Utf8 on the first \
             date; make the type consistent across dates",
            display(&path)
        )
    );
    others_written(&summary, &[date(3)]);
}

/// Types of the same kind may differ between dates (Int32 and Int64, Float32 and
/// Float64, a cast column integer on one date and float on another): the rows are read
/// as the wider types (here the first date's), with the same results.
#[test]
fn column_of_a_compatible_type_on_a_later_date_gives_the_same_partial() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    // Partials are read right after each run: the next run replaces them.
    let reference = partial(&case.run(MARKOUT, &dates()).unwrap(), date(2));
    let day = generated(date(3));
    // The nearest integers, as the cast makes them (arrow's cast truncates).
    let qty: Vec<Option<i64>> = floats(&day, "qty")
        .iter()
        .map(|q| q.map(|q| q.round() as i64))
        .collect();
    let mut changed = replace(&day, "qty", Arc::new(Int64Array::from(qty)));
    let dictionary = DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8));
    for (column, data_type) in [
        ("ukey", DataType::Int32),
        ("ticktime", DataType::Int32),
        ("alpha1", DataType::Float32),
        ("orderSide", dictionary),
    ] {
        let values = arrow::compute::cast(day.column_by_name(column).unwrap(), &data_type);
        changed = replace(&changed, column, values.unwrap());
    }
    // Float32 alpha1 bins differently; keep its values exactly representable.
    let alpha1: Vec<Option<f64>> = floats(&changed, "alpha1");
    let reference_day = set_floats(
        &day,
        "alpha1",
        &alpha1.iter().copied().enumerate().collect::<Vec<_>>(),
    );
    case.write(date(3), FileFormat::IpcFile, &reference_day);
    let expected = partial(&case.run(MARKOUT, &dates()).unwrap(), date(3));
    case.write(date(3), FileFormat::IpcFile, &changed);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(partial(&summary, date(3)), expected);
    assert_eq!(partial(&summary, date(2)), reference);
}

/// All-null columns are data, not errors: nulls follow each operator's policy and are
/// counted.
#[test]
fn all_null_columns_are_counted() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let nulls = || Arc::new(Float64Array::from(vec![None; ROWS])) as ArrayRef;
    let day = replace(&generated(date(3)), "alpha1", nulls());
    let day = replace(&day, "qty", nulls());
    case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(ALPHA_MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    let report = report(&summary, date(3));
    assert_eq!(report.count("bin.null.alpha1"), ROWS as u64);
    assert_eq!(report.count("fifo.invalid_qty_rows"), ROWS as u64);
    let partial = partial(&summary, date(3));
    // One group per side, with a null bin.
    assert_eq!(partial.num_rows(), 2);
    assert_eq!(
        partial.column_by_name("alpha1_bin").unwrap().null_count(),
        2
    );
    assert_eq!(total(&partial, "count"), ROWS as i64);
}

/// An all-null timestamp column fails the date. Every batch reports its first null; the
/// report shows the first three by row, whatever the number of workers.
#[test]
fn all_null_timestamps_fail_the_date() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let day = replace(
        &generated(date(3)),
        "ticktime",
        Arc::new(Int64Array::from(vec![None; ROWS])),
    );
    let file = case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    let error = |row| {
        format!(
            "parse_time: column 'ticktime' (CN market): null timestamp at row {row}; fill or \
             filter out rows without a timestamp first"
        )
    };
    // Parts of 1000 rows read in batches of 300: 8 batches.
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: {}; {}; {}; and 5 more errors",
            file.display(),
            error(0),
            error(300),
            error(600)
        )
    );
    others_written(&summary, &[date(3)]);
}

/// A column of Arrow's Null type (all values null, e.g. written by pandas from a column
/// of `None`) on a later date reads as nulls of the first date's type.
#[test]
fn null_typed_column_on_a_later_date_reads_as_nulls() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let nulls = || Arc::new(arrow::array::NullArray::new(ROWS)) as ArrayRef;
    let day = replace(&generated(date(3)), "alpha1", nulls());
    let day = replace(&day, "orderSide", nulls());
    case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(
        report(&summary, date(3)).count("bin.null.alpha1"),
        ROWS as u64
    );
    // One group: a null bin and a null side.
    let partial = partial(&summary, date(3));
    assert_eq!(partial.num_rows(), 1);
    assert_eq!(partial.column_by_name("orderSide").unwrap().null_count(), 1);
    assert_eq!(total(&partial, "count"), ROWS as i64);
}

// ---- values ----

/// Impossible `HHMMSSmmm` timestamps fail the date, naming the file row (not the row of
/// a batch) and the value.
#[test]
fn impossible_timestamps_fail_the_date() {
    for (value, reason) in [
        (256_199_999, "hour 25 is out of range (expected 0-23)"),
        (93_061_000, "second 61 is out of range (expected 0-59)"),
        (-93_000_000, "negative value"),
    ] {
        let case = Case::new();
        case.write_generated(&dates(), FileFormat::IpcFile);
        let day = set_ints(&generated(date(3)), "ticktime", &[(1234, Some(value))]);
        let file = case.write(date(3), FileFormat::IpcFile, &day);
        let summary = case.run(MARKOUT, &dates()).unwrap();
        assert_eq!(
            failure(&summary, date(3)),
            format!(
                "20240103: {}: parse_time: column 'ticktime' (CN market): invalid HHMMSSmmm \
                 timestamp {value} at row 1234: {reason}; check [time] format",
                file.display()
            )
        );
        others_written(&summary, &[date(3)]);
    }
}

#[test]
fn nan_timestamp_fails_the_date() {
    let case = Case::new();
    let day = |d| {
        let day = generated(d);
        let ticktime =
            arrow::compute::cast(day.column_by_name("ticktime").unwrap(), &DataType::Float64);
        replace(&day, "ticktime", ticktime.unwrap())
    };
    for d in dates() {
        case.write(d, FileFormat::IpcFile, &day(d));
    }
    let file = case.write(
        date(3),
        FileFormat::IpcFile,
        &set_floats(&day(date(3)), "ticktime", &[(1700, Some(f64::NAN))]),
    );
    let summary = case.run(MARKOUT, &dates()).unwrap();
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: parse_time: column 'ticktime' (CN market): invalid HHMMSSmmm \
             timestamp NaN at row 1700: NaN is not a time; fill or filter out such rows first",
            file.display()
        )
    );
    others_written(&summary, &[date(3)]);
}

/// Duplicate rows are kept: two identical fills in the same millisecond are two trades.
/// Each is a row of its own (its own `row_id`), counted in `rows_read`, in `count()`
/// and by the FIFO match.
#[test]
fn duplicate_rows_are_kept_as_separate_rows() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let day = generated(date(3));
    // Partials are read right after each run: the next run replaces them.
    let before = partial(&case.run(MARKOUT, &dates()).unwrap(), date(3));
    let fifo_reference = case.run(ALPHA_MARKOUT, &dates()).unwrap();
    let duplicated =
        arrow::compute::concat_batches(&day.schema(), &[day.clone(), day.slice(10, 1)]);
    case.write(date(3), FileFormat::IpcFile, &duplicated.unwrap());
    let summary = case.run(MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(
        report(&summary, date(3)).count("rows_read"),
        ROWS as u64 + 1
    );
    let after = partial(&summary, date(3));
    assert_eq!(total(&after, "count"), total(&before, "count") + 1);
    let qty = floats(&day, "qty")[10].unwrap().round() as i64;
    assert_eq!(
        total(&after, "total_qty"),
        total(&before, "total_qty") + qty
    );

    let summary = case.run(ALPHA_MARKOUT, &dates()).unwrap();
    let side = day.column_by_name("orderSide").unwrap();
    let side = side
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value(10);
    let counter = match side {
        "B" => "fifo.entry_rows",
        _ => "fifo.exit_rows",
    };
    assert_eq!(
        report(&summary, date(3)).count(counter),
        report(&fifo_reference, date(3)).count(counter) + 1
    );
}

/// Negative and zero quantities: the FIFO match passes a negative quantity through
/// unmatched and counts it; a zero quantity opens no lot and is counted.
#[test]
fn negative_and_zero_quantities_are_counted() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let day = set_floats(
        &generated(date(3)),
        "qty",
        &[(100, Some(-100.0)), (200, Some(0.0)), (300, Some(0.0))],
    );
    case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(ALPHA_MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    let report = report(&summary, date(3));
    assert_eq!(report.count("fifo.invalid_qty_rows"), 1);
    assert_eq!(report.count("fifo.zero_qty_rows"), 2);
}

/// A symbol of its own (`ukey` 1) with one row: its forward returns use only that row.
fn lone_symbol_row(day: &RecordBatch, row: usize) -> RecordBatch {
    set_ints(day, "ukey", &[(row, Some(1))])
}

/// NaN and infinite prices make non-finite returns and notionals, which the aggregate
/// skips and counts.
#[test]
fn nan_and_infinite_prices_are_counted() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    // Two rows early in the day, each the only row of its symbol.
    let day = lone_symbol_row(&generated(date(3)), 20);
    let day = set_ints(&day, "ukey", &[(21, Some(2))]);
    let day = set_floats(&day, "BidPrice1", &[(20, Some(f64::NAN))]);
    let day = set_floats(&day, "AskPrice1", &[(21, Some(f64::INFINITY))]);
    case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    let counts = report(&summary, date(3));
    // mid is NaN (row 20) and +inf (row 21); each row's future price is its own.
    for h in [60, 300, 600] {
        assert_eq!(
            counts.count(&format!("aggregate.nonfinite.return_{h}")),
            2,
            "{h}"
        );
    }
    // The fill price of an entry row: its notional is NaN.
    let day = set_floats(&generated(date(3)), "fillPrice", &[(20, Some(f64::NAN))]);
    let day = lone_symbol_row(&day, 20);
    let day = set_floats(&day, "qty", &[(20, Some(100.0))]);
    let side = ints(&day, "ukey").len();
    let mut sides: Vec<String> = vec!["B".into(); side];
    let generated_sides = day.column_by_name("orderSide").unwrap();
    let generated_sides = generated_sides
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    for (row, s) in sides.iter_mut().enumerate() {
        *s = generated_sides.value(row).to_owned();
    }
    sides[20] = "B".into();
    let day = replace(&day, "orderSide", Arc::new(StringArray::from(sides)));
    case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(ALPHA_MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(
        report(&summary, date(3)).count("aggregate.nonfinite.notional"),
        1
    );
}

/// Rows with a null symbol are one symbol of their own (as a null key is one group),
/// counted as `enrich.null_symbol_rows`.
#[test]
fn null_symbols_are_counted() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let day = set_ints(
        &generated(date(3)),
        "ukey",
        &[(5, None), (500, None), (1500, None)],
    );
    case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    others_written(&summary, &[]);
    assert_eq!(
        report(&summary, date(3)).count("enrich.null_symbol_rows"),
        3
    );
    assert_eq!(total(&partial(&summary, date(3)), "count"), ROWS as i64);
}

/// A quantity that is not an integer fails the date, naming the file row and value.
#[test]
fn cast_failure_names_the_file_row() {
    let case = Case::new();
    case.write_generated(&dates(), FileFormat::IpcFile);
    let day = set_floats(&generated(date(3)), "qty", &[(1234, Some(100.5))]);
    let file = case.write(date(3), FileFormat::IpcFile, &day);
    let summary = case.run(MARKOUT, &dates()).unwrap();
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: cast: column 'qty' row 1234 value 100.5 is not within 0.000001 of \
             an integer; fix the data or set on_error = \"null\" for this cast",
            file.display()
        )
    );
    others_written(&summary, &[date(3)]);
}
