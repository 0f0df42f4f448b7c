//! `tag_running`: a running value per symbol and date (`TagRunning` in the seeds), a
//! rule of the [`crate::enrich`] operator.
//!
//! `position` with update `prev + CASE WHEN orderSide = 'B' THEN qty ELSE -qty END` and
//! initial value `0` gives each row the symbol's position after the row: per symbol and
//! date, in event order, `value = update(prev, row)` where `prev` is the previous row's
//! value (the initial value for the symbol's first row of the date). The update is SQL
//! (see [`crate::expr`]) compiled once: the parts that do not involve `prev` are
//! evaluated vectorised over the date's rows, and only the small rest runs row by row.
//!
//! # Decisions where SEMANTICS.md is silent
//!
//! * **Type.** The value's type is the initial value's (`Int64` for an integer,
//!   `Float64` for a float, `Boolean` for a boolean), widened to `Float64` when the
//!   update gives a float (`prev + 0.5 * qty` with initial `0` is a float). Other types
//!   are an error when the pipeline is bound.
//! * **Nulls** follow SQL: the value is exactly what the update gives, so a null operand
//!   makes the value null, and the next row's `prev` is null. `prev + coalesce(qty, 0)`
//!   skips null quantities instead. Rows with a null value are counted as
//!   `tag_running.{name}.null_rows`.
//! * **Errors** (an integer overflow, a failing `CAST`) fail the date, naming the rule,
//!   the row's `row_id` and, for an error in the part of the update that uses `prev`,
//!   the value of `prev`.
//! * **`prev`** is a reserved name in the update: a column named `prev` cannot be used
//!   there.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

use crate::enrich::{Carried, EnrichError, EnrichRule, Rows, RuleOutput, fresh_symbols};
use crate::expr::{Expr, Recurrence, Scalar};

/// The name of the previous value in a [`TagRunning`] update.
pub const PREV: &str = "prev";

/// A running value: the output column, the update and the initial value.
#[derive(Clone, Debug)]
pub struct TagRunning {
    name: String,
    update: Expr,
    initial: Scalar,
}

impl TagRunning {
    /// The running value `name` = `update` (over `prev` and the row's columns), starting
    /// from `initial` for each symbol and date.
    pub fn new(name: impl Into<String>, update: Expr, initial: Scalar) -> Self {
        TagRunning {
            name: name.into(),
            update,
            initial,
        }
    }

    fn initial_type(&self) -> DataType {
        match self.initial {
            Scalar::Float(_) => DataType::Float64,
            Scalar::Bool(_) => DataType::Boolean,
            Scalar::Int(_) | Scalar::Null => DataType::Int64,
        }
    }

    /// The value's type and the update compiled for it, over the columns of `schema`.
    fn compile(&self, schema: &Schema) -> Result<Recurrence, EnrichError> {
        let error = |source| EnrichError::Expr {
            rule: EnrichRule::name(self),
            source: Box::new(source),
        };
        let mut value_type = self.initial_type();
        for _ in 0..3 {
            let recurrence = self
                .update
                .recurrence(PREV, &value_type, schema)
                .map_err(error)?;
            let result = recurrence.data_type().clone();
            if result == value_type {
                return Ok(recurrence);
            }
            value_type = match (&value_type, &result) {
                (DataType::Int64, DataType::Float64) => DataType::Float64,
                (DataType::Float64, DataType::Int64) => DataType::Float64,
                // The initial value is null: take the update's type.
                _ if self.initial == Scalar::Null => result,
                _ => {
                    return Err(EnrichError::RunningType {
                        rule: EnrichRule::name(self),
                        update: self.update.text().to_owned(),
                        initial: value_type,
                        data_type: result,
                    });
                }
            };
        }
        Err(EnrichError::RunningTypeUnsettled {
            rule: EnrichRule::name(self),
            update: self.update.text().to_owned(),
        })
    }
}

/// The initial value in the value's type.
fn convert(value: Scalar, to: &DataType) -> Scalar {
    match (value, to) {
        (Scalar::Int(i), DataType::Float64) => Scalar::Float(i as f64),
        (value, _) => value,
    }
}

impl EnrichRule for TagRunning {
    fn name(&self) -> String {
        format!("TagRunning({})", self.name)
    }

    fn inputs(&self) -> Vec<String> {
        let mut columns = self.update.columns();
        columns.retain(|c| c != PREV);
        columns
    }

