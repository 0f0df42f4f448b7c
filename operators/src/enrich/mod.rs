//! `enrich`: the keyed stateful operator. Per symbol and date, rules run over the rows
//! in event order: FIFO matching ([`crate::fifo::FifoMatch`]), condition tags
//! ([`crate::tag_condition::TagCondition`]), running values
//! ([`crate::tag_running::TagRunning`]) and user rules written in Rust ([`TagRule`]).
//!
//! # What the operator guarantees
//!
//! * Rows are exchanged by symbol, and each worker keeps a date's rows until the date is
//!   complete. Then, per symbol, the rows are put in **event order** (`elapsed_ms`, ties
//!   broken by `row_id`), whatever order they arrived in, and every rule runs over them.
//!   State lives per (date, symbol): it starts afresh for every symbol of every date.
//! * Rules run in the order they are listed. Each sees the columns of the rows as the
//!   rules before it left them, so a running value can sum `matched_qty` after a FIFO
//!   match has split the exits. All rules run in the operator's one pass over the date:
//!   one sort, then one sequential scan per rule over contiguous column slices (per
//!   chunk of symbols, when the rules run chunk by chunk; see *Performance*).
//! * A rule may expand rows (FIFO splits an exit over the lots it closes) or drop them
//!   (a custom rule that emits nothing for a row; counted as
//!   `rule.{name}.dropped_rows`). Every output row keeps all columns of the input row
//!   it comes from.
//! * A rule's output column named like an existing column replaces it in place.
//! * Each input row's output rows are together, in the order the rules emitted them.
//!   The rows themselves come in event order or in input order: event order when the
//!   rules add at least as many columns to the output as it keeps of the input columns
//!   no rule reads (those are scattered into event order, the added ones are sliced),
//!   input order otherwise (the input columns are sliced, the added ones gathered
//!   back). Downstream operators do not depend on order.
//!
//! The same operator runs whether rows come from files or from the embedding API, and
//! its output does not depend on the number of workers or on how rows were batched.
//! Forward returns ([`crate::forward_return`]) run in it too, as the first rule.
//!
//! # Performance
//!
//! Rows are put in event order by a counting sort by symbol, then per symbol an
//! insertion sort: the parts are taken in `row_id` order, so a symbol's rows are
//! nearly in event order already (a general sort takes over past a budget of moves).
//! Input columns reach event order by a *scatter* (read in input order, one write
//! cursor per symbol), which stays in cache where a gather in event order would miss it
//! on nearly every row. Inside a process the exchange does not copy a worker's rows out
//! of the batches it shares: the symbol, `elapsed_ms` and `row_id` are read through
//! the selections to order the rows, and so is every column the scatter reads.
//!
//! In event order, the input columns the rules or the output need are put in event
//! order before the rules run, each input column let go once scattered (its memory,
//! or its pages of a memory-mapped input file, freed once no worker shares it). The
//! rules then run **a chunk of symbols at a time** (about 2^18 rows), as the
//! output is consumed: what the rules add exists for one chunk at a time, not for the
//! whole date. A chunk's added columns are sliced into output batches, and its input
//! columns gathered through the rows the rules left, one output batch at a time.
//! In input order, added columns go back by a gather along the same per-symbol
//! cursors, and each input batch's kept columns are copied out of the shared batch (or
//! sliced) as its output is built, after which the batch is dropped.
//!
//! Columns added before any rule expanded rows (forward returns) keep one value per
//! event: an expansion does not copy them, they are read through the rows. After each
//! rule, the columns that neither a later rule nor the output needs are dropped (their
//! memory is freed once no worker shares them). Nothing is allocated per row.
//!
//! # Writing a rule in Rust
//!
//! Implement [`TagRule`]: typed inputs and outputs (tuples of `Option<f64>`, `i64`,
//! `Option<&str>`, `bool`, ...), a per-symbol state type, and `process`, which sees one
//! row at a time in event order and emits zero, one or several output rows. No value
//! is boxed and nothing is allocated per row. See `examples/custom_rule.rs`.
//!
//! ```
//! use vizflow_operators::enrich::{Emit, Event, TagRule};
//!
//! /// The running volume-weighted average price of the buys of a symbol.
//! #[derive(Debug)]
//! struct BuyVwap;
//!
//! impl TagRule for BuyVwap {
//!     type State = (f64, f64); // (sum of qty * price, sum of qty)
//!     type Input<'a> = (Option<&'a str>, Option<i64>, Option<f64>);
//!     type Output = Option<f64>;
//!
//!     fn name(&self) -> String {
//!         "buy_vwap".into()
//!     }
//!     fn inputs(&self) -> Vec<String> {
//!         vec!["orderSide".into(), "qty".into(), "fillPrice".into()]
//!     }
//!     fn outputs(&self) -> Vec<String> {
//!         vec!["buy_vwap".into()]
//!     }
//!     fn process(
//!         &self,
//!         (side, qty, price): Self::Input<'_>,
//!         _event: Event,
//!         state: &mut Self::State,
//!         emit: &mut Emit<'_, Self::Output>,
//!     ) {
//!         if let (Some("B"), Some(qty), Some(price)) = (side, qty, price) {
//!             state.0 += qty as f64 * price;
//!             state.1 += qty as f64;
//!         }
//!         emit.push((state.1 > 0.0).then(|| state.0 / state.1));
//!     }
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, Float64Builder,
    Int64Array, Int64Builder, RecordBatch, StringArray, UInt32Array, UInt64Builder,
};
use arrow::buffer::ScalarBuffer;
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt64Type};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;

use crate::batch::{
    Batch, Partition, SelectedRows, by_symbol, for_each_row, per_date, selected_len, symbol_ids,
    take_rows,
};
use crate::columns::{ELAPSED_MS, ROW_ID};
use crate::report::Diagnostics;
use crate::time::Time;

/// The most rows in one output batch.
pub const OUTPUT_BATCH_ROWS: usize = 1 << 16;

/// A rule as the operator runs it. The built-in rules implement it directly; a
/// [`TagRule`] becomes one with [`custom`].
pub trait EnrichRule: Send + Sync + fmt::Debug {
    /// The rule's name in errors and reports, e.g. `FIFOMatch` or `TagRunning(position)`.
    fn name(&self) -> String;
    /// The columns the rule reads. `elapsed_ms` and `row_id` are always available in
    /// [`Rows`] and need not be listed.
    fn inputs(&self) -> Vec<String>;
    /// The names of the columns the rule adds (as [`EnrichRule::outputs`] returns them).
    fn output_names(&self) -> Vec<String>;
    /// Checks the types of the rule's input columns in `schema` (the columns as they are
    /// when the rule runs; the operator has checked they exist) and returns the columns
    /// the rule adds, in order. An error says what is wrong and how to fix it.
    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, String>;
    /// Runs the rule over some of one worker's symbols of a date: all of them, or a
    /// chunk of them (the operator may call it several times per date, each time over
    /// different whole symbols).
    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, String>;
    /// What defines the rule's results, for the pipeline's hash: its name by default (a
    /// rule from the pipeline file is in the file's text); a [`TagRule`] adds its
    /// [fingerprint](TagRule::fingerprint).
    fn fingerprint(&self) -> String {
        self.name()
    }
}

/// The rows a rule runs over: each symbol's rows contiguous and in event order.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    /// The rule's input columns, in the order of [`EnrichRule::inputs`].
    pub columns: &'a [ArrayRef],
    /// Where each symbol's rows start, then the end (so symbol `s` is
    /// `runs[s]..runs[s + 1]`).
    pub runs: &'a [usize],
    /// Each row's `elapsed_ms`.
    pub elapsed_ms: &'a [i64],
    /// Each row's `row_id`.
    pub row_id: &'a [u64],
}

impl Rows<'_> {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.row_id.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.row_id.is_empty()
    }
}

/// What a rule made of its [`Rows`].
#[derive(Clone, Debug, Default)]
pub struct RuleOutput {
    /// For each output row, the row of [`Rows`] it comes from, in non-decreasing order;
    /// `None` when there is exactly one output row per row.
    pub source: Option<Vec<u32>>,
    /// The added columns, one per field of [`EnrichRule::outputs`], one value per
    /// output row.
    pub columns: Vec<ArrayRef>,
    /// Counts for the date's quality report. They must add up: the counts of the
    /// calls over a date's chunks of symbols are summed.
    pub counts: Vec<(String, u64)>,
}

/// The rules of an `enrich` stage and the symbol column they are keyed by.
#[derive(Clone, Debug)]
pub struct EnrichSpec {
    /// The symbol column.
    pub symbol: String,
    /// The rules, in the order they run.
    pub rules: Vec<Arc<dyn EnrichRule>>,
    /// When set, the columns to keep afterwards (the others are neither gathered nor
    /// passed on; missing ones are skipped).
    pub keep: Option<Vec<String>>,
}

impl EnrichSpec {
    /// The columns of `fields` that are kept.
    fn kept(&self, mut fields: Vec<Field>) -> Vec<Field> {
        if let Some(keep) = &self.keep {
            fields.retain(|f| keep.contains(f.name()));
        }
        fields
    }
}

/// Checks that a rule's inputs are among `fields` (the columns where it runs) and
/// returns the columns it adds, checking they have distinct names and do not replace
/// the engine's event columns.
pub fn checked_outputs(rule: &dyn EnrichRule, fields: &[Field]) -> Result<Vec<Field>, String> {
    for column in rule.inputs() {
        if !fields.iter().any(|f| f.name() == &column) {
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            let hint = crate::expr::closest(&column, names.iter().copied())
                .map(|c| format!("did you mean '{c}'? "))
                .unwrap_or_default();
            return Err(format!(
                "{}: unknown column '{column}'; {hint}available columns: {}",
                rule.name(),
                names.join(", ")
            ));
        }
    }
    let outputs = rule.outputs(&Schema::new(fields.to_vec()))?;
    for (i, field) in outputs.iter().enumerate() {
        if outputs[..i].iter().any(|f| f.name() == field.name()) {
            return Err(format!(
                "{}: the output column '{}' is listed twice",
                rule.name(),
                field.name()
            ));
        }
        if field.name() == ELAPSED_MS || field.name() == ROW_ID {
            return Err(format!(
                "{}: the output column '{}' would replace the engine's own column; rename it",
                rule.name(),
                field.name()
            ));
        }
    }
    Ok(outputs)
}

/// Adds `field`, or replaces the field of the same name in place.
fn set_field(fields: &mut Vec<Field>, field: Field) {
    match fields.iter().position(|f| f.name() == field.name()) {
        Some(i) => fields[i] = field,
        None => fields.push(field),
    }
}

/// The low bits of an event key that hold the `row_id`; `elapsed_ms` is above them.
const ROW_ID_BITS: u32 = 36;

/// Runs `spec`'s rules over one date's rows (all symbols of the given batches, which
/// must share one schema and hold `elapsed_ms` (Int64), `row_id` (UInt64) and the
/// symbol column). Returns the output batches (see the module docs for their rows and
/// order) and the rules' counts, summed by name.
pub fn enrich(
    batches: &[RecordBatch],
    spec: &EnrichSpec,
) -> Result<(Vec<RecordBatch>, BTreeMap<String, u64>), String> {
    enrich_owned(batches.to_vec(), spec)
}

/// [`enrich`] taking the batches, so that columns no later step needs are freed as
/// soon as the rules are done with them.
pub fn enrich_owned(
    batches: Vec<RecordBatch>,
    spec: &EnrichSpec,
) -> Result<(Vec<RecordBatch>, BTreeMap<String, u64>), String> {
    let mut output = enrich_lazy(batches, spec)?;
    let batches = output.by_ref().collect::<Result<_, _>>()?;
    Ok((batches, output.counts().clone()))
}

