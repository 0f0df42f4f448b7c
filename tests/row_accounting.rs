//! Row accounting: every input row of a date is accounted for in its report.
//!
//! Generated dates with injected faults (null and NaN values, non-integer quantities
//! made null by `on_error = "null"`, rows outside the sessions dropped by
//! `out_of_session = "drop"`) run through the reference pipelines, and the report's
//! counters must add up:
//!
//! ```text
//! rows_read        = parse_time.dropped + rows into the next stage
//! enrich.rows_in   = rows_read - parse_time.dropped         (the keyed stage, if any)
//! enrich.rows_out  = enrich.rows_in + rows added by rules - rows dropped by rules
//!                  = fifo.output_rows                        (FIFO is the only rule)
//! aggregate.rows_in = enrich.rows_out (or rows_read - parse_time.dropped without one)
//!                  = the sum of count() over the partial's groups
//! ```
//!
//! Nulls, NaNs and failed casts do not remove rows; they are counted where a stage
//! meets them (`cast.failed.qty`, `bin.null.alpha1`, `fifo.invalid_qty_rows`,
//! `aggregate.nonfinite.{column}`). The FIFO match expands rows (an exit closing two lots
//! gives two rows): `enrich.rows_out - enrich.rows_in` is that expansion, and
//! `fifo.entry_rows + fifo.exit_rows + fifo.other_side_rows + fifo.invalid_qty_rows`
//! is every row it was given.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::NaiveDate;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet, write_batches};
use vizflow::operators::report::DateReport;
use vizflow::run::{DateStatus, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate_date};

const MARKOUT: &str = include_str!("../examples/markout.toml");
const ALPHA_MARKOUT: &str = include_str!("../examples/alpha_markout.toml");

const ROWS: usize = 20_000;

fn dates() -> Vec<NaiveDate> {
    vec![
        NaiveDate::from_ymd_opt(2024, 1, 2).unwrap(),
        NaiveDate::from_ymd_opt(2024, 1, 3).unwrap(),
    ]
}

