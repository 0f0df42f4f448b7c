//! [`AggregatePlan`]: an aggregate spec bound to an input schema (types checked,
//! components chosen), and the building of a date's partial from its groups.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use serde::{Deserialize, Serialize};

use super::error::{AggregateError, AggregateProblem};
use super::state::{Accumulator, AggState, float_of_key};
use super::{AggregateSpec, DATE_COLUMN};
use crate::batch::Parts;
use crate::exact_sum::ExactSum;
use crate::expr::{AggregateCall, AggregateFunction, MetricExpr};
use crate::time::date_of_key;

/// How a column's values accumulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum ValueKind {
    /// Integers and booleans (a boolean sums as 0/1).
    Int,
    /// Floats.
    Float,
    /// Anything else: only `count(x)` is possible.
    Other,
}

fn kind_of(data_type: &DataType) -> ValueKind {
    match data_type {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64 => ValueKind::Int,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => ValueKind::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => ValueKind::Float,
        _ => ValueKind::Other,
    }
}

/// One mergeable component of the metrics.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Component {
    Rows,
    NonNull(String),
    Sum(String),
    Min(String),
    Max(String),
}

impl Component {
    /// The component's column name in a partial, e.g. `sum(qty)`.
    pub(super) fn name(&self) -> String {
        match self {
            Component::Rows => "count()".to_owned(),
            Component::NonNull(c) => format!("count({c})"),
            Component::Sum(c) => format!("sum({c})"),
            Component::Min(c) => format!("min({c})"),
            Component::Max(c) => format!("max({c})"),
        }
    }

    pub(super) fn column(&self) -> Option<&str> {
        match self {
            Component::Rows => None,
            Component::NonNull(c) | Component::Sum(c) | Component::Min(c) | Component::Max(c) => {
                Some(c)
            }
        }
    }
}

/// An [`AggregateSpec`] bound to an input schema: types checked, components chosen,
/// output schema known.
#[derive(Clone, Debug)]
pub struct AggregatePlan {
    group_by: Vec<String>,
    pub(super) key_fields: Vec<Field>,
    pub(super) components: Vec<(Component, ValueKind)>,
    /// Each component's part (incremental provisional results, see [`Parts`]): all
    /// [`Parts::BASE`] unless [`AggregatePlan::set_parts`] says otherwise.
    pub(super) parts: Vec<Parts>,
    /// The parts that come narrow ([`crate::batch::Emission::Narrow`]), each once per
    /// row: see [`AggregatePlan::set_narrow`].
    pub(super) narrow: Parts,
    metrics: Vec<(String, MetricExpr)>,
    output_schema: SchemaRef,
}

/// The canonical type a key column is converted to before encoding, so that the same
/// value encodes the same way on every date (e.g. dictionary or plain strings).
fn canonical_key_type(data_type: &DataType) -> Option<DataType> {
    Some(match data_type {
        DataType::Boolean => DataType::Boolean,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Dictionary(_, value)
            if matches!(value.as_ref(), DataType::Utf8 | DataType::LargeUtf8) =>
        {
            DataType::Utf8
        }
        t if kind_of(t) == ValueKind::Int => DataType::Int64,
        t if kind_of(t) == ValueKind::Float => DataType::Float64,
        DataType::Date32 => DataType::Date32,
        _ => return None,
    })
}