/// [`enrich_owned`] with the output built lazily as the returned iterator is consumed:
/// one input batch at a time (input order), or one chunk of symbols at a time (event
/// order, when the rules run chunk by chunk too). The rules' counts are complete once
/// the iterator is exhausted ([`EnrichOutput::counts`]).
pub fn enrich_lazy(batches: Vec<RecordBatch>, spec: &EnrichSpec) -> Result<EnrichOutput, String> {
    enrich_selected(batches.into_iter().map(|b| (b, None)).collect(), spec)
}

/// [`enrich_lazy`] over batches of which only selected rows count (as the exchange by
/// symbol hands them over, see [`crate::batch::Batch::take_selected`]): the rows are
/// read through the selections, not copied out first.
pub fn enrich_selected(
    parts: Vec<SelectedRows>,
    spec: &EnrichSpec,
) -> Result<EnrichOutput, String> {
    enrich_in_chunks(parts, spec, CHUNK_ROWS)
}

/// [`enrich_selected`], with chunks of `chunk_rows` rows when the rules run chunk by
/// chunk.
fn enrich_in_chunks(
    parts: Vec<SelectedRows>,
    spec: &EnrichSpec,
    chunk_rows: usize,
) -> Result<EnrichOutput, String> {
    let parts: Vec<SelectedRows> = parts.into_iter().filter(|p| selected_len(p) > 0).collect();
    if parts.is_empty() {
        let empty = Frame::new(Vec::new(), event_order(&[], &[], 0)?);
        return empty.into_output(Arc::new(Schema::empty()), false);
    }
    let input_schema = common_schema(&parts)?;
    let rows: usize = parts.iter().map(selected_len).sum();
    if rows >= u32::MAX as usize {
        return Err(format!(
            "enrich: {rows} rows of one date on one worker; at most {} are supported",
            u32::MAX - 1
        ));
    }

    // Parts in row_id order (each part's rows are a subset of a contiguous run of the
    // date's rows), so that each symbol's rows are nearly in event order already.
    let mut parts = parts;
    parts.sort_by_cached_key(first_row_id);
    let (symbols, symbol_count) = symbol_ids(&parts, &spec.symbol, "enrich")?;
    let events = event_order(&parts, &symbols, symbol_count)?;
    drop(symbols);
    let mut frame = Frame::new(parts, events);

    let fields: Vec<Field> = input_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let inputs: Vec<Vec<String>> = spec.rules.iter().map(|r| r.inputs()).collect();
    // Each rule's added columns, checked against the columns where it runs.
    let mut rule_outputs = Vec::with_capacity(spec.rules.len());
    let mut final_fields = fields.clone();
    for rule in &spec.rules {
        let outputs = checked_outputs(rule.as_ref(), &final_fields)?;
        for field in &outputs {
            set_field(&mut final_fields, field.clone());
        }
        rule_outputs.push(outputs);
    }
    let (event_order, early) = output_order(spec, &fields, &final_fields, &rule_outputs, &inputs);
    let plan = RulePlan {
        spec: spec.clone(),
        inputs,
        outputs: rule_outputs,
        schema: Arc::new(Schema::new(spec.kept(final_fields))),
    };
    if event_order && !early.is_empty() {
        // Every input column the rules and the output need goes into event order now,
        // so the input batches (and their pages of a memory-mapped file) are let go
        // before the rules run; then the rules run a chunk of symbols at a time, as the
        // output is consumed.
        // Each input column goes as soon as it is in event order (its memory is freed
        // once no worker shares it), the event columns first.
        frame.retain_inputs(|name| early.iter().any(|e| e == name));
        for name in &early {
            frame.ordered(name)?;
            frame.retain_inputs(|other| other != name);
        }
        frame.inputs.clear();
        frame.positions = Vec::new();
        frame.events.rows = Vec::new();
        return Ok(EnrichOutput::chunked(frame, plan, chunk_rows));
    }
    let mut counts = BTreeMap::new();
    plan.run(&mut frame, &mut counts)?;
    let mut output = frame.into_output(plan.schema, event_order)?;
    output.counts = counts;
    Ok(output)
}

/// The symbols' rows that the rules run over at a time when the output is in event
/// order: enough for the per-chunk work to be negligible, few enough that what the
/// rules add for a chunk is a small part of the date's memory.
const CHUNK_ROWS: usize = 1 << 18;

/// A date's rules, with what was worked out once for all its chunks.
struct RulePlan {
    spec: EnrichSpec,
    /// Each rule's input columns.
    inputs: Vec<Vec<String>>,
    /// Each rule's added columns.
    outputs: Vec<Vec<Field>>,
    /// The output's columns.
    schema: SchemaRef,
}

impl RulePlan {
    /// Runs every rule over the frame's rows, adding up their counts.
    fn run(&self, frame: &mut Frame, counts: &mut BTreeMap<String, u64>) -> Result<(), String> {
        let spec = &self.spec;
        for (i, (rule, outputs)) in spec.rules.iter().zip(&self.outputs).enumerate() {
            let columns: Vec<ArrayRef> = self.inputs[i]
                .iter()
                .map(|name| frame.column(name))
                .collect::<Result<_, _>>()?;
            frame.compute_event_columns();
            let (elapsed_ms, row_id) = frame.event_columns();
            let rows = Rows {
                columns: &columns,
                runs: &frame.runs,
                elapsed_ms,
                row_id,
            };
            let out = rule.apply(&rows)?;
            drop(columns);
            frame.apply(rule.as_ref(), outputs, out, counts)?;
            // Free the columns that neither the output nor a later rule uses.
            let later: Vec<&String> = self.inputs[i + 1..].iter().flatten().collect();
            let needed = |name: &str| {
                spec.keep
                    .as_ref()
                    .is_none_or(|keep| keep.iter().any(|k| k == name))
                    || later.iter().any(|l| *l == name)
            };
            frame.retain(needed);
        }
        Ok(())
    }
}

/// Whether the output goes out in event order, which moves no more columns when the
/// rules add at least as many columns to the output as it keeps of the input columns
/// no rule reads (those are scattered into event order; in input order, every added
/// column would be gathered back instead) and lets the rules run chunk by chunk, and
/// the input columns to put in event order before
/// the rules run (those the rules read or the output keeps): none when a rule replaces
/// an input column that another reads, and then the input batches stay until the end.
fn output_order(
    spec: &EnrichSpec,
    input_fields: &[Field],
    final_fields: &[Field],
    rule_outputs: &[Vec<Field>],
    inputs: &[Vec<String>],
) -> (bool, Vec<String>) {
    let kept = spec.kept(final_fields.to_vec());
    let is_produced = |name: &str| rule_outputs.iter().flatten().any(|f| f.name() == name);
    let is_read = |name: &str| inputs.iter().flatten().any(|i| i == name);
    let is_input = |name: &str| input_fields.iter().any(|f| f.name() == name);
    let added = kept.iter().filter(|f| is_produced(f.name())).count();
    let unordered = kept
        .iter()
        .filter(|f| !is_produced(f.name()) && !is_read(f.name()))
        .count();
    if unordered > added {
        return (false, Vec::new());
    }
    if inputs
        .iter()
        .flatten()
        .any(|i| is_input(i) && is_produced(i))
    {
        return (true, Vec::new());
    }
    let read = inputs
        .iter()
        .flatten()
        .filter(|name| is_input(name))
        .cloned();
    let output = kept
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| is_input(name) && !is_produced(name));
    let mut early: Vec<String> = read.chain(output).collect();
    early.sort();
    early.dedup();
    (true, early)
}

/// A column added by a rule. A rule that runs before any rule expanded or dropped
/// rows adds a value per *event*; such a column is not copied when a later rule
/// reshapes the rows, but read through the current rows' events when needed (and for
/// the output, one batch at a time). Forward returns are such columns.
struct Added {
    name: String,
    values: ArrayRef,
    /// One value per event (else one per current row).
    per_event: bool,
}

/// A date's rows while the rules run: the input batches, the rows as the rules so far
/// left them (in event order), and the columns the rules added.
struct Frame {
    /// The input batches, each with the rows of it that count.
    inputs: Vec<SelectedRows>,
    /// The events (input rows and times, in event order; their `starts` moved to
    /// `runs`).
    events: Events,
    /// The current rows, as indices into `events` (non-decreasing); `None` while they
    /// are the events themselves, before any rule expanded or dropped rows.
    rows: Option<Vec<u32>>,
    /// Where each symbol's current rows start, then the end.
    runs: Vec<usize>,
    /// The columns added by rules.
    added: Vec<Added>,
    /// Input columns in event order (one value per event), by name.
    event_ordered: BTreeMap<String, ArrayRef>,
    /// Each input row's position in `events`, once a column needed it.
    positions: Vec<u32>,
    /// Input columns gathered for the current rows, by name.
    gathered: BTreeMap<String, ArrayRef>,
    /// `elapsed_ms` and `row_id` of the current rows once a rule needed them after
    /// another expanded or dropped rows (reset when a rule reshapes the rows).
    reshaped_times: Option<(Vec<i64>, Vec<u64>)>,
}

impl Frame {
    fn new(inputs: Vec<SelectedRows>, mut events: Events) -> Self {
        Frame {
            inputs,
            runs: std::mem::take(&mut events.starts),
            events,
            rows: None,
            added: Vec::new(),
            event_ordered: BTreeMap::new(),
            positions: Vec::new(),
            gathered: BTreeMap::new(),
            reshaped_times: None,
        }
    }

    /// The frame of the symbols `symbols` alone, before any rule ran: its input
    /// columns in event order and its events are slices of this frame's (no copy).
    fn chunk(&self, symbols: std::ops::Range<usize>) -> Frame {
        let (low, high) = (self.runs[symbols.start], self.runs[symbols.end]);
        let events = Events {
            starts: Vec::new(),
            rows: Vec::new(),
            times: self.events.times.slice(low, high - low),
        };
        let mut chunk = Frame::new(Vec::new(), events);
        chunk.runs = self.runs[symbols.start..=symbols.end]
            .iter()
            .map(|run| run - low)
            .collect();
        chunk.event_ordered = self
            .event_ordered
            .iter()
            .map(|(name, values)| (name.clone(), values.slice(low, high - low)))
            .collect();
        chunk
    }

    /// The number of current rows.
    fn len(&self) -> usize {
        self.rows.as_ref().map_or(self.events.times.len(), Vec::len)
    }

    /// The global input row behind each current row.
    fn input_rows(&self) -> Vec<u32> {
        match &self.rows {
            None => self.events.rows.clone(),
            Some(rows) => rows.iter().map(|e| self.events.rows[*e as usize]).collect(),
        }
    }

    /// Makes [`Frame::event_columns`] available.
    fn compute_event_columns(&mut self) {
        let (elapsed, row_id) = self.events.times.split();
        if let (Some(rows), None) = (&self.rows, &self.reshaped_times) {
            let elapsed = rows.iter().map(|e| elapsed[*e as usize]).collect();
            let row_id = rows.iter().map(|e| row_id[*e as usize]).collect();
            self.reshaped_times = Some((elapsed, row_id));
        }
    }

