//! A date's keyed stage on one worker, releasing rows as the watermark passes them
//! (`[stream]`; SEMANTICS.md, *Streaming*).
//!
//! Rows wait in `pending` until the watermark is past their time. Every
//! [`release_step_ms`] of trading time, the rows below the watermark become a
//! [`Segment`]: put in event order per symbol once, with their input columns. A
//! segment goes to the rules once every forward return of its rows is final (the
//! watermark is past its end plus the longest horizon): the returns are computed
//! across the segments still held ([`returns_across`]), then the rules run over the
//! segment's rows as a continuation of the earlier segments ([`EnrichRule::resume`],
//! each symbol's state carried). So a date holds the rows within the longest horizon
//! of the watermark, not the date.
//!
//! A rule whose output on a row changes after the row is released (`FIFOMatch`: an
//! entry's `matched_qty` and `is_closed` until its lot closes) says so
//! ([`Revisions`]); such rows wait in [`Held`] until they settle (or the date ends) and
//! go on with their last values. Or, when the binding allows it
//! ([`EnrichSpec::open_in_place`]), they go on at once with those columns null, in
//! numbered batches, and are held narrow: their last values follow, each once, when
//! they settle ([`settle_in_place`]). Rules after it may not read those columns
//! ([`check_streamable`]).
//!
//! When the date completes before any segment was cut (replay without `[stream]`, where
//! the watermark jumps to the date's end), the whole date runs through the batch kernel
//! ([`enrich_selected`]) instead: one release at the end, the same results.
//!
//! With provisional results ([`Provisional`], `[stream] emit_every`), the rules run over
//! a segment when it is cut (their changes to rows wait in it until it is released), and
//! at each multiple `W` of `emit_every` the pending rows are cut at `W` and the rows not
//! final yet are evaluated on the date cut at `W` ([`Step::Provisional`]): the held
//! segments' rows with returns past `W` null, the entries as matched by `W`.
//! Incrementally ([`Incremental`]), an open entry's changes are withdrawn and sent
//! again at each `W`, narrow when the binding allows ([`Incremental::revised_narrow`]):
//! the entry is held as its revised and place columns, not its whole row.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type};
use rustc_hash::FxHashMap;

use super::event_order::{EventTimes, event_order, event_values};
use super::frame::{Added, Frame};
use super::kernel::{common_schema, enrich_selected, same_columns};
use super::output::EnrichOutput;
use super::plan::RulePlan;
use super::{Carried, EnrichError, EnrichRule, EnrichSpec, Revisions, checked_outputs};
use crate::aggregate::FINAL;
use crate::batch::{Parts, SelectedRows, SymbolInterner, selected_len, with_columns};
use crate::columns::{ELAPSED_MS, KEPT_BATCH, KEPT_ROW, ROW_ID, SETTLES};
use crate::forward_return::{ForwardReturnSpec, Horizon, Stretch, returns_across};

/// Checks that `spec`'s rules can run as rows are released: no rule reads or replaces
/// a column that an earlier rule may still change after the row is released
/// ([`EnrichRule::revises`]).
///
/// With `provisional` (`[stream] emit_every`) the rules run as rows are cut, before
/// their forward returns are known: no rule may read a return column either.
pub fn check_streamable(spec: &EnrichSpec, provisional: bool) -> Result<(), EnrichError> {
    if let (true, Some(returns)) = (
        provisional,
        spec.rules.first().and_then(|r| r.forward_returns()),
    ) {
        let columns: Vec<String> = returns.horizons.iter().map(|h| h.output()).collect();
        for rule in &spec.rules[1..] {
            if let Some(column) = rule.inputs().into_iter().find(|c| columns.contains(c)) {
                return Err(EnrichError::ReadsReturns {
                    rule: rule.name(),
                    column,
                });
            }
        }
    }
    let mut revising = spec.rules.iter().filter(|r| !r.revises().is_empty());
    if let (Some(first), Some(second)) = (revising.next(), revising.next()) {
        return Err(EnrichError::TwoRevising {
            first: first.name(),
            second: second.name(),
        });
    }
    for (i, earlier) in spec.rules.iter().enumerate() {
        for column in earlier.revises() {
            for later in &spec.rules[i + 1..] {
                let action = if later.inputs().contains(&column) {
                    "reads"
                } else if later.output_names().contains(&column) {
                    "replaces"
                } else {
                    continue;
                };
                return Err(EnrichError::ReadsRevised {
                    rule: later.name(),
                    action,
                    column,
                    by: earlier.name(),
                });
            }
        }
    }
    Ok(())
}

/// The release cadence of a date whose longest forward-return horizon is `horizon_ms`:
/// the horizon itself, at least 10 s of trading time, so that the calls' fixed costs
/// stay small and a date holds about twice the horizon of rows. (A quarter of the
/// horizon held 1.25 times it, and ran 10-15% slower: 2.0 s against 1.8 s for a 10M-row
/// date, 7.0-7.5 s against 6.1 s for a 30M-row one, with 0.63 against 0.68 GB.)
pub fn release_step_ms(horizon_ms: i64) -> i64 {
    horizon_ms.max(10_000)
}

/// Rows waiting to be cut, with the smallest and largest of their times when known.
struct Pending {
    rows: SelectedRows,
    times: Option<(i64, i64)>,
}

/// One worker's share of a date in the keyed stage (see the module docs).
pub(super) struct KeyedDate {
    /// The rules, forward returns first when there are any.
    spec: EnrichSpec,
    returns: Option<ForwardReturnSpec>,
    /// The longest horizon, in ms (0 without returns).
    horizon_ms: i64,
    step_ms: i64,
    /// Rows not yet in a segment.
    pending: Vec<Pending>,
    /// Rows below this are in segments or released.
    cut: i64,
    /// Where the watermark was at the last release.
    last_release: i64,
    segments: VecDeque<Segment>,
    /// Set when the first segment is cut.
    streamed: Option<Streamed>,
    /// Provisional results asked for, and the watermark of the next one.
    provisional: Option<Provisional>,
    next_at: i64,
    /// With incremental provisional results, per horizon (by position), the watermark
    /// up to which each row's [`Parts::horizon`] was sent: the rows whose time plus the
    /// horizon is at or below it.
    returned: Vec<i64>,
    /// With narrow parts, the number of the next batch of rows sent whole when cut.
    next_kept: u64,
}

/// Provisional results of a date (`[stream] emit_every`): one at every multiple of
/// `every_ms` of trading time up to `day_ms` (the date's trading time), each the date
/// cut at that watermark (SEMANTICS.md, *Streaming*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provisional {
    /// How often, in ms of trading time (a positive multiple of 1,000).
    pub every_ms: i64,
    /// The date's trading time, in ms: the last provisional result is at or before it.
    pub day_ms: i64,
    /// Computed incrementally, part by part ([`Incremental`]), or, when `None`, each
    /// from every row not final yet.
    pub incremental: Option<Incremental>,
}

/// How a date's provisional results are computed incrementally: each row's contribution
/// to each [`Parts`] of the aggregate's components is sent once, when it no longer
/// changes ([`crate::batch::Emission::Part`]): [`Parts::BASE`] and, for the rows no
/// rule holds open, [`Parts::REVISED`] when the row is cut; [`Parts::horizon`]`(k)`
/// once the watermark reaches the row's time plus the `k`-th horizon (a return not
/// known by `W` is null in the result at `W`, and adds nothing to these parts); an open
/// entry's [`Parts::REVISED`] when it settles, and until then, at each `W`, as matched
/// by `W`. The pipeline's binding decides whether the aggregate allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incremental {
    /// The horizons (bits, by position in the forward returns' `horizons`) whose
    /// returns some component reads: each has its part, [`Parts::horizon`].
    pub horizons: u32,
    /// Whether some component reads a column a rule revises ([`Parts::REVISED`]).
    pub revised: bool,
    /// Whether the parts make the final result too ([`crate::batch::Emission::Part`]):
    /// then no final rows are built, each row goes downstream once per part and not
    /// once more at the end. Not when a stage after the keyed stage needs whole rows
    /// (a next day's returns) or counts a late column (a bin of a return: its rows'
    /// [`Parts::BASE`] have the return null).
    pub final_parts: bool,
    /// Whether an open entry's [`Parts::REVISED`] is sent when it is cut and, at each
    /// provisional result after it changed, withdrawn and sent again
    /// ([`crate::batch::Emission::Withdrawn`]), rather than evaluated at every result
    /// while it is open: when every component of the part takes a withdrawal exactly
    /// (counts and sums, no min or max).
    pub withdraw: bool,
    /// The horizons (bits, as `horizons`) whose parts are narrow
    /// ([`crate::batch::Emission::Narrow`]): the return alone, for the rows of a batch
    /// the aggregate kept the groups of when their [`Parts::BASE`] went. When every
    /// component of the part reads the return itself, the parts make the final result
    /// and a cut's rows go on whole (`final_parts`, and `withdraw` when `revised`).
    pub narrow: u32,
    /// With withdrawals and the parts making the final result, whether the changes of
    /// open entries go narrow ([`crate::batch::Emission::Revised`]): the revised
    /// columns alone, with the columns that the derived columns reading them read
    /// besides (the *place* columns: bits over the keyed stage's kept columns,
    /// [`EnrichSpec::keep`]), for the rows of a batch the aggregate kept the groups of.
    /// Only when the one rule that revises columns says where its rows went out
    /// ([`EnrichRule::places`]): an open entry is held by place (its batch and row, and
    /// its place columns), and a change carries the entry's values as last sent.
    pub revised_narrow: Option<u64>,
    /// With narrow changes, whether an open entry sent *idle* (every revised column
    /// zero, `false` or null) added nothing to [`Parts::REVISED`], as long as the place
    /// columns of these bits (as `revised_narrow`'s) are finite or null: then it is not
    /// withdrawn when it changes, only sent again. When every component of the part is
    /// a sum (a zero adds nothing to a sum; a count of values counts it) of a revised
    /// column, or of a derived column that is zero where the revised ones are
    /// (`Expr::zero_where`: `matched_qty * fillPrice`, with `fillPrice` finite).
    pub idle: Option<u64>,
}

/// What a date's keyed stage sends, in order: final rows, and the rows of provisional
/// results that are not final yet (see [`crate::batch::Emission`]).
pub(super) enum Step {
    /// Final rows, sent before the provisional result at `next` (see
    /// [`crate::batch::Emission::Final`]).
    Final { rows: Vec<RecordBatch>, next: i64 },
    /// Rows' contributions to `parts` that no longer change, sent before the provisional
    /// result at `next` (see [`crate::batch::Emission::Settled`]). With `kept`, the
    /// batches are numbered from it, for their narrow parts ([`Step::Narrow`]).
    Settled {
        rows: Vec<RecordBatch>,
        parts: Parts,
        next: i64,
        kept: Option<u64>,
        /// With `kept`, how many of each batch's rows are open entries whose changes
        /// come narrow ([`Step::Revised`]); none when empty.
        open: Vec<u32>,
    },
    /// Changes of open entries sent before in numbered batches, narrow (see
    /// [`crate::batch::Emission::Revised`]): `withdrawn` as they were sent, else as
    /// they are now.
    Revised {
        rows: Vec<RecordBatch>,
        parts: Parts,
        next: i64,
        withdrawn: bool,
    },
    /// The [`Parts::horizon`] `parts` of rows sent before with a number
    /// ([`Step::Settled`]'s `kept`), narrow: per batch, its number, how many of its rows
    /// are in the part and the return's column, null for the others (see
    /// [`crate::batch::Emission::Narrow`]).
    Narrow {
        rows: Vec<(u64, u32, RecordBatch)>,
        parts: Parts,
        next: i64,
    },
    /// Rows' contributions to `parts` sent before, as they were sent, withdrawn from the
    /// provisional result at `next` on (see [`crate::batch::Emission::Withdrawn`]).
    Withdrawn {
        rows: Vec<RecordBatch>,
        parts: Parts,
        next: i64,
    },
    /// The rows of the provisional result at `at` that are not final yet, evaluated on
    /// the date cut at `at`, for the components `parts` (the final rows and settled
    /// parts sent before it count in it too).
    Provisional {
        at: i64,
        rows: Vec<RecordBatch>,
        parts: Parts,
    },
}

/// Rows of a date below a watermark and at or above the one before, in event order per
/// symbol (by the date's symbol numbers), with their input columns.
struct Segment {
    /// The watermark it was cut at: its rows are below it.
    end: i64,
    /// The watermark the segment before it was cut at: its rows are at or above it.
    start: i64,
    /// Its rows.
    frame: Frame,
    /// Where each symbol of the date so far has its events (rows as cut, in event
    /// order).
    runs: Vec<usize>,
    /// The forward returns' prices (Float64), by event.
    prices: Option<Float64Array>,
    /// With provisional results, the rules ran over the frame when it was cut: the
    /// changes they made to rows, for the held rows when the segment is released (or
    /// to evaluate a provisional result).
    ruled: Option<Vec<Revisions>>,
    /// With incremental provisional results, each current row's `elapsed_ms` (after
    /// the rules).
    row_times: Vec<i64>,
    /// With incremental provisional results, the current rows as output when it was
    /// cut (its returns null), for its rows' [`Parts::horizon`] ([`Segment::part`]).
    base: Vec<RecordBatch>,
    /// With narrow parts, the number of the first batch of `base` (the others follow).
    kept: Option<u64>,
}

