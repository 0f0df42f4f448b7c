//! `vizflow inspect`: the rows after `bin` are the rows the aggregation gets (their
//! counts and integer sums per group equal the date's partial), one symbol's rows are
//! that symbol's, and each stage's rows carry that stage's columns.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::inspect::{After, InspectOptions, inspect};
use vizflow::io::{FileFormat, read_parquet};
use vizflow::operators::forward_return::Horizon;
use vizflow::run::{ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate};

fn setup(dir: &Path) -> (Pipeline, NaiveDate) {
    setup_with(dir, |text| text)
}

/// [`setup`] with the example's text edited by `edit`.
fn setup_with(dir: &Path, edit: fn(String) -> String) -> (Pipeline, NaiveDate) {
    let date = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
    let spec = GenSpec {
        rows: 30_000,
        symbols: 25,
        seed: 11,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    generate(&spec, &dir.join("data"), &[date]).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alpha_markout.toml"),
    )
    .unwrap()
    .replace(
        "dir = \"data\"",
        &format!("dir = \"{}\"", dir.join("data").display()),
    )
    .replace(
        "dir = \"out/alpha_markout\"",
        &format!("dir = \"{}\"", dir.join("out").display()),
    );
    (Pipeline::from_toml(&edit(text)).unwrap(), date)
}