    /// `elapsed_ms` and `row_id` of the current rows (after
    /// [`Frame::compute_event_columns`]).
    fn event_columns(&self) -> (&[i64], &[u64]) {
        match (&self.rows, &self.events.times, &self.reshaped_times) {
            (None, EventTimes::Split(elapsed, row_id), _) => (elapsed, row_id),
            (Some(_), _, Some((elapsed, row_id))) => (elapsed, row_id),
            _ => unreachable!("compute_event_columns runs first"),
        }
    }

    /// A column for the current rows: added by a rule, or an input column gathered.
    fn column(&mut self, name: &str) -> Result<ArrayRef, String> {
        if let Some(values) = self.gathered.get(name) {
            return Ok(values.clone());
        }
        let ordered = match self.added.iter().find(|a| a.name == name) {
            Some(added) if !added.per_event => return Ok(added.values.clone()),
            Some(added) => added.values.clone(),
            None => self.ordered(name)?,
        };
        // Before any rule expanded or dropped rows, the current rows are the events.
        let values = match &self.rows {
            None => ordered,
            Some(rows) => {
                let rows = UInt32Array::from(rows.clone());
                arrow::compute::take(&ordered, &rows, None)
                    .map_err(|e| format!("enrich: column '{name}': {e}"))?
            }
        };
        self.gathered.insert(name.to_owned(), values.clone());
        Ok(values)
    }

    /// An input column in event order (one value per event), scattered from the input
    /// batches the first time.
    fn ordered(&mut self, name: &str) -> Result<ArrayRef, String> {
        if let Some(ordered) = self.event_ordered.get(name) {
            return Ok(ordered.clone());
        }
        let gather_error = |e: arrow::error::ArrowError| format!("enrich: column '{name}': {e}");
        self.positions();
        let parts: Vec<Part<'_>> = self
            .inputs
            .iter()
            .map(|(b, selection)| {
                let column = b
                    .column_by_name(name)
                    .ok_or_else(|| format!("enrich: column '{name}' is missing"))?;
                Ok((column, selection.as_ref()))
            })
            .collect::<Result<_, String>>()?;
        let ordered = match scatter(&parts, &self.positions) {
            Some(ordered) => ordered,
            None => {
                let selected: Vec<ArrayRef> = parts
                    .iter()
                    .map(|(column, selection)| match selection {
                        Some(rows) => arrow::compute::take(column, rows, None),
                        None => Ok((*column).clone()),
                    })
                    .collect::<Result<_, _>>()
                    .map_err(gather_error)?;
                let parts: Vec<&dyn Array> = selected.iter().map(|p| p.as_ref()).collect();
                let whole = arrow::compute::concat(&parts).map_err(gather_error)?;
                let order = UInt32Array::from(self.events.rows.clone());
                arrow::compute::take(&whole, &order, None).map_err(gather_error)?
            }
        };
        self.event_ordered.insert(name.to_owned(), ordered.clone());
        Ok(ordered)
    }

    /// Each input row's position in event order (the inverse of `events`' rows).
    fn positions(&mut self) -> &[u32] {
        if self.positions.is_empty() {
            let mut positions = vec![0u32; self.events.rows.len()];
            for (position, row) in self.events.rows.iter().enumerate() {
                positions[*row as usize] = position as u32;
            }
            self.positions = positions;
        }
        &self.positions
    }

    /// Keeps only the columns `needed` by the output or later rules: added columns,
    /// gathered ones, and input columns (an input column replaced by an added one of the
    /// same name is not needed either).
    fn retain(&mut self, needed: impl Fn(&str) -> bool) {
        self.added.retain(|a| needed(&a.name));
        self.event_ordered.retain(|name, _| needed(name));
        self.gathered.retain(|name, _| needed(name));
        let added = std::mem::take(&mut self.added);
        self.retain_inputs(|name| needed(name) && !added.iter().any(|a| a.name == name));
        self.added = added;
    }

    /// Keeps only the input batches' columns that are `needed`.
    fn retain_inputs(&mut self, needed: impl Fn(&str) -> bool) {
        for (batch, _) in &mut self.inputs {
            let schema = batch.schema();
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|c| needed(schema.field(*c).name()))
                .collect();
            if keep.len() < schema.fields().len() {
                *batch = batch.project(&keep).expect("indices are in bounds");
            }
        }
    }

    /// Takes a rule's output: checks its shape, expands or drops rows, adds its columns.
    fn apply(
        &mut self,
        rule: &dyn EnrichRule,
        fields: &[Field],
        out: RuleOutput,
        counts: &mut BTreeMap<String, u64>,
    ) -> Result<(), String> {
        let name = rule.name();
        let before = self.len();
        let after = out.source.as_ref().map_or(before, Vec::len);
        if out.columns.len() != fields.len() {
            return Err(format!(
                "enrich: rule {name} returned {} columns but declares {}",
                out.columns.len(),
                fields.len()
            ));
        }
        for (column, field) in out.columns.iter().zip(fields) {
            if column.len() != after || column.data_type() != field.data_type() {
                return Err(format!(
                    "enrich: rule {name} returned column '{}' as {} values of type {}; \
                     expected {after} values of type {}",
                    field.name(),
                    column.len(),
                    column.data_type(),
                    field.data_type()
                ));
            }
        }
        for (counter, amount) in out.counts {
            *counts.entry(counter).or_default() += amount;
        }
        if let Some(source) = out.source {
            let ordered = source.windows(2).all(|w| w[0] <= w[1]);
            if !ordered || source.last().is_some_and(|s| *s as usize >= before) {
                return Err(format!(
                    "enrich: rule {name} returned output rows out of order or out of range; \
                     each output row must come from a row at or after the previous one's"
                ));
            }
            let indices = UInt32Array::from(source);
            // Columns with a value per event stay as they are (see `Added`).
            for added in self.added.iter_mut().filter(|a| !a.per_event) {
                added.values = arrow::compute::take(&added.values, &indices, None)
                    .map_err(|e| format!("enrich: rule {name}: {e}"))?;
            }
            let source = indices.values();
            for run in &mut self.runs {
                *run = source.partition_point(|s| (*s as usize) < *run);
            }
            self.rows = Some(match &self.rows {
                None => source.to_vec(),
                Some(rows) => source.iter().map(|s| rows[*s as usize]).collect(),
            });
            self.gathered.clear();
            self.reshaped_times = None;
        }
        let per_event = self.rows.is_none();
        for (field, values) in fields.iter().zip(out.columns) {
            self.gathered.remove(field.name());
            self.added.retain(|a| &a.name != field.name());
            self.added.push(Added {
                name: field.name().clone(),
                values,
                per_event,
            });
        }
        Ok(())
    }

    /// The output, batch by batch, in whichever order moves fewer columns (downstream
    /// operators do not depend on it):
    ///
    /// * in event order (`event_order`, decided before the rules ran by
    ///   [`output_order`]): each output batch slices the added columns and gathers the
    ///   input columns (in event order) through the rows the rules left, or slices them
    ///   when no rule reshaped the rows;
    /// * otherwise in input row order: per input batch, batches of at most
    ///   [`OUTPUT_BATCH_ROWS`] rows, the input columns sliced (or gathered, where a row
    ///   expands or is dropped) and the added columns taken into that order. Each input
    ///   batch is freed once its output is built.
    ///
    /// What the rules needed and the output does not is freed first.
    fn into_output(mut self, schema: SchemaRef, event_order: bool) -> Result<EnrichOutput, String> {
        if event_order {
            let mut added = std::mem::take(&mut self.added);
            let mut columns = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let name = field.name();
                let column = if let Some(values) = self.gathered.remove(name) {
                    EventColumn::Current(values)
                } else if let Some(i) = added.iter().position(|a| &a.name == name) {
                    let added = added.swap_remove(i);
                    match added.per_event {
                        true => EventColumn::Events(added.values),
                        false => EventColumn::Current(added.values),
                    }
                } else {
                    let values = self.ordered(name)?;
                    self.event_ordered.remove(name);
                    EventColumn::Events(values)
                };
                columns.push(column);
            }
            let rows = self.len();
            return Ok(EnrichOutput {
                rows,
                counts: BTreeMap::new(),
                emitted: 0,
                inputs: std::collections::VecDeque::new(),
                added: Vec::new(),
                schema,
                order: OutputOrder::Events {
                    columns,
                    rows: self.rows.take().map(UInt32Array::from),
                },
                batch_start: 0,
                ready: std::collections::VecDeque::new(),
            });
        }
        let order = if self.rows.is_some() {
            let input_rows = self.input_rows();
            let total: usize = self.inputs.iter().map(selected_len).sum();
            // Each input row's first output position, and the current row at each
            // position (a stable counting sort by input row keeps an expanded row's rows
            // in order).
            let mut first = vec![0u32; total + 1];
            for row in &input_rows {
                first[*row as usize + 1] += 1;
            }
            for row in 0..total {
                first[row + 1] += first[row];
            }
            let mut position_row = vec![0u32; input_rows.len()];
            let mut cursor = first.clone();
            for (k, row) in input_rows.iter().enumerate() {
                position_row[cursor[*row as usize] as usize] = k as u32;
                cursor[*row as usize] += 1;
            }
            OutputOrder::Reshaped {
                first,
                position_row,
                events: self.rows.take().unwrap_or_default(),
            }
        } else {
            if self.positions.is_empty() && !self.added.is_empty() {
                self.positions();
            }
            OutputOrder::Whole {
                positions: std::mem::take(&mut self.positions),
            }
        };
        let rows = match &order {
            OutputOrder::Whole { .. } => self.inputs.iter().map(selected_len).sum(),
            OutputOrder::Reshaped { position_row, .. } => position_row.len(),
            OutputOrder::Events { .. } | OutputOrder::Chunks(_) => unreachable!("returned above"),
        };
        Ok(EnrichOutput {
            rows,
            counts: BTreeMap::new(),
            emitted: 0,
            inputs: std::mem::take(&mut self.inputs).into(),
            added: std::mem::take(&mut self.added),
            schema,
            order,
            batch_start: 0,
            ready: std::collections::VecDeque::new(),
        })
    }
}

/// How output rows map to input rows and to the rows the rules left.
enum OutputOrder {
    /// No rule expanded or dropped rows: input row `g` is output row `g`, and
    /// `positions[g]` is its row in the added columns.
    Whole { positions: Vec<u32> },
    /// `first[g]..first[g + 1]` are input row `g`'s output positions,
    /// `position_row[p]` is output position `p`'s current row (its row in the added
    /// columns), and `events[r]` is current row `r`'s event (its row in the added
    /// columns with a value per event).
    Reshaped {
        first: Vec<u32>,
        position_row: Vec<u32>,
        events: Vec<u32>,
    },
    /// The output is in event order: the columns in the schema's order, each sliced or
    /// gathered batch by batch (see [`EventColumn`]); `rows` are the current rows'
    /// events, `None` when they are the events themselves.
    Events {
        columns: Vec<EventColumn>,
        rows: Option<UInt32Array>,
    },
    /// The rules run a chunk of symbols at a time (see [`Chunks`]).
    Chunks(Box<Chunks>),
}

/// The output when the rules run a chunk of symbols at a time.
struct Chunks {
    /// The whole date: input columns in event order, events and runs.
    frame: Frame,
    plan: RulePlan,
    /// The rows of a chunk (a chunk has at least one symbol).
    chunk_rows: usize,
    /// The first symbol of the next chunk.
    next_symbol: usize,
    /// The output of the current chunk.
    current: Option<Box<EnrichOutput>>,
}

/// An output column in event order.
enum EventColumn {
    /// One value per output row (an added column), sliced into batches.
    Current(ArrayRef),
    /// One value per event (an input column), gathered through the current rows one
    /// output batch at a time, so no whole expanded copy is ever held.
    Events(ArrayRef),
}

