//! Folding a batch into its groups' states: one pass per column, updating all the
//! components of that column.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use arrow::row::RowConverter;

use super::error::{AggregateError, AggregateProblem};
use super::group::{Groups, group_ids};
use super::plan::{AggregatePlan, Component, ValueKind};
use super::state::{Accumulator, AggState, float_key, merge_option};
use crate::batch::Parts;
use crate::exact_sum::ExactSum;

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

/// Counts `rows` (group ids) into count component `c`, each as `step` (1, or -1 to
/// withdraw them).
fn fold_counts(states: &mut [AggState], c: usize, step: i64, rows: impl Iterator<Item = usize>) {
    let mut n = take_component(states, c, counts);
    rows.for_each(|id| n[id] += step);
    put_component(states, c, n, Accumulator::Count);
}

/// Folds a batch into the groups of its time, into the components of `parts` (the
/// others are left as they are), or takes it out of them when `withdraw` (rows folded
/// in before: counts and sums only, see [`AggregatePlan::withdrawable`]). Returns the
/// non-finite counts per column.
///
/// Each column is read in one pass that updates all its components (a `mean(x)` is a
/// sum and a non-null count of `x`); each component's per-group values are taken out of
/// the states into a plain vector for the pass.
pub(super) fn accumulate(
    plan: &AggregatePlan,
    converter: &RowConverter,
    batch: &RecordBatch,
    groups: &mut Groups,
    parts: Parts,
    withdraw: bool,
) -> Result<Vec<(String, u64)>, AggregateError> {
    let ids = group_ids(plan, converter, batch, groups)?;
    fold(plan, batch, &ids, &mut groups.states, parts, withdraw)
}

