//! `run`, `reduce` and `plot`: the CLI's commands as functions. The dataflow runs
//! without the GIL; a Ctrl-C stops a run between dates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{ArrayRef, Date32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vizflow::calendar;
use vizflow::partials::{Bin, Layout};
use vizflow::plot::{Figure, PlotOptions, draw};
use vizflow::reduce::{ReduceOptions, Reduced, for_display, without_exact};
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, RunSummary};

use crate::arrow_io;
use crate::errors;
use crate::pipeline::PyPipeline;

/// The machine's cores (the default number of workers).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `progress` as the CLI's `--progress`.
fn progress_style(progress: &str) -> PyResult<ProgressStyle> {
    match progress {
        "auto" => Ok(ProgressStyle::Auto),
        "log" => Ok(ProgressStyle::Log),
        "quiet" => Ok(ProgressStyle::Quiet),
        other => Err(PyValueError::new_err(format!(
            "progress={other:?}: use \"auto\", \"log\" or \"quiet\""
        ))),
    }
}

/// Runs `work` on a thread of its own without the GIL, checking for a Ctrl-C every
/// tenth of a second: on one, `stop` is set and the work is waited for (it stops at
/// its next check), then `KeyboardInterrupt` is raised (also for a Ctrl-C that came
/// as the work ended).
pub fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    stop: Arc<AtomicBool>,
    work: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let (done, result) = crossbeam_channel::bounded(1);
    let thread = std::thread::Builder::new()
        .name("vizflow-run".into())
        .spawn(move || {
            let _ = done.send(work());
        })
        .map_err(|e| errors::EngineError::new_err(format!("cannot start the run: {e}")))?;
    loop {
        let received = py.detach(|| result.recv_timeout(Duration::from_millis(100)));
        match received {
            Ok(value) => {
                let _ = py.detach(|| thread.join());
                // A Ctrl-C after the last check: the work is done, but the caller asked
                // to stop.
                py.check_signals()?;
                return Ok(value);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    stop.store(true, Ordering::Relaxed);
                    let _ = py.detach(|| thread.join());
                    return Err(interrupt);
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                // The work panicked: say with what.
                let panic = py.detach(|| thread.join()).err();
                let message = (panic.as_ref())
                    .and_then(|p| {
                        (p.downcast_ref::<String>().cloned())
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_default();
                return Err(errors::EngineError::new_err(format!(
                    "the run stopped unexpectedly: {message}"
                )));
            }
        }
    }
}

/// Runs `pipeline` over the dates as `vizflow run` does and returns each date's
/// partial (exact-sum columns left out) with a leading `date` column, as a list of
/// pyarrow tables, and the run's summary as JSON.
#[pyfunction]
#[pyo3(signature = (pipeline, input_dir=None, dates=None, workers=None, output_dir=None, skip_existing=false, progress="auto", fail_fast=false))]
#[allow(clippy::too_many_arguments)]
pub fn run(
    py: Python<'_>,
    pipeline: &PyPipeline,
    input_dir: Option<PathBuf>,
    dates: Option<String>,
    workers: Option<usize>,
    output_dir: Option<PathBuf>,
    skip_existing: bool,
    progress: &str,
    fail_fast: bool,
) -> PyResult<(Vec<Py<PyAny>>, String)> {
    let temporary = match output_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(|e| {
            errors::DataError::new_err(format!("cannot make a temporary output directory: {e}"))
        })?),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        input_dir,
        output_dir: output_dir.or_else(|| temporary.as_ref().map(|t| t.path().to_owned())),
        dates: dates.map_or(DateSelection::All, DateSelection::Spec),
        workers: workers.unwrap_or_else(cores).max(1),
        skip_existing,
        progress: progress_style(progress)?,
        fail_fast,
        stop: Some(stop.clone()),
        ..RunOptions::default()
    };
    let output = options.output_dir.clone().expect("set above");
    let pipeline = pipeline.inner.clone();
    let summary = interruptible(py, stop, move || vizflow::run::run(&pipeline, &options))?
        .map_err(errors::run)?;
    check_failed(&summary)?;
    let mut tables = Vec::new();
    for outcome in &summary.dates {
        if matches!(
            outcome.status,
            DateStatus::Written { .. } | DateStatus::Skipped
        ) {
            let path = vizflow::run::partial_path(&output, outcome.date);
            let batch = read_partial(&path, outcome.date)?;
            tables.push(arrow_io::table(py, batch.schema(), vec![batch])?);
        }
    }
    Ok((tables, summary_json(&summary)))
}

