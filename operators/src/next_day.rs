//! Returns to the next trading day: `return_next_open` and `return_next_close`
//! (SEMANTICS.md, *Cross-date returns*).
//!
//! A date's rows cannot know the next day's prices, so the work is split in three:
//!
//! 1. The keyed stage's forward-return rule writes each row's own price where the
//!    return goes ([`crate::forward_return::Horizon::crosses_date`]); expanded rows
//!    carry their source row's, as for every horizon.
//! 2. [`day_prices`] watches the rows on their way to the keyed stage and keeps, per
//!    date and symbol, the first and the last row in event order (`elapsed_ms`, then
//!    `row_id`) with their prices: a running min and max, no row held. When its
//!    frontier passes a date that is another date's next trading day, it sends that
//!    date's [`DayTable`] (every worker sends its own, possibly empty, with whether the
//!    date failed on its way here), to be broadcast.
//! 3. [`NextDayReturns::next_day_returns`] holds a date's final rows out of the keyed
//!    stage until the tables' frontier passes its next trading day, then divides that
//!    day's open or close by the price each row carries. A provisional result's rows
//!    (`[stream] emit_every`) pass at once with these returns null: the date cut at `W`
//!    has no next day.
//!
//! Which date follows which is planned by the run ([`NextDays::new`]) or found as a
//! live feed's dates come ([`NextDays::following`]; then every worker sends a table of
//! every date it saw rows of). A date whose next trading day has no file (no rows,
//! live) has none, and its returns are null, counted as `forward_return.no_next_date`;
//! a symbol without a row on the next day gives null, counted as
//! `forward_return.no_next_row` (both per output row). A next day that failed before
//! its rows reached the keyed stage counts as no next date.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, new_null_array};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::batch::{Batch, Emission, with_columns};
use crate::columns::{ELAPSED_MS, ROW_ID};
use crate::forward_return::Horizon;
use crate::report::Diagnostics;
use crate::time::{Time, date_end, date_key_of, date_start};

/// The next trading day of each date of a run, and the dates read only for their
/// prices (the next day of the run's last date, a date skipped by
/// `--skip-existing`): their rows stop before the keyed stage. Or, for a live feed,
/// how to find the next day as the dates come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NextDays {
    /// Date key -> its next trading day's, for the dates whose next day has a file.
    next: BTreeMap<u32, u32>,
    /// The dates that are some date's next trading day, and the last such date.
    previous: BTreeMap<u32, u32>,
    /// The dates that are some date's next trading day.
    wanted: BTreeSet<u32>,
    prices_only: BTreeSet<u32>,
    /// A live feed ([`NextDays::following`]): the next trading day is found as the
    /// dates come, not planned.
    following: Option<Following>,
}

/// How a live feed finds a date's next trading day.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Following {
    /// The calendar's trading days (date keys, ascending): the next day is the
    /// calendar's, and has no prices when the feed brings no rows of it. Without a
    /// calendar, the next date the feed brings rows of.
    calendar: Option<Vec<u32>>,
}

impl NextDays {
    /// `next`: (date, next trading day) for the dates whose next day has a file (a
    /// date without one has no next day); `prices_only`: the dates fed for their
    /// prices alone.
    pub fn new(
        next: impl IntoIterator<Item = (u32, u32)>,
        prices_only: impl IntoIterator<Item = u32>,
    ) -> Self {
        let next: BTreeMap<u32, u32> = next.into_iter().collect();
        NextDays {
            // In date order: the last date with a given next day stays.
            previous: next.iter().map(|(d, n)| (*n, *d)).collect(),
            wanted: next.values().copied().collect(),
            next,
            prices_only: prices_only.into_iter().collect(),
            following: None,
        }
    }

    /// For a live feed, where the dates are not known in advance: a date's next trading
    /// day is the next date of `calendar` (date keys) when given, else the next date
    /// the feed brings rows of; a next day without rows is no next day (as a replay of
    /// the recording finds no file for it). Every date's first and last prices are
    /// kept, and a date waits until its next day is complete (or the feed ends).
    pub fn following(calendar: Option<Vec<u32>>) -> Self {
        NextDays {
            following: Some(Following { calendar }),
            ..NextDays::default()
        }
    }

