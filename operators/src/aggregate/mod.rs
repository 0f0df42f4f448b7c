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
//! Float sums are exact ([`ExactSum`](crate::exact_sum::ExactSum)): a partial is
//! bit-identical whatever the number of workers, batch sizes or input order.
//!
//! Dataflow: each worker pre-aggregates the batches of a timely time into one state per
//! group (a hash of the arrow row encoding of the key), and when the time is complete
//! sends one update per group into a differential collection whose *difference* is the
//! group's [`AggState`]. `consolidate` merges the updates of all workers; a final
//! operator gathers each date on its owner (see [`DateOwners`]) and builds its partial
//! when the date is complete.
//!
//! Provisional results (`[stream] emit_every`; SEMANTICS.md, *Streaming*): the keyed
//! stage tags its output ([`Emission`]). Each worker keeps the final rows of a date
//! apart by the provisional result they first count in, and when the provisional result
//! at `W` is complete (the frontier is past [`provisional_time`]) it sends the sum of
//! the final rows sent before it and of its own rows (those not final yet, evaluated
//! on the date cut at `W`) as updates of their own; the owner builds the partial. The
//! final rows of the date go in as one update per group when the date is complete.
//! Sums are exact and merging is order-free, so a provisional result is bit-identical
//! however its rows were split between final and not yet final.
//!
//! Incremental provisional results ([`Parts`]): when every component that a row's late
//! columns (forward returns, revised rule outputs) feed changes only once, from null to
//! its final value, or only while an entry is open, the keyed stage sends each row's
//! contribution to each part of the components once, when it no longer changes
//! ([`Emission::Settled`], kept like final rows), and at `W` only the parts still
//! changing (the open entries' [`Parts::REVISED`]). The final rows then come untagged
//! and make the final result alone. Or, usually, no final rows come and the parts make
//! the final result too ([`Emission::Part`], kept the same way, the last with
//! `next = FINAL`), and an open entry's part is withdrawn ([`Emission::Withdrawn`]:
//! folded in negated, exact for counts and sums) and sent again when it changes instead
//! of being evaluated at every `W`. A horizon's part whose components read the return
//! itself comes narrow ([`Emission::Narrow`]): the return alone, for the rows of a
//! numbered part batch whose groups the worker kept when it came (a date's rows find
//! their groups once, in the date's groups, and each result's groups by those). So do
//! an open entry's withdrawn and sent changes ([`Emission::Revised`]): its revised
//! columns and those derived from them, each row into its entry's group. Under
//! `[stream]` alone, open entries may go in place the same way: their rows in numbered
//! parts for the final result with the revised columns null, each entry's values once
//! when it settles, and the batch's groups let go as soon as they all came (`once`).
//!
//! In parts: this file is the operator; `plan.rs` binds a spec to a schema and builds
//! partials ([`AggregatePlan`]); `state.rs` the mergeable group state ([`AggState`]);
//! `group.rs` maps rows to groups; `accumulate.rs` folds a batch into its groups;
//! `error.rs` the stage's errors ([`AggregateError`]).

mod accumulate;
mod error;
mod group;
mod plan;
mod reduce;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use differential_dataflow::AsCollection;
use differential_dataflow::difference::{Monoid, Semigroup};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

use crate::batch::{Batch, Emission, Parts};
use crate::columns::{KEPT_BATCH, KEPT_ROW, SETTLES};
use crate::expr::MetricExpr;
use crate::report::Diagnostics;
use crate::stash::FrontierStash;
use crate::time::{DateOwners, Time, date_end, date_key_of, date_start, provisional_time};

use accumulate::{accumulate, fold};
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{UInt32Type, UInt64Type};
use arrow::row::RowConverter;
pub use error::{AggregateError, AggregateProblem};
use group::Groups;
use group::group_ids;
pub use plan::{AggregatePlan, exact_name};
pub use reduce::{ReduceError, Reducer};
use rustc_hash::FxHashMap;
pub use state::{Accumulator, AggState, float_key, float_of_key};

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

/// An update of the differential collection: `((date key, result, group key bytes),
/// time, state)`, where the result is [`FINAL`] or the watermark of a provisional one.
pub type GroupUpdate = ((u32, i64, Vec<u8>), Time, AggState);

