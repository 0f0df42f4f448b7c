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
//! * Under a watermark (`[stream]`, [`Enrich::enrich_partitioned`]) a worker does not
//!   wait for the date: it releases the rows below the watermark every so often, in
//!   event order per symbol, once their forward returns are final, and the rules carry
//!   each symbol's state from one release to the next ([`EnrichRule::resume`]). The
//!   output is the same as the whole date's, bit for bit; a date holds the rows within
//!   the longest horizon of the watermark and the FIFO's open lots, not the date (see
//!   `release.rs`).
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

// One file per concern, in the order a date's rows meet them:
// - mod.rs: these docs, the re-exports and the rule interface (EnrichRule, Rows,
//   RuleOutput, EnrichSpec, checked_outputs);
// - error.rs: EnrichError, the stage's and its rules' errors;
// - kernel.rs: the entry points (enrich, enrich_owned, enrich_lazy, enrich_selected);
// - event_order.rs: the rows' event keys, grouped by symbol and sorted;
// - plan.rs: each rule checked against its columns, and the output's order;
// - frame.rs: the rows and columns while the rules run;
// - scatter.rs: input columns put in event order;
// - output.rs: the output, lazily, in four orders;
// - release.rs: a date's rows released as the watermark passes them;
// - operator.rs: the timely operator;
// - tag_rule.rs and codec.rs: rules written in Rust and their typed rows.
mod codec;
mod error;
mod event_order;
mod frame;
mod kernel;
mod operator;
mod output;
mod plan;
mod release;
mod scatter;
mod tag_rule;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema};

pub use self::codec::{InputRow, InputType, InputValue, OutputRow, OutputValue, Reader};
pub use self::error::EnrichError;
pub use self::kernel::{enrich, enrich_lazy, enrich_owned, enrich_selected};
pub use self::operator::Enrich;
pub use self::output::{EnrichOutput, OUTPUT_BATCH_ROWS};
pub use self::release::{Incremental, Provisional, check_streamable, release_step_ms};
pub use self::tag_rule::{Emit, Event, TagRule, custom};
use crate::columns::{ELAPSED_MS, ROW_ID};
use crate::forward_return::ForwardReturnSpec;