    /// The next trading day of `date_key`, when it has a file.
    pub fn next_of(&self, date_key: u32) -> Option<u32> {
        self.next.get(&date_key).copied()
    }

    /// The last date whose next trading day `date_key` is (several dates share one
    /// when a date the calendar does not list runs, from a dates file).
    pub fn previous_of(&self, date_key: u32) -> Option<u32> {
        self.previous.get(&date_key).copied()
    }

    /// Whether the date is fed for its prices alone (no partial).
    pub fn is_prices_only(&self, date_key: u32) -> bool {
        self.prices_only.contains(&date_key)
    }
}

/// A row's place in its date's event order and its price.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// Its `elapsed_ms`.
    pub elapsed_ms: i64,
    /// Its `row_id`.
    pub row_id: u64,
    /// Its price (null: `None`).
    pub price: Option<f64>,
}

impl Mark {
    fn order(&self) -> (i64, u64) {
        (self.elapsed_ms, self.row_id)
    }
}

/// The first and last row of a symbol on a date.
type OpenClose = (Mark, Mark);

/// Widens `into` to cover `other`: the earlier first row, the later last one.
fn cover(into: &mut OpenClose, other: &OpenClose) {
    if other.0.order() < into.0.order() {
        into.0 = other.0;
    }
    if other.1.order() > into.1.order() {
        into.1 = other.1;
    }
}

/// Per symbol, its first and last row of a date (those one worker saw, or all once
/// merged). Symbols are integers or text; each maps to its slot in `marks` (a small
/// map, looked up once per row).
#[derive(Clone, Debug, Default)]
pub struct Day {
    ints: IntSlots,
    texts: FxHashMap<String, u32>,
    marks: Vec<OpenClose>,
    /// The date failed on its way to the keyed stage (read, parse, derive).
    failed: bool,
}

impl Day {
    /// The day of `batches` (a whole date's rows, as they reach the keyed stage), for
    /// [`fill_next_day`] outside a dataflow (`vizflow inspect`).
    pub fn of_rows(batches: &[RecordBatch], spec: &NextDaySpec) -> Result<Day, NextDayError> {
        let mut day = Day::default();
        for batch in batches {
            observe(&mut day, batch, spec)?;
        }
        Ok(day)
    }

    #[inline]
    fn add_int(&mut self, symbol: i64, marks: &OpenClose) {
        match self.ints.get(symbol) {
            Some(slot) => cover(&mut self.marks[slot as usize], marks),
            None => {
                self.ints.insert(symbol, self.marks.len() as u32);
                self.marks.push(*marks);
            }
        }
    }

    #[inline]
    fn add_text(&mut self, symbol: &str, marks: &OpenClose) {
        match self.texts.get(symbol) {
            Some(&slot) => cover(&mut self.marks[slot as usize], marks),
            None => {
                self.texts
                    .insert(symbol.to_owned(), self.marks.len() as u32);
                self.marks.push(*marks);
            }
        }
    }

    fn merge(&mut self, table: DayTable) {
        self.failed |= table.failed;
        for (symbol, marks) in &table.ints {
            self.add_int(*symbol, marks);
        }
        for (symbol, marks) in &table.texts {
            self.add_text(symbol, marks);
        }
    }

    fn table(self, date_key: u32, failed: bool) -> DayTable {
        let marks = &self.marks;
        DayTable {
            date_key,
            failed: self.failed || failed,
            ints: (self.ints.iter())
                .map(|(s, slot)| (s, marks[slot as usize]))
                .collect(),
            texts: (self.texts.iter())
                .map(|(s, slot)| (s.clone(), marks[*slot as usize]))
                .collect(),
        }
    }

    #[inline]
    fn get(&self, symbol: Symbol<'_>) -> Option<&OpenClose> {
        let slot = match symbol {
            Symbol::Int(s) => self.ints.get(s),
            Symbol::Text(s) => self.texts.get(s).copied(),
        };
        slot.map(|slot| &self.marks[slot as usize])
    }
}

