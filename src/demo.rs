//! `vizflow demo`: generate a few small dates, run the markout and alpha markout
//! pipelines on them, show results.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use chrono::NaiveDate;

use crate::config::Pipeline;
use crate::io::{FileFormat, read_parquet};
use crate::run::{DateStatus, ProgressStyle, RunOptions, RunSummary, run};
use crate::synthetic::{GenSpec, generate};

/// The markout reference pipeline, as shipped in `examples/markout.toml`.
pub const MARKOUT_TOML: &str = include_str!("../examples/markout.toml");

/// The alpha markout reference pipeline (with the FIFO match), as shipped in
/// `examples/alpha_markout.toml`.
pub const ALPHA_MARKOUT_TOML: &str = include_str!("../examples/alpha_markout.toml");

/// What the demo produced.
#[derive(Debug)]
pub struct DemoOutput {
    /// Where the generated inputs are.
    pub input_dir: PathBuf,
    /// `examples/markout.toml` on the generated dates.
    pub markout: DemoRun,
    /// `examples/alpha_markout.toml` on the same dates.
    pub alpha_markout: DemoRun,
    /// The alpha markout's heatmap of `mean_return_60` by alpha bucket and side, as PNG
    /// and HTML.
    pub figures: Vec<PathBuf>,
}

/// One pipeline's run in the demo.
#[derive(Debug)]
pub struct DemoRun {
    /// Where the partials are.
    pub output_dir: PathBuf,
    /// The run's summary.
    pub summary: RunSummary,
    /// The result table, as printed.
    pub table: String,
}

/// Generates `dates` of `rows` rows under `dir`, runs the markout and alpha markout
/// pipelines with `workers` workers, and summarises each one's partials by alpha bucket
/// and side.
pub fn demo(
    dir: &Path,
    dates: &[NaiveDate],
    rows: usize,
    workers: usize,
) -> anyhow::Result<DemoOutput> {
    let input_dir = dir.join("data");
    let spec = GenSpec {
        rows,
        symbols: 300,
        seed: 7,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".to_owned(),
    };
    generate(&spec, &input_dir, dates)?;
    let (summary, partials) =
        run_pipeline(MARKOUT_TOML, &input_dir, &dir.join("out/markout"), workers)?;
    let markout = DemoRun {
        output_dir: dir.join("out/markout"),
        summary,
        table: markout_table(&partials),
    };
    let (summary, partials) = run_pipeline(
        ALPHA_MARKOUT_TOML,
        &input_dir,
        &dir.join("out/alpha_markout"),
        workers,
    )?;
    let alpha_markout = DemoRun {
        output_dir: dir.join("out/alpha_markout"),
        summary,
        table: alpha_markout_table(&partials),
    };
    let mut figures = Vec::new();
    for extension in ["png", "html"] {
        let output = dir.join(format!("alpha_markout_heatmap.{extension}"));
        let options = crate::plot::PlotOptions {
            figure: crate::plot::Figure::Heatmap {
                x: "alpha1_bin".into(),
                y: "orderSide".into(),
                z: "mean_return_60".into(),
                min_count: 50,
            },
            dates: None,
            filter: None,
            live: false,
            output: output.clone(),
        };
        crate::plot::plot(&alpha_markout.output_dir, &options)?;
        figures.push(output);
    }
    Ok(DemoOutput {
        input_dir,
        markout,
        alpha_markout,
        figures,
    })
}

/// Runs a pipeline over every date in `input_dir`; returns the summary and the partials.
fn run_pipeline(
    toml: &str,
    input_dir: &Path,
    output_dir: &Path,
    workers: usize,
) -> anyhow::Result<(RunSummary, Vec<RecordBatch>)> {
    let pipeline = Pipeline::from_toml(toml)?;
    let options = RunOptions {
        input_dir: Some(input_dir.to_owned()),
        output_dir: Some(output_dir.to_owned()),
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
            DateStatus::Skipped | DateStatus::NotRun => {}
        }
    }
    Ok((summary, partials))
}

/// The alpha buckets of the tables: a label and the range of `alpha1_bin` (1e-4 wide).
const BUCKETS: [(&str, i64, i64); 5] = [
    ("alpha1 <= -5e-4", i64::MIN, -5),
    ("-5e-4 < alpha1 <= -2e-4", -4, -2),
    ("-2e-4 < alpha1 < 2e-4", -1, 1),
    ("2e-4 <= alpha1 < 5e-4", 2, 4),
    ("alpha1 >= 5e-4", 5, i64::MAX),
];

/// The sides, in table order.
const SIDES: [&str; 2] = ["B", "S"];

