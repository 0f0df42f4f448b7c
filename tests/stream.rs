//! `[stream]` (SEMANTICS.md, *Streaming*): a date's rows arrive in file order, and a
//! row more than `lateness` behind the latest row before it is late.
//!
//! Seeded random dates whose rows are in event order up to a jitter, most of it
//! within the lateness and some beyond it, with ties, null prices and two symbols
//! per side. Checked against the sequential oracle (`vizflow_testing::stream`):
//! - the late rows are exactly the oracle's, counted as `stream.late_rows` and listed
//!   (the first 1,000 `row_id`s) in the report and its file;
//! - the partial equals the whole-date run (no `[stream]`) over the file without the
//!   late rows, bit for bit;
//! - for 1, 2 and 4 workers and batch sizes from 7 rows up, and through the embedding
//!   API with batches pushed in file order (and an explicit watermark);
//! - `late = "error"` fails the date naming the first late row, its time and the
//!   watermark.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::Int64Type;
use arrow::datatypes::{DataType, Field, Schema};
use chrono::NaiveDate;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::config::Pipeline;
use vizflow::engine::Engine;
use vizflow::io::{FileFormat, read_parquet, write_batches};
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, RunSummary, run};
use vizflow_testing::stream::{cut_at, late_rows};

const DATE: &str = "20240102";

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()
}

/// The CN `HHMMSSmmm` timestamp of `elapsed_ms` of trading time (the inverse of
/// `common::oracle_elapsed_ms` inside the sessions).
fn ticktime(elapsed_ms: i64) -> i64 {
    let clock = if elapsed_ms <= 7_200_000 {
        34_200_000 + elapsed_ms
    } else {
        46_800_000 + elapsed_ms - 7_200_000
    };
    let (h, m, ms) = (clock / 3_600_000, clock / 60_000 % 60, clock % 60_000);
    h * 10_000_000 + m * 100_000 + ms
}

/// A date of `rows` rows in file order: times rising with a jitter (within 2 s for
/// most rows, up to 20 s back for about one row in `far`), on the 09:30 and 13:00
/// boundaries now and then; 4 symbols, sides B and S, quantities, prices with nulls.
/// Returns the batch and each row's `elapsed_ms`.
fn day(seed: u64, rows: usize, far: u32) -> (RecordBatch, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut clock = 0i64;
    let mut elapsed = Vec::with_capacity(rows);
    for _ in 0..rows {
        clock += rng.random_range(0..400);
        let jitter = if rng.random_ratio(1, far) {
            rng.random_range(0..20_000)
        } else {
            rng.random_range(0..2_500)
        };
        // Ties: times in steps of 50 ms.
        let t = ((clock - jitter).clamp(0, 14_400_000) / 50) * 50;
        elapsed.push(t);
    }
    let ticks: Vec<i64> = elapsed.iter().map(|t| ticktime(*t)).collect();
    let symbols: Vec<&str> = (0..rows)
        .map(|_| ["600000", "600001", "000001", "300750"][rng.random_range(0..4)])
        .collect();
    let sides: Vec<&str> = (0..rows)
        .map(|_| ["B", "S"][rng.random_range(0..2)])
        .collect();
    let qty: Vec<i64> = (0..rows).map(|_| rng.random_range(1..5) * 100).collect();
    let px: Vec<Option<f64>> = (0..rows)
        .map(|_| {
            (!rng.random_ratio(1, 20)).then(|| 10.0 + rng.random_range(0..1000) as f64 / 100.0)
        })
        .collect();
    let batch = RecordBatch::try_from_iter([
        ("ticktime", Arc::new(Int64Array::from(ticks)) as ArrayRef),
        ("ukey", Arc::new(StringArray::from(symbols))),
        ("side", Arc::new(StringArray::from(sides))),
        ("qty", Arc::new(Int64Array::from(qty))),
        ("px", Arc::new(Float64Array::from(px))),
    ])
    .unwrap();
    (batch, elapsed)
}

/// Writes `batch` as the date's feather file under `dir/in`, in record batches of 97
/// rows (so that a date has several parts).
fn write_day(dir: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let chunks: Vec<RecordBatch> = (0..batch.num_rows())
        .step_by(97)
        .map(|start| batch.slice(start, 97.min(batch.num_rows() - start)))
        .collect();
    let path = dir.join("in").join(format!("d_{DATE}.feather"));
    write_batches(&path, FileFormat::IpcFile, batch.schema(), &chunks, None).unwrap();
}

/// The pipeline: forward returns, FIFO matching, and metrics of every kind per side
/// and symbol; with `stream` as its `[stream]` section when given.
fn pipeline(dir: &Path, batch_rows: usize, stream: Option<&str>) -> Pipeline {
    Pipeline::from_toml(&pipeline_text(dir, batch_rows, stream)).unwrap()
}

/// [`pipeline`]'s text.
fn pipeline_text(dir: &Path, batch_rows: usize, stream: Option<&str>) -> String {
    pipeline_text_in(dir, batch_rows, stream, "\"CN\"")
}

/// [`pipeline_text`] on `market`.
fn pipeline_text_in(dir: &Path, batch_rows: usize, stream: Option<&str>, market: &str) -> String {
    let stream = stream.map_or(String::new(), |s| format!("[stream]\n{s}\n"));
    format!(
        r#"
        input = {{ dir = "{input}", pattern = "d_{{date}}.feather", batch_rows = {batch_rows} }}
        output = {{ dir = "{output}" }}
        columns = {{ timestamp = "ticktime", symbol = "ukey" }}
        time = {{ market = {market}, format = "hhmmssmmm" }}
        forward_return = {{ price = "px", horizons = [1, 30] }}

        [[enrich]]
        rule = "FIFOMatch"
        side = "side"
        qty = "qty"
        price = "px"

        [aggregate]
        group_by = ["side", "ukey"]
        [aggregate.metrics]
        n = "count()"
        matched = "sum(matched_qty)"
        closed = "sum(is_closed)"
        holding = "sum(holding_period)"
        r1 = "mean(return_1)"
        r30 = "sum(return_30)"
        low = "min(return_30)"
        high = "max(px)"

        {stream}
        "#,
        input = dir.join("in").display(),
        output = dir.join("out").display(),
    )
}

fn run_date(pipeline: &Pipeline, workers: usize) -> RunSummary {
    let options = RunOptions {
        dates: DateSelection::Spec(DATE.into()),
        workers,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    run(pipeline, &options).unwrap()
}

fn written(summary: &RunSummary) -> RecordBatch {
    match &summary.dates[0].status {
        DateStatus::Written { path, .. } => read_parquet(path).unwrap().0,
        other => panic!("the date was not written: {other:?}"),
    }
}

/// The partial of the whole-date run over `day`'s rows other than `late`.
fn whole_date_without(day: &RecordBatch, late: &[usize]) -> RecordBatch {
    whole_date_without_as(day, late, |text| text)
}

/// [`whole_date_without`] with the pipeline's text edited by `edit`.
fn whole_date_without_as(
    day: &RecordBatch,
    late: &[usize],
    edit: fn(String) -> String,
) -> RecordBatch {
    let dir = tempfile::tempdir().unwrap();
    let on_time: Vec<u32> = (0..day.num_rows() as u32)
        .filter(|i| late.binary_search(&(*i as usize)).is_err())
        .collect();
    let rows = arrow::compute::take_record_batch(day, &UInt32Array::from(on_time)).unwrap();
    write_day(dir.path(), &rows);
    let text = edit(pipeline_text(dir.path(), 65_536, None));
    written(&run_date(&Pipeline::from_toml(&text).unwrap(), 1))
}

/// The date's partial from `vizflow cluster --local 2 --workers 2` of `file` partitioned
/// by `partition`, with the output directory (`dir/out`).
fn cluster_partial(file: &Path, dir: &Path, partition: &str) -> (PathBuf, RecordBatch) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vizflow"))
        .arg("cluster")
        .arg(file)
        .args(["--local", "2", "--workers", "2", "--partition", partition])
        .args(["--dates", DATE])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{partition}: {}",
        common::stderr(&output)
    );
    let out = dir.join("out");
    let partial = read_parquet(&vizflow::run::partial_path(&out, date()))
        .unwrap()
        .0;
    (out, partial)
}