impl Segment {
    /// The [`Parts::horizon`] of the current rows `picks` (ascending), the `k`-th
    /// horizon's return being `values` (per event): narrow when the horizon's parts are
    /// and the rows were numbered when cut ([`Segment::narrow`]); else their output
    /// rows with that return, the other returns null: the rows as cut with the return's
    /// column set when they are all the rows (a part of a segment's rows mostly is),
    /// else built again from the frame.
    fn part(
        &self,
        streamed: &Streamed,
        spec: &ForwardReturnSpec,
        (k, horizon): (usize, Horizon),
        incremental: Incremental,
        picks: Vec<u32>,
        values: ArrayRef,
    ) -> Result<PartRows, EnrichError> {
        if incremental.narrow >> k & 1 == 1
            && let Some(first) = self.kept
        {
            let name = ForwardReturnSpec::output(horizon);
            return Ok(PartRows::Narrow(self.narrow(first, &name, &picks, values)?));
        }
        if picks.len() < self.row_times.len() || self.base.is_empty() {
            let frame = self.frame.select(picks)?;
            let rows = with_return(streamed, frame, spec, horizon, values)?;
            return Ok(PartRows::Rows(rows));
        }
        debug_assert_eq!(
            (self.base.iter()).map(RecordBatch::num_rows).sum::<usize>(),
            self.row_times.len()
        );
        // A value per current row, from each row's event.
        let values = match &self.frame.rows {
            Some(events) => arrow::compute::take(&values, &UInt32Array::from(events.clone()), None)
                .map_err(output_error)?,
            None => values,
        };
        let name = ForwardReturnSpec::output(horizon);
        let mut offset = 0;
        let mut rows = Vec::with_capacity(self.base.len());
        for batch in &self.base {
            let mut columns = batch.columns().to_vec();
            let at = (batch.schema().index_of(&name)).map_err(output_error)?;
            columns[at] = values.slice(offset, batch.num_rows());
            offset += batch.num_rows();
            rows.push(RecordBatch::try_new(batch.schema(), columns).map_err(output_error)?);
        }
        Ok(PartRows::Rows(rows))
    }

    /// [`Segment::part`] narrow ([`Step::Narrow`]), for the batches of `base` numbered
    /// from `first`: per batch with rows in `picks`, its number, how many and the
    /// return's column `name`, null for its rows not picked.
    fn narrow(
        &self,
        first: u64,
        name: &str,
        picks: &[u32],
        values: ArrayRef,
    ) -> Result<Vec<(u64, u32, RecordBatch)>, EnrichError> {
        let values = match &self.frame.rows {
            Some(events) => arrow::compute::take(&values, &UInt32Array::from(events.clone()), None)
                .map_err(output_error)?,
            None => values,
        };
        let values = values.as_primitive::<Float64Type>();
        let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Float64, true)]));
        let all = picks.len() == self.row_times.len();
        let (mut offset, mut p) = (0, 0);
        let mut out = Vec::new();
        for (b, batch) in self.base.iter().enumerate() {
            let (n, start) = (batch.num_rows(), p);
            while p < picks.len() && (picks[p] as usize) < offset + n {
                p += 1;
            }
            let column = values.slice(offset, n);
            let column = match all {
                true => column,
                false => {
                    let mut picked = vec![false; n];
                    for row in &picks[start..p] {
                        picked[*row as usize - offset] = true;
                    }
                    let picked = NullBuffer::from(picked);
                    let nulls = NullBuffer::union(column.nulls(), Some(&picked));
                    Float64Array::new(column.values().clone(), nulls)
                }
            };
            offset += n;
            if p > start {
                let rows = (p - start) as u32;
                let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)])
                    .map_err(output_error)?;
                out.push((first + b as u64, rows, batch));
            }
        }
        Ok(out)
    }

    /// The current rows with `low < elapsed_ms <= high`, ascending: all of them,
    /// without a look at their times, when the segment is within those bounds.
    fn rows_between(&self, low: i64, high: i64) -> Vec<u32> {
        if self.start > low && self.end.saturating_sub(1) <= high {
            return (0..self.row_times.len() as u32).collect();
        }
        (self.row_times.iter().enumerate())
            .filter(|(_, t)| **t > low && **t <= high)
            .map(|(row, _)| row as u32)
            .collect()
    }

    /// Each event's `elapsed_ms`.
    fn elapsed_ms(&self) -> &[i64] {
        match &self.frame.events.times {
            EventTimes::Split(elapsed, _) => elapsed,
            _ => unreachable!("a segment's event columns are computed when it is cut"),
        }
    }
}

/// A horizon's part of some of a segment's rows ([`Segment::part`]).
enum PartRows {
    /// Output rows, for [`Step::Settled`].
    Rows(Vec<RecordBatch>),
    /// Narrow, for [`Step::Narrow`].
    Narrow(Vec<(u64, u32, RecordBatch)>),
}

impl PartRows {
    /// Adds them to the rows or the narrow rows of a part.
    fn add_to(self, rows: &mut Vec<RecordBatch>, narrow: &mut Vec<(u64, u32, RecordBatch)>) {
        match self {
            PartRows::Rows(more) => rows.extend(more),
            PartRows::Narrow(more) => narrow.extend(more),
        }
    }
}

/// Pushes a part (`parts`, for the provisional result at `next` on) of output rows
/// and of narrow rows, those that it has.
fn push_part(
    steps: &mut Vec<Step>,
    rows: Vec<RecordBatch>,
    narrow: Vec<(u64, u32, RecordBatch)>,
    output: &SchemaRef,
    parts: Parts,
    next: i64,
) -> Result<(), EnrichError> {
    let rows = project(rows, output)?;
    if !rows.is_empty() {
        steps.push(Step::Settled {
            rows,
            parts,
            next,
            kept: None,
            open: Vec::new(),
        });
    }
    if !narrow.is_empty() {
        steps.push(Step::Narrow {
            rows: narrow,
            parts,
            next,
        });
    }
    Ok(())
}

/// What a date released in segments keeps between releases.
struct Streamed {
    /// The input schema (every segment's).
    schema: SchemaRef,
    /// The rules after the forward returns, over the input and return columns.
    plan: RulePlan,
    /// The output's columns (the whole-date kernel's).
    output: SchemaRef,
    /// The input columns the rules or the output need.
    needed: Vec<String>,
    interner: SymbolInterner,
    carried: Vec<Carried>,
    held: Held,
    /// With incremental provisional results, the rows a rule holds open since they were
    /// cut (their [`Parts::REVISED`] still changes).
    open: Held,
    /// With narrow revised values ([`Incremental::revised_narrow`], or open entries in
    /// place under `[stream]` alone), the columns of an open entry's narrow rows
    /// (besides its batch number and place in it): `row_id`, the revised columns and
    /// the place columns. Under `emit_every` the entries are held in `placed`; in
    /// place, in `held` ([`Held::hold_narrow`]).
    narrow: Option<Vec<String>>,
    /// With narrow revised values, how to tell an open entry that was sent idle
    /// ([`Incremental::idle`]): it is not withdrawn.
    idle: Option<Idle>,
    /// With narrow revised values and a rule that says where its open rows went out
    /// ([`EnrichRule::places`]), the open entries by place, instead of in `open`.
    placed: Option<Placed>,
    counts: BTreeMap<String, u64>,
}

/// The columns of an open entry's narrow row that say whether it was sent idle
/// ([`Incremental::idle`]): the revised ones (zero, `false` or null) and the place
/// columns it must have finite or null.
struct Idle {
    revised: Vec<String>,
    finite: Vec<String>,
}

impl Idle {
    /// The rows of `rows` (narrow rows as sent) that were not sent idle: each is
    /// withdrawn. A column of another type than an integer, a float or a boolean
    /// counts as not idle.
    fn added(&self, rows: &RecordBatch) -> BooleanArray {
        let n = rows.num_rows();
        let mut added = vec![false; n];
        let columns = |names: &[String]| {
            let columns = names.iter().map(|name| rows.column_by_name(name));
            columns.collect::<Vec<_>>()
        };
        // `added[row] |= valid(row) && f(row)`, over the valid rows' bits.
        fn mark(added: &mut [bool], column: &ArrayRef, f: impl Fn(usize) -> bool) {
            match column
                .logical_nulls()
                .filter(|nulls| nulls.null_count() > 0)
            {
                None => (added.iter_mut().enumerate()).for_each(|(row, a)| *a |= f(row)),
                Some(nulls) => nulls.valid_indices().for_each(|row| added[row] |= f(row)),
            }
        }
        for column in columns(&self.revised) {
            let Some(column) = column else {
                added.fill(true);
                break;
            };
            match column.data_type() {
                DataType::Boolean => {
                    let values = column.as_boolean().values();
                    mark(&mut added, column, |row| values.value(row));
                }
                DataType::Int64 => {
                    let values = column.as_primitive::<Int64Type>().values();
                    mark(&mut added, column, |row| values[row] != 0);
                }
                DataType::Float64 => {
                    let values = column.as_primitive::<Float64Type>().values();
                    mark(&mut added, column, |row| values[row] != 0.0);
                }
                _ => added.fill(true),
            }
        }
        for column in columns(&self.finite) {
            match column.map(|c| (c, c.data_type())) {
                Some((column, DataType::Float64)) => {
                    let values = column.as_primitive::<Float64Type>().values();
                    mark(&mut added, column, |row| !values[row].is_finite());
                }
                Some((_, data_type)) if data_type.is_integer() => {}
                _ => added.fill(true),
            }
        }
        BooleanArray::from(added)
    }

    /// `withdrawn` (narrow rows as sent) without the rows sent idle.
    fn withdrawn(&self, withdrawn: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, EnrichError> {
        let mut kept = Vec::with_capacity(withdrawn.len());
        for rows in withdrawn {
            let added = self.added(&rows);
            match added.true_count() {
                0 => {}
                n if n == rows.num_rows() => kept.push(rows),
                _ => kept.push(filter(&rows, &added)?),
            }
        }
        Ok(kept)
    }
}

impl KeyedDate {
    pub(super) fn new(spec: &EnrichSpec, provisional: Option<Provisional>) -> Self {
        let returns = spec
            .rules
            .first()
            .and_then(|rule| rule.forward_returns())
            .cloned();
        let horizon_ms = (returns.as_ref())
            .and_then(|r| r.horizons.iter().map(|h| h.reach_ms(r.day_ms)).max())
            .unwrap_or(0);
        KeyedDate {
            spec: spec.clone(),
            returns,
            horizon_ms,
            step_ms: release_step_ms(horizon_ms),
            pending: Vec::new(),
            cut: i64::MIN,
            last_release: i64::MIN,
            segments: VecDeque::new(),
            streamed: None,
            provisional,
            next_at: provisional.map_or(i64::MAX, |p| p.every_ms),
            returned: vec![i64::MIN; Parts::HORIZONS],
            next_kept: 0,
        }
    }

    /// Skips the provisional results that this worker cannot send at their time
    /// ([`crate::time::provisional_time`]) because the earliest message of the date it
    /// got came later, at bucket `bucket`. Called when those results are due (every
    /// message at or before their time delivered), it has no rows at or before them (a
    /// row reaches the operator at a bucket at most its own) and has sent no final
    /// rows: it has nothing to add to them.
    pub(super) fn skip_provisional_before(&mut self, bucket: u32) {
        while let Some(at) = self.next_provisional() {
            if crate::time::bucket_for_elapsed(at) >= bucket {
                break;
            }
            self.pass_provisional();
        }
    }

    /// Moves on to the next provisional result.
    fn pass_provisional(&mut self) {
        if let Some(p) = self.provisional {
            self.next_at += p.every_ms;
        }
    }

    /// The watermark of the next provisional result, when one is still to come.
    pub(super) fn next_provisional(&self) -> Option<i64> {
        self.provisional
            .filter(|p| self.next_at <= p.day_ms)
            .map(|_| self.next_at)
    }

    /// Takes rows of the date. They must not be below the last release point.
    pub(super) fn push(
        &mut self,
        parts: impl IntoIterator<Item = SelectedRows>,
    ) -> Result<(), EnrichError> {
        for part in parts {
            if selected_len(&part) == 0 {
                continue;
            }
            // Once rows are cut, a part's times are bounded as it comes (a pass over
            // them that checks none is below the cut too), so that a cut need not go
            // over the parts all below it, or all above.
            let mut times = None;
            if self.cut > i64::MIN {
                let (min, max) = time_bounds(&part)?;
                if min < self.cut
                    && let Some((row_id, elapsed_ms)) = first_below(&part, self.cut)?
                {
                    return Err(EnrichError::BehindRelease {
                        row_id,
                        elapsed_ms,
                        released: self.cut,
                    });
                }
                times = Some((min, max));
            }
            self.pending.push(Pending { rows: part, times });
        }
        Ok(())
    }

    /// Whether the watermark at `watermark` is far enough past the last release for
    /// another.
    pub(super) fn due(&self, watermark: i64) -> bool {
        let provisional = self.next_provisional().is_some_and(|at| at < watermark);
        let release = watermark > 0
            && watermark.saturating_sub(self.last_release) >= self.step_ms
            && (!self.pending.is_empty() || !self.segments.is_empty());
        provisional || release
    }