/// Sums the named mergeable components of the partials (`count()`, `sum(x)`,
/// `count(x)`) per alpha bucket and side: `[side][bucket][component]`. Adding the
/// components of any number of dates is how partials merge exactly; a component a
/// partial lacks adds nothing.
fn merge_components(partials: &[RecordBatch], components: &[&str]) -> Vec<Vec<Vec<f64>>> {
    let mut cells = vec![vec![vec![0.0; components.len()]; BUCKETS.len()]; SIDES.len()];
    for partial in partials {
        let column = |name: &str| partial.column_by_name(name).cloned();
        let (Some(bins), Some(sides)) = (column("alpha1_bin"), column("orderSide")) else {
            continue;
        };
        let Ok(bins) = arrow::compute::cast(&bins, &DataType::Int64) else {
            continue;
        };
        let bins = bins.as_primitive::<arrow::datatypes::Int64Type>();
        let sides = sides.as_string::<i32>();
        let values: Vec<Option<_>> = components
            .iter()
            .map(|name| {
                let values = arrow::compute::cast(&column(name)?, &DataType::Float64).ok()?;
                Some(values.as_primitive::<Float64Type>().clone())
            })
            .collect();
        for i in 0..partial.num_rows() {
            if bins.is_null(i) || sides.is_null(i) {
                continue;
            }
            let Some(side) = SIDES.iter().position(|s| *s == sides.value(i)) else {
                continue;
            };
            let Some(bucket) = BUCKETS
                .iter()
                .position(|(_, lo, hi)| (*lo..=*hi).contains(&bins.value(i)))
            else {
                continue;
            };
            for (total, values) in cells[side][bucket].iter_mut().zip(&values) {
                if let Some(values) = values.as_ref().filter(|v| v.is_valid(i)) {
                    *total += values.value(i);
                }
            }
        }
    }
    cells
}

/// `numerator / denominator` formatted, or `-` when the denominator is 0.
fn ratio(numerator: f64, denominator: f64, scale: f64, decimals: usize) -> String {
    if denominator == 0.0 {
        "-".to_owned()
    } else {
        format!("{:.decimals$}", numerator / denominator * scale)
    }
}

/// Merges markout partials into buckets of `alpha1_bin` by side: fills and mean
/// returns in basis points, from the components `count()`, `sum(return_h)` and
/// `count(return_h)`.
pub fn markout_table(partials: &[RecordBatch]) -> String {
    let components = [
        "count()",
        "sum(return_60)",
        "count(return_60)",
        "sum(return_300)",
        "count(return_300)",
        "sum(return_600)",
        "count(return_600)",
    ];
    let cells = merge_components(partials, &components);
    let mut out = format!(
        "{:<26} {:<5} {:>9} {:>12} {:>12} {:>12}\n",
        "alpha1 bucket", "side", "fills", "ret 60s bp", "ret 300s bp", "ret 600s bp"
    );
    for (b, (label, _, _)) in BUCKETS.iter().enumerate() {
        for (s, side) in SIDES.iter().enumerate() {
            let c = &cells[s][b];
            out.push_str(&format!(
                "{label:<26} {side:<5} {:>9} {:>12} {:>12} {:>12}\n",
                c[0],
                ratio(c[1], c[2], 1e4, 2),
                ratio(c[3], c[4], 1e4, 2),
                ratio(c[5], c[6], 1e4, 2)
            ));
        }
    }
    out
}

/// Merges alpha markout partials into buckets of `alpha1_bin` by side: matched rows
/// (an exit split over several lots counts once per lot), the share of them closed,
/// the VWAP of the matched quantity and the mean holding period of exits, from the
/// components `count()`, `sum(is_closed)`, `sum(notional)`, `sum(matched_qty)`,
/// `sum(holding_period)` and `count(holding_period)`.
pub fn alpha_markout_table(partials: &[RecordBatch]) -> String {
    let components = [
        "count()",
        "sum(is_closed)",
        "sum(notional)",
        "sum(matched_qty)",
        "sum(holding_period)",
        "count(holding_period)",
    ];
    let cells = merge_components(partials, &components);
    let mut out = format!(
        "{:<26} {:<5} {:>9} {:>9} {:>9} {:>11}\n",
        "alpha1 bucket", "side", "rows", "closed %", "vwap", "mean hold s"
    );
    for (b, (label, _, _)) in BUCKETS.iter().enumerate() {
        for (s, side) in SIDES.iter().enumerate() {
            let c = &cells[s][b];
            out.push_str(&format!(
                "{label:<26} {side:<5} {:>9} {:>9} {:>9} {:>11}\n",
                c[0],
                ratio(c[1], c[0], 100.0, 1),
                ratio(c[2], c[3], 1.0, 3),
                ratio(c[4], c[5], 1.0, 0)
            ));
        }
    }
    out
}