/// The rows of an input batch behind one output batch.
enum InputRows {
    /// A run: offset and length (sliced, not copied).
    Run(usize, usize),
    /// Any rows, repeated where a row expands.
    Indices(UInt32Array),
}

/// The output of the enrich kernel, built as it is consumed so the keyed operator can
/// pass each part downstream before building the next: in input order, one input
/// batch at a time; in event order, one output batch at a time (or, when the rules
/// run chunk by chunk, one chunk of symbols at a time).
pub struct EnrichOutput {
    /// The number of output rows, over all batches (of the current chunk, when the
    /// rules run chunk by chunk).
    rows: usize,
    /// The rules' counts (complete once the output is exhausted).
    counts: BTreeMap<String, u64>,
    /// The rows of the batches returned so far.
    emitted: usize,
    inputs: std::collections::VecDeque<SelectedRows>,
    added: Vec<Added>,
    schema: SchemaRef,
    order: OutputOrder,
    /// The global row of the next input batch's first row.
    batch_start: usize,
    ready: std::collections::VecDeque<RecordBatch>,
}

impl Iterator for EnrichOutput {
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = match self.order {
            OutputOrder::Chunks(_) => self.next_chunked(),
            _ => self.next_batch(),
        };
        if let Some(Ok(batch)) = &next {
            self.emitted += batch.num_rows();
        }
        next
    }
}

impl EnrichOutput {
    /// The output of `frame`, whose input columns are in event order, with the rules of
    /// `plan` run a chunk of symbols at a time as the output is consumed.
    fn chunked(frame: Frame, plan: RulePlan, chunk_rows: usize) -> Self {
        EnrichOutput {
            rows: 0,
            counts: BTreeMap::new(),
            emitted: 0,
            inputs: std::collections::VecDeque::new(),
            added: Vec::new(),
            schema: plan.schema.clone(),
            order: OutputOrder::Chunks(Box::new(Chunks {
                frame,
                plan,
                chunk_rows,
                next_symbol: 0,
                current: None,
            })),
            batch_start: 0,
            ready: std::collections::VecDeque::new(),
        }
    }

    /// The next batch of the current chunk; when it is done, the rules run over the
    /// next chunk of symbols (at least one symbol, `chunk_rows` rows or so).
    fn next_chunked(&mut self) -> Option<Result<RecordBatch, String>> {
        let OutputOrder::Chunks(chunks) = &mut self.order else {
            return None;
        };
        loop {
            if let Some(current) = &mut chunks.current {
                match current.next_batch() {
                    Some(next) => return Some(next),
                    None => chunks.current = None,
                }
            }
            let runs = &chunks.frame.runs;
            let symbols = runs.len() - 1;
            let start = chunks.next_symbol;
            if start >= symbols {
                return None;
            }
            let end = runs
                .partition_point(|run| *run < runs[start] + chunks.chunk_rows)
                .clamp(start + 1, symbols);
            chunks.next_symbol = end;
            let mut frame = chunks.frame.chunk(start..end);
            let plan = &chunks.plan;
            match plan
                .run(&mut frame, &mut self.counts)
                .and_then(|()| frame.into_output(plan.schema.clone(), true))
            {
                Ok(output) => chunks.current = Some(Box::new(output)),
                Err(message) => {
                    chunks.next_symbol = symbols;
                    return Some(Err(message));
                }
            }
        }
    }

    /// The rules' counts, summed by name (complete once the output is exhausted).
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// The number of rows of the batches returned so far.
    pub fn rows_emitted(&self) -> usize {
        self.emitted
    }

    /// The next output batch (in the orders other than by chunks).
    fn next_batch(&mut self) -> Option<Result<RecordBatch, String>> {
        if let OutputOrder::Events { columns, rows } = &self.order {
            let start = self.batch_start;
            if start >= self.rows {
                return None;
            }
            let length = OUTPUT_BATCH_ROWS.min(self.rows - start);
            self.batch_start += length;
            let events = rows.as_ref().map(|rows| rows.slice(start, length));
            let columns = columns.iter().map(|column| match (column, &events) {
                (EventColumn::Events(values), Some(events)) => {
                    arrow::compute::take(values, events, None)
                }
                (EventColumn::Current(values) | EventColumn::Events(values), _) => {
                    Ok(values.slice(start, length))
                }
            });
            let batch = columns
                .collect::<Result<Vec<_>, _>>()
                .and_then(|columns| RecordBatch::try_new(self.schema.clone(), columns))
                .map_err(|e| format!("enrich: output rows: {e}"));
            return Some(batch);
        }
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            let (batch, selection) = self.inputs.pop_front()?;
            // Selected rows are copied out here, one input batch at a time, for the
            // input columns the output keeps.
            let input = match selection {
                Some(rows) => take_rows(&batch, &rows),
                None => batch,
            };
            match self.output_of(&input) {
                Ok(batches) => self.ready.extend(batches),
                Err(message) => {
                    self.inputs.clear();
                    return Some(Err(message));
                }
            }
        }
    }
}

impl EnrichOutput {
    /// The output batches of one input batch.
    fn output_of(&mut self, input: &RecordBatch) -> Result<Vec<RecordBatch>, String> {
        let start = self.batch_start;
        self.batch_start += input.num_rows();
        let gather_error = |e: arrow::error::ArrowError| format!("enrich: output rows: {e}");
        // Per output batch: the rows of `input`, and the rows of the added columns with a
        // value per current row and with a value per event.
        let mut parts: Vec<(InputRows, Option<UInt32Array>, Option<UInt32Array>)> = Vec::new();
        match &self.order {
            OutputOrder::Events { .. } | OutputOrder::Chunks(_) => {
                unreachable!("event-order output has no input batches")
            }
            OutputOrder::Whole { positions } => {
                for chunk in (0..input.num_rows()).step_by(OUTPUT_BATCH_ROWS) {
                    let rows = OUTPUT_BATCH_ROWS.min(input.num_rows() - chunk);
                    // Current rows are the events.
                    let added = (!self.added.is_empty()).then(|| {
                        UInt32Array::from(positions[start + chunk..start + chunk + rows].to_vec())
                    });
                    parts.push((InputRows::Run(chunk, rows), added.clone(), added));
                }
            }
            OutputOrder::Reshaped {
                first,
                position_row,
                events,
            } => {
                let batch_rows = start..start + input.num_rows();
                // The row of `input` behind each of its output rows.
                let mut local_rows =
                    Vec::with_capacity((first[batch_rows.end] - first[batch_rows.start]) as usize);
                for row in batch_rows.clone() {
                    let copies = first[row + 1] - first[row];
                    local_rows.extend(std::iter::repeat_n(
                        (row - batch_rows.start) as u32,
                        copies as usize,
                    ));
                }
                let positions = first[batch_rows.start] as usize;
                for chunk_start in (0..local_rows.len()).step_by(OUTPUT_BATCH_ROWS) {
                    let chunk = chunk_start..local_rows.len().min(chunk_start + OUTPUT_BATCH_ROWS);
                    let rows = &local_rows[chunk.clone()];
                    let current = &position_row[positions + chunk.start..positions + chunk.end];
                    let per_event = self.added.iter().any(|a| a.per_event).then(|| {
                        current
                            .iter()
                            .map(|r| events[*r as usize])
                            .collect::<UInt32Array>()
                    });
                    let added = UInt32Array::from(current.to_vec());
                    // Without expansion or drops the output rows are a run of input
                    // rows: slice, don't copy.
                    let run = rows.windows(2).all(|w| w[1] == w[0] + 1);
                    let input_rows = if run {
                        InputRows::Run(rows[0] as usize, rows.len())
                    } else {
                        InputRows::Indices(UInt32Array::from(rows.to_vec()))
                    };
                    parts.push((input_rows, Some(added), per_event));
                }
            }
        }
        let mut batches = Vec::with_capacity(parts.len());
        for (input_rows, current_rows, event_rows) in parts {
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
            for field in self.schema.fields() {
                if let Some(added) = self.added.iter().find(|a| &a.name == field.name()) {
                    let indices = match added.per_event {
                        true => event_rows.as_ref(),
                        false => current_rows.as_ref(),
                    };
                    let indices = indices.expect("there are added columns");
                    let taken = arrow::compute::take(&added.values, indices, None);
                    columns.push(taken.map_err(gather_error)?);
                    continue;
                }
                let column = input
                    .column_by_name(field.name())
                    .expect("the schema's input columns are in every batch");
                match &input_rows {
                    InputRows::Run(offset, length) => columns.push(column.slice(*offset, *length)),
                    InputRows::Indices(indices) => columns
                        .push(arrow::compute::take(column, indices, None).map_err(gather_error)?),
                }
            }
            batches.push(RecordBatch::try_new(self.schema.clone(), columns).map_err(gather_error)?);
        }
        Ok(batches)
    }
}

/// A column of one input batch, and the rows of it that count (all when `None`).
type Part<'a> = (&'a ArrayRef, Option<&'a UInt32Array>);