    /// Releases what the watermark at `watermark` makes final: every row below it is
    /// here. Returns what to send, in order: the output rows that are final, and the
    /// provisional results at the multiples of `emit_every` below `watermark`, each
    /// after the final rows that count in it.
    pub(super) fn release(&mut self, watermark: i64) -> Result<Vec<Step>, EnrichError> {
        self.last_release = watermark;
        let mut steps = Vec::new();
        let mut last_result = None;
        while let Some(at) = self.next_provisional().filter(|at| *at < watermark) {
            last_result = Some(at);
            // Rows at `at` belong to it: cut just above.
            let rows = self.release_to(at + 1, &mut steps)?;
            steps.push(Step::Final { rows, next: at });
            match self.incremental() {
                Some(incremental) => {
                    self.returned_parts(at, incremental, &mut steps)?;
                    let rows = match incremental.withdraw {
                        true => {
                            self.changed_open(at, &mut steps)?;
                            Vec::new()
                        }
                        false => self.open_at(incremental)?,
                    };
                    let parts = Parts::REVISED;
                    steps.push(Step::Provisional { at, rows, parts });
                }
                None => {
                    let rows = self.snapshot(at)?;
                    let parts = Parts::ALL;
                    steps.push(Step::Provisional { at, rows, parts });
                }
            }
            self.pass_provisional();
        }
        // Just cut at a provisional result, the rows after it wait for the next one (or
        // the next release step): a cut has costs per symbol (each symbol's rule states
        // and prices to find again), and cutting at both would double the cuts. The
        // segments whose returns' targets are all cut go.
        let cut = last_result.is_none_or(|at| watermark.saturating_sub(at) >= self.step_ms);
        let rows = match cut {
            true => self.release_to(watermark, &mut steps)?,
            false => self.release_segments(self.cut, &mut steps)?,
        };
        steps.push(Step::Final {
            rows,
            next: self.next_at,
        });
        Ok(steps)
    }

    /// Whether provisional results are computed incrementally, and how.
    pub(super) fn incremental(&self) -> Option<Incremental> {
        self.provisional.and_then(|p| p.incremental)
    }

    /// Where the parts that settle now go, when they are sent: the incremental form,
    /// and the next provisional result (`FINAL` after the last one, when the parts make
    /// the final result too; none are sent then otherwise).
    fn settling(&self) -> Option<(Incremental, i64)> {
        let incremental = self.incremental()?;
        match self.next_provisional() {
            Some(next) => Some((incremental, next)),
            None if incremental.final_parts => Some((incremental, FINAL)),
            None => None,
        }
    }

    /// Whether open entries go on in place ([`EnrichSpec::open_in_place`]): without
    /// provisional results, once the first segment is cut, when the binding asked for it
    /// and the revised columns can be null.
    fn in_place(&self) -> bool {
        self.provisional.is_none() && self.streamed.as_ref().is_some_and(|s| s.narrow.is_some())
    }

    /// Whether the parts make the final result too: no final rows are built.
    fn final_parts(&self) -> bool {
        self.incremental().is_some_and(|i| i.final_parts)
    }

    /// Cuts the pending rows below `watermark` and releases the segments whose returns
    /// it makes final; returns their final output rows (and pushes the parts that
    /// settle to `steps`).
    fn release_to(
        &mut self,
        watermark: i64,
        steps: &mut Vec<Step>,
    ) -> Result<Vec<RecordBatch>, EnrichError> {
        self.cut_segment(watermark, steps)?;
        self.release_segments(watermark, steps)
    }

    /// Releases the segments whose returns the watermark at `watermark` makes final;
    /// returns their final output rows (and pushes the parts that settle to `steps`).
    fn release_segments(
        &mut self,
        watermark: i64,
        steps: &mut Vec<Step>,
    ) -> Result<Vec<RecordBatch>, EnrichError> {
        let mut out = Vec::new();
        while self
            .segments
            .front()
            .is_some_and(|s| s.end.saturating_add(self.horizon_ms) <= watermark)
        {
            self.release_front(&mut out, steps)?;
        }
        Ok(out)
    }

    /// The [`Parts::horizon`] of the rows whose time plus the horizon is past the last
    /// provisional result and at or below `at` (their return is known by `at`, and
    /// final), for each horizon with a part.
    fn returned_parts(
        &mut self,
        at: i64,
        incremental: Incremental,
        steps: &mut Vec<Step>,
    ) -> Result<(), EnrichError> {
        let (Some(spec), Some(streamed)) = (&self.returns, &self.streamed) else {
            return Ok(());
        };
        for (k, horizon) in spec.horizons.iter().enumerate() {
            if incremental.horizons >> k & 1 == 0 {
                continue;
            }
            let offset = horizon.reach_ms(spec.day_ms);
            // The rows with `low < elapsed_ms <= high`.
            let (low, high) = (self.returned[k].saturating_sub(offset), at - offset);
            let (mut rows, mut narrow) = (Vec::new(), Vec::new());
            for (i, segment) in self.segments.iter().enumerate() {
                if segment.start > high || segment.end.saturating_sub(1) <= low {
                    continue;
                }
                let picks = segment.rows_between(low, high);
                if picks.is_empty() {
                    continue;
                }
                let values = returns_across(&self.stretches(i, *horizon), *horizon, at);
                let part = segment.part(streamed, spec, (k, *horizon), incremental, picks, values);
                part?.add_to(&mut rows, &mut narrow);
            }
            self.returned[k] = at;
            push_part(steps, rows, narrow, &streamed.output, Parts::horizon(k), at)?;
        }
        Ok(())
    }

    /// The rows a rule holds open at the provisional result at `at` (where the rules'
    /// states are), as matched by then: their [`Parts::REVISED`] in it.
    fn open_at(&self, incremental: Incremental) -> Result<Vec<RecordBatch>, EnrichError> {
        let Some(streamed) = &self.streamed else {
            return Ok(Vec::new());
        };
        if !incremental.revised || !streamed.open.active {
            return Ok(Vec::new());
        }
        let mut open = streamed.open.fork();
        for (rule, carried) in streamed.plan.spec.rules.iter().zip(&streamed.carried) {
            if let Some(revisions) = rule.unsettled(carried) {
                open.change(&revisions);
            }
        }
        let mut out = Vec::new();
        open.flush(true, &mut out)?;
        project(out, &streamed.output)
    }

    /// With withdrawals ([`Incremental::withdraw`]): the [`Parts::REVISED`] of the rows
    /// a rule holds open that changed since they were sent (closed, or matched further
    /// by the cut, where the rules' states are), withdrawn as they were sent and sent
    /// as they are now, for the provisional result at `next` on; those that settled are
    /// let go.
    fn changed_open(&mut self, next: i64, steps: &mut Vec<Step>) -> Result<(), EnrichError> {
        let Some(streamed) = &mut self.streamed else {
            return Ok(());
        };
        if !streamed.open.active {
            return Ok(());
        }
        // The entries sent at an earlier result and unchanged since are as sent.
        for (rule, carried) in streamed.plan.spec.rules.iter().zip(&mut streamed.carried) {
            if let Some(revisions) = rule.unsettled_changed(carried) {
                match &mut streamed.placed {
                    Some(placed) => placed.change(&revisions),
                    None => streamed.open.change(&revisions),
                }
            }
        }
        let mut sent = Vec::new();
        withdraw_changed(streamed, next, steps, &mut sent)?;
        let parts = Parts::REVISED;
        push_part(steps, sent, Vec::new(), &streamed.output, parts, next)
    }

    /// The rows of the provisional result at `at` that are not final yet: those of the
    /// segments still held (every row at or before `at` is in one, [`Self::release`])
    /// run through the rules from a copy of their states, with `at` as the close, and
    /// the held entries as matched by then. Nothing changes in the date's state.
    fn snapshot(&self, at: i64) -> Result<Vec<RecordBatch>, EnrichError> {
        let Some(streamed) = &self.streamed else {
            return Ok(Vec::new());
        };
        let mut held = streamed.held.fork();
        let mut out = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            let returns = self.returns_of(i, at);
            let mut frame = segment.frame.clone();
            add_returns(&mut frame, returns);
            // Every row goes into the result: no need to tell the open ones apart, only
            // to apply the changes (below) to all.
            for revision in segment.ruled.as_ref().expect("ruled when it was cut") {
                held.change(revision);
            }
            let schema = streamed.plan.schema.clone();
            for batch in EnrichOutput::of_frame(frame, schema, true, BTreeMap::new())? {
                held.batches.push(batch?);
            }
        }
        // The rules' states are at the cut: what the entries still open have matched.
        for (rule, carried) in streamed.plan.spec.rules.iter().zip(&streamed.carried) {
            if let Some(revisions) = rule.unsettled(carried) {
                held.change(&revisions);
            }
        }
        held.flush(true, &mut out)?;
        project(out, &streamed.output)
    }

    /// The forward returns of segment `i`'s rows with `close` as the day's end, from
    /// the segments from it on (they hold every row up to its targets).
    fn returns_of(&self, i: usize, close: i64) -> Vec<(String, ArrayRef)> {
        let Some(spec) = &self.returns else {
            return Vec::new();
        };
        (spec.horizons.iter())
            .map(|horizon| {
                let values = returns_across(&self.stretches(i, *horizon), *horizon, close);
                (ForwardReturnSpec::output(*horizon), values)
            })
            .collect()
    }

