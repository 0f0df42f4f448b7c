//! Schema drift through `vizflow run`: a column whose type differs between dates is read
//! without changing a value (README, "Column types across dates"): the run binds to the
//! narrowest type that holds every date's, a cast column keeps its values until the
//! cast's own check, and a value the run's type cannot hold exactly fails its date,
//! naming the file, column, row, value and both types. CSV columns that look like
//! integers are settled on every row: codes with a leading zero stay text, a fraction
//! after 1,000 whole numbers makes the column Float64.
//!
//! Each case writes two small dates, runs a pipeline that sums and counts per side, and
//! compares every partial with sums computed here from the values as written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, Int64Array, NullArray,
    RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet, write_batches};
use vizflow::operators::batch::with_columns;
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, RunSummary, run};

fn date(day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, day).unwrap()
}

/// Rows per date in the typed cases.
const ROWS: usize = 6;

/// Sides alternate B, S.
fn sides() -> Vec<&'static str> {
    (0..ROWS).map(|i| ["B", "S"][i % 2]).collect()
}

/// A date's columns: times in the morning session, two symbols, sides; `px` and `qty`
/// as given.
fn day(px: ArrayRef, qty: ArrayRef) -> RecordBatch {
    let ticktime: Vec<i64> = (0..ROWS as i64).map(|i| 93_000_000 + i * 1000).collect();
    let ukey: Vec<i64> = (0..ROWS as i64).map(|i| 600_000 + i % 2).collect();
    RecordBatch::try_from_iter([
        ("ticktime", Arc::new(Int64Array::from(ticktime)) as ArrayRef),
        ("ukey", Arc::new(Int64Array::from(ukey))),
        ("side", Arc::new(StringArray::from(sides()))),
        ("px", px),
        ("qty", qty),
    ])
    .unwrap()
}