/// [`pipeline_text`] with the return to the close (horizon `"close"`) and a metric over
/// it (the oracle of `tests/oracle.rs` checks its values; here streaming must give what
/// the whole-date run gives).
fn with_close(text: String) -> String {
    (text.replace("horizons = [1, 30]", "horizons = [1, 30, \"close\"]")).replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\n        rc = \"sum(return_close)\"",
    )
}

/// The close under `[stream]`: a row waits for the date's last row (its return is
/// final only at the close), late rows are left out, for any workers and batch sizes
/// and across two processes partitioned either way: the whole-date run's partial.
#[test]
fn the_return_to_the_close_streams_for_any_workers_and_across_processes() {
    let (day, elapsed) = day(22, 3_000, 30);
    let late = late_rows(&elapsed, 2_000);
    assert!(late.len() > 10, "the date has late rows");
    let expected = whole_date_without_as(&day, &late, with_close);
    assert!(expected.column_by_name("rc").unwrap().null_count() < expected.num_rows());
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    let stream = Some("lateness = \"2s\"");
    for (workers, batch_rows) in [(1, 65_536), (2, 7), (4, 333)] {
        let text = with_close(pipeline_text(dir.path(), batch_rows, stream));
        let summary = run_date(&Pipeline::from_toml(&text).unwrap(), workers);
        let case = format!("{workers} workers, batches of {batch_rows}");
        assert_eq!(written(&summary), expected, "{case}");
        let report = &summary.dates[0].report;
        assert_eq!(
            report.count("stream.late_rows"),
            late.len() as u64,
            "{case}"
        );
    }
    let file = dir.path().join("stream.toml");
    std::fs::write(&file, with_close(pipeline_text(dir.path(), 50, stream))).unwrap();
    for partition in ["symbol", "date"] {
        let (_, partial) = cluster_partial(&file, dir.path(), partition);
        assert_eq!(
            sorted(&partial),
            sorted(&expected),
            "partitioned by {partition}"
        );
    }
}

#[test]
fn late_rows_and_finals_match_the_oracle_for_any_workers_and_batch_sizes() {
    for (seed, rows, far) in [(1, 3_000, 40), (2, 2_000, 5), (3, 500, 1_000)] {
        let (day, elapsed) = day(seed, rows, far);
        let late = late_rows(&elapsed, 2_000);
        if far < 100 {
            assert!(late.len() > 10, "seed {seed}: the date has late rows");
        }
        let expected = whole_date_without(&day, &late);
        let dir = tempfile::tempdir().unwrap();
        write_day(dir.path(), &day);
        for (workers, batch_rows) in [(1, 65_536), (2, 7), (2, 1_000), (4, 33)] {
            let case = format!("seed {seed}, {workers} workers, batches of {batch_rows}");
            let pipeline = pipeline(dir.path(), batch_rows, Some("lateness = \"2s\""));
            let summary = run_date(&pipeline, workers);
            let report = &summary.dates[0].report;
            assert_eq!(
                report.count("stream.late_rows"),
                late.len() as u64,
                "{case}"
            );
            let ids: Vec<u64> = late.iter().take(1_000).map(|i| *i as u64).collect();
            assert_eq!(report.late_row_ids, ids, "{case}");
            assert_eq!(written(&summary), expected, "{case}");
        }
        // The report file lists them too.
        let report = vizflow::run::report_path(&dir.path().join("out"), date());
        let report = std::fs::read_to_string(report).unwrap();
        let json: serde_json::Value = serde_json::from_str(&report).unwrap();
        let listed = json
            .get("late_row_ids")
            .map_or(0, |l| l.as_array().unwrap().len());
        assert_eq!(listed, late.len().min(1_000), "seed {seed}: {report}");
    }
}

/// `day`'s rows with about one in `every` moved out of the sessions (the pre-open
/// auction, the lunch break, after the close), and which.
fn out_of_session(day: &RecordBatch, seed: u64, every: u32) -> (RecordBatch, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ticks = day
        .column_by_name("ticktime")
        .unwrap()
        .as_primitive::<Int64Type>();
    let mut moved = Vec::new();
    let ticks: Int64Array = (ticks.values().iter().enumerate())
        .map(|(i, t)| match rng.random_ratio(1, every) {
            true => {
                moved.push(i);
                [92_000_000, 114_500_000, 150_200_000][rng.random_range(0..3)]
            }
            false => *t,
        })
        .collect();
    let mut columns = day.columns().to_vec();
    columns[day.schema().index_of("ticktime").unwrap()] = Arc::new(ticks);
    (RecordBatch::try_new(day.schema(), columns).unwrap(), moved)
}

/// [`pipeline_text`] with rows out of session dropped.
fn dropping(text: String) -> String {
    let clock = "format = \"hhmmssmmm\" }";
    assert!(text.contains(clock));
    text.replace(clock, "format = \"hhmmssmmm\", out_of_session = \"drop\" }")
}

/// Rows that `parse_time` drops (out of session) never arrive: they are neither late
/// nor make others late, whatever the batches (the rows kept go on as a selection of
/// their batch, which the late rows are found in and taken out of). The late rows are
/// the oracle's over the rows kept, named by their place in the file.
#[test]
fn rows_dropped_out_of_session_are_not_late_and_the_late_rows_are_named_by_their_row() {
    let (day, elapsed) = day(4, 3_000, 20);
    let (day, moved) = out_of_session(&day, 5, 25);
    assert!(moved.len() > 50, "rows moved out of the sessions");
    // The oracle sees the rows kept, in file order; its late rows are mapped back.
    let kept: Vec<usize> = (0..day.num_rows())
        .filter(|i| moved.binary_search(i).is_err())
        .collect();
    let kept_elapsed: Vec<i64> = kept.iter().map(|i| elapsed[*i]).collect();
    let late: Vec<usize> = (late_rows(&kept_elapsed, 2_000).into_iter())
        .map(|k| kept[k])
        .collect();
    assert!(late.len() > 10, "the date has late rows");
    let expected = whole_date_without_as(&day, &late, dropping);
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    for (workers, batch_rows) in [(1, 65_536), (2, 7), (2, 1_000), (4, 33)] {
        let case = format!("{workers} workers, batches of {batch_rows}");
        let text = dropping(pipeline_text(
            dir.path(),
            batch_rows,
            Some("lateness = \"2s\""),
        ));
        let summary = run_date(&Pipeline::from_toml(&text).unwrap(), workers);
        let report = &summary.dates[0].report;
        assert_eq!(
            report.count("parse_time.dropped"),
            moved.len() as u64,
            "{case}"
        );
        let ids: Vec<u64> = late.iter().map(|i| *i as u64).collect();
        assert_eq!(report.late_row_ids, ids, "{case}");
        assert_eq!(written(&summary), expected, "{case}");
    }
    // With `late = "error"`, the date fails naming the first late row by its place in
    // the file, and its time.
    let text = pipeline_text(dir.path(), 33, Some("lateness = \"2s\"\nlate = \"error\""));
    let summary = run_date(&Pipeline::from_toml(&dropping(text)).unwrap(), 2);
    let DateStatus::Failed(message) = &summary.dates[0].status else {
        panic!("the date did not fail: {:?}", summary.dates[0].status);
    };
    let first = late[0];
    let named = format!(
        "row {first} arrived late: its elapsed_ms {}",
        elapsed[first]
    );
    assert!(message.contains(&named), "{message}\nexpected: {named}");
}

#[test]
fn two_processes_find_the_same_late_rows_and_partial_for_both_partitionings() {
    let (day, elapsed) = day(21, 4_000, 30);
    let late = late_rows(&elapsed, 2_000);
    let expected = whole_date_without(&day, &late);
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    let file = dir.path().join("stream.toml");
    std::fs::write(
        &file,
        pipeline_text(dir.path(), 50, Some("lateness = \"2s\"")),
    )
    .unwrap();
    for partition in ["symbol", "date"] {
        let (out, partial) = cluster_partial(&file, dir.path(), partition);
        assert_eq!(
            sorted(&partial),
            sorted(&expected),
            "partitioned by {partition}"
        );
        let report = std::fs::read_to_string(vizflow::run::report_path(&out, date())).unwrap();
        let json: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(json["counts"]["stream.late_rows"], late.len(), "{report}");
        let ids: Vec<u64> = late.iter().take(1_000).map(|i| *i as u64).collect();
        assert_eq!(json["late_row_ids"], serde_json::json!(ids), "{partition}");
    }
}

