//! `aggregate`: grouped multi-metric reductions into per-date partials.
//!
//! Implements SEMANTICS.md, *aggregate*. Rows are grouped by the `group_by` columns (a
//! null key is its own group) and every metric is arithmetic over aggregate calls:
//! `count()`, `count(x)`, `sum(x)`, `mean(x)`, `min(x)`, `max(x)`. Each call is computed
//! from **components** (row count, non-null count, sum, min, max per column) that
//! merge exactly, and a partial keeps them beside the metrics so that merging dates
//! equals aggregating the dates at once.
//!
//! Values that are null are skipped. Non-finite floats (NaN, ±inf) are treated as
//! missing too, and counted in the date's report as `aggregate.nonfinite.{col}`.
//! Float sums are exact ([`ExactSum`]): a partial is bit-identical whatever the number
//! of workers, batch sizes or input order.
//!
//! Dataflow: each worker pre-aggregates the batches of a timely time into one state per
//! group (a hash of the arrow row encoding of the key), and when the time is complete
//! sends one update per group into a differential collection whose *difference* is the
//! group's [`AggState`]. `consolidate` merges the updates of all workers; a final
//! operator gathers each date on its owner (see [`DateOwners`]) and builds its partial
//! when the date is complete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, Date32Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use differential_dataflow::AsCollection;
use differential_dataflow::difference::{IsZero, Monoid, Semigroup};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

use crate::batch::Batch;
use crate::exact_sum::ExactSum;
use crate::expr::{AggregateCall, AggregateFunction, MetricExpr};
use crate::report::Diagnostics;
use crate::stash::FrontierStash;
use crate::time::{DateOwners, Time, date_key_of, date_of_key, date_start};

/// The name of the date column of every partial.
pub const DATE_COLUMN: &str = "date";

/// What to aggregate: group-by columns and named metrics, in output order.
#[derive(Clone, Debug)]
pub struct AggregateSpec {
    /// The group-by columns.
    pub group_by: Vec<String>,
    /// `(output name, metric)` pairs.
    pub metrics: Vec<(String, MetricExpr)>,
}

/// How a column's values accumulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum ValueKind {
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
enum Component {
    Rows,
    NonNull(String),
    Sum(String),
    Min(String),
    Max(String),
}

impl Component {
    /// The component's column name in a partial, e.g. `sum(qty)`.
    fn name(&self) -> String {
        match self {
            Component::Rows => "count()".to_owned(),
            Component::NonNull(c) => format!("count({c})"),
            Component::Sum(c) => format!("sum({c})"),
            Component::Min(c) => format!("min({c})"),
            Component::Max(c) => format!("max({c})"),
        }
    }

    fn column(&self) -> Option<&str> {
        match self {
            Component::Rows => None,
            Component::NonNull(c) | Component::Sum(c) | Component::Min(c) | Component::Max(c) => {
                Some(c)
            }
        }
    }
}

/// The accumulated value of one component for one group: the difference type of the
/// differential collection, summed with [`Semigroup::plus_equals`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Accumulator {
    /// A count.
    Count(i64),
    /// An integer sum.
    IntSum(i128),
    /// An exact float sum (boxed: it is 544 bytes).
    FloatSum(Box<ExactSum>),
    /// An integer minimum.
    IntMin(Option<i64>),
    /// An integer maximum.
    IntMax(Option<i64>),
    /// A float minimum, as order-preserving bits (see [`float_key`]).
    FloatMin(Option<i64>),
    /// A float maximum, as order-preserving bits.
    FloatMax(Option<i64>),
}

/// Maps a finite float to an `i64` with the same order (and back with [`float_of_key`]).
pub fn float_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    if bits < 0 { bits ^ i64::MAX } else { bits }
}

/// The inverse of [`float_key`].
pub fn float_of_key(key: i64) -> f64 {
    f64::from_bits(if key < 0 { key ^ i64::MAX } else { key } as u64)
}

fn merge_option(a: &mut Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64) {
    *a = match (*a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, y) => x.or(y),
    };
}

