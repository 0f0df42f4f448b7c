//! Metric expressions: aggregate calls (`sum(qty)`) and the scalar expression over them.

use super::*;

/// An aggregate function of a [`MetricExpr`] (SEMANTICS.md, "aggregate").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggregateFunction {
    /// `count()` or `count(*)`: the number of rows.
    CountRows,
    /// `count(x)`: the number of non-null values.
    Count,
    /// `sum(x)`: 0 when there are no non-null values.
    Sum,
    /// `mean(x)` or `avg(x)`: sum / count of non-null values, null when there are none.
    Mean,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
}

impl AggregateFunction {
    /// The function's canonical lowercase name: `count`, `sum`, `mean`, `min`, `max`.
    pub fn name(self) -> &'static str {
        match self {
            AggregateFunction::CountRows | AggregateFunction::Count => "count",
            AggregateFunction::Sum => "sum",
            AggregateFunction::Mean => "mean",
            AggregateFunction::Min => "min",
            AggregateFunction::Max => "max",
        }
    }

    /// `count` gives [`AggregateFunction::Count`]; whether it counts rows depends on its
    /// argument.
    pub(super) fn from_name(lowercase: &str) -> Option<AggregateFunction> {
        Some(match lowercase {
            "count" => AggregateFunction::Count,
            "sum" => AggregateFunction::Sum,
            "mean" | "avg" => AggregateFunction::Mean,
            "min" => AggregateFunction::Min,
            "max" => AggregateFunction::Max,
            _ => return None,
        })
    }
}

/// One aggregate call in a metric, e.g. `sum(qty)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateCall {
    /// What to compute.
    pub function: AggregateFunction,
    /// The column aggregated; `None` only for [`AggregateFunction::CountRows`].
    pub column: Option<String>,
}

impl AggregateCall {
    /// Canonical text, e.g. `sum(qty)`, `count()`, `mean("my col")`.
    ///
    /// ```
    /// use vizflow_operators::expr::{AggregateCall, AggregateFunction};
    ///
    /// let call = AggregateCall { function: AggregateFunction::Mean, column: Some("return_60".into()) };
    /// assert_eq!(call.name(), "mean(return_60)");
    /// ```
    pub fn name(&self) -> String {
        format!(
            "{}({})",
            self.function.name(),
            self.column.as_deref().map(quote).unwrap_or_default()
        )
    }
}

impl fmt::Display for AggregateCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A column name as it must be written in an expression: bare if it is a plain identifier,
/// else double-quoted.
pub(super) fn quote(column: &str) -> String {
    let mut chars = column.chars();
    let plain = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_');
    if plain {
        column.to_string()
    } else {
        format!("\"{}\"", column.replace('"', "\"\""))
    }
}

/// An aggregate metric: arithmetic over aggregate calls, e.g. `sum(notional) / sum(matched_qty)`.
///
/// Aggregate names are case-insensitive (`count`, `sum`, `mean` or `avg`, `min`, `max`), and
/// each aggregates a plain column. Around the calls any scalar expression is allowed
/// (literals, `+ - * /`, parentheses, and the functions of [`Expr`]), with the same
/// semantics; in particular a division by zero gives null.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Array, ArrayRef, Float64Array, Int64Array};
/// use vizflow_operators::expr::MetricExpr;
///
/// let vwap = MetricExpr::parse("sum(notional) / sum(matched_qty)").unwrap();
/// let names: Vec<String> = vwap.calls().iter().map(|call| call.name()).collect();
/// assert_eq!(names, ["sum(notional)", "sum(matched_qty)"]);
///
/// // One row per group, one array per call.
/// let notional: ArrayRef = Arc::new(Float64Array::from(vec![1005.0, 0.0]));
/// let matched_qty: ArrayRef = Arc::new(Int64Array::from(vec![100, 0]));
/// let values = vwap.evaluate(&[notional, matched_qty]).unwrap();
/// let expected = Float64Array::from(vec![Some(10.05), None]);
/// assert_eq!(values.as_ref(), &expected as &dyn Array);
/// ```
#[derive(Clone, Debug)]
pub struct MetricExpr {
    pub(super) calls: Vec<AggregateCall>,
    /// The outer expression, reading each call as a column named [`AggregateCall::name`].
    pub(super) outer: Expr,
}

impl MetricExpr {
    /// Parses a metric.
    ///
    /// ```
    /// use vizflow_operators::expr::MetricExpr;
    ///
    /// let error = MetricExpr::parse("sum(qty * fillPrice)").unwrap_err();
    /// assert!(error.to_string().contains("`derive: x = qty * fillPrice`"));
    /// ```
    pub fn parse(text: &str) -> Result<MetricExpr, ExprError> {
        let mut converter = Converter {
            text,
            calls: Some(Vec::new()),
        };
        let node = converter.convert(&parse_sql(text)?)?;
        let calls = converter.calls.unwrap_or_default();
        if calls.is_empty() {
            return Err(ExprError::NoAggregate {
                text: text.to_string(),
            });
        }
        Ok(MetricExpr {
            calls,
            outer: Expr {
                text: text.to_string(),
                node,
            },
        })
    }

    /// The distinct aggregate calls, in order of first appearance.
    pub fn calls(&self) -> &[AggregateCall] {
        &self.calls
    }

    /// Evaluates the outer arithmetic given one Float64/Int64 array per call (same order as
    /// [`MetricExpr::calls`]), all of the same length (one row per group).
    ///
    /// A metric that is exactly one call returns that call's array unchanged.
    pub fn evaluate(&self, call_values: &[ArrayRef]) -> Result<ArrayRef, ExprError> {
        if call_values.len() != self.calls.len() {
            return Err(ExprError::CallValues {
                text: self.outer.text.clone(),
                expected: self.calls.len(),
                got: call_values.len(),
            });
        }
        let columns = self
            .calls
            .iter()
            .map(AggregateCall::name)
            .zip(call_values.iter().cloned());
        let batch = RecordBatch::try_from_iter(columns).map_err(|source| ExprError::Compute {
            text: self.outer.text.clone(),
            source,
        })?;
        self.outer.evaluate(&batch)
    }

    /// The source text, as given.
    pub fn text(&self) -> &str {
        &self.outer.text
    }
}