#[test]
fn without_late_rows_streaming_changes_nothing() {
    // Rows in event order: nothing is late, and the partial is the whole-date run's.
    let (day, mut elapsed) = day(7, 1_500, 1_000);
    let mut order: Vec<usize> = (0..day.num_rows()).collect();
    order.sort_by_key(|i| elapsed[*i]);
    let indices = UInt32Array::from_iter_values(order.iter().map(|i| *i as u32));
    let day = arrow::compute::take_record_batch(&day, &indices).unwrap();
    elapsed.sort_unstable();
    assert!(late_rows(&elapsed, 0).is_empty());
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    let whole = written(&run_date(&pipeline(dir.path(), 100, None), 2));
    let streamed = run_date(&pipeline(dir.path(), 100, Some("lateness = \"0s\"")), 2);
    assert_eq!(streamed.dates[0].report.count("stream.late_rows"), 0);
    assert_eq!(written(&streamed), whole);
}

#[test]
fn late_error_fails_the_date_naming_the_first_late_row() {
    let (day, elapsed) = day(11, 800, 10);
    let late = late_rows(&elapsed, 2_000);
    let first = late[0];
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    for workers in [1, 2] {
        let stream = "lateness = \"2s\"\nlate = \"error\"";
        let summary = run_date(&pipeline(dir.path(), 50, Some(stream)), workers);
        let DateStatus::Failed(message) = &summary.dates[0].status else {
            panic!("the date did not fail: {:?}", summary.dates[0].status);
        };
        let largest = elapsed[..first].iter().max().unwrap();
        let expected = format!(
            "stream: row {first} arrived late: its elapsed_ms {} is below the watermark {}",
            elapsed[first],
            largest - 2_000
        );
        assert!(
            message.contains(&expected),
            "{message}\nexpected: {expected}"
        );
        assert!(message.contains("late = \"drop\""), "{message}");
    }
}

#[test]
fn pushed_batches_arrive_in_push_order_and_the_producer_can_raise_the_watermark() {
    let (day, elapsed) = day(5, 2_000, 20);
    let late = late_rows(&elapsed, 2_000);
    let expected = whole_date_without(&day, &late);
    let dir = tempfile::tempdir().unwrap();
    for workers in [1, 3] {
        let bound = pipeline(dir.path(), 1, Some("lateness = \"2s\""))
            .bind(&day.schema())
            .unwrap();
        let mut engine = Engine::start(bound, workers).unwrap();
        engine.begin_date(date()).unwrap();
        let mut start = 0;
        for size in [1usize, 5, 64, 300].into_iter().cycle() {
            if start >= day.num_rows() {
                break;
            }
            let size = size.min(day.num_rows() - start);
            engine.push(day.slice(start, size)).unwrap();
            start += size;
        }
        let result = engine.finish().unwrap().pop().unwrap();
        assert_eq!(result.report.count("stream.late_rows"), late.len() as u64);
        let partial = result.partial.unwrap();
        assert_eq!(partial.num_rows(), expected.num_rows(), "{workers} workers");
        assert_eq!(
            sorted(&partial),
            sorted(&expected),
            "{workers} workers: the partial differs from the whole-date run's"
        );
    }

    // An explicit watermark makes later rows below it late, whatever the lateness.
    let bound = pipeline(dir.path(), 1, Some("lateness = \"1h\""))
        .bind(&day.schema())
        .unwrap();
    let mut engine = Engine::start(bound, 2).unwrap();
    engine.begin_date(date()).unwrap();
    let half = day.num_rows() / 2;
    engine.push(day.slice(0, half)).unwrap();
    let floor = elapsed[..half].iter().max().unwrap() + 1;
    engine.advance_within_date(floor).unwrap();
    engine.push(day.slice(half, day.num_rows() - half)).unwrap();
    let result = engine.finish().unwrap().pop().unwrap();
    let below = elapsed[half..].iter().filter(|t| **t < floor).count();
    assert!(below > 0);
    assert_eq!(result.report.count("stream.late_rows"), below as u64);
}