impl Accumulator {
    fn plus_equals(&mut self, other: &Accumulator) {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => *a += b,
            (Accumulator::IntSum(a), Accumulator::IntSum(b)) => *a += b,
            (Accumulator::FloatSum(a), Accumulator::FloatSum(b)) => a.add_sum(b),
            (Accumulator::IntMin(a), Accumulator::IntMin(b))
            | (Accumulator::FloatMin(a), Accumulator::FloatMin(b)) => merge_option(a, *b, i64::min),
            (Accumulator::IntMax(a), Accumulator::IntMax(b))
            | (Accumulator::FloatMax(a), Accumulator::FloatMax(b)) => merge_option(a, *b, i64::max),
            (mine, theirs) => {
                unreachable!("accumulators of one plan line up: {mine:?} vs {theirs:?}")
            }
        }
    }

    fn is_zero(&self) -> bool {
        match self {
            Accumulator::Count(c) => *c == 0,
            Accumulator::IntSum(s) => *s == 0,
            Accumulator::FloatSum(s) => s.is_zero(),
            Accumulator::IntMin(m)
            | Accumulator::IntMax(m)
            | Accumulator::FloatMin(m)
            | Accumulator::FloatMax(m) => m.is_none(),
        }
    }
}

/// The state of one group: one accumulator per component of the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggState(pub Vec<Accumulator>);

impl IsZero for AggState {
    fn is_zero(&self) -> bool {
        self.0.iter().all(Accumulator::is_zero)
    }
}

impl Semigroup for AggState {
    fn plus_equals(&mut self, rhs: &Self) {
        if self.0.is_empty() {
            self.0 = rhs.0.clone();
        } else {
            for (mine, theirs) in self.0.iter_mut().zip(rhs.0.iter()) {
                mine.plus_equals(theirs);
            }
        }
    }
}

impl Monoid for AggState {
    fn zero() -> Self {
        AggState(Vec::new())
    }
}

/// An [`AggregateSpec`] bound to an input schema: types checked, components chosen,
/// output schema known.
#[derive(Clone, Debug)]
pub struct AggregatePlan {
    group_by: Vec<String>,
    key_fields: Vec<Field>,
    components: Vec<(Component, ValueKind)>,
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
    pub fn new(spec: &AggregateSpec, input: &Schema) -> Result<AggregatePlan, String> {
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
                format!(
                    "aggregate: unknown column '{name}' in {context}; {hint}available columns: {}",
                    available()
                )
            })
        };
        let mut key_fields = Vec::new();
        for name in &spec.group_by {
            let f = field(name, "group_by")?;
            let canonical = canonical_key_type(f.data_type()).ok_or_else(|| {
                format!("aggregate: cannot group by '{name}' of type {}; group by integers, floats, strings, booleans or dates", f.data_type())
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
                    return Err(format!(
                        "aggregate: {} needs a numeric or boolean column, but '{column}' has type {} (in {context})",
                        call.name(),
                        field(column, &context)?.data_type()
                    ));
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
            components,
            metrics: spec.metrics.clone(),
            output_schema: Arc::new(Schema::empty()),
        };
        // The output schema is whatever an empty partial has.
        let empty = plan.finalize(0, &BTreeMap::new())?;
        plan.output_schema = empty.schema();
        Ok(plan)
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

    fn converter(&self) -> RowConverter {
        let fields = self
            .key_fields
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        RowConverter::new(fields).expect("canonical key types are supported by the row format")
    }

    fn empty_state(&self) -> AggState {
        AggState(
            self.components
                .iter()
                .map(|(component, kind)| match (component, kind) {
                    (Component::Rows | Component::NonNull(_), _) => Accumulator::Count(0),
                    (Component::Sum(_), ValueKind::Float) => Accumulator::FloatSum(Box::default()),
                    (Component::Sum(_), _) => Accumulator::IntSum(0),
                    (Component::Min(_), ValueKind::Float) => Accumulator::FloatMin(None),
                    (Component::Max(_), ValueKind::Float) => Accumulator::FloatMax(None),
                    (Component::Min(_), _) => Accumulator::IntMin(None),
                    (Component::Max(_), _) => Accumulator::IntMax(None),
                })
                .collect(),
        )
    }

    /// Builds a date's partial from its groups (key bytes in the row format -> state).
    pub fn finalize(
        &self,
        date_key: u32,
        groups: &BTreeMap<Vec<u8>, AggState>,
    ) -> Result<RecordBatch, String> {
        let n = groups.len();
        let converter = self.converter();
        let parser = converter.parser();
        let keys = converter
            .convert_rows(groups.keys().map(|k| parser.parse(k)))
            .map_err(|e| format!("aggregate: cannot decode group keys: {e}"))?;
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
                .map_err(|e| format!("aggregate: metric '{name}': {e}"))?;
            fields.push(Field::new(name, values.data_type().clone(), true));
            columns.push(values);
        }
        for ((component, _), array) in self.components.iter().zip(component_arrays.iter()) {
            fields.push(Field::new(
                component.name(),
                array.data_type().clone(),
                true,
            ));
            columns.push(array.clone());
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| format!("aggregate: {e}"))
    }
}