/// Integer symbols to slots: a vector indexed by the symbol's distance from a base
/// while the symbols are dense enough (market identifiers usually are: a lookup is an
/// index), a hash map for the others.
#[derive(Clone, Debug, Default)]
struct IntSlots {
    base: i64,
    /// `dense[s - base]`: the slot of symbol `s`, or [`IntSlots::NONE`].
    dense: Vec<u32>,
    sparse: FxHashMap<i64, u32>,
    len: usize,
}

impl IntSlots {
    const NONE: u32 = u32::MAX;
    /// Room below the first symbol, for the symbols that come after it but sort before.
    const BELOW: i64 = 4_096;

    #[inline]
    fn get(&self, symbol: i64) -> Option<u32> {
        // Below the base, the distance wraps to a huge index: not in `dense`.
        let at = symbol.wrapping_sub(self.base) as u64 as usize;
        match self.dense.get(at) {
            Some(&slot) if slot != Self::NONE => Some(slot),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&symbol).copied(),
        }
    }

    fn insert(&mut self, symbol: i64, slot: u32) {
        if self.len == 0 {
            self.base = symbol.saturating_sub(Self::BELOW);
        }
        self.len += 1;
        let at = symbol.checked_sub(self.base).filter(|at| *at >= 0);
        // Dense while it stays within a few entries per symbol.
        let room = (8 * self.len).max(2 * Self::BELOW as usize);
        match at.map(|at| at as usize).filter(|at| *at < room) {
            Some(at) => {
                if at >= self.dense.len() {
                    self.dense.resize(at + 1, Self::NONE);
                }
                self.dense[at] = slot;
            }
            None => {
                self.sparse.insert(symbol, slot);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        let dense = (self.dense.iter().enumerate())
            .filter(|(_, slot)| **slot != Self::NONE)
            .map(|(at, slot)| (self.base + at as i64, *slot));
        dense.chain(self.sparse.iter().map(|(s, slot)| (*s, *slot)))
    }
}

/// One worker's first and last rows of each symbol on a date, as sent to every worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DayTable {
    /// The date.
    pub date_key: u32,
    /// The date failed on its way to the keyed stage on that worker's process.
    pub failed: bool,
    /// Integer symbols, each with its first and last row.
    pub ints: Vec<(i64, (Mark, Mark))>,
    /// Text symbols, each with its first and last row.
    pub texts: Vec<(String, (Mark, Mark))>,
}

/// A symbol value.
#[derive(Clone, Copy, PartialEq)]
enum Symbol<'a> {
    Int(i64),
    Text(&'a str),
}

/// A batch's symbol column, read as integers or as text.
enum Symbols {
    Int(arrow::array::Int64Array),
    Text(arrow::array::StringArray),
}

impl Symbols {
    /// The symbol column of `batch` (integers stay integers; anything else is read as
    /// text, as the exchange by symbol does).
    fn of(batch: &RecordBatch, column: &str) -> Result<Symbols, NextDayError> {
        let array = batch
            .column_by_name(column)
            .ok_or_else(|| NextDayError::Missing(column.to_owned()))?;
        let cast = |to: &DataType| {
            arrow::compute::cast(array, to).map_err(|source| NextDayError::Cast {
                column: column.to_owned(),
                source,
            })
        };
        Ok(if array.data_type().is_integer() {
            Symbols::Int(cast(&DataType::Int64)?.as_primitive::<Int64Type>().clone())
        } else {
            Symbols::Text(cast(&DataType::Utf8)?.as_string::<i32>().clone())
        })
    }

    /// Row `row`'s symbol, `None` when null.
    #[inline]
    fn get(&self, row: usize) -> Option<Symbol<'_>> {
        match self {
            Symbols::Int(a) => a.is_valid(row).then(|| Symbol::Int(a.value(row))),
            Symbols::Text(a) => a.is_valid(row).then(|| Symbol::Text(a.value(row))),
        }
    }
}

/// Why a batch could not be read for the next day's prices.
#[derive(Debug, thiserror::Error)]
pub enum NextDayError {
    /// A column the returns need is not in the batch.
    #[error("next-day returns: the column {0} is missing (a bug: report it)")]
    Missing(String),
    /// A column could not be read as its type.
    #[error("next-day returns: cannot read {column}: {source}")]
    Cast {
        /// The column.
        column: String,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
}

/// What the returns to the next trading day read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextDaySpec {
    /// The symbol column.
    pub symbol: String,
    /// The price column (that of the forward returns).
    pub price: String,
    /// The output columns: `return_next_open` (first price) and/or
    /// `return_next_close` (last price), with whether each is the close.
    pub outputs: Vec<(String, bool)>,
}