/// The CN market with its day cut at `w` ms of trading time (a whole minute): the
/// same clock up to `w`, and `w` as the close.
fn cn_cut_at(w: i64) -> String {
    let hhmm = |clock: i64| format!("{:02}:{:02}", clock / 3_600_000, clock / 60_000 % 60);
    let sessions = match w <= 7_200_000 {
        true => format!(r#"[["09:30", "{}"]]"#, hhmm(34_200_000 + w)),
        false => format!(
            r#"[["09:30", "11:30"], ["13:00", "{}"]]"#,
            hhmm(46_800_000 + w - 7_200_000)
        ),
    };
    format!(r#"{{ name = "CN", sessions = {sessions} }}"#)
}

/// SEMANTICS.md's provisional result at `w`: the whole-date run over the on-time rows
/// of `day` at or before `w`, with `w` as the day's end. `None` when there are none.
fn cut_run(day: &RecordBatch, elapsed: &[i64], late: &[usize], w: i64) -> Option<RecordBatch> {
    cut_run_as(day, elapsed, late, w, |text| text)
}

/// [`cut_run`] with the pipeline's text edited by `edit`.
fn cut_run_as(
    day: &RecordBatch,
    elapsed: &[i64],
    late: &[usize],
    w: i64,
    edit: fn(String) -> String,
) -> Option<RecordBatch> {
    let rows: Vec<u32> = cut_at(elapsed, w)
        .into_iter()
        .filter(|i| late.binary_search(i).is_err())
        .map(|i| i as u32)
        .collect();
    if rows.is_empty() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let rows = arrow::compute::take_record_batch(day, &UInt32Array::from(rows)).unwrap();
    write_day(dir.path(), &rows);
    let text = edit(pipeline_text_in(dir.path(), 65_536, None, &cn_cut_at(w)));
    Some(written(&run_date(&Pipeline::from_toml(&text).unwrap(), 1)))
}

/// A date's provisional results as written beside its partial, by watermark.
fn provisional_results(out: &Path) -> BTreeMap<i64, RecordBatch> {
    let path = vizflow::run::provisional_path(out, date());
    let all = read_parquet(&path).unwrap().0;
    let watermarks = all.column(0).as_primitive::<Int64Type>();
    let rest = all
        .project(&(1..all.num_columns()).collect::<Vec<_>>())
        .unwrap();
    let mut results = BTreeMap::new();
    for w in watermarks
        .values()
        .iter()
        .copied()
        .collect::<BTreeSet<i64>>()
    {
        let at = arrow::compute::kernels::cmp::eq(watermarks, &Int64Array::new_scalar(w)).unwrap();
        results.insert(w, arrow::compute::filter_record_batch(&rest, &at).unwrap());
    }
    results
}

/// Provisional results (`emit_every`) against the oracle: at every multiple `W` of
/// 60 s, the whole-date run over the on-time rows cut at `W` with `W` as the close
/// (returns past it null, FIFO entries as matched by then, min and max included); none
/// before the first row; one at every later multiple up to the day's end, the final
/// result once every row and return is in. Finals unchanged. For 1, 2 and 4 workers
/// and any batch size.
#[test]
fn provisional_results_are_the_date_cut_at_their_watermark() {
    let incremental = |text| text;
    assert!(bound_with(incremental).incremental.is_some());
    check_provisional_results(incremental);
}

/// The same without incremental parts: a metric over a derived column that is not null
/// where a return is (`coalesce`) makes each result from every row not final yet.
#[test]
fn provisional_results_from_every_row_not_final_are_the_date_cut_at_their_watermark() {
    assert!(bound_with(not_incremental).incremental.is_none());
    check_provisional_results(not_incremental);
}

/// With the close's return: its value on the date cut at `W` is the price at `W`'s,
/// so each result is made from every row not final yet (every row of the date so far).
#[test]
fn provisional_results_with_the_close_are_the_date_cut_at_their_watermark() {
    assert!(bound_with(with_close).incremental.is_none());
    check_provisional_results(with_close);
}

/// Incremental provisional results with one horizon's parts narrow (the return alone:
/// every component of them reads it) and the other's whole rows (a component reads an
/// expression of it).
#[test]
fn provisional_results_with_narrow_and_whole_parts_are_the_date_cut_at_their_watermark() {
    let incremental = bound_with(scaled_return).incremental;
    assert!(incremental.is_some_and(|i| i.horizons == 0b11 && i.narrow == 0b01));
    check_provisional_results(scaled_return);
}

/// [`pipeline_text`] with a metric over an expression of a return.
fn scaled_return(text: String) -> String {
    let derive = "[derive]\n        x = \"abs(return_30) * 100\"\n\n        [aggregate]";
    (text.replacen("[aggregate]", derive, 1)).replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\n        x = \"sum(x)\"",
    )
}

/// Incremental provisional results whose final result still comes from final rows:
/// a stage after the keyed stage counts a return's nulls (a bin of it).
#[test]
fn provisional_results_in_parts_beside_final_rows_are_the_date_cut_at_their_watermark() {
    let incremental = bound_with(binned_return).incremental;
    assert!(incremental.is_some_and(|i| !i.final_parts));
    check_provisional_results(binned_return);
}

/// Incremental provisional results whose open entries are evaluated at each result: a
/// max of a column FIFO revises cannot be withdrawn when an entry matches further.
#[test]
fn provisional_results_with_open_entries_evaluated_are_the_date_cut_at_their_watermark() {
    let incremental = bound_with(max_matched).incremental;
    assert!(incremental.is_some_and(|i| i.final_parts && !i.withdraw));
    check_provisional_results(max_matched);
}

/// Incremental provisional results whose open entries' changes go narrow: the revised
/// columns and the column a derived one reads besides them (`px`, a *place* column),
/// for the groups the aggregate kept for the batch each entry was sent in. Without
/// anything derived from a revised column they go narrow too (no place column); a
/// derived column that reads one the keyed stage does not keep (derived after it)
/// sends them whole.
#[test]
fn provisional_results_with_narrow_revised_values_are_the_date_cut_at_their_watermark() {
    let places = |edit| bound_with(edit).incremental.and_then(|i| i.revised_narrow);
    assert_eq!(places(|t| t), Some(0));
    assert_eq!(places(max_matched), None, "a max is not withdrawn");
    assert_eq!(places(|t| revised_times(t, "holding_period + 1")), None);
    // A kept column replaced after the keyed stage, read before (`a`, so the keyed
    // stage keeps it) and after (`x`): the narrow rows would carry the keyed stage's
    // `qty`, the whole rows the replaced one.
    let replaced = |t| {
        let derive = [
            ("a", "matched_qty * qty"),
            ("qty", "holding_period + 1"),
            ("x", "matched_qty * qty"),
        ];
        with_derived(t, &derive, &[("a", "sum(a)"), ("x", "sum(x)")])
    };
    assert_eq!(places(replaced), None);
    // A derived column named like a column of the narrow rows.
    let reserved = |t| {
        let derive = [("__settles", "matched_qty * 2")];
        with_derived(t, &derive, &[("s", "sum(__settles)")])
    };
    assert_eq!(places(reserved), None);
    let bound = bound_with(notional);
    let keep = bound.stages.iter().find_map(|s| match s {
        vizflow::config::Stage::Keyed(spec) => spec.keep.clone(),
        _ => None,
    });
    let px = keep.unwrap().iter().position(|c| c == "px").unwrap();
    assert_eq!(places(notional), Some(1 << px));
    check_provisional_results(notional);
}

/// An open entry sent idle (nothing matched yet: `matched_qty` 0, `is_closed` false)
/// adds nothing to sums of its revised columns, or of products of them with finite
/// columns: when it changes it is sent again but not withdrawn (`Incremental::idle`,
/// the place columns that must be finite). Not with a count of values (it counts a 0),
/// nor through a sum or a quotient. With a factor that is NaN or infinite for some
/// entries (`ln(px - 10.5)`: 0 times it is NaN, counted), those are withdrawn: the
/// results and the counts are the oracle's.
#[test]
fn open_entries_sent_idle_are_not_withdrawn_and_results_stay_the_date_cut_at_w() {
    let idle = |edit| bound_with(edit).incremental.and_then(|i| i.idle);
    let keep = |edit| {
        let bound = bound_with(edit);
        let keep = bound.stages.iter().find_map(|s| match s {
            vizflow::config::Stage::Keyed(spec) => spec.keep.clone(),
            _ => None,
        });
        keep.unwrap()
    };
    let bit = |edit, column: &str| 1u64 << keep(edit).iter().position(|c| c == column).unwrap();
    assert_eq!(idle(|t| t), Some(0), "sums of the revised columns");
    assert_eq!(idle(notional), Some(bit(notional, "px")));
    let chained = |t| {
        let derive = [("a", "-matched_qty * 2"), ("x", "cast(a as double) * px")];
        with_derived(t, &derive, &[("x", "sum(x)")])
    };
    assert_eq!(idle(chained), Some(bit(chained, "px")));
    assert_eq!(idle(nan_factor), Some(bit(nan_factor, "f")));
    let counted = |t| with_derived(t, &[], &[("m", "mean(matched_qty)")]);
    assert_eq!(idle(counted), None, "a count of values counts a zero");
    let plus = |t| with_derived(t, &[("x", "matched_qty + px")], &[("x", "sum(x)")]);
    assert_eq!(idle(plus), None);
    let quotient = |t| with_derived(t, &[("x", "matched_qty / px")], &[("x", "sum(x)")]);
    assert_eq!(idle(quotient), None);
    check_provisional_results(nan_factor);
}

/// [`pipeline_text`] with a metric over `matched_qty` times a factor that is NaN or
/// infinite for some rows (`px` below 10.5 or null).
fn nan_factor(text: String) -> String {
    let derive = [("f", "ln(px - 10.5)"), ("x", "matched_qty * f")];
    with_derived(text, &derive, &[("x", "sum(x)")])
}

/// Under `[stream]` alone, open entries go on in place (`EnrichSpec::open_in_place`):
/// their rows with the revised columns null, their values narrow when they settle. The
/// binding chooses it when every component a revised column feeds is null wherever it
/// is (a `max` too: each value comes once), nothing after the keyed stage counts a
/// revised column and no group-by column is one; the place columns are those the
/// derived columns of revised ones read. Either way the partial is the whole-date
/// run's, for 1, 2 and 4 workers (the other `[stream]` tests run in place too).
#[test]
fn open_entries_go_on_in_place_where_a_null_adds_nothing_and_give_the_whole_date_results() {
    let alone = "lateness = \"2s\"";
    let in_place = |edit| bound_in(edit, alone).keyed().and_then(|s| s.open_in_place);
    assert_eq!(in_place(|t| t), Some(0));
    assert_eq!(in_place(max_matched), Some(0));
    let keep = bound_in(notional, alone)
        .keyed()
        .and_then(|s| s.keep.clone());
    let px = keep.unwrap().iter().position(|c| c == "px").unwrap();
    assert_eq!(in_place(notional), Some(1 << px));
    assert_eq!(
        in_place(not_null_strict),
        None,
        "not null where matched_qty is"
    );
    assert_eq!(in_place(binned_matched), None, "a bin counts nulls");
    let by_closed = |t: String| {
        t.replace(
            "group_by = [\"side\", \"ukey\"]",
            "group_by = [\"is_closed\"]",
        )
    };
    assert_eq!(in_place(by_closed), None, "a revised group-by column");
    // A derived column after the keyed stage replacing a kept column.
    let replaced = |t| {
        let derive = [("a", "matched_qty * qty"), ("qty", "holding_period + 1")];
        with_derived(t, &derive, &[("a", "sum(a)"), ("q", "sum(qty)")])
    };
    assert_eq!(in_place(replaced), None);
    // Provisional results have their own incremental form; a return to the close does
    // not stream.
    let provisional = bound_with(|t| t).keyed().and_then(|s| s.open_in_place);
    assert_eq!(provisional, None);
    assert_eq!(in_place(with_close), None);
    // With late rows, the partial is the whole-date run's over the rows on time.
    for edit in [notional, max_matched, not_null_strict] {
        let (day, elapsed) = day(41, 2_000, 20);
        let late = late_rows(&elapsed, 2_000);
        let expected = whole_date_without_as(&day, &late, edit);
        let dir = tempfile::tempdir().unwrap();
        write_day(dir.path(), &day);
        for (workers, batch_rows) in [(1, 65_536), (2, 7), (4, 250)] {
            let text = edit(pipeline_text(dir.path(), batch_rows, Some(alone)));
            let summary = run_date(&Pipeline::from_toml(&text).unwrap(), workers);
            let case = format!("{} workers, batches of {batch_rows}", workers);
            assert_eq!(written(&summary), expected, "{case}: {text}");
        }
    }
    // Without, the counts after the keyed stage are the whole-date run's too (a
    // non-finite value from revised values among them: `ln(0)` of an entry never
    // matched), in place and not.
    let (day, elapsed) = day(42, 2_000, u32::MAX);
    assert!(late_rows(&elapsed, 2_500).is_empty());
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    let on_time = Some("lateness = \"2500ms\"");
    for edit in [notional, log_matched, not_null_strict] {
        let text = |batch_rows, stream| edit(pipeline_text(dir.path(), batch_rows, stream));
        let whole = run_date(&Pipeline::from_toml(&text(65_536, None)).unwrap(), 1);
        let counts = downstream_counts(&whole.dates[0].report);
        let log = text(1, None).contains("ln(");
        let nonfinite = counts.iter().find(|(n, _)| n == "aggregate.nonfinite.lq");
        assert_eq!(nonfinite.is_some_and(|(_, n)| *n > 0), log, "{counts:?}");
        for (workers, batch_rows) in [(1, 65_536), (2, 7), (4, 250)] {
            let summary = run_date(
                &Pipeline::from_toml(&text(batch_rows, on_time)).unwrap(),
                workers,
            );
            let case = format!("{workers} workers, batches of {batch_rows}");
            assert_eq!(written(&summary), written(&whole), "{case}");
            let report = &summary.dates[0].report;
            assert_eq!(downstream_counts(report), counts, "{case}");
        }
    }
}

/// [`pipeline_text`] with a metric over `ln(matched_qty)`: minus infinity for an entry
/// never matched.
fn log_matched(text: String) -> String {
    with_derived(text, &[("lq", "ln(matched_qty)")], &[("lq", "sum(lq)")])
}

/// [`pipeline_text`] with a metric over a derived column that is not null where
/// `matched_qty` is.
fn not_null_strict(text: String) -> String {
    let derive = [("m", "CASE WHEN matched_qty > 0 THEN px ELSE 0.5 END")];
    with_derived(text, &derive, &[("m", "sum(m)")])
}

/// [`pipeline_text`] with a metric over the matched quantity's bin.
fn binned_matched(text: String) -> String {
    let bin = "[bin]\n        matched_qty = 100\n\n        [aggregate]";
    (text.replacen("[aggregate]", bin, 1)).replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\n        b = \"sum(matched_qty_bin)\"",
    )
}