    /// The segments from the `i`-th on that its rows' targets at `horizon` may be in,
    /// for [`returns_across`].
    fn stretches(&self, i: usize, horizon: Horizon) -> Vec<Stretch<'_>> {
        let day_ms = self.returns.as_ref().map_or(i64::MAX, |r| r.day_ms);
        let reach = (self.segments[i].end).saturating_add(horizon.reach_ms(day_ms));
        (self.segments.iter().skip(i))
            .take_while(|s| s.start <= reach)
            .map(|s| Stretch {
                runs: &s.runs,
                elapsed_ms: s.elapsed_ms(),
                prices: s.prices.as_ref().expect("every segment has prices"),
            })
            .collect()
    }

    /// The rest of the date once it is complete: the whole date through the batch kernel
    /// when nothing was released yet, else the last segments, the held rows, and the
    /// rules' counts for the date (those of every release).
    /// With provisional results, those still to come go first (the watermark jumps
    /// to the date's end).
    pub(super) fn finish(mut self) -> Result<(Vec<Step>, Finished), EnrichError> {
        let mut steps = match self.next_provisional() {
            Some(_) => self.release(i64::MAX)?,
            None => Vec::new(),
        };
        if self.streamed.is_none() {
            let pending = self.pending.into_iter().map(|p| p.rows).collect();
            let whole = enrich_selected(pending, &self.spec)?;
            return Ok((steps, Finished::Whole(Box::new(whole))));
        }
        if self.final_parts() {
            return self.finish_parts(steps);
        }
        // No provisional result is left: nothing settles for one, but with open
        // entries in place every row goes in parts.
        let in_place = self.in_place();
        self.cut_segment(i64::MAX, &mut steps)?;
        let mut out = Vec::new();
        while !self.segments.is_empty() {
            self.release_front(&mut out, &mut steps)?;
        }
        let streamed = self.streamed.as_mut().expect("checked above");
        for (rule, carried) in streamed.plan.spec.rules.iter().zip(&mut streamed.carried) {
            if let Some(revisions) = rule.unsettled(carried) {
                streamed.held.revise(&revisions);
            }
            for (name, count) in rule.finish(carried) {
                *streamed.counts.entry(name).or_default() += count;
            }
        }
        match in_place {
            // The entries still held, as they end the date.
            true => {
                let mut last = Vec::new();
                streamed.held.flush(true, &mut last)?;
                push_settling(last, &mut steps);
            }
            false => streamed.held.flush(true, &mut out)?,
        }
        let out = project(out, &streamed.output)?;
        let finished = Finished::Streamed {
            batches: out.into_iter(),
            counts: std::mem::take(&mut streamed.counts),
        };
        Ok((steps, finished))
    }

    /// [`Self::finish`] when the parts make the final result: the last parts of every
    /// row, and the open entries' [`Parts::REVISED`] as they end the date.
    fn finish_parts(mut self, mut steps: Vec<Step>) -> Result<(Vec<Step>, Finished), EnrichError> {
        self.cut_segment(i64::MAX, &mut steps)?;
        while !self.segments.is_empty() {
            self.release_front(&mut Vec::new(), &mut steps)?;
        }
        // The open entries as they end the date: with withdrawals, what they matched
        // since they were last sent; else all of them, never sent.
        let withdraw = self.incremental().is_some_and(|i| i.withdraw);
        if withdraw {
            self.changed_open(FINAL, &mut steps)?;
        }
        let streamed = self.streamed.as_mut().expect("checked by the caller");
        for (rule, carried) in streamed.plan.spec.rules.iter().zip(&mut streamed.carried) {
            if !withdraw && let Some(revisions) = rule.unsettled(carried) {
                streamed.open.revise(&revisions);
            }
            for (name, count) in rule.finish(carried) {
                *streamed.counts.entry(name).or_default() += count;
            }
        }
        if !withdraw {
            let mut open = Vec::new();
            streamed.open.flush(true, &mut open)?;
            let (parts, next) = (Parts::REVISED, FINAL);
            push_part(&mut steps, open, Vec::new(), &streamed.output, parts, next)?;
        }
        let finished = Finished::Streamed {
            batches: Vec::new().into_iter(),
            counts: std::mem::take(&mut streamed.counts),
        };
        Ok((steps, finished))
    }

    /// Makes the pending rows below `watermark` a segment (pushing the parts that
    /// settle as it is cut to `steps`).
    fn cut_segment(&mut self, watermark: i64, steps: &mut Vec<Step>) -> Result<(), EnrichError> {
        let start = self.cut;
        let mut complete = Vec::new();
        let mut later = Vec::new();
        for part in std::mem::take(&mut self.pending) {
            let (below, rest) = split_at(part, watermark)?;
            complete.extend(below);
            later.extend(rest);
        }
        self.pending = later;
        self.cut = self.cut.max(watermark);
        if complete.is_empty() {
            return Ok(());
        }
        let schema = common_schema(&complete)?;
        let streamed = match &mut self.streamed {
            Some(streamed) => {
                if !same_columns(&streamed.schema, &schema) {
                    return Err(EnrichError::SchemaMismatch {
                        batch: 0,
                        schema,
                        first: streamed.schema.clone(),
                    });
                }
                streamed
            }
            None => {
                let mut streamed = Streamed::new(
                    &self.spec,
                    self.returns.as_ref(),
                    schema,
                    self.provisional.is_some(),
                )?;
                let places = match self.provisional {
                    Some(_) => self.incremental().and_then(|i| i.revised_narrow),
                    // Open entries in place: their revised columns go on null.
                    None => (self.spec.open_in_place).filter(|_| streamed.revised_nullable()),
                };
                if let Some(places) = places {
                    streamed.narrow = narrow_columns(&self.spec, &streamed, places);
                }
                let idle = self
                    .provisional
                    .and(self.incremental())
                    .and_then(|i| i.idle);
                if let (Some(finite), Some(_)) = (idle, &streamed.narrow) {
                    streamed.idle = idle_columns(&self.spec, &streamed, finite);
                }
                if self.provisional.is_some() {
                    streamed.placed = Placed::of(&streamed);
                    // Narrow changes need their places (the binding checks the rule
                    // gives them): else the held rows go whole.
                    if streamed.placed.is_none() {
                        streamed.narrow = None;
                    }
                }
                self.streamed.insert(streamed)
            }
        };
        let ids = streamed
            .interner
            .ids(&complete, &self.spec.symbol, "enrich")?;
        let events = event_order(&complete, &ids, streamed.interner.len())?;
        drop(ids);
        let mut frame = Frame::new(complete, events);
        frame.order_inputs(&streamed.needed)?;
        frame.compute_event_columns();
        let prices = match &self.returns {
            Some(returns) => Some(return_prices(&mut frame, returns)?),
            None => None,
        };
        let runs = frame.runs.clone();
        // With provisional results the rules run now, once (they read no return: see
        // `check_streamable`), so that a provisional result finds the rows through them
        // and the rules' states at the cut.
        let ruled = match self.provisional {
            Some(_) => Some(rules(
                &streamed.plan,
                &mut frame,
                &mut streamed.counts,
                &mut streamed.carried,
            )?),
            None => None,
        };
        let (mut row_times, mut base, mut kept) = (Vec::new(), Vec::new(), None);
        if let (Some((incremental, next)), Some(ruled)) = (self.settling(), &ruled) {
            let streamed = self.streamed.as_mut().expect("set above");
            let numbered = incremental.narrow != 0 || streamed.narrow.is_some();
            kept = numbered.then_some(self.next_kept);
            base = cut_parts(
                streamed,
                &frame,
                ruled,
                self.returns.as_ref(),
                (incremental, kept),
                next,
                steps,
            )?;
            self.next_kept += base.len() as u64;
            row_times = frame.row_times();
        }
        self.segments.push_back(Segment {
            end: watermark,
            start,
            frame,
            runs,
            prices,
            ruled,
            row_times,
            base,
            kept,
        });
        Ok(())
    }

    /// Runs the first segment through the returns and the rules (unless they ran when
    /// it was cut), pushing the output rows that are final to `out`.
    fn release_front(
        &mut self,
        out: &mut Vec<RecordBatch>,
        steps: &mut Vec<Step>,
    ) -> Result<(), EnrichError> {
        let close = self.returns.as_ref().map_or(i64::MAX, |r| r.day_ms);
        // When the parts make the final result, the returns of the rows whose parts
        // were not sent yet are all it needs (`released_parts` computes them).
        let mut returns = match self.final_parts() {
            true => Vec::new(),
            false => self.returns_of(0, close),
        };
        if let Some((incremental, next)) = self.settling() {
            self.released_parts(&returns, close, incremental, next, steps)?;
        }
        let segment = self.segments.pop_front().expect("checked");
        if self.final_parts() {
            // Its rows went in parts: nothing more of them goes on.
            return Ok(());
        }
        let in_place = self.in_place();
        let streamed = self.streamed.as_mut().expect("a segment was cut");
        let mut frame = segment.frame;
        let revisions = match segment.ruled {
            Some(revisions) => revisions,
            None => {
                // The rules may read the returns.
                add_returns(&mut frame, std::mem::take(&mut returns));
                let (plan, counts) = (&streamed.plan, &mut streamed.counts);
                rules(plan, &mut frame, counts, &mut streamed.carried)?
            }
        };
        if in_place {
            let first = self.next_kept;
            self.next_kept += settle_in_place(streamed, frame, returns, revisions, first, steps)?;
            return Ok(());
        }
        let mut released = Vec::new();
        let held = &mut streamed.held;
        settle(
            &streamed.plan,
            held,
            frame,
            returns,
            revisions,
            &mut released,
        )?;
        out.extend(project(released, &streamed.output)?);
        Ok(())
    }
}

impl KeyedDate {
    /// The [`Parts::horizon`] of the first segment's rows not sent yet, as it is
    /// released (its `returns` are final: those computed already, else from the
    /// segments with `close` as the day's end), for the next provisional result.
    fn released_parts(
        &self,
        returns: &[(String, ArrayRef)],
        close: i64,
        incremental: Incremental,
        next: i64,
        steps: &mut Vec<Step>,
    ) -> Result<(), EnrichError> {
        let (Some(spec), Some(streamed)) = (&self.returns, &self.streamed) else {
            return Ok(());
        };
        let segment = self.segments.front().expect("checked");
        for (k, horizon) in spec.horizons.iter().enumerate() {
            if incremental.horizons >> k & 1 == 0 {
                continue;
            }
            let low = self.returned[k].saturating_sub(horizon.reach_ms(spec.day_ms));
            let picks = segment.rows_between(low, i64::MAX);
            if picks.is_empty() {
                continue;
            }
            let name = ForwardReturnSpec::output(*horizon);
            let values = match returns.iter().find(|(n, _)| *n == name) {
                Some((_, values)) => values.clone(),
                None => returns_across(&self.stretches(0, *horizon), *horizon, close),
            };
            let (mut rows, mut narrow) = (Vec::new(), Vec::new());
            let part = segment.part(streamed, spec, (k, *horizon), incremental, picks, values);
            part?.add_to(&mut rows, &mut narrow);
            push_part(
                steps,
                rows,
                narrow,
                &streamed.output,
                Parts::horizon(k),
                next,
            )?;
        }
        Ok(())
    }
}

/// The output rows of `frame` with the return at `horizon` (`values`, per event) and
/// the other returns null.
fn with_return(
    streamed: &Streamed,
    mut frame: Frame,
    spec: &ForwardReturnSpec,
    horizon: Horizon,
    values: ArrayRef,
) -> Result<Vec<RecordBatch>, EnrichError> {
    let events = frame.events.times.len();
    let mut columns = null_returns(Some(spec), events);
    let name = ForwardReturnSpec::output(horizon);
    for (column, column_values) in &mut columns {
        if *column == name {
            *column_values = values.clone();
        }
    }
    add_returns(&mut frame, columns);
    let schema = streamed.plan.schema.clone();
    EnrichOutput::of_frame(frame, schema, true, BTreeMap::new())?.collect()
}

/// Every forward return, null, as columns of `events` events.
fn null_returns(spec: Option<&ForwardReturnSpec>, events: usize) -> Vec<(String, ArrayRef)> {
    let horizons = spec.map_or(&[][..], |s| &s.horizons[..]);
    (horizons.iter())
        .map(|h| {
            let values = arrow::array::new_null_array(&DataType::Float64, events);
            (ForwardReturnSpec::output(*h), values)
        })
        .collect()
}

/// The parts of a segment's rows that settle when it is cut (with incremental
/// provisional results, for the next one, at `next`), pushed to `steps`: every row's
/// [`Parts::BASE`] (its returns null), and the [`Parts::REVISED`] of those that no rule
/// holds open; the rows held open go to `streamed.open`, and those of them that settled
/// meanwhile go on with their [`Parts::REVISED`]. With withdrawals the rows held open
/// go on with their [`Parts::REVISED`] as they are too, and their changes at the next
/// result ([`KeyedDate::changed_open`]). Returns the segment's rows as output (for
/// [`Segment::part`]), no batch empty. With narrow parts (`kept`, when the rows go on
/// whole: [`Incremental::narrow`]) those batches go on numbered from `kept`.
fn cut_parts(
    streamed: &mut Streamed,
    frame: &Frame,
    ruled: &[Revisions],
    returns: Option<&ForwardReturnSpec>,
    (incremental, kept): (Incremental, Option<u64>),
    next: i64,
    steps: &mut Vec<Step>,
) -> Result<Vec<RecordBatch>, EnrichError> {
    let mut frame = frame.clone();
    let events = frame.events.times.len();
    add_returns(&mut frame, null_returns(returns, events));
    let schema = streamed.plan.schema.clone();
    let mut all: Vec<RecordBatch> =
        EnrichOutput::of_frame(frame, schema, true, BTreeMap::new())?.collect::<Result<_, _>>()?;
    all.retain(|batch| batch.num_rows() > 0);
    let open = &mut streamed.open;
    let (mut opened, mut rest, mut settled) = (Vec::new(), all.clone(), Vec::new());
    // With narrow revised values, how many open entries each numbered batch has.
    let mut open_counts = Vec::new();
    if incremental.revised && open.active {
        match (&mut streamed.placed, kept) {
            // Narrow revised values: the open entries by where they went out.
            (Some(placed), Some(first)) => {
                for revision in ruled {
                    placed.change(revision);
                }
                let epoch = streamed.carried.first().map_or(0, |c| c.epoch);
                open_counts = open_counts_of(&placed.hold(&all, first, ruled, epoch)?);
            }
            _ => {
                for revision in ruled {
                    open.revise(revision);
                }
                // With withdrawals the rows held go on as the others do: `all`, unparted.
                let (held, others) = open.hold_rows(&all, !incremental.withdraw)?;
                if !incremental.withdraw {
                    (opened, rest) = (held, others);
                }
            }
        }
        match incremental.withdraw {
            // The rows that closed since the last result, as they were and are.
            true if streamed.open.worth() => withdraw_changed(streamed, next, steps, &mut settled)?,
            true => {}
            false => streamed.open.flush(false, &mut settled)?,
        }
    }
    debug_assert!(
        kept.is_none() || rest.len() == all.len(),
        "numbered rows go whole"
    );
    let output = &streamed.output;
    for (rows, parts, kept, open) in [
        (rest, Parts::BASE.with(Parts::REVISED), kept, open_counts),
        (opened, Parts::BASE, None, Vec::new()),
        (settled, Parts::REVISED, None, Vec::new()),
    ] {
        let rows = project(rows, output)?;
        if !rows.is_empty() {
            steps.push(Step::Settled {
                rows,
                parts,
                next,
                kept,
                open,
            });
        }
    }
    Ok(all)
}

/// The rows held open that changed since they were sent ([`Held::flush_changes`]): their
/// [`Parts::REVISED`] as sent, withdrawn from the provisional result at `next` on
/// (pushed to `steps`), and the rows as they are now, to send again (pushed to `sent`).
fn withdraw_changed(
    streamed: &mut Streamed,
    next: i64,
    steps: &mut Vec<Step>,
    sent: &mut Vec<RecordBatch>,
) -> Result<(), EnrichError> {
    let mut withdrawn = Vec::new();
    if streamed.narrow.is_some() {
        // Narrow: both go as they are, for the groups the aggregate kept.
        let mut again = Vec::new();
        let placed = (streamed.placed.as_mut())
            .ok_or_else(|| placed_error("narrow changes without their places".to_owned()))?;
        placed.flush(&mut withdrawn, &mut again)?;
        if let Some(idle) = &streamed.idle {
            withdrawn = idle.withdrawn(withdrawn)?;
        }
        for (rows, withdrawn) in [(withdrawn, true), (again, false)] {
            if !rows.is_empty() {
                let parts = Parts::REVISED;
                steps.push(Step::Revised {
                    rows,
                    parts,
                    next,
                    withdrawn,
                });
            }
        }
        return Ok(());
    }
    streamed.open.flush_changes(&mut withdrawn, sent)?;
    let rows = project(withdrawn, &streamed.output)?;
    if !rows.is_empty() {
        let parts = Parts::REVISED;
        steps.push(Step::Withdrawn { rows, parts, next });
    }
    Ok(())
}