    fn output_names(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError> {
        let recurrence = self.compile(schema)?;
        Ok(vec![Field::new(
            &self.name,
            recurrence.data_type().clone(),
            true,
        )])
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
        self.resume(rows, &fresh_symbols(rows), &mut Carried::default())
    }

    /// Each symbol's last value is carried to its next call (as `prev` of its first row
    /// there).
    fn resume(
        &self,
        rows: &Rows<'_>,
        symbols: &[u32],
        carried: &mut Carried,
    ) -> Result<RuleOutput, EnrichError> {
        let rule = EnrichRule::name(self);
        let fields: Vec<Field> = self
            .inputs()
            .iter()
            .zip(rows.columns)
            .map(|(name, column)| Field::new(name, column.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields.clone())),
            rows.columns.to_vec(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .map_err(|source| EnrichError::RuleArrow {
            rule: rule.clone(),
            source,
        })?;
        let recurrence = self.compile(&Schema::new(fields))?;
        let prepared = recurrence
            .prepare(&batch)
            .map_err(|source| EnrichError::RowExpr {
                rule: rule.clone(),
                row_id: rows.row_id[first_failing_row(&recurrence, &batch)],
                prev: None,
                source: Box::new(source),
            })?;
        let data_type = recurrence.data_type().clone();
        let initial = convert(self.initial, &data_type);
        let mut values = ValueBuilder::new(&data_type, rows.len());
        for (run, symbol) in rows.runs.windows(2).zip(symbols) {
            let carried = carried.state_mut::<Option<Scalar>>(*symbol);
            let mut value = carried.unwrap_or(initial);
            for row in run[0]..run[1] {
                let next = prepared
                    .step(row, value)
                    .map_err(|source| EnrichError::RowExpr {
                        rule: rule.clone(),
                        row_id: rows.row_id[row],
                        prev: Some(describe(value)),
                        source: Box::new(source),
                    })?;
                value = convert(next, &data_type);
                values.push(value);
            }
            *carried = Some(value);
        }
        let (column, nulls) = values.finish();
        Ok(RuleOutput {
            source: None,
            columns: vec![column],
            counts: vec![(format!("tag_running.{}.null_rows", self.name), nulls)],
            revisions: None,
        })
    }
}

/// The first row (in the rows' order) on which the vectorised part of a recurrence
/// fails, given that it fails on all of `batch`: a bisection over prefixes, run only to
/// name the row in an error.
fn first_failing_row(recurrence: &Recurrence, batch: &RecordBatch) -> usize {
    // The prefix of `ok` rows succeeds, the prefix of `failing` rows fails.
    let (mut ok, mut failing) = (0, batch.num_rows());
    while failing - ok > 1 {
        let middle = ok + (failing - ok) / 2;
        if recurrence.prepare(&batch.slice(0, middle)).is_err() {
            failing = middle;
        } else {
            ok = middle;
        }
    }
    failing.saturating_sub(1)
}

fn describe(value: Scalar) -> String {
    match value {
        Scalar::Null => "NULL".to_owned(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }
}

/// Builds the output column of one of the three value types, counting nulls.
enum ValueBuilder {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl ValueBuilder {
    fn new(data_type: &DataType, rows: usize) -> Self {
        match data_type {
            DataType::Float64 => ValueBuilder::Float(Float64Builder::with_capacity(rows)),
            DataType::Boolean => ValueBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            _ => ValueBuilder::Int(Int64Builder::with_capacity(rows)),
        }
    }

    #[inline]
    fn push(&mut self, value: Scalar) {
        match (self, value) {
            (ValueBuilder::Int(b), Scalar::Int(v)) => b.append_value(v),
            (ValueBuilder::Float(b), Scalar::Float(v)) => b.append_value(v),
            (ValueBuilder::Float(b), Scalar::Int(v)) => b.append_value(v as f64),
            (ValueBuilder::Bool(b), Scalar::Bool(v)) => b.append_value(v),
            (ValueBuilder::Int(b), _) => b.append_null(),
            (ValueBuilder::Float(b), _) => b.append_null(),
            (ValueBuilder::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> (ArrayRef, u64) {
        let array: ArrayRef = match self {
            ValueBuilder::Int(mut b) => Arc::new(b.finish()),
            ValueBuilder::Float(mut b) => Arc::new(b.finish()),
            ValueBuilder::Bool(mut b) => Arc::new(b.finish()),
        };
        let nulls = array.null_count() as u64;
        (array, nulls)
    }
}