/// [`pipeline_text`] with a metric over `matched_qty * px`.
fn notional(text: String) -> String {
    revised_times(text, "px")
}

/// [`pipeline_text`] with a metric over `matched_qty` times `factor` (`f`, derived
/// after the keyed stage from a column the FIFO adds, when it is not a column).
fn revised_times(text: String, factor: &str) -> String {
    let metric = [("x", "sum(x)")];
    match factor {
        "px" => with_derived(text, &[("x", "matched_qty * px")], &metric),
        _ => with_derived(text, &[("f", factor), ("x", "matched_qty * f")], &metric),
    }
}

/// [`pipeline_text`] with the derived columns `derive` and the metrics `metrics`
/// (name, expression), in order.
fn with_derived(text: String, derive: &[(&str, &str)], metrics: &[(&str, &str)]) -> String {
    let lines = |pairs: &[(&str, &str)]| {
        (pairs.iter())
            .map(|(name, expr)| format!("\n        {name} = \"{expr}\""))
            .collect::<String>()
    };
    let derive = format!("[derive]{}\n\n        [aggregate]", lines(derive));
    (text.replacen("[aggregate]", &derive, 1)).replace(
        "[aggregate.metrics]",
        &format!("[aggregate.metrics]{}", lines(metrics)),
    )
}

/// [`pipeline_text`] with a max of the matched quantity.
fn max_matched(text: String) -> String {
    text.replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\n        most = \"max(matched_qty)\"",
    )
}

/// [`pipeline_text`] with a metric over a return's bin.
fn binned_return(text: String) -> String {
    let bin = "[bin]\n        return_1 = 0.001\n\n        [aggregate]";
    (text.replacen("[aggregate]", bin, 1)).replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\n        b = \"sum(return_1_bin)\"",
    )
}

/// [`pipeline_text`] with a metric that rules out incremental provisional results.
fn not_incremental(text: String) -> String {
    let derive = "[derive]\n        r30z = \"coalesce(return_30, 0.5)\"\n\n        [aggregate]";
    (text.replacen("[aggregate]", derive, 1)).replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\n        z = \"sum(r30z)\"",
    )
}

/// Which pipelines get incremental provisional results: those where each component a
/// late column feeds (a return, a column FIFO revises) reads one return and is null
/// where it is, or reads revised columns alone, and no group-by column is late. And
/// which of their horizons' parts are narrow: those whose components read the return
/// itself, when the parts make the final result and rows go on whole when cut.
#[test]
fn provisional_results_are_incremental_where_each_late_component_settles_once() {
    fn metric(text: String, derived: &str) -> String {
        let derive = format!("[derive]\n        x = \"{derived}\"\n\n        [aggregate]");
        (text.replacen("[aggregate]", &derive, 1)).replace(
            "[aggregate.metrics]",
            "[aggregate.metrics]\n        x = \"sum(x)\"",
        )
    }
    type Case = (
        &'static str,
        fn(String) -> String,
        Option<(u32, bool, bool, bool, u32)>,
    );
    let cases: [Case; 9] = [
        (
            "the test pipeline",
            |t| t,
            Some((0b11, true, true, true, 0b11)),
        ),
        (
            "a strict function of one return",
            scaled_return,
            Some((0b11, true, true, true, 0b01)),
        ),
        // Its nulls are counted (`bin.null.return_1`): the final rows still go on.
        (
            "a return's bin",
            binned_return,
            Some((0b11, true, false, true, 0)),
        ),
        // A max cannot be withdrawn: open entries are evaluated at each result (and
        // the rows held open go apart when cut).
        (
            "a max of a revised column",
            max_matched,
            Some((0b11, true, true, false, 0)),
        ),
        ("two returns", |t| metric(t, "return_30 - return_1"), None),
        (
            "a return and a revised column",
            |t| metric(t, "matched_qty * return_30"),
            None,
        ),
        ("not null where the return is", not_incremental, None),
        ("the close's return", with_close, None),
        (
            "grouped by a return's bin",
            |t| {
                (t.replacen(
                    "[aggregate]",
                    "[bin]\n        return_1 = 0.01\n\n        [aggregate]",
                    1,
                ))
                .replace(
                    "group_by = [\"side\", \"ukey\"]",
                    "group_by = [\"side\", \"return_1_bin\"]",
                )
            },
            None,
        ),
    ];
    for (case, edit, expected) in cases {
        let incremental = bound_with(edit)
            .incremental
            .map(|i| (i.horizons, i.revised, i.final_parts, i.withdraw, i.narrow));
        assert_eq!(incremental, expected, "{case}");
    }
}

/// [`pipeline`] edited by `edit`, with provisional results, bound to the test's schema.
fn bound_with(edit: fn(String) -> String) -> vizflow::config::BoundPipeline {
    bound_in(edit, "lateness = \"2s\"\nemit_every = \"60s\"")
}

/// [`pipeline`] edited by `edit`, with the `[stream]` section `stream`, bound to the
/// test's schema.
fn bound_in(edit: fn(String) -> String, stream: &str) -> vizflow::config::BoundPipeline {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(pipeline_text(dir.path(), 100, Some(stream)));
    let (day, _) = day(1, 10, 5);
    Pipeline::from_toml(&text)
        .unwrap()
        .bind(&day.schema())
        .unwrap()
}

