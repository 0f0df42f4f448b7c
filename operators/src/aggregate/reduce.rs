//! Merging partials ([`Reducer`]): the partials of any dates, grouped by any subset of
//! their columns, folded into one table exactly as if every row had been aggregated at
//! once (SEMANTICS.md, *Reduce*): counts and sums add (float sums exactly, from their
//! `sum(x).exact` columns, rounded once), min and max combine, and the metrics are
//! recomputed from the merged components.
//!
//! A partial's components are found by their column names: `count()`, `count(x)`,
//! `sum(x)` (with `sum(x).exact` when `x` is a float), `min(x)`, `max(x)`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};

use super::plan::{
    Component, ValueKind, append_components, call_values, component_array, empty_accumulator,
    exact_name,
};
use super::state::{Accumulator, AggState, float_key, merge_option};
use crate::expr::{ExprError, MetricExpr};

/// Why partials could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// A column to group by is not in the partials.
    #[error("no column '{column}' to group by; the partials' columns: {available}")]
    MissingKey {
        /// The column.
        column: String,
        /// The columns there are, comma-separated.
        available: String,
    },
    /// A partial lacks a component the others have.
    #[error("a partial has no column '{column}' (a component of the others)")]
    MissingComponent {
        /// The component's column.
        column: String,
    },
    /// A metric reads a component that the partials do not keep.
    #[error(
        "metric '{metric}' needs the component '{component}', which the partials do not \
         keep; the components there are: {available}"
    )]
    MetricComponent {
        /// The metric.
        metric: String,
        /// The component, e.g. `sum(qty)`.
        component: String,
        /// The components there are, comma-separated.
        available: String,
    },
    /// A metric could not be evaluated.
    #[error("metric '{metric}': {source}")]
    Metric {
        /// The metric.
        metric: String,
        /// Why (boxed: an error is rare, and a `Result` of it stays small).
        source: Box<ExprError>,
    },
    /// A stored exact sum is not one.
    #[error("column '{column}' row {row}: not an exact sum (the partial is damaged)")]
    BadExactSum {
        /// The column.
        column: String,
        /// The row.
        row: usize,
    },
    /// An integer sum outside the 64-bit range.
    #[error("an integer sum overflows 64 bits: {sum}")]
    SumOverflow {
        /// The sum.
        sum: i128,
    },
    /// Building a merged component or metric failed.
    #[error("{context}: {source}")]
    Compute {
        /// The component or metric, e.g. `metric 'vwap'`.
        context: String,
        /// Why.
        source: super::AggregateError,
    },
    /// A column has another type than the partials' first.
    #[error("column '{column}': {source}")]
    Arrow {
        /// The column.
        column: String,
        /// Why.
        source: ArrowError,
    },
}

/// Folds partials into groups of the `by` columns; see the module docs.
pub struct Reducer {
    by: Vec<String>,
    converter: RowConverter,
    components: Vec<(Component, ValueKind)>,
    /// A group's key (in the row format, which sorts as the values) -> its index.
    index: HashMap<Box<[u8]>, usize>,
    keys: Vec<Box<[u8]>>,
    states: Vec<AggState>,
    /// Group of each row of the batch being added (kept to reuse its allocation).
    group_of: Vec<usize>,
}

impl Reducer {
    /// A reducer of batches with `schema` (a partial's, maybe with more key columns,
    /// e.g. a month), grouped by `by` (none: one group).
    pub fn new(schema: &Schema, by: &[String]) -> Result<Reducer, ReduceError> {
        let mut fields = Vec::with_capacity(by.len());
        for column in by {
            let field = schema
                .field_with_name(column)
                .map_err(|_| ReduceError::MissingKey {
                    column: column.clone(),
                    available: names(schema.fields().iter().map(|f| f.name().as_str())),
                })?;
            fields.push(SortField::new(field.data_type().clone()));
        }
        let converter = RowConverter::new(fields).map_err(|source| ReduceError::Arrow {
            column: by.join(", "),
            source,
        })?;
        Ok(Reducer {
            by: by.to_vec(),
            converter,
            components: components_of(schema),
            index: HashMap::new(),
            keys: Vec::new(),
            states: Vec::new(),
            group_of: Vec::new(),
        })
    }

    /// The components found in the partials' columns, e.g. `sum(qty)`.
    pub fn component_names(&self) -> Vec<String> {
        self.components.iter().map(|(c, _)| c.name()).collect()
    }