/// A column of the input batches (`parts`, in input order, through their selections)
/// put in event order by scattering: input row `g` goes to `positions[g]`. Reading the
/// input in order and writing to one cursor per symbol keeps memory access local, where
/// gathering in event order would miss the cache on nearly every row. Primitive and
/// Utf8 columns; `None` for other types (which are gathered).
fn scatter(parts: &[Part<'_>], positions: &[u32]) -> Option<ArrayRef> {
    let data_type = parts.first()?.0.data_type();
    if data_type == &DataType::Utf8 {
        return scatter_utf8(parts, positions).map(|s| Arc::new(s) as ArrayRef);
    }
    if !data_type.is_primitive() {
        return None;
    }
    macro_rules! scatter_as {
        ($t:ty) => {
            Some(Arc::new(scatter_primitive::<$t>(parts, positions)) as ArrayRef)
        };
    }
    use arrow::datatypes::*;
    match data_type {
        DataType::Int8 => scatter_as!(Int8Type),
        DataType::Int16 => scatter_as!(Int16Type),
        DataType::Int32 => scatter_as!(Int32Type),
        DataType::Int64 => scatter_as!(Int64Type),
        DataType::UInt8 => scatter_as!(UInt8Type),
        DataType::UInt16 => scatter_as!(UInt16Type),
        DataType::UInt32 => scatter_as!(UInt32Type),
        DataType::UInt64 => scatter_as!(UInt64Type),
        DataType::Float32 => scatter_as!(Float32Type),
        DataType::Float64 => scatter_as!(Float64Type),
        _ => None,
    }
}

fn scatter_primitive<T: arrow::datatypes::ArrowPrimitiveType>(
    parts: &[Part<'_>],
    positions: &[u32],
) -> arrow::array::PrimitiveArray<T> {
    let mut values = vec![T::Native::default(); positions.len()];
    let mut valid = scattered_validity(parts, positions.len());
    let mut next = 0;
    for (part, selection) in parts {
        let part = part.as_primitive::<T>();
        let part_values = part.values();
        for_each_row(part.len(), *selection, |i| {
            let position = positions[next] as usize;
            values[position] = part_values[i];
            if let Some(valid) = valid.as_mut()
                && part.is_valid(i)
            {
                valid.set_bit(position, true);
            }
            next += 1;
        });
    }
    let nulls = valid.map(|mut valid| arrow::buffer::NullBuffer::new(valid.finish()));
    arrow::array::PrimitiveArray::<T>::new(values.into(), nulls)
        .with_data_type(parts[0].0.data_type().clone())
}

/// The validity of `n` values scattered from `parts`: `None` when no part has a null,
/// else every bit clear until the valid values set theirs.
fn scattered_validity(parts: &[Part<'_>], n: usize) -> Option<arrow::array::BooleanBufferBuilder> {
    parts.iter().any(|(p, _)| p.null_count() > 0).then(|| {
        let mut valid = arrow::array::BooleanBufferBuilder::new(n);
        valid.append_n(n, false);
        valid
    })
}

/// [`scatter`] for strings: the lengths first, then the bytes to their offsets; `None`
/// when the strings need more than 32-bit offsets.
fn scatter_utf8(parts: &[Part<'_>], positions: &[u32]) -> Option<StringArray> {
    let n = positions.len();
    if let Some(width) = fixed_width(parts).filter(|w| w * n <= i32::MAX as usize) {
        // Strings all `width` bytes long: the offsets are multiples of the width.
        let mut bytes = vec![0u8; n * width];
        let nulls = scatter_string_bytes(parts, positions, &mut bytes, |position| position * width);
        let offsets = arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(width, n));
        return Some(StringArray::new(offsets, bytes.into(), nulls));
    }
    let mut lengths = vec![0i32; n];
    let mut next = 0;
    for (part, selection) in parts {
        let part = part.as_string::<i32>();
        let offsets = part.value_offsets();
        for_each_row(part.len(), *selection, |i| {
            lengths[positions[next] as usize] = offsets[i + 1] - offsets[i];
            next += 1;
        });
    }
    let mut offsets = Vec::with_capacity(n + 1);
    let mut end = 0i64;
    offsets.push(0i32);
    for length in &lengths {
        end += i64::from(*length);
        offsets.push(i32::try_from(end).unwrap_or(i32::MAX));
    }
    drop(lengths);
    if end > i64::from(i32::MAX) {
        // Too long for 32-bit offsets: the caller's gather reports it.
        return None;
    }
    let mut bytes = vec![0u8; end as usize];
    let nulls = scatter_string_bytes(parts, positions, &mut bytes, |position| {
        offsets[position] as usize
    });
    let offsets = arrow::buffer::OffsetBuffer::new(offsets.into());
    Some(StringArray::new(offsets, bytes.into(), nulls))
}

/// Copies the bytes of each string of the parts to `bytes[start(position)..]`, where
/// `position` is its row in event order; returns the validity when a value is null.
fn scatter_string_bytes(
    parts: &[Part<'_>],
    positions: &[u32],
    bytes: &mut [u8],
    start: impl Fn(usize) -> usize,
) -> Option<arrow::buffer::NullBuffer> {
    let mut valid = scattered_validity(parts, positions.len());
    let mut next = 0;
    for (part, selection) in parts {
        let part = part.as_string::<i32>();
        let (values, offsets) = (part.value_data(), part.value_offsets());
        for_each_row(part.len(), *selection, |i| {
            let position = positions[next] as usize;
            let (from, to) = (offsets[i] as usize, offsets[i + 1] as usize);
            let start = start(position);
            copy_short(&mut bytes[start..start + (to - from)], &values[from..to]);
            if let Some(valid) = valid.as_mut()
                && part.is_valid(i)
            {
                valid.set_bit(position, true);
            }
            next += 1;
        });
    }
    valid.map(|mut valid| arrow::buffer::NullBuffer::new(valid.finish()))
}

/// The length of every string of the parts (over all their rows), when there is one
/// and it is at most 16 bytes: categorical columns such as a side (`B`/`S`). Null
/// rows count with their (usually zero) length.
fn fixed_width(parts: &[Part<'_>]) -> Option<usize> {
    let mut width = None;
    for (part, _) in parts {
        let offsets = part.as_string::<i32>().value_offsets();
        let first = (offsets.len() > 1).then(|| offsets[1] - offsets[0])?;
        if offsets.windows(2).any(|w| w[1] - w[0] != first) || *width.get_or_insert(first) != first
        {
            return None;
        }
    }
    width.map(|w| w as usize).filter(|w| *w <= 16)
}

/// Copies a string's bytes, a single byte without a call to `memcpy` (categorical
/// columns such as a side are often one byte long).
#[inline(always)]
fn copy_short(to: &mut [u8], from: &[u8]) {
    if let ([t], [f]) = (&mut *to, from) {
        *t = *f;
    } else {
        to.copy_from_slice(from);
    }
}

/// The batches' common schema (nullable if any batch's column is), or an error naming
/// the first batch that differs.
fn common_schema(parts: &[SelectedRows]) -> Result<SchemaRef, String> {
    let first = parts[0].0.schema();
    let mut fields: Vec<Field> = first.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (b, (batch, _)) in parts.iter().enumerate().skip(1) {
        let schema = batch.schema();
        let same = schema.fields().len() == fields.len()
            && schema
                .fields()
                .iter()
                .zip(&fields)
                .all(|(f, g)| f.name() == g.name() && f.data_type() == g.data_type());
        if !same {
            let describe = |s: &Schema| {
                let fields = s
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()));
                fields.collect::<Vec<_>>().join(", ")
            };
            return Err(format!(
                "enrich: batch {b} of the date has columns ({}) but batch 0 has ({}); \
                 all batches of a date must share one schema",
                describe(&schema),
                describe(&first)
            ));
        }
        for (field, other) in fields.iter_mut().zip(schema.fields()) {
            if other.is_nullable() && !field.is_nullable() {
                *field = field.clone().with_nullable(true);
            }
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The `row_id` of a part's first selected row (0 when it has none or no `row_id`
/// column; [`event_values`] reports a missing one).
fn first_row_id((batch, selection): &SelectedRows) -> u64 {
    let first = selection
        .as_ref()
        .map_or(Some(0), |rows| rows.values().first().map(|r| *r as usize));
    let ids = batch
        .column_by_name(ROW_ID)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>());
    match (ids, first) {
        (Some(ids), Some(row)) if row < ids.len() => ids.values()[row],
        _ => 0,
    }
}

/// A part's `elapsed_ms` and `row_id` values, checked to have no nulls among the rows
/// it selects.
fn event_values((batch, selection): &SelectedRows) -> Result<(&[i64], &[u64]), String> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            format!(
                "enrich: column '{name}' is missing (parse_time adds elapsed_ms, the engine row_id)"
            )
        })
    };
    let (elapsed, ids) = (column(ELAPSED_MS)?, column(ROW_ID)?);
    let elapsed = elapsed.as_primitive_opt::<Int64Type>().ok_or_else(|| {
        format!(
            "enrich: column '{ELAPSED_MS}' has type {}; expected Int64",
            elapsed.data_type()
        )
    })?;
    let ids = ids.as_primitive_opt::<UInt64Type>().ok_or_else(|| {
        format!(
            "enrich: column '{ROW_ID}' has type {}; expected UInt64",
            ids.data_type()
        )
    })?;
    for (name, nulls) in [(ELAPSED_MS, elapsed.nulls()), (ROW_ID, ids.nulls())] {
        let Some(nulls) = nulls else {
            continue;
        };
        let mut count = 0;
        for_each_row(batch.num_rows(), selection.as_ref(), |row| {
            count += usize::from(nulls.is_null(row));
        });
        if count > 0 {
            return Err(format!("enrich: column '{name}' has {count} null values"));
        }
    }
    Ok((elapsed.values(), ids.values()))
}

/// A worker's rows of a date in event order: grouped by symbol (a counting sort), each
/// symbol's rows sorted by event key.
struct Events {
    /// Where each symbol's events start, then the end.
    starts: Vec<usize>,
    /// Each event's input row (its index over the parts' selected rows).
    rows: Vec<u32>,
    /// Each event's `elapsed_ms` and `row_id`.
    times: EventTimes,
}

/// The events' times: packed in their sort keys (8 bytes an event) until a rule needs
/// them, then split into `elapsed_ms` and `row_id` (16 bytes), and the keys let go.
/// Rules run a chunk of symbols at a time when they can, so the split exists for one
/// chunk, not for the date.
enum EventTimes {
    /// `elapsed_ms` above `row_id` ([`ROW_ID_BITS`]).
    Keys(ScalarBuffer<u64>),
    /// `elapsed_ms` and `row_id`.
    Split(ScalarBuffer<i64>, ScalarBuffer<u64>),
}

impl EventTimes {
    fn len(&self) -> usize {
        match self {
            EventTimes::Keys(keys) => keys.len(),
            EventTimes::Split(_, row_id) => row_id.len(),
        }
    }

    /// The times of events `offset..offset + len` (no copy).
    fn slice(&self, offset: usize, len: usize) -> EventTimes {
        match self {
            EventTimes::Keys(keys) => EventTimes::Keys(keys.slice(offset, len)),
            EventTimes::Split(elapsed, row_id) => {
                EventTimes::Split(elapsed.slice(offset, len), row_id.slice(offset, len))
            }
        }
    }

    /// `elapsed_ms` and `row_id`, split from the keys the first time.
    fn split(&mut self) -> (&[i64], &[u64]) {
        if let EventTimes::Keys(keys) = self {
            let (elapsed, row_id): (Vec<i64>, Vec<u64>) = keys
                .iter()
                .map(|key| ((key >> ROW_ID_BITS) as i64, key & ((1 << ROW_ID_BITS) - 1)))
                .unzip();
            *self = EventTimes::Split(elapsed.into(), row_id.into());
        }
        match self {
            EventTimes::Split(elapsed, row_id) => (elapsed, row_id),
            EventTimes::Keys(_) => unreachable!("split above"),
        }
    }
}

/// The events of the rows the parts select, whose symbol ids are `symbols`: each row's
/// event key (`elapsed_ms` above `row_id`, both checked to fit) goes straight to its
/// symbol's place, then each symbol's keys are sorted with their rows: 16 bytes a row
/// (symbol id, key and row), of which the keys and rows are kept.
fn event_order(
    parts: &[SelectedRows],
    symbols: &[u32],
    symbol_count: usize,
) -> Result<Events, String> {
    let mut starts = vec![0usize; symbol_count + 1];
    for s in symbols {
        starts[*s as usize + 1] += 1;
    }
    for s in 0..symbol_count {
        starts[s + 1] += starts[s];
    }
    let mut keys = vec![0u64; symbols.len()];
    let mut rows = vec![0u32; symbols.len()];
    let mut cursor = starts.clone();
    let (mut row, mut out_of_range) = (0usize, None);
    for part in parts {
        let (elapsed, ids) = event_values(part)?;
        for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
            let (e, id) = (elapsed[r], ids[r]);
            if !(0..1 << (64 - ROW_ID_BITS - 1)).contains(&e) || id >= 1 << ROW_ID_BITS {
                out_of_range.get_or_insert((e, id));
            }
            let at = &mut cursor[symbols[row] as usize];
            keys[*at] = ((e as u64) << ROW_ID_BITS) | id;
            rows[*at] = row as u32;
            *at += 1;
            row += 1;
        });
    }
    if let Some((e, id)) = out_of_range {
        return Err(format!(
            "enrich: event time out of range (elapsed_ms {e}, row_id {id}); \
             elapsed_ms must be in 0..2^27 and row_id below 2^36"
        ));
    }
    drop(cursor);
    for s in 0..symbol_count {
        let symbol = starts[s]..starts[s + 1];
        sort_events(&mut keys[symbol.clone()], &mut rows[symbol]);
    }
    Ok(Events {
        starts,
        rows,
        times: EventTimes::Keys(keys.into()),
    })
}