/// What was injected into one date, by kind.
#[derive(Debug, Default)]
struct Faults {
    /// Rows moved outside the sessions (to be dropped).
    outside: usize,
    /// Rows whose `qty` is not an integer (made null by the cast, which runs before
    /// rows are dropped).
    bad_qty: usize,
    /// Those of them in the sessions.
    bad_qty_kept: usize,
    /// In-session rows whose `alpha1` is null or NaN (null bins).
    bad_alpha1: usize,
    /// Nulls and NaNs of `alpha1` and `BidPrice1` as read, over all rows.
    read_nulls_and_nans: [(&'static str, usize, usize); 2],
}

fn in_session(ticktime: i64) -> bool {
    (93_000_000..=113_000_000).contains(&ticktime)
        || (130_000_000..=150_000_000).contains(&ticktime)
}

/// A generated date with faults injected at random rows (seeded).
fn faulty_date(date: NaiveDate, seed: u64) -> (RecordBatch, Faults) {
    let spec = GenSpec {
        rows: ROWS,
        symbols: 40,
        seed,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    let day = generate_date(&spec, date);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17);
    let column = |name: &str| day.column_by_name(name).unwrap().clone();
    let mut ticktime: Vec<i64> = column("ticktime")
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    let floats = |name: &str| -> Vec<Option<f64>> {
        column(name).as_primitive::<Float64Type>().iter().collect()
    };
    let (mut qty, mut alpha1, mut bid) = (floats("qty"), floats("alpha1"), floats("BidPrice1"));
    for row in 0..ROWS {
        match rng.random_range(0..100) {
            // Lunch break, before the open, after the close.
            0 => ticktime[row] = [121_500_000, 91_500_000, 150_200_000][row % 3],
            1 => qty[row] = Some(100.5),
            2 => alpha1[row] = None,
            3 => alpha1[row] = Some(f64::NAN),
            4 => bid[row] = [None, Some(f64::NAN), Some(f64::INFINITY)][row % 3],
            _ => {}
        }
    }
    let mut faults = Faults::default();
    for row in 0..ROWS {
        // The generator's float noise (1e-8) is within the cast's tolerance.
        let bad_qty = usize::from(qty[row].is_some_and(|q| (q - q.round()).abs() > 1e-6));
        faults.bad_qty += bad_qty;
        if !in_session(ticktime[row]) {
            faults.outside += 1;
            continue;
        }
        faults.bad_qty_kept += bad_qty;
        faults.bad_alpha1 += usize::from(alpha1[row].is_none_or(f64::is_nan));
    }
    let nulls_and_nans = |values: &[Option<f64>]| {
        let nulls = values.iter().filter(|v| v.is_none()).count();
        let nans = values.iter().filter(|v| v.is_some_and(f64::is_nan)).count();
        (nulls, nans)
    };
    let ((alpha_nulls, alpha_nans), (bid_nulls, bid_nans)) =
        (nulls_and_nans(&alpha1), nulls_and_nans(&bid));
    faults.read_nulls_and_nans = [
        ("alpha1", alpha_nulls, alpha_nans),
        ("BidPrice1", bid_nulls, bid_nans),
    ];
    let replace = |batch: RecordBatch, name: &str, values: Arc<dyn Array>| {
        let index = batch.schema().index_of(name).unwrap();
        let mut columns = batch.columns().to_vec();
        columns[index] = values;
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    };
    let day = replace(day, "ticktime", Arc::new(Int64Array::from(ticktime)));
    let day = replace(day, "qty", Arc::new(Float64Array::from(qty)));
    let day = replace(day, "alpha1", Arc::new(Float64Array::from(alpha1)));
    let day = replace(day, "BidPrice1", Arc::new(Float64Array::from(bid)));
    (day, faults)
}

/// Runs `toml` with the drop and null policies over the faulty dates, with `workers`;
/// returns each date's faults, report and partial.
fn run_faulty(toml: &str, workers: usize) -> Vec<(Faults, DateReport, RecordBatch)> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data");
    std::fs::create_dir_all(&input).unwrap();
    let mut faults = Vec::new();
    for (i, &date) in dates().iter().enumerate() {
        let (day, injected) = faulty_date(date, 11 + i as u64);
        let path = input.join(format!("alpha_{}.feather", date.format("%Y%m%d")));
        let parts: Vec<RecordBatch> = (0..ROWS)
            .step_by(6000)
            .map(|s| day.slice(s, 6000.min(ROWS - s)))
            .collect();
        write_batches(&path, FileFormat::IpcFile, day.schema(), &parts, None).unwrap();
        faults.push(injected);
    }
    let toml = toml
        .replace("to = \"int64\"", "to = \"int64\"\non_error = \"null\"")
        .replace(
            "format = \"hhmmssmmm\"",
            "format = \"hhmmssmmm\"\nout_of_session = \"drop\"",
        )
        .replace("out_of_session = \"clamp\"", "")
        .replace("[input]", "[input]\nbatch_rows = 1000");
    let pipeline = Pipeline::from_toml(&toml).unwrap();
    let options = RunOptions {
        input_dir: Some(input),
        output_dir: Some(dir.path().join("out")),
        workers,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options).unwrap();
    summary
        .dates
        .into_iter()
        .zip(faults)
        .map(|(outcome, faults)| {
            let partial = match &outcome.status {
                DateStatus::Written { path, .. } => read_parquet(path).unwrap().0,
                other => panic!("{}: {other:?}", outcome.date),
            };
            (faults, outcome.report, partial)
        })
        .collect()
}

/// The sum of `count()` over a partial's groups: the rows aggregated.
fn aggregated(partial: &RecordBatch) -> u64 {
    let counts = arrow::compute::cast(partial.column_by_name("count()").unwrap(), &DataType::Int64);
    let counts = counts.unwrap();
    counts
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .sum::<i64>() as u64
}

/// The counts every pipeline shares: rows read, dropped, cast failures, null bins (one
/// per row reaching `bin`: after the FIFO match, per expanded row).
fn check_common(faults: &Faults, report: &DateReport, partial: &RecordBatch) {
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.count("rows_read"), ROWS as u64);
    assert_eq!(report.count("parse_time.dropped"), faults.outside as u64);
    assert_eq!(report.count("parse_time.clamped"), 0);
    assert_eq!(report.count("cast.failed.qty"), faults.bad_qty as u64);
    assert!(faults.outside > 0 && faults.bad_qty > 0 && faults.bad_alpha1 > 0);
    // Nulls and NaNs of the input columns, as read (every pipeline here reads alpha1;
    // BidPrice1 only those with forward returns of mid).
    for (column, nulls, nans) in faults.read_nulls_and_nans {
        assert!(nulls > 0 && nans > 0, "{column}");
        let read = report.counts.contains_key(&format!("input.null.{column}"));
        if column != "alpha1" && !read {
            continue;
        }
        assert_eq!(
            report.count(&format!("input.null.{column}")),
            nulls as u64,
            "{column}"
        );
        assert_eq!(
            report.count(&format!("input.nan.{column}")),
            nans as u64,
            "{column}"
        );
    }
    // The rows with a null bin are the partial's null-bin groups.
    let bins = partial.column_by_name("alpha1_bin").unwrap();
    let null_bins = arrow::compute::is_null(bins).unwrap();
    let null_bin_rows = arrow::compute::filter_record_batch(partial, &null_bins).unwrap();
    assert_eq!(report.count("bin.null.alpha1"), aggregated(&null_bin_rows));
    assert!(report.count("bin.null.alpha1") >= faults.bad_alpha1 as u64);
}

