//! End-to-end cases: `vizflow gen` + `vizflow run` of the reference pipelines
//! (`examples/markout.toml`, `examples/alpha_markout.toml`) against checked-in expected
//! partials (`tests/golden/{pipeline}/{date}.csv`), and the embedding API against
//! reading the same files.
//!
//! Regenerate the expected partials after an intended change of results with
//! `VIZFLOW_BLESS=1 cargo test --test end_to_end`, and review the diff.

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
        check_golden("alpha_markout", &partials, &format!("{format:?}"), first);
        if first {
            for (date, partial) in dates().into_iter().zip(&partials) {
                check_alpha_markout_plausible(date, partial);
            }
        }
    }
}

/// What must hold of any alpha markout partial, whatever the golden values: each
/// group's closed rows at most its rows, its VWAP within the date's fill prices,
/// holding periods only on exits and never negative, and the metrics equal to their
/// components.
fn check_alpha_markout_plausible(date: NaiveDate, partial: &RecordBatch) {
    let day = generate_date(&spec(FileFormat::IpcFile), date);
    let prices = day.column_by_name("fillPrice").unwrap();
    let prices = prices.as_primitive::<Float64Type>();
    let (low, high) = (
        arrow::compute::min(prices).unwrap(),
        arrow::compute::max(prices).unwrap(),
    );
    let column = |name: &str| partial.column_by_name(name).unwrap().clone();
    let float = |name: &str| column(name).as_primitive::<Float64Type>().clone();
    let int = |name: &str| column(name).as_primitive::<Int64Type>().clone();
    let side = column("orderSide");
    let side = side.as_string::<i32>();
    let (count, closed, total_qty) = (int("count"), int("closed_count"), int("total_qty"));
    let (vwap, notional, hold) = (
        float("vwap"),
        float("total_notional"),
        float("mean_holding_period"),
    );
    let mut exit_groups_with_holding = 0;
    for i in 0..partial.num_rows() {
        let at = format!("{date} group {i} ({})", side.value(i));
        assert!(count.value(i) > 0, "{at}");
        assert!(
            (0..=count.value(i)).contains(&closed.value(i)),
            "{at}: closed_count {} of {} rows",
            closed.value(i),
            count.value(i)
        );
        if total_qty.value(i) > 0 {
            let vwap = vwap.value(i);
            assert!(
                low <= vwap && vwap <= high,
                "{at}: vwap {vwap} outside {low}..={high}"
            );
            let recomputed = notional.value(i) / total_qty.value(i) as f64;
            assert!((vwap / recomputed - 1.0).abs() < 1e-12, "{at}: vwap {vwap}");
        }
        match side.value(i) {
            "B" => assert!(hold.is_null(i), "{at}: entries have no holding period"),
            _ if hold.is_valid(i) => {
                assert!(
                    hold.value(i) >= 0.0,
                    "{at}: holding period {}",
                    hold.value(i)
                );
                exit_groups_with_holding += 1;
            }
            _ => {}
        }
    }
    assert!(exit_groups_with_holding > 0, "{date}: no exit was matched");
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