/// The columns an open entry is held as with narrow revised values: `row_id`, the
/// revised columns that are in the output and the place columns (`places`, bits over
/// the keyed stage's kept columns); none when a place column is not in the output.
fn narrow_columns(spec: &EnrichSpec, streamed: &Streamed, places: u64) -> Option<Vec<String>> {
    let mut columns = vec![ROW_ID.to_owned()];
    let revised = streamed.revised();
    columns.extend(revised.filter(|c| streamed.output.column_with_name(c).is_some()));
    let keep = spec.keep.as_ref()?;
    for (i, column) in keep.iter().enumerate().take(64) {
        if places >> i & 1 == 1 && !columns.contains(column) {
            streamed.output.column_with_name(column)?;
            columns.push(column.clone());
        }
    }
    Some(columns)
}

/// The open entries of a date by where they went out, when their rule says
/// ([`EnrichRule::places`], [`Revisions::places`]): an entry is held as its numbered
/// batch and row and its place columns, in the cut that sent it, at its place in that
/// call's `open`; a change carries the entry's place and its values as they last went
/// out, so no held rows are searched, moved or compacted. A cut's places go once every
/// entry of it settled.
struct Placed {
    /// The narrow rows' columns: `row_id`, the revised ones, the place columns.
    fields: Vec<Field>,
    /// Which of `fields` are the place columns.
    places: Vec<usize>,
    /// By epoch (a cut's call of the rules), the places of its open entries.
    cuts: Vec<Option<CutPlaces>>,
    /// The changes since the last flush, in order.
    changes: Vec<Revisions>,
    /// Each open row's place in its call's `open`, by row id from the lowest, or by
    /// row id when they are spread far (both reused from cut to cut).
    index: Vec<u32>,
    by_id: FxHashMap<u64, u32>,
}

/// Where one cut's open entries went out, by their place in the call's `open`.
struct CutPlaces {
    kept_batch: Vec<u64>,
    kept_row: Vec<u32>,
    /// The place columns.
    values: Vec<ArrayRef>,
    /// How many of its entries have not settled.
    live: usize,
}

impl Placed {
    /// The store, when the one rule that revises a column of the output says where
    /// its rows went out and the entries go narrow.
    fn of(streamed: &Streamed) -> Option<Placed> {
        let narrow = streamed.narrow.as_ref()?;
        if !streamed.plan.spec.revisions_placed() {
            return None;
        }
        let revised: Vec<String> = streamed.revised().collect();
        let mut fields = Vec::with_capacity(narrow.len());
        for name in narrow {
            fields.push(streamed.plan.schema.field_with_name(name).ok()?.clone());
        }
        let places = (fields.iter().enumerate())
            .filter(|(_, f)| f.name() != ROW_ID && !revised.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        Some(Placed {
            fields,
            places,
            cuts: Vec::new(),
            changes: Vec::new(),
            index: Vec::new(),
            by_id: FxHashMap::default(),
        })
    }

    /// Takes a rule's changes (sent at the next flush).
    fn change(&mut self, revisions: &Revisions) {
        if !revisions.row_ids.is_empty() {
            self.changes.push(Revisions {
                row_ids: revisions.row_ids.clone(),
                columns: revisions.columns.clone(),
                settled: revisions.settled.clone(),
                open: Vec::new(),
                places: revisions.places.clone(),
                before: revisions.before.clone(),
            });
        }
    }

    /// Holds the places of the open entries of a cut's output `rows` (numbered from
    /// `first`) that the cut's call of the rules (`ruled`, at `epoch`) opened; returns
    /// which rows each batch has (none when it has none).
    fn hold(
        &mut self,
        rows: &[RecordBatch],
        first: u64,
        ruled: &[Revisions],
        epoch: u32,
    ) -> Result<Vec<Option<BooleanArray>>, EnrichError> {
        let Some(open) = ruled.iter().map(|r| &r.open).find(|open| !open.is_empty()) else {
            return Ok(vec![None; rows.len()]);
        };
        // Each open row's place in `open`, by its row id's offset from the smallest (a
        // cut's row ids are near one another: a stretch of the input), or by a map when
        // they are spread far.
        let low = *open.iter().min().expect("not empty");
        let span = (open.iter().max().expect("not empty") - low) as usize + 1;
        let dense = span <= 16 * open.len() + (1 << 16);
        let (index, by_id) = (&mut self.index, &mut self.by_id);
        index.clear();
        by_id.clear();
        match dense {
            true => {
                index.resize(span, u32::MAX);
                for (k, id) in open.iter().enumerate() {
                    index[(id - low) as usize] = k as u32;
                }
            }
            false => by_id.extend(open.iter().enumerate().map(|(k, id)| (*id, k as u32))),
        }
        let place_of = |id: u64| match dense {
            true => match id.checked_sub(low) {
                Some(offset) if (offset as usize) < span => index[offset as usize],
                _ => u32::MAX,
            },
            false => by_id.get(&id).copied().unwrap_or(u32::MAX),
        };
        let mut in_order = vec![(usize::MAX, 0usize); open.len()];
        let mut masks = Vec::with_capacity(rows.len());
        let mut found = 0;
        for (b, batch) in rows.iter().enumerate() {
            let ids = row_ids(batch)?.values();
            let before = found;
            let mask = BooleanBuffer::collect_bool(ids.len(), |row| {
                let k = place_of(ids[row]);
                if k != u32::MAX {
                    in_order[k as usize] = (b, row);
                    found += 1;
                }
                k != u32::MAX
            });
            masks.push((found > before).then(|| BooleanArray::new(mask, None)));
        }
        if found != open.len() || in_order.iter().any(|(b, _)| *b == usize::MAX) {
            return Err(placed_error(format!(
                "a rule opened {} rows and its output has {found}",
                open.len()
            )));
        }
        let mut values = Vec::with_capacity(self.places.len());
        for c in &self.places {
            let name = self.fields[*c].name();
            let sources = (rows.iter())
                .map(|batch| batch.column_by_name(name).map(|a| a.as_ref()))
                .collect::<Option<Vec<&dyn Array>>>()
                .ok_or_else(|| placed_error(format!("no place column {name}")))?;
            values.push(arrow::compute::interleave(&sources, &in_order).map_err(output_error)?);
        }
        let epoch = epoch as usize;
        if self.cuts.len() <= epoch {
            self.cuts.resize_with(epoch + 1, || None);
        }
        self.cuts[epoch] = Some(CutPlaces {
            kept_batch: in_order.iter().map(|(b, _)| first + *b as u64).collect(),
            kept_row: in_order.iter().map(|(_, r)| *r as u32).collect(),
            values,
            live: open.len(),
        });
        Ok(masks)
    }

    /// Sends the changes since the last flush: each entry as it last went out
    /// (`withdrawn`) and as it is now (`sent`, with whether it settles), narrow. A cut
    /// whose entries all settled lets its places go.
    fn flush(
        &mut self,
        withdrawn: &mut Vec<RecordBatch>,
        sent: &mut Vec<RecordBatch>,
    ) -> Result<(), EnrichError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        // The live cuts, as sources to pick the place columns from.
        let mut source_of = vec![usize::MAX; self.cuts.len()];
        let mut live = Vec::new();
        for (epoch, cut) in self.cuts.iter().enumerate() {
            if let Some(cut) = cut {
                source_of[epoch] = live.len();
                live.push(cut);
            }
        }
        let mut out = Vec::with_capacity(self.changes.len());
        for revisions in &self.changes {
            let n = revisions.row_ids.len();
            if revisions.places.len() != n {
                return Err(placed_error(
                    "a rule's changes do not say where their rows went out".to_owned(),
                ));
            }
            let (mut kept_batch, mut kept_row) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut picks = Vec::with_capacity(n);
            for (epoch, place) in &revisions.places {
                let (e, p) = (*epoch as usize, *place as usize);
                let source = source_of.get(e).copied().unwrap_or(usize::MAX);
                let Some(cut) = live.get(source).filter(|cut| p < cut.kept_row.len()) else {
                    return Err(placed_error(format!(
                        "a change of a row that no cut sent open (epoch {epoch}, place {place})"
                    )));
                };
                kept_batch.push(cut.kept_batch[p]);
                kept_row.push(cut.kept_row[p]);
                picks.push((source, p));
            }
            let mut places = Vec::with_capacity(self.places.len());
            for k in 0..self.places.len() {
                let arrays: Vec<&dyn Array> =
                    live.iter().map(|cut| cut.values[k].as_ref()).collect();
                places.push(arrow::compute::interleave(&arrays, &picks).map_err(output_error)?);
            }
            let kept: [ArrayRef; 2] = [
                Arc::new(UInt64Array::from(kept_batch)),
                Arc::new(UInt32Array::from(kept_row)),
            ];
            let before = self.narrow_rows(revisions, &revisions.before, &places, &kept)?;
            let now = self.narrow_rows(revisions, &revisions.columns, &places, &kept)?;
            let settles = BooleanArray::from(revisions.settled.clone());
            out.push((before, with_settles(&now, settles)));
        }
        for revisions in std::mem::take(&mut self.changes) {
            for ((epoch, _), settled) in revisions.places.iter().zip(&revisions.settled) {
                let slot = &mut self.cuts[*epoch as usize];
                if let (true, Some(cut)) = (*settled, slot.as_mut()) {
                    cut.live -= 1;
                    if cut.live == 0 {
                        *slot = None;
                    }
                }
            }
        }
        for (before, now) in out {
            withdrawn.push(before);
            sent.push(now);
        }
        Ok(())
    }

    /// Narrow rows of `revisions`' entries with the revised columns `values`, the
    /// place columns `places` and their batch numbers and rows `kept`.
    fn narrow_rows(
        &self,
        revisions: &Revisions,
        values: &[(String, ArrayRef)],
        places: &[ArrayRef],
        kept: &[ArrayRef; 2],
    ) -> Result<RecordBatch, EnrichError> {
        let n = revisions.row_ids.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.fields.len() + 2);
        let mut place = places.iter();
        for (i, field) in self.fields.iter().enumerate() {
            let column = if field.name() == ROW_ID {
                Arc::new(UInt64Array::from(revisions.row_ids.clone())) as ArrayRef
            } else if self.places.contains(&i) {
                place.next().expect("a value per place column").clone()
            } else {
                match values.iter().find(|(c, _)| c == field.name()) {
                    Some((_, v)) if v.data_type() == field.data_type() => v.clone(),
                    Some((_, v)) => {
                        arrow::compute::cast(v, field.data_type()).map_err(output_error)?
                    }
                    None => arrow::array::new_null_array(field.data_type(), n),
                }
            };
            columns.push(column);
        }
        let mut fields = self.fields.clone();
        fields.push(Field::new(KEPT_BATCH, DataType::UInt64, false));
        fields.push(Field::new(KEPT_ROW, DataType::UInt32, false));
        columns.extend(kept.iter().cloned());
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(output_error)
    }
}

/// An open entry's change that [`Placed`] cannot place: a rule broke its promise.
fn placed_error(message: String) -> EnrichError {
    output_error(arrow::error::ArrowError::InvalidArgumentError(message))
}

/// The columns that tell an open entry sent idle ([`Idle`]): the revised columns of
/// its narrow row, and the place columns of `finite` (bits over the kept columns).
fn idle_columns(spec: &EnrichSpec, streamed: &Streamed, finite: u64) -> Option<Idle> {
    let narrow = streamed.narrow.as_ref()?;
    let revised: Vec<String> = streamed.revised().filter(|c| narrow.contains(c)).collect();
    let keep = spec.keep.as_ref()?;
    let finite = (keep.iter().enumerate().take(64))
        .filter(|(i, _)| finite >> i & 1 == 1)
        .map(|(_, column)| narrow.contains(column).then(|| column.clone()))
        .collect::<Option<Vec<_>>>()?;
    Some(Idle { revised, finite })
}

/// The forward returns as columns of a segment's events.
fn add_returns(frame: &mut Frame, returns: Vec<(String, ArrayRef)>) {
    for (name, values) in returns {
        frame.added.push(Added {
            name,
            values,
            per_event: true,
        });
    }
}

/// Runs a segment's rows through the rules as a continuation of the segments before
/// it (each symbol's state in `carried`); returns the changes the rules made to rows
/// of this or earlier segments.
fn rules(
    plan: &RulePlan,
    frame: &mut Frame,
    counts: &mut BTreeMap<String, u64>,
    carried: &mut [Carried],
) -> Result<Vec<Revisions>, EnrichError> {
    // The rules see the symbols with rows in this segment.
    let runs = std::mem::take(&mut frame.runs);
    let symbols: Vec<u32> = (0..runs.len() - 1)
        .filter(|s| runs[s + 1] > runs[*s])
        .map(|s| s as u32)
        .collect();
    frame.runs = symbols.iter().map(|s| runs[*s as usize]).collect();
    frame.runs.push(*runs.last().expect("runs end"));
    for carried in carried.iter_mut() {
        carried.epoch += 1;
    }
    let mut revisions = Vec::new();
    plan.run_resumed(frame, counts, &symbols, carried, &mut revisions)?;
    Ok(revisions)
}