impl NextDaySpec {
    /// What the keyed stage `spec`'s forward returns need of the next trading day,
    /// when they have a `next_open` or `next_close` horizon.
    pub fn of(spec: &crate::enrich::EnrichSpec) -> Option<NextDaySpec> {
        let returns = spec.rules.first()?.forward_returns()?;
        let outputs: Vec<(String, bool)> = (returns.horizons.iter())
            .filter(|h| h.crosses_date())
            .map(|h| (h.output(), *h == Horizon::NextClose))
            .collect();
        (!outputs.is_empty()).then(|| NextDaySpec {
            symbol: returns.symbol.clone(),
            price: returns.price.clone(),
            outputs,
        })
    }
}

/// Adds `batch`'s rows to `day`: per symbol, the first and last in event order.
fn observe(day: &mut Day, batch: &RecordBatch, spec: &NextDaySpec) -> Result<(), NextDayError> {
    let symbols = Symbols::of(batch, &spec.symbol)?;
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| NextDayError::Missing(name.to_owned()))
    };
    let cast = |name: &str, to: &DataType| {
        arrow::compute::cast(column(name)?, to).map_err(|source| NextDayError::Cast {
            column: name.to_owned(),
            source,
        })
    };
    let prices = cast(&spec.price, &DataType::Float64)?;
    let prices = prices.as_primitive::<Float64Type>();
    let elapsed = cast(ELAPSED_MS, &DataType::Int64)?;
    let elapsed = elapsed.as_primitive::<Int64Type>().values();
    let row_ids = cast(ROW_ID, &DataType::UInt64)?;
    let row_ids = row_ids
        .as_primitive::<arrow::datatypes::UInt64Type>()
        .values();
    let mark = |row: usize| {
        let mark = Mark {
            elapsed_ms: elapsed[row],
            row_id: row_ids[row],
            price: prices.is_valid(row).then(|| prices.value(row)),
        };
        (mark, mark)
    };
    match &symbols {
        Symbols::Int(a) => {
            for row in (0..batch.num_rows()).filter(|r| a.is_valid(*r)) {
                day.add_int(a.value(row), &mark(row));
            }
        }
        Symbols::Text(a) => {
            for row in (0..batch.num_rows()).filter(|r| a.is_valid(*r)) {
                day.add_text(a.value(row), &mark(row));
            }
        }
    }
    Ok(())
}

/// The keyed stage's output rows `rows` with their next-day returns computed from
/// their next trading day `day` (`None`: none), as the dataflow computes them; with
/// how many rows had no next day and no row of their symbol that day.
pub fn fill_next_day(
    rows: &RecordBatch,
    spec: &NextDaySpec,
    day: Option<&Day>,
) -> Result<(RecordBatch, u64, u64), NextDayError> {
    let mut counts = Counts::default();
    let rows = fill(rows, spec, day, &mut counts)?;
    Ok((rows, counts.no_next_date, counts.no_next_row))
}