/// A rule as the operator runs it. The built-in rules implement it directly; a
/// [`TagRule`] becomes one with [`custom`].
///
/// A rule of your own implements it for full control over the columns (a [`TagRule`]
/// is simpler), and words its errors with [`EnrichError::rule`]:
///
/// ```
/// use std::sync::Arc;
///
/// use arrow::array::{AsArray, BooleanArray};
/// use arrow::datatypes::{DataType, Field, Float64Type, Schema};
/// use vizflow_operators::Fault;
/// use vizflow_operators::enrich::{EnrichError, EnrichRule, Rows, RuleOutput};
///
/// /// Flags the rows whose price is above a limit.
/// #[derive(Debug)]
/// struct AboveLimit(f64);
///
/// impl EnrichRule for AboveLimit {
///     fn name(&self) -> String {
///         "AboveLimit".into()
///     }
///     fn inputs(&self) -> Vec<String> {
///         vec!["price".into()]
///     }
///     fn output_names(&self) -> Vec<String> {
///         vec!["above_limit".into()]
///     }
///     fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError> {
///         let price = schema.field_with_name("price").expect("the operator checked it");
///         if price.data_type() != &DataType::Float64 {
///             let message = format!("price has type {}; cast it to float64", price.data_type());
///             return Err(EnrichError::rule(self.name(), message, Fault::Config));
///         }
///         Ok(vec![Field::new("above_limit", DataType::Boolean, true)])
///     }
///     fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
///         let prices = rows.columns[0].as_primitive::<Float64Type>();
///         let above: BooleanArray = prices.iter().map(|p| p.map(|p| p > self.0)).collect();
///         Ok(RuleOutput {
///             source: None,
///             columns: vec![Arc::new(above)],
///             counts: Vec::new(),
///             revisions: None,
///         })
///     }
/// }
///
/// let schema = Schema::new(vec![Field::new("price", DataType::Utf8, true)]);
/// let error = AboveLimit(100.0).outputs(&schema).unwrap_err();
/// assert_eq!(error.to_string(), "AboveLimit: price has type Utf8; cast it to float64");
/// assert_eq!(error.fault(), Fault::Config);
/// ```
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
    /// the rule adds, in order. An error says what is wrong and how to fix it (a rule
    /// of your own words it with [`EnrichError::rule`]).
    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError>;
    /// Runs the rule over some of one worker's symbols of a date: all of them, or a
    /// chunk of them (the operator may call it several times per date, each time over
    /// different whole symbols). An error fails the date (a rule of your own words it
    /// with [`EnrichError::rule`]).
    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError>;
    /// Runs the rule over rows that continue those of earlier calls over the same date:
    /// run `r` of `rows` holds rows of symbol `symbols[r]` that follow, in event order,
    /// that symbol's rows of the calls before, and `carried` keeps each symbol's state
    /// from one call to the next. The outputs of the calls, together, are those of one
    /// [`EnrichRule::apply`] over all the rows. This is how a keyed stage that releases
    /// a date's rows as a watermark passes them runs a rule (`[stream]`); a rule that
    /// cannot carry its state (the default) cannot run there.
    fn resume(
        &self,
        rows: &Rows<'_>,
        symbols: &[u32],
        carried: &mut Carried,
    ) -> Result<RuleOutput, EnrichError> {
        let _ = (rows, symbols, carried);
        Err(EnrichError::CannotResume { rule: self.name() })
    }
    /// The last values of the rows of earlier [`EnrichRule::resume`] calls still open
    /// once a date's last call is done ([`Revisions::open`] rows that no change
    /// settled), from the states in `carried`, for a rule whose calls report only the
    /// changes that settle a row (`FIFOMatch`: the lots still open, with what was
    /// matched of them). Called before [`EnrichRule::finish`]. None by default.
    fn unsettled(&self, carried: &Carried) -> Option<Revisions> {
        let _ = carried;
        None
    }
    /// Those of [`EnrichRule::unsettled`] whose values changed since they last went
    /// out (in their call's output, or from here), marking them gone out: a consumer
    /// that sent each open row once then needs only these. All of them by default.
    fn unsettled_changed(&self, carried: &mut Carried) -> Option<Revisions> {
        self.unsettled(carried)
    }
    /// The counts a rule can give only once a date's last [`EnrichRule::resume`] call
    /// is done, from the states left in `carried` (the FIFO's lots still open). Nothing
    /// by default.
    fn finish(&self, carried: &mut Carried) -> Vec<(String, u64)> {
        let _ = carried;
        Vec::new()
    }
    /// The forward returns, when the rule is them: they look ahead of a row, so a keyed
    /// stage that releases rows as a watermark passes them computes them across its
    /// releases instead of calling the rule. `None` for every other rule.
    fn forward_returns(&self) -> Option<&ForwardReturnSpec> {
        None
    }
    /// The added columns whose values on a row may change after the call that emitted it
    /// ([`Revisions`]): a keyed stage that releases rows as a watermark passes them
    /// cannot let a later rule read or replace them. None by default.
    fn revises(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether the rule's changes say where their rows went out, and what they were
    /// then ([`Revisions::places`], [`Revisions::before`]): a keyed stage then keeps an
    /// open row's place rather than the row. False by default.
    fn places(&self) -> bool {
        false
    }
    /// What defines the rule's results, for the pipeline's hash: its name by default (a
    /// rule from the pipeline file is in the file's text); a [`TagRule`] adds its
    /// [fingerprint](TagRule::fingerprint).
    fn fingerprint(&self) -> String {
        self.name()
    }
}

/// Each symbol's state of one rule, kept from one [`EnrichRule::resume`] call to the
/// next over a date's rows, by the symbol's number.
#[derive(Default)]
pub struct Carried {
    states: Vec<Option<Box<dyn Any>>>,
    /// The number of the call being made, set by the keyed stage before each (see
    /// [`Revisions::places`]).
    pub epoch: u32,
}

impl Carried {
    /// Symbol `symbol`'s state, to change in place: the state left last, or
    /// `T::default()` for a symbol not seen yet (or whose state is of another type).
    /// It allocates only for a new symbol: a rule is called many times a date over
    /// thousands of symbols.
    pub fn state_mut<T: Default + 'static>(&mut self, symbol: u32) -> &mut T {
        let index = symbol as usize;
        if self.states.len() <= index {
            self.states.resize_with(index + 1, || None);
        }
        let slot = &mut self.states[index];
        if !slot.as_ref().is_some_and(|state| state.is::<T>()) {
            *slot = Some(Box::new(T::default()));
        }
        slot.as_mut()
            .and_then(|state| state.downcast_mut::<T>())
            .expect("a state of type T was put there above")
    }

    /// Every symbol's state of type `T`.
    pub fn states<T: 'static>(&self) -> impl Iterator<Item = &T> + '_ {
        self.states
            .iter()
            .flatten()
            .filter_map(|state| state.downcast_ref::<T>())
    }

    /// Every symbol's state of type `T`, to change.
    pub fn states_mut<T: 'static>(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        (self.states.iter_mut())
            .flatten()
            .filter_map(|state| state.downcast_mut::<T>())
    }

    /// Takes every symbol's state out (those of another type are dropped).
    pub fn drain<T: 'static>(&mut self) -> impl Iterator<Item = T> + '_ {
        self.states
            .drain(..)
            .flatten()
            .filter_map(|state| state.downcast::<T>().ok().map(|state| *state))
    }

    /// The number of symbols with a state.
    pub fn len(&self) -> usize {
        self.states.iter().filter(|s| s.is_some()).count()
    }

    /// True when no symbol has a state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Carried {{ {} symbols }}", self.len())
    }
}

