//! Rules written in Python: a vectorised function of one symbol's rows of a date, in
//! event order, run inside the dataflow as an `[[enrich]]` rule is.
//!
//! The keyed stage hands a rule a chunk of a worker's symbols at a time; this rule
//! takes the GIL once per chunk and hands over the chunk's rows once (a
//! `pyarrow.RecordBatch` of the declared inputs with `elapsed_ms` and `row_id`, which
//! the Python side turns into a Polars frame without copying) with where each symbol's
//! rows start; the Python side calls the function once per symbol on a slice of that
//! frame and checks each answer (its rows, its columns). The outputs are cast to the
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
    /// Takes a `pyarrow.RecordBatch` of some symbols' rows and the offsets where each
    /// symbol's rows start (then the end); returns `(pyarrow table of the output
    /// columns or None, None)`, or `(None, what is wrong)`.
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

    /// The rows as one batch of the inputs (the columns as they are, no copy),
    /// `elapsed_ms` and `row_id` (copied from the stage's slices).
    fn rows_batch(&self, rows: &Rows<'_>) -> RecordBatch {
        let mut fields: Vec<Field> = Vec::with_capacity(self.inputs.len() + 2);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.inputs.len() + 2);
        for (name, column) in self.inputs.iter().zip(rows.columns) {
            fields.push(Field::new(name, column.data_type().clone(), true));
            columns.push(column.clone());
        }
        fields.push(Field::new(ELAPSED_MS, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(rows.elapsed_ms.to_vec())));
        fields.push(Field::new(ROW_ID, DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(rows.row_id.to_vec())));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns of the rows")
    }

    /// The function's outputs over every symbol's rows: each declared column, cast to
    /// its type. The Python side calls the function once per symbol (`runs`) on slices
    /// of one frame and checks each answer.
    fn call(&self, py: Python<'_>, rows: &Rows<'_>) -> Result<Vec<ArrayRef>, EnrichError> {
        let python = |e: PyErr| self.error(format!("the function raised {e}"));
        let argument = PyArrowType(self.rows_batch(rows))
            .into_pyobject(py)
            .map_err(python)?;
        let returned = self
            .call
            .call1(py, (argument, rows.runs.to_vec()))
            .map_err(python)?;
        let (table, problem): (Option<PyArrowType<Table>>, Option<String>) =
            returned.extract(py).map_err(python)?;
        if let Some(problem) = problem {
            return Err(self.error(problem));
        }
        let Some(PyArrowType(table)) = table else {
            // No symbol had rows.
            return Ok((self.outputs.iter())
                .map(|f| arrow::array::new_empty_array(f.data_type()))
                .collect());
        };
        let (batches, schema) = table.into_inner();
        let out = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| self.error(e.to_string()))?;
        if out.num_rows() != rows.len() {
            return Err(self.error(format!(
                "the function returned {} rows in all for {}; return one row per row",
                out.num_rows(),
                rows.len()
            )));
        }
        (self.outputs.iter())
            .map(|field| {
                let column = out.column_by_name(field.name()).ok_or_else(|| {
                    self.error(format!(
                        "the function returned no column '{}'",
                        field.name()
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
        // The GIL once per chunk of symbols; the rows cross once.
        let columns = Python::attach(|py| self.call(py, rows))?;
        Ok(RuleOutput {
            columns,
            ..RuleOutput::default()
        })
    }

    fn fingerprint(&self) -> String {
        format!("{}: {}", EnrichRule::name(self), self.fingerprint)
    }
}
