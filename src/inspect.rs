//! `vizflow inspect`: one date's rows as they leave a stage of the pipeline (optionally
//! one symbol's), to check a FIFO match or a return by eye: the "run one step, dump what
//! it made" of the design. The stages run here one after the other, in this thread,
//! with the same kernels as the dataflow, over the whole date (as `vizflow run` without
//! `[stream]`). Every column the pipeline reads stays (the dataflow drops those no
//! later stage needs), with `row_id`, so that a row can be followed through.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt64Array};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use vizflow_operators::batch::with_columns;
use vizflow_operators::bin::bin_batch;
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::derive::{DeriveSpec, derive_fn};
use vizflow_operators::enrich::{EnrichSpec, enrich};
use vizflow_operators::next_day::{Day, NextDaySpec, fill_next_day};
use vizflow_operators::parse_time::{ParseTimeSpec, parse_time_fn};
use vizflow_operators::report::Diagnostics;
use vizflow_operators::time;

use crate::config::{BoundPipeline, Pipeline, Stage};
use crate::io::DateFile;
use crate::run::{input_path, trading_calendar};

/// After which stage to look at the rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Time parsing to the trading clock (and the columns derived from it).
    ParseTime,
    /// The keyed stage: forward returns and the rules (and the columns derived from
    /// their outputs).
    Enrich,
    /// Binning: the rows as the aggregation gets them.
    Bin,
}

/// What to look at.
#[derive(Clone, Debug)]
pub struct InspectOptions {
    /// The date.
    pub date: NaiveDate,
    /// Only this symbol's rows (compared as text).
    pub symbol: Option<String>,
    /// After which stage.
    pub after: After,
    /// The input directory (the pipeline's `[input] dir` when `None`).
    pub input_dir: Option<PathBuf>,
}

/// Why the rows could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The date's file.
    #[error(transparent)]
    Input(#[from] crate::io::IoError),
    /// The pipeline does not bind to the file.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The pipeline has no such stage.
    #[error(
        "the pipeline has no keyed stage ([forward_return] or [[enrich]]): inspect --after parse_time or bin"
    )]
    NoKeyedStage,
    /// A stage failed on the date.
    #[error("{stage}: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// Why.
        message: String,
    },
}

/// The rows of `options.date` after `options.after`, in the order the stage gives them.
/// Returns to the next trading day are computed from that day's file, read through the
/// stages before the keyed stage, as `vizflow run` does.
pub fn inspect(pipeline: &Pipeline, options: &InspectOptions) -> Result<RecordBatch, InspectError> {
    let dir = options.input_dir.as_ref().unwrap_or(&pipeline.input.dir);
    let file = DateFile::open(&input_path(dir, &pipeline.input.pattern, options.date))?;
    let bound = pipeline.bind(&file.schema())?;
    let symbol = options.symbol.as_deref();
    let batches = read_rows(&file, &bound, &bound.read, symbol)?;
    rows_after(&bound, batches, options.date, options.after, |next| {
        next_day(pipeline, dir, options.date, &bound, next, symbol)
    })
}

/// `batches` (rows of `date` with the columns `bound` reads and `row_id`) through the
/// stages up to `after`, with the dataflow's kernels, every column kept: the symbol,
/// `row_id` and `elapsed_ms` first. `next_day` gives the next trading day's prices when
/// a horizon reaches it (`None`: its returns are null).
pub fn rows_after(
    bound: &BoundPipeline,
    mut batches: Vec<RecordBatch>,
    date: NaiveDate,
    after: After,
    next_day: impl Fn(&NextDaySpec) -> Result<Option<Day>, InspectError>,
) -> Result<RecordBatch, InspectError> {
    let last = last_stage(&bound.stages, after)?;
    let date_key = time::date_key(date);
    for stage in &bound.stages[..=last] {
        batches = through(stage, batches, date_key)?;
        if let Stage::Keyed(spec) = stage
            && let Some(next) = NextDaySpec::of(spec)
        {
            let day = next_day(&next)?;
            batches = (batches.iter())
                .map(|b| fill_next_day(b, &next, day.as_ref()).map(|(rows, ..)| rows))
                .collect::<Result<_, _>>()
                .map_err(|e| failed("enrich")(e.to_string()))?;
        }
        batches.retain(|b| b.num_rows() > 0);
    }
    let Some(first) = batches.first() else {
        return Ok(RecordBatch::new_empty(std::sync::Arc::new(
            arrow::datatypes::Schema::empty(),
        )));
    };
    let rows = arrow::compute::concat_batches(&first.schema(), &batches).map_err(|e| {
        InspectError::Stage {
            stage: "output",
            message: e.to_string(),
        }
    })?;
    // The symbol, the row and its time first: what a person follows a row by.
    let schema = rows.schema();
    let lead = [bound.pipeline.symbol.as_str(), ROW_ID, "elapsed_ms"];
    let mut order: Vec<usize> = lead
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let rest: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !order.contains(i))
        .collect();
    order.extend(rest);
    Ok(rows.project(&order).expect("indices of the rows"))
}

fn failed(stage: &'static str) -> impl Fn(String) -> InspectError {
    move |message| InspectError::Stage { stage, message }
}