/// One call's symbols for [`EnrichRule::apply`] through [`EnrichRule::resume`]: run `r`
/// is symbol `r`, each seen for the first time.
pub(crate) fn fresh_symbols(rows: &Rows<'_>) -> Vec<u32> {
    (0..rows.runs.len().saturating_sub(1) as u32).collect()
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
    /// From [`EnrichRule::resume`]: rows of earlier calls whose added columns changed.
    pub revisions: Option<Revisions>,
}

/// What an [`EnrichRule::resume`] call says about rows whose added columns change after
/// the call that emitted them (an entry matched by a later exit): the rows of this call
/// that may still change (`open`), and changes to rows of earlier calls: by `row_id`,
/// in the order of the changes (the last one of a row is its value), the new values of
/// some of the rule's added columns ([`EnrichRule::revises`]). A rule may report only
/// the changes that settle a row, and give the last values of the rows still open at
/// the date's end from [`EnrichRule::unsettled`] (`FIFOMatch` does). A keyed stage
/// that releases rows as a watermark passes them holds an open row until a change
/// settles it (or the date ends), and sends it on with its last values.
#[derive(Clone, Debug, Default)]
pub struct Revisions {
    /// Each change's row.
    pub row_ids: Vec<u64>,
    /// The changed columns, by name, one value per change.
    pub columns: Vec<(String, ArrayRef)>,
    /// Per change: whether the row can no longer change after it (the lot closed).
    pub settled: Vec<bool>,
    /// This call's rows whose added columns may still change, by `row_id`.
    pub open: Vec<u64>,
    /// Per change, where its row went out, when the rule says
    /// ([`EnrichRule::places`]; else empty): the [`Carried::epoch`] of the call whose
    /// output had it, and its place in that call's `open`.
    pub places: Vec<(u32, u32)>,
    /// With `places`: the changed columns as each row last went out (in its call's
    /// output, or as a change since), one value per change: what a consumer that sent
    /// the row withdraws.
    pub before: Vec<(String, ArrayRef)>,
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
    /// With `[stream]` and no provisional results, when the aggregate allows it: an
    /// open entry's row goes on when it is released, its revised columns null
    /// ([`EnrichRule::revises`]), and its values follow narrow when it settles
    /// ([`crate::batch::Emission::Revised`]), instead of its whole row waiting until
    /// then. The bits are its *place* columns, over `keep`: the columns besides the
    /// revised ones that the derived columns of revised ones read (see
    /// [`Incremental::revised_narrow`](crate::enrich::Incremental::revised_narrow)).
    pub open_in_place: Option<u64>,
}

impl EnrichSpec {
    /// Whether one rule alone revises columns and it says where its rows went out
    /// ([`EnrichRule::places`]): a keyed stage can then hold open entries by place.
    pub fn revisions_placed(&self) -> bool {
        let mut revising = self.rules.iter().filter(|r| !r.revises().is_empty());
        matches!((revising.next(), revising.next()), (Some(rule), None) if rule.places())
    }

    /// The columns of `fields` that are kept.
    pub(super) fn kept(&self, mut fields: Vec<Field>) -> Vec<Field> {
        if let Some(keep) = &self.keep {
            fields.retain(|f| keep.contains(f.name()));
        }
        fields
    }
}

/// Checks that a rule's inputs are among `fields` (the columns where it runs) and
/// returns the columns it adds, checking they have distinct names and do not replace
/// the engine's event columns.
pub fn checked_outputs(rule: &dyn EnrichRule, fields: &[Field]) -> Result<Vec<Field>, EnrichError> {
    for column in rule.inputs() {
        if !fields.iter().any(|f| f.name() == &column) {
            return Err(EnrichError::UnknownColumn {
                rule: rule.name(),
                column,
                available: fields.iter().map(|f| f.name().clone()).collect(),
            });
        }
    }
    let outputs = rule.outputs(&Schema::new(fields.to_vec()))?;
    for (i, field) in outputs.iter().enumerate() {
        if outputs[..i].iter().any(|f| f.name() == field.name()) {
            return Err(EnrichError::DuplicateOutput {
                rule: rule.name(),
                column: field.name().clone(),
            });
        }
        if field.name() == ELAPSED_MS || field.name() == ROW_ID {
            return Err(EnrichError::ReservedOutput {
                rule: rule.name(),
                column: field.name().clone(),
            });
        }
    }
    Ok(outputs)
}