/// The result of a [`GroupUpdate`] that is the date's final one.
pub const FINAL: i64 = i64::MAX;

/// When a date's result is complete: the final one at the date's end, a provisional
/// one at its [`provisional_time`].
fn result_time((date_key, at): &(u32, i64)) -> Time {
    match *at {
        FINAL => date_end(*date_key),
        at => provisional_time(*date_key, at),
    }
}

/// A worker's rows of a date under `emit_every` that count in every provisional result
/// from some watermark on (final rows, or settled parts of rows): those in provisional
/// results built so far, merged, and the others by the first provisional result they
/// count in.
#[derive(Default)]
struct Dated {
    merged: BTreeMap<Vec<u8>, AggState>,
    by_next: BTreeMap<i64, ByDateId>,
    /// The date's groups: each row's group is found here once; the results' states
    /// are by these ids ([`ByDateId`]).
    groups: Groups,
    /// The groups (in `groups`) of the rows of each numbered batch
    /// ([`Emission::Part`]'s `kept`) whose narrow parts have not all come, and how many
    /// rows' parts (and open entries' settling changes) are still to come, and whether
    /// they go as soon as none is ([`Emission::Part`]'s `once`). (An entry open at the
    /// date's end never settles under `emit_every`: its batch's groups stay until the
    /// date completes.)
    kept: FxHashMap<u64, Kept>,
    /// Numbered batches whose parts all came, by the latest provisional result they
    /// count in: let go when it is built. (A message of a time may come before an
    /// earlier one of the same time, so the last part counted down is not the last to
    /// come; every part of a result has come when it is built.)
    retired: Vec<(i64, u64)>,
    /// Per numbered batch, the latest provisional result a part counted down counts
    /// in, until it retires.
    last_next: FxHashMap<u64, i64>,
    /// Narrow parts that came before their batch (messages of one time may be
    /// delivered in any order).
    early: FxHashMap<u64, Vec<(Emission, RecordBatch)>>,
    /// Whether final rows ([`Emission::Final`]) or parts ([`Emission::Part`]) came:
    /// then they are the date's final result too. (Settled parts are not: with them,
    /// the final rows come untagged.)
    finals: bool,
    /// Parts' non-finite values per column, less those of parts withdrawn.
    nonfinite: BTreeMap<String, i64>,
}

impl Dated {
    /// Folds rows tagged `emission` (not a provisional result's) into the groups of
    /// the first provisional result they count in. Returns the non-finite counts to
    /// report now (of final rows; those of parts are kept, signed, and reported when
    /// the date completes; settled parts' are nobody's).
    fn fold(
        &mut self,
        plan: &AggregatePlan,
        converter: &RowConverter,
        emission: Emission,
        rows: &RecordBatch,
    ) -> Result<Vec<(String, u64)>, AggregateError> {
        let (next, parts, withdraw) = match emission {
            Emission::Final { next } => (next, Parts::ALL, false),
            Emission::Part { next, parts, .. } | Emission::Settled { next, parts } => {
                (next, parts, false)
            }
            Emission::Withdrawn { next, parts } => (next, parts, true),
            Emission::Revised { .. } => return self.fold_revised(plan, emission, rows),
            Emission::Narrow { kept, .. } => {
                return match self.kept.contains_key(&kept) {
                    true => self.fold_narrow(plan, emission, rows),
                    false => {
                        let early = self.early.entry(kept).or_default();
                        early.push((emission, rows.clone()));
                        Ok(Vec::new())
                    }
                };
            }
            Emission::Provisional { .. } => unreachable!("a provisional result's rows"),
        };
        self.finals |= matches!(emission, Emission::Final { .. } | Emission::Part { .. });
        let date_ids = group_ids(plan, converter, rows, &mut self.groups)?;
        let groups = self.by_next.entry(next).or_default();
        let states = groups.states(&self.groups, plan);
        let nonfinite = fold(plan, rows, &date_ids, states, parts, withdraw)?;
        groups.count_in(&date_ids);
        let narrow = plan.narrow.0.count_ones() as usize;
        if let Emission::Part {
            kept: Some(kept),
            open,
            once,
            ..
        } = emission
            && (narrow > 0 || open > 0)
            && rows.num_rows() > 0
        {
            let left = rows.num_rows() * narrow + open as usize;
            let groups = Kept {
                date_ids,
                left,
                once,
            };
            self.kept.insert(kept, groups);
            for (emission, rows) in self.early.remove(&kept).unwrap_or_default() {
                match emission {
                    Emission::Revised { .. } => self.fold_revised(plan, emission, &rows)?,
                    _ => self.fold_narrow(plan, emission, &rows)?,
                };
            }
        }
        Ok(match emission {
            Emission::Final { .. } => nonfinite,
            Emission::Settled { .. } => Vec::new(),
            _ => {
                self.count_signed(nonfinite, withdraw);
                Vec::new()
            }
        })
    }