impl AggregatePlan {
    /// Binds `spec` to the schema of the rows it will see. Errors name the metric or
    /// column at fault and list the available columns.
    pub fn new(spec: &AggregateSpec, input: &Schema) -> Result<AggregatePlan, AggregateError> {
        let available = || {
            input
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let field = |name: &str, context: &str| {
            input.field_with_name(name).map_err(|_| {
                let hint = crate::suggest::did_you_mean(crate::suggest::closest(
                    name,
                    input.fields().iter().map(|f| f.name().as_str()),
                ));
                AggregateError::from(AggregateProblem::UnknownColumn {
                    column: name.to_owned(),
                    context: context.to_owned(),
                    hint,
                    available: available(),
                })
            })
        };
        let mut key_fields = Vec::new();
        for name in &spec.group_by {
            let f = field(name, "group_by")?;
            let canonical =
                canonical_key_type(f.data_type()).ok_or_else(|| AggregateProblem::Ungroupable {
                    column: name.clone(),
                    data_type: f.data_type().clone(),
                })?;
            key_fields.push(Field::new(name, canonical, true));
        }
        let mut components: Vec<(Component, ValueKind)> = vec![(Component::Rows, ValueKind::Int)];
        let mut add = |c: Component, kind: ValueKind| {
            if !components.iter().any(|(existing, _)| *existing == c) {
                components.push((c, kind));
            }
        };
        for (name, metric) in &spec.metrics {
            for call in metric.calls() {
                let context = format!("metric '{name}' = '{}'", metric.text());
                let Some(column) = call.column.as_deref() else {
                    continue;
                };
                let kind = kind_of(field(column, &context)?.data_type());
                let needs_number = !matches!(
                    call.function,
                    AggregateFunction::Count | AggregateFunction::CountRows
                );
                if needs_number && kind == ValueKind::Other {
                    return Err(AggregateProblem::NotNumeric {
                        call: call.name(),
                        column: column.to_owned(),
                        data_type: field(column, &context)?.data_type().clone(),
                        context,
                    }
                    .into());
                }
                match call.function {
                    AggregateFunction::CountRows => {}
                    AggregateFunction::Count => add(Component::NonNull(column.into()), kind),
                    AggregateFunction::Sum => add(Component::Sum(column.into()), kind),
                    AggregateFunction::Mean => {
                        add(Component::Sum(column.into()), kind);
                        add(Component::NonNull(column.into()), kind);
                    }
                    AggregateFunction::Min => add(Component::Min(column.into()), kind),
                    AggregateFunction::Max => add(Component::Max(column.into()), kind),
                }
            }
        }
        let mut plan = AggregatePlan {
            group_by: spec.group_by.clone(),
            key_fields,
            parts: vec![Parts::BASE; components.len()],
            narrow: Parts::NONE,
            components,
            metrics: spec.metrics.clone(),
            output_schema: Arc::new(Schema::empty()),
        };
        // The output schema is whatever an empty partial has.
        let empty = plan.finalize(0, &BTreeMap::new())?;
        plan.output_schema = empty.schema();
        Ok(plan)
    }

    /// Assigns each component the part of the column it reads (`part_of`);
    /// `count()`, which reads none, is in [`Parts::BASE`].
    pub fn set_parts(&mut self, part_of: impl Fn(&str) -> Parts) {
        for ((component, _), part) in self.components.iter().zip(&mut self.parts) {
            *part = component.column().map_or(Parts::BASE, &part_of);
        }
    }

    /// Says which parts come narrow: the return alone, for the rows of a batch whose
    /// groups the aggregate keeps from its [`Parts::BASE`] until each of these parts of
    /// each of its rows came (see [`crate::batch::Emission::Narrow`]).
    pub fn set_narrow(&mut self, parts: Parts) {
        self.narrow = parts;
    }

    /// Whether every component of `parts` takes a withdrawal exactly (counts and sums;
    /// not a min or a max), see [`crate::batch::Emission::Withdrawn`].
    pub fn withdrawable(&self, parts: Parts) -> bool {
        (self.components.iter().zip(&self.parts))
            .filter(|(_, part)| part.meets(parts))
            .all(|((component, _), _)| !matches!(component, Component::Min(_) | Component::Max(_)))
    }

    /// The columns that the components of `parts` read, when every one is a sum (a zero
    /// adds nothing to a sum, where a count of values counts it); `None` otherwise.
    pub fn summed(&self, parts: Parts) -> Option<Vec<&str>> {
        (self.components.iter().zip(&self.parts))
            .filter(|(_, part)| part.meets(parts))
            .map(|((component, _), _)| match component {
                Component::Sum(column) => Some(column.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The schema of every partial this plan builds.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// The names of the input columns the plan reads.
    pub fn input_columns(&self) -> Vec<String> {
        let mut columns = self.group_by.clone();
        for (component, _) in &self.components {
            if let Some(c) = component.column()
                && !columns.iter().any(|existing| existing == c)
            {
                columns.push(c.to_owned());
            }
        }
        columns
    }

    pub(super) fn converter(&self) -> RowConverter {
        let fields = self
            .key_fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        RowConverter::new(fields).expect("canonical key types are supported by the row format")
    }

    pub(super) fn empty_state(&self) -> AggState {
        AggState(
            (self.components.iter())
                .map(|(component, kind)| empty_accumulator(component, *kind))
                .collect(),
        )
    }

    /// Builds a date's partial from its groups (key bytes in the row format -> state).
    pub fn finalize(
        &self,
        date_key: u32,
        groups: &BTreeMap<Vec<u8>, AggState>,
    ) -> Result<RecordBatch, AggregateError> {
        let n = groups.len();
        let converter = self.converter();
        let parser = converter.parser();
        let keys = converter
            .convert_rows(groups.keys().map(|k| parser.parse(k)))
            .map_err(AggregateProblem::DecodeKeys)?;
        let days = (date_of_key(date_key)
            - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default())
        .num_days();
        let mut fields = vec![Field::new(DATE_COLUMN, DataType::Date32, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Date32Array::from(vec![days as i32; n]))];
        fields.extend(self.key_fields.iter().cloned());
        columns.extend(keys);

        let component_arrays: Vec<ArrayRef> = (0..self.components.len())
            .map(|c| {
                component_array(
                    groups.values().map(|state| &state.0[c]),
                    &self.empty_state().0[c],
                )
            })
            .collect::<Result<_, _>>()?;
        let find = |component: &Component| {
            let i = self
                .components
                .iter()
                .position(|(c, _)| c == component)
                .expect("planned component");
            component_arrays[i].clone()
        };
        for (name, metric) in &self.metrics {
            let calls: Vec<ArrayRef> = metric
                .calls()
                .iter()
                .map(|call| call_values(call, &find))
                .collect::<Result<_, _>>()?;
            let values = metric
                .evaluate(&calls)
                .map_err(|source| AggregateProblem::Metric {
                    metric: name.clone(),
                    source,
                })?;
            fields.push(Field::new(name, values.data_type().clone(), true));
            columns.push(values);
        }
        let components = (&self.components[..], &component_arrays[..]);
        append_components(components, groups.values(), &mut fields, &mut columns);
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| AggregateProblem::Arrow(e).into())
    }
}

/// A component's accumulator before any value.
pub(super) fn empty_accumulator(component: &Component, kind: ValueKind) -> Accumulator {
    match (component, kind) {
        (Component::Rows | Component::NonNull(_), _) => Accumulator::Count(0),
        (Component::Sum(_), ValueKind::Float) => Accumulator::FloatSum(Box::default()),
        (Component::Sum(_), _) => Accumulator::IntSum(0),
        (Component::Min(_), ValueKind::Float) => Accumulator::FloatMin(None),
        (Component::Max(_), ValueKind::Float) => Accumulator::FloatMax(None),
        (Component::Min(_), _) => Accumulator::IntMin(None),
        (Component::Max(_), _) => Accumulator::IntMax(None),
    }
}

/// The column of a partial that holds a float sum component exactly (see
/// [`ExactSum::to_bytes`](crate::exact_sum::ExactSum::to_bytes)): `sum(x).exact`.
pub fn exact_name(component: &str) -> String {
    format!("{component}.exact")
}

/// Appends the component columns of a partial (or of merged partials) to `fields` and
/// `columns`: each component's `arrays` column, and after a float sum its exact values
/// (from `states`, the groups' states in row order), so that merging partials rounds
/// once.
pub(super) fn append_components<'a>(
    (components, arrays): (&[(Component, ValueKind)], &[ArrayRef]),
    states: impl Iterator<Item = &'a AggState> + Clone,
    fields: &mut Vec<Field>,
    columns: &mut Vec<ArrayRef>,
) {
    for (c, ((component, kind), array)) in components.iter().zip(arrays).enumerate() {
        let name = component.name();
        fields.push(Field::new(&name, array.data_type().clone(), true));
        columns.push(array.clone());
        if let (Component::Sum(_), ValueKind::Float) = (component, kind) {
            let exact = exact_sum_array(states.clone().map(|state| &state.0[c]));
            fields.push(Field::new(exact_name(&name), DataType::Binary, false));
            columns.push(exact);
        }
    }
}

/// A float sum component's exact values across groups.
pub(super) fn exact_sum_array<'a>(states: impl Iterator<Item = &'a Accumulator>) -> ArrayRef {
    let mut values = arrow::array::BinaryBuilder::new();
    for state in states {
        match state {
            Accumulator::FloatSum(sum) => values.append_value(sum.to_bytes()),
            _ => values.append_value(ExactSum::new().to_bytes()),
        }
    }
    Arc::new(values.finish())
}

/// One component's column across groups.
pub(super) fn component_array<'a>(
    states: impl Iterator<Item = &'a Accumulator>,
    template: &Accumulator,
) -> Result<ArrayRef, AggregateError> {
    let states: Vec<&Accumulator> = states.collect();
    Ok(match template {
        Accumulator::Count(_) => Arc::new(Int64Array::from_iter_values(states.iter().map(
            |s| match s {
                Accumulator::Count(c) => *c,
                _ => 0,
            },
        ))),
        Accumulator::IntSum(_) => {
            let mut values = Vec::with_capacity(states.len());
            for s in &states {
                let Accumulator::IntSum(v) = s else { continue };
                values.push(
                    i64::try_from(*v).map_err(|_| AggregateProblem::SumOverflow { sum: *v })?,
                );
            }
            Arc::new(Int64Array::from(values))
        }
        Accumulator::FloatSum(_) => Arc::new(Float64Array::from_iter_values(states.iter().map(
            |s| match s {
                Accumulator::FloatSum(v) => v.value(),
                _ => 0.0,
            },
        ))),
        Accumulator::IntMin(_) | Accumulator::IntMax(_) => {
            Arc::new(Int64Array::from_iter(states.iter().map(|s| match s {
                Accumulator::IntMin(v) | Accumulator::IntMax(v) => *v,
                _ => None,
            })))
        }
        Accumulator::FloatMin(_) | Accumulator::FloatMax(_) => {
            Arc::new(Float64Array::from_iter(states.iter().map(|s| match s {
                Accumulator::FloatMin(v) | Accumulator::FloatMax(v) => v.map(float_of_key),
                _ => None,
            })))
        }
    })
}

/// The components an aggregate call is computed from.
pub(super) fn components_of_call(call: &AggregateCall) -> Vec<Component> {
    let column = || call.column.clone().unwrap_or_default();
    match call.function {
        AggregateFunction::CountRows => vec![Component::Rows],
        AggregateFunction::Count => vec![Component::NonNull(column())],
        AggregateFunction::Sum => vec![Component::Sum(column())],
        AggregateFunction::Mean => vec![Component::Sum(column()), Component::NonNull(column())],
        AggregateFunction::Min => vec![Component::Min(column())],
        AggregateFunction::Max => vec![Component::Max(column())],
    }
}

/// The values of one aggregate call across groups, from the component columns.
pub(super) fn call_values(
    call: &AggregateCall,
    find: &dyn Fn(&Component) -> ArrayRef,
) -> Result<ArrayRef, AggregateError> {
    let column = || call.column.clone().unwrap_or_default();
    Ok(match call.function {
        AggregateFunction::CountRows => find(&Component::Rows),
        AggregateFunction::Count => find(&Component::NonNull(column())),
        AggregateFunction::Sum => find(&Component::Sum(column())),
        AggregateFunction::Min => find(&Component::Min(column())),
        AggregateFunction::Max => find(&Component::Max(column())),
        AggregateFunction::Mean => {
            let sum = arrow::compute::cast(&find(&Component::Sum(column())), &DataType::Float64)
                .map_err(AggregateProblem::Cast)?;
            let count = find(&Component::NonNull(column()));
            let (sum, count) = (
                sum.as_primitive::<Float64Type>(),
                count.as_primitive::<Int64Type>(),
            );
            Arc::new(Float64Array::from_iter(
                sum.values()
                    .iter()
                    .zip(count.values().iter())
                    .map(|(s, c)| (*c > 0).then(|| s / *c as f64)),
            ))
        }
    })
}
