//! Returns to the next trading day (`"next_open"`, `"next_close"`) against a plain
//! sequential oracle written from SEMANTICS.md (*Cross-date returns*): seeded dates with
//! a holiday in the calendar (whose file is there and must be skipped), symbols that
//! appear and vanish between days, rows in random order with ties, null prices and
//! out-of-session rows; for 1, 2 and 4 workers, both partitionings, two processes,
//! a single date whose next day is not in the run, a skipped date in the middle, a
//! next day that fails, a next day without a file, and under `[stream]` with
//! provisional results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet, write_batches};
use vizflow::operators::batch::Partition;
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, RunSummary, run};

mod common;

/// The dates with an input file. 20240105 is not a trading day of the calendar
/// ([`CALENDAR`]): its file must be skipped when the calendar is set.
const FILES: [u32; 6] = [20240102, 20240103, 20240104, 20240105, 20240108, 20240109];

/// The trading days: 20240105 is a holiday; 20240110 has no file.
const CALENDAR: [u32; 6] = [20240102, 20240103, 20240104, 20240108, 20240109, 20240110];

const SYMBOLS: i64 = 12;

/// A date's rows: symbols present with probability 0.8 (so some appear and vanish
/// between days), times at 2 s resolution over the whole day (ties, lunch break and
/// out-of-hours rows), a few null prices, in random order.
fn random_day(seed: u64, rows: usize) -> RecordBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let present: Vec<i64> = (0..SYMBOLS).filter(|_| rng.random_bool(0.8)).collect();
    let (mut ticktime, mut ukey, mut px) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rows {
        let ms_of_day: i64 = if rng.random_bool(0.05) {
            rng.random_range(8 * 3_600_000..16 * 3_600_000)
        } else if rng.random_bool(0.5) {
            rng.random_range(34_200_000..=41_400_000)
        } else {
            rng.random_range(46_800_000..=54_000_000)
        } / 2_000
            * 2_000;
        let (h, m, s) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
        );
        ticktime.push(h * 10_000_000 + m * 100_000 + s * 1000);
        let symbol = present[rng.random_range(0..present.len())];
        ukey.push(600_000 + symbol);
        let price = 10.0 + symbol as f64 + rng.random_range(-0.5..0.5);
        px.push((!rng.random_bool(0.02)).then_some(price));
    }
    RecordBatch::try_from_iter(vec![
        ("ticktime", Arc::new(Int64Array::from(ticktime)) as ArrayRef),
        ("ukey", Arc::new(Int64Array::from(ukey))),
        ("px", Arc::new(Float64Array::from(px))),
    ])
    .unwrap()
}

/// Every date's rows, by date key.
fn days() -> BTreeMap<u32, RecordBatch> {
    (FILES.iter().enumerate())
        .map(|(k, d)| (*d, random_day(40 + k as u64, 1_500 + 300 * k)))
        .collect()
}

fn path_of(dir: &Path, date: u32) -> PathBuf {
    dir.join("in").join(format!("d_{date}.feather"))
}

/// Writes the dates' files (in parts of 97 rows) and the calendar.
fn write_inputs(dir: &Path, days: &BTreeMap<u32, RecordBatch>) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for (date, day) in days {
        let chunks: Vec<RecordBatch> = (0..day.num_rows())
            .step_by(97)
            .map(|start| day.slice(start, 97.min(day.num_rows() - start)))
            .collect();
        let path = path_of(dir, *date);
        write_batches(&path, FileFormat::IpcFile, day.schema(), &chunks, None).unwrap();
    }
    let calendar: String = CALENDAR.iter().map(|d| format!("{d}\n")).collect();
    std::fs::write(dir.join("calendar.csv"), format!("date\n{calendar}")).unwrap();
}

/// The pipeline: returns to the next day's open and close (and to the close, and at
/// 60 s) per symbol; with the calendar when `calendar`, `[stream]` when given.
fn pipeline_text(dir: &Path, calendar: bool, batch_rows: usize, stream: Option<&str>) -> String {
    let calendar = match calendar {
        true => format!(", calendar = \"{}\"", dir.join("calendar.csv").display()),
        false => String::new(),
    };
    let stream = stream.map_or(String::new(), |s| format!("[stream]\n{s}\n"));
    format!(
        r#"
        input = {{ dir = "{input}", pattern = "d_{{date}}.feather", batch_rows = {batch_rows}{calendar} }}
        output = {{ dir = "{output}" }}
        columns = {{ timestamp = "ticktime", symbol = "ukey" }}
        time = {{ market = "CN", format = "hhmmssmmm" }}
        forward_return = {{ price = "px", horizons = [60, "close", "next_open", "next_close"] }}

        [aggregate]
        group_by = ["ukey"]
        [aggregate.metrics]
        n = "count()"
        open_sum = "sum(return_next_open)"
        opens = "count(return_next_open)"
        close_sum = "sum(return_next_close)"
        closes = "count(return_next_close)"
        day_close = "sum(return_close)"
        {stream}
        "#,
        input = dir.join("in").display(),
        output = dir.join("out").display(),
    )
}

