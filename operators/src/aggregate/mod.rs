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
//! of being evaluated at every `W`.
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
use crate::expr::MetricExpr;
use crate::report::Diagnostics;
use crate::stash::FrontierStash;
use crate::time::{DateOwners, Time, date_end, date_key_of, date_start, provisional_time};

use accumulate::accumulate;
pub use error::{AggregateError, AggregateProblem};
use group::Groups;
pub use plan::{AggregatePlan, exact_name};
pub use reduce::{ReduceError, Reducer};
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
    by_next: BTreeMap<i64, Groups>,
    /// Whether final rows ([`Emission::Final`]) or parts ([`Emission::Part`]) came:
    /// then they are the date's final result too. (Settled parts are not: with them,
    /// the final rows come untagged.)
    finals: bool,
    /// Parts' non-finite values per column, less those of parts withdrawn.
    nonfinite: BTreeMap<String, i64>,
}

/// Where a batch's counts go in the PreAggregate operator.
enum Counts<'a> {
    /// In the date's report, now.
    Now,
    /// Into the date's signed non-finite counts (parts may be withdrawn), reported when
    /// the date completes.
    Signed(&'a mut BTreeMap<String, i64>),
    /// Nowhere: the final rows report them.
    None,
}

impl Dated {
    /// The groups of the parts that count from the provisional result at `next` on,
    /// and the date's signed non-finite counts.
    fn part(&mut self, next: i64) -> (&mut Groups, &mut BTreeMap<String, i64>) {
        (self.by_next.entry(next).or_default(), &mut self.nonfinite)
    }

    /// Merges the rows that count in the provisional result at `at` (all with
    /// [`FINAL`]).
    fn merge_through(&mut self, at: i64) {
        while let Some(entry) = self.by_next.first_entry() {
            if *entry.key() > at {
                break;
            }
            merge_into(&mut self.merged, entry.remove());
        }
    }
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
                            let (groups, parts, withdraw, counts) = match emission {
                                None => {
                                    let groups = pending.stash(*time.time(), *time.time(), &time);
                                    (groups, Parts::ALL, false, Counts::Now)
                                }
                                Some(Emission::Final { next }) => {
                                    let dated = dated.stash(date_key, *time.time(), &time);
                                    dated.finals = true;
                                    let groups = dated.by_next.entry(next).or_default();
                                    (groups, Parts::ALL, false, Counts::Now)
                                }
                                Some(Emission::Part { next, parts }) => {
                                    // They make the final result too, and count.
                                    let dated = dated.stash(date_key, *time.time(), &time);
                                    dated.finals = true;
                                    let (groups, nonfinite) = dated.part(next);
                                    (groups, parts, false, Counts::Signed(nonfinite))
                                }
                                Some(Emission::Withdrawn { next, parts }) => {
                                    let dated = dated.stash(date_key, *time.time(), &time);
                                    let (groups, nonfinite) = dated.part(next);
                                    (groups, parts, true, Counts::Signed(nonfinite))
                                }
                                Some(Emission::Settled { next, parts }) => {
                                    let dated = dated.stash(date_key, *time.time(), &time);
                                    let groups = dated.by_next.entry(next).or_default();
                                    (groups, parts, false, Counts::None)
                                }
                                Some(Emission::Provisional { at, parts }) => {
                                    // A result without rows is only marked.
                                    let groups =
                                        provisional.stash((date_key, at), *time.time(), &time);
                                    if rows.num_rows() == 0 {
                                        continue;
                                    }
                                    (groups, parts, false, Counts::None)
                                }
                            };
                            if Emission::counted(emission) {
                                let rows = rows.num_rows() as u64;
                                diagnostics.add(date_key, "aggregate.rows_in", rows);
                            }
                            let accumulated =
                                accumulate(&plan, &converter, &rows, groups, parts, withdraw);
                            diagnostics.time(date_key, "Aggregate", started);
                            match (accumulated, counts) {
                                (Ok(nonfinite), Counts::Now) => {
                                    for (column, count) in nonfinite {
                                        diagnostics.add(
                                            date_key,
                                            &format!("aggregate.nonfinite.{column}"),
                                            count,
                                        );
                                    }
                                }
                                (Ok(nonfinite), Counts::Signed(into)) => {
                                    let sign = if withdraw { -1 } else { 1 };
                                    for (column, count) in nonfinite {
                                        *into.entry(column).or_default() += sign * count as i64;
                                    }
                                }
                                (Err(error), Counts::Now | Counts::Signed(_)) => {
                                    diagnostics.error(date_key, error.to_string())
                                }
                                (_, Counts::None) => {}
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