/// A segment's rows once through the rules: takes the changes the rules made
/// (`revisions`) into `held`, adds the `returns` not added yet, and pushes the output
/// rows that no rule may change any more to `out` (the others wait in `held`).
fn settle(
    plan: &RulePlan,
    held: &mut Held,
    mut frame: Frame,
    returns: Vec<(String, ArrayRef)>,
    revisions: Vec<Revisions>,
    out: &mut Vec<RecordBatch>,
) -> Result<(), EnrichError> {
    add_returns(&mut frame, returns);
    for revision in &revisions {
        held.revise(revision);
    }
    let schema = plan.schema.clone();
    let rows: Vec<RecordBatch> =
        EnrichOutput::of_frame(frame, schema, true, BTreeMap::new())?.collect::<Result<_, _>>()?;
    // The rows this call opened wait in `held`; the others go on.
    out.extend(held.hold_rows(&rows, true)?.1);
    held.flush(false, out)
}

/// [`settle`] with open entries in place ([`EnrichSpec::open_in_place`]): every row of
/// the segment goes on now, in batches numbered from `first` (an open entry with its
/// revised columns null, held narrow), and the held entries that settled go narrow
/// with their values ([`Step::Revised`]). Returns how many batches it numbered.
fn settle_in_place(
    streamed: &mut Streamed,
    mut frame: Frame,
    returns: Vec<(String, ArrayRef)>,
    revisions: Vec<Revisions>,
    first: u64,
    steps: &mut Vec<Step>,
) -> Result<u64, EnrichError> {
    add_returns(&mut frame, returns);
    // (FIFO resumed reports settling changes alone; a rule may report others too.)
    for revision in &revisions {
        streamed.held.revise(revision);
    }
    let schema = streamed.plan.schema.clone();
    let mut rows: Vec<RecordBatch> =
        EnrichOutput::of_frame(frame, schema, true, BTreeMap::new())?.collect::<Result<_, _>>()?;
    rows.retain(|batch| batch.num_rows() > 0);
    let columns = streamed.narrow.as_ref().expect("open entries in place");
    let masks = streamed.held.hold_narrow(&rows, first, columns)?;
    let revised: Vec<String> = streamed.revised().collect();
    for (batch, mask) in rows.iter_mut().zip(&masks) {
        if let Some(open) = mask {
            *batch = null_where(batch, &revised, open)?;
        }
    }
    let numbered = rows.len() as u64;
    let rows = project(rows, &streamed.output)?;
    if !rows.is_empty() {
        steps.push(Step::Settled {
            rows,
            parts: Parts::ALL,
            next: FINAL,
            kept: Some(first),
            open: open_counts_of(&masks),
        });
    }
    let mut settled = Vec::new();
    streamed.held.flush(false, &mut settled)?;
    push_settling(settled, steps);
    Ok(numbered)
}

/// Pushes held entries' values, narrow, each the last it has (they settled, or the
/// date ended): [`Step::Revised`] for the final result, with [`SETTLES`] true.
fn push_settling(rows: Vec<RecordBatch>, steps: &mut Vec<Step>) {
    let rows: Vec<RecordBatch> = (rows.into_iter())
        .filter(|batch| batch.num_rows() > 0)
        .map(|batch| {
            let all = BooleanArray::new(BooleanBuffer::new_set(batch.num_rows()), None);
            with_settles(&batch, all)
        })
        .collect();
    if !rows.is_empty() {
        steps.push(Step::Revised {
            rows,
            parts: Parts::REVISED,
            next: FINAL,
            withdrawn: false,
        });
    }
}

/// How many open entries each batch has, by [`Held::hold_narrow`]'s masks.
fn open_counts_of(masks: &[Option<BooleanArray>]) -> Vec<u32> {
    (masks.iter())
        .map(|mask| mask.as_ref().map_or(0, |m| m.true_count() as u32))
        .collect()
}

/// `batch` with its columns named in `names` null on the rows of `rows`.
fn null_where(
    batch: &RecordBatch,
    names: &[String],
    rows: &BooleanArray,
) -> Result<RecordBatch, EnrichError> {
    let valid = NullBuffer::new(!rows.values());
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    for name in names {
        let Some((i, _)) = schema.column_with_name(name) else {
            continue;
        };
        let data = columns[i].to_data();
        let nulls = NullBuffer::union(data.nulls(), Some(&valid));
        let data = (data.into_builder().nulls(nulls).build()).map_err(output_error)?;
        columns[i] = arrow::array::make_array(data);
    }
    RecordBatch::try_new(schema, columns).map_err(output_error)
}

impl Streamed {
    /// The columns the rules may change after a row is released ([`EnrichRule::revises`]).
    fn revised(&self) -> impl Iterator<Item = String> + '_ {
        self.plan.spec.rules.iter().flat_map(|r| r.revises())
    }

    /// Whether every revised column of the output can be null (an open entry's go on
    /// null in place: [`EnrichSpec::open_in_place`]); those pruned from it need not.
    fn revised_nullable(&self) -> bool {
        (self.revised())
            .all(|c| (self.output.field_with_name(&c)).map_or(true, |f| f.is_nullable()))
    }

    fn new(
        spec: &EnrichSpec,
        returns: Option<&ForwardReturnSpec>,
        schema: SchemaRef,
        provisional: bool,
    ) -> Result<Self, EnrichError> {
        check_streamable(spec, provisional)?;
        let output = RulePlan::new(spec, &schema)?.schema;
        // The rules after the returns, over the input and return columns, keeping
        // `row_id` where rows may be held (to find them again).
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut rules = spec.clone();
        if let Some(returns) = returns {
            let rule: Arc<dyn EnrichRule> = returns.rule();
            fields.extend(checked_outputs(rule.as_ref(), &fields)?);
            rules.rules.remove(0);
        }
        let holds = rules
            .rules
            .iter()
            .flat_map(|r| r.revises())
            .any(|c| output.column_with_name(&c).is_some());
        if let (true, Some(keep)) = (holds, &mut rules.keep) {
            keep.push(ROW_ID.to_owned());
        }
        let plan = RulePlan::new(&rules, &Schema::new(fields))?;
        let read: Vec<&String> = plan.inputs.iter().flatten().collect();
        let needed = schema
            .fields()
            .iter()
            .map(|f| f.name())
            .filter(|name| {
                plan.schema.column_with_name(name).is_some()
                    || read.contains(name)
                    || returns.is_some_and(|r| &r.price == *name)
                    || *name == ELAPSED_MS
                    || *name == ROW_ID
            })
            .cloned()
            .collect();
        Ok(Streamed {
            carried: (0..plan.spec.rules.len())
                .map(|_| Carried::default())
                .collect(),
            held: Held::new(holds),
            open: Held::new(holds),
            narrow: None,
            idle: None,
            placed: None,
            schema,
            plan,
            output,
            needed,
            interner: SymbolInterner::default(),
            counts: BTreeMap::new(),
        })
    }
}

/// The rest of a date's output when it completes.
pub(super) enum Finished {
    /// The whole date through the batch kernel, built as it is consumed.
    Whole(Box<EnrichOutput>),
    /// The last rows of a date released in segments, and the rules' counts for the date.
    Streamed {
        batches: std::vec::IntoIter<RecordBatch>,
        counts: BTreeMap<String, u64>,
    },
}

impl Iterator for Finished {
    type Item = Result<RecordBatch, EnrichError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Finished::Whole(output) => output.next(),
            Finished::Streamed { batches, .. } => batches.next().map(Ok),
        }
    }
}

impl Finished {
    /// The rules' counts for the date (complete once the iterator is exhausted).
    pub(super) fn counts(&self) -> &BTreeMap<String, u64> {
        match self {
            Finished::Whole(output) => output.counts(),
            Finished::Streamed { counts, .. } => counts,
        }
    }
}

/// Output rows that a rule may still change ([`Revisions::open`]), held until a change
/// settles them, with the changes to apply when they go. (One rule at most revises:
/// [`check_streamable`].)
struct Held {
    /// Whether anything is held at all (a rule revises a column of the output).
    active: bool,
    /// The rows that the last call opened: the only open rows its output can have.
    opened: RowSet,
    /// The held rows.
    batches: Vec<RecordBatch>,
    rows: usize,
    /// Each revised row's last change: (revision, index in it).
    changes: FxHashMap<u64, (u32, u32)>,
    /// The rows in `changes`: most rows of a batch have none, and a bit is cheaper to
    /// test than the map.
    changed_rows: RowSet,
    revisions: Vec<Vec<(String, ArrayRef)>>,
    /// The held rows settled since the held rows were last gone through.
    settled: RowSet,
    /// With withdrawals, the held rows that moved on (see [`Held::flush_changes`]).
    dead: Dead,
}

/// How many dead held rows beyond the live ones [`Held::flush_changes`] lets be before
/// it compacts the batches (none in unit tests, to test the compaction).
const COMPACT_SLACK: usize = if cfg!(test) { 0 } else { 4096 };

/// Rows held ([`Held::hold_rows`]), and the others.
type HeldAndRest = (Vec<RecordBatch>, Vec<RecordBatch>);

/// Which held rows are dead, when changed rows move to batches of their own instead of
/// their batches being rewritten ([`Held::flush_changes`]): a row that changed since
/// it was held (it went on to a batch of its own, or settled) stays in its batch,
/// dead, until the batches are compacted.
#[derive(Default)]
struct Dead {
    /// Per held batch, which of its rows are dead (none past its end, or for the
    /// batches past the end).
    rows: Vec<Vec<bool>>,
    /// How many there are.
    count: usize,
}

impl Dead {
    fn is(&self, batch: usize, row: usize) -> bool {
        (self.rows.get(batch)).is_some_and(|rows| rows.get(row).copied().unwrap_or(false))
    }

    fn mark(&mut self, batch: usize, row: usize, len: usize) {
        if self.rows.len() <= batch {
            self.rows.resize_with(batch + 1, Vec::new);
        }
        let rows = &mut self.rows[batch];
        if rows.is_empty() {
            rows.resize(len, false);
        }
        self.count += usize::from(!rows[row]);
        rows[row] = true;
    }
}

impl Held {
    fn new(active: bool) -> Self {
        Held {
            active,
            opened: RowSet::default(),
            batches: Vec::new(),
            rows: 0,
            changes: FxHashMap::default(),
            changed_rows: RowSet::default(),
            revisions: Vec::new(),
            settled: RowSet::default(),
            dead: Dead::default(),
        }
    }

    /// A copy of the rows and their changes, for a provisional result (the batches
    /// and the changed values are shared).
    fn fork(&self) -> Held {
        Held {
            active: self.active,
            opened: RowSet::default(),
            batches: self.batches.clone(),
            rows: self.rows,
            changes: self.changes.clone(),
            changed_rows: self.changed_rows.clone(),
            revisions: self.revisions.clone(),
            settled: RowSet::default(),
            // A fork is flushed whole (`flush(true)`), never by its changes.
            dead: Dead::default(),
        }
    }

    /// Takes a rule's changes and open rows.
    fn revise(&mut self, revisions: &Revisions) {
        if !self.active {
            return;
        }
        self.change(revisions);
        let settled = (revisions.row_ids.iter()).zip(&revisions.settled);
        self.settled
            .extend(settled.filter(|(_, s)| **s).map(|(row_id, _)| *row_id));
        self.opened.extend(revisions.open.iter().copied());
    }

    /// Moves the rows of `rows` that the last revisions opened into the held rows;
    /// returns them, and the others when `rest`.
    fn hold_rows(&mut self, rows: &[RecordBatch], rest: bool) -> Result<HeldAndRest, EnrichError> {
        if self.opened.is_empty() {
            return Ok((Vec::new(), rows.to_vec()));
        }
        let (mut held, mut others) = (Vec::new(), Vec::new());
        for batch in rows {
            let open = rows_in(batch, &self.opened)?;
            match open.true_count() {
                0 => others.push(batch.clone()),
                n if n == batch.num_rows() => held.push(batch.clone()),
                _ => {
                    held.push(filter(batch, &open)?);
                    if rest {
                        let not_open = arrow::compute::not(&open).map_err(output_error)?;
                        others.push(filter(batch, &not_open)?);
                    }
                }
            }
        }
        self.rows += held.iter().map(RecordBatch::num_rows).sum::<usize>();
        self.batches.extend(held.iter().cloned());
        self.opened.clear();
        Ok((held, others))
    }

    /// [`Held::hold_rows`] with narrow revised values: holds, of the rows of `rows` (the
    /// batches numbered from `first`) that the last revisions opened, the `columns`
    /// alone, with each row's batch number and place in it; returns which rows each
    /// batch has (none when it has none).
    fn hold_narrow(
        &mut self,
        rows: &[RecordBatch],
        first: u64,
        columns: &[String],
    ) -> Result<Vec<Option<BooleanArray>>, EnrichError> {
        if self.opened.is_empty() {
            return Ok(vec![None; rows.len()]);
        }
        let mut masks = Vec::with_capacity(rows.len());
        for (b, batch) in rows.iter().enumerate() {
            let open = rows_in(batch, &self.opened)?;
            let n = open.true_count();
            if n == 0 {
                masks.push(None);
                continue;
            }
            let schema = batch.schema();
            let indices = (columns.iter())
                .map(|c| schema.index_of(c).map_err(output_error))
                .collect::<Result<Vec<_>, _>>()?;
            let narrow = filter(&batch.project(&indices).map_err(output_error)?, &open)?;
            let places =
                UInt32Array::from_iter_values(open.values().set_indices().map(|i| i as u32));
            let numbers = UInt64Array::from_value(first + b as u64, n);
            let narrow = with_columns(
                &narrow,
                vec![
                    (KEPT_BATCH.to_owned(), Arc::new(numbers) as ArrayRef),
                    (KEPT_ROW.to_owned(), Arc::new(places) as ArrayRef),
                ],
            );
            self.rows += n;
            self.batches.push(narrow);
            masks.push(Some(open));
        }
        self.opened.clear();
        Ok(masks)
    }

