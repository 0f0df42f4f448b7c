//! End-to-end cases: `vizflow gen` + `vizflow run` of the reference pipelines
//! (`examples/markout.toml`, `examples/alpha_markout.toml`) against checked-in expected
//! partials (`tests/golden/{pipeline}/{date}.csv`), and the embedding API against
//! reading the same files.
//!
//! Regenerate the expected partials after an intended change of results with
//! `VIZFLOW_BLESS=1 cargo test --test end_to_end`, and review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::NaiveDate;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::config::Pipeline;
use vizflow::engine::Engine;
use vizflow::io::{FileFormat, read_parquet};
use vizflow::run::{DateStatus, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate, generate_date};
use vizflow_testing::fifo::{FifoRow, fifo};

mod common;

fn dates() -> Vec<NaiveDate> {
    vec![
        NaiveDate::from_ymd_opt(2024, 1, 2).unwrap(),
        NaiveDate::from_ymd_opt(2024, 1, 3).unwrap(),
    ]
}

fn spec(format: FileFormat) -> GenSpec {
    GenSpec {
        rows: 20_000,
        symbols: 50,
        seed: 42,
        format,
        compression: None,
        prefix: "alpha_".into(),
    }
}

/// A partial as CSV text with floats in shortest round-trip form: exact and reviewable.
fn to_csv(batch: &RecordBatch) -> String {
    // The exact sums are what the float sum columns round (`vizflow reduce`'s tests
    // check them); the golden files keep to what a person reads.
    let batch = &vizflow::reduce::without_exact(batch);
    let options = FormatOptions::default().with_null("");
    let schema = batch.schema();
    let mut out = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    let formatters: Vec<_> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
        .collect();
    for row in 0..batch.num_rows() {
        let cells: Vec<String> = formatters
            .iter()
            .map(|f| f.value(row).to_string())
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// The formats `vizflow gen` writes, each read back by its own reader.
const FORMATS: [FileFormat; 4] = [
    FileFormat::IpcFile,
    FileFormat::IpcStream,
    FileFormat::Parquet,
    FileFormat::Csv,
];

/// Generates the test dates in `format` under `dir` and runs the pipeline `toml` (which
/// reads feather, like the examples) on them with 2 workers.
fn run_format(toml: &str, format: FileFormat, dir: &Path) -> Vec<RecordBatch> {
    let data = dir.join(format!("data-{format:?}"));
    generate(&spec(format), &data, &dates()).unwrap();
    let pattern = format!("alpha_{{date}}.{}", format.extension());
    let toml = toml.replace("alpha_{date}.feather", &pattern);
    run_files(&toml, &data, &dir.join(format!("out-{format:?}")), 2)
}

fn run_files(toml: &str, input: &Path, output: &Path, workers: usize) -> Vec<RecordBatch> {
    let pipeline = Pipeline::from_toml(toml).unwrap();
    let options = RunOptions {
        input_dir: Some(input.to_owned()),
        output_dir: Some(output.to_owned()),
        workers,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options).unwrap();
    summary
        .dates
        .iter()
        .map(|d| match &d.status {
            DateStatus::Written { path, .. } => read_parquet(path).unwrap().0,
            other => panic!("{}: {other:?}", d.date),
        })
        .collect()
}

fn golden_path(pipeline: &str, date: NaiveDate) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "tests/golden/{pipeline}/{}.csv",
        date.format("%Y%m%d")
    ))
}

/// Compares each date's partial with `tests/golden/{pipeline}/{date}.csv`, writing the
/// file first under `VIZFLOW_BLESS` if `bless` (once per pipeline, so that the other
/// runs are still compared). `what` says which run made the partials.
fn check_golden(pipeline: &str, partials: &[RecordBatch], what: &str, bless: bool) {
    assert_eq!(partials.len(), dates().len(), "{what}");
    for (date, partial) in dates().into_iter().zip(partials) {
        let actual = to_csv(partial);
        let path = golden_path(pipeline, date);
        if bless && std::env::var_os("VIZFLOW_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with VIZFLOW_BLESS=1", path.display()));
        assert_eq!(
            actual,
            expected,
            "{what}: partial of {date} differs from {}",
            path.display()
        );
    }
}

#[test]
fn golden_markout() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        &spec(FileFormat::IpcFile),
        &dir.path().join("data"),
        &dates(),
    )
    .unwrap();
    let partials = run_files(
        vizflow::demo::MARKOUT_TOML,
        &dir.path().join("data"),
        &dir.path().join("out"),
        2,
    );
    for (date, partial) in dates().into_iter().zip(&partials) {
        let day = read_input(&dir.path().join("data"), date);
        check_against_oracle(date, partial, &markout_oracle(&day));
    }
    check_golden("markout", &partials, "markout", true);
}