/// Sorts one symbol's events by key, moving each event's row with its key. They come
/// nearly sorted (in row_id order, and times mostly increase with it), so an insertion
/// sort is about one pass; past a budget of moves (input far from event order) a
/// general sort takes over.
fn sort_events(keys: &mut [u64], rows: &mut [u32]) {
    let budget = 8 * keys.len() + 64;
    let mut moves = 0;
    for i in 1..keys.len() {
        let (key, row) = (keys[i], rows[i]);
        if key >= keys[i - 1] {
            continue;
        }
        let mut j = i;
        while j > 0 && keys[j - 1] > key {
            keys[j] = keys[j - 1];
            rows[j] = rows[j - 1];
            j -= 1;
        }
        keys[j] = key;
        rows[j] = row;
        moves += i - j;
        if moves > budget {
            let mut events: Vec<(u64, u32)> =
                keys.iter().copied().zip(rows.iter().copied()).collect();
            events.sort_unstable_by_key(|(key, _)| *key);
            for (i, (key, row)) in events.into_iter().enumerate() {
                keys[i] = key;
                rows[i] = row;
            }
            return;
        }
    }
}

/// The `enrich` operator.
pub trait Enrich<'scope> {
    /// Runs the rules per symbol and date (see the module docs), exchanging rows by
    /// symbol ([`Partition::Symbol`]).
    fn enrich(self, spec: EnrichSpec, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch>;

    /// Runs the rules per symbol and date with rows spread over the workers as
    /// `partition` says. With [`Partition::Date`] rows are not exchanged: every row of
    /// a date must reach the operator on the same worker (the date's owner).
    fn enrich_partitioned(
        self,
        spec: EnrichSpec,
        diagnostics: Diagnostics,
        partition: Partition,
    ) -> Stream<'scope, Time, Batch>;
}

impl<'scope> Enrich<'scope> for Stream<'scope, Time, Batch> {
    fn enrich(self, spec: EnrichSpec, diagnostics: Diagnostics) -> Stream<'scope, Time, Batch> {
        self.enrich_partitioned(spec, diagnostics, Partition::Symbol)
    }

    fn enrich_partitioned(
        self,
        spec: EnrichSpec,
        diagnostics: Diagnostics,
        partition: Partition,
    ) -> Stream<'scope, Time, Batch> {
        let pact = by_symbol(&spec.symbol);
        let logic = move |date_key, parts: Vec<SelectedRows>, diagnostics: &Diagnostics| {
            let rows_in: usize = parts.iter().map(selected_len).sum();
            let null_symbols: usize = parts
                .iter()
                .filter_map(|(b, selection)| Some((b.column_by_name(&spec.symbol)?, selection)))
                .map(
                    |(symbols, selection)| match (symbols.logical_nulls(), selection) {
                        (None, _) => 0,
                        (Some(nulls), None) => nulls.null_count(),
                        (Some(nulls), Some(rows)) => rows
                            .values()
                            .iter()
                            .filter(|row| nulls.is_null(**row as usize))
                            .count(),
                    },
                )
                .sum();
            let stage = [
                ("enrich.rows_in", rows_in as u64),
                ("enrich.null_symbol_rows", null_symbols as u64),
            ];
            diagnostics.add_all(date_key, stage);
            let mut out = enrich_selected(parts, &spec)?;
            let diagnostics = diagnostics.clone();
            // The rules' counts and the output rows are complete once the output is (the
            // rules may run chunk by chunk as it is consumed); a date that fails on the
            // way reports none of them.
            let mut reported = false;
            Ok(std::iter::from_fn(move || {
                let next = out.next();
                if next.is_none() && !reported {
                    reported = true;
                    let rows_out = ("enrich.rows_out", out.rows_emitted() as u64);
                    let rules = out.counts().iter().map(|(k, v)| (k.as_str(), *v));
                    diagnostics.add_all(date_key, std::iter::once(rows_out).chain(rules));
                }
                next
            }))
        };
        match partition {
            Partition::Symbol => per_date(self, pact, "Enrich", diagnostics, logic),
            Partition::Date => per_date(self, Pipeline, "Enrich", diagnostics, logic),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rules written in Rust.

/// The event a row belongs to: its `row_id` and `elapsed_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The row's position in the date's file.
    pub row_id: u64,
    /// The row's trading time in ms since the first session's start.
    pub elapsed_ms: i64,
}

/// A rule written in Rust: the seeds' `TagRule.process(row, state)`, typed.
///
/// Per symbol and date, the operator creates a fresh `State::default()` and calls
/// [`TagRule::process`] once per row in event order. The rule emits any number of
/// output rows for the row with [`Emit::push`]: one is the common case, several expand
/// the row (each copy keeps all the row's columns), none drops it (counted as
/// `rule.{name}.dropped_rows`). Register it on a pipeline with the library API (see
/// `Pipeline::with_rule` in the `vizflow` crate) or wrap it with [`custom`].
///
/// Inputs are read as the types of `Input`: `Option<f64>` reads any numeric column
/// (cast to `f64`), `Option<i64>` any integer column, `Option<&str>` any string
/// column, `Option<bool>` a boolean column; nulls are `None`. The same types without
/// `Option` read nulls as `0`, `0.0`, `""` and `false`. Outputs are typed the same way
/// (`Option<T>` writes nulls).
///
/// The rule's `Debug` form (derive it) is its [fingerprint](TagRule::fingerprint):
/// `--skip-existing` recomputes a date's partial when it changes.
pub trait TagRule: fmt::Debug + Send + Sync + 'static {
    /// The state kept per symbol and date.
    type State: Default;
    /// The input values of one row: a value type or a tuple of up to six.
    type Input<'a>: InputRow<'a>;
    /// The output values of one output row: a value type or a tuple of up to six.
    type Output: OutputRow;

    /// The rule's name, used in errors and report counts.
    fn name(&self) -> String;
    /// The input column names, one per element of `Input`.
    fn inputs(&self) -> Vec<String>;
    /// The output column names, one per element of `Output`.
    fn outputs(&self) -> Vec<String>;
    /// Processes one row (in event order), updating `state` and emitting output rows.
    fn process(
        &self,
        input: Self::Input<'_>,
        event: Event,
        state: &mut Self::State,
        emit: &mut Emit<'_, Self::Output>,
    );
    /// What defines the rule's results beside its code: its parameters. It enters the
    /// pipeline's hash (stored in every partial), so `--skip-existing` recomputes the
    /// partials a rule with other parameters made. The default is the rule's `Debug`
    /// form; override it when that form leaves out something the results depend on (a
    /// table the rule loads, say), or changes when the results do not.
    fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

/// Where [`TagRule::process`] puts its output rows.
pub struct Emit<'b, O: OutputRow> {
    builders: &'b mut O::Builders,
    source: &'b mut Vec<u32>,
    row: u32,
}

impl<O: OutputRow> Emit<'_, O> {
    /// Emits one output row for the current row, with these output values.
    pub fn push(&mut self, values: O) {
        values.append(self.builders);
        self.source.push(self.row);
    }
}

/// A [`TagRule`] as an [`EnrichRule`], to put in an [`EnrichSpec`].
pub fn custom<R: TagRule>(rule: R) -> Arc<dyn EnrichRule> {
    Arc::new(Custom(rule))
}

struct Custom<R>(R);

impl<R: TagRule> fmt::Debug for Custom<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagRule({})", self.0.name())
    }
}

impl<R: TagRule> EnrichRule for Custom<R> {
    fn name(&self) -> String {
        format!("TagRule({})", self.0.name())
    }

    fn fingerprint(&self) -> String {
        format!("{}: {}", self.name(), self.0.fingerprint())
    }

    fn inputs(&self) -> Vec<String> {
        self.0.inputs()
    }

    fn output_names(&self) -> Vec<String> {
        self.0.outputs()
    }

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, String> {
        let (inputs, outputs) = (self.0.inputs(), self.0.outputs());
        let input_types = R::Input::types();
        if inputs.len() != input_types.len() {
            return Err(format!(
                "{}: inputs() names {} columns but the Input type has {} values",
                self.name(),
                inputs.len(),
                input_types.len()
            ));
        }
        for (name, wanted) in inputs.iter().zip(&input_types) {
            let actual = schema
                .field_with_name(name)
                .map_err(|e| e.to_string())?
                .data_type();
            if wanted.cast_from(actual).is_none() {
                return Err(format!(
                    "{}: input column '{name}' has type {actual}, which cannot be read as {}",
                    self.name(),
                    wanted.describe()
                ));
            }
        }
        let output_types = R::Output::data_types();
        if outputs.len() != output_types.len() {
            return Err(format!(
                "{}: outputs() names {} columns but the Output type has {} values",
                self.name(),
                outputs.len(),
                output_types.len()
            ));
        }
        Ok(outputs
            .into_iter()
            .zip(output_types)
            .map(|(name, data_type)| Field::new(name, data_type, true))
            .collect())
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, String> {
        let name = self.0.name();
        let columns: Vec<ArrayRef> = rows
            .columns
            .iter()
            .zip(R::Input::types())
            .map(|(column, kind)| kind.cast(column))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("TagRule({name}): reading an input column: {e}"))?;
        let readers = R::Input::readers(&columns);
        let mut builders = R::Output::builders(rows.len());
        let mut source = Vec::with_capacity(rows.len());
        for run in rows.runs.windows(2) {
            let mut state = R::State::default();
            for row in run[0]..run[1] {
                let event = Event {
                    row_id: rows.row_id[row],
                    elapsed_ms: rows.elapsed_ms[row],
                };
                let mut emit = Emit {
                    builders: &mut builders,
                    source: &mut source,
                    row: row as u32,
                };
                self.0
                    .process(R::Input::read(&readers, row), event, &mut state, &mut emit);
            }
        }
        let mut counts = Vec::new();
        let identity =
            source.len() == rows.len() && source.iter().enumerate().all(|(i, s)| *s as usize == i);
        if !identity {
            let mut emitted = vec![false; rows.len()];
            for s in &source {
                emitted[*s as usize] = true;
            }
            let dropped = emitted.iter().filter(|e| !**e).count() as u64;
            counts.push((format!("rule.{name}.dropped_rows"), dropped));
            counts.push((
                format!("rule.{name}.added_rows"),
                (source.len() as u64 + dropped).saturating_sub(rows.len() as u64),
            ));
        }
        Ok(RuleOutput {
            source: (!identity).then_some(source),
            columns: R::Output::finish(builders),
            counts,
        })
    }
}

/// The types a [`TagRule`] reads its input columns as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputType {
    /// `f64`: any numeric column.
    Float,
    /// `i64`: any integer column.
    Int,
    /// `&str`: any string column (plain, large, view or dictionary).
    Str,
    /// `bool`: a boolean column.
    Bool,
}

impl InputType {
    fn data_type(self) -> DataType {
        match self {
            InputType::Float => DataType::Float64,
            InputType::Int => DataType::Int64,
            InputType::Str => DataType::Utf8,
            InputType::Bool => DataType::Boolean,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            InputType::Float => "f64 (any numeric column)",
            InputType::Int => "i64 (any integer column)",
            InputType::Str => "&str (any string column)",
            InputType::Bool => "bool (a boolean column)",
        }
    }