    /// Takes a rule's changes to rows' values only: all that a provisional result
    /// needs (it sends every row, open or settled).
    fn change(&mut self, revisions: &Revisions) {
        if !self.active {
            return;
        }
        let index = self.revisions.len() as u32;
        for (i, row_id) in revisions.row_ids.iter().enumerate() {
            self.changes.insert(*row_id, (index, i as u32));
            self.changed_rows.insert(*row_id);
        }
        self.revisions.push(revisions.columns.clone());
    }

    /// Sends the held rows that settled, with their changes, to `out` (all of them when
    /// `all`): when enough settled or changed for the pass to pay for itself.
    fn flush(&mut self, all: bool, out: &mut Vec<RecordBatch>) -> Result<(), EnrichError> {
        if !all && !self.worth() {
            return Ok(());
        }
        let mut kept = Vec::new();
        for batch in std::mem::take(&mut self.batches) {
            let batch = self.changed(batch)?;
            if all {
                out.push(batch);
                continue;
            }
            let settled = rows_in(&batch, &self.settled)?;
            let count = settled.true_count();
            if count < batch.num_rows() {
                let open = arrow::compute::not(&settled).map_err(output_error)?;
                kept.push(filter(&batch, &open)?);
            }
            if count > 0 {
                out.push(filter(&batch, &settled)?);
            }
        }
        self.rows = kept.iter().map(RecordBatch::num_rows).sum();
        self.batches = kept;
        self.clear_changes();
        Ok(())
    }

    /// Forgets the changes and settled rows taken since the last pass (it applied them).
    fn clear_changes(&mut self) {
        self.changes.clear();
        self.changed_rows.clear();
        self.revisions.clear();
        self.settled.clear();
    }

    /// Whether enough held rows settled or changed for a pass over them to pay for
    /// itself.
    fn worth(&self) -> bool {
        let worth =
            2 * self.settled.len() >= self.rows.max(1) || self.changes.len() > 2 * self.rows + 4096;
        worth && !self.batches.is_empty()
    }

    /// Sends the held rows that changed since the last pass, as they were
    /// (`withdrawn`) and with their changes (`sent`). The changed rows still open move
    /// to a batch of their own, as they are now; the batches they were in keep them,
    /// dead, until over half the held rows are dead. A pass goes over the held rows'
    /// ids (a bit each, mostly) and copies the changed rows alone.
    fn flush_changes(
        &mut self,
        withdrawn: &mut Vec<RecordBatch>,
        sent: &mut Vec<RecordBatch>,
    ) -> Result<(), EnrichError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        // A change of a row not held (it settled before) changes nothing. Each row
        // picked, and its change: (pick, revision, index in it).
        let capacity = self.changes.len();
        let (mut picks, mut changed) = (Vec::with_capacity(capacity), Vec::with_capacity(capacity));
        for (b, batch) in self.batches.iter().enumerate() {
            for (row, r, i) in self.changes_of(batch)? {
                if !self.dead.is(b, row) {
                    changed.push((picks.len(), r, i));
                    picks.push((b, row));
                }
            }
        }
        if !picks.is_empty() {
            let (before, after) = self.picked(&picks, &changed)?;
            withdrawn.push(before);
            for &(b, row) in &picks {
                self.dead.mark(b, row, self.batches[b].num_rows());
            }
            let settled = match self.settled.is_empty() {
                true => None,
                false => Some(rows_in(&after, &self.settled)?),
            };
            sent.push(after.clone());
            let open = match settled {
                None => after,
                Some(settled) => {
                    let open = arrow::compute::not(&settled).map_err(output_error)?;
                    filter(&after, &open)?
                }
            };
            self.rows = self.rows + open.num_rows() - picks.len();
            if open.num_rows() > 0 {
                self.batches.push(open);
            }
            if self.dead.count > self.rows + COMPACT_SLACK {
                self.compact()?;
            }
        }
        self.clear_changes();
        Ok(())
    }

    /// Keeps the live rows of the batches alone, in one batch (a pass over the held
    /// rows, and each take from them, costs per batch too).
    fn compact(&mut self) -> Result<(), EnrichError> {
        let dead = std::mem::take(&mut self.dead);
        let mut kept = Vec::new();
        for (b, batch) in std::mem::take(&mut self.batches).into_iter().enumerate() {
            match dead.rows.get(b).filter(|rows| !rows.is_empty()) {
                None => kept.push(batch),
                Some(rows) => {
                    let live = BooleanArray::from_iter(rows.iter().map(|d| Some(!d)));
                    if live.true_count() > 0 {
                        kept.push(filter(&batch, &live)?);
                    }
                }
            }
        }
        if kept.len() > 1 {
            let schema = kept[0].schema();
            kept = vec![arrow::compute::concat_batches(&schema, &kept).map_err(output_error)?];
        }
        self.batches = kept;
        Ok(())
    }

    /// The rows of `batch` with a change: (row, revision, index in it).
    fn changes_of(&self, batch: &RecordBatch) -> Result<Vec<(usize, u32, u32)>, EnrichError> {
        Ok((row_ids(batch)?.values().iter().enumerate())
            .filter(|(_, id)| self.changed_rows.contains(**id))
            .filter_map(|(row, id)| self.changes.get(id).map(|(r, i)| (row, *r, *i)))
            .collect())
    }

    /// `batch` with the last changes of its rows applied.
    fn changed(&self, batch: RecordBatch) -> Result<RecordBatch, EnrichError> {
        if self.changes.is_empty() {
            return Ok(batch);
        }
        let changed = self.changes_of(&batch)?;
        self.apply(batch, &changed)
    }

    /// `batch` with `changed` applied: (row, revision, index in it).
    fn apply(
        &self,
        batch: RecordBatch,
        changed: &[(usize, u32, u32)],
    ) -> Result<RecordBatch, EnrichError> {
        if changed.is_empty() {
            return Ok(batch);
        }
        let schema = batch.schema();
        let mut columns = batch.columns().to_vec();
        for (c, field) in schema.fields().iter().enumerate() {
            let rows = || (0..batch.num_rows()).map(|row| (0, row)).collect();
            let column = columns[c].as_ref();
            if let Some(values) = self.changed_column(field.name(), vec![column], rows, changed)? {
                columns[c] = values;
            }
        }
        RecordBatch::try_new(schema, columns).map_err(output_error)
    }

    /// The held rows at `picks` (batch, row) as they are, and with `changed` applied
    /// (pick, revision, index in it): each column picked once from the batches, with
    /// no batch taken from and joined first.
    fn picked(
        &self,
        picks: &[(usize, usize)],
        changed: &[(usize, u32, u32)],
    ) -> Result<(RecordBatch, RecordBatch), EnrichError> {
        let schema = self.batches[picks[0].0].schema();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (c, field) in schema.fields().iter().enumerate() {
            let held: Vec<&dyn Array> = (self.batches.iter())
                .map(|batch| batch.column(c).as_ref())
                .collect();
            let column = arrow::compute::interleave(&held, picks).map_err(output_error)?;
            let rows = || picks.to_vec();
            let changed = self.changed_column(field.name(), held, rows, changed)?;
            after.push(changed.unwrap_or_else(|| column.clone()));
            before.push(column);
        }
        Ok((
            RecordBatch::try_new(schema.clone(), before).map_err(output_error)?,
            RecordBatch::try_new(schema, after).map_err(output_error)?,
        ))
    }

    /// Column `name` of the rows that `rows()` picks from `sources` (arrays of its
    /// type), with `changed` applied (pick, revision, index in it); none when no
    /// revision changes the column.
    fn changed_column<'a>(
        &'a self,
        name: &str,
        mut sources: Vec<&'a dyn Array>,
        rows: impl FnOnce() -> Vec<(usize, usize)>,
        changed: &[(usize, u32, u32)],
    ) -> Result<Option<ArrayRef>, EnrichError> {
        // The arrays to pick from: the rows', then each revision's of this column.
        let held = sources.len();
        let mut source_of = vec![usize::MAX; self.revisions.len()];
        for (r, revision) in self.revisions.iter().enumerate() {
            if let Some((_, values)) = revision.iter().find(|(n, _)| n == name) {
                source_of[r] = sources.len();
                sources.push(values.as_ref());
            }
        }
        if sources.len() == held {
            return Ok(None);
        }
        let mut picks = rows();
        for &(pick, r, i) in changed {
            if source_of[r as usize] != usize::MAX {
                picks[pick] = (source_of[r as usize], i as usize);
            }
        }
        let values = arrow::compute::interleave(&sources, &picks).map_err(output_error)?;
        Ok(Some(values))
    }
}

/// A set of `row_id`s: a bit each below [`RowSet::LIMIT`] (row ids are a row's place
/// in its date's input, from 0, so the bits are dense), a hash set above. Testing and
/// adding a bit is much cheaper than a hash map's; clearing zeroes the words set only.
#[derive(Clone, Debug, Default)]
struct RowSet {
    words: Vec<u64>,
    /// The words with a bit set, to clear.
    set_words: Vec<u32>,
    large: rustc_hash::FxHashSet<u64>,
    len: usize,
}

impl RowSet {
    /// Ids from here on go in the hash set (16 MB of bits below).
    const LIMIT: u64 = 1 << 27;

    fn insert(&mut self, id: u64) {
        if id >= Self::LIMIT {
            self.len += usize::from(self.large.insert(id));
            return;
        }
        let word = (id / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let (bits, bit) = (&mut self.words[word], 1 << (id % 64));
        if *bits == 0 {
            self.set_words.push(word as u32);
        }
        self.len += usize::from(*bits & bit == 0);
        *bits |= bit;
    }

    fn contains(&self, id: u64) -> bool {
        match id < Self::LIMIT {
            true => (self.words.get((id / 64) as usize)).is_some_and(|w| w >> (id % 64) & 1 == 1),
            false => self.large.contains(&id),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        for word in self.set_words.drain(..) {
            self.words[word as usize] = 0;
        }
        self.large.clear();
        self.len = 0;
    }
}

impl Extend<u64> for RowSet {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, ids: I) {
        ids.into_iter().for_each(|id| self.insert(id));
    }
}

/// A narrow batch of revised values with whether each entry settles ([`SETTLES`]).
fn with_settles(batch: &RecordBatch, settles: BooleanArray) -> RecordBatch {
    with_columns(
        batch,
        vec![(SETTLES.to_owned(), Arc::new(settles) as ArrayRef)],
    )
}

/// Which rows of `batch` have their `row_id` in `set`.
fn rows_in(batch: &RecordBatch, set: &RowSet) -> Result<BooleanArray, EnrichError> {
    let ids = row_ids(batch)?.values();
    let bits = BooleanBuffer::collect_bool(ids.len(), |i| set.contains(ids[i]));
    Ok(BooleanArray::new(bits, None))
}

fn output_error(source: arrow::error::ArrowError) -> EnrichError {
    EnrichError::Output { source }
}

fn filter(batch: &RecordBatch, keep: &BooleanArray) -> Result<RecordBatch, EnrichError> {
    arrow::compute::filter_record_batch(batch, keep).map_err(output_error)
}

/// The `row_id` column of an output batch.
fn row_ids(batch: &RecordBatch) -> Result<&arrow::array::UInt64Array, EnrichError> {
    batch
        .column_by_name(ROW_ID)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| EnrichError::MissingColumn {
            column: ROW_ID.to_owned(),
        })
}

/// The batches with the columns of `schema` (dropping `row_id` when only the holding
/// needed it).
fn project(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>, EnrichError> {
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|batch| {
            if batch.schema().fields().len() == schema.fields().len() {
                return Ok(batch);
            }
            let columns = (schema.fields().iter())
                .map(|f| {
                    batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                        EnrichError::MissingColumn {
                            column: f.name().clone(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(schema.clone(), columns).map_err(output_error)
        })
        .collect()
}

/// The prices of a segment's rows, in event order, as Float64.
fn return_prices(
    frame: &mut Frame,
    returns: &ForwardReturnSpec,
) -> Result<Float64Array, EnrichError> {
    let prices = frame.ordered(&returns.price)?;
    let prices = arrow::compute::cast(&prices, &DataType::Float64).map_err(|source| {
        EnrichError::ReturnPriceCast {
            column: returns.price.clone(),
            source,
        }
    })?;
    Ok(prices.as_primitive::<Float64Type>().clone())
}

/// The first selected row of `part` below `watermark`, as (`row_id`, `elapsed_ms`).
fn first_below(part: &SelectedRows, watermark: i64) -> Result<Option<(u64, i64)>, EnrichError> {
    let (elapsed, row_id) = event_values(part)?;
    let mut found = None;
    crate::batch::for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
        if found.is_none() && elapsed[r] < watermark {
            found = Some((row_id[r], elapsed[r]));
        }
    });
    Ok(found)
}

/// The smallest and largest `elapsed_ms` of a part's rows (it has some).
fn time_bounds(part: &SelectedRows) -> Result<(i64, i64), EnrichError> {
    let (elapsed, _) = event_values(part)?;
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    crate::batch::for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
        min = min.min(elapsed[r]);
        max = max.max(elapsed[r]);
    });
    Ok((min, max))
}