/// The alpha markout pipeline (FIFO matching, derived columns after it) from every
/// input format, against the same expected partials.
#[test]
fn golden_alpha_markout_from_every_input_format() {
    let dir = tempfile::tempdir().unwrap();
    for format in FORMATS {
        let partials = run_format(vizflow::demo::ALPHA_MARKOUT_TOML, format, dir.path());
        let first = format == FORMATS[0];
        if first {
            // The golden files were written by the code under test: check their source
            // against the oracle, from the file the run read. The other formats must give
            // the same partials.
            let data = dir.path().join(format!("data-{format:?}"));
            for (date, partial) in dates().into_iter().zip(&partials) {
                let day = read_input(&data, date);
                check_input_exercises_the_rules(date, &day);
                check_against_oracle(date, partial, &alpha_markout_oracle(&day));
            }
        }
        check_golden("alpha_markout", &partials, &format!("{format:?}"), first);
    }
}

/// The generated day holds what the rules treat specially, so that the oracle comparison
/// covers it: out-of-session rows, exits left (partly) unmatched, entries partly closed,
/// ties in time and returns past the day's end.
fn check_input_exercises_the_rules(date: NaiveDate, day: &RecordBatch) {
    let (rows, by_symbol) = input_rows(day);
    let matched = fifo_rows(&rows, &by_symbol);
    let ticktime = day.column_by_name("ticktime").unwrap();
    let ticktime = ticktime.as_primitive::<Int64Type>();
    let clamped = ticktime
        .values()
        .iter()
        .map(|t| t / 10_000_000 * 3_600_000 + t / 100_000 % 100 * 60_000 + t % 100_000)
        .filter(|ms| {
            !(34_200_000..=41_400_000).contains(ms) && !(46_800_000..=54_000_000).contains(ms)
        })
        .count();
    let unmatched_exits = matched
        .iter()
        .filter(|m| rows[m.source].side == "S" && !m.is_closed)
        .count();
    let partly_closed_entries = matched
        .iter()
        .filter(|m| rows[m.source].side == "B" && m.matched_qty > 0 && !m.is_closed)
        .count();
    let split_exits = matched.len() - rows.len();
    let ties = by_symbol
        .values()
        .flat_map(|indices| indices.windows(2))
        .filter(|pair| rows[pair[0]].elapsed_ms == rows[pair[1]].elapsed_ms)
        .count();
    let past_the_end = rows.iter().filter(|r| r.returns[2].is_none()).count();
    let counts = [
        clamped,
        unmatched_exits,
        partly_closed_entries,
        split_exits,
        ties,
        past_the_end,
    ];
    assert!(
        counts.iter().all(|&c| c > 0),
        "{date}: clamped, unmatched exits, partly closed entries, split exits, ties, \
         returns past the end: {counts:?}"
    );
}

