//! The stateless operators on frames: a frame (one date's rows, or a sample of them)
//! through a pipeline's stages up to one of them, with the dataflow's kernels (as
//! `vizflow inspect` runs them). The Python functions `vf.parse_time`,
//! `vf.forward_return`, `vf.fifo_match` and `vf.bin` make the pipeline from their
//! arguments.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::DataType;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use vizflow::config::Pipeline;
use vizflow::inspect::{After, rows_after};
use vizflow_operators::batch::with_columns;
use vizflow_operators::columns::ROW_ID;

use crate::arrow_io;
use crate::errors;

/// Adds the functions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(stages, m)?)?;
    m.add_function(wrap_pyfunction!(market, m)?)?;
    m.add_function(wrap_pyfunction!(bin, m)?)?;
    m.add_function(wrap_pyfunction!(market_presets, m)?)?;
    m.add_function(wrap_pyfunction!(calendar_dates, m)?)?;
    Ok(())
}

/// The market presets' names.
#[pyfunction]
pub fn market_presets() -> Vec<String> {
    vizflow::market::Market::preset_names()
        .iter()
        .map(|n| n.to_string())
        .collect()
}

/// A market as Python gets it: `(name, time zone, sessions as (start, end) wall-clock
/// times, trading ms per day)`.
type MarketTuple = (String, String, Vec<(String, String)>, i64);

/// A market preset.
#[pyfunction]
pub fn market(name: &str) -> PyResult<MarketTuple> {
    let market =
        vizflow::market::Market::preset(name).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let clock = &market.clock;
    let sessions = (clock.sessions().iter())
        .map(|s| {
            (
                vizflow_operators::clock::format_ms_of_day(s.start_ms),
                vizflow_operators::clock::format_ms_of_day(s.end_ms),
            )
        })
        .collect();
    Ok((
        market.name.clone(),
        clock.time_zone().name().to_owned(),
        sessions,
        clock.total_ms(),
    ))
}

/// The trading days (`YYYYMMDD`) of a calendar file, or of the files in `dir` named by
/// `pattern` (as `vizflow run` finds them without `[input] calendar`).
#[pyfunction]
#[pyo3(signature = (path=None, dir=None, pattern=None))]
pub fn calendar_dates(
    path: Option<std::path::PathBuf>,
    dir: Option<std::path::PathBuf>,
    pattern: Option<String>,
) -> PyResult<Vec<String>> {
    use vizflow::calendar::TradingCalendar;
    let calendar = match (path, dir) {
        (Some(path), None) => TradingCalendar::from_file(&path),
        (None, Some(dir)) => {
            TradingCalendar::discover(&dir, pattern.as_deref().unwrap_or("{date}.feather"))
        }
        _ => {
            return Err(PyValueError::new_err(
                "give a calendar file (path=) or a directory of date files (dir=, pattern=)",
            ));
        }
    }
    .map_err(|e| errors::DataError::new_err(e.to_string()))?;
    Ok(calendar
        .dates()
        .iter()
        .map(|d| vizflow::calendar::format_date(*d))
        .collect())
}

/// `table`'s rows of `date` through the stages of the pipeline `toml` up to `after`
/// (`parse_time`, `enrich` or `bin`); the rows are numbered by position (`row_id`)
/// unless the table has a `row_id` column. Returns a pyarrow table.
#[pyfunction]
pub fn stages(
    py: Python<'_>,
    table: &Bound<'_, PyAny>,
    toml: &str,
    date: &str,
    after: &str,
) -> PyResult<Py<PyAny>> {
    let after = match after {
        "parse_time" => After::ParseTime,
        "enrich" => After::Enrich,
        "bin" => After::Bin,
        other => {
            return Err(PyValueError::new_err(format!(
                "after={other:?}: parse_time, enrich or bin"
            )));
        }
    };
    let date = crate::engine::parse_date(date)?;
    let pipeline = Pipeline::from_toml(toml).map_err(errors::config)?;
    let (schema, batches) = arrow_io::batches(table)?;
    for batch in &batches {
        arrow_io::check_row_id(batch)?;
    }
    let has_row_id = schema.index_of(ROW_ID).is_ok();
    let input = if has_row_id {
        let fields: Vec<_> = (schema.fields().iter())
            .filter(|f| f.name() != ROW_ID)
            .cloned()
            .collect();
        arrow::datatypes::Schema::new(fields)
    } else {
        schema.as_ref().clone()
    };
    let bound = pipeline.bind(&input).map_err(errors::config)?;
    let mut numbered = Vec::with_capacity(batches.len());
    let mut next = 0u64;
    for batch in &batches {
        let n = batch.num_rows() as u64;
        let ids: ArrayRef = match batch.column_by_name(ROW_ID) {
            Some(ids) => arrow::compute::cast(ids, &DataType::UInt64).map_err(errors::arrow)?,
            None => Arc::new(UInt64Array::from_iter_values(next..next + n)),
        };
        next += n;
        numbered.push(with_columns(batch, vec![(ROW_ID.to_owned(), ids)]));
    }
    let rows: RecordBatch = py
        .detach(|| rows_after(&bound, numbered, date, after, |_| Ok(None)))
        .map_err(|e| errors::DataError::new_err(e.to_string()))?;
    arrow_io::table(py, rows.schema(), vec![rows])
}

/// `table` with `{column}_bin` added for each `(column, width)`, with the `bin` stage's
/// kernel.
#[pyfunction]
pub fn bin(
    py: Python<'_>,
    table: &Bound<'_, PyAny>,
    widths: Vec<(String, f64)>,
) -> PyResult<Py<PyAny>> {
    let (schema, batches) = arrow_io::batches(table)?;
    let table = arrow::compute::concat_batches(&schema, &batches).map_err(errors::arrow)?;
    let mut columns = Vec::with_capacity(widths.len());
    for (column, width) in widths {
        if !(width.is_finite() && width > 0.0) {
            return Err(PyValueError::new_err(format!(
                "bin {column}: the width must be a positive number, got {width}"
            )));
        }
        let values = table.column_by_name(&column).ok_or_else(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            errors::PipelineError::new_err(format!(
                "bin: no column '{column}'; columns: {}",
                names.join(", ")
            ))
        })?;
        let (bins, _) = vizflow_operators::bin::bin_values(values.as_ref(), width)
            .map_err(|e| errors::DataError::new_err(format!("bin {column}: {e}")))?;
        columns.push((format!("{column}_bin"), Arc::new(bins) as ArrayRef));
    }
    let out = with_columns(&table, columns);
    arrow_io::table(py, out.schema(), vec![out])
}