/// [`accumulate`] of rows whose groups are known: `ids`, indices into `states`.
pub(super) fn fold(
    plan: &AggregatePlan,
    batch: &RecordBatch,
    ids: &[u32],
    states: &mut [AggState],
    parts: Parts,
    withdraw: bool,
) -> Result<Vec<(String, u64)>, AggregateError> {
    let step = if withdraw { -1 } else { 1 };
    let mut nonfinite = Vec::new();
    // The components of a column share its part.
    let mut done: Vec<bool> = plan.parts.iter().map(|p| !p.meets(parts)).collect();
    for (c, (component, kind)) in plan.components.iter().enumerate() {
        if done[c] {
            continue;
        }
        let Some(name) = component.column() else {
            fold_counts(states, c, step, ids.iter().map(|id| *id as usize));
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
            .ok_or_else(|| AggregateProblem::MissingColumn {
                column: name.to_owned(),
            })?;
        let nulls = column.logical_nulls().filter(|n| n.null_count() > 0);
        match kind {
            ValueKind::Float => {
                let floats = arrow::compute::cast(column, &DataType::Float64)
                    .map_err(AggregateProblem::Cast)?;
                let values = floats.as_primitive::<Float64Type>().values();
                let mut folds = Folds::take(states, plan, &on_column, step);
                // Nulls are skipped; non-finite values too, and counted.
                let skipped = folds.fold_floats(ids, nulls.as_ref(), values);
                folds.put(states);
                nonfinite.push((name.to_owned(), skipped));
            }
            ValueKind::Int => {
                let column = if let Some(bools) = column.as_boolean_opt() {
                    let ints = bools.values().iter().map(i64::from).collect();
                    Arc::new(Int64Array::new(ints, bools.nulls().cloned())) as ArrayRef
                } else {
                    arrow::compute::cast(column, &DataType::Int64)
                        .map_err(AggregateProblem::Cast)?
                };
                let values = column.as_primitive::<Int64Type>().values();
                let mut folds = Folds::take(states, plan, &on_column, step);
                folds.fold_ints(ids, nulls.as_ref(), values);
                folds.put(states);
            }
            // Only count(x) reads a column of another type (the plan checks).
            ValueKind::Other => {
                for k in on_column {
                    if matches!(plan.components[k].0, Component::NonNull(_)) {
                        let rows = ids.iter().enumerate();
                        let rows =
                            rows.filter(|(row, _)| nulls.as_ref().is_none_or(|n| n.is_valid(*row)));
                        fold_counts(states, k, step, rows.map(|(_, id)| *id as usize));
                    }
                }
            }
        }
    }
    Ok(nonfinite)
}

/// Calls `f` with each row whose value is not null (by `nulls`) and its group id. Over
/// the valid rows' bits rather than testing each row: nulls scattered among the rows
/// (an open entry's revised values, in place) would make that test a branch the
/// processor mostly mispredicts.
#[inline(always)]
fn for_valid(ids: &[u32], nulls: Option<&NullBuffer>, mut f: impl FnMut(usize, u32)) {
    match nulls {
        None => ids.iter().enumerate().for_each(|(row, id)| f(row, *id)),
        Some(nulls) => nulls.valid_indices().for_each(|row| f(row, ids[row])),
    }
}

/// Calls `add` with each row's group id and value that is valid (by `nulls`) and
/// finite; returns how many valid values were not finite.
#[inline(always)]
fn for_finite(
    ids: &[u32],
    nulls: Option<&NullBuffer>,
    values: &[f64],
    mut add: impl FnMut(usize, f64),
) -> u64 {
    let mut skipped = 0u64;
    for_valid(
        ids,
        nulls,
        #[inline(always)]
        |row, id| {
            let x = values[row];
            match x.is_finite() {
                true => add(id as usize, x),
                false => skipped += 1,
            }
        },
    );
    skipped
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
    /// 1, or -1 when the values are withdrawn.
    step: i64,
}

/// A min or max component: its index, its accumulator's constructor, and per group the
/// integer or [`float_key`].
type Extremes = (usize, fn(Option<i64>) -> Accumulator, Vec<Option<i64>>);

impl Folds {
    fn take(
        states: &mut [AggState],
        plan: &AggregatePlan,
        components: &[usize],
        step: i64,
    ) -> Self {
        let mut folds = Folds {
            non_null: None,
            float_sum: None,
            int_sum: None,
            min: None,
            max: None,
            step,
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
                    debug_assert!(step > 0, "a min or max cannot be withdrawn");
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

    /// Whether only counts and sums are taken (no minimum or maximum): the common
    /// shapes, which [`Folds::fold_floats`] and [`Folds::fold_ints`] fold in loops of
    /// their own, without testing for the other components at each row.
    fn sums_only(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }

    /// Folds the valid values of a float column (`values`, rows' groups `ids`); returns
    /// how many were not finite (skipped).
    fn fold_floats(&mut self, ids: &[u32], nulls: Option<&NullBuffer>, values: &[f64]) -> u64 {
        let (step, signed) = (self.step, self.step as f64);
        if self.sums_only() && self.int_sum.is_none() {
            match (&mut self.non_null, &mut self.float_sum) {
                // `mean(x)`, with or without `sum(x)`.
                (Some((_, counts)), Some((_, sums))) => {
                    return for_finite(
                        ids,
                        nulls,
                        values,
                        #[inline(always)]
                        |id, x| {
                            counts[id] += step;
                            sums[id].add(signed * x);
                        },
                    );
                }
                // `sum(x)`.
                (None, Some((_, sums))) => {
                    return for_finite(
                        ids,
                        nulls,
                        values,
                        #[inline(always)]
                        |id, x| sums[id].add(signed * x),
                    );
                }
                _ => {}
            }
        }
        for_finite(
            ids,
            nulls,
            values,
            #[inline(always)]
            |id, x| self.add(id, float_key(x), || x),
        )
    }

    /// Folds the valid values of an integer column (`values`, rows' groups `ids`).
    fn fold_ints(&mut self, ids: &[u32], nulls: Option<&NullBuffer>, values: &[i64]) {
        let step = i128::from(self.step);
        if self.sums_only() && self.float_sum.is_none() {
            match (&mut self.non_null, &mut self.int_sum) {
                // `mean(x)`, with or without `sum(x)`.
                (Some((_, counts)), Some((_, sums))) => {
                    let count = self.step;
                    for_valid(
                        ids,
                        nulls,
                        #[inline(always)]
                        |row, id| {
                            counts[id as usize] += count;
                            sums[id as usize] += step * i128::from(values[row]);
                        },
                    );
                    return;
                }
                // `sum(x)`.
                (None, Some((_, sums))) => {
                    for_valid(
                        ids,
                        nulls,
                        #[inline(always)]
                        |row, id| {
                            sums[id as usize] += step * i128::from(values[row]);
                        },
                    );
                    return;
                }
                _ => {}
            }
        }
        for_valid(
            ids,
            nulls,
            #[inline(always)]
            |row, id| self.add(id as usize, values[row], || 0.0),
        );
    }

    /// Adds a value to group `id`: `key` is the integer or the float's [`float_key`],
    /// `float` the float (called only for a float sum).
    #[inline(always)]
    fn add(&mut self, id: usize, key: i64, float: impl Fn() -> f64) {
        if let Some((_, counts)) = &mut self.non_null {
            counts[id] += self.step;
        }
        if let Some((_, sums)) = &mut self.float_sum {
            // Negating a float is exact.
            sums[id].add(self.step as f64 * float());
        }
        if let Some((_, sums)) = &mut self.int_sum {
            sums[id] += i128::from(self.step) * i128::from(key);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};
    use proptest::prelude::*;

    use super::*;
    use crate::aggregate::{AggregateSpec, MetricExpr};

    /// The partial of `batches` folded in, then `withdrawn` taken out.
    fn partial(batches: &[RecordBatch], withdrawn: &[RecordBatch]) -> RecordBatch {
        let metrics = [
            "count()", "count(x)", "sum(x)", "mean(x)", "sum(i)", "mean(i)",
        ];
        partial_of(&metrics, batches, withdrawn)
    }

    /// [`partial`] of `metrics` (named `m0`, `m1`, ...).
    fn partial_of(
        metrics: &[&str],
        batches: &[RecordBatch],
        withdrawn: &[RecordBatch],
    ) -> RecordBatch {
        let spec = AggregateSpec {
            group_by: vec!["k".into()],
            metrics: (metrics.iter().copied())
                .enumerate()
                .map(|(i, m)| (format!("m{i}"), MetricExpr::parse(m).unwrap()))
                .collect(),
        };
        let plan = AggregatePlan::new(&spec, &batches[0].schema()).unwrap();
        assert!(withdrawn.is_empty() || plan.withdrawable(Parts::ALL));
        let converter = plan.converter();
        let mut groups = Groups::default();
        for batch in batches {
            accumulate(&plan, &converter, batch, &mut groups, Parts::ALL, false).unwrap();
        }
        for batch in withdrawn {
            accumulate(&plan, &converter, batch, &mut groups, Parts::ALL, true).unwrap();
        }
        // Groups whose rows were all withdrawn count nothing: left out, as if never seen.
        let states: BTreeMap<Vec<u8>, AggState> = (groups.keys.into_iter())
            .map(|k| k.into_vec())
            .zip(groups.states)
            .filter(|(_, state)| !matches!(state.0[0], Accumulator::Count(0)))
            .collect();
        plan.finalize(20240102, &states).unwrap()
    }

    fn batch(rows: &[(u8, Option<f64>, i64)]) -> RecordBatch {
        let k: StringArray = rows
            .iter()
            .map(|r| Some(["a", "b", "c"][r.0 as usize % 3]))
            .collect();
        let x: Float64Array = rows.iter().map(|r| r.1).collect();
        let i = Int64Array::from_iter_values(rows.iter().map(|r| r.2));
        RecordBatch::try_from_iter([
            ("k", Arc::new(k) as ArrayRef),
            ("x", Arc::new(x)),
            ("i", Arc::new(i)),
        ])
        .unwrap()
    }

    proptest! {
        /// The loops of the common shapes (`sum(x)` alone, `mean(x)`, of floats and of
        /// integers) give, bit for bit, what the loop that takes every component gives
        /// (a `min` or `max` beside them sends them there).
        #[test]
        fn the_common_shapes_fold_as_the_loop_of_every_component(
            rows in proptest::collection::vec(
                (0u8..3, proptest::option::of(prop_oneof![
                    -1e300f64..1e300, -1.0f64..1.0, Just(f64::NAN), Just(f64::INFINITY)
                ]), -1_000_000i64..1_000_000),
                1..80,
            ),
        ) {
            let rows = batch(&rows);
            for (alone, column) in [("sum", "x"), ("mean", "x"), ("sum", "i"), ("mean", "i")] {
                let metric = format!("{alone}({column})");
                let fast = partial_of(&[&metric], std::slice::from_ref(&rows), &[]);
                for other in ["min", "max"] {
                    let beside = format!("{other}({column})");
                    let general =
                        partial_of(&[&metric, &beside], std::slice::from_ref(&rows), &[]);
                    for name in ["m0", metric.as_str()] {
                        prop_assert_eq!(
                            fast.column_by_name(name),
                            general.column_by_name(name),
                            "{} beside {}", name, beside
                        );
                    }
                }
            }
        }

        /// Folding rows in and withdrawing some of them gives, bit for bit, the partial
        /// of the rows kept: counts and exact sums take a withdrawal exactly, whatever
        /// the magnitudes, nulls and non-finite values.
        #[test]
        fn withdrawn_rows_leave_the_partial_of_the_rest(
            kept in proptest::collection::vec(
                (0u8..3, proptest::option::of(prop_oneof![
                    -1e300f64..1e300, -1.0f64..1.0, Just(f64::NAN), Just(f64::INFINITY)
                ]), -1_000_000i64..1_000_000),
                1..60,
            ),
            gone in proptest::collection::vec(
                (0u8..3, proptest::option::of(-1e20f64..1e20), -1_000_000i64..1_000_000),
                0..60,
            ),
        ) {
            let (kept, gone) = (batch(&kept), batch(&gone));
            let expected = partial(std::slice::from_ref(&kept), &[]);
            let both = partial(&[gone.clone(), kept], &[gone]);
            prop_assert_eq!(both, expected);
        }
    }
}