/// One component's column across groups.
fn component_array<'a>(
    states: impl Iterator<Item = &'a Accumulator>,
    template: &Accumulator,
) -> Result<ArrayRef, String> {
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
                    i64::try_from(*v)
                        .map_err(|_| format!("aggregate: an integer sum ({v}) overflows i64"))?,
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

/// The values of one aggregate call across groups, from the component columns.
fn call_values(
    call: &AggregateCall,
    find: &dyn Fn(&Component) -> ArrayRef,
) -> Result<ArrayRef, String> {
    let column = || call.column.clone().unwrap_or_default();
    Ok(match call.function {
        AggregateFunction::CountRows => find(&Component::Rows),
        AggregateFunction::Count => find(&Component::NonNull(column())),
        AggregateFunction::Sum => find(&Component::Sum(column())),
        AggregateFunction::Min => find(&Component::Min(column())),
        AggregateFunction::Max => find(&Component::Max(column())),
        AggregateFunction::Mean => {
            let sum = arrow::compute::cast(&find(&Component::Sum(column())), &DataType::Float64)
                .map_err(|e| e.to_string())?;
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

/// A worker's pre-aggregation of one timely time.
#[derive(Default)]
struct Groups {
    /// Group ids by the arrow row encoding of the key (the general path).
    index: FxHashMap<Box<[u8]>, u32>,
    /// Group ids by [`ShortKey`] (the fast path for one or two key columns).
    short: FxHashMap<ShortKey, u32>,
    /// Codes of the strings of over 7 bytes seen in string key columns (the fast path).
    strings: FxHashMap<Box<[u8]>, u64>,
    keys: Vec<Box<[u8]>>,
    states: Vec<AggState>,
}

impl Groups {
    fn add(&mut self, key: &[u8], plan: &AggregatePlan) -> u32 {
        let id = self.keys.len() as u32;
        self.keys.push(key.into());
        self.states.push(plan.empty_state());
        id
    }
}

/// A key of one or two columns as a 64-bit code per column (the value of an integer,
/// date or boolean, the bits of a float, a string's code from `key_codes`) and a mask of
/// the null columns: hashing it is much cheaper than encoding and hashing arrow rows.
type ShortKey = (u64, u64, u8);

/// Per-row codes of a key column for [`ShortKey`]s, or `None` for a type without codes.
fn key_codes(column: &ArrayRef, strings: &mut FxHashMap<Box<[u8]>, u64>) -> Option<Vec<u64>> {
    Some(match column.data_type() {
        DataType::Int64 => {
            let values = column.as_primitive::<Int64Type>().values();
            values.iter().map(|v| *v as u64).collect()
        }
        DataType::Float64 => {
            let values = column.as_primitive::<Float64Type>().values();
            values.iter().map(|v| v.to_bits()).collect()
        }
        DataType::Date32 => {
            let values = column
                .as_primitive::<arrow::datatypes::Date32Type>()
                .values();
            values.iter().map(|v| *v as u64).collect()
        }
        DataType::Boolean => {
            let values = column.as_boolean().values();
            values.iter().map(u64::from).collect()
        }
        DataType::Utf8 => {
            // A string of at most 7 bytes is its own code: its bytes, and its length in
            // the top byte. Longer ones are interned, coded with the top bit set.
            let values = column.as_string::<i32>();
            let (offsets, bytes) = (values.value_offsets(), values.value_data());
            offsets
                .windows(2)
                .map(|w| {
                    // A null's slot (usually empty) gets a code too; the null mask decides.
                    let value = &bytes[w[0] as usize..w[1] as usize];
                    if value.len() <= 7 {
                        let packed = value
                            .iter()
                            .rev()
                            .fold(0u64, |p, b| (p << 8) | u64::from(*b));
                        return packed | ((value.len() as u64) << 56);
                    }
                    match strings.get(value) {
                        Some(code) => *code,
                        None => {
                            let code = (1 << 63) | strings.len() as u64;
                            strings.insert(value.into(), code);
                            code
                        }
                    }
                })
                .collect()
        }
        _ => return None,
    })
}

/// Per-row group ids of a batch, adding new groups to `groups`.
fn group_ids(
    plan: &AggregatePlan,
    converter: &RowConverter,
    batch: &RecordBatch,
    groups: &mut Groups,
) -> Result<Vec<u32>, String> {
    let mut keys = Vec::with_capacity(plan.key_fields.len());
    for field in &plan.key_fields {
        let column = batch
            .column_by_name(field.name())
            .ok_or_else(|| format!("aggregate: group_by column '{}' is missing", field.name()))?;
        keys.push(
            arrow::compute::cast(column, field.data_type())
                .map_err(|e| format!("aggregate: group_by '{}': {e}", field.name()))?,
        );
    }
    if (1..=2).contains(&keys.len())
        && let Some(ids) = short_group_ids(plan, converter, &keys, groups)?
    {
        return Ok(ids);
    }
    let rows = converter
        .convert_columns(&keys)
        .map_err(|e| format!("aggregate: {e}"))?;
    let mut ids = Vec::with_capacity(batch.num_rows());
    for row in rows.iter() {
        let bytes = row.data();
        let id = match groups.index.get(bytes) {
            Some(id) => *id,
            None => {
                let id = groups.add(bytes, plan);
                groups.index.insert(bytes.into(), id);
                id
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// [`group_ids`] for one or two key columns with codes; `None` for other key types.
/// A new group's row encoding is computed from its first row alone.
fn short_group_ids(
    plan: &AggregatePlan,
    converter: &RowConverter,
    keys: &[ArrayRef],
    groups: &mut Groups,
) -> Result<Option<Vec<u32>>, String> {
    let mut codes = Vec::with_capacity(2);
    for column in keys {
        match key_codes(column, &mut groups.strings) {
            Some(column_codes) => codes.push((column_codes, column.logical_nulls())),
            None => return Ok(None),
        }
    }
    let rows = keys[0].len();
    let code = |c: usize, row: usize| -> (u64, u8) {
        match codes.get(c) {
            None => (0, 0),
            Some((_, Some(nulls))) if nulls.is_null(row) => (0, 1 << c),
            Some((values, _)) => (values[row], 0),
        }
    };
    let mut ids = Vec::with_capacity(rows);
    // Recent keys, direct-mapped in front of the hash map: a date has few groups (tens
    // to thousands), so most rows find theirs here. Null flags never reach 0xff, so
    // the empty slots match no key.
    const SLOTS: usize = 256;
    let mut recent = [((u64::MAX, u64::MAX, u8::MAX), 0u32); SLOTS];
    for row in 0..rows {
        let ((a, null_a), (b, null_b)) = (code(0, row), code(1, row));
        let key = (a, b, null_a | null_b);
        let slot = ((a ^ b.rotate_left(29) ^ u64::from(key.2)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - SLOTS.trailing_zeros())) as usize;
        if recent[slot].0 == key {
            ids.push(recent[slot].1);
            continue;
        }
        let id = match groups.short.get(&key) {
            Some(id) => *id,
            None => {
                let first: Vec<ArrayRef> = keys.iter().map(|k| k.slice(row, 1)).collect();
                let encoded = converter
                    .convert_columns(&first)
                    .map_err(|e| format!("aggregate: {e}"))?;
                let id = groups.add(encoded.row(0).data(), plan);
                groups.short.insert(key, id);
                id
            }
        };
        recent[slot] = (key, id);
        ids.push(id);
    }
    Ok(Some(ids))
}

/// Moves component `c` of every group out into a plain vector (`unwrap` says which
/// variant it is), so that the per-row loops index typed values rather than match an
/// enum behind two pointers; [`put_component`] puts them back.
fn take_component<T>(
    states: &mut [AggState],
    c: usize,
    unwrap: impl Fn(Accumulator) -> T,
) -> Vec<T> {
    states
        .iter_mut()
        .map(|state| unwrap(std::mem::replace(&mut state.0[c], Accumulator::Count(0))))
        .collect()
}

fn put_component<T>(
    states: &mut [AggState],
    c: usize,
    values: Vec<T>,
    wrap: impl Fn(T) -> Accumulator,
) {
    for (state, value) in states.iter_mut().zip(values) {
        state.0[c] = wrap(value);
    }
}

fn counts(accumulator: Accumulator) -> i64 {
    match accumulator {
        Accumulator::Count(n) => n,
        other => unreachable!("a count component holds a count: {other:?}"),
    }
}

/// Counts `rows` (group ids) into count component `c`.
fn fold_counts(states: &mut [AggState], c: usize, rows: impl Iterator<Item = usize>) {
    let mut n = take_component(states, c, counts);
    rows.for_each(|id| n[id] += 1);
    put_component(states, c, n, Accumulator::Count);
}

/// Folds a batch into the groups of its time. Returns the non-finite counts per column.
///
/// Each column is read in one pass that updates all its components (a `mean(x)` is a
/// sum and a non-null count of `x`); each component's per-group values are taken out of
/// the states into a plain vector for the pass.
fn accumulate(
    plan: &AggregatePlan,
    converter: &RowConverter,
    batch: &RecordBatch,
    groups: &mut Groups,
) -> Result<Vec<(String, u64)>, String> {
    let ids = group_ids(plan, converter, batch, groups)?;
    let states = &mut groups.states;
    let mut nonfinite = Vec::new();
    let mut done = vec![false; plan.components.len()];
    for (c, (component, kind)) in plan.components.iter().enumerate() {
        if done[c] {
            continue;
        }
        let Some(name) = component.column() else {
            fold_counts(states, c, ids.iter().map(|id| *id as usize));
            continue;
        };
        // Every component of this column (they share its kind).
        let on_column: Vec<usize> = (c..plan.components.len())
            .filter(|k| plan.components[*k].0.column() == Some(name))
            .collect();
        for k in &on_column {
            done[*k] = true;
        }
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| format!("aggregate: column '{name}' is missing"))?;
        let nulls = column.logical_nulls().filter(|n| n.null_count() > 0);
        match kind {
            ValueKind::Float => {
                let floats =
                    arrow::compute::cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
                let values = floats.as_primitive::<Float64Type>().values();
                let mut folds = Folds::take(states, plan, &on_column);
                // Nulls are skipped; non-finite values too, and counted.
                let mut skipped = 0u64;
                for (row, (id, x)) in ids.iter().zip(values.iter()).enumerate() {
                    if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                        continue;
                    }
                    if !x.is_finite() {
                        skipped += 1;
                        continue;
                    }
                    folds.add(*id as usize, float_key(*x), || *x);
                }
                folds.put(states);
                nonfinite.push((name.to_owned(), skipped));
            }
            ValueKind::Int => {
                let column = if let Some(bools) = column.as_boolean_opt() {
                    let ints = bools.values().iter().map(i64::from).collect();
                    Arc::new(Int64Array::new(ints, bools.nulls().cloned())) as ArrayRef
                } else {
                    arrow::compute::cast(column, &DataType::Int64).map_err(|e| e.to_string())?
                };
                let values = column.as_primitive::<Int64Type>().values();
                let mut folds = Folds::take(states, plan, &on_column);
                for (row, (id, x)) in ids.iter().zip(values.iter()).enumerate() {
                    if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                        continue;
                    }
                    folds.add(*id as usize, *x, || 0.0);
                }
                folds.put(states);
            }
            // Only count(x) reads a column of another type (the plan checks).
            ValueKind::Other => {
                for k in on_column {
                    if matches!(plan.components[k].0, Component::NonNull(_)) {
                        let rows = ids.iter().enumerate();
                        let rows =
                            rows.filter(|(row, _)| nulls.as_ref().is_none_or(|n| n.is_valid(*row)));
                        fold_counts(states, k, rows.map(|(_, id)| *id as usize));
                    }
                }
            }
        }
    }
    Ok(nonfinite)
}

/// The components of one column, taken out of the group states for a pass over a
/// batch: at most one of each kind (the plan has no duplicate components).
struct Folds {
    /// `count(x)`: component index and per-group counts.
    non_null: Option<(usize, Vec<i64>)>,
    /// An exact float sum (the boxes the accumulators hold, moved, not copied).
    #[allow(clippy::vec_box)]
    float_sum: Option<(usize, Vec<Box<ExactSum>>)>,
    /// An integer sum.
    int_sum: Option<(usize, Vec<i128>)>,
    /// Minimum and maximum: component index, the accumulator's constructor, and the
    /// per-group values (integers, or floats as [`float_key`]s).
    min: Option<Extremes>,
    max: Option<Extremes>,
}

/// A min or max component: its index, its accumulator's constructor, and per group the
/// integer or [`float_key`].
type Extremes = (usize, fn(Option<i64>) -> Accumulator, Vec<Option<i64>>);

impl Folds {
    fn take(states: &mut [AggState], plan: &AggregatePlan, components: &[usize]) -> Self {
        let mut folds = Folds {
            non_null: None,
            float_sum: None,
            int_sum: None,
            min: None,
            max: None,
        };
        let extreme = |a: Accumulator| match a {
            Accumulator::IntMin(m)
            | Accumulator::IntMax(m)
            | Accumulator::FloatMin(m)
            | Accumulator::FloatMax(m) => m,
            other => unreachable!("a min or max: {other:?}"),
        };
        for &c in components {
            let (component, kind) = &plan.components[c];
            let float = matches!(kind, ValueKind::Float);
            match component {
                Component::NonNull(_) => {
                    folds.non_null = Some((c, take_component(states, c, counts)))
                }
                Component::Sum(_) if float => {
                    let sums = take_component(states, c, |a| match a {
                        Accumulator::FloatSum(sum) => sum,
                        other => unreachable!("a float sum: {other:?}"),
                    });
                    folds.float_sum = Some((c, sums));
                }
                Component::Sum(_) => {
                    let sums = take_component(states, c, |a| match a {
                        Accumulator::IntSum(sum) => sum,
                        other => unreachable!("an integer sum: {other:?}"),
                    });
                    folds.int_sum = Some((c, sums));
                }
                Component::Min(_) | Component::Max(_) => {
                    let min = matches!(component, Component::Min(_));
                    let wrap: fn(Option<i64>) -> Accumulator = match (min, float) {
                        (true, true) => Accumulator::FloatMin,
                        (true, false) => Accumulator::IntMin,
                        (false, true) => Accumulator::FloatMax,
                        (false, false) => Accumulator::IntMax,
                    };
                    let slot = if min { &mut folds.min } else { &mut folds.max };
                    *slot = Some((c, wrap, take_component(states, c, extreme)));
                }
                Component::Rows => unreachable!("count() reads no column"),
            }
        }
        folds
    }

    /// Adds a value to group `id`: `key` is the integer or the float's [`float_key`],
    /// `float` the float (called only for a float sum).
    #[inline(always)]
    fn add(&mut self, id: usize, key: i64, float: impl Fn() -> f64) {
        if let Some((_, counts)) = &mut self.non_null {
            counts[id] += 1;
        }
        if let Some((_, sums)) = &mut self.float_sum {
            sums[id].add(float());
        }
        if let Some((_, sums)) = &mut self.int_sum {
            sums[id] += i128::from(key);
        }
        if let Some((_, _, mins)) = &mut self.min {
            merge_option(&mut mins[id], Some(key), i64::min);
        }
        if let Some((_, _, maxs)) = &mut self.max {
            merge_option(&mut maxs[id], Some(key), i64::max);
        }
    }

    fn put(self, states: &mut [AggState]) {
        if let Some((c, counts)) = self.non_null {
            put_component(states, c, counts, Accumulator::Count);
        }
        if let Some((c, sums)) = self.float_sum {
            put_component(states, c, sums, Accumulator::FloatSum);
        }
        if let Some((c, sums)) = self.int_sum {
            put_component(states, c, sums, Accumulator::IntSum);
        }
        for (c, wrap, values) in [self.min, self.max].into_iter().flatten() {
            put_component(states, c, values, wrap);
        }
    }
}

/// An update of the differential collection: `((date key, group key bytes), time, state)`.
pub type GroupUpdate = ((u32, Vec<u8>), Time, AggState);

/// The `aggregate` operator.
pub trait Aggregate<'scope> {
    /// Aggregates each date into a partial (one batch per date, see [`AggregatePlan::finalize`]),
    /// emitted once the date is complete. Dates without rows emit nothing.
    /// Each date's partial is built on the date's owner (see [`DateOwners`]).
    fn aggregate(
        self,
        plan: AggregatePlan,
        diagnostics: Diagnostics,
        owners: DateOwners,
    ) -> Stream<'scope, Time, Batch>;
}

impl<'scope> Aggregate<'scope> for Stream<'scope, Time, Batch> {
    fn aggregate(
        self,
        plan: AggregatePlan,
        diagnostics: Diagnostics,
        owners: DateOwners,
    ) -> Stream<'scope, Time, Batch> {
        let plan = Arc::new(plan);
        let pre_plan = plan.clone();
        let pre_diagnostics = diagnostics.clone();
        let updates = self.unary_frontier::<CapacityContainerBuilder<Vec<GroupUpdate>>, _, _, _>(
            Pipeline,
            "PreAggregate",
            move |_cap, _info| {
                let plan = pre_plan;
                let diagnostics = pre_diagnostics;
                let converter = plan.converter();
                let mut pending: FrontierStash<Time, Groups> = FrontierStash::per_time();
                move |(input, frontier), output| {
                    input.for_each_time(|time, data| {
                        let groups = pending.stash(*time.time(), *time.time(), &time);
                        let date_key = date_key_of(*time.time());
                        for batch in data {
                            let Some(rows) = batch.take() else { continue };
                            diagnostics.add(date_key, "aggregate.rows_in", rows.num_rows() as u64);
                            let started = Instant::now();
                            let accumulated = accumulate(&plan, &converter, &rows, groups);
                            diagnostics.time(date_key, "Aggregate", started);
                            match accumulated {
                                Ok(nonfinite) => {
                                    for (column, count) in nonfinite {
                                        diagnostics.add(
                                            date_key,
                                            &format!("aggregate.nonfinite.{column}"),
                                            count,
                                        );
                                    }
                                }
                                Err(message) => diagnostics.error(date_key, message),
                            }
                        }
                    });
                    for (time, capability, groups) in pending.ready(frontier) {
                        let date_key = date_key_of(time);
                        let mut session = output.session(&capability);
                        for (key, state) in groups.keys.into_iter().zip(groups.states) {
                            session.give(((date_key, key.into_vec()), time, state));
                        }
                    }
                }
            },
        );
        updates
            .as_collection()
            .consolidate()
            .inner
            .unary_frontier::<CapacityContainerBuilder<Batch>, _, _, _>(
                Exchange::new(move |((date_key, _), _, _): &GroupUpdate| {
                    owners.worker_of(*date_key) as u64
                }),
                "Partial",
                move |_cap, _info| {
                    let mut dates: FrontierStash<u32, BTreeMap<Vec<u8>, AggState>> =
                        FrontierStash::per_date();
                    move |(input, frontier), output| {
                        input.for_each_time(|time, data| {
                            for updates in data {
                                for ((date_key, key), _time, state) in updates.drain(..) {
                                    // Differential may deliver several dates' updates in one
                                    // message at the earliest date's time: hold a capability
                                    // at (or after) the start of the update's own date, so
                                    // each partial is emitted at a time of its date.
                                    let start = (*time.time()).max(date_start(date_key));
                                    dates
                                        .stash(date_key, start, &time)
                                        .entry(key)
                                        .or_insert_with(AggState::zero)
                                        .plus_equals(&state);
                                }
                            }
                        });
                        for (date_key, capability, groups) in dates.ready(frontier) {
                            let started = Instant::now();
                            let partial = plan.finalize(date_key, &groups);
                            diagnostics.time(date_key, "Aggregate", started);
                            match partial {
                                Ok(partial) => output
                                    .session(&capability)
                                    .give_container(&mut Batch::new(partial)),
                                Err(message) => diagnostics.error(date_key, message),
                            }
                        }
                    }
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringArray};
    use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};

    /// Aggregates `batch` in two halves with `group_by` and returns the sorted partial
    /// without its `date` column.
    fn partial(batch: &RecordBatch, group_by: &[&str]) -> RecordBatch {
        let spec = AggregateSpec {
            group_by: group_by.iter().map(|c| c.to_string()).collect(),
            metrics: ["count()", "sum(x)", "min(x)", "max(n)"]
                .into_iter()
                .enumerate()
                .map(|(i, m)| (format!("m{i}"), MetricExpr::parse(m).unwrap()))
                .collect(),
        };
        let plan = AggregatePlan::new(&spec, &batch.schema()).unwrap();
        let converter = plan.converter();
        let mut groups = Groups::default();
        let half = batch.num_rows() / 2;
        for part in [
            batch.slice(0, half),
            batch.slice(half, batch.num_rows() - half),
        ] {
            accumulate(&plan, &converter, &part, &mut groups).unwrap();
        }
        let states: BTreeMap<Vec<u8>, AggState> = groups
            .keys
            .into_iter()
            .map(|k| k.into_vec())
            .zip(groups.states)
            .collect();
        let out = plan.finalize(20240102, &states).unwrap();
        let sort: Vec<SortColumn> = ["k1", "k2"]
            .iter()
            .map(|c| SortColumn {
                values: out.column_by_name(c).unwrap().clone(),
                options: None,
            })
            .collect();
        let sorted = take_record_batch(&out, &lexsort_to_indices(&sort, None).unwrap()).unwrap();
        let keep: Vec<usize> = (0..sorted.num_columns())
            .filter(|i| !matches!(sorted.schema().field(*i).name().as_str(), "date" | "k3"))
            .collect();
        sorted.project(&keep).unwrap()
    }

    /// The fast path of `group_ids` (one or two key columns with codes) finds the same
    /// groups as the general path (arrow rows), nulls and repeated strings included.
    #[test]
    fn short_keys_group_like_arrow_rows() {
        let n = 1000;
        let k1: Int64Array = (0..n).map(|i| (i % 7 != 0).then_some(i % 5)).collect();
        let k2: StringArray = (0..n)
            .map(|i| (i % 11 != 0).then(|| ["B", "S", "other"][i as usize % 3]))
            .collect();
        let k3 = Int64Array::from(vec![1; n as usize]);
        let x: Float64Array = (0..n).map(|i| Some(i as f64 * 0.5 - 100.0)).collect();
        let count = Int64Array::from_iter_values(0..n);
        let batch = RecordBatch::try_from_iter([
            ("k1", Arc::new(k1) as ArrayRef),
            ("k2", Arc::new(k2)),
            ("k3", Arc::new(k3)),
            ("x", Arc::new(x)),
            ("n", Arc::new(count)),
        ])
        .unwrap();
        let short = partial(&batch, &["k1", "k2"]);
        // A third, constant key column takes the general path to the same groups.
        let general = partial(&batch, &["k1", "k2", "k3"]);
        assert_eq!(short.num_rows(), 6 * 4);
        assert_eq!(short, general);
    }
}