fn check_provisional_results(edit: fn(String) -> String) {
    for (seed, rows, far) in [(31, 2_500, 40), (32, 1_200, 5)] {
        let (day, elapsed) = day(seed, rows, far);
        let late = late_rows(&elapsed, 2_000);
        let last = *elapsed.iter().max().unwrap();
        let expected: Vec<(i64, Option<RecordBatch>)> = (1..)
            .map(|k| k * 60_000)
            .take_while(|w| *w <= last + 60_000)
            .map(|w| (w, cut_run_as(&day, &elapsed, &late, w, edit)))
            .collect();
        let empty = expected.iter().filter(|(_, e)| e.is_none()).count();
        let (final_expected, counts_expected) = {
            let dir = tempfile::tempdir().unwrap();
            let on_time: Vec<u32> = (0..day.num_rows() as u32)
                .filter(|i| late.binary_search(&(*i as usize)).is_err())
                .collect();
            let rows = arrow::compute::take_record_batch(&day, &UInt32Array::from(on_time));
            write_day(dir.path(), &rows.unwrap());
            let text = edit(pipeline_text(dir.path(), 65_536, None));
            let whole = run_date(&Pipeline::from_toml(&text).unwrap(), 1);
            (written(&whole), downstream_counts(&whole.dates[0].report))
        };
        assert!(counts_expected.len() > 5, "{counts_expected:?}");
        let dir = tempfile::tempdir().unwrap();
        write_day(dir.path(), &day);
        let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
        for (workers, batch_rows) in [(1, 65_536), (2, 50), (4, 333)] {
            let case = format!("seed {seed}, {workers} workers, batches of {batch_rows}");
            let text = edit(pipeline_text(dir.path(), batch_rows, Some(stream)));
            let summary = run_date(&Pipeline::from_toml(&text).unwrap(), workers);
            assert_eq!(
                written(&summary),
                final_expected,
                "{case}: the final result"
            );
            assert_eq!(
                downstream_counts(&summary.dates[0].report),
                counts_expected,
                "{case}: the counts of the keyed stage and after"
            );
            let results = provisional_results(&dir.path().join("out"));
            assert_eq!(
                results.len(),
                240 - empty,
                "{case}: one a minute of the day"
            );
            let counted = summary.dates[0].report.count("stream.provisional_results");
            assert_eq!(
                counted,
                results.len() as u64,
                "{case}: counted in the report"
            );
            for (w, expected) in &expected {
                match expected {
                    Some(expected) => {
                        let result = results.get(w).unwrap_or_else(|| panic!("{case}: no {w}"));
                        assert_eq!(sorted(result), sorted(expected), "{case}: at {w}");
                    }
                    None => assert!(!results.contains_key(w), "{case}: {w} before any row"),
                }
            }
            for (w, result) in results.range(last + 30_001..) {
                assert_eq!(sorted(result), sorted(&final_expected), "{case}: at {w}");
            }
        }
    }
}

/// Through the embedding API: provisional results come out of `next_result` while the
/// date is still open (once the producer raises the watermark), in watermark order,
/// each marked with its watermark, and equal to the file run's; the final one last.
/// And across two processes (`vizflow cluster`), the same provisional results.
#[test]
fn provisional_results_come_out_while_the_date_is_open_and_across_processes() {
    let (day, elapsed) = day(33, 1_500, 40);
    let dir = tempfile::tempdir().unwrap();
    write_day(dir.path(), &day);
    let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
    let summary = run_date(&pipeline(dir.path(), 100, Some(stream)), 2);
    let final_expected = written(&summary);
    let expected = provisional_results(&dir.path().join("out"));
    let last = *elapsed.iter().max().unwrap();
    assert!(
        expected.range(..last).count() >= 4,
        "several within the rows"
    );

    let bound = pipeline(dir.path(), 1, Some(stream))
        .bind(&day.schema())
        .unwrap();
    let mut engine = Engine::start(bound, 2).unwrap();
    engine.begin_date(date()).unwrap();
    for start in (0..day.num_rows()).step_by(64) {
        engine
            .push(day.slice(start, 64.min(day.num_rows() - start)))
            .unwrap();
    }
    // The producer says the rows are done up to the day's end: every provisional result
    // is due, and comes out before the date is closed.
    engine.advance_within_date(14_401_000).unwrap();
    let mut provisional = Vec::new();
    let waiting = std::time::Instant::now();
    while provisional.len() < expected.len() {
        match engine.next_result().unwrap() {
            Some(result) => provisional.push(result),
            None => std::thread::yield_now(),
        }
        // Not a synchronisation: a bound that turns a hang into a failure.
        let kinds: Vec<_> = provisional.iter().map(|r| r.kind).collect();
        assert!(waiting.elapsed().as_secs() < 120, "only {kinds:?} came out");
    }
    let mut results = engine.finish().unwrap();
    let last_result = results.pop().unwrap();
    assert!(results.is_empty(), "only the final result is left");
    assert!(last_result.is_final());
    assert_eq!(
        sorted(&last_result.partial.unwrap()),
        sorted(&final_expected)
    );
    for (result, (w, partial)) in provisional.iter().zip(&expected) {
        let kind = vizflow::engine::ResultKind::Provisional { watermark_ms: *w };
        assert_eq!(result.kind, kind);
        let got = result.partial.as_ref().unwrap();
        assert_eq!(sorted(got), sorted(partial), "at {w}");
    }

    let file = dir.path().join("stream.toml");
    std::fs::write(&file, pipeline_text(dir.path(), 50, Some(stream))).unwrap();
    let out = dir.path().join("out");
    std::fs::remove_dir_all(&out).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vizflow"))
        .arg("cluster")
        .arg(&file)
        .args(["--local", "2", "--workers", "2", "--dates", DATE])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", common::stderr(&output));
    let across = provisional_results(&out);
    assert_eq!(across.len(), expected.len());
    for ((w, got), (_, partial)) in across.iter().zip(&expected) {
        assert_eq!(sorted(got), sorted(partial), "two processes, at {w}");
    }
}

/// SEMANTICS.md's worked example through the engine: one symbol, horizon 60 s, B 100 at
/// 0, S 60 at 60,000, S 60 at 300,000. At `W` = 120,000 the B row has `matched_qty` 60
/// and is not closed, the first S row matched 60 of it after 60 s, both returns are
/// known, the last S row is not there; at the end the B row is closed and the last S row
/// is 40 from the lot and a remainder of 20.
#[test]
fn the_worked_example_of_provisional_results() {
    let text = r#"
        input = { dir = "unused", pattern = "d_{date}.feather" }
        output = { dir = "unused" }
        columns = { timestamp = "ticktime", symbol = "ukey" }
        time = { market = "CN", format = "hhmmssmmm" }
        forward_return = { price = "px", horizons = [60] }

        [[enrich]]
        rule = "FIFOMatch"
        side = "side"
        qty = "qty"
        price = "px"

        [aggregate]
        group_by = ["side"]
        [aggregate.metrics]
        rows = "count()"
        matched = "sum(matched_qty)"
        closed = "sum(is_closed)"
        holding = "sum(holding_period)"
        returns = "count(return_60)"
        r60 = "sum(return_60)"

        [stream]
        lateness = "0s"
        emit_every = "60s"
    "#;
    let day = RecordBatch::try_from_iter([
        (
            "ticktime",
            Arc::new(Int64Array::from(vec![
                ticktime(0),
                ticktime(60_000),
                ticktime(300_000),
            ])) as ArrayRef,
        ),
        ("ukey", Arc::new(StringArray::from(vec!["600000"; 3]))),
        ("side", Arc::new(StringArray::from(vec!["B", "S", "S"]))),
        ("qty", Arc::new(Int64Array::from(vec![100, 60, 60]))),
        ("px", Arc::new(Float64Array::from(vec![10.0, 11.0, 12.0]))),
    ])
    .unwrap();
    let bound = Pipeline::from_toml(text)
        .unwrap()
        .bind(&day.schema())
        .unwrap();
    let mut engine = Engine::start(bound, 2).unwrap();
    engine.begin_date(date()).unwrap();
    engine.push(day).unwrap();
    let results = engine.finish().unwrap();
    // (side, rows, matched, closed, holding, known returns, sum of returns)
    type Row = (String, i64, i64, i64, Option<f64>, i64, Option<f64>);
    let rows = |partial: &RecordBatch| -> Vec<Row> {
        let partial = sorted_by(partial, &["side"]);
        let ints = |c: &str| {
            partial
                .column_by_name(c)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone()
        };
        let floats = |c: &str| {
            let c = partial
                .column_by_name(c)
                .unwrap()
                .as_primitive::<arrow::datatypes::Float64Type>();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i)))
                .collect::<Vec<_>>()
        };
        let sides = partial
            .column_by_name("side")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let (n, m, c, k) = (
            ints("rows"),
            ints("matched"),
            ints("closed"),
            ints("returns"),
        );
        let (h, r) = (floats("holding"), floats("r60"));
        (0..partial.num_rows())
            .map(|i| {
                (
                    sides.value(i).to_owned(),
                    n.value(i),
                    m.value(i),
                    c.value(i),
                    h[i],
                    k.value(i),
                    r[i],
                )
            })
            .collect()
    };
    let at = |w: i64| {
        let kind = vizflow::engine::ResultKind::Provisional { watermark_ms: w };
        let result = results.iter().find(|r| r.kind == kind).unwrap();
        rows(result.partial.as_ref().unwrap())
    };
    assert_eq!(
        at(120_000),
        [
            // An entry has no holding period (a sum over no values is 0).
            (
                "B".to_owned(),
                1,
                60,
                0,
                Some(0.0),
                1,
                Some(11.0 / 10.0 - 1.0)
            ),
            ("S".to_owned(), 1, 60, 1, Some(60.0), 1, Some(0.0)),
        ]
    );
    let last = results.last().unwrap();
    assert!(last.is_final());
    let end = rows(last.partial.as_ref().unwrap());
    assert_eq!(
        end[0],
        (
            "B".to_owned(),
            1,
            100,
            1,
            Some(0.0),
            1,
            Some(11.0 / 10.0 - 1.0)
        )
    );
    // The first S row, then the last one split: 40 from the lot (after 300 s) and a
    // remainder of 20 that is not closed.
    assert_eq!((end[1].1, end[1].2, end[1].3), (3, 120, 2));
    assert_eq!(end[1].4, Some(60.0 + 300.0));
}