    /// `Some(())` when a column of type `actual` can be read as this type.
    fn cast_from(self, actual: &DataType) -> Option<()> {
        let ok = match self {
            InputType::Float => actual.is_numeric(),
            InputType::Int => actual.is_integer(),
            InputType::Str => {
                matches!(
                    actual,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) || matches!(actual, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
            }
            InputType::Bool => actual == &DataType::Boolean,
        };
        ok.then_some(())
    }

    fn cast(self, column: &ArrayRef) -> Result<ArrayRef, arrow::error::ArrowError> {
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow::compute::cast_with_options(column, &self.data_type(), &options)
    }
}

/// A typed input column, ready to read row by row.
#[derive(Debug)]
pub enum Reader<'a> {
    /// A Float64 column.
    Float(&'a Float64Array),
    /// An Int64 column.
    Int(&'a Int64Array),
    /// A Utf8 column.
    Str(&'a StringArray),
    /// A Boolean column.
    Bool(&'a BooleanArray),
}

impl<'a> Reader<'a> {
    fn new(column: &'a ArrayRef) -> Self {
        match column.data_type() {
            DataType::Float64 => Reader::Float(column.as_primitive::<Float64Type>()),
            DataType::Int64 => Reader::Int(column.as_primitive::<Int64Type>()),
            DataType::Utf8 => Reader::Str(column.as_string::<i32>()),
            _ => Reader::Bool(column.as_boolean()),
        }
    }
}

/// A value a [`TagRule`] reads from one input column.
pub trait InputValue<'a>: Sized {
    /// The column type it reads.
    const TYPE: InputType;
    /// The value at `row`.
    fn read(reader: &Reader<'a>, row: usize) -> Self;
}

macro_rules! input_value {
    ($variant:ident, $t:ty, $read:expr, $default:expr) => {
        impl<'a> InputValue<'a> for Option<$t> {
            const TYPE: InputType = InputType::$variant;
            #[inline]
            fn read(reader: &Reader<'a>, row: usize) -> Self {
                match reader {
                    Reader::$variant(array) => array.is_valid(row).then(|| $read(*array, row)),
                    _ => unreachable!("columns are cast to the input type"),
                }
            }
        }
        impl<'a> InputValue<'a> for $t {
            const TYPE: InputType = InputType::$variant;
            #[inline]
            fn read(reader: &Reader<'a>, row: usize) -> Self {
                <Option<$t> as InputValue<'a>>::read(reader, row).unwrap_or($default)
            }
        }
    };
}

input_value!(Float, f64, |a: &Float64Array, i| a.value(i), 0.0);
input_value!(Int, i64, |a: &Int64Array, i| a.value(i), 0);
input_value!(Str, &'a str, |a: &'a StringArray, i| a.value(i), "");
input_value!(Bool, bool, |a: &BooleanArray, i| a.value(i), false);

/// The input values of one row: one [`InputValue`] or a tuple of them.
pub trait InputRow<'a>: Sized {
    /// Each value's column type.
    fn types() -> Vec<InputType>;
    /// Typed readers over the (already cast) input columns.
    fn readers(columns: &'a [ArrayRef]) -> Vec<Reader<'a>> {
        columns.iter().map(Reader::new).collect()
    }
    /// The values at `row`.
    fn read(readers: &[Reader<'a>], row: usize) -> Self;
}

impl<'a, T: InputValue<'a>> InputRow<'a> for T {
    fn types() -> Vec<InputType> {
        vec![T::TYPE]
    }
    #[inline]
    fn read(readers: &[Reader<'a>], row: usize) -> Self {
        T::read(&readers[0], row)
    }
}

macro_rules! input_tuple {
    ($($t:ident $i:tt),+) => {
        impl<'a, $($t: InputValue<'a>),+> InputRow<'a> for ($($t,)+) {
            fn types() -> Vec<InputType> {
                vec![$($t::TYPE),+]
            }
            #[inline]
            fn read(readers: &[Reader<'a>], row: usize) -> Self {
                ($($t::read(&readers[$i], row),)+)
            }
        }
    };
}

input_tuple!(A 0);
input_tuple!(A 0, B 1);
input_tuple!(A 0, B 1, C 2);
input_tuple!(A 0, B 1, C 2, D 3);
input_tuple!(A 0, B 1, C 2, D 3, E 4);
input_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

/// A value a [`TagRule`] writes to one output column.
pub trait OutputValue: Sized {
    /// The column's builder.
    type Builder;
    /// The column's type.
    fn data_type() -> DataType;
    /// A builder with room for `rows` values.
    fn builder(rows: usize) -> Self::Builder;
    /// Appends the value.
    fn append(self, builder: &mut Self::Builder);
    /// The finished column.
    fn finish(builder: Self::Builder) -> ArrayRef;
}

macro_rules! output_value {
    ($t:ty, $builder:ty, $data_type:expr) => {
        impl OutputValue for Option<$t> {
            type Builder = $builder;
            fn data_type() -> DataType {
                $data_type
            }
            fn builder(rows: usize) -> Self::Builder {
                <$builder>::with_capacity(rows)
            }
            #[inline]
            fn append(self, builder: &mut Self::Builder) {
                builder.append_option(self);
            }
            fn finish(mut builder: Self::Builder) -> ArrayRef {
                Arc::new(builder.finish())
            }
        }
        impl OutputValue for $t {
            type Builder = $builder;
            fn data_type() -> DataType {
                $data_type
            }
            fn builder(rows: usize) -> Self::Builder {
                <$builder>::with_capacity(rows)
            }
            #[inline]
            fn append(self, builder: &mut Self::Builder) {
                builder.append_value(self);
            }
            fn finish(mut builder: Self::Builder) -> ArrayRef {
                Arc::new(builder.finish())
            }
        }
    };
}

output_value!(f64, Float64Builder, DataType::Float64);
output_value!(i64, Int64Builder, DataType::Int64);
output_value!(u64, UInt64Builder, DataType::UInt64);
output_value!(bool, BooleanBuilder, DataType::Boolean);

/// The output values of one output row: one [`OutputValue`] or a tuple of them.
pub trait OutputRow: Sized {
    /// The columns' builders.
    type Builders;
    /// Each column's type.
    fn data_types() -> Vec<DataType>;
    /// Builders with room for `rows` rows.
    fn builders(rows: usize) -> Self::Builders;
    /// Appends one row.
    fn append(self, builders: &mut Self::Builders);
    /// The finished columns.
    fn finish(builders: Self::Builders) -> Vec<ArrayRef>;
}

impl<T: OutputValue> OutputRow for T {
    type Builders = T::Builder;
    fn data_types() -> Vec<DataType> {
        vec![T::data_type()]
    }
    fn builders(rows: usize) -> Self::Builders {
        T::builder(rows)
    }
    #[inline]
    fn append(self, builders: &mut Self::Builders) {
        OutputValue::append(self, builders)
    }
    fn finish(builders: Self::Builders) -> Vec<ArrayRef> {
        vec![T::finish(builders)]
    }
}

macro_rules! output_tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t: OutputValue),+> OutputRow for ($($t,)+) {
            type Builders = ($($t::Builder,)+);
            fn data_types() -> Vec<DataType> {
                vec![$($t::data_type()),+]
            }
            fn builders(rows: usize) -> Self::Builders {
                ($($t::builder(rows),)+)
            }
            #[inline]
            fn append(self, builders: &mut Self::Builders) {
                $(self.$i.append(&mut builders.$i);)+
            }
            fn finish(builders: Self::Builders) -> Vec<ArrayRef> {
                vec![$($t::finish(builders.$i)),+]
            }
        }
    };
}

output_tuple!(A 0);
output_tuple!(A 0, B 1);
output_tuple!(A 0, B 1, C 2);
output_tuple!(A 0, B 1, C 2, D 3);
output_tuple!(A 0, B 1, C 2, D 3, E 4);
output_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, UInt64Array};