fn floats(values: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

fn ints(values: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

/// A pipeline over `{dir}/in/d_{date}.{extension}` summing `px` and the cast `qty` per
/// side.
fn pipeline(dir: &Path, extension: &str, on_error: &str) -> Pipeline {
    Pipeline::from_toml(&format!(
        r#"
        input = {{ dir = "{input}", pattern = "d_{{date}}.{extension}" }}
        output = {{ dir = "{output}" }}
        columns = {{ timestamp = "ticktime", symbol = "ukey" }}
        time = {{ market = "CN", format = "hhmmssmmm" }}

        [[cast]]
        column = "qty"
        to = "int64"
        on_error = "{on_error}"

        [aggregate]
        group_by = ["side"]
        metrics = {{ n = "count()", px = "sum(px)", max_px = "max(px)", qty = "sum(qty)" }}
        "#,
        input = dir.join("in").display(),
        output = dir.join("out").display(),
    ))
    .unwrap()
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        Case { dir }
    }

    fn path(&self, day: NaiveDate, extension: &str) -> PathBuf {
        let name = format!("d_{}.{extension}", day.format("%Y%m%d"));
        self.dir.path().join("in").join(name)
    }

    fn write(&self, day: NaiveDate, batch: &RecordBatch) -> PathBuf {
        let path = self.path(day, "feather");
        write_batches(
            &path,
            FileFormat::IpcFile,
            batch.schema(),
            std::slice::from_ref(batch),
            None,
        )
        .unwrap();
        path
    }

    fn run(&self, extension: &str, on_error: &str, workers: usize) -> RunSummary {
        let options = RunOptions {
            dates: DateSelection::Spec("20240102,20240103".into()),
            workers,
            progress: ProgressStyle::Quiet,
            ..RunOptions::default()
        };
        run(&pipeline(self.dir.path(), extension, on_error), &options).unwrap()
    }
}

fn status(summary: &RunSummary, day: NaiveDate) -> &DateStatus {
    &summary.dates.iter().find(|d| d.date == day).unwrap().status
}

fn partial(summary: &RunSummary, day: NaiveDate) -> RecordBatch {
    match status(summary, day) {
        DateStatus::Written { path, .. } => read_parquet(path).unwrap().0,
        other => panic!("{day} was not written: {other:?}"),
    }
}

fn failure(summary: &RunSummary, day: NaiveDate) -> String {
    match status(summary, day) {
        DateStatus::Failed(message) => message.clone(),
        other => panic!("{day} did not fail: {other:?}"),
    }
}

/// One side's expected metrics: count, sum and max of px as f64, sum of qty.
#[derive(Debug, PartialEq)]
struct Expected {
    n: i64,
    px: Option<f64>,
    max_px: Option<f64>,
    qty: Option<i64>,
}

/// The oracle: per side, from the values as written (px exactly as f64, which holds
/// every value of these cases; qty as integers, `None` where the cast nulls it). The
/// sums add values whose sums f64 holds exactly (or that vanish beside 1e300), so the
/// order of the additions cannot matter, as it does not for the engine's exact sums.
fn expected(px: &[Option<f64>], qty: &[Option<i64>]) -> BTreeMap<String, Expected> {
    let mut out = BTreeMap::new();
    for (i, side) in sides().into_iter().enumerate() {
        let e = out.entry(side.to_owned()).or_insert(Expected {
            n: 0,
            px: None,
            max_px: None,
            qty: None,
        });
        e.n += 1;
        // SEMANTICS.md: sum(x) is 0 when no value is present, max(x) null.
        e.px = Some(e.px.unwrap_or(0.0) + px[i].unwrap_or(0.0));
        e.qty = Some(e.qty.unwrap_or(0) + qty[i].unwrap_or(0));
        if let Some(p) = px[i] {
            e.max_px = Some(e.max_px.map_or(p, |m: f64| m.max(p)));
        }
    }
    out
}

/// The partial's metrics per side, px read as f64 whatever its type.
fn actual(partial: &RecordBatch) -> BTreeMap<String, Expected> {
    let column = |name: &str| partial.column_by_name(name).unwrap().clone();
    let as_f64 = |a: ArrayRef| arrow::compute::cast(&a, &DataType::Float64).unwrap();
    let (side, n, px, max_px, qty) = (
        column("side"),
        column("n"),
        as_f64(column("px")),
        as_f64(column("max_px")),
        column("qty"),
    );
    let float = |a: &ArrayRef, i| {
        let a = a.as_primitive::<Float64Type>();
        a.is_valid(i).then(|| a.value(i))
    };
    (0..partial.num_rows())
        .map(|i| {
            let qty = qty.as_primitive::<Int64Type>();
            (
                side.as_string::<i32>().value(i).to_owned(),
                Expected {
                    n: n.as_primitive::<Int64Type>().value(i),
                    px: float(&px, i),
                    max_px: float(&max_px, i),
                    qty: qty.is_valid(i).then(|| qty.value(i)),
                },
            )
        })
        .collect()
}

fn some<T: Copy>(values: &[T]) -> Vec<Option<T>> {
    values.iter().copied().map(Some).collect()
}

const QTY: [i64; ROWS] = [100, 200, 300, 400, 500, 600];

/// Int32 on one date, Int64 on another: the run reads both as Int64, whichever date
/// comes first (Int32 first used to fail the Int64 date: its values were narrowed).
#[test]
fn int32_and_int64_read_as_int64_in_either_order() {
    let small: Vec<i32> = vec![1, 2, 3, 4, 5, 6];
    let big: Vec<i64> = vec![5_000_000_000, 7, -3_000_000_000, 9, 10, 11];
    for int32_first in [true, false] {
        let case = Case::new();
        let (d32, d64) = if int32_first {
            (date(2), date(3))
        } else {
            (date(3), date(2))
        };
        case.write(
            d32,
            &day(Arc::new(Int32Array::from(small.clone())), ints(&QTY)),
        );
        case.write(d64, &day(ints(&big), ints(&QTY)));
        let summary = case.run("feather", "error", 2);
        let small: Vec<f64> = small.iter().map(|v| *v as f64).collect();
        let big: Vec<f64> = big.iter().map(|v| *v as f64).collect();
        assert_eq!(
            actual(&partial(&summary, d32)),
            expected(&some(&small), &some(&QTY))
        );
        assert_eq!(
            actual(&partial(&summary, d64)),
            expected(&some(&big), &some(&QTY))
        );
        for d in [d32, d64] {
            let partial = partial(&summary, d);
            assert_eq!(
                partial.column_by_name("px").unwrap().data_type(),
                &DataType::Int64
            );
        }
    }
}

/// A cast column that is Int64 on the first date and Float64 on a later one keeps the
/// later date's floats until the cast: 100.5 fails the date (it used to be truncated to
/// 100 and the date written), or with `on_error = "null"` becomes null and is counted.
#[test]
fn a_cast_column_int64_then_float64_is_checked_by_the_cast() {
    let case = Case::new();
    let px = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    case.write(date(2), &day(floats(&px), ints(&QTY)));
    let qty = [100.0, 200.00000001, 100.5, 400.0, 500.0, 600.0];
    let path = case.write(date(3), &day(floats(&px), floats(&qty)));

    let summary = case.run("feather", "error", 2);
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: cast: column 'qty' row 2 value 100.5 is not within 0.000001 of an \
             integer; fix the data or set on_error = \"null\" for this cast",
            path.display()
        )
    );
    assert_eq!(
        actual(&partial(&summary, date(2))),
        expected(&some(&px), &some(&QTY))
    );

    let summary = case.run("feather", "null", 2);
    let outcome = summary.dates.iter().find(|d| d.date == date(3)).unwrap();
    assert_eq!(outcome.report.count("cast.failed.qty"), 1);
    let cast = [Some(100), Some(200), None, Some(400), Some(500), Some(600)];
    assert_eq!(
        actual(&partial(&summary, date(3))),
        expected(&some(&px), &cast)
    );
}