#[test]
fn markout_accounts_for_every_row() {
    for workers in [1, 2] {
        for (faults, report, partial) in run_faulty(MARKOUT, workers) {
            check_common(&faults, &report, &partial);
            let kept = report.count("rows_read") - report.count("parse_time.dropped");
            // Forward returns keep one row per row.
            assert_eq!(report.count("enrich.rows_in"), kept);
            assert_eq!(report.count("enrich.rows_out"), kept);
            assert_eq!(report.count("aggregate.rows_in"), kept);
            assert_eq!(aggregated(&partial), kept);
            assert_eq!(report.count("bin.null.alpha1"), faults.bad_alpha1 as u64);
            // NaN and infinite bid prices make non-finite returns, which are counted.
            assert!(report.count("aggregate.nonfinite.return_60") > 0);
        }
    }
}

#[test]
fn markout_without_a_keyed_stage_accounts_for_every_row() {
    let start = MARKOUT.find("[forward_return]").unwrap();
    let end = MARKOUT.find("[bin]").unwrap();
    let toml = format!("{}{}", &MARKOUT[..start], &MARKOUT[end..])
        .lines()
        .filter(|line| !line.starts_with("mean_return"))
        .collect::<Vec<_>>()
        .join("\n");
    for (faults, report, partial) in run_faulty(&toml, 2) {
        check_common(&faults, &report, &partial);
        let kept = report.count("rows_read") - report.count("parse_time.dropped");
        assert_eq!(report.count("enrich.rows_in"), 0);
        assert_eq!(report.count("aggregate.rows_in"), kept);
        assert_eq!(aggregated(&partial), kept);
        assert_eq!(report.count("bin.null.alpha1"), faults.bad_alpha1 as u64);
    }
}

/// The FIFO match expands rows: the rows out of the keyed stage are its output rows,
/// and every row into it is an entry, an exit, another side or an invalid quantity.
#[test]
fn fifo_accounts_for_every_row_and_its_expansion() {
    for workers in [1, 2] {
        for (faults, report, partial) in run_faulty(ALPHA_MARKOUT, workers) {
            check_common(&faults, &report, &partial);
            let kept = report.count("rows_read") - report.count("parse_time.dropped");
            assert_eq!(report.count("enrich.rows_in"), kept);
            let given = [
                "entry_rows",
                "exit_rows",
                "other_side_rows",
                "invalid_qty_rows",
            ]
            .map(|c| report.count(&format!("fifo.{c}")))
            .iter()
            .sum::<u64>();
            assert_eq!(given, kept);
            // Quantities made null by the cast pass through the match unmatched.
            assert_eq!(
                report.count("fifo.invalid_qty_rows"),
                faults.bad_qty_kept as u64
            );
            let out = report.count("enrich.rows_out");
            assert_eq!(out, report.count("fifo.output_rows"));
            assert!(out > kept, "exits split over several lots expand rows");
            assert_eq!(report.count("aggregate.rows_in"), out);
            assert_eq!(aggregated(&partial), out);
        }
    }
}