    /// [`Dated::fold`] of a narrow part whose batch came.
    fn fold_narrow(
        &mut self,
        plan: &AggregatePlan,
        emission: Emission,
        rows: &RecordBatch,
    ) -> Result<Vec<(String, u64)>, AggregateError> {
        let Emission::Narrow {
            next,
            parts,
            kept,
            rows: count,
        } = emission
        else {
            unreachable!("a narrow part")
        };
        let date_ids = &self.kept.get(&kept).expect("its batch came").date_ids;
        let groups = self.by_next.entry(next).or_default();
        let states = groups.states(&self.groups, plan);
        let nonfinite = fold(plan, rows, date_ids, states, parts, false)?;
        self.count_down(kept, count as usize, next);
        self.count_signed(nonfinite, false);
        Ok(Vec::new())
    }

    /// [`Dated::fold`] of open entries' revised values ([`Emission::Revised`]): each
    /// row into the group its entry's row has in the batch it was sent in. Rows whose
    /// batch did not come yet wait for it (in [`Dated::early`], under the first such
    /// batch); an entry that settles lets its batch's groups go once nothing else is to
    /// come for them.
    fn fold_revised(
        &mut self,
        plan: &AggregatePlan,
        emission: Emission,
        rows: &RecordBatch,
    ) -> Result<Vec<(String, u64)>, AggregateError> {
        let Emission::Revised {
            next,
            parts,
            withdrawn,
        } = emission
        else {
            unreachable!("revised values")
        };
        let (batches, places) = revised_places(rows)?;
        let mut date_ids = Vec::with_capacity(rows.num_rows());
        let mut waiting: Option<(u64, Vec<bool>)> = None;
        // Rows come in runs of one batch: its groups are looked up once a run.
        let mut run: Option<(u64, &Vec<u32>)> = None;
        for (row, (kept, place)) in batches.iter().zip(places).enumerate() {
            let ids = match run {
                Some((number, ids)) if number == *kept => Some(ids),
                _ => {
                    let ids = self.kept.get(kept).map(|kept| &kept.date_ids);
                    run = ids.map(|ids| (*kept, ids));
                    ids
                }
            };
            match ids {
                Some(ids) => date_ids.push(ids[*place as usize]),
                None => {
                    let (_, mask) =
                        waiting.get_or_insert_with(|| (*kept, vec![false; rows.num_rows()]));
                    mask[row] = true;
                }
            }
        }
        let rows = match waiting {
            None => rows.clone(),
            Some((first, mask)) => {
                let early = arrow::array::BooleanArray::from(mask);
                let here = arrow::compute::not(&early).map_err(AggregateProblem::Cast)?;
                let later = arrow::compute::filter_record_batch(rows, &early)
                    .map_err(AggregateProblem::Cast)?;
                self.early.entry(first).or_default().push((emission, later));
                arrow::compute::filter_record_batch(rows, &here).map_err(AggregateProblem::Cast)?
            }
        };
        if rows.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let groups = self.by_next.entry(next).or_default();
        let states = groups.states(&self.groups, plan);
        let nonfinite = fold(plan, &rows, &date_ids, states, parts, withdrawn)?;
        self.count_signed(nonfinite, withdrawn);
        if !withdrawn {
            let (batches, _) = revised_places(&rows)?;
            let settles = (rows.column_by_name(SETTLES))
                .and_then(|c| c.as_boolean_opt())
                .ok_or_else(|| AggregateProblem::MissingColumn {
                    column: SETTLES.to_owned(),
                })?;
            // Counted down a run of one batch's rows at a time.
            let mut run: Option<(u64, usize)> = None;
            for (kept, settles) in batches.iter().zip(settles.values().iter()) {
                if !settles {
                    continue;
                }
                match &mut run {
                    Some((number, count)) if number == kept => *count += 1,
                    _ => {
                        if let Some((number, count)) = run.replace((*kept, 1)) {
                            self.count_down(number, count, next);
                        }
                    }
                }
            }
            if let Some((number, count)) = run {
                self.count_down(number, count, next);
            }
        }
        Ok(Vec::new())
    }

