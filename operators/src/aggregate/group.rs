//! Group ids: the rows of a batch mapped to the groups of their time, by the arrow row
//! encoding of the key, or by [`ShortKey`] codes for one or two key columns.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::row::RowConverter;
use rustc_hash::FxHashMap;

use super::error::{AggregateError, AggregateProblem};
use super::plan::AggregatePlan;
use super::state::AggState;

/// A worker's pre-aggregation of one timely time.
#[derive(Default)]
pub(super) struct Groups {
    /// Group ids by the arrow row encoding of the key (the general path).
    index: FxHashMap<Box<[u8]>, u32>,
    /// Group ids by [`ShortKey`] (the fast path for one or two key columns).
    short: FxHashMap<ShortKey, u32>,
    /// Codes of the strings of over 7 bytes seen in string key columns (the fast path).
    strings: FxHashMap<Box<[u8]>, u64>,
    pub(super) keys: Vec<Box<[u8]>>,
    pub(super) states: Vec<AggState>,
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
pub(super) fn group_ids(
    plan: &AggregatePlan,
    converter: &RowConverter,
    batch: &RecordBatch,
    groups: &mut Groups,
) -> Result<Vec<u32>, AggregateError> {
    let mut keys = Vec::with_capacity(plan.key_fields.len());
    for field in &plan.key_fields {
        let column = batch.column_by_name(field.name()).ok_or_else(|| {
            AggregateProblem::MissingGroupColumn {
                column: field.name().clone(),
            }
        })?;
        keys.push(
            arrow::compute::cast(column, field.data_type()).map_err(|source| {
                AggregateProblem::GroupCast {
                    column: field.name().clone(),
                    source,
                }
            })?,
        );
    }
    if (1..=2).contains(&keys.len())
        && let Some(ids) = short_group_ids(plan, converter, &keys, groups)?
    {
        return Ok(ids);
    }
    let rows = converter
        .convert_columns(&keys)
        .map_err(AggregateProblem::Arrow)?;
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
) -> Result<Option<Vec<u32>>, AggregateError> {
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
                    .map_err(AggregateProblem::Arrow)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::accumulate::accumulate;
    use crate::aggregate::{AggregateSpec, MetricExpr};
    use crate::batch::Parts;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
    use std::collections::BTreeMap;
    use std::sync::Arc;

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
            accumulate(&plan, &converter, &part, &mut groups, Parts::ALL, false).unwrap();
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