/// The partial's rows sorted by their group keys (a partial's row order is not part
/// of its meaning).
fn sorted(partial: &RecordBatch) -> RecordBatch {
    sorted_by(partial, &["side", "ukey"])
}

/// The partial's rows sorted by `keys`.
fn sorted_by(partial: &RecordBatch, keys: &[&str]) -> RecordBatch {
    let keys: Vec<arrow::compute::SortColumn> = keys
        .iter()
        .map(|k| arrow::compute::SortColumn {
            values: partial.column_by_name(k).unwrap().clone(),
            options: None,
        })
        .collect();
    let indices = arrow::compute::lexsort_to_indices(&keys, None).unwrap();
    arrow::compute::take_record_batch(partial, &indices).unwrap()
}

#[test]
fn stream_section_errors_say_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    for (section, wanted) in [
        (
            "lateness = \"2 seconds\"",
            "write a number and a unit (ms, s, m or h)",
        ),
        ("lateness = \"2s\"\nlate = \"skip\"", "use \"drop\""),
        ("lateness = \"-1s\"", "is not a duration"),
        (
            "lateness = \"2s\"\nemit_every = \"0s\"",
            "must be a positive whole number of seconds, e.g. emit_every = \"60s\"",
        ),
        (
            "lateness = \"2s\"\nemit_every = \"1500ms\"",
            "must be a positive whole number of seconds",
        ),
        ("late = \"drop\"", "missing field `lateness`"),
    ] {
        let text = format!(
            "input = {{ dir = \"{}\", pattern = \"d_{{date}}.feather\" }}\n\
             output = {{ dir = \"out\" }}\n\
             columns = {{ timestamp = \"ticktime\", symbol = \"ukey\" }}\n\
             time = {{ market = \"CN\" }}\n\
             aggregate = {{ group_by = [\"side\"], metrics = {{ n = \"count()\" }} }}\n\
             [stream]\n{section}\n",
            dir.path().display()
        );
        let error = Pipeline::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains(wanted), "{section}: {error}");
    }
}

#[test]
fn a_part_that_fails_on_arrival_fails_its_date_and_the_next_date_still_runs() {
    // A non-integer quantity fails the [[cast]] that runs as its part arrives: the part
    // still counts for the parts after it (no worker waits for it forever), the date
    // fails naming the row and value, and the next date is processed.
    let dir = tempfile::tempdir().unwrap();
    let (day, _) = day(31, 600, 1_000);
    // `qty` as floats, 100.5 at row `bad`.
    let with_float_qty = |bad: Option<usize>| {
        let qty: Vec<f64> = (0..day.num_rows())
            .map(|i| if Some(i) == bad { 100.5 } else { 100.0 })
            .collect();
        let index = day.schema().index_of("qty").unwrap();
        let mut fields: Vec<Field> = day
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new("qty", DataType::Float64, false);
        let mut columns = day.columns().to_vec();
        columns[index] = Arc::new(Float64Array::from(qty));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    };
    write_day(dir.path(), &with_float_qty(Some(150)));
    let next = dir.path().join("in").join(format!("d_{DATE}.feather"));
    std::fs::rename(&next, dir.path().join("in/first.tmp")).unwrap();
    write_day(dir.path(), &with_float_qty(None));
    std::fs::rename(&next, dir.path().join("in/d_20240103.feather")).unwrap();
    std::fs::rename(dir.path().join("in/first.tmp"), &next).unwrap();
    let text = format!(
        "{}\n[[cast]]\ncolumn = \"qty\"\nto = \"int64\"\n",
        pipeline_text(dir.path(), 40, Some("lateness = \"2s\""))
    );
    let options = RunOptions {
        dates: DateSelection::Spec("20240102,20240103".into()),
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&Pipeline::from_toml(&text).unwrap(), &options).unwrap();
    let DateStatus::Failed(message) = &summary.dates[0].status else {
        panic!("20240102 did not fail: {:?}", summary.dates[0].status);
    };
    assert!(
        message.contains("100.5") && message.contains("150"),
        "{message}"
    );
    assert!(
        matches!(summary.dates[1].status, DateStatus::Written { .. }),
        "{:?}",
        summary.dates[1].status
    );
}

/// A pipeline with a rule of every kind after the forward returns (one horizon spans
/// many releases), a column derived from the FIFO's `matched_qty` after the keyed
/// stage, and `keep`-style pruning (the aggregate reads few columns).
fn rules_pipeline(dir: &Path, batch_rows: usize, stream: Option<&str>) -> Pipeline {
    let stream = stream.map_or(String::new(), |s| format!("[stream]\n{s}\n"));
    let text = format!(
        r#"
        input = {{ dir = "{input}", pattern = "d_{{date}}.feather", batch_rows = {batch_rows} }}
        output = {{ dir = "{output}" }}
        columns = {{ timestamp = "ticktime", symbol = "ukey" }}
        time = {{ market = "CN", format = "hhmmssmmm" }}
        forward_return = {{ price = "px", horizons = [2, 45, 120] }}
        derive = {{ notional = "matched_qty * px" }}

        [[enrich]]
        rule = "FIFOMatch"
        side = "side"
        qty = "qty"
        price = "px"

        [[enrich]]
        rule = "TagCondition"
        name = "big"
        condition = "qty >= 300"

        [[enrich]]
        rule = "TagRunning"
        name = "position"
        update = "prev + CASE WHEN side = 'B' THEN qty ELSE -qty END"

        [aggregate]
        group_by = ["side", "big"]
        [aggregate.metrics]
        n = "count()"
        matched = "sum(matched_qty)"
        notional = "sum(notional)"
        closed = "sum(is_closed)"
        position = "sum(position)"
        low = "min(position)"
        r2 = "sum(return_2)"
        r45 = "mean(return_45)"
        r120 = "max(return_120)"

        {stream}
        "#,
        input = dir.join("in").display(),
        output = dir.join("out").display(),
    );
    Pipeline::from_toml(&text).unwrap()
}

/// The counts of the keyed stage, its rules and the stages after it (those that do not
/// depend on how the rows arrived).
fn downstream_counts(report: &vizflow_operators::report::DateReport) -> Vec<(String, u64)> {
    let after = ["aggregate.", "bin."];
    let mut counts = keyed_counts(report);
    counts.extend(
        (report.counts.iter())
            .filter(|(name, _)| after.iter().any(|k| name.starts_with(k)))
            .map(|(name, count)| (name.clone(), *count)),
    );
    counts
}