/// A date's generated input, as read back from its Arrow IPC file by arrow's own reader
/// (not VizFlow's).
fn read_input(data: &Path, date: NaiveDate) -> RecordBatch {
    let path = data.join(format!("alpha_{}.feather", date.format("%Y%m%d")));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// The CN day's total trading time (SEMANTICS.md, parse_time).
const DAY_MS: i64 = 14_400_000;

/// One input row, with what the steps before the aggregate make of it.
struct InputRow {
    elapsed_ms: i64,
    symbol: i64,
    side: String,
    qty: i64,
    fill_price: f64,
    mid: f64,
    alpha1_bin: Option<i64>,
    /// `return_60`, `return_300`, `return_600`.
    returns: [Option<f64>; 3],
}

/// Steps 1, 2, 4 and 5 of the reference pipelines (SEMANTICS.md, "Worked reference
/// pipeline"), row by row: the cast of `qty`, `mid`, parse_time on the CN clock, forward
/// returns of `mid` as of each horizon, and the bin of `alpha1`. Also returns each symbol's
/// rows in event order (by `elapsed_ms`, ties by `row_id`).
fn input_rows(day: &RecordBatch) -> (Vec<InputRow>, BTreeMap<i64, Vec<usize>>) {
    let column = |name: &str| day.column_by_name(name).unwrap().clone();
    let (ticktime, ukey, side) = (column("ticktime"), column("ukey"), column("orderSide"));
    let (ticktime, ukey, side) = (
        ticktime.as_primitive::<Int64Type>(),
        ukey.as_primitive::<Int64Type>(),
        side.as_string::<i32>(),
    );
    let floats = |name: &str| column(name).as_primitive::<Float64Type>().clone();
    let (qty, fill, bid, ask, alpha1) = (
        floats("qty"),
        floats("fillPrice"),
        floats("BidPrice1"),
        floats("AskPrice1"),
        floats("alpha1"),
    );
    let mut rows: Vec<InputRow> = (0..day.num_rows())
        .map(|i| {
            // The generator writes no nulls, so every value is read as present.
            let rounded = qty.value(i).round();
            assert!(
                (qty.value(i) - rounded).abs() <= 1e-6,
                "row {i}: qty {}",
                qty.value(i)
            );
            let alpha = alpha1.value(i);
            InputRow {
                elapsed_ms: common::oracle_elapsed_ms(ticktime.value(i)),
                symbol: ukey.value(i),
                side: side.value(i).to_owned(),
                qty: rounded as i64,
                fill_price: fill.value(i),
                mid: (ask.value(i) + bid.value(i)) / 2.0,
                // Round half away from zero, which is what f64::round does.
                alpha1_bin: alpha.is_finite().then(|| (alpha / 1e-4).round() as i64),
                returns: [None; 3],
            }
        })
        .collect();
    let mut by_symbol: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_symbol.entry(row.symbol).or_default().push(i);
    }
    for indices in by_symbol.values_mut() {
        indices.sort_by_key(|&i| (rows[i].elapsed_ms, i));
    }
    for indices in by_symbol.values() {
        for &i in indices {
            for (h, horizon_s) in [60, 300, 600].into_iter().enumerate() {
                let target = rows[i].elapsed_ms + 1000 * horizon_s;
                if target > DAY_MS {
                    continue;
                }
                // The last row of the symbol at or before the target, in event order.
                let at_or_before = indices.partition_point(|&j| rows[j].elapsed_ms <= target);
                let future = indices[at_or_before - 1];
                rows[i].returns[h] = Some(rows[future].mid / rows[i].mid - 1.0);
            }
        }
    }
    (rows, by_symbol)
}

/// One output row of the FIFO match (SEMANTICS.md, "FIFO matching"), with its source row.
struct Matched {
    source: usize,
    matched_qty: i64,
    holding_period: Option<f64>,
    is_closed: bool,
}

/// The FIFO match per symbol, in event order (the shared oracle, see
/// [`vizflow_testing::fifo`]): B opens lots, S closes the oldest first; an entry row
/// reports what of it was closed by the end of the date.
fn fifo_rows(rows: &[InputRow], by_symbol: &BTreeMap<i64, Vec<usize>>) -> Vec<Matched> {
    let mut out = Vec::new();
    for indices in by_symbol.values() {
        let symbol: Vec<FifoRow> = indices
            .iter()
            .map(|&i| {
                let side = rows[i].side.as_str();
                if !matches!(side, "B" | "S") {
                    panic!("the generator writes only B and S, not {side:?}");
                }
                FifoRow {
                    side: Some(side),
                    qty: Some(rows[i].qty),
                    elapsed_ms: rows[i].elapsed_ms,
                }
            })
            .collect();
        let (matched, _counts) = fifo(&symbol);
        out.extend(matched.into_iter().map(|m| Matched {
            source: indices[m.input],
            matched_qty: m.matched_qty.expect("generated quantities are valid"),
            holding_period: m.holding_period,
            is_closed: m.is_closed.expect("generated quantities are valid"),
        }));
    }
    out
}

/// A float sum kept with the sum of its terms' magnitudes, which bounds its rounding error.
#[derive(Debug, Default, Clone, Copy)]
struct FloatSum {
    sum: f64,
    magnitude: f64,
    count: i64,
}

impl FloatSum {
    fn add(&mut self, x: Option<f64>) {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            self.sum += x;
            self.magnitude += x.abs();
            self.count += 1;
        }
    }

    /// `sum / divisor`, null when the divisor is zero, and a bound of its rounding error
    /// (the partial sums exactly and rounds once; this oracle sums in plain f64).
    fn divided_by(&self, divisor: i64) -> (Option<f64>, f64) {
        if divisor == 0 {
            return (None, 0.0);
        }
        let divisor = divisor as f64;
        let slack = 1e-12 * self.magnitude / divisor + f64::MIN_POSITIVE;
        (Some(self.sum / divisor), slack)
    }
}

/// One group of the oracle's aggregate: each column of the partial but the keys and the
/// date, with its expected value (`None`: null) and the error allowed (0 for counts and
/// integer sums).
type ExpectedGroup = BTreeMap<String, (Option<f64>, f64)>;