/// What the oracle expects of a symbol on a date.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    n: i64,
    open_sum: f64,
    opens: i64,
    close_sum: f64,
    closes: i64,
}

/// A date's rows in event order per symbol: (elapsed_ms, row_id, price).
fn events(day: &RecordBatch) -> BTreeMap<i64, Vec<(i64, usize, Option<f64>)>> {
    let ticktime = day.column(0).as_primitive::<Int64Type>();
    let ukey = day.column(1).as_primitive::<Int64Type>();
    let px = day.column(2).as_primitive::<Float64Type>();
    let mut symbols: BTreeMap<i64, Vec<(i64, usize, Option<f64>)>> = BTreeMap::new();
    for i in 0..day.num_rows() {
        let elapsed = common::oracle_elapsed_ms(ticktime.value(i));
        let price = px.is_valid(i).then(|| px.value(i));
        symbols
            .entry(ukey.value(i))
            .or_default()
            .push((elapsed, i, price));
    }
    for rows in symbols.values_mut() {
        rows.sort_by_key(|(elapsed, row, _)| (*elapsed, *row));
    }
    symbols
}

/// The oracle of `date` whose next trading day's rows are `next` (`None`: no file):
/// per symbol, and the rows without a next day and without a row that day.
fn oracle(day: &RecordBatch, next: Option<&RecordBatch>) -> (BTreeMap<i64, Expected>, u64, u64) {
    let next = next.map(events);
    let (mut no_date, mut no_row) = (0, 0);
    let mut out: BTreeMap<i64, Expected> = BTreeMap::new();
    for (symbol, rows) in events(day) {
        let expected = out.entry(symbol).or_default();
        // The next day's first and last row of the symbol, in event order.
        let marks = next
            .as_ref()
            .map(|n| n.get(&symbol).map(|r| (r[0], r[r.len() - 1])));
        for (_, _, price) in rows {
            expected.n += 1;
            match marks {
                None => no_date += 1,
                Some(None) => no_row += 1,
                Some(Some((open, close))) => {
                    if let (Some(p), Some(o)) = (price, open.2) {
                        expected.open_sum += o / p - 1.0;
                        expected.opens += 1;
                    }
                    if let (Some(p), Some(c)) = (price, close.2) {
                        expected.close_sum += c / p - 1.0;
                        expected.closes += 1;
                    }
                }
            }
        }
    }
    (out, no_date, no_row)
}

/// The next trading day of each date: the calendar's, or the next file's.
fn next_day(date: u32, calendar: bool) -> Option<u32> {
    let days: &[u32] = if calendar { &CALENDAR } else { &FILES };
    days.iter().copied().find(|d| *d > date)
}