/// The part's rows below `watermark` and the others, each `None` when there are none.
fn split_at(
    part: Pending,
    watermark: i64,
) -> Result<(Option<SelectedRows>, Option<Pending>), EnrichError> {
    match part.times {
        Some((_, max)) if max < watermark => return Ok((Some(part.rows), None)),
        Some((min, _)) if min >= watermark => return Ok((None, Some(part))),
        _ => {}
    }
    let Pending { rows: part, times } = part;
    let (elapsed, _) = event_values(&part)?;
    // How many rows are below, and where the first row that is not is: rows come in
    // event order within the lateness, so the rows below are mostly the first ones,
    // and the part splits in two slices.
    let (mut below, mut seen, mut first_rest) = (0usize, 0usize, usize::MAX);
    crate::batch::for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
        let is_below = elapsed[r] < watermark;
        below += usize::from(is_below);
        if !is_below && first_rest == usize::MAX {
            first_rest = seen;
        }
        seen += 1;
    });
    let rest = seen - below;
    if rest == 0 {
        return Ok((Some(part), None));
    }
    if below == 0 {
        return Ok((None, Some(Pending { rows: part, times })));
    }
    if first_rest == below {
        let (batch, selection) = part;
        let (head, tail) = match selection {
            Some(rows) => (
                (batch.clone(), Some(rows.slice(0, below))),
                (batch, Some(rows.slice(below, rest))),
            ),
            None => (
                (batch.slice(0, below), None),
                (batch.slice(below, rest), None),
            ),
        };
        // The part's bounds still bound its tail.
        return Ok((Some(head), Some(Pending { rows: tail, times })));
    }
    let (mut below, mut rest) = (Vec::with_capacity(below), Vec::with_capacity(rest));
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    crate::batch::for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
        match elapsed[r] < watermark {
            true => below.push(r as u32),
            false => {
                rest.push(r as u32);
                (min, max) = (min.min(elapsed[r]), max.max(elapsed[r]));
            }
        }
    });
    let batch = part.0;
    let rest = Pending {
        rows: (batch.clone(), Some(rest.into())),
        times: Some((min, max)),
    };
    Ok((Some((batch, Some(below.into()))), Some(rest)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow::array::{Int64Array, UInt64Array};
    use proptest::prelude::*;

    use super::*;

    fn batch(rows: &[(u64, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                ROW_ID,
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ),
        ])
        .unwrap()
    }

    /// Adds `sign` times each row's value to `into`.
    fn tally(into: &mut BTreeMap<u64, i64>, batches: &[RecordBatch], sign: i64) {
        for batch in batches {
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let values = batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>();
            for (id, v) in ids.values().iter().zip(values.values()) {
                *into.entry(*id).or_default() += sign * v;
            }
        }
    }

    /// The (row, elapsed_ms) pairs a part selects, in its order.
    fn selected(part: &SelectedRows) -> Vec<(u64, i64)> {
        let (elapsed, row_id) = event_values(part).unwrap();
        let mut rows = Vec::new();
        crate::batch::for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
            rows.push((row_id[r], elapsed[r]));
        });
        rows
    }

    proptest! {
        /// A pending part splits at a watermark into its rows below it and the others,
        /// each in the part's order, whether the part has a selection or not, whether
        /// its times are bounded or not, and however its rows are out of order; the
        /// bounds kept bound the rows left.
        #[test]
        fn a_part_splits_into_its_rows_below_the_watermark_and_the_others(
            times in proptest::collection::vec(0i64..40, 1..30),
            select in proptest::option::of(proptest::collection::vec(proptest::bool::ANY, 30)),
            bounded in proptest::bool::ANY,
            watermark in 0i64..45,
        ) {
            let batch = RecordBatch::try_from_iter([
                (ELAPSED_MS, Arc::new(Int64Array::from(times.clone())) as ArrayRef),
                (ROW_ID, Arc::new(UInt64Array::from_iter_values(0..times.len() as u64))),
            ])
            .unwrap();
            let selection = select.map(|keep| {
                UInt32Array::from_iter_values((0..times.len() as u32).filter(|r| keep[*r as usize]))
            });
            let part = (batch, selection);
            let rows = selected(&part);
            prop_assume!(!rows.is_empty());
            let times = bounded.then(|| time_bounds(&part).unwrap());
            let (below, rest) = split_at(Pending { rows: part, times }, watermark).unwrap();
            let below = below.map(|p| selected(&p)).unwrap_or_default();
            let expected: Vec<_> = rows.iter().filter(|r| r.1 < watermark).copied().collect();
            prop_assert_eq!(below, expected);
            let expected: Vec<_> = rows.iter().filter(|r| r.1 >= watermark).copied().collect();
            match rest {
                None => prop_assert!(expected.is_empty()),
                Some(rest) => {
                    if let Some((min, max)) = rest.times {
                        prop_assert!(expected.iter().all(|r| min <= r.1 && r.1 <= max));
                    }
                    prop_assert_eq!(selected(&rest.rows), expected);
                }
            }
        }

        /// A row set holds what was added since it was cleared, below the bits' limit
        /// and above it, as a set does.
        #[test]
        fn a_row_set_is_a_set(
            rounds in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![0u64..300, (RowSet::LIMIT - 5)..(RowSet::LIMIT + 5)],
                    0..40,
                ),
                1..4,
            ),
        ) {
            let mut set = RowSet::default();
            for ids in rounds {
                set.clear();
                let mut model = std::collections::BTreeSet::new();
                for id in ids {
                    set.insert(id);
                    model.insert(id);
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.is_empty(), model.is_empty());
                for id in (0..310).chain((RowSet::LIMIT - 8)..(RowSet::LIMIT + 8)) {
                    prop_assert_eq!(set.contains(id), model.contains(&id), "{}", id);
                }
            }
        }

        /// Held rows whose values change over passes: what each pass withdraws and sends
        /// leaves every row counted once, with its last value, however the changes fall
        /// on the batches (moved rows, dead rows, compaction); settled rows go.
        #[test]
        fn withdrawn_and_sent_rows_leave_each_row_at_its_last_value(
            sizes in proptest::collection::vec(1usize..20, 1..5),
            passes in proptest::collection::vec(
                proptest::collection::vec((0u64..60, -50i64..50, proptest::bool::weighted(0.2)), 0..30),
                1..8,
            ),
        ) {
            let mut held = Held::new(true);
            let mut next_id = 0;
            // What was sent, per row; each row's last value; the rows still open.
            let (mut sent, mut last, mut now) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
            for size in sizes {
                let rows: Vec<(u64, i64)> = (next_id..next_id + size as u64).map(|id| (id, 1)).collect();
                next_id += size as u64;
                held.batches.push(batch(&rows));
                held.rows += rows.len();
                tally(&mut sent, &held.batches[held.batches.len() - 1..], 1);
                last.extend(rows.iter().copied());
                now.extend(rows);
            }
            for changes in passes {
                // One change per row a pass, of rows still held.
                let mut seen = std::collections::BTreeSet::new();
                let changes: Vec<(u64, i64, bool)> = changes
                    .into_iter()
                    .filter(|(id, ..)| now.contains_key(id) && seen.insert(*id))
                    .collect();
                held.revise(&Revisions {
                    row_ids: changes.iter().map(|c| c.0).collect(),
                    columns: vec![(
                        "v".to_owned(),
                        Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1))) as ArrayRef,
                    )],
                    settled: changes.iter().map(|c| c.2).collect(),
                    ..Revisions::default()
                });
                let (mut withdrawn, mut resent) = (Vec::new(), Vec::new());
                held.flush_changes(&mut withdrawn, &mut resent).unwrap();
                tally(&mut sent, &withdrawn, -1);
                tally(&mut sent, &resent, 1);
                for (id, v, settles) in changes {
                    now.insert(id, v);
                    last.insert(id, v);
                    if settles {
                        now.remove(&id);
                    }
                }
                let expected = last.clone();
                let counted: BTreeMap<u64, i64> = sent.iter().filter(|(_, v)| **v != 0).map(|(k, v)| (*k, *v)).collect();
                let expected: BTreeMap<u64, i64> = expected.into_iter().filter(|(_, v)| *v != 0).collect();
                prop_assert_eq!(&counted, &expected);
                // The held rows are the open ones, once each.
                prop_assert_eq!(held.rows, now.len());
                let mut live: Vec<u64> = Vec::new();
                for (b, batch) in held.batches.iter().enumerate() {
                    let ids = row_ids(batch).unwrap().values();
                    live.extend((ids.iter().enumerate()).filter(|(row, _)| !held.dead.is(b, *row)).map(|(_, id)| *id));
                }
                live.sort_unstable();
                prop_assert_eq!(live, now.keys().copied().collect::<Vec<_>>());
            }
        }
    }

    /// `Placed` finds a cut's open entries in its output in the order of the call's
    /// `open`, whether their row ids are near one another (an index over their range)
    /// or spread far (a map), and builds a change's rows from their places: withdrawn
    /// as last sent, sent as now with whether it settles; a cut's places go with its
    /// last entry.
    #[test]
    fn placed_entries_are_found_by_their_place_in_open_for_near_and_far_ids() {
        for spread in [1u64, 1 << 40] {
            let ids = [
                (0..5).map(|i| i * spread).collect::<Vec<_>>(),
                (5..9).map(|i| i * spread).collect(),
            ];
            let batches: Vec<RecordBatch> = (ids.iter())
                .map(|ids| {
                    let px = ids.iter().map(|i| (*i / spread) as f64 + 0.5);
                    RecordBatch::try_from_iter([
                        (ROW_ID, Arc::new(UInt64Array::from(ids.clone())) as ArrayRef),
                        ("v", Arc::new(Int64Array::from(vec![0; ids.len()]))),
                        ("px", Arc::new(Float64Array::from_iter_values(px))),
                    ])
                    .unwrap()
                })
                .collect();
            let mut placed = Placed {
                fields: vec![
                    Field::new(ROW_ID, DataType::UInt64, false),
                    Field::new("v", DataType::Int64, false),
                    Field::new("px", DataType::Float64, false),
                ],
                places: vec![2],
                cuts: Vec::new(),
                changes: Vec::new(),
                index: Vec::new(),
                by_id: FxHashMap::default(),
            };
            // The rule's order, not the output's.
            let open = vec![7 * spread, spread, 3 * spread];
            let ruled = [Revisions {
                open,
                ..Revisions::default()
            }];
            let masks = placed.hold(&batches, 10, &ruled, 3).unwrap();
            let set = |m: &Option<BooleanArray>| {
                m.as_ref()
                    .map(|m| m.values().set_indices().collect::<Vec<_>>())
            };
            assert_eq!(
                masks.iter().map(set).collect::<Vec<_>>(),
                [Some(vec![1, 3]), Some(vec![2])]
            );
            let cut = placed.cuts[3].as_ref().unwrap();
            assert_eq!(
                (&cut.kept_batch[..], &cut.kept_row[..]),
                (&[11, 10, 10][..], &[2, 1, 3][..])
            );
            // Entries 2 (id 3) and 0 (id 7) change, the first settling.
            let values =
                |v: Vec<i64>| vec![("v".to_owned(), Arc::new(Int64Array::from(v)) as ArrayRef)];
            placed.change(&Revisions {
                row_ids: vec![3 * spread, 7 * spread],
                columns: values(vec![5, 6]),
                settled: vec![true, false],
                places: vec![(3, 2), (3, 0)],
                before: values(vec![0, 1]),
                ..Revisions::default()
            });
            let (mut withdrawn, mut sent) = (Vec::new(), Vec::new());
            placed.flush(&mut withdrawn, &mut sent).unwrap();
            let column = |b: &RecordBatch, c: &str| {
                arrow::compute::cast(b.column_by_name(c).unwrap(), &DataType::Float64).unwrap()
            };
            let floats = |b: &RecordBatch, c: &str| {
                column(b, c).as_primitive::<Float64Type>().values().to_vec()
            };
            for (rows, v) in [(&withdrawn[0], [0.0, 1.0]), (&sent[0], [5.0, 6.0])] {
                assert_eq!(floats(rows, "v"), v);
                assert_eq!(floats(rows, "px"), [3.5, 7.5]);
                assert_eq!(floats(rows, KEPT_BATCH), [10.0, 11.0]);
                assert_eq!(floats(rows, KEPT_ROW), [3.0, 2.0]);
            }
            let settles = sent[0]
                .column_by_name(SETTLES)
                .unwrap()
                .as_boolean()
                .clone();
            assert_eq!(settles, BooleanArray::from(vec![true, false]));
            assert_eq!(placed.cuts[3].as_ref().unwrap().live, 2);
            // The last two settle: the cut's places go.
            placed.change(&Revisions {
                row_ids: vec![7 * spread, spread],
                columns: values(vec![7, 8]),
                settled: vec![true, true],
                places: vec![(3, 0), (3, 1)],
                before: values(vec![6, 0]),
                ..Revisions::default()
            });
            placed.flush(&mut withdrawn, &mut sent).unwrap();
            assert!(placed.cuts[3].is_none());
        }
    }
}