/// A `DataError` with the CLI's lines when a date failed.
fn check_failed(summary: &RunSummary) -> PyResult<()> {
    let failed: Vec<String> = (summary.failed())
        .filter_map(|d| match &d.status {
            DateStatus::Failed(error) => Some(format!("  FAILED {error}")),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(errors::DataError::new_err(format!(
        "{} of {} dates failed:\n{}",
        failed.len(),
        summary.dates.len(),
        failed.join("\n")
    )))
}

/// The summary of a run, as JSON: each date's status and report.
fn summary_json(summary: &RunSummary) -> String {
    let dates: Vec<serde_json::Value> = (summary.dates.iter())
        .map(|d| {
            let status = match &d.status {
                DateStatus::Written { .. } => "written".to_owned(),
                DateStatus::Skipped => "skipped".to_owned(),
                DateStatus::Failed(error) => format!("failed: {error}"),
                DateStatus::NotRun => "not run".to_owned(),
            };
            serde_json::json!({
                "date": calendar::format_date(d.date),
                "status": status,
                "report": d.report,
            })
        })
        .collect();
    serde_json::json!({
        "dates": dates,
        "rows": summary.rows,
        "seconds": summary.elapsed.as_secs_f64(),
    })
    .to_string()
}

/// A date's partial with a leading `date` column and without its exact-sum columns.
pub fn read_partial(path: &Path, date: chrono::NaiveDate) -> PyResult<RecordBatch> {
    let (batch, _) =
        vizflow::io::read_parquet(path).map_err(|e| errors::DataError::new_err(e.to_string()))?;
    Ok(with_date(&without_exact(&batch), date))
}

/// `batch` with a leading `date` column (Date32) holding `date`, unless it has one
/// (partials do).
pub fn with_date(batch: &RecordBatch, date: chrono::NaiveDate) -> RecordBatch {
    if batch.schema().index_of("date").is_ok() {
        return batch.clone();
    }
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    let days = (date - epoch).num_days() as i32;
    let mut fields = vec![Field::new("date", DataType::Date32, false)];
    fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone()));
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(Date32Array::from(vec![days; batch.num_rows()]))];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns of one length")
}

/// Merges the partials in `dir` as `vizflow reduce` does; the table for people
/// (exact-sum columns left out, each bin beside its value in the source's units).
#[pyfunction]
#[pyo3(signature = (dir, dates=None, by=None, r#where=None, metrics=Vec::new(), rebin=Vec::new(), live=false, allow_mixed=false))]
#[allow(clippy::too_many_arguments)]
pub fn reduce(
    py: Python<'_>,
    dir: PathBuf,
    dates: Option<String>,
    by: Option<Vec<String>>,
    r#where: Option<String>,
    metrics: Vec<(String, String)>,
    rebin: Vec<(String, i64)>,
    live: bool,
    allow_mixed: bool,
) -> PyResult<(Py<PyAny>, Vec<String>, Vec<String>)> {
    let options = ReduceOptions {
        dates,
        by,
        filter: r#where,
        metrics,
        rebin,
        allow_mixed,
        live,
        ..ReduceOptions::default()
    };
    let reduced = py
        .detach(|| vizflow::reduce::reduce(&dir, &options))
        .map_err(errors::reduce)?;
    let table = for_display(&reduced);
    let dates = reduced
        .dates
        .iter()
        .map(|d| calendar::format_date(*d))
        .collect();
    let provisional = (reduced.provisional.iter())
        .map(|d| calendar::format_date(*d))
        .collect();
    Ok((
        arrow_io::table(py, table.schema(), vec![table])?,
        dates,
        provisional,
    ))
}

/// The figure asked for.
fn figure(
    kind: &str,
    x: String,
    y: Vec<String>,
    color: Option<String>,
    min_count: i64,
) -> PyResult<Figure> {
    match kind {
        "heatmap" => {
            let [y, z]: [String; 2] = y
                .try_into()
                .map_err(|_| PyValueError::new_err("a heatmap needs y and z".to_owned()))?;
            Ok(Figure::Heatmap { x, y, z, min_count })
        }
        "line" => Ok(Figure::Line {
            x,
            y,
            color,
            min_count,
        }),
        other => Err(PyValueError::new_err(format!(
            "no figure {other:?}: heatmap or line"
        ))),
    }
}