/// A plain column that is Int64 on one date and Float64 on another is read as Float64
/// on both: the fraction is kept, the integers are exact. An integer Float64 cannot hold
/// (2^53 + 1) fails its date, naming the row, the value and both types.
#[test]
fn a_plain_column_int64_and_float64_reads_as_float64() {
    let case = Case::new();
    let int_px = [1, 2, 3, 4, 5, 1 << 53];
    let float_px = [100.5, 0.25, 3.0, -4.75, 1e300, 6.0];
    case.write(date(2), &day(ints(&int_px), ints(&QTY)));
    case.write(date(3), &day(floats(&float_px), ints(&QTY)));
    let summary = case.run("feather", "error", 2);
    let as_f64: Vec<f64> = int_px.iter().map(|v| *v as f64).collect();
    for (d, px) in [(date(2), as_f64), (date(3), float_px.to_vec())] {
        let partial = partial(&summary, d);
        assert_eq!(
            partial.column_by_name("px").unwrap().data_type(),
            &DataType::Float64
        );
        assert_eq!(actual(&partial), expected(&some(&px), &some(&QTY)));
    }

    let too_big = [1, 2, 3, (1 << 53) + 1, 5, 6];
    let path = case.write(date(2), &day(ints(&too_big), ints(&QTY)));
    let summary = case.run("feather", "error", 1);
    assert_eq!(
        failure(&summary, date(2)),
        format!(
            "20240102: {}: column 'px' has type Int64 here and Float64 on other dates; row 3 \
             value 9007199254740993 cannot be read as Float64 without changing it; make the \
             type consistent across dates, or cast the column with [[cast]] column = \"px\"",
            path.display()
        )
    );
    assert!(matches!(
        status(&summary, date(3)),
        DateStatus::Written { .. }
    ));
}

/// Float32 on the first date, Float64 on a later one: both read as Float64, so 1e300
/// stays 1e300 (it became inf, then a null bin) and 1 + 2^-30 keeps its last bits (a
/// Float32 has 24).
#[test]
fn float32_then_float64_reads_as_float64() {
    let case = Case::new();
    let f32s = [0.1f32, 0.2, 1.5, 3e38, -2.0, 7.0];
    case.write(
        date(2),
        &day(Arc::new(Float32Array::from(f32s.to_vec())), ints(&QTY)),
    );
    let f64s = [1.0 + 2f64.powi(-30), 1e300, 0.25, 2.5, -1.5, 1.0];
    case.write(date(3), &day(floats(&f64s), ints(&QTY)));
    for workers in [1, 2] {
        let summary = case.run("feather", "error", workers);
        let widened: Vec<f64> = f32s.iter().map(|v| f64::from(*v)).collect();
        assert_eq!(
            actual(&partial(&summary, date(2))),
            expected(&some(&widened), &some(&QTY))
        );
        assert_eq!(
            actual(&partial(&summary, date(3))),
            expected(&some(&f64s), &some(&QTY))
        );
    }
}

