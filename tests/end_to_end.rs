//! End-to-end cases: `vizflow gen` + `vizflow run` against checked-in expected
//! partials, and the embedding API against reading the same files.
//!
//! Regenerate the expected partials after an intended change of results with
//! `VIZFLOW_BLESS=1 cargo test --test end_to_end`, and review the diff.

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
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

fn run_files(input: &Path, output: &Path, workers: usize) -> Vec<RecordBatch> {
    let pipeline = Pipeline::from_toml(vizflow::demo::MARKOUT_TOML).unwrap();
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

fn golden_path(date: NaiveDate) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "tests/golden/markout/{}.csv",
        date.format("%Y%m%d")
    ))
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
    let partials = run_files(&dir.path().join("data"), &dir.path().join("out"), 2);
    assert_eq!(partials.len(), 2);
    for (date, partial) in dates().into_iter().zip(&partials) {
        let actual = to_csv(partial);
        let path = golden_path(date);
        if std::env::var_os("VIZFLOW_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with VIZFLOW_BLESS=1", path.display()));
        assert_eq!(
            actual,
            expected,
            "partial of {date} differs from {}",
            path.display()
        );
    }
}

#[test]
fn every_input_format_gives_the_same_partials() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = None;
    for format in [
        FileFormat::IpcFile,
        FileFormat::IpcStream,
        FileFormat::Parquet,
        FileFormat::Csv,
    ] {
        let data = dir.path().join(format!("data-{format:?}"));
        generate(&spec(format), &data, &dates()).unwrap();
        let pipeline_text = vizflow::demo::MARKOUT_TOML.replace(
            "alpha_{date}.feather",
            &format!("alpha_{{date}}.{}", format.extension()),
        );
        let pipeline = Pipeline::from_toml(&pipeline_text).unwrap();
        let options = RunOptions {
            input_dir: Some(data),
            output_dir: Some(dir.path().join(format!("out-{format:?}"))),
            workers: 2,
            progress: ProgressStyle::Quiet,
            ..RunOptions::default()
        };
        let summary = run(&pipeline, &options).unwrap();
        let partials: Vec<String> = summary
            .dates
            .iter()
            .map(|d| match &d.status {
                DateStatus::Written { path, .. } => to_csv(&read_parquet(path).unwrap().0),
                other => panic!("{format:?} {}: {other:?}", d.date),
            })
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
    let from_files = run_files(&dir.path().join("data"), &dir.path().join("out"), 1);

    let pipeline = Pipeline::from_toml(vizflow::demo::MARKOUT_TOML).unwrap();
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
    assert_eq!(pushed.len(), from_files.len());
    for (a, b) in pushed.iter().zip(&from_files) {
        assert_eq!(to_csv(a), to_csv(b));
        assert!(a.num_rows() > 10 && a.column(0).null_count() == 0);
    }
}