/// Draws a figure into `path` (`.png`, `.svg`, `.html`): of the partials in a
/// directory, merged as `vizflow plot` merges them (`dates`, `where`, `live`), or of a
/// table of groups (a frame from `reduce`, or any frame with the figure's columns;
/// `count()` greys the cells below `min_count` when the table has it). Returns the
/// number of groups drawn.
#[pyfunction]
#[pyo3(signature = (source, kind, x, y, path, color=None, min_count=0, dates=None, r#where=None, live=false))]
#[allow(clippy::too_many_arguments)]
pub fn plot(
    py: Python<'_>,
    source: &Bound<'_, PyAny>,
    kind: &str,
    x: String,
    y: Vec<String>,
    path: PathBuf,
    color: Option<String>,
    min_count: i64,
    dates: Option<String>,
    r#where: Option<String>,
    live: bool,
) -> PyResult<usize> {
    let figure = figure(kind, x, y, color, min_count)?;
    if let Ok(dir) = source.extract::<PathBuf>() {
        let options = PlotOptions {
            figure,
            dates,
            filter: r#where,
            live,
            output: path,
        };
        let plotted = py
            .detach(|| vizflow::plot::plot(&dir, &options))
            .map_err(errors::plot)?;
        return Ok(plotted.groups);
    }
    if dates.is_some() || r#where.is_some() || live {
        return Err(PyValueError::new_err(
            "dates, where and live select partials: pass a directory, or filter the frame",
        ));
    }
    plot_table(py, source, figure, path)
}

/// Draws `figure` of a table of groups into `path`.
fn plot_table(
    py: Python<'_>,
    table: &Bound<'_, PyAny>,
    mut figure: Figure,
    path: PathBuf,
) -> PyResult<usize> {
    let (schema, batches) = arrow_io::batches(table)?;
    let table = arrow::compute::concat_batches(&schema, &batches).map_err(errors::arrow)?;
    // A frame from `reduce` has each bin column beside its value: an axis on either is
    // drawn as the partials' bins are (cells of the bin's width, labelled in the
    // source's units).
    let bins: Vec<Bin> = (schema.fields().iter())
        .filter_map(|f| bin_of(&table, f.name()))
        .collect();
    let on_bin = |axis: &mut String| {
        if let Some(bin) = bins.iter().find(|b| &b.source == axis) {
            *axis = bin.column.clone();
        }
    };
    match &mut figure {
        Figure::Heatmap { x, y, .. } => {
            on_bin(x);
            on_bin(y);
        }
        Figure::Line { x, .. } => on_bin(x),
    }
    let layout = Layout {
        metrics: (schema.fields().iter())
            .map(|f| (f.name().clone(), String::new()))
            .collect(),
        bins,
        ..Layout::default()
    };
    let reduced = Reduced {
        table,
        layout,
        dates: Vec::new(),
        provisional: Vec::new(),
    };
    let options = PlotOptions {
        figure,
        dates: None,
        filter: None,
        live: false,
        output: path,
    };
    let plotted = py
        .detach(|| draw(&reduced, "frame", &options))
        .map_err(errors::plot)?;
    Ok(plotted.groups)
}

/// The bin of column `name` when it is an integer `{source}_bin` column beside a float
/// `source` column (as `reduce` gives them): its width from a row with a nonzero bin.
fn bin_of(table: &RecordBatch, name: &str) -> Option<Bin> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};
    let source = name.strip_suffix("_bin")?;
    let bins = table
        .column_by_name(name)?
        .as_primitive_opt::<Int64Type>()?;
    let values = table
        .column_by_name(source)?
        .as_primitive_opt::<Float64Type>()?;
    let row =
        (0..bins.len()).find(|&i| bins.is_valid(i) && values.is_valid(i) && bins.value(i) != 0)?;
    Some(Bin {
        column: name.to_owned(),
        source: source.to_owned(),
        width: values.value(row) / bins.value(row) as f64,
    })
}