/// The groups of a partial, by (`alpha1_bin`, `orderSide`).
type ExpectedPartial = BTreeMap<(Option<i64>, String), ExpectedGroup>;

fn exact(x: i64) -> (Option<f64>, f64) {
    (Some(x as f64), 0.0)
}

/// `mean(x)`, `sum(x)` and `count(x)` of a float column (SEMANTICS.md, aggregate: the sum
/// is 0 and the mean null when there is no value).
fn insert_mean(columns: &mut ExpectedGroup, mean: &str, x: &str, sum: &FloatSum) {
    columns.insert(mean.to_owned(), sum.divided_by(sum.count));
    columns.insert(format!("sum({x})"), sum.divided_by(1));
    columns.insert(format!("count({x})"), exact(sum.count));
}

/// The alpha markout pipeline (`examples/alpha_markout.toml`) on one date's input, in
/// plain sequential Rust from SEMANTICS.md: every metric of the partial and the mergeable
/// components kept beside them.
fn alpha_markout_oracle(day: &RecordBatch) -> ExpectedPartial {
    #[derive(Default)]
    struct Group {
        rows: i64,
        matched_qty: i64,
        closed: i64,
        notional: FloatSum,
        returns: [FloatSum; 2],
        holding: FloatSum,
    }
    let (rows, by_symbol) = input_rows(day);
    let mut groups: BTreeMap<(Option<i64>, String), Group> = BTreeMap::new();
    for matched in fifo_rows(&rows, &by_symbol) {
        // Expanded rows carry their source row's values and returns.
        let row = &rows[matched.source];
        let group = groups
            .entry((row.alpha1_bin, row.side.clone()))
            .or_default();
        group.rows += 1;
        group.matched_qty += matched.matched_qty;
        group.closed += i64::from(matched.is_closed);
        group
            .notional
            .add(Some(matched.matched_qty as f64 * row.fill_price));
        group.returns[0].add(row.returns[0]);
        group.returns[1].add(row.returns[1]);
        group.holding.add(matched.holding_period);
    }
    let groups = groups.into_iter().map(|(key, g)| {
        let mut columns = ExpectedGroup::new();
        for name in ["count", "count()"] {
            columns.insert(name.to_owned(), exact(g.rows));
        }
        for name in ["total_qty", "sum(matched_qty)"] {
            columns.insert(name.to_owned(), exact(g.matched_qty));
        }
        for name in ["total_notional", "sum(notional)"] {
            columns.insert(name.to_owned(), g.notional.divided_by(1));
        }
        columns.insert("vwap".to_owned(), g.notional.divided_by(g.matched_qty));
        for name in ["closed_count", "sum(is_closed)"] {
            columns.insert(name.to_owned(), exact(g.closed));
        }
        insert_mean(&mut columns, "mean_return_60", "return_60", &g.returns[0]);
        insert_mean(&mut columns, "mean_return_300", "return_300", &g.returns[1]);
        insert_mean(
            &mut columns,
            "mean_holding_period",
            "holding_period",
            &g.holding,
        );
        (key, columns)
    });
    groups.collect()
}

/// The markout pipeline (`examples/markout.toml`, no FIFO match) on one date's input.
fn markout_oracle(day: &RecordBatch) -> ExpectedPartial {
    #[derive(Default)]
    struct Group {
        rows: i64,
        qty: i64,
        returns: [FloatSum; 3],
    }
    let (rows, _) = input_rows(day);
    let mut groups: BTreeMap<(Option<i64>, String), Group> = BTreeMap::new();
    for row in &rows {
        let group = groups
            .entry((row.alpha1_bin, row.side.clone()))
            .or_default();
        group.rows += 1;
        group.qty += row.qty;
        for (sum, value) in group.returns.iter_mut().zip(row.returns) {
            sum.add(value);
        }
    }
    let groups = groups.into_iter().map(|(key, g)| {
        let mut columns = ExpectedGroup::new();
        for name in ["count", "count()"] {
            columns.insert(name.to_owned(), exact(g.rows));
        }
        for name in ["total_qty", "sum(qty)"] {
            columns.insert(name.to_owned(), exact(g.qty));
        }
        for (h, sum) in [60, 300, 600].into_iter().zip(&g.returns) {
            let x = format!("return_{h}");
            insert_mean(&mut columns, &format!("mean_{x}"), &x, sum);
        }
        (key, columns)
    });
    groups.collect()
}