/// Checks a partial against the oracle.
fn assert_partial(partial: &RecordBatch, expected: &BTreeMap<i64, Expected>, case: &str) {
    assert_eq!(partial.num_rows(), expected.len(), "{case}: groups");
    let col = |name: &str| partial.column_by_name(name).unwrap().clone();
    let ukey = col("ukey");
    let ukey = ukey.as_primitive::<Int64Type>();
    let int = |name: &str, i: usize| col(name).as_primitive::<Int64Type>().value(i);
    let float = |name: &str, i: usize| {
        let c = col(name);
        let c = c.as_primitive::<Float64Type>();
        if c.is_valid(i) { c.value(i) } else { 0.0 }
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12;
    for i in 0..partial.num_rows() {
        let symbol = ukey.value(i);
        let want = &expected[&symbol];
        let case = format!("{case}: symbol {symbol}");
        assert_eq!(int("n", i), want.n, "{case}: n");
        assert_eq!(int("opens", i), want.opens, "{case}: opens");
        assert_eq!(int("closes", i), want.closes, "{case}: closes");
        let (open, close_sum) = (float("open_sum", i), float("close_sum", i));
        assert!(
            close(open, want.open_sum),
            "{case}: {open} vs {}",
            want.open_sum
        );
        assert!(
            close(close_sum, want.close_sum),
            "{case}: {close_sum} vs {}",
            want.close_sum
        );
    }
}

fn run_dates(pipeline: &str, dates: &str, workers: usize, partition: Option<&str>) -> RunSummary {
    let options = RunOptions {
        dates: DateSelection::Spec(dates.into()),
        workers,
        partition: partition.map(|p| match p {
            "symbol" => Partition::Symbol,
            _ => Partition::Date,
        }),
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    run(&Pipeline::from_toml(pipeline).unwrap(), &options).unwrap()
}

/// Each written date of a run against the oracle, with its counts.
fn assert_run(summary: &RunSummary, days: &BTreeMap<u32, RecordBatch>, calendar: bool, case: &str) {
    for outcome in &summary.dates {
        let date: u32 = outcome.date.format("%Y%m%d").to_string().parse().unwrap();
        let DateStatus::Written { path, .. } = &outcome.status else {
            panic!("{case}: {date} not written: {:?}", outcome.status);
        };
        let next = next_day(date, calendar).and_then(|n| days.get(&n));
        let (expected, no_date, no_row) = oracle(&days[&date], next);
        let case = format!("{case}, {date}");
        assert_partial(&read_parquet(path).unwrap().0, &expected, &case);
        let report = &outcome.report;
        assert_eq!(
            report.count("forward_return.no_next_date"),
            no_date,
            "{case}"
        );
        assert_eq!(report.count("forward_return.no_next_row"), no_row, "{case}");
    }
}

/// The dates with and without the calendar, for any workers and both partitionings.
#[test]
fn next_day_returns_match_the_oracle_for_any_workers_and_partition() {
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    for (calendar, workers, partition, batch_rows) in [
        (true, 1, None, 65_536),
        (true, 2, Some("symbol"), 50),
        (true, 4, Some("date"), 333),
        (false, 2, Some("date"), 64),
        (false, 4, Some("symbol"), 1_000),
    ] {
        let text = pipeline_text(dir.path(), calendar, batch_rows, None);
        let dates = "20240102..20240109";
        let summary = run_dates(&text, dates, workers, partition);
        let case = format!("calendar {calendar}, {workers} workers, {partition:?}");
        // With the calendar, the holiday's file is not a date of the run.
        assert_eq!(summary.dates.len(), if calendar { 5 } else { 6 }, "{case}");
        assert_run(&summary, &days, calendar, &case);
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    }
    // The counts are not all zero: the last date has no next file, and symbols vanish.
    let (_, no_date, _) = oracle(&days[&20240109], None);
    assert!(no_date > 0);
    let (_, _, no_row) = oracle(&days[&20240102], Some(&days[&20240103]));
    let vanished: u64 = (FILES.windows(2))
        .map(|w| oracle(&days[&w[0]], Some(&days[&w[1]])).2)
        .sum();
    assert!(no_row + vanished > 0, "some symbol vanishes between days");
}

/// A single date whose next trading day's file exists but is not in the run: that
/// file is read for its prices (no partial of its own); a date skipped by
/// `--skip-existing` in the middle is read the same way.
#[test]
fn a_next_day_outside_the_run_is_read_for_its_prices() {
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    let text = pipeline_text(dir.path(), true, 500, None);
    let summary = run_dates(&text, "20240104", 2, None);
    assert_eq!(summary.dates.len(), 1);
    assert_run(&summary, &days, true, "one date");
    let written: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".parquet"))
        .collect();
    assert_eq!(written, ["20240104.parquet"], "the next day has no partial");

    // 20240103 is skipped (its partial exists): 20240102 still gets its next day.
    let options = RunOptions {
        dates: DateSelection::Spec("20240102..20240103".into()),
        workers: 2,
        skip_existing: true,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let pipeline = Pipeline::from_toml(&text).unwrap();
    run(&pipeline, &options).unwrap();
    std::fs::remove_file(dir.path().join("out/20240102.parquet")).unwrap();
    let summary = run(&pipeline, &options).unwrap();
    let statuses: Vec<_> = summary.dates.iter().map(|d| &d.status).collect();
    assert!(
        matches!(
            statuses[..],
            [DateStatus::Written { .. }, DateStatus::Skipped]
        ),
        "{statuses:?}"
    );
    assert_run(
        &RunSummary {
            dates: summary.dates[..1].to_vec(),
            ..RunSummary::default()
        },
        &days,
        true,
        "skipped next day",
    );
}

/// A next day that fails: the date before it is written, its next-day returns null
/// and counted as without a next date; the failing date fails alone.
#[test]
fn a_failed_next_day_makes_the_returns_null_not_the_date_failed() {
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    std::fs::write(path_of(dir.path(), 20240108), b"not a feather file").unwrap();
    let text = pipeline_text(dir.path(), true, 500, None);
    let summary = run_dates(&text, "20240104..20240109", 2, None);
    let status = |date: u32| {
        let outcome = (summary.dates.iter())
            .find(|d| d.date.format("%Y%m%d").to_string() == date.to_string())
            .unwrap();
        (&outcome.status, &outcome.report)
    };
    assert!(matches!(status(20240108).0, DateStatus::Failed(_)));
    let (DateStatus::Written { path, .. }, report) = status(20240104) else {
        panic!("20240104 is written");
    };
    let (expected, no_date, _) = oracle(&days[&20240104], None);
    assert_partial(&read_parquet(path).unwrap().0, &expected, "failed next day");
    assert_eq!(report.count("forward_return.no_next_date"), no_date);
    assert_eq!(report.count("forward_return.no_next_row"), 0);
    // The dates around are unaffected.
    assert!(matches!(status(20240109).0, DateStatus::Written { .. }));
}

/// Across two processes, partitioned by symbol and by date: the same partials as one
/// process.
#[test]
fn next_day_returns_across_processes() {
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    let file = dir.path().join("p.toml");
    std::fs::write(&file, pipeline_text(dir.path(), true, 200, None)).unwrap();
    for partition in ["symbol", "date"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_vizflow"))
            .arg("cluster")
            .arg(&file)
            .args(["--local", "2", "--workers", "2", "--partition", partition])
            .args(["--dates", "20240102..20240108", "--progress", "quiet"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", common::stderr(&output));
        let outputs = common::outputs(&dir.path().join("out"));
        assert_eq!(outputs.len(), 4, "{partition}: {:?}", outputs.keys());
        for (name, out) in &outputs {
            let date: u32 = name.parse().unwrap();
            let next = next_day(date, true).and_then(|n| days.get(&n));
            let (expected, no_date, no_row) = oracle(&days[&date], next);
            let case = format!("{partition}, {date}");
            assert_partial(&out.partial.0, &expected, &case);
            let count = |name: &str| out.report["counts"][name].as_u64().unwrap_or(0);
            assert_eq!(count("forward_return.no_next_date"), no_date, "{case}");
            assert_eq!(count("forward_return.no_next_row"), no_row, "{case}");
        }
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    }
}

/// Under `[stream]` (the file in event order): the finals as the oracle; provisional
/// results have no next day (the date cut at `W` has none): every next-day return in
/// them is null.
#[test]
fn under_stream_provisional_results_have_no_next_day() {
    let days: BTreeMap<u32, RecordBatch> = days()
        .into_iter()
        .map(|(date, day)| {
            let ticktime = day.column(0).as_primitive::<Int64Type>();
            let elapsed = arrow::array::Int64Array::from_iter_values(
                (0..day.num_rows()).map(|i| common::oracle_elapsed_ms(ticktime.value(i))),
            );
            let order = arrow::compute::sort_to_indices(&elapsed, None, None).unwrap();
            (
                date,
                arrow::compute::take_record_batch(&day, &order).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    for stream in [
        "lateness = \"2s\"",
        "lateness = \"2s\"\nemit_every = \"3600s\"",
    ] {
        let text = pipeline_text(dir.path(), true, 100, Some(stream));
        let summary = run_dates(&text, "20240103..20240104", 2, None);
        assert_eq!(summary.dates.len(), 2);
        assert_run(&summary, &days, true, stream);
        for outcome in &summary.dates {
            assert_eq!(outcome.report.count("stream.late_rows"), 0);
        }
    }
    let date = chrono::NaiveDate::from_ymd_opt(2024, 1, 4).unwrap();
    let provisional = vizflow::run::provisional_path(&dir.path().join("out"), date);
    let (provisional, _) = read_parquet(&provisional).unwrap();
    assert!(provisional.num_rows() > 0);
    for column in ["opens", "closes"] {
        let counts = provisional.column_by_name(column).unwrap();
        let counts = counts.as_primitive::<Int64Type>();
        assert!(counts.iter().all(|c| c == Some(0)), "{column}: {counts:?}");
    }
}

/// Through the Engine API, rows pushed in shuffled batches of random sizes, of
/// 20240104 and 20240105 (a holiday of the calendar): planned next days as the oracle;
/// found as the dates come (`NextDays::following`, as `vizflow live` does) the next
/// date pushed, or with the calendar its next day (20240108, never pushed: none); left
/// empty, every next-day return is null and counted as without a next date (and
/// nothing waits for one).
#[test]
fn the_engine_api_takes_the_next_days_from_the_bound_pipeline() {
    use rand::seq::SliceRandom;
    use vizflow::engine::{Engine, Feeding, Workers};
    use vizflow::operators::next_day::NextDays;
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    let dates = [20240104u32, 20240105];
    let cases = [
        (
            "planned",
            Some(NextDays::new([(dates[0], dates[1])], [])),
            true,
        ),
        ("following", Some(NextDays::following(None)), true),
        (
            "following the calendar",
            Some(NextDays::following(Some(CALENDAR.to_vec()))),
            false,
        ),
        ("none", None, false),
    ];
    for (case, next_days, has_next) in cases {
        let text = pipeline_text(dir.path(), false, 100, None);
        let mut bound = (Pipeline::from_toml(&text).unwrap())
            .bind(&days[&dates[0]].schema())
            .unwrap();
        if let Some(next_days) = next_days {
            bound.next_days = Arc::new(next_days);
        }
        let workers = Workers::Local(common::process(2));
        let mut engine =
            Engine::launch(bound, workers, Partition::Symbol, Feeding::Shared).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut results = Vec::new();
        for date in dates {
            let day = &days[&date];
            engine
                .begin_date(vizflow::operators::time::date_of_key(date))
                .unwrap();
            let mut order: Vec<u32> = (0..day.num_rows() as u32).collect();
            order.shuffle(&mut rng);
            for chunk in order.chunks(rng.random_range(1..400)) {
                engine.push(common::rows_with_ids(day, chunk)).unwrap();
            }
        }
        results.extend(engine.finish().unwrap());
        assert_eq!(results.len(), 2);
        for (result, date) in results.iter().zip(dates) {
            let next = (has_next && date == dates[0]).then(|| &days[&dates[1]]);
            let (expected, no_date, no_row) = oracle(&days[&date], next);
            let case = format!("{case}, {date}");
            assert_partial(result.partial.as_ref().unwrap(), &expected, &case);
            let count = |name: &str| result.report.count(name);
            assert_eq!(count("forward_return.no_next_date"), no_date, "{case}");
            assert_eq!(count("forward_return.no_next_row"), no_row, "{case}");
        }
    }
}

/// A date read for its prices alone reads only the columns they come from: here the
/// next day's file lacks `qty`, which only the aggregate reads, and its prices still
/// count (the date itself would fail for the missing column).
#[test]
fn a_next_day_read_for_its_prices_needs_only_their_columns() {
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    let day = &days[&20240104];
    let qty = Arc::new(Int64Array::from_iter_values(0..day.num_rows() as i64)) as ArrayRef;
    let with_qty = vizflow::operators::batch::with_columns(day, vec![("qty".to_owned(), qty)]);
    let inputs = BTreeMap::from([(20240104, with_qty)]);
    write_inputs(dir.path(), &inputs);
    let text = pipeline_text(dir.path(), true, 300, None).replace(
        "n = \"count()\"",
        "n = \"count()\"\n        qty = \"sum(qty)\"",
    );
    let summary = run_dates(&text, "20240104", 2, None);
    assert_run(&summary, &days, true, "next day without qty");
}

/// A dates file may list a date the calendar does not (the holiday with a file): it
/// runs, between a date and that date's next trading day, which the date then waits
/// beyond (the run keeps that many dates in flight instead of waiting for ever).
#[test]
fn a_listed_date_between_a_date_and_its_next_day() {
    let days = days();
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &days);
    let list = dir.path().join("dates.txt");
    let text = pipeline_text(dir.path(), true, 300, None);
    // 20240104 and 20240105 share their next day: in the run, or read for its prices.
    for (workers, partition, listed) in [
        (1, Partition::Symbol, "20240104\n20240105\n20240108\n"),
        (2, Partition::Date, "20240104\n20240105\n20240108\n"),
        (2, Partition::Symbol, "20240104\n20240105\n"),
    ] {
        std::fs::write(&list, listed).unwrap();
        let options = RunOptions {
            dates: DateSelection::File(list.clone()),
            workers,
            partition: Some(partition),
            progress: ProgressStyle::Quiet,
            ..RunOptions::default()
        };
        let summary = run(&Pipeline::from_toml(&text).unwrap(), &options).unwrap();
        assert_eq!(summary.dates.len(), listed.lines().count());
        assert_run(&summary, &days, true, &format!("{partition:?}"));
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    }
}