/// Watches the rows on their way to the keyed stage (see the module docs): returns the
/// rows to go on (without those of the dates read for their prices alone) and each
/// worker's [`DayTable`] of every date that is another's next trading day (following a
/// live feed: of every date it saw rows of), sent at the date's last time once the
/// rows' frontier has passed it, for the caller to broadcast.
pub fn day_prices<'scope>(
    rows: Stream<'scope, Time, Batch>,
    spec: NextDaySpec,
    days: Arc<NextDays>,
    diagnostics: Diagnostics,
) -> (
    Stream<'scope, Time, Batch>,
    Stream<'scope, Time, Vec<DayTable>>,
) {
    let wanted = days.wanted.clone();
    let following = days.following.is_some();
    let tables = rows
        .clone()
        .unary_frontier::<CapacityContainerBuilder<Vec<DayTable>>, _, _, _>(
            Pipeline,
            "DayPrices",
            move |capability, _info| {
                // Nothing to send (no date is another's next): the tables' frontier
                // must not hold up the operator waiting on it.
                let mut capability = (following || !wanted.is_empty()).then_some(capability);
                let mut pending = wanted;
                let mut open: BTreeMap<u32, Day> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_time(|time, data| {
                        let date_key = date_key_of(*time.time());
                        if following {
                            // Every date the feed brings may be another's next day.
                            pending.insert(date_key);
                        } else if !pending.contains(&date_key) {
                            return;
                        }
                        let day = open.entry(date_key).or_default();
                        for batch in data {
                            let Some(rows) = batch.take() else { continue };
                            if let Err(error) = observe(day, &rows, &spec) {
                                // The date's prices are incomplete: it fails, and the
                                // date before it gets no next-day prices.
                                diagnostics.error(date_key, error.to_string());
                                day.failed = true;
                            }
                        }
                    });
                    while let Some(&date_key) = pending.first() {
                        if frontier.less_equal(&date_end(date_key)) {
                            break;
                        }
                        pending.pop_first();
                        let Some(held) = capability.as_ref() else {
                            break;
                        };
                        let failed = diagnostics.has_error(date_key);
                        let table = open.remove(&date_key).unwrap_or_default();
                        let at = held.delayed(&date_end(date_key));
                        output.session(&at).give(table.table(date_key, failed));
                    }
                    // Hold the capability no later than the next date to send, nor than
                    // the frontier (a message of an earlier date may still come).
                    let front = frontier.frontier().iter().min().copied();
                    let to = match (pending.first().map(|n| date_end(*n)), front) {
                        (Some(next), Some(front)) => Some(next.min(front)),
                        (Some(next), None) => Some(next),
                        // A live feed's later dates may still come.
                        (None, Some(front)) if following => Some(front),
                        (None, _) => None,
                    };
                    match to {
                        None => capability = None,
                        Some(to) => {
                            if let Some(held) = capability.as_mut()
                                && *held.time() < to
                            {
                                held.downgrade(&to);
                            }
                        }
                    }
                }
            },
        );
    let rows = match days.prices_only.is_empty() {
        true => rows,
        false => rows.unary::<CapacityContainerBuilder<Batch>, _, _, _>(
            Pipeline,
            "PricesOnly",
            move |_, _| {
                move |input, output| {
                    input.for_each_time(|time, data| {
                        if days.is_prices_only(date_key_of(*time.time())) {
                            return;
                        }
                        let mut session = output.session(&time);
                        for batch in data {
                            session.give_container(batch);
                        }
                    });
                }
            },
        ),
    };
    (rows, tables)
}

/// A date's final rows held for its next day's prices.
struct Held {
    capability: Capability<Time>,
    batches: Vec<Batch>,
}

/// The operator that completes the returns to the next trading day.
pub trait NextDayReturns<'scope> {
    /// Fills `return_next_open` / `return_next_close` of the keyed stage's output
    /// rows from `tables` (every worker's [`day_prices`] tables, broadcast): see the
    /// module docs.
    fn next_day_returns(
        self,
        tables: Stream<'scope, Time, Vec<DayTable>>,
        spec: NextDaySpec,
        days: Arc<NextDays>,
        diagnostics: Diagnostics,
    ) -> Stream<'scope, Time, Batch>;
}

