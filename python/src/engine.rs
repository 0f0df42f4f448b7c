//! `vizflow.Engine`: a running dataflow fed with frames, date by date (the Rust
//! `Engine` API): provisional and final partials come out as the dates go.

use std::sync::{Arc, Mutex};

use arrow::datatypes::Schema;
use arrow_pyarrow::PyArrowType;
use chrono::NaiveDate;
use pyo3::prelude::*;
use vizflow::calendar;
use vizflow::config::BoundPipeline;
use vizflow::engine::{DateResult, Engine, ResultKind};
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::next_day::NextDays;
use vizflow_operators::time::date_key;

use crate::arrow_io;
use crate::commands::{cores, with_date};
use crate::errors;
use crate::pipeline::PyPipeline;

/// A date from `YYYYMMDD` or `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> PyResult<NaiveDate> {
    calendar::parse_date(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// A running dataflow of a pipeline, fed with frames.
#[pyclass(name = "Engine", module = "vizflow")]
pub struct PyEngine {
    engine: Mutex<Option<Engine>>,
    /// The pipeline bound to the schema given: each pushed frame is checked against it.
    bound: BoundPipeline,
}

/// One result of a date as Python gets it: `(date, final, watermark_ms, partial
/// table or None, errors, report JSON)`.
type PyResultTuple = (
    String,
    bool,
    Option<i64>,
    Option<Py<PyAny>>,
    Vec<String>,
    String,
);

impl PyEngine {
    /// Runs `f` on the engine without the GIL; an error once it is finished.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Engine) -> PyResult<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            let engine = engine.as_mut().ok_or_else(|| {
                errors::EngineError::new_err("the engine is finished; start another")
            })?;
            f(engine)
        })
    }
}

/// A date's result for Python.
fn result_tuple(py: Python<'_>, result: DateResult) -> PyResult<PyResultTuple> {
    let (is_final, watermark) = match result.kind {
        ResultKind::Final => (true, None),
        ResultKind::Provisional { watermark_ms } => (false, Some(watermark_ms)),
    };
    let (partial, errors) = match result.partial {
        Ok(batch) => {
            let batch = with_date(&vizflow::reduce::without_exact(&batch), result.date);
            (
                Some(arrow_io::table(py, batch.schema(), vec![batch])?),
                Vec::new(),
            )
        }
        Err(errors) => (None, errors),
    };
    let report = serde_json::to_string(&result.report).unwrap_or_default();
    Ok((
        calendar::format_date(result.date),
        is_final,
        watermark,
        partial,
        errors,
        report,
    ))
}

#[pymethods]
impl PyEngine {
    /// Starts `workers` worker threads (the machine's cores by default) running
    /// `pipeline` over frames of `schema` (a pyarrow schema; a `row_id` column, any
    /// integer type, is optional).
    #[new]
    #[pyo3(signature = (pipeline, schema, workers=None))]
    fn new(
        py: Python<'_>,
        pipeline: &PyPipeline,
        schema: PyArrowType<Schema>,
        workers: Option<usize>,
    ) -> PyResult<Self> {
        let schema = arrow_io::normal_schema(&schema.0);
        let fields: Vec<_> = (schema.fields().iter())
            .filter(|f| f.name() != ROW_ID)
            .cloned()
            .collect();
        let mut bound: BoundPipeline = pipeline
            .inner
            .bind(&Schema::new(fields))
            .map_err(errors::config)?;
        if !bound.price_read.is_empty() {
            // Returns to the next trading day: found as the dates come (the calendar's
            // next date when `[input] calendar` is set, else the next date begun).
            let calendar = match &pipeline.inner.input.calendar {
                Some(path) => Some(
                    calendar::TradingCalendar::from_file(path)
                        .map_err(|e| errors::PipelineError::new_err(e.to_string()))?,
                ),
                None => None,
            };
            let keys = calendar.map(|c| c.dates().iter().map(|d| date_key(*d)).collect());
            bound.next_days = Arc::new(NextDays::following(keys));
        }
        let workers = workers.unwrap_or_else(cores).max(1);
        let engine = py
            .detach(|| Engine::start(bound.clone(), workers))
            .map_err(errors::engine)?;
        Ok(PyEngine {
            engine: Mutex::new(Some(engine)),
            bound,
        })
    }

    /// Starts feeding `date` (`YYYYMMDD` or `YYYY-MM-DD`); dates must increase. The
    /// previous date is complete once this returns.
    fn begin_date(&self, py: Python<'_>, date: &str) -> PyResult<()> {
        let date = parse_date(date)?;
        self.with(py, |e| e.begin_date(date).map_err(errors::engine))
    }

    /// Pushes rows of the current date: anything exporting an Arrow stream.
    fn push(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<()> {
        let (schema, batches) = arrow_io::batches(frame)?;
        // The types the pipeline was bound to (the kernels were chosen for them).
        self.bound.check_schema(&schema).map_err(|e| {
            errors::DataError::new_err(format!(
                "pushed frame: {e}; push frames of the Engine's schema"
            ))
        })?;
        for batch in &batches {
            arrow_io::check_row_id(batch)?;
        }
        self.with(py, |e| {
            for batch in batches {
                e.push(batch).map_err(errors::engine)?;
            }
            Ok(())
        })
    }

    /// No row of the current date earlier than `elapsed_ms` of trading time will come.
    fn advance(&self, py: Python<'_>, elapsed_ms: i64) -> PyResult<()> {
        self.with(py, |e| {
            e.advance_within_date(elapsed_ms).map_err(errors::engine)
        })
    }

    /// Ends the current date without beginning another.
    fn end_date(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |e| e.end_date().map_err(errors::engine))
    }

    /// The next result that has come out, or `None`: a completed date's results wait
    /// for it, the current date's only what has arrived.
    fn next_result(&self, py: Python<'_>) -> PyResult<Option<PyResultTuple>> {
        let result = self.with(py, |e| e.next_result().map_err(errors::engine))?;
        result.map(|r| result_tuple(py, r)).transpose()
    }

    /// Stops the workers without waiting for results (what dropping the engine does):
    /// for an engine left open when the interpreter exits.
    fn close(&self, py: Python<'_>) {
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(engine) = engine {
            py.detach(move || drop(engine));
        }
    }

    /// Closes the input, waits for every remaining date and stops the workers; the
    /// results not taken yet.
    fn finish(&self, py: Python<'_>) -> PyResult<Vec<PyResultTuple>> {
        let results = py.detach(|| {
            let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner()).take();
            let engine = engine.ok_or_else(|| {
                errors::EngineError::new_err("the engine is finished; start another")
            })?;
            engine.finish().map_err(errors::engine)
        })?;
        results.into_iter().map(|r| result_tuple(py, r)).collect()
    }
}

impl Drop for PyEngine {
    fn drop(&mut self) {
        // Stopping the workers waits for them, and a worker running a Python rule
        // needs the GIL: let go of it meanwhile.
        let engine = (self.engine.get_mut())
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(engine) = engine {
            Python::attach(|py| py.detach(move || drop(engine)));
        }
    }
}
