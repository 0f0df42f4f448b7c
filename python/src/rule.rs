//! Rules written in Python: a vectorised function of one symbol's rows of a date, in
//! event order, run inside the dataflow as an `[[enrich]]` rule is.
//!
//! The keyed stage hands a rule a chunk of a worker's symbols at a time; this rule
//! takes the GIL once per chunk and calls the function once per symbol with that
//! symbol's rows (a `pyarrow.RecordBatch` of the declared inputs with `elapsed_ms` and
//! `row_id`, which the Python side turns into a Polars frame without copying). The
//! function's output columns are checked (names, one value per row) and cast to the
//! declared types.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_pyarrow::{PyArrowType, Table};
use pyo3::prelude::*;
use vizflow_operators::Fault;
use vizflow_operators::columns::{ELAPSED_MS, ROW_ID};
use vizflow_operators::enrich::{EnrichError, EnrichRule, Rows, RuleOutput};

use crate::arrow_io::normal_type;

/// A rule written in Python (`vizflow.rule`).
#[pyclass(name = "Rule", module = "vizflow", frozen, from_py_object)]
#[derive(Clone)]
pub struct PythonRule {
    pub(crate) name: String,
    inputs: Vec<String>,
    outputs: Vec<Field>,
    /// Takes a `pyarrow.RecordBatch` of one symbol's rows, returns an Arrow stream
    /// exporter (a pyarrow table) of the output columns.
    call: Arc<Py<PyAny>>,
    /// What defines the rule's results (its name and the function's code), for the
    /// pipeline's hash.
    fingerprint: String,
}

impl fmt::Debug for PythonRule {
    // The function itself is left out: its address changes from one session to the
    // next, and the pipeline's hash is taken over this form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PythonRule")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

#[pymethods]
impl PythonRule {
    /// A rule named `name` that reads `inputs` and adds `outputs` (`(name, pyarrow
    /// type)` pairs) by calling `call` on each symbol's rows.
    #[new]
    fn new(
        name: String,
        inputs: Vec<String>,
        outputs: Vec<(String, PyArrowType<DataType>)>,
        call: Py<PyAny>,
        fingerprint: String,
    ) -> Self {
        let outputs = (outputs.into_iter())
            .map(|(name, PyArrowType(data_type))| Field::new(name, normal_type(&data_type), true))
            .collect();
        PythonRule {
            name,
            inputs,
            outputs,
            call: Arc::new(call),
            fingerprint,
        }
    }

    /// The rule's name.
    #[getter]
    fn name(&self) -> String {
        self.name.clone()
    }

    fn __repr__(&self) -> String {
        let outputs: Vec<String> = (self.outputs.iter())
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect();
        format!(
            "Rule({:?}, inputs={:?}, outputs=[{}])",
            self.name,
            self.inputs,
            outputs.join(", ")
        )
    }
}

impl PythonRule {
    fn error(&self, message: impl Into<String>) -> EnrichError {
        EnrichError::rule(EnrichRule::name(self), message, Fault::Config)
    }

    /// One symbol's rows `start..end` as a batch of the inputs (slices of the columns,
    /// no copy), `elapsed_ms` and `row_id` (copied from the stage's slices).
    fn rows_batch(&self, rows: &Rows<'_>, start: usize, end: usize) -> RecordBatch {
        let n = end - start;
        let mut fields: Vec<Field> = Vec::with_capacity(self.inputs.len() + 2);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.inputs.len() + 2);
        for (name, column) in self.inputs.iter().zip(rows.columns) {
            fields.push(Field::new(name, column.data_type().clone(), true));
            columns.push(column.slice(start, n));
        }
        fields.push(Field::new(ELAPSED_MS, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(
            rows.elapsed_ms[start..end].to_vec(),
        )));
        fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(
            rows.row_id[start..end].to_vec(),
        )));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns of n rows")
    }

    /// The function's output for one symbol's rows: each declared column, cast to its
    /// type.
    fn call_one(&self, py: Python<'_>, batch: RecordBatch) -> Result<Vec<ArrayRef>, EnrichError> {
        let rows = batch.num_rows();
        let python = |e: PyErr| self.error(format!("the function raised {e}"));
        let argument = PyArrowType(batch).into_pyobject(py).map_err(python)?;
        let returned = self.call.call1(py, (argument,)).map_err(python)?;
        let PyArrowType(table): PyArrowType<Table> = returned.extract(py).map_err(|e: PyErr| {
            self.error(format!("the function must return a Polars DataFrame: {e}"))
        })?;
        let (batches, schema) = table.into_inner();
        let out = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| self.error(e.to_string()))?;
        if out.num_rows() != rows {
            return Err(self.error(format!(
                "the function returned {} rows for a symbol's {rows}; return one row per row",
                out.num_rows()
            )));
        }
        (self.outputs.iter())
            .map(|field| {
                let column = out.column_by_name(field.name()).ok_or_else(|| {
                    let returned: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    self.error(format!(
                        "the function returned no column '{}' (it returned {})",
                        field.name(),
                        returned.join(", ")
                    ))
                })?;
                arrow::compute::cast(column, field.data_type()).map_err(|e| {
                    self.error(format!(
                        "column '{}' is {}, declared {}: {e}",
                        field.name(),
                        column.data_type(),
                        field.data_type()
                    ))
                })
            })
            .collect()
    }
}

impl EnrichRule for PythonRule {
    fn name(&self) -> String {
        format!("PythonRule({})", self.name)
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|f| f.name().clone()).collect()
    }

    fn outputs(&self, _schema: &Schema) -> Result<Vec<Field>, EnrichError> {
        Ok(self.outputs.clone())
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); self.outputs.len()];
        Python::attach(|py| {
            for run in rows.runs.windows(2) {
                let (start, end) = (run[0], run[1]);
                if start == end {
                    continue;
                }
                let columns = self.call_one(py, self.rows_batch(rows, start, end))?;
                for (part, column) in parts.iter_mut().zip(columns) {
                    part.push(column);
                }
            }
            Ok::<(), EnrichError>(())
        })?;
        let columns = (parts.iter().zip(&self.outputs))
            .map(|(part, field)| {
                if part.is_empty() {
                    return Ok(arrow::array::new_empty_array(field.data_type()));
                }
                let arrays: Vec<&dyn Array> = part.iter().map(|a| a.as_ref()).collect();
                arrow::compute::concat(&arrays).map_err(|e| self.error(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RuleOutput {
            columns,
            ..RuleOutput::default()
        })
    }

    fn fingerprint(&self) -> String {
        format!("{}: {}", EnrichRule::name(self), self.fingerprint)
    }
}