impl<'scope> NextDayReturns<'scope> for Stream<'scope, Time, Batch> {
    fn next_day_returns(
        self,
        tables: Stream<'scope, Time, Vec<DayTable>>,
        spec: NextDaySpec,
        days: Arc<NextDays>,
        diagnostics: Diagnostics,
    ) -> Stream<'scope, Time, Batch> {
        self.binary_frontier::<_, CapacityContainerBuilder<Batch>, _, _, _, _>(
            tables,
            Pipeline,
            Pipeline,
            "NextDayReturns",
            move |_capability, _info| {
                let mut held: BTreeMap<u32, Held> = BTreeMap::new();
                let mut prices: BTreeMap<u32, Day> = BTreeMap::new();
                move |(rows, rows_frontier), (tables, tables_frontier), output| {
                    rows.for_each_time(|time, data| {
                        let date_key = date_key_of(*time.time());
                        for batch in data {
                            if Emission::provisional_only(batch.emission) {
                                // A provisional result's rows: no next day in a cut.
                                let emission = batch.emission;
                                let Some(rows) = batch.take() else { continue };
                                let rows = without_next_day(&rows, &spec);
                                output
                                    .session(&time)
                                    .give_container(&mut Batch::emitted(rows, emission));
                                continue;
                            }
                            let date = held.entry(date_key).or_insert_with(|| Held {
                                capability: time.delayed(time.time(), 0),
                                batches: Vec::new(),
                            });
                            if time.time() < date.capability.time() {
                                date.capability = time.delayed(time.time(), 0);
                            }
                            date.batches.push(std::mem::take(batch));
                        }
                    });
                    tables.for_each_time(|_time, data| {
                        for parts in data {
                            for table in parts.drain(..) {
                                prices.entry(table.date_key).or_default().merge(table);
                            }
                        }
                    });
                    while let Some(entry) = held.first_entry() {
                        let date_key = *entry.key();
                        if rows_frontier.less_equal(&date_end(date_key)) {
                            break;
                        }
                        let complete = |n: u32| !tables_frontier.less_equal(&date_end(n));
                        let next = match &days.following {
                            None => match days.next_of(date_key) {
                                Some(n) if !complete(n) => break,
                                next => next,
                            },
                            Some(Following {
                                calendar: Some(calendar),
                            }) => match calendar.iter().find(|d| **d > date_key) {
                                Some(&n) if !complete(n) => break,
                                // No rows of it came: no next day.
                                Some(&n) => prices.contains_key(&n).then_some(n),
                                None => None,
                            },
                            Some(Following { calendar: None }) => {
                                match prices.range(date_key + 1..).next() {
                                    Some((&n, _)) if complete(n) => Some(n),
                                    Some(_) => break,
                                    // The feed has ended without a later date.
                                    None if tables_frontier.is_empty() => None,
                                    None => break,
                                }
                            }
                        };
                        let Held {
                            capability,
                            batches,
                        } = entry.remove();
                        // Every worker sent a table of the next day; kept for the other
                        // dates with the same next day (dropped below).
                        let empty = Day::default();
                        let day = next.map(|n| prices.get(&n).unwrap_or(&empty));
                        let day = day.filter(|d| !d.failed);
                        let mut counts = Counts::default();
                        let mut session = output.session(&capability);
                        for mut batch in batches {
                            let emission = batch.emission;
                            let Some(rows) = batch.take() else { continue };
                            match fill(&rows, &spec, day, &mut counts) {
                                Ok(rows) => {
                                    session.give_container(&mut Batch::emitted(rows, emission))
                                }
                                Err(error) => {
                                    diagnostics.error(date_key, error.to_string());
                                    break;
                                }
                            }
                        }
                        diagnostics.add_all(
                            date_key,
                            [
                                ("forward_return.no_next_date", counts.no_next_date),
                                ("forward_return.no_next_row", counts.no_next_row),
                            ],
                        );
                    }
                    // The tables no date of this worker can still wait for: complete,
                    // and the last date with that next day has all its rows here, and
                    // none held here waits for it (dates complete in order).
                    prices.retain(|n, _| {
                        if days.following.is_some() {
                            // Until every earlier date is out: any may take it.
                            return tables_frontier.less_equal(&date_end(*n))
                                || rows_frontier.less_equal(&(date_start(*n) - 1))
                                || held.keys().any(|d| d < n);
                        }
                        let Some(last) = days.previous_of(*n) else {
                            return false;
                        };
                        tables_frontier.less_equal(&date_end(*n))
                            || rows_frontier.less_equal(&date_end(last))
                            || held.keys().any(|d| days.next_of(*d) == Some(*n))
                    });
                }
            },
        )
    }
}

/// Rows whose next-day returns are null, and why.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    no_next_date: u64,
    no_next_row: u64,
}

/// The rows with their next-day returns null (a provisional result's).
fn without_next_day(rows: &RecordBatch, spec: &NextDaySpec) -> RecordBatch {
    let columns: Vec<(String, ArrayRef)> = (spec.outputs.iter())
        .filter(|(name, _)| rows.column_by_name(name).is_some())
        .map(|(name, _)| {
            (
                name.clone(),
                new_null_array(&DataType::Float64, rows.num_rows()),
            )
        })
        .collect();
    match columns.is_empty() {
        true => rows.clone(),
        false => with_columns(rows, columns),
    }
}

