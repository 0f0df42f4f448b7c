//! `vizflow demo`: generate a few small dates, run the markout pipeline, show results.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use chrono::NaiveDate;

use crate::config::Pipeline;
use crate::io::{FileFormat, read_parquet};
use crate::run::{DateStatus, ProgressStyle, RunOptions, RunSummary, run};
use crate::synthetic::{GenSpec, generate};

/// The markout reference pipeline, as shipped in `examples/markout.toml`.
pub const MARKOUT_TOML: &str = include_str!("../examples/markout.toml");

/// What the demo produced.
#[derive(Debug)]
pub struct DemoOutput {
    /// Where the generated inputs are.
    pub input_dir: PathBuf,
    /// Where the partials are.
    pub output_dir: PathBuf,
    /// The run's summary.
    pub summary: RunSummary,
    /// The result table, as printed.
    pub table: String,
}

/// Generates `dates` of `rows` rows under `dir`, runs the markout pipeline with
/// `workers` workers, and summarises the partials by alpha bucket and side.
pub fn demo(
    dir: &Path,
    dates: &[NaiveDate],
    rows: usize,
    workers: usize,
) -> anyhow::Result<DemoOutput> {
    let input_dir = dir.join("data");
    let output_dir = dir.join("out/markout");
    let spec = GenSpec {
        rows,
        symbols: 300,
        seed: 7,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".to_owned(),
    };
    generate(&spec, &input_dir, dates)?;
    let pipeline = Pipeline::from_toml(MARKOUT_TOML)?;
    let options = RunOptions {
        input_dir: Some(input_dir.clone()),
        output_dir: Some(output_dir.clone()),
        workers,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options)?;
    let mut partials = Vec::new();
    for outcome in &summary.dates {
        match &outcome.status {
            DateStatus::Written { path, .. } => partials.push(read_parquet(path)?.0),
            DateStatus::Failed(error) => anyhow::bail!("demo date failed: {error}"),
            DateStatus::Skipped => {}
        }
    }
    let table = alpha_table(&partials);
    Ok(DemoOutput {
        input_dir,
        output_dir,
        summary,
        table,
    })
}

/// Merges partials into buckets of `alpha1_bin` by side: count and mean returns in
/// basis points, computed from the mergeable components (`count(return_h)`,
/// `sum(return_h)`), which is how any number of dates merge exactly.
pub fn alpha_table(partials: &[RecordBatch]) -> String {
    const BUCKETS: [(&str, i64, i64); 5] = [
        ("alpha1 <= -5e-4", i64::MIN, -5),
        ("-5e-4 < alpha1 <= -2e-4", -4, -2),
        ("-2e-4 < alpha1 < 2e-4", -1, 1),
        ("2e-4 <= alpha1 < 5e-4", 2, 4),
        ("alpha1 >= 5e-4", 5, i64::MAX),
    ];
    let horizons = [60, 300, 600];
    // [side][bucket] -> (rows, per horizon (sum, count))
    let mut cells = vec![vec![(0i64, [(0f64, 0i64); 3]); BUCKETS.len()]; 2];
    for partial in partials {
        let column = |name: &str| partial.column_by_name(name).cloned();
        let (Some(bins), Some(sides), Some(rows)) =
            (column("alpha1_bin"), column("orderSide"), column("count()"))
        else {
            continue;
        };
        let bins = bins.as_primitive::<Int64Type>();
        let sides = sides.as_string::<i32>();
        let rows = rows.as_primitive::<Int64Type>();
        for i in 0..partial.num_rows() {
            if bins.is_null(i) || sides.is_null(i) {
                continue;
            }
            let side = usize::from(sides.value(i) != "B");
            let Some(bucket) = BUCKETS
                .iter()
                .position(|(_, lo, hi)| (*lo..=*hi).contains(&bins.value(i)))
            else {
                continue;
            };
            let cell = &mut cells[side][bucket];
            cell.0 += rows.value(i);
            for (h, horizon) in horizons.iter().enumerate() {
                if let (Some(sum), Some(count)) = (
                    column(&format!("sum(return_{horizon})")),
                    column(&format!("count(return_{horizon})")),
                ) {
                    cell.1[h].0 += sum.as_primitive::<Float64Type>().value(i);
                    cell.1[h].1 += count.as_primitive::<Int64Type>().value(i);
                }
            }
        }
    }
    let mut out = format!(
        "{:<26} {:<5} {:>9} {:>12} {:>12} {:>12}\n",
        "alpha1 bucket", "side", "fills", "ret 60s bp", "ret 300s bp", "ret 600s bp"
    );
    for (b, (label, _, _)) in BUCKETS.iter().enumerate() {
        for (side, name) in ["B", "S"].iter().enumerate() {
            let (rows, returns) = &cells[side][b];
            let bp = |(sum, count): (f64, i64)| {
                if count > 0 {
                    format!("{:.2}", sum / count as f64 * 1e4)
                } else {
                    "-".to_owned()
                }
            };
            out.push_str(&format!(
                "{label:<26} {name:<5} {rows:>9} {:>12} {:>12} {:>12}\n",
                bp(returns[0]),
                bp(returns[1]),
                bp(returns[2])
            ));
        }
    }
    out
}