/// [`setup_with`] with the horizons `"next_open"` and `"next_close"` added and a next
/// trading day's file (2024-01-03, other symbols and seed) beside the date's, and
/// `metrics` (TOML lines) added to the aggregate's.
fn setup_next_day(dir: &Path, metrics: &str) -> (Pipeline, NaiveDate, NaiveDate) {
    let (pipeline, date) = setup_with(dir, |text| {
        text.replace(
            "horizons = [60, 300, 600]",
            "horizons = [60, 300, 600, \"next_open\", \"next_close\"]",
        )
    });
    let text = (pipeline.source).replace(
        "[aggregate.metrics]",
        &format!("[aggregate.metrics]\n{metrics}"),
    );
    let pipeline = Pipeline::from_toml(&text).unwrap();
    let next = NaiveDate::from_ymd_opt(2024, 1, 3).unwrap();
    let spec = GenSpec {
        rows: 20_000,
        symbols: 30,
        seed: 12,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    generate(&spec, &dir.join("data"), &[next]).unwrap();
    (pipeline, date, next)
}

fn text(batch: &RecordBatch, column: &str) -> Vec<String> {
    let values =
        arrow::compute::cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    let values = values.as_string::<i32>();
    (0..values.len())
        .map(|r| {
            if values.is_null(r) {
                "null".into()
            } else {
                values.value(r).to_owned()
            }
        })
        .collect()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let values =
        arrow::compute::cast(batch.column_by_name(column).unwrap(), &DataType::Int64).unwrap();
    values.as_primitive::<Int64Type>().iter().collect()
}

#[test]
fn the_rows_after_bin_are_those_the_partial_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let (pipeline, date) = setup(dir.path());
    let options = RunOptions {
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    run(&pipeline, &options).unwrap();
    let (partial, _) = read_parquet(&dir.path().join("out/20240102.parquet")).unwrap();

    let at = |after, symbol: Option<&str>| {
        let options = InspectOptions {
            date,
            symbol: symbol.map(String::from),
            after,
            input_dir: None,
        };
        inspect(&pipeline, &options).unwrap()
    };
    let rows = at(After::Bin, None);
    // Per group (alpha1_bin, orderSide): rows and the sum of matched_qty.
    let mut groups: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let (bins, sides, qty) = (
        text(&rows, "alpha1_bin"),
        text(&rows, "orderSide"),
        ints(&rows, "matched_qty"),
    );
    for r in 0..rows.num_rows() {
        let group = groups
            .entry((bins[r].clone(), sides[r].clone()))
            .or_default();
        group.0 += 1;
        group.1 += qty[r].unwrap_or(0);
    }
    let (p_bins, p_sides) = (text(&partial, "alpha1_bin"), text(&partial, "orderSide"));
    let (p_rows, p_qty) = (
        ints(&partial, "count()"),
        ints(&partial, "sum(matched_qty)"),
    );
    assert_eq!(groups.len(), partial.num_rows());
    for r in 0..partial.num_rows() {
        let group = groups[&(p_bins[r].clone(), p_sides[r].clone())];
        assert_eq!(
            group,
            (p_rows[r].unwrap(), p_qty[r].unwrap()),
            "group {} {}",
            p_bins[r],
            p_sides[r]
        );
    }

    // One symbol: its rows alone, as many as it has among all.
    let symbol = text(&rows, "ukey")[0].clone();
    let one = at(After::Bin, Some(&symbol));
    assert!(one.num_rows() > 0 && text(&one, "ukey").iter().all(|s| *s == symbol));
    assert_eq!(
        one.num_rows(),
        text(&rows, "ukey").iter().filter(|s| **s == symbol).count()
    );

    // Each stage's columns.
    let has = |b: &RecordBatch, c: &str| b.schema().index_of(c).is_ok();
    let parsed = at(After::ParseTime, Some(&symbol));
    assert!(has(&parsed, "elapsed_ms") && !has(&parsed, "matched_qty"));
    let enriched = at(After::Enrich, Some(&symbol));
    assert!(
        has(&enriched, "matched_qty")
            && has(&enriched, "return_60")
            && !has(&enriched, "alpha1_bin")
    );

    // The command: a table of at most --limit rows.
    let pipeline_file = dir.path().join("p.toml");
    std::fs::write(&pipeline_file, &pipeline.source).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_vizflow"))
        .arg("inspect")
        .arg(&pipeline_file)
        .args(["--date", "20240102", "--symbol", &symbol, "--limit", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("matched_qty") && stdout.contains("more rows"),
        "{stdout}"
    );
}

/// Returns to the next trading day: computed from the next day's file, read through
/// the stages before the keyed stage: the symbol's first (last) `mid` of that day in
/// event order over the row's, minus one; null on the last date (no next file).
#[test]
fn returns_to_the_next_day_come_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = "open = \"mean(return_next_open)\"\nclose = \"mean(return_next_close)\"";
    let (pipeline, date, next) = setup_next_day(dir.path(), metrics);
    let horizons = &pipeline.forward_return.as_ref().unwrap().1;
    assert!(horizons.contains(&Horizon::NextOpen) && horizons.contains(&Horizon::NextClose));
    let options = |date, after| InspectOptions {
        date,
        symbol: None,
        after,
        input_dir: None,
    };
    let rows = inspect(&pipeline, &options(date, After::Enrich)).unwrap();
    let next_rows = inspect(&pipeline, &options(next, After::ParseTime)).unwrap();
    // The next day's first and last mid per symbol, in event order.
    let key = |batch: &RecordBatch, r: usize| {
        let elapsed = batch.column_by_name("elapsed_ms").unwrap();
        let row_id = batch.column_by_name("row_id").unwrap();
        let row_id = arrow::compute::cast(row_id, &DataType::Int64).unwrap();
        (
            elapsed.as_primitive::<Int64Type>().value(r),
            row_id.as_primitive::<Int64Type>().value(r),
        )
    };
    let mids = |batch: &RecordBatch| floats(batch, "mid");
    let next_mid = mids(&next_rows);
    // Per symbol: (event order, mid) of its first and of its last row.
    type Mark = ((i64, i64), f64);
    let mut marks: BTreeMap<String, (Mark, Mark)> = BTreeMap::new();
    for (r, symbol) in text(&next_rows, "ukey").into_iter().enumerate() {
        let (k, m) = (key(&next_rows, r), next_mid[r].unwrap());
        let (first, last) = marks.entry(symbol).or_insert(((k, m), (k, m)));
        if k < first.0 {
            *first = (k, m);
        }
        if k > last.0 {
            *last = (k, m);
        }
    }
    let (mid, open, close) = (
        mids(&rows),
        floats(&rows, "return_next_open"),
        floats(&rows, "return_next_close"),
    );
    let mut compared = 0;
    for (r, symbol) in text(&rows, "ukey").into_iter().enumerate() {
        let (Some(mid), Some(mark)) = (mid[r], marks.get(&symbol)) else {
            assert_eq!((open[r], close[r]), (None, None), "row {r}");
            continue;
        };
        assert_eq!(open[r], Some(mark.0.1 / mid - 1.0), "row {r}");
        assert_eq!(close[r], Some(mark.1.1 / mid - 1.0), "row {r}");
        compared += 1;
    }
    assert!(compared > 10_000, "{compared}");
    // The last date has no next file: null.
    let last = inspect(&pipeline, &options(next, After::Enrich)).unwrap();
    let open = floats(&last, "return_next_open");
    assert!(open.iter().all(Option::is_none));
}

/// The next day is read for its prices alone, as `vizflow run` reads it: a next-day
/// file without a column only the aggregate reads gives the same returns.
#[test]
fn the_next_day_is_read_for_its_prices_alone() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = "open = \"mean(return_next_open)\"\na2 = \"mean(alpha2)\"";
    let (pipeline, date, _) = setup_next_day(dir.path(), metrics);
    let options = InspectOptions {
        date,
        symbol: None,
        after: After::Enrich,
        input_dir: None,
    };
    let with_alpha2 = inspect(&pipeline, &options).unwrap();
    // The next day's file again, without alpha2.
    let path = dir.path().join("data/alpha_20240103.feather");
    let reader =
        arrow::ipc::reader::FileReader::try_new(std::fs::File::open(&path).unwrap(), None).unwrap();
    let keep: Vec<usize> = (reader.schema().fields().iter().enumerate())
        .filter(|(_, f)| f.name() != "alpha2")
        .map(|(i, _)| i)
        .collect();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap().project(&keep).unwrap()).collect();
    let mut writer = arrow::ipc::writer::FileWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        &batches[0].schema(),
    )
    .unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    let without = inspect(&pipeline, &options).unwrap();
    let open = floats(&without, "return_next_open");
    assert_eq!(open, floats(&with_alpha2, "return_next_open"));
    assert!(open.iter().filter(|v| v.is_some()).count() > 10_000);
}

fn floats(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    let values = batch.column_by_name(column).unwrap();
    let values = values.as_primitive::<arrow::datatypes::Float64Type>();
    values.iter().collect()
}