/// A column of Arrow's Null type on one date reads as nulls of the other dates' type; a
/// dictionary of strings on one date and plain strings on another group alike.
#[test]
fn null_type_and_dictionary_columns_read_as_the_other_dates_type() {
    let case = Case::new();
    let px = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let null_px = day(Arc::new(NullArray::new(ROWS)), ints(&QTY));
    let dictionary = DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8));
    let side = arrow::compute::cast(null_px.column_by_name("side").unwrap(), &dictionary);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("ticktime", null_px.column(0).clone()),
        ("ukey", null_px.column(1).clone()),
        ("side", side.unwrap()),
        ("px", null_px.column(3).clone()),
        ("qty", null_px.column(4).clone()),
    ];
    // The Null-typed and dictionary date first: the run still reads Float64 and Utf8.
    case.write(date(2), &RecordBatch::try_from_iter(columns).unwrap());
    case.write(date(3), &day(floats(&px), ints(&QTY)));
    let summary = case.run("feather", "error", 2);
    let first = partial(&summary, date(2));
    assert_eq!(actual(&first), expected(&[None; ROWS], &some(&QTY)));
    assert_eq!(
        first.column_by_name("side").unwrap().data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        actual(&partial(&summary, date(3))),
        expected(&some(&px), &some(&QTY))
    );
}

/// A UInt64 value beyond Int64 on a date whose column is Int64 elsewhere fails that date,
/// naming the value; the other date is written.
#[test]
fn a_value_no_common_type_holds_fails_its_date() {
    let case = Case::new();
    let px = [1, 2, 3, 4, 5, 6];
    case.write(date(2), &day(ints(&px), ints(&QTY)));
    let unsigned = UInt64Array::from(vec![1, 2, u64::MAX, 4, 5, 6]);
    let path = case.write(date(3), &day(Arc::new(unsigned), ints(&QTY)));
    let summary = case.run("feather", "error", 2);
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: column 'px' has type UInt64 here and Int64 on other dates; row 2 \
             value 18446744073709551615 cannot be read as Int64 without changing it; make \
             the type consistent across dates, or cast the column with [[cast]] column = \
             \"px\"",
            path.display()
        )
    );
    let px: Vec<f64> = px.iter().map(|v| *v as f64).collect();
    assert_eq!(
        actual(&partial(&summary, date(2))),
        expected(&some(&px), &some(&QTY))
    );
}

/// The symbol column must stay an integer or a string: Int64 on the first date and
/// Float64 on a later one cannot widen, and the later date fails with both types named.
#[test]
fn a_symbol_column_that_turns_float_fails_that_date() {
    let case = Case::new();
    let px = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    case.write(date(2), &day(floats(&px), ints(&QTY)));
    let later = day(floats(&px), ints(&QTY));
    let ukey = arrow::compute::cast(later.column_by_name("ukey").unwrap(), &DataType::Float64);
    let later = with_columns(&later, vec![("ukey".to_owned(), ukey.unwrap())]);
    let path = case.write(date(3), &later);
    let summary = case.run("feather", "error", 1);
    assert_eq!(
        failure(&summary, date(3)),
        format!(
            "20240103: {}: column 'ukey' has type Float64 here but Int64 on the first date; \
             make the type consistent across dates, or cast the column with [[cast]] column = \
             \"ukey\"",
            path.display()
        )
    );
    assert_eq!(
        actual(&partial(&summary, date(2))),
        expected(&some(&px), &some(&QTY))
    );
}

// ---- CSV ----

/// CSV text: a header and one line per row of `ticktime, ukey, side, px, qty`.
fn csv(rows: &[(&str, &str, &str, &str, &str)]) -> String {
    let mut text = String::from("ticktime,ukey,side,px,qty\n");
    for (t, u, s, p, q) in rows {
        text.push_str(&format!("{t},{u},{s},{p},{q}\n"));
    }
    text
}