    /// Counts down `count` parts of numbered batch `kept` that count from the result at
    /// `next` on; once none is to come, it retires (it goes at once when nothing else
    /// can come for it: [`Kept::once`]).
    fn count_down(&mut self, kept: u64, count: usize, next: i64) {
        let Some(groups) = self.kept.get_mut(&kept) else {
            return;
        };
        groups.left = groups.left.saturating_sub(count);
        if groups.once {
            if groups.left == 0 {
                self.kept.remove(&kept);
            }
            return;
        }
        let last = self.last_next.entry(kept).or_insert(next);
        *last = (*last).max(next);
        if groups.left == 0 {
            self.retired.push((*last, kept));
            self.last_next.remove(&kept);
        }
    }

    /// Adds parts' non-finite counts to the date's, negated when they are withdrawn.
    fn count_signed(&mut self, nonfinite: Vec<(String, u64)>, withdraw: bool) {
        let sign = if withdraw { -1 } else { 1 };
        for (column, count) in nonfinite {
            *self.nonfinite.entry(column).or_default() += sign * count as i64;
        }
    }

    /// Merges the rows that count in the provisional result at `at` (all with
    /// [`FINAL`]).
    fn merge_through(&mut self, at: i64) {
        let kept = &mut self.kept;
        self.retired.retain(|(last, number)| {
            let done = *last <= at;
            if done {
                kept.remove(number);
            }
            !done
        });
        while let Some(entry) = self.by_next.first_entry() {
            if *entry.key() > at {
                break;
            }
            entry
                .remove()
                .merge_into(&mut self.merged, &self.groups.keys);
        }
    }
}

/// The states of the rows that count from one provisional result on, by the date's
/// group ids ([`Dated::groups`]), so that rows whose groups are known fold with no
/// mapping. A group is in the result when a row counts in it here whole, or with its
/// [`Parts::BASE`]; the later parts of a row (its returns, its entry's changes) count
/// from a result no earlier than its base part does, so they only add to groups the
/// results have from here or before.
#[derive(Default)]
struct ByDateId {
    states: Vec<AggState>,
    /// Whether a row counts in the group here with its base part.
    based: Vec<bool>,
}

impl ByDateId {
    /// The states, one per group of `date` (empty for those nothing counted in yet).
    fn states(&mut self, date: &Groups, plan: &AggregatePlan) -> &mut [AggState] {
        let groups = date.keys.len();
        if self.states.len() < groups {
            self.states.resize_with(groups, || plan.empty_state());
            self.based.resize(groups, false);
        }
        &mut self.states
    }

    /// Says that rows of the groups `date_ids` count here with their base part.
    fn count_in(&mut self, date_ids: &[u32]) {
        for id in date_ids {
            self.based[*id as usize] = true;
        }
    }

    /// Adds the states to `merged` (by the groups' `keys`, the date's).
    fn merge_into(self, merged: &mut BTreeMap<Vec<u8>, AggState>, keys: &[Box<[u8]>]) {
        for ((state, based), key) in self.states.into_iter().zip(self.based).zip(keys) {
            match merged.get_mut(key.as_ref()) {
                Some(into) => into.plus_equals(&state),
                None if based => {
                    merged.insert(key.to_vec(), state);
                }
                // Not a group of the result (nothing counted in it with a base part
                // here or before): nothing counted in it here either.
                None => {}
            }
        }
    }
}

/// The groups of a numbered batch's rows, kept for their narrow parts and open
/// entries' changes ([`Dated::kept`]).
struct Kept {
    /// Each row's group, in the date's groups.
    date_ids: Vec<u32>,
    /// How many rows' narrow parts and open entries' settling changes are still to come.
    left: usize,
    /// Whether each open entry's values come once, as it settles, and nothing is
    /// withdrawn ([`Emission::Part`]'s `once`): then nothing can come after the last,
    /// and the groups go at once instead of when the result it counts in is built.
    once: bool,
}

