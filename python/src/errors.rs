//! The exceptions: `vizflow.VizflowError` and its kinds. Messages are the CLI's (the
//! `Display` of the crate's errors).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use vizflow::config::ConfigError;
use vizflow::plot::PlotError;
use vizflow::run::RunError;

create_exception!(
    vizflow,
    VizflowError,
    PyException,
    "Every error VizFlow raises."
);
create_exception!(
    vizflow,
    PipelineError,
    VizflowError,
    "The pipeline is invalid or does not fit the data's columns."
);
create_exception!(
    vizflow,
    DataError,
    VizflowError,
    "The data could not be processed: a date failed, a file is missing or malformed."
);
create_exception!(
    vizflow,
    EngineError,
    VizflowError,
    "The engine was used out of order, or its workers stopped."
);
create_exception!(
    vizflow,
    ReduceError,
    VizflowError,
    "Partials could not be merged or plotted."
);

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("VizflowError", py.get_type::<VizflowError>())?;
    m.add("PipelineError", py.get_type::<PipelineError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("ReduceError", py.get_type::<ReduceError>())?;
    Ok(())
}

/// A configuration error.
pub fn config(error: ConfigError) -> PyErr {
    PipelineError::new_err(error.to_string())
}

/// An engine error.
pub fn engine(error: vizflow::engine::EngineError) -> PyErr {
    match error {
        vizflow::engine::EngineError::Schema { .. } => DataError::new_err(error.to_string()),
        other => EngineError::new_err(other.to_string()),
    }
}

/// An error that stopped a run before any date ran.
pub fn run(error: RunError) -> PyErr {
    match error {
        RunError::Config(e) => config(e),
        RunError::Engine(e) => engine(e),
        RunError::Cluster(e) => EngineError::new_err(e.to_string()),
        other => DataError::new_err(other.to_string()),
    }
}

/// A reduce error.
pub fn reduce(error: vizflow::reduce::ReduceError) -> PyErr {
    ReduceError::new_err(error.to_string())
}

/// A plot error.
pub fn plot(error: PlotError) -> PyErr {
    match error {
        PlotError::Reduce(e) => reduce(e),
        other => ReduceError::new_err(other.to_string()),
    }
}

/// An error of Arrow's, on data handed over from Python.
pub fn arrow(error: arrow::error::ArrowError) -> PyErr {
    DataError::new_err(error.to_string())
}
