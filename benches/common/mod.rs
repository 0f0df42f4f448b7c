//! What the operator-family benches share: the size of a case, the generated date, and
//! each stage's input, made by running the stages before it with the settings of a
//! reference pipeline (`examples/markout.toml`, `examples/alpha_markout.toml`).
// Each bench uses only some of these.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use chrono::NaiveDate;
use criterion::Criterion;
use vizflow::config::{BoundPipeline, Pipeline, Stage};
use vizflow::io::FileFormat;
use vizflow::operators::batch::with_columns;
use vizflow::operators::bin::bin_batch;
use vizflow::operators::columns::ROW_ID;
use vizflow::operators::derive::derive_batch;
use vizflow::operators::enrich::enrich_owned;
use vizflow::operators::parse_time::parse_time_batch;
use vizflow::synthetic::{GEN_BATCH_ROWS, GenSpec, alpha_schema, generate_date};

/// Symbols per generated date.
pub const SYMBOLS: usize = 3_000;

/// Rows per generated date: `VIZFLOW_BENCH_ROWS`, 1M by default.
pub fn rows() -> usize {
    std::env::var("VIZFLOW_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000)
}

/// `rows` as the benches name sizes: `1M`, `250K`, or the number.
pub fn rows_label(rows: usize) -> String {
    match rows {
        r if r >= 1_000_000 && r % 1_000_000 == 0 => format!("{}M", r / 1_000_000),
        r if r >= 1_000 && r % 1_000 == 0 => format!("{}K", r / 1_000),
        r => r.to_string(),
    }
}

/// The generated date.
pub fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 2).expect("valid date")
}

/// What the benches generate: `rows` rows of [`SYMBOLS`] symbols, seed 1.
pub fn gen_spec(rows: usize, format: FileFormat) -> GenSpec {
    GenSpec {
        rows,
        symbols: SYMBOLS,
        seed: 1,
        format,
        compression: None,
        prefix: "alpha_".into(),
    }
}

/// Few samples and short measurements, so that every family runs in about a minute;
/// command-line flags (`--measurement-time 2`) override them.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// A reference pipeline bound to the generated schema.
pub fn bound(toml: &str) -> BoundPipeline {
    Pipeline::from_toml(toml)
        .expect("reference pipeline")
        .bind(&alpha_schema())
        .expect("the reference pipeline binds to the generated schema")
}

/// The stages' inputs for one generated date, each as the engine's batches of
/// [`GEN_BATCH_ROWS`] rows.
pub struct Stages {
    /// The pipeline they were made with.
    pub pipeline: BoundPipeline,
    /// As read from a file: the columns the pipeline reads, plus `row_id`.
    pub read: Vec<RecordBatch>,
    /// After `derive` (integer `qty`, `mid`): the input of `parse_time`.
    pub derived: Vec<RecordBatch>,
    /// After `parse_time` (`elapsed_ms`, `elapsed_seconds`) and the derived columns
    /// that use it: the input of the keyed stage.
    pub timed: Vec<RecordBatch>,
    /// After the keyed stage and the derived columns after it: the input of `bin`.
    pub enriched: Vec<RecordBatch>,
    /// After `bin`: the input of `aggregate`.
    pub binned: Vec<RecordBatch>,
}

/// Generates `rows` rows and runs the kernels of `toml`'s stages over them in turn.
pub fn stages(toml: &str, rows: usize) -> Stages {
    let pipeline = bound(toml);
    let generated = generate_date(&gen_spec(rows, FileFormat::IpcFile), date());
    let columns: Vec<usize> = pipeline
        .read
        .iter()
        .map(|c| generated.schema().index_of(c).expect("read column"))
        .collect();
    let generated = generated.project(&columns).expect("projection");
    let read: Vec<RecordBatch> = (0..generated.num_rows())
        .step_by(GEN_BATCH_ROWS)
        .map(|start| {
            let len = GEN_BATCH_ROWS.min(generated.num_rows() - start);
            let row_id = start as u64..(start + len) as u64;
            let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(row_id));
            with_columns(&generated.slice(start, len), vec![(ROW_ID.to_owned(), ids)])
        })
        .collect();
    // Each stage's output, in order.
    let mut outputs: Vec<Vec<RecordBatch>> = Vec::new();
    for stage in &pipeline.stages {
        let input = outputs.last().unwrap_or(&read);
        outputs.push(match stage {
            Stage::Derive(spec) => (input.iter())
                .map(|b| derive_batch(b, spec).expect("derive").0)
                .collect(),
            Stage::ParseTime(spec) => (input.iter())
                .map(|b| parse_time_batch(b, spec, date()).expect("parse_time").0)
                .collect(),
            Stage::Keyed(spec) => enrich_owned(input.clone(), spec).expect("enrich").0,
            Stage::Bin(bins) => (input.iter())
                .map(|b| bin_batch(b, bins).expect("bin").0)
                .collect(),
        });
    }
    // The output of the stage before the first of `kind`, or the last output.
    let input_of = |is_kind: fn(&Stage) -> bool| {
        let at = pipeline.stages.iter().position(is_kind);
        outputs[at.unwrap_or(outputs.len()) - 1].clone()
    };
    let derived = outputs[0].clone();
    let timed = match pipeline.keyed() {
        Some(_) => input_of(|s| matches!(s, Stage::Keyed(_))),
        None => input_of(|s| matches!(s, Stage::Bin(_))),
    };
    let enriched = input_of(|s| matches!(s, Stage::Bin(_)));
    let binned = outputs.last().expect("a bound pipeline has stages").clone();
    Stages {
        pipeline,
        read,
        derived,
        timed,
        enriched,
        binned,
    }
}

/// The total rows of `batches`.
pub fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}
