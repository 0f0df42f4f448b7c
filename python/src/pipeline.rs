//! `vizflow.Pipeline`: a validated pipeline, from a TOML file, TOML text or a dict.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use vizflow::config::Pipeline;

use crate::errors;
use crate::rule::PythonRule;

/// A validated pipeline (the TOML format of `vizflow run`).
#[pyclass(name = "Pipeline", module = "vizflow", frozen, skip_from_py_object)]
#[derive(Clone)]
pub struct PyPipeline {
    /// The pipeline.
    pub inner: Pipeline,
}

#[pymethods]
impl PyPipeline {
    /// Reads and validates a pipeline file.
    #[staticmethod]
    fn from_toml(path: PathBuf) -> PyResult<Self> {
        let inner = Pipeline::from_file(&path).map_err(errors::config)?;
        Ok(PyPipeline { inner })
    }

    /// Parses and validates pipeline TOML text.
    #[staticmethod]
    fn from_toml_str(text: &str) -> PyResult<Self> {
        let inner = Pipeline::from_toml(text).map_err(errors::config)?;
        Ok(PyPipeline { inner })
    }

    /// A pipeline from a dict of the TOML file's sections, e.g.
    /// `{"input": {"dir": "data", ...}, "aggregate": {...}}`.
    #[staticmethod]
    fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Self> {
        let value = toml_value(d.as_any(), "")?;
        let text = toml::to_string(&value)
            .map_err(|e| errors::PipelineError::new_err(format!("invalid pipeline: {e}")))?;
        Self::from_toml_str(&text)
    }

    /// The pipeline as TOML text (as read, or as made from a dict); rules added with
    /// `with_rule` are not in it (they are Python functions).
    fn to_toml(&self) -> String {
        self.inner.source.clone()
    }

    /// The pipeline's hash: what the partials say made them.
    #[getter]
    fn hash(&self) -> String {
        self.inner.config_hash()
    }

    /// `[input] dir`.
    #[getter]
    fn input_dir(&self) -> PathBuf {
        self.inner.input.dir.clone()
    }

    /// `[output] dir`.
    #[getter]
    fn output_dir(&self) -> PathBuf {
        self.inner.output.dir.clone()
    }

    /// The names of the metrics, in order.
    #[getter]
    fn metrics(&self) -> Vec<String> {
        (self.inner.aggregate.metrics.iter())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The group-by columns.
    #[getter]
    fn group_by(&self) -> Vec<String> {
        self.inner.aggregate.group_by.clone()
    }

    /// The pipeline with one more enrich rule written in Python (from `vizflow.rule`),
    /// run after the others.
    fn with_rule(&self, rule: PythonRule) -> PyResult<PyPipeline> {
        if self.inner.stream.is_some() {
            // The keyed stage under [stream] runs a rule over each release of rows,
            // carrying each symbol's state from one to the next (EnrichRule::resume);
            // a Python function sees a symbol's rows of a date at once.
            return Err(errors::PipelineError::new_err(format!(
                "invalid pipeline: the rule '{}' is written in Python and cannot run under \
                 [stream] (it gets a symbol's rows of a date at once, not as the \
                 watermark releases them); remove [stream] to use it",
                rule.name
            )));
        }
        let mut inner = self.inner.clone();
        inner.enrich.push(Arc::new(rule));
        Ok(PyPipeline { inner })
    }

    fn __repr__(&self) -> String {
        format!(
            "Pipeline(output_dir={:?}, group_by={:?}, metrics={:?})",
            self.inner.output.dir,
            self.inner.aggregate.group_by,
            self.metrics()
        )
    }
}

/// A Python value as a TOML value (dicts keep their order); `path` names it in errors.
fn toml_value(value: &Bound<'_, PyAny>, path: &str) -> PyResult<toml::Value> {
    let at = |key: &str| match path {
        "" => key.to_owned(),
        p => format!("{p}.{key}"),
    };
    // bool before int: Python's bool is an int.
    if value.is_instance_of::<PyBool>() {
        return Ok(toml::Value::Boolean(value.extract()?));
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(toml::Value::Integer(value.extract()?));
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(toml::Value::Float(value.extract()?));
    }
    if value.is_instance_of::<PyString>() {
        return Ok(toml::Value::String(value.extract()?));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (key, item) in dict.iter() {
            let key: String = key.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "pipeline dict: the keys of '{path}' must be strings"
                ))
            })?;
            let item = toml_value(&item, &at(&key))?;
            table.insert(key, item);
        }
        return Ok(toml::Value::Table(table));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let items = (value.try_iter()?.enumerate())
            .map(|(i, item)| toml_value(&item?, &at(&i.to_string())))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(toml::Value::Array(items));
    }
    if value.hasattr("__fspath__")? {
        let path: PathBuf = value.extract()?;
        return Ok(toml::Value::String(path.to_string_lossy().into_owned()));
    }
    Err(PyTypeError::new_err(format!(
        "pipeline dict: '{path}' is {}; a pipeline holds strings, numbers, booleans, \
         lists and dicts",
        crate::arrow_io::type_name(value)
    )))
}