/// Whole numbers in the first 1,000 rows of a CSV date, then a decimal: the column is
/// read as Float64 and the decimal kept. Another date of whole numbers only is read as
/// integers and widened, so both dates' sums are exact.
#[test]
fn csv_whole_numbers_then_a_decimal_keep_the_decimal() {
    let case = Case::new();
    let lines = 1_500;
    let px = |i: usize| match i {
        1_200 => "100.5".to_owned(),
        _ => (i % 7).to_string(),
    };
    let rows: Vec<(String, String, String, String, String)> = (0..lines)
        .map(|i| {
            (
                (93_000_000 + i as i64).to_string(),
                (600_000 + i % 3).to_string(),
                ["B", "S"][i % 2].to_owned(),
                px(i),
                "100".to_owned(),
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|(a, b, c, d, e)| (a.as_str(), b.as_str(), c.as_str(), d.as_str(), e.as_str()))
        .collect();
    std::fs::write(case.path(date(2), "csv"), csv(&borrowed)).unwrap();
    let whole: Vec<(&str, &str, &str, &str, &str)> =
        borrowed.iter().map(|r| (r.0, r.1, r.2, "3", r.4)).collect();
    std::fs::write(case.path(date(3), "csv"), csv(&whole)).unwrap();
    let summary = case.run("csv", "error", 2);
    let sums = |partial: &RecordBatch| -> BTreeMap<String, f64> {
        let side = partial
            .column_by_name("side")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let px = partial.column_by_name("px").unwrap();
        let px = arrow::compute::cast(px, &DataType::Float64).unwrap();
        let px = px.as_primitive::<Float64Type>();
        (0..partial.num_rows())
            .map(|i| (side.value(i).to_owned(), px.value(i)))
            .collect()
    };
    let mut first = BTreeMap::new();
    let mut second = BTreeMap::new();
    for i in 0..lines {
        let side = ["B", "S"][i % 2].to_owned();
        *first.entry(side.clone()).or_insert(0.0) += px(i).parse::<f64>().unwrap();
        *second.entry(side).or_insert(0.0) += 3.0;
    }
    assert_eq!(sums(&partial(&summary, date(2))), first);
    assert_eq!(sums(&partial(&summary, date(3))), second);
}

/// Symbol codes with leading zeros in a CSV file stay strings (`000001` is not 1), and
/// times written `093000000` read as HHMMSSmmm.
#[test]
fn csv_codes_with_leading_zeros_stay_strings() {
    let case = Case::new();
    let rows = [
        ("093000000", "000001", "B", "1", "100"),
        ("093000500", "000002", "S", "2", "200"),
        ("093001000", "600000", "B", "3", "300"),
        ("093001500", "000001", "S", "4", "400"),
    ];
    for d in [date(2), date(3)] {
        std::fs::write(case.path(d, "csv"), csv(&rows)).unwrap();
    }
    let toml = r#"
        input = { dir = "IN", pattern = "d_{date}.csv" }
        output = { dir = "OUT" }
        columns = { timestamp = "ticktime", symbol = "ukey" }
        time = { market = "CN", format = "hhmmssmmm" }
        [aggregate]
        group_by = ["ukey"]
        metrics = { n = "count()", qty = "sum(qty)", first_ms = "min(elapsed_ms)" }
    "#;
    let toml = toml
        .replace("IN", &case.dir.path().join("in").display().to_string())
        .replace("OUT", &case.dir.path().join("out").display().to_string());
    let options = RunOptions {
        dates: DateSelection::Spec("20240102,20240103".into()),
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&Pipeline::from_toml(&toml).unwrap(), &options).unwrap();
    for d in [date(2), date(3)] {
        let partial = partial(&summary, d);
        let ukey = partial
            .column_by_name("ukey")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let n = partial
            .column_by_name("n")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let qty = partial
            .column_by_name("qty")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let first = partial.column_by_name("first_ms").unwrap();
        let first = first.as_primitive::<Int64Type>().clone();
        let got: BTreeMap<String, (i64, i64, i64)> = (0..partial.num_rows())
            .map(|i| {
                (
                    ukey.value(i).to_owned(),
                    (n.value(i), qty.value(i), first.value(i)),
                )
            })
            .collect();
        // ms since 09:30:00.000 of each symbol's first row.
        let want: BTreeMap<String, (i64, i64, i64)> = [
            ("000001".to_owned(), (2, 500, 0)),
            ("000002".to_owned(), (1, 200, 500)),
            ("600000".to_owned(), (1, 300, 1000)),
        ]
        .into();
        assert_eq!(got, want, "{d}");
    }
}