/// The counts of the keyed stage and its rules.
fn keyed_counts(report: &vizflow_operators::report::DateReport) -> Vec<(String, u64)> {
    let keyed = ["enrich.", "fifo.", "rule."];
    (report.counts.iter())
        .filter(|(name, _)| keyed.iter().any(|k| name.starts_with(k)))
        .map(|(name, count)| (name.clone(), *count))
        .collect()
}

#[test]
fn rows_released_as_the_watermark_passes_give_the_whole_date_results() {
    // Rows in file order up to the lateness, so none is late: the released run must
    // give the whole-date run's partial and counts, bit for bit, with FIFO lots open
    // across many releases and returns whose horizon spans several.
    for (seed, rows) in [(21, 4_000), (22, 1_200)] {
        let (day, elapsed) = day(seed, rows, u32::MAX);
        assert!(late_rows(&elapsed, 2_500).is_empty());
        let dir = tempfile::tempdir().unwrap();
        write_day(dir.path(), &day);
        let whole = run_date(&rules_pipeline(dir.path(), 65_536, None), 1);
        let expected = written(&whole);
        assert!(keyed_counts(&whole.dates[0].report).len() > 5);
        for (workers, batch_rows) in [(1, 1), (1, 500), (2, 13), (4, 97)] {
            let case = format!("seed {seed}, {workers} workers, batches of {batch_rows}");
            let pipeline = rules_pipeline(dir.path(), batch_rows, Some("lateness = \"2500ms\""));
            let summary = run_date(&pipeline, workers);
            assert_eq!(written(&summary), expected, "{case}");
            assert_eq!(
                keyed_counts(&summary.dates[0].report),
                keyed_counts(&whole.dates[0].report),
                "{case}"
            );
        }
    }
}

#[test]
fn a_rule_reading_what_fifo_still_changes_is_refused_under_stream() {
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline_text(dir.path(), 100, Some("lateness = \"2s\"")).replace(
        "[aggregate]",
        r#"[[enrich]]
        rule = "TagRunning"
        name = "position"
        update = "prev + matched_qty"

        [aggregate]"#,
    );
    let pipeline = Pipeline::from_toml(&text).unwrap();
    let (day, _) = day(1, 10, 1_000);
    let error = pipeline.bind(&day.schema()).unwrap_err().to_string();
    assert!(
        error.contains("TagRunning(position) cannot run under [stream]: it reads 'matched_qty'")
            && error.contains("[derive]"),
        "{error}"
    );
    // Without [stream] the same rule runs.
    let text = text.replace("[stream]\nlateness = \"2s\"", "");
    Pipeline::from_toml(&text)
        .unwrap()
        .bind(&day.schema())
        .unwrap();
}

/// Under `emit_every` the rules run before the returns are known: a rule that reads one
/// is refused when the pipeline is bound, saying what to do; without `emit_every` it
/// runs.
#[test]
fn a_rule_reading_a_return_is_refused_under_emit_every() {
    let dir = tempfile::tempdir().unwrap();
    let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
    let text = pipeline_text(dir.path(), 100, Some(stream)).replace(
        "[aggregate]",
        r#"[[enrich]]
        rule = "TagRunning"
        name = "drift"
        update = "prev + return_1"

        [aggregate]"#,
    );
    let (day, _) = day(1, 10, 1_000);
    let error = Pipeline::from_toml(&text)
        .unwrap()
        .bind(&day.schema())
        .unwrap_err()
        .to_string();
    let expected = "[[enrich]] TagRunning(drift) reads return_1, which is not known when the \
                    rules run under [stream] emit_every";
    assert!(
        error.contains(expected) && error.contains("[derive]"),
        "{error}"
    );
    let text = text.replace("\nemit_every = \"60s\"", "");
    Pipeline::from_toml(&text)
        .unwrap()
        .bind(&day.schema())
        .unwrap();
    // Without a keyed stage there would be no provisional results: refused too.
    let text = format!(
        "input = {{ dir = \"in\", pattern = \"d_{{date}}.feather\" }}\n\
         output = {{ dir = \"out\" }}\n\
         columns = {{ timestamp = \"ticktime\", symbol = \"ukey\" }}\n\
         time = {{ market = \"CN\", format = \"hhmmssmmm\" }}\n\
         aggregate = {{ group_by = [\"side\"], metrics = {{ n = \"count()\" }} }}\n\
         [stream]\n{stream}\n"
    );
    let error = Pipeline::from_toml(&text)
        .unwrap()
        .bind(&day.schema())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("provisional results come from the keyed stage, and this pipeline has none"),
        "{error}"
    );
}

/// The results of `day` pushed through the embedding API in file order, in batches of
/// `batch` rows, under `[stream]` `stream` with `workers` workers.
fn pushed(
    day: &RecordBatch,
    stream: &str,
    workers: usize,
    batch: usize,
) -> Vec<vizflow::engine::DateResult> {
    let dir = tempfile::tempdir().unwrap();
    let bound = pipeline(dir.path(), batch, Some(stream))
        .bind(&day.schema())
        .unwrap();
    let mut engine = Engine::start(bound, workers).unwrap();
    engine.begin_date(date()).unwrap();
    for start in (0..day.num_rows()).step_by(batch) {
        engine
            .push(day.slice(start, batch.min(day.num_rows() - start)))
            .unwrap();
    }
    engine.finish().unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]

    /// Any lateness, disorder, batch sizes and workers: rows pushed in file order through
    /// the embedding API give the oracle's late rows and the whole-date partial of the
    /// on-time rows.
    #[test]
    fn any_lateness_and_arrival_order_give_the_oracle(
        seed in 0u64..10_000,
        lateness_ms in 0i64..6_000,
        far in 2u32..60,
        workers in 1usize..4,
        batch in 1usize..300,
    ) {
        let (day, elapsed) = day(seed, 700, far);
        let late = late_rows(&elapsed, lateness_ms);
        let expected = whole_date_without(&day, &late);
        let stream = format!("lateness = \"{lateness_ms}ms\"");
        let result = pushed(&day, &stream, workers, batch).pop().unwrap();
        proptest::prop_assert_eq!(result.report.count("stream.late_rows"), late.len() as u64);
        proptest::prop_assert_eq!(sorted(&result.partial.unwrap()), sorted(&expected));
    }

    /// Any lateness, disorder, batch sizes and workers, with provisional results every
    /// 60 s: each one within the rows equals the oracle's date cut at its watermark, and
    /// they come in watermark order before the final result.
    #[test]
    fn any_lateness_and_arrival_order_give_the_oracles_provisional_results(
        seed in 0u64..10_000,
        lateness_ms in 0i64..6_000,
        far in 2u32..60,
        workers in 1usize..4,
        batch in 1usize..300,
    ) {
        let (day, elapsed) = day(seed, 1_200, far);
        let late = late_rows(&elapsed, lateness_ms);
        let stream = format!("lateness = \"{lateness_ms}ms\"\nemit_every = \"60s\"");
        let mut results = pushed(&day, &stream, workers, batch);
        let last = results.pop().unwrap();
        proptest::prop_assert!(last.is_final());
        proptest::prop_assert_eq!(sorted(&last.partial.unwrap()), sorted(&whole_date_without(&day, &late)));
        let watermarks: Vec<i64> = results
            .iter()
            .map(|r| match r.kind {
                vizflow::engine::ResultKind::Provisional { watermark_ms } => watermark_ms,
                vizflow::engine::ResultKind::Final => panic!("two final results"),
            })
            .collect();
        // One at every minute of the day from the first on-time row on.
        let first = (0..elapsed.len())
            .filter(|i| late.binary_search(i).is_err())
            .map(|i| elapsed[i])
            .min()
            .unwrap();
        let every: Vec<i64> = (1..=240).map(|k| k * 60_000).filter(|w| *w >= first).collect();
        proptest::prop_assert_eq!(&watermarks, &every);
        let within = *elapsed.iter().max().unwrap() + 60_000;
        for (result, w) in results.iter().zip(&watermarks).take_while(|(_, w)| **w <= within) {
            let expected = cut_run(&day, &elapsed, &late, *w).expect("a result has rows");
            let got = result.partial.as_ref().unwrap();
            proptest::prop_assert_eq!(sorted(got), sorted(&expected), "at {}", w);
        }
    }
}