/// The rows with their next-day returns computed from `day` (`None`: no next day):
/// the day's first or last price of the row's symbol over the price the row carries,
/// minus one; null when either is null or the symbol has no row that day.
fn fill(
    rows: &RecordBatch,
    spec: &NextDaySpec,
    day: Option<&Day>,
    counts: &mut Counts,
) -> Result<RecordBatch, NextDayError> {
    let n = rows.num_rows();
    let Some(day) = day else {
        counts.no_next_date += n as u64;
        return Ok(without_next_day(rows, spec));
    };
    let symbols = Symbols::of(rows, &spec.symbol)?;
    let owns = (spec.outputs.iter())
        .map(|(name, _)| {
            let own = rows
                .column_by_name(name)
                .ok_or_else(|| NextDayError::Missing(name.clone()))?;
            Ok(own.as_primitive::<Float64Type>())
        })
        .collect::<Result<Vec<_>, NextDayError>>()?;
    let mut values: Vec<Vec<f64>> = owns.iter().map(|_| Vec::with_capacity(n)).collect();
    let mut valid: Vec<arrow::array::BooleanBufferBuilder> = (owns.iter())
        .map(|_| arrow::array::BooleanBufferBuilder::new(n))
        .collect();
    // The keyed stage gives each symbol's rows together: one lookup per run of them.
    let mut last: Option<(Symbol<'_>, Option<&OpenClose>)> = None;
    for row in 0..n {
        let marks = symbols.get(row).and_then(|symbol| {
            let marks = match last {
                Some((s, marks)) if s == symbol => marks,
                _ => {
                    let marks = day.get(symbol);
                    last = Some((symbol, marks));
                    marks
                }
            };
            counts.no_next_row += u64::from(marks.is_none());
            marks
        });
        for (k, (_, is_close)) in spec.outputs.iter().enumerate() {
            let next = marks.and_then(|(open, close)| match is_close {
                true => close.price,
                false => open.price,
            });
            match next.filter(|_| owns[k].is_valid(row)) {
                Some(next) => {
                    values[k].push(next / owns[k].value(row) - 1.0);
                    valid[k].append(true);
                }
                None => {
                    values[k].push(0.0);
                    valid[k].append(false);
                }
            }
        }
    }
    let columns = (spec.outputs.iter().zip(values).zip(valid))
        .map(|(((name, _), values), mut valid)| {
            let values = Float64Array::new(values.into(), Some(NullBuffer::new(valid.finish())));
            (name.clone(), Arc::new(values) as ArrayRef)
        })
        .collect();
    Ok(with_columns(rows, columns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The slots of any symbols, dense or scattered, negative or huge, are those a
        /// hash map gives.
        #[test]
        fn int_slots_are_a_map(
            symbols in proptest::collection::vec(
                prop_oneof![
                    600_000..603_000i64,
                    -10i64..10,
                    any::<i64>(),
                    Just(i64::MIN),
                    Just(i64::MAX),
                ],
                0..400,
            ),
            probes in proptest::collection::vec(any::<i64>(), 0..50),
        ) {
            let mut slots = IntSlots::default();
            let mut map: FxHashMap<i64, u32> = FxHashMap::default();
            for symbol in symbols {
                prop_assert_eq!(slots.get(symbol), map.get(&symbol).copied());
                if !map.contains_key(&symbol) {
                    let slot = map.len() as u32;
                    map.insert(symbol, slot);
                    slots.insert(symbol, slot);
                }
            }
            for (symbol, slot) in &map {
                prop_assert_eq!(slots.get(*symbol), Some(*slot));
            }
            for probe in probes {
                prop_assert_eq!(slots.get(probe), map.get(&probe).copied());
            }
            let mut listed: Vec<(i64, u32)> = slots.iter().collect();
            listed.sort_unstable();
            let mut expected: Vec<(i64, u32)> = map.into_iter().collect();
            expected.sort_unstable();
            prop_assert_eq!(listed, expected);
        }
    }
}