    /// Rows of two symbols, given out of event order: (symbol, elapsed_ms, qty).
    fn batch() -> RecordBatch {
        let rows = [
            ("A", 3_000, 5),
            ("B", 1_000, 7),
            ("A", 1_000, 2),
            ("A", 1_000, 4),
            ("B", 0, 1),
        ];
        RecordBatch::try_from_iter([
            (
                "ukey",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                ELAPSED_MS,
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as _,
            ),
            (
                "qty",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))) as _,
            ),
            (ROW_ID, Arc::new(UInt64Array::from_iter_values(0..5)) as _),
        ])
        .unwrap()
    }

    /// Emits `qty` copies of each row with odd quantity (numbered 1..), none of even
    /// ones, and the running sum of quantities per symbol.
    #[derive(Debug)]
    struct Expand;

    impl TagRule for Expand {
        type State = i64;
        type Input<'a> = i64;
        type Output = (i64, Option<i64>);
        fn name(&self) -> String {
            "expand".into()
        }
        fn inputs(&self) -> Vec<String> {
            vec!["qty".into()]
        }
        fn outputs(&self) -> Vec<String> {
            vec!["copy".into(), "running".into()]
        }
        fn process(&self, qty: i64, _: Event, sum: &mut i64, emit: &mut Emit<'_, Self::Output>) {
            *sum += qty;
            if qty % 2 == 1 {
                for copy in 1..=qty.min(2) {
                    emit.push((copy, Some(*sum)));
                }
            }
        }
    }

    fn column(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
        let mut values = Vec::new();
        for batch in batches {
            let column = batch.column_by_name(name).unwrap();
            let column = arrow::compute::cast(column, &DataType::Int64).unwrap();
            values.extend(column.as_primitive::<Int64Type>().iter());
        }
        values
    }

    #[test]
    fn reading_through_selections_equals_copying_the_rows_out() {
        // One shared batch split by two selections (as the exchange shares it), plus a
        // batch without one; nulls in selected and unselected rows; a Utf8 column
        // (scattered), a dictionary column (gathered) and a float column.
        let n = 40u32;
        let shared = RecordBatch::try_from_iter([
            (
                "ukey",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| ["A", "B", "C"][i as usize % 3]),
                )) as ArrayRef,
            ),
            (
                ELAPSED_MS,
                Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| i64::from(i * 7919 % 50) * 100),
                )) as _,
            ),
            (
                "qty",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then_some(i64::from(i))),
                )) as _,
            ),
            (
                "px",
                Arc::new(arrow::array::Float64Array::from_iter(
                    (0..n).map(|i| (i % 4 != 1).then_some(f64::from(i) / 3.0)),
                )) as _,
            ),
            (
                "tag",
                Arc::new(
                    (0..n)
                        .map(|i| (i % 7 != 3).then_some(["x", "y"][i as usize % 2]))
                        .collect::<arrow::array::DictionaryArray<arrow::datatypes::Int32Type>>(),
                ) as _,
            ),
            (
                ROW_ID,
                Arc::new(UInt64Array::from_iter_values((0..n).map(u64::from))) as _,
            ),
        ])
        .unwrap();
        let even = UInt32Array::from_iter_values((0..n).filter(|i| i % 2 == 0));
        let odd = UInt32Array::from_iter_values((0..n).filter(|i| i % 3 != 0 && i % 2 == 1));
        let rest = UInt32Array::from_iter_values((0..n).filter(|i| i % 3 == 0 && i % 2 == 1));
        let alone = take_rows(&shared, &rest);
        // Input order (many kept input columns), event order with a scattered
        // float and with a gathered dictionary column, and input order again.
        let keeps = [
            None,
            Some(["px", "copy", "running"]),
            Some(["tag", "copy", "running"]),
            Some(["ukey", "px", "tag"]),
        ];
        for keep in keeps {
            let keep = keep.map(|names| names.map(str::to_owned).to_vec());
            let spec = EnrichSpec {
                symbol: "ukey".into(),
                rules: vec![custom(Expand)],
                keep,
            };
            let parts = vec![
                (shared.clone(), Some(even.clone())),
                (shared.clone(), Some(odd.clone())),
                (alone.clone(), None),
            ];
            let copied: Vec<RecordBatch> = [&even, &odd]
                .into_iter()
                .map(|rows| take_rows(&shared, rows))
                .chain([alone.clone()])
                .collect();
            let mut output = enrich_selected(parts, &spec).unwrap();
            let through: Vec<RecordBatch> = output.by_ref().collect::<Result<_, _>>().unwrap();
            let through_counts = output.counts().clone();
            let (expected, expected_counts) = enrich(&copied, &spec).unwrap();
            let concat = |batches: &[RecordBatch]| {
                arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
            };
            assert_eq!(concat(&through), concat(&expected));
            assert_eq!(through_counts, expected_counts);
        }
    }

    /// Replaces `qty` with its half (rounded down).
    #[derive(Debug)]
    struct Halve;

    impl TagRule for Halve {
        type State = ();
        type Input<'a> = Option<i64>;
        type Output = Option<i64>;
        fn name(&self) -> String {
            "halve".into()
        }
        fn inputs(&self) -> Vec<String> {
            vec!["qty".into()]
        }
        fn outputs(&self) -> Vec<String> {
            vec!["qty".into()]
        }
        fn process(
            &self,
            qty: Option<i64>,
            _: Event,
            _: &mut (),
            emit: &mut Emit<'_, Self::Output>,
        ) {
            emit.push(qty.map(|q| q / 2));
        }
    }

    #[test]
    fn event_order_output_keeps_input_columns_when_a_rule_replaces_one_another_reads() {
        // Expand reads the input `qty`, Halve replaces it: the input batches must stay
        // until the output is built, which keeps `ukey` (read by no rule) in event order.
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Expand), custom(Halve)],
            keep: Some(vec![
                "ukey".into(),
                "copy".into(),
                "running".into(),
                "qty".into(),
            ]),
        };
        let (out, _) = enrich(&[batch()], &spec).unwrap();
        let ukeys: Vec<String> = out
            .iter()
            .flat_map(|b| b.column_by_name("ukey").unwrap().as_string::<i32>().iter())
            .map(|v| v.unwrap().to_owned())
            .collect();
        let mut sorted = ukeys.clone();
        sorted.sort();
        // Rows 0 (A, qty 5), 1 (B, 7) and 4 (B, 1) survive, rows 0 and 1 twice.
        assert_eq!(sorted, ["A", "A", "B", "B", "B"]);
        let mut halves = column(&out, "qty");
        halves.sort();
        assert_eq!(halves, [Some(0), Some(2), Some(2), Some(3), Some(3)]);
    }

    #[test]
    fn custom_rules_expand_and_drop_rows_in_event_order() {
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Expand)],
            keep: None,
        };
        let (out, counts) = enrich(&[batch()], &spec).unwrap();
        // Input order; per symbol in event order A: rows 2 (qty 2), 3 (4), 0 (5) and
        // B: rows 4 (1), 1 (7). Even quantities are dropped, odd ones copied up to twice.
        assert_eq!(
            column(&out, ROW_ID),
            [Some(0), Some(0), Some(1), Some(1), Some(4)]
        );
        assert_eq!(
            column(&out, "copy"),
            [Some(1), Some(2), Some(1), Some(2), Some(1)]
        );
        assert_eq!(
            column(&out, "running"),
            [Some(11), Some(11), Some(8), Some(8), Some(1)]
        );
        assert_eq!(
            column(&out, "qty"),
            [Some(5), Some(5), Some(7), Some(7), Some(1)]
        );
        assert_eq!(counts["rule.expand.dropped_rows"], 2);
        assert_eq!(counts["rule.expand.added_rows"], 2);
    }

    #[test]
    fn kept_columns_only() {
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Expand)],
            keep: Some(vec!["running".into(), "ukey".into()]),
        };
        let (out, _) = enrich(&[batch()], &spec).unwrap();
        let names: Vec<String> = out[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["ukey", "running"]);
    }

    #[test]
    fn rule_errors_name_the_rule_and_column() {
        #[derive(Debug)]
        struct Wrong;
        impl TagRule for Wrong {
            type State = ();
            type Input<'a> = Option<&'a str>;
            type Output = bool;
            fn name(&self) -> String {
                "wrong".into()
            }
            fn inputs(&self) -> Vec<String> {
                vec!["qty".into()]
            }
            fn outputs(&self) -> Vec<String> {
                vec!["flag".into()]
            }
            fn process(&self, _: Option<&str>, _: Event, _: &mut (), emit: &mut Emit<'_, bool>) {
                emit.push(true);
            }
        }
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![custom(Wrong)],
            keep: None,
        };
        assert_eq!(
            enrich(&[batch()], &spec).unwrap_err(),
            "TagRule(wrong): input column 'qty' has type Int64, which cannot be read as \
             &str (any string column)"
        );
    }

    #[test]
    fn event_sort_equals_a_general_sort_near_order_and_far_from_it() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            let n = rng.random_range(0..2_000);
            // Keys in order with local swaps and ties of time (distinct keys), then some
            // cases reversed or shuffled, past the insertion sort's budget.
            let mut events: Vec<(u64, u32)> = (0..n as u32)
                .map(|row| (u64::from(row / 3) << ROW_ID_BITS | u64::from(row), row))
                .collect();
            for i in 0..n {
                if rng.random_bool(0.05) {
                    let j = (i + rng.random_range(1..5)).min(n - 1);
                    events.swap(i, j);
                }
            }
            match case % 4 {
                0 => events.reverse(),
                1 => {
                    for i in (1..n).rev() {
                        events.swap(i, rng.random_range(0..=i));
                    }
                }
                _ => {}
            }
            let mut expected = events.clone();
            expected.sort_unstable_by_key(|(key, _)| *key);
            let (mut keys, mut rows): (Vec<u64>, Vec<u32>) = events.into_iter().unzip();
            sort_events(&mut keys, &mut rows);
            let sorted: Vec<(u64, u32)> = keys.into_iter().zip(rows).collect();
            assert_eq!(sorted, expected, "case {case}");
        }
    }

    #[test]
    fn string_scatter_equals_a_gather_for_fixed_and_mixed_widths() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let words = [
            vec!["B", "S"],
            vec!["B", "S", "X"],
            vec!["BUY", "SEL"],
            vec!["B", "SELL", ""],
        ];
        for case in 0..40 {
            let pool = &words[case % words.len()];
            let with_nulls = case % 3 == 0;
            // Parts of random strings, each with a random selection (or none).
            let mut parts: Vec<(ArrayRef, Option<UInt32Array>)> = Vec::new();
            for _ in 0..rng.random_range(1..4) {
                let len = rng.random_range(1..50);
                let values: StringArray = (0..len)
                    .map(|_| Some(pool[rng.random_range(0..pool.len())]))
                    .collect();
                // Nulls that keep their strings' widths (a fixed-width column with nulls).
                let values = if with_nulls {
                    let valid: Vec<bool> = (0..len).map(|_| rng.random_range(0..5) > 0).collect();
                    let (offsets, bytes, _) = values.into_parts();
                    StringArray::new(offsets, bytes, Some(valid.into()))
                } else {
                    values
                };
                let selection = (rng.random_range(0..2) == 0).then(|| {
                    (0..len as u32)
                        .filter(|_| rng.random_range(0..3) > 0)
                        .collect::<UInt32Array>()
                });
                parts.push((Arc::new(values), selection));
            }
            let selected: Vec<ArrayRef> = parts
                .iter()
                .map(|(column, selection)| match selection {
                    Some(rows) => arrow::compute::take(column, rows, None).unwrap(),
                    None => column.clone(),
                })
                .collect();
            let refs: Vec<&dyn Array> = selected.iter().map(|a| a.as_ref()).collect();
            let whole = arrow::compute::concat(&refs).unwrap();
            // A random permutation: input row g goes to positions[g].
            let n = whole.len();
            let mut positions: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                positions.swap(i, rng.random_range(0..=i));
            }
            let mut order = vec![0u32; n];
            for (g, p) in positions.iter().enumerate() {
                order[*p as usize] = g as u32;
            }
            let expected = arrow::compute::take(&whole, &UInt32Array::from(order), None).unwrap();
            let part_refs: Vec<Part<'_>> = parts.iter().map(|(c, s)| (c, s.as_ref())).collect();
            let scattered = scatter(&part_refs, &positions).unwrap();
            assert_eq!(
                scattered.as_string::<i32>(),
                expected.as_string::<i32>(),
                "case {case}"
            );
        }
    }

    #[test]
    fn rules_run_chunk_by_chunk_as_over_the_whole_date() {
        use crate::fifo::{FifoMatch, FifoSpec};
        use crate::forward_return::ForwardReturnSpec;
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 3_000;
        let symbol: Vec<i64> = (0..n).map(|_| rng.random_range(0..40)).collect();
        let elapsed: Vec<i64> = (0..n)
            .map(|i| i as i64 * 37 + rng.random_range(0..200))
            .collect();
        let side: Vec<&str> = (0..n)
            .map(|_| ["B", "S", "X"][rng.random_range(0..3)])
            .collect();
        let qty: Vec<Option<i64>> = (0..n)
            .map(|_| (rng.random_range(0..20) > 0).then(|| rng.random_range(0..4) * 100))
            .collect();
        let price: Vec<f64> = (0..n).map(|_| rng.random_range(90.0..110.0)).collect();
        let day = RecordBatch::try_from_iter([
            ("ukey", Arc::new(Int64Array::from(symbol)) as ArrayRef),
            (ELAPSED_MS, Arc::new(Int64Array::from(elapsed)) as _),
            ("side", Arc::new(StringArray::from(side)) as _),
            ("qty", Arc::new(Int64Array::from(qty)) as _),
            (
                "price",
                Arc::new(arrow::array::Float64Array::from(price)) as _,
            ),
            (
                ROW_ID,
                Arc::new(UInt64Array::from_iter_values(0..n as u64)) as _,
            ),
        ])
        .unwrap();
        let returns = ForwardReturnSpec {
            symbol: "ukey".into(),
            price: "price".into(),
            horizons_s: vec![1, 5],
            day_ms: 120_000,
        };
        let fifo = FifoMatch::new(FifoSpec::new("side", "qty").with_price("price")).unwrap();
        // Keeping only the side of the input columns puts the output in event order,
        // where the rules run chunk by chunk.
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![returns.rule(), Arc::new(fifo)],
            keep: Some(
                [
                    "side",
                    "return_1",
                    "return_5",
                    "matched_qty",
                    "matched_entry_id",
                ]
                .map(String::from)
                .to_vec(),
            ),
        };
        let run = |chunk_rows: usize| {
            let parts = vec![
                (day.slice(0, 1_700), None),
                (day.slice(1_700, n - 1_700), None),
            ];
            let mut output = enrich_in_chunks(parts, &spec, chunk_rows).unwrap();
            assert!(matches!(output.order, OutputOrder::Chunks(_)));
            let batches: Vec<RecordBatch> = output.by_ref().collect::<Result<_, _>>().unwrap();
            let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            (all, output.counts().clone(), output.rows_emitted())
        };
        let whole = run(usize::MAX);
        assert!(whole.0.num_rows() > n, "FIFO splits some exits");
        for chunk_rows in [1, 50, 700] {
            assert_eq!(run(chunk_rows), whole, "chunks of {chunk_rows} rows");
        }
    }
}
