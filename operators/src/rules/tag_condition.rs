//! `tag_condition`: a boolean column from a SQL condition (`TagCondition` in the seeds),
//! a rule of the [`crate::enrich`] operator.
//!
//! `is_large = "qty >= 1000"` adds the Boolean column `is_large`, evaluated vectorised
//! over each date's rows (after the rules listed before it, so it may use their columns,
//! e.g. `matched_qty > 0`). A condition that is null for a row (a null operand) gives a
//! null tag; wrap it in `coalesce(..., FALSE)` for false instead.

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema};

use crate::enrich::{Carried, EnrichError, EnrichRule, Rows, RuleOutput};
use crate::expr::Expr;

/// A condition tag: the output column's name and the condition.
#[derive(Clone, Debug)]
pub struct TagCondition {
    name: String,
    condition: Expr,
}

impl TagCondition {
    /// The tag `name` = `condition`, which must be a boolean expression.
    pub fn new(name: impl Into<String>, condition: Expr) -> Self {
        TagCondition {
            name: name.into(),
            condition,
        }
    }
}

impl EnrichRule for TagCondition {
    fn name(&self) -> String {
        format!("TagCondition({})", self.name)
    }

    fn inputs(&self) -> Vec<String> {
        self.condition.columns()
    }

    fn output_names(&self) -> Vec<String> {
        vec![self.name.clone()]
    }

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError> {
        let data_type = self
            .condition
            .check(schema)
            .map_err(|source| EnrichError::Expr {
                rule: self.name(),
                source: Box::new(source),
            })?;
        if !matches!(data_type, DataType::Boolean | DataType::Null) {
            return Err(EnrichError::NotBoolean {
                rule: self.name(),
                condition: self.condition.text().to_owned(),
                data_type,
            });
        }
        Ok(vec![Field::new(&self.name, DataType::Boolean, true)])
    }

    /// A condition has no state: each call is [`EnrichRule::apply`].
    fn resume(
        &self,
        rows: &Rows<'_>,
        _symbols: &[u32],
        _carried: &mut Carried,
    ) -> Result<RuleOutput, EnrichError> {
        self.apply(rows)
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
        let arrow_error = |source| EnrichError::RuleArrow {
            rule: self.name(),
            source,
        };
        let inputs = self.inputs();
        let fields: Vec<Field> = inputs
            .iter()
            .zip(rows.columns)
            .map(|(name, column)| Field::new(name, column.data_type().clone(), true))
            .collect();
        let batch = arrow::array::RecordBatch::try_new_with_options(
            std::sync::Arc::new(Schema::new(fields)),
            rows.columns.to_vec(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )
        .map_err(arrow_error)?;
        let values = self
            .condition
            .evaluate(&batch)
            .map_err(|source| EnrichError::Expr {
                rule: self.name(),
                source: Box::new(source),
            })?;
        let values: ArrayRef = if values.data_type() == &DataType::Boolean {
            values
        } else {
            arrow::compute::cast(&values, &DataType::Boolean).map_err(arrow_error)?
        };
        Ok(RuleOutput {
            source: None,
            columns: vec![values],
            counts: Vec::new(),
            revisions: None,
        })
    }
}
