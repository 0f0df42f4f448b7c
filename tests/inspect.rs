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
use vizflow::run::{ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate};

fn setup(dir: &Path) -> (Pipeline, NaiveDate) {
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
    (Pipeline::from_toml(&text).unwrap(), date)
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