/// Compares a partial with the oracle's: the same groups, and in each every column (but
/// the keys and the date) as expected, the partial having no column the oracle lacks.
fn check_against_oracle(date: NaiveDate, partial: &RecordBatch, expected: &ExpectedPartial) {
    let column = |name: &str| {
        let column = partial
            .column_by_name(name)
            .unwrap_or_else(|| panic!("{date}: the partial has no column {name}"));
        arrow::compute::cast(column, &arrow::datatypes::DataType::Float64).unwrap()
    };
    let dates = partial.column_by_name("date").unwrap();
    let dates = arrow::compute::cast(dates, &arrow::datatypes::DataType::Utf8).unwrap();
    let (bins, sides) = (
        partial.column_by_name("alpha1_bin").unwrap(),
        partial.column_by_name("orderSide").unwrap(),
    );
    let (bins, sides) = (bins.as_primitive::<Int64Type>(), sides.as_string::<i32>());
    let schema = partial.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let metrics: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !["date", "alpha1_bin", "orderSide"].contains(n))
        // The exact sums: what the float sum components round (checked by `vizflow reduce`'s tests).
        .filter(|n| !n.ends_with(".exact"))
        .collect();
    let mut keys = Vec::new();
    for i in 0..partial.num_rows() {
        assert_eq!(
            dates.as_string::<i32>().value(i),
            date.to_string(),
            "row {i}"
        );
        let key = (
            bins.is_valid(i).then(|| bins.value(i)),
            sides.value(i).to_owned(),
        );
        let at = format!("{date} group {key:?}");
        let group = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{at}: not a group of the oracle"));
        let mut unchecked: Vec<&str> = group.keys().map(String::as_str).collect();
        for name in &metrics {
            let (value, slack) = group
                .get(*name)
                .unwrap_or_else(|| panic!("{at}: the oracle has no column {name}"));
            unchecked.retain(|n| n != name);
            let values = column(name);
            let values = values.as_primitive::<Float64Type>();
            let actual = values.is_valid(i).then(|| values.value(i));
            let agrees = match (actual, value) {
                (Some(a), Some(e)) => (a - e).abs() <= *slack,
                (a, e) => a == *e,
            };
            assert!(
                agrees,
                "{at}: {name} is {actual:?}, expected {value:?} (± {slack:e})"
            );
        }
        assert!(
            unchecked.is_empty(),
            "{at}: the partial lacks {unchecked:?}"
        );
        keys.push(key);
    }
    let missing: Vec<_> = expected.keys().filter(|k| !keys.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{date}: groups missing from the partial: {missing:?}"
    );
    assert_eq!(keys.len(), expected.len(), "{date}: a group appears twice");
}

#[test]
fn every_input_format_gives_the_same_partials() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = None;
    for format in FORMATS {
        let partials: Vec<String> = run_format(vizflow::demo::MARKOUT_TOML, format, dir.path())
            .iter()
            .map(to_csv)
            .collect();
        match &reference {
            None => reference = Some(partials),
            Some(expected) => assert_eq!(&partials, expected, "{format:?}"),
        }
    }
}

#[test]
fn embedding_shuffled_small_batches_equals_reading_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(FileFormat::IpcFile);
    generate(&spec, &dir.path().join("data"), &dates()).unwrap();
    for (name, toml) in [
        ("markout", vizflow::demo::MARKOUT_TOML),
        ("alpha_markout", vizflow::demo::ALPHA_MARKOUT_TOML),
    ] {
        let output = dir.path().join(format!("out-{name}"));
        let from_files = run_files(toml, &dir.path().join("data"), &output, 1);

        let pipeline = Pipeline::from_toml(toml).unwrap();
        let first = generate_date(&spec, dates()[0]);
        let mut engine = Engine::start(pipeline.bind(&first.schema()).unwrap(), 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut pushed = Vec::new();
        for date in dates() {
            let day = generate_date(&spec, date);
            engine.begin_date(date).unwrap();
            let mut order: Vec<u32> = (0..day.num_rows() as u32).collect();
            order.shuffle(&mut rng);
            for chunk in order.chunks(rng.random_range(50..400)) {
                engine.push(common::rows_with_ids(&day, chunk)).unwrap();
            }
            while let Some(result) = engine.next_result().unwrap() {
                pushed.push(result.partial.unwrap());
            }
        }
        pushed.extend(
            engine
                .finish()
                .unwrap()
                .into_iter()
                .map(|r| r.partial.unwrap()),
        );
        assert_eq!(pushed.len(), from_files.len(), "{name}");
        for (a, b) in pushed.iter().zip(&from_files) {
            assert_eq!(to_csv(a), to_csv(b), "{name}");
            assert!(a.num_rows() > 10 && a.column(0).null_count() == 0, "{name}");
        }
    }
}