/// A date's rows as read (`columns`, with `row_id`), `symbol`'s alone when given.
fn read_rows(
    file: &DateFile,
    bound: &BoundPipeline,
    columns: &[String],
    symbol: Option<&str>,
) -> Result<Vec<RecordBatch>, InspectError> {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut batches = Vec::new();
    for part in 0..file.num_parts() {
        for (offset, batch) in file.read_part(part, &names, 65_536)? {
            let n = batch.num_rows() as u64;
            let ids = UInt64Array::from_iter_values(offset..offset + n);
            let batch = with_columns(&batch, vec![(ROW_ID.to_owned(), std::sync::Arc::new(ids))]);
            let column = &bound.pipeline.symbol;
            if let Some(batch) = of_symbol(&batch, column, symbol) {
                batches.push(batch);
            }
        }
    }
    Ok(batches)
}

/// The rows through one stage, with the dataflow's kernels, every column kept.
fn through(
    stage: &Stage,
    batches: Vec<RecordBatch>,
    date_key: u32,
) -> Result<Vec<RecordBatch>, InspectError> {
    let diagnostics = Diagnostics::default();
    Ok(match stage {
        Stage::Derive(spec) => {
            let spec = DeriveSpec {
                keep: None,
                ..spec.clone()
            };
            let mut derive = derive_fn(spec);
            (batches.into_iter())
                .map(|b| derive(date_key, b, &diagnostics).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()
                .map_err(failed("derive"))?
        }
        Stage::ParseTime(spec) => {
            let mut parse = parse_time_fn(ParseTimeSpec {
                keep: None,
                ..spec.clone()
            });
            (batches.into_iter())
                .map(|b| parse(date_key, b, &diagnostics).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()
                .map_err(failed("parse_time"))?
        }
        Stage::Keyed(spec) => {
            let batches: Vec<RecordBatch> =
                batches.into_iter().filter(|b| b.num_rows() > 0).collect();
            if batches.is_empty() {
                Vec::new()
            } else {
                let spec = EnrichSpec {
                    keep: None,
                    ..spec.clone()
                };
                enrich(&batches, &spec)
                    .map_err(|e| failed("enrich")(e.to_string()))?
                    .0
            }
        }
        Stage::Bin(specs) => (batches.iter())
            .map(|b| {
                bin_batch(b, specs)
                    .map(|(b, _)| b)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()
            .map_err(failed("bin"))?,
    })
}

/// The next trading day of `date` (as `vizflow run` finds it) through the stages before
/// the keyed stage: its first and last price per symbol; `None` without a file.
fn next_day(
    pipeline: &Pipeline,
    dir: &Path,
    date: NaiveDate,
    bound: &BoundPipeline,
    spec: &NextDaySpec,
    symbol: Option<&str>,
) -> Result<Option<Day>, InspectError> {
    let calendar =
        trading_calendar(pipeline, dir).map_err(|e| failed("next trading day")(e.to_string()))?;
    let Some(next) = calendar.next(date) else {
        return Ok(None);
    };
    let path = input_path(dir, &pipeline.input.pattern, next);
    if !path.exists() {
        return Ok(None);
    }
    // As `vizflow run` reads a date for its prices alone: their columns, the others null.
    let file = DateFile::open(&path)?;
    bound
        .check_columns(&file.schema(), &bound.price_read)
        .map_err(|e| failed("next trading day")(format!("{}: {e}", path.display())))?;
    let batches = read_rows(&file, bound, &bound.price_read, symbol)?;
    let mut batches: Vec<RecordBatch> = batches.iter().map(|b| bound.with_nulls(b)).collect();
    for stage in &bound.stages {
        if matches!(stage, Stage::Keyed(_)) {
            break;
        }
        batches = through(stage, batches, time::date_key(next))?;
    }
    Day::of_rows(&batches, spec)
        .map(Some)
        .map_err(|e| failed("next trading day")(e.to_string()))
}

/// The index of the last stage to run: the stage asked for and the derived columns
/// computed right after it.
fn last_stage(stages: &[Stage], after: After) -> Result<usize, InspectError> {
    let found = stages.iter().position(|s| match after {
        After::ParseTime => matches!(s, Stage::ParseTime(_)),
        After::Enrich => matches!(s, Stage::Keyed(_)),
        After::Bin => false,
    });
    let at = match (after, found) {
        (After::Bin, _) => return Ok(stages.len() - 1),
        (_, Some(at)) => at,
        (After::Enrich, None) => return Err(InspectError::NoKeyedStage),
        (After::ParseTime, None) => unreachable!("a bound pipeline parses time"),
    };
    let derives = stages[at + 1..]
        .iter()
        .take_while(|s| matches!(s, Stage::Derive(_)))
        .count();
    Ok(at + derives)
}

/// The rows of `batch` whose `column` reads `symbol` (all when `None`; `None` back when
/// none).
fn of_symbol(batch: &RecordBatch, column: &str, symbol: Option<&str>) -> Option<RecordBatch> {
    let Some(symbol) = symbol else {
        return Some(batch.clone());
    };
    let values = arrow::compute::cast(batch.column_by_name(column)?, &DataType::Utf8).ok()?;
    let values = values.as_string::<i32>();
    let keep: BooleanArray = (0..values.len())
        .map(|r| Some(values.is_valid(r) && values.value(r) == symbol))
        .collect();
    let kept = arrow::compute::filter_record_batch(batch, &keep).ok()?;
    (kept.num_rows() > 0).then_some(kept)
}