    /// The number of groups so far.
    pub fn groups(&self) -> usize {
        self.states.len()
    }

    /// Adds the groups of a partial (its rows filtered, its keys derived as the caller
    /// wishes).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<(), ReduceError> {
        let keys: Vec<ArrayRef> = (self.by.iter())
            .map(|column| {
                batch
                    .column_by_name(column)
                    .cloned()
                    .ok_or_else(|| ReduceError::MissingKey {
                        column: column.clone(),
                        available: names(batch.schema().fields().iter().map(|f| f.name().as_str())),
                    })
            })
            .collect::<Result<_, _>>()?;
        let n = batch.num_rows();
        self.group_of.clear();
        if self.by.is_empty() {
            if self.states.is_empty() && n > 0 {
                self.new_group(Box::default());
            }
            self.group_of.resize(n, 0);
        } else {
            let rows =
                (self.converter.convert_columns(&keys)).map_err(|source| ReduceError::Arrow {
                    column: self.by.join(", "),
                    source,
                })?;
            for row in rows.iter() {
                let group = match self.index.get(row.as_ref()) {
                    Some(group) => *group,
                    None => self.new_group(row.as_ref().into()),
                };
                self.group_of.push(group);
            }
        }
        for (c, (component, kind)) in self.components.iter().enumerate() {
            let name = component.name();
            let column =
                (batch.column_by_name(&name)).ok_or_else(|| ReduceError::MissingComponent {
                    column: name.clone(),
                })?;
            let arrow_error = |source| ReduceError::Arrow {
                column: name.clone(),
                source,
            };
            let states = &mut self.states;
            let group_of = &self.group_of;
            match (component, kind) {
                (Component::Sum(_), ValueKind::Float) => {
                    let exact_column = exact_name(&name);
                    let exact = (batch.column_by_name(&exact_column)).ok_or_else(|| {
                        ReduceError::MissingComponent {
                            column: exact_column.clone(),
                        }
                    })?;
                    let exact =
                        exact
                            .as_binary_opt::<i32>()
                            .ok_or_else(|| ReduceError::BadExactSum {
                                column: exact_column.clone(),
                                row: 0,
                            })?;
                    for (row, group) in group_of.iter().enumerate() {
                        let Accumulator::FloatSum(sum) = &mut states[*group].0[c] else {
                            unreachable!("a float sum's accumulator")
                        };
                        sum.add_bytes(exact.value(row)).ok_or_else(|| {
                            ReduceError::BadExactSum {
                                column: exact_column.clone(),
                                row,
                            }
                        })?;
                    }
                }
                (Component::Min(_) | Component::Max(_), ValueKind::Float) => {
                    let values =
                        arrow::compute::cast(column, &DataType::Float64).map_err(arrow_error)?;
                    let values = values.as_primitive::<Float64Type>();
                    for (row, group) in group_of.iter().enumerate() {
                        let value = values.is_valid(row).then(|| float_key(values.value(row)));
                        match &mut states[*group].0[c] {
                            Accumulator::FloatMin(m) => merge_option(m, value, i64::min),
                            Accumulator::FloatMax(m) => merge_option(m, value, i64::max),
                            _ => unreachable!("a float min or max"),
                        }
                    }
                }
                _ => {
                    let values =
                        arrow::compute::cast(column, &DataType::Int64).map_err(arrow_error)?;
                    let values = values.as_primitive::<Int64Type>();
                    for (row, group) in group_of.iter().enumerate() {
                        let value = values.is_valid(row).then(|| values.value(row));
                        match &mut states[*group].0[c] {
                            Accumulator::Count(count) => *count += value.unwrap_or(0),
                            Accumulator::IntSum(sum) => *sum += i128::from(value.unwrap_or(0)),
                            Accumulator::IntMin(m) => merge_option(m, value, i64::min),
                            Accumulator::IntMax(m) => merge_option(m, value, i64::max),
                            _ => unreachable!("an integer component"),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn new_group(&mut self, key: Box<[u8]>) -> usize {
        let group = self.states.len();
        let empty =
            (self.components.iter()).map(|(component, kind)| empty_accumulator(component, *kind));
        self.states.push(AggState(empty.collect()));
        self.index.insert(key.clone(), group);
        self.keys.push(key);
        group
    }

    /// The merged table, in key order: the `by` columns, then `metrics` recomputed
    /// from the merged components, then the components (a partial itself, which
    /// merges again).
    pub fn finish(self, metrics: &[(String, MetricExpr)]) -> Result<RecordBatch, ReduceError> {
        let available = names(self.components.iter().map(|(c, _)| c.name()));
        for (metric, expr) in metrics {
            for call in expr.calls() {
                let needed = super::plan::components_of_call(call);
                if let Some(missing) = needed
                    .iter()
                    .find(|c| !self.components.iter().any(|(have, _)| have == *c))
                {
                    return Err(ReduceError::MetricComponent {
                        metric: metric.clone(),
                        component: missing.name(),
                        available: available.clone(),
                    });
                }
            }
        }
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        order.sort_unstable_by(|a, b| self.keys[*a].cmp(&self.keys[*b]));
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        if !self.by.is_empty() {
            let parser = self.converter.parser();
            let keys = (self.converter)
                .convert_rows(order.iter().map(|g| parser.parse(&self.keys[*g])))
                .map_err(|source| ReduceError::Arrow {
                    column: self.by.join(", "),
                    source,
                })?;
            for (name, values) in self.by.iter().zip(keys) {
                fields.push(Field::new(name, values.data_type().clone(), true));
                columns.push(values);
            }
        }
        let states: Vec<&AggState> = order.iter().map(|g| &self.states[*g]).collect();
        let mut component_arrays = Vec::with_capacity(self.components.len());
        for (c, (component, kind)) in self.components.iter().enumerate() {
            let template = empty_accumulator(component, *kind);
            let array =
                component_array(states.iter().map(|s| &s.0[c]), &template).map_err(|error| {
                    match error.problem() {
                        super::AggregateProblem::SumOverflow { sum } => {
                            ReduceError::SumOverflow { sum: *sum }
                        }
                        _ => ReduceError::Compute {
                            context: format!("component '{}'", component.name()),
                            source: error,
                        },
                    }
                })?;
            component_arrays.push(array);
        }
        let find = |wanted: &Component| {
            let i = (self.components.iter())
                .position(|(c, _)| c == wanted)
                .expect("checked above");
            component_arrays[i].clone()
        };
        for (name, metric) in metrics {
            let metric_error = |source| ReduceError::Metric {
                metric: name.clone(),
                source: Box::new(source),
            };
            let calls: Vec<ArrayRef> = (metric.calls().iter())
                .map(|call| call_values(call, &find))
                .collect::<Result<_, _>>()
                .map_err(|source| ReduceError::Compute {
                    context: format!("metric '{name}'"),
                    source,
                })?;
            let values = metric.evaluate(&calls).map_err(metric_error)?;
            fields.push(Field::new(name, values.data_type().clone(), true));
            columns.push(values);
        }
        let components = (&self.components[..], &component_arrays[..]);
        append_components(
            components,
            states.iter().copied(),
            &mut fields,
            &mut columns,
        );
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(order.len()));
        RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options).map_err(
            |source| ReduceError::Arrow {
                column: String::new(),
                source,
            },
        )
    }
}

/// The components among a partial's columns, in column order.
fn components_of(schema: &Schema) -> Vec<(Component, ValueKind)> {
    let has = |name: &str| schema.field_with_name(name).is_ok();
    let mut components = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        let Some((function, rest)) = name.split_once('(') else {
            continue;
        };
        let Some(column) = rest.strip_suffix(')') else {
            continue;
        };
        let float = matches!(field.data_type(), DataType::Float64 | DataType::Float32);
        let kind = if float {
            ValueKind::Float
        } else {
            ValueKind::Int
        };
        let column = column.to_owned();
        let component = match function {
            "count" if column.is_empty() => (Component::Rows, ValueKind::Int),
            "count" => (Component::NonNull(column), ValueKind::Int),
            "sum" if float && has(&exact_name(name)) => (Component::Sum(column), ValueKind::Float),
            "sum" if !float => (Component::Sum(column), ValueKind::Int),
            "min" => (Component::Min(column), kind),
            "max" => (Component::Max(column), kind),
            _ => continue,
        };
        components.push(component);
    }
    components
}

fn names<S: AsRef<str>>(names: impl Iterator<Item = S>) -> String {
    names
        .map(|n| n.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}