/// The batch numbers and places of a narrow batch of revised values.
fn revised_places(rows: &RecordBatch) -> Result<(&[u64], &[u32]), AggregateError> {
    let missing = |column: &str| AggregateProblem::MissingColumn {
        column: column.to_owned(),
    };
    let batches = (rows.column_by_name(KEPT_BATCH))
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| missing(KEPT_BATCH))?;
    let places = (rows.column_by_name(KEPT_ROW))
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .ok_or_else(|| missing(KEPT_ROW))?;
    Ok((batches.values(), places.values()))
}

fn merge_into(merged: &mut BTreeMap<Vec<u8>, AggState>, groups: Groups) {
    for (key, state) in groups.keys.into_iter().zip(groups.states) {
        match merged.get_mut(key.as_ref()) {
            Some(into) => into.plus_equals(&state),
            None => {
                merged.insert(key.into_vec(), state);
            }
        }
    }
}

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
                let mut dated: FrontierStash<u32, Dated> = FrontierStash::per_date();
                let mut provisional: FrontierStash<(u32, i64), Groups> =
                    FrontierStash::new(result_time);
                move |(input, frontier), output| {
                    input.for_each_time(|time, data| {
                        let date_key = date_key_of(*time.time());
                        for batch in data {
                            let emission = batch.emission;
                            let Some(rows) = batch.take() else { continue };
                            // Where the rows go, and whether their counts go in the
                            // report now (final rows), signed with the date (parts), or
                            // nowhere (their final rows report them).
                            let started = Instant::now();
                            if Emission::counted(emission) {
                                let rows = rows.num_rows() as u64;
                                diagnostics.add(date_key, "aggregate.rows_in", rows);
                            }
                            let accumulated = match emission {
                                None => {
                                    let groups = pending.stash(*time.time(), *time.time(), &time);
                                    accumulate(&plan, &converter, &rows, groups, Parts::ALL, false)
                                }
                                Some(Emission::Provisional { at, parts }) => {
                                    // A result without rows is only marked.
                                    let groups =
                                        provisional.stash((date_key, at), *time.time(), &time);
                                    if rows.num_rows() == 0 {
                                        continue;
                                    }
                                    // Its counts are nobody's: its rows' final
                                    // versions report them.
                                    accumulate(&plan, &converter, &rows, groups, parts, false)
                                        .map(|_| Vec::new())
                                }
                                Some(emission) => {
                                    let dated = dated.stash(date_key, *time.time(), &time);
                                    dated.fold(&plan, &converter, emission, &rows)
                                }
                            };
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
                                // Rows for provisional results only: their final
                                // versions report it.
                                Err(_)
                                    if matches!(
                                        emission,
                                        Some(
                                            Emission::Provisional { .. } | Emission::Settled { .. }
                                        )
                                    ) => {}
                                Err(error) => diagnostics.error(date_key, error.to_string()),
                            }
                        }
                    });
                    for (time, capability, groups) in pending.ready(frontier) {
                        let date_key = date_key_of(time);
                        let mut session = output.session(&capability);
                        for (key, state) in groups.keys.into_iter().zip(groups.states) {
                            session.give(((date_key, FINAL, key.into_vec()), time, state));
                        }
                    }
                    for ((date_key, at), capability, groups) in provisional.ready(frontier) {
                        let mut merged = match dated.get_mut(&date_key) {
                            Some(dated) => {
                                dated.merge_through(at);
                                dated.merged.clone()
                            }
                            None => BTreeMap::new(),
                        };
                        merge_into(&mut merged, groups);
                        let time = *capability.time();
                        let mut session = output.session(&capability);
                        for (key, state) in merged {
                            session.give(((date_key, at, key), time, state));
                        }
                    }
                    // The final rows of a date go on when it is complete: their
                    // capability must not hold back the provisional results before.
                    dated.follow(frontier);
                    for (date_key, capability, mut dated) in dated.ready(frontier) {
                        if !dated.finals {
                            // Settled parts only: the final rows went on untagged.
                            continue;
                        }
                        for (column, count) in std::mem::take(&mut dated.nonfinite) {
                            let name = format!("aggregate.nonfinite.{column}");
                            diagnostics.add(date_key, &name, count.max(0) as u64);
                        }
                        dated.merge_through(FINAL);
                        let time = *capability.time();
                        let mut session = output.session(&capability);
                        for (key, state) in dated.merged {
                            session.give(((date_key, FINAL, key), time, state));
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
                Exchange::new(move |((date_key, _, _), _, _): &GroupUpdate| {
                    owners.worker_of(*date_key) as u64
                }),
                "Partial",
                move |_cap, _info| {
                    let mut dates: FrontierStash<(u32, i64), BTreeMap<Vec<u8>, AggState>> =
                        FrontierStash::new(result_time);
                    move |(input, frontier), output| {
                        input.for_each_time(|time, data| {
                            for updates in data {
                                for ((date_key, at, key), _time, state) in updates.drain(..) {
                                    // Differential may deliver several dates' updates in one
                                    // message at the earliest date's time: hold a capability
                                    // at (or after) the start of the update's own date (the
                                    // time of a provisional result), so each partial is
                                    // emitted at a time of its date.
                                    let start = match at {
                                        FINAL => date_start(date_key),
                                        at => provisional_time(date_key, at),
                                    };
                                    let start = (*time.time()).max(start);
                                    dates
                                        .stash((date_key, at), start, &time)
                                        .entry(key)
                                        .or_insert_with(AggState::zero)
                                        .plus_equals(&state);
                                }
                            }
                        });
                        for ((date_key, at), capability, groups) in dates.ready(frontier) {
                            let started = Instant::now();
                            let partial = plan.finalize(date_key, &groups);
                            diagnostics.time(date_key, "Aggregate", started);
                            let emission = (at != FINAL).then_some(Emission::Provisional {
                                at,
                                parts: Parts::ALL,
                            });
                            match partial {
                                Ok(partial) => output
                                    .session(&capability)
                                    .give_container(&mut Batch::emitted(partial, emission)),
                                // The final result reports it.
                                Err(_) if emission.is_some() => {}
                                Err(error) => diagnostics.error(date_key, error.to_string()),
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
    use arrow::array::{ArrayRef, Float64Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    /// `mean(r)` by `k`, `r` a return whose part comes narrow.
    fn plan() -> AggregatePlan {
        let spec = AggregateSpec {
            group_by: vec!["k".to_owned()],
            metrics: [("n", "count()"), ("mean_r", "mean(r)"), ("max_r", "max(r)")]
                .into_iter()
                .map(|(name, m)| (name.to_owned(), MetricExpr::parse(m).unwrap()))
                .collect(),
        };
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("r", DataType::Float64, true),
        ]);
        let mut plan = AggregatePlan::new(&spec, &schema).unwrap();
        let horizon = Parts::horizon(0);
        plan.set_parts(|column| if column == "r" { horizon } else { Parts::BASE });
        plan.set_narrow(horizon);
        plan
    }

    fn rows(k: &[i64], r: &[Option<f64>]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(k.to_vec())) as ArrayRef),
            ("r", Arc::new(Float64Array::from(r.to_vec())) as ArrayRef),
        ])
        .unwrap()
    }

    fn narrow(r: &[Option<f64>]) -> RecordBatch {
        RecordBatch::try_from_iter([("r", Arc::new(Float64Array::from(r.to_vec())) as ArrayRef)])
            .unwrap()
    }

    /// A provisional result has the groups of the rows counted in it or before, and
    /// no other, even when later parts folded into its states after rows of a new
    /// group came for a later result.
    #[test]
    fn a_result_has_the_groups_of_its_rows_alone() {
        let plan = plan();
        let converter = plan.converter();
        let part = |next, kept| Emission::Part {
            next,
            parts: Parts::BASE,
            kept: Some(kept),
            open: 0,
            once: false,
        };
        let mut dated = Dated::default();
        let first = rows(&[1, 2], &[None, None]);
        dated
            .fold(&plan, &converter, part(60_000, 1), &first)
            .unwrap();
        // Group 3 first comes for the result at 180 s; then the first rows' returns,
        // for the result at 120 s.
        let later = rows(&[3], &[None]);
        dated
            .fold(&plan, &converter, part(180_000, 2), &later)
            .unwrap();
        let returns = Emission::Narrow {
            next: 120_000,
            parts: Parts::horizon(0),
            kept: 1,
            rows: 2,
        };
        let values = narrow(&[Some(0.5), Some(0.25)]);
        dated.fold(&plan, &converter, returns, &values).unwrap();
        dated.merge_through(120_000);
        let at_120 = plan.finalize(20240102, &dated.merged).unwrap();
        assert_eq!(at_120.num_rows(), 2, "groups 1 and 2 alone");
        dated.merge_through(180_000);
        assert_eq!(
            plan.finalize(20240102, &dated.merged).unwrap().num_rows(),
            3
        );
    }

    /// A numbered batch's rows and their narrow parts, in pieces, in any order of
    /// arrival (messages of one time may come in any order), fold to what the rows
    /// with their returns give at once; nothing is kept after the last part.
    #[test]
    fn narrow_parts_fold_into_the_groups_of_their_rows_in_any_order() {
        let plan = plan();
        let converter = plan.converter();
        let k = [1, 2, 1, 3, 2];
        let r = [Some(0.5), Some(0.25), None, Some(-2.0), Some(1e-3)];
        let base = rows(&k, &[None; 5]);
        let part = |kept| Emission::Part {
            next: 60_000,
            parts: Parts::BASE,
            kept: Some(kept),
            open: 0,
            once: false,
        };
        let piece = |next, rows| Emission::Narrow {
            next,
            parts: Parts::horizon(0),
            kept: 7,
            rows,
        };
        // Rows 0, 2 and 3 in one piece (a null return among them), 1 and 4 later.
        let pieces = [
            (piece(120_000, 3), narrow(&[r[0], None, r[2], r[3], None])),
            (piece(180_000, 2), narrow(&[None, r[1], None, None, r[4]])),
        ];
        let mut expected = Dated::default();
        let whole = Emission::Final { next: 60_000 };
        expected
            .fold(&plan, &converter, whole, &rows(&k, &r))
            .unwrap();
        expected.merge_through(FINAL);
        let orders: [[usize; 3]; 4] = [[0, 1, 2], [1, 0, 2], [1, 2, 0], [2, 1, 0]];
        for order in orders {
            let mut dated = Dated::default();
            for i in order {
                let (emission, batch) = match i {
                    0 => (part(7), base.clone()),
                    i => pieces[i - 1].clone(),
                };
                dated.fold(&plan, &converter, emission, &batch).unwrap();
            }
            dated.merge_through(FINAL);
            assert!(dated.kept.is_empty() && dated.early.is_empty(), "{order:?}");
            assert!(
                dated.retired.is_empty() && dated.last_next.is_empty(),
                "{order:?}"
            );
            // Exact sums compare by value in the partial.
            let partial = |dated: &Dated| plan.finalize(20240102, &dated.merged).unwrap();
            assert_eq!(partial(&dated), partial(&expected), "{order:?}");
        }
    }

    /// Open entries' changes, narrow ([`Emission::Revised`]): withdrawn as sent and
    /// sent again, in any order of arrival, before or after their batch, fold to what
    /// the rows with their last values give at once; nothing is kept once every open
    /// entry settled.
    #[test]
    fn revised_values_fold_into_the_groups_of_their_rows_in_any_order() {
        let spec = AggregateSpec {
            group_by: vec!["k".to_owned()],
            metrics: [("n", "count()"), ("m", "sum(m)")]
                .into_iter()
                .map(|(name, m)| (name.to_owned(), MetricExpr::parse(m).unwrap()))
                .collect(),
        };
        let schema = Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("m", DataType::Float64, true),
        ]);
        let mut plan = AggregatePlan::new(&spec, &schema).unwrap();
        plan.set_parts(|column| {
            if column == "m" {
                Parts::REVISED
            } else {
                Parts::BASE
            }
        });
        let converter = plan.converter();
        let k = [1, 2, 1, 3, 2];
        let m = |values: [f64; 5]| {
            RecordBatch::try_from_iter([
                ("k", Arc::new(Int64Array::from(k.to_vec())) as ArrayRef),
                (
                    "m",
                    Arc::new(Float64Array::from(values.to_vec())) as ArrayRef,
                ),
            ])
            .unwrap()
        };
        // Rows 1 and 4 are open entries: sent with 0 and 0.25 matched.
        let sent = m([0.5, 0.0, 1.0, 2.0, 0.25]);
        let last = m([0.5, 3.0, 1.0, 2.0, 0.75]);
        let revised = |rows: &[(u32, f64)], settles: Option<&[bool]>| {
            let mut columns = vec![
                (
                    KEPT_BATCH,
                    Arc::new(arrow::array::UInt64Array::from(vec![7; rows.len()])) as ArrayRef,
                ),
                (
                    KEPT_ROW,
                    Arc::new(arrow::array::UInt32Array::from_iter_values(
                        rows.iter().map(|r| r.0),
                    )),
                ),
                (
                    "m",
                    Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
                ),
            ];
            if let Some(settles) = settles {
                let settles = arrow::array::BooleanArray::from(settles.to_vec());
                columns.push((SETTLES, Arc::new(settles)));
            }
            RecordBatch::try_from_iter(columns).unwrap()
        };
        let change = |next, withdrawn| Emission::Revised {
            next,
            parts: Parts::REVISED,
            withdrawn,
        };
        let pieces = [
            (
                Emission::Part {
                    next: 60_000,
                    parts: Parts::BASE.with(Parts::REVISED),
                    kept: Some(7),
                    open: 2,
                    once: false,
                },
                sent,
            ),
            (change(120_000, true), revised(&[(1, 0.0)], None)),
            (change(120_000, false), revised(&[(1, 1.5)], Some(&[false]))),
            (change(FINAL, true), revised(&[(1, 1.5), (4, 0.25)], None)),
            (
                change(FINAL, false),
                revised(&[(1, 3.0), (4, 0.75)], Some(&[true, true])),
            ),
        ];
        let mut expected = Dated::default();
        let whole = Emission::Final { next: 60_000 };
        expected.fold(&plan, &converter, whole, &last).unwrap();
        expected.merge_through(FINAL);
        let partial = |dated: &Dated| plan.finalize(20240102, &dated.merged).unwrap();
        let orders: [[usize; 5]; 4] = [
            [0, 1, 2, 3, 4],
            [4, 3, 2, 1, 0],
            [2, 0, 4, 1, 3],
            [3, 1, 0, 4, 2],
        ];
        for order in orders {
            let mut dated = Dated::default();
            for i in order {
                let (emission, batch) = pieces[i].clone();
                dated.fold(&plan, &converter, emission, &batch).unwrap();
            }
            dated.merge_through(FINAL);
            assert!(dated.kept.is_empty() && dated.early.is_empty(), "{order:?}");
            assert!(
                dated.retired.is_empty() && dated.last_next.is_empty(),
                "{order:?}"
            );
            assert_eq!(partial(&dated), partial(&expected), "{order:?}");
        }

        // Open entries in place (`once`): sent with their revised values null, their
        // last values coming once as they settle, before or after their batch; the
        // batch's groups go as soon as the last came, before the date completes.
        let nulled = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(k.to_vec())) as ArrayRef),
            (
                "m",
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    None,
                    Some(1.0),
                    Some(2.0),
                    None,
                ])) as ArrayRef,
            ),
        ])
        .unwrap();
        let in_place = Emission::Part {
            next: FINAL,
            parts: Parts::ALL,
            kept: Some(7),
            open: 2,
            once: true,
        };
        let pieces = [
            (in_place, nulled),
            (change(FINAL, false), revised(&[(4, 0.75)], Some(&[true]))),
            (change(FINAL, false), revised(&[(1, 3.0)], Some(&[true]))),
        ];
        let orders: [[usize; 3]; 4] = [[0, 1, 2], [1, 0, 2], [1, 2, 0], [2, 1, 0]];
        for order in orders {
            let mut dated = Dated::default();
            for i in order {
                let (emission, batch) = pieces[i].clone();
                dated.fold(&plan, &converter, emission, &batch).unwrap();
            }
            assert!(dated.kept.is_empty() && dated.early.is_empty(), "{order:?}");
            assert!(
                dated.retired.is_empty() && dated.last_next.is_empty(),
                "{order:?}"
            );
            dated.merge_through(FINAL);
            assert_eq!(partial(&dated), partial(&expected), "{order:?}");
        }
    }
}
