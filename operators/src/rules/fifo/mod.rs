//! `fifo`: FIFO matching of entries and exits, per symbol and date (row-expanding).
//!
//! Implements SEMANTICS.md, *FIFO matching*. Per symbol, in event order (`elapsed_ms`,
//! then `row_id`), an entry row opens a lot and an exit row closes the oldest open lots
//! first:
//!
//! * **Entry row** (side = [`FifoSpec::entry_side`]): opens a lot of its quantity and
//!   emits one row: `matched_entry_id` null, `matched_qty` = how much of the lot was
//!   closed by the end of the date, `holding_period` null, `matched_entry_price` null,
//!   `is_closed` = (`matched_qty` = qty).
//! * **Exit row** (side = [`FifoSpec::exit_side`]): takes quantity from the open lots,
//!   oldest first, and emits one row per lot portion taken: `matched_entry_id` = the
//!   lot's `row_id`, `matched_qty` = the portion, `holding_period` = (exit `elapsed_ms` -
//!   lot `elapsed_ms`) / 1000 in seconds of trading time, `matched_entry_price` = the
//!   lot's price, `is_closed` = true. If quantity remains with no open lot, or nothing
//!   was taken at all, one more row: `matched_entry_id` null, `matched_qty` = the
//!   remainder, `holding_period` and `matched_entry_price` null, `is_closed` = false.
//!   An exit only ever sees the lots opened before it in event order.
//! * **Any other row**: one row with the five FIFO columns null.
//!
//! Lots never carry over to the next date: the kernel sees one date at a time, and an
//! entry still open at the end of the date reports `is_closed` = false.
//!
//! # Decisions where SEMANTICS.md is silent
//!
//! * **Quantities** must be an integer column (the pipeline's `[[cast]]` to `int64`
//!   runs before this stage); any integer type is accepted and widened to `Int64`. A
//!   float column is an error, not silently truncated.
//! * **Zero quantity.** An entry of 0 opens no lot and emits `matched_qty` 0,
//!   `is_closed` true (the formula `0 = 0`). An exit of 0 takes nothing and emits the
//!   single "nothing matched" row: `matched_qty` 0, `is_closed` false. Both are counted
//!   as `fifo.zero_qty_rows`, not as unmatched exits.
//! * **Null or negative quantity** on an entry or exit row: the row is invalid. It
//!   emits one row with the FIFO columns null (like another side), opens no lot,
//!   closes nothing, and is counted as `fifo.invalid_qty_rows`. The quantity of rows
//!   with another side is never looked at.
//! * **Null side**: treated as another side value (FIFO columns null), counted with
//!   them as `fifo.other_side_rows`. Sides are compared as exact, case-sensitive
//!   strings; a non-string side column is compared through its Arrow cast to `Utf8`
//!   (so an integer side `1` matches an entry side `"1"`).
//! * **Price** is optional ([`FifoSpec::price`]). Without one, or for a lot whose price
//!   is null, `matched_entry_price` is null. A NaN price is passed through as NaN.
//! * **Null symbol**: rows with a null symbol form one symbol of their own.
//! * **Null `elapsed_ms` or `row_id`** is an error (the engine and `parse_time` never
//!   produce them), as are values outside the event-key range (`elapsed_ms` in
//!   `0..2^27`, `row_id` below `2^36`, the same limits as `forward_return`).
//! * **Input columns named like an output column** are replaced in place.
//!
//! # Where it runs
//!
//! [`FifoMatch`] is a rule of the [`crate::enrich`] operator, which brings each symbol's
//! rows of a date together in event order, runs [`fifo_symbol`] over each symbol's
//! contiguous run (no allocation per row or per symbol) and returns the rows in input
//! order (an exit's rows in the order its lots were taken, then its remainder row),
//! every input column followed by the five FIFO columns. [`fifo_match`] runs that
//! operator's kernel with this one rule.
//!
//! # Example
//!
//! The example of SEMANTICS.md: `B 50` (row 0), `B 50` (row 1), `S 80` (row 2) gives
//! four rows from three.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray, UInt64Array};
//! use arrow::datatypes::{Int64Type, UInt64Type};
//! use vizflow_operators::fifo::{FifoSpec, fifo_match};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("ukey", Arc::new(StringArray::from(vec!["600000"; 3])) as _),
//!     ("side", Arc::new(StringArray::from(vec!["B", "B", "S"])) as _),
//!     ("qty", Arc::new(Int64Array::from(vec![50, 50, 80])) as _),
//!     ("elapsed_ms", Arc::new(Int64Array::from(vec![0, 1_000, 61_000])) as _),
//!     ("row_id", Arc::new(UInt64Array::from(vec![0, 1, 2])) as _),
//! ])
//! .unwrap();
//! let (out, counts) = fifo_match(&[batch], &FifoSpec::new("side", "qty"), "ukey").unwrap();
//! let out = &out[0];
//! let column = |name: &str| out.column_by_name(name).unwrap().clone();
//! assert_eq!(column("row_id").as_primitive::<UInt64Type>().values(), &[0, 1, 2, 2]);
//! let entry_id = column("matched_entry_id");
//! let entry_id = entry_id.as_primitive::<UInt64Type>();
//! assert_eq!(entry_id.iter().collect::<Vec<_>>(), [None, None, Some(0), Some(1)]);
//! let qty = column("matched_qty");
//! assert_eq!(qty.as_primitive::<Int64Type>().values(), &[50, 30, 50, 30]);
//! let closed = column("is_closed");
//! let closed: Vec<_> = closed.as_boolean().iter().collect();
//! assert_eq!(closed, [Some(true), Some(false), Some(true), Some(true)]);
//! assert_eq!(counts.unclosed_entries, 1);
//! ```

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};

pub use crate::enrich::OUTPUT_BATCH_ROWS;
use crate::enrich::{EnrichRule, EnrichSpec, Rows, RuleOutput, enrich};

/// The output column: the `row_id` of the lot an exit row's portion was taken from.
pub const MATCHED_ENTRY_ID: &str = "matched_entry_id";
/// The output column: the quantity matched by the row (see the module docs).
pub const MATCHED_QTY: &str = "matched_qty";
/// The output column: seconds of trading time between the lot's entry and the exit.
pub const HOLDING_PERIOD: &str = "holding_period";
/// The output column: the price of the lot an exit row's portion was taken from.
pub const MATCHED_ENTRY_PRICE: &str = "matched_entry_price";
/// The output column: whether the row's quantity is fully matched.
pub const IS_CLOSED: &str = "is_closed";
/// The five output columns, in their order.
const OUTPUTS: [&str; 5] = [
    MATCHED_ENTRY_ID,
    MATCHED_QTY,
    HOLDING_PERIOD,
    MATCHED_ENTRY_PRICE,
    IS_CLOSED,
];

/// What to match: the side, quantity and (optional) price columns, and the side values
/// that open and close lots.
#[derive(Clone, Debug, PartialEq)]
pub struct FifoSpec {
    /// The side column (string, dictionary of strings, or anything castable to a string).
    pub side: String,
    /// The quantity column (an integer type).
    pub qty: String,
    /// The price column recorded with each lot, reported as `matched_entry_price`;
    /// `None` leaves that column null.
    pub price: Option<String>,
    /// The side value of entries, which open lots (`"B"` by default).
    pub entry_side: String,
    /// The side value of exits, which close lots (`"S"` by default).
    pub exit_side: String,
}

impl FifoSpec {
    /// A spec with the default sides (`B` entry, `S` exit) and no price column.
    pub fn new(side: impl Into<String>, qty: impl Into<String>) -> Self {
        FifoSpec {
            side: side.into(),
            qty: qty.into(),
            price: None,
            entry_side: "B".to_owned(),
            exit_side: "S".to_owned(),
        }
    }

    /// The same spec with a price column.
    pub fn with_price(mut self, price: impl Into<String>) -> Self {
        self.price = Some(price.into());
        self
    }

    fn side_of(&self, value: &str) -> Side {
        // Side values are a byte or two: compared inline, not by a call to memcmp.
        let is = |side: &str| {
            value.len() == side.len() && value.bytes().zip(side.bytes()).all(|(a, b)| a == b)
        };
        if is(&self.entry_side) {
            Side::Entry
        } else if is(&self.exit_side) {
            Side::Exit
        } else {
            Side::Other
        }
    }
}

/// A row's side, as far as matching is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The entry side: the row opens a lot.
    Entry,
    /// The exit side: the row closes lots.
    Exit,
    /// Any other value, or null: the row passes through with null FIFO columns.
    Other,
}

/// The columns the kernel reads, one value per row (at most `u32::MAX` rows);
/// [`fifo_symbol`] reads one symbol's run of them.
#[derive(Clone, Copy, Debug)]
pub struct FifoColumns<'a> {
    /// Each row's side.
    pub side: &'a [Side],
    /// Each row's quantity; read on entry and exit rows only, where a null or negative
    /// quantity makes the row invalid.
    pub qty: &'a Int64Array,
    /// Each row's event time in ms of trading time.
    pub elapsed_ms: &'a [i64],
    /// Each row's identity (its position in the date's file).
    pub row_id: &'a [u64],
    /// Each row's price, recorded with the lot an entry opens; `None` when there is no
    /// price column.
    pub price: Option<&'a Float64Array>,
}

/// What the matching of one date did, for the date's quality report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FifoCounts {
    /// Entry rows with a valid quantity (including 0).
    pub entry_rows: u64,
    /// Exit rows with a valid quantity (including 0).
    pub exit_rows: u64,
    /// Rows whose side is neither the entry nor the exit value, or null.
    pub other_side_rows: u64,
    /// Entry and exit rows with a null or negative quantity (passed through unmatched).
    pub invalid_qty_rows: u64,
    /// Entry and exit rows with quantity 0.
    pub zero_qty_rows: u64,
    /// Entries with a positive quantity not fully closed by the end of the date.
    pub unclosed_entries: u64,
    /// Exit rows left with positive quantity and no open lot to take it from.
    pub unmatched_exit_rows: u64,
    /// The total quantity of those exits that found no open lot.
    pub unmatched_exit_qty: u64,
    /// Rows emitted (at least the rows read: exits can expand into several rows).
    pub output_rows: u64,
}

impl FifoCounts {
    /// The counts under their report names (`fifo.entry_rows`, ...), for
    /// [`crate::report::Diagnostics::add_all`].
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("fifo.entry_rows", self.entry_rows),
            ("fifo.exit_rows", self.exit_rows),
            ("fifo.other_side_rows", self.other_side_rows),
            ("fifo.invalid_qty_rows", self.invalid_qty_rows),
            ("fifo.zero_qty_rows", self.zero_qty_rows),
            ("fifo.unclosed_entries", self.unclosed_entries),
            ("fifo.unmatched_exit_rows", self.unmatched_exit_rows),
            ("fifo.unmatched_exit_qty", self.unmatched_exit_qty),
            ("fifo.output_rows", self.output_rows),
        ]
    }
}

/// [`FifoOutput::flags`]: `matched_qty` and `is_closed` are valid (an entry or exit
/// row with a valid quantity).
pub const MATCHED: u8 = 1;
/// [`FifoOutput::flags`]: the row is an exit's portion of a lot (`matched_entry_id`
/// and `holding_period` are valid).
pub const PORTION: u8 = 2;
/// [`FifoOutput::flags`]: `matched_entry_price` is valid.
pub const PRICED: u8 = 4;
/// [`FifoOutput::flags`]: `is_closed` is true.
pub const CLOSED: u8 = 8;
/// [`FifoOutput::flags`]: the row is an entry (a lot).
pub const ENTRY: u8 = 16;

/// The kernel's output, column by column (the five FIFO columns' values, and one byte
/// of flags per row saying which are valid), and what happened, for the quality
/// report. About 37 bytes per output row; the value vectors become Arrow buffers
/// without a copy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FifoOutput {
    /// Each output row's input row (an index into the kernel's [`FifoColumns`]).
    pub source: Vec<u32>,
    /// `matched_entry_id`: the `row_id` of the lot a portion was taken from.
    pub matched_entry_id: Vec<u64>,
    /// `matched_qty`.
    pub matched_qty: Vec<i64>,
    /// `holding_period`, in seconds of trading time.
    pub holding_period: Vec<f64>,
    /// `matched_entry_price`: the price of the lot a portion was taken from.
    pub matched_entry_price: Vec<f64>,
    /// [`MATCHED`], [`PORTION`], [`PRICED`], [`CLOSED`] and [`ENTRY`] bits.
    pub flags: Vec<u8>,
    /// The counters.
    pub counts: FifoCounts,
}

impl FifoOutput {
    /// An empty output with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        FifoOutput {
            source: Vec::with_capacity(rows),
            matched_entry_id: Vec::with_capacity(rows),
            matched_qty: Vec::with_capacity(rows),
            holding_period: Vec::with_capacity(rows),
            matched_entry_price: Vec::with_capacity(rows),
            flags: Vec::with_capacity(rows),
            counts: FifoCounts::default(),
        }
    }

    /// The number of output rows.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// True when there are no output rows.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    #[inline]
    fn push(&mut self, source: u32, entry_id: u64, qty: i64, holding: f64, price: f64, flags: u8) {
        self.source.push(source);
        self.matched_entry_id.push(entry_id);
        self.matched_qty.push(qty);
        self.holding_period.push(holding);
        self.matched_entry_price.push(price);
        self.flags.push(flags);
    }

    /// The five FIFO columns: `matched_entry_id`, `matched_qty`, `holding_period`,
    /// `matched_entry_price`, `is_closed`.
    pub fn into_arrays(self) -> [ArrayRef; 5] {
        let flags = self.flags;
        let nulls = |bit: u8| {
            let valid = BooleanBuffer::collect_bool(flags.len(), |i| flags[i] & bit != 0);
            Some(NullBuffer::new(valid))
        };
        let closed = BooleanBuffer::collect_bool(flags.len(), |i| flags[i] & CLOSED != 0);
        [
            Arc::new(UInt64Array::new(
                self.matched_entry_id.into(),
                nulls(PORTION),
            )),
            Arc::new(Int64Array::new(self.matched_qty.into(), nulls(MATCHED))),
            Arc::new(Float64Array::new(
                self.holding_period.into(),
                nulls(PORTION),
            )),
            Arc::new(Float64Array::new(
                self.matched_entry_price.into(),
                nulls(PRICED),
            )),
            Arc::new(BooleanArray::new(closed, nulls(MATCHED))),
        ]
    }
}

/// Matches one symbol's rows, `rows` at the indices `range`, which must be in event
/// order (`elapsed_ms`, then `row_id`; the kernel trusts it), and appends their output
/// rows to `out`, in the same order. Lots of earlier calls are never touched, so one
/// `out` can collect every symbol of a date.
///
/// The queue of open lots is not a separate structure: lots are opened in event order
/// and closed from the front, so the open lots are exactly the entry rows already in
/// `out` from a front cursor on that are not yet closed, and a lot's closed quantity
/// is its own row's `matched_qty`. So the kernel allocates nothing beyond `out`
/// itself, and with the symbol's rows contiguous it reads memory in order.
pub fn fifo_symbol(rows: &FifoColumns<'_>, range: Range<usize>, out: &mut FifoOutput) {
    let first_row = out.len();
    let mut front = first_row;
    let (mut lots_opened, mut lots_closed) = (0u64, 0u64);
    let price = |row: usize| match rows.price {
        Some(prices) if prices.is_valid(row) => (prices.value(row), PRICED),
        _ => (0.0, 0),
    };
    for index in range {
        let source = index as u32;
        let side = rows.side[index];
        if side == Side::Other {
            out.counts.other_side_rows += 1;
            out.push(source, 0, 0, 0.0, 0.0, 0);
            continue;
        }
        let qty = rows.qty.value(index);
        if rows.qty.is_null(index) || qty < 0 {
            out.counts.invalid_qty_rows += 1;
            out.push(source, 0, 0, 0.0, 0.0, 0);
            continue;
        }
        out.counts.zero_qty_rows += u64::from(qty == 0);
        if side == Side::Entry {
            out.counts.entry_rows += 1;
            lots_opened += u64::from(qty > 0);
            let closed = if qty == 0 { CLOSED } else { 0 };
            out.push(source, 0, 0, 0.0, 0.0, MATCHED | ENTRY | closed);
            continue;
        }
        out.counts.exit_rows += 1;
        let first_exit_row = out.len();
        let mut remaining = qty;
        while remaining > 0 {
            while front < first_exit_row && out.flags[front] & (ENTRY | CLOSED) != ENTRY {
                front += 1;
            }
            if front == first_exit_row {
                break;
            }
            let lot_row = out.source[front] as usize;
            let lot_matched = out.matched_qty[front];
            let portion = remaining.min(rows.qty.value(lot_row) - lot_matched);
            remaining -= portion;
            out.matched_qty[front] = lot_matched + portion;
            if lot_matched + portion == rows.qty.value(lot_row) {
                out.flags[front] |= CLOSED;
                lots_closed += 1;
            }
            let holding_s = (rows.elapsed_ms[index] - rows.elapsed_ms[lot_row]) as f64 / 1000.0;
            let (lot_price, priced) = price(lot_row);
            let flags = MATCHED | PORTION | CLOSED | priced;
            out.push(
                source,
                rows.row_id[lot_row],
                portion,
                holding_s,
                lot_price,
                flags,
            );
        }
        if remaining > 0 || out.len() == first_exit_row {
            out.push(source, 0, remaining, 0.0, 0.0, MATCHED);
            if remaining > 0 {
                out.counts.unmatched_exit_rows += 1;
                out.counts.unmatched_exit_qty = out
                    .counts
                    .unmatched_exit_qty
                    .saturating_add(remaining as u64);
            }
        }
    }
    out.counts.unclosed_entries += lots_opened - lots_closed;
    out.counts.output_rows += (out.len() - first_row) as u64;
}

/// FIFO matching as a rule of the [`crate::enrich`] operator (`FIFOMatch` in the
/// seeds): reads the spec's side, quantity and (optional) price columns and adds the
/// five FIFO columns.
#[derive(Clone, Debug, PartialEq)]
pub struct FifoMatch {
    spec: FifoSpec,
}

impl FifoMatch {
    /// The rule for `spec`; the entry and exit sides must differ.
    pub fn new(spec: FifoSpec) -> Result<Self, String> {
        if spec.entry_side == spec.exit_side {
            return Err(format!(
                "FIFOMatch: the entry side and the exit side are both '{}'; they must differ",
                spec.entry_side
            ));
        }
        Ok(FifoMatch { spec })
    }

    /// The spec.
    pub fn spec(&self) -> &FifoSpec {
        &self.spec
    }
}

impl EnrichRule for FifoMatch {
    fn name(&self) -> String {
        "FIFOMatch".to_owned()
    }

    fn inputs(&self) -> Vec<String> {
        let spec = &self.spec;
        let mut inputs = vec![spec.side.clone(), spec.qty.clone()];
        inputs.extend(spec.price.clone());
        inputs
    }

    fn output_names(&self) -> Vec<String> {
        OUTPUTS.map(str::to_owned).to_vec()
    }

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, String> {
        let spec = &self.spec;
        let type_of = |name: &str| {
            schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|e| format!("FIFOMatch: {e}"))
        };
        let qty = type_of(&spec.qty)?;
        if !qty.is_integer() {
            return Err(format!(
                "FIFOMatch: quantity column '{}' has type {qty}; FIFO matches integer \
                 quantities, so cast it first with [[cast]] column = \"{}\" and to = \"int64\"",
                spec.qty, spec.qty
            ));
        }
        let side = type_of(&spec.side)?;
        if !arrow::compute::can_cast_types(&side, &DataType::Utf8) {
            return Err(format!(
                "FIFOMatch: side column '{}' has type {side}, which cannot be compared with \
                 the side values '{}' and '{}'",
                spec.side, spec.entry_side, spec.exit_side
            ));
        }
        if let Some(price) = &spec.price {
            let price_type = type_of(price)?;
            if !price_type.is_numeric() {
                return Err(format!(
                    "FIFOMatch: price column '{price}' has type {price_type}; it must be numeric"
                ));
            }
        }
        let types = [
            DataType::UInt64,
            DataType::Int64,
            DataType::Float64,
            DataType::Float64,
            DataType::Boolean,
        ];
        Ok(OUTPUTS
            .into_iter()
            .zip(types)
            .map(|(name, data_type)| Field::new(name, data_type, true))
            .collect())
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, String> {
        let spec = &self.spec;
        let n = rows.len();
        let mut side = Vec::with_capacity(n);
        push_sides(&rows.columns[0], spec, &mut side)?;
        let qty = quantities(&rows.columns[1], &spec.qty)?;
        let price = match &spec.price {
            Some(name) => Some(prices(&rows.columns[2], name)?),
            None => None,
        };
        let columns = FifoColumns {
            side: &side,
            qty: &qty,
            elapsed_ms: rows.elapsed_ms,
            row_id: rows.row_id,
            price: price.as_ref(),
        };
        // Exits emit a row per lot they close: room for one and a half rows per row,
        // growing if needed.
        let mut out = FifoOutput::with_capacity(n + n / 2);
        for run in rows.runs.windows(2) {
            fifo_symbol(&columns, run[0]..run[1], &mut out);
        }
        let counts = out.counts.named();
        let source = std::mem::take(&mut out.source);
        let expanded = source.len() != n;
        Ok(RuleOutput {
            source: expanded.then_some(source),
            columns: out.into_arrays().to_vec(),
            counts: counts
                .into_iter()
                .map(|(name, count)| (name.to_owned(), count))
                .collect(),
        })
    }
}

/// Matches one date's rows (all symbols of the given batches) and builds the output
/// batches: every input column of the source row, then `matched_entry_id` (UInt64),
/// `matched_qty` (Int64), `holding_period` (Float64), `matched_entry_price` (Float64)
/// and `is_closed` (Boolean). See the module docs for the rules and the row order.
///
/// The batches must share one schema and hold the columns `elapsed_ms` (Int64) and
/// `row_id` (UInt64), the symbol column and the spec's columns. This is the
/// [`crate::enrich`] operator's kernel with the one rule [`FifoMatch`].
pub fn fifo_match(
    batches: &[RecordBatch],
    spec: &FifoSpec,
    symbol: &str,
) -> Result<(Vec<RecordBatch>, FifoCounts), String> {
    let spec = EnrichSpec {
        symbol: symbol.to_owned(),
        rules: vec![Arc::new(FifoMatch::new(spec.clone())?)],
        keep: None,
    };
    let (batches, counts) = enrich(batches, &spec)?;
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    let counts = FifoCounts {
        entry_rows: count("fifo.entry_rows"),
        exit_rows: count("fifo.exit_rows"),
        other_side_rows: count("fifo.other_side_rows"),
        invalid_qty_rows: count("fifo.invalid_qty_rows"),
        zero_qty_rows: count("fifo.zero_qty_rows"),
        unclosed_entries: count("fifo.unclosed_entries"),
        unmatched_exit_rows: count("fifo.unmatched_exit_rows"),
        unmatched_exit_qty: count("fifo.unmatched_exit_qty"),
        output_rows: count("fifo.output_rows"),
    };
    Ok((batches, counts))
}

/// Appends each row's [`Side`]. Dictionaries are classified once per dictionary value.
fn push_sides(values: &ArrayRef, spec: &FifoSpec, out: &mut Vec<Side>) -> Result<(), String> {
    let classify = |value: Option<&str>| value.map_or(Side::Other, |v| spec.side_of(v));
    match values.data_type() {
        DataType::Utf8 => {
            // By index, so the vector is sized once (an array iterator is not
            // `TrustedLen`: extending from it checks the capacity at every row).
            let strings = values.as_string::<i32>();
            out.extend((0..strings.len()).map(|i| match strings.is_null(i) {
                true => Side::Other,
                false => spec.side_of(strings.value(i)),
            }));
        }
        DataType::LargeUtf8 => out.extend(values.as_string::<i64>().iter().map(classify)),
        DataType::Utf8View => out.extend(values.as_string_view().iter().map(classify)),
        DataType::Dictionary(_, _) => {
            let dictionary = values.as_any_dictionary();
            let mut classes = Vec::with_capacity(dictionary.values().len());
            push_sides(dictionary.values(), spec, &mut classes)?;
            if classes.is_empty() {
                // Only null keys can point into an empty dictionary (and `normalized_keys`
                // panics on one).
                out.resize(out.len() + values.len(), Side::Other);
                return Ok(());
            }
            let nulls = dictionary.keys().logical_nulls();
            let keys = dictionary.normalized_keys().into_iter().enumerate();
            out.extend(keys.map(|(i, key)| match &nulls {
                Some(nulls) if nulls.is_null(i) => Side::Other,
                _ => classes[key],
            }));
        }
        data_type => {
            let utf8 = arrow::compute::cast(values, &DataType::Utf8).map_err(|e| {
                format!(
                    "fifo: side column '{}' has type {data_type}, which cannot be compared \
                     with the side values '{}' and '{}': {e}",
                    spec.side, spec.entry_side, spec.exit_side
                )
            })?;
            out.extend(utf8.as_string::<i32>().iter().map(classify));
        }
    }
    Ok(())
}

/// The quantity column as `Int64`; it must hold integers.
fn quantities(values: &ArrayRef, name: &str) -> Result<Int64Array, String> {
    let data_type = values.data_type();
    if !data_type.is_integer() {
        return Err(format!(
            "fifo: quantity column '{name}' has type {data_type}; FIFO matches integer \
             quantities, so cast it first (a [[cast]] of '{name}' to int64)"
        ));
    }
    // `safe: false`: a UInt64 quantity above i64::MAX is an error, not a silent null.
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let int64 = arrow::compute::cast_with_options(values, &DataType::Int64, &options)
        .map_err(|e| format!("fifo: quantity column '{name}' does not fit in Int64: {e}"))?;
    Ok(int64.as_primitive::<Int64Type>().clone())
}

/// The price column as `f64`.
fn prices(values: &ArrayRef, name: &str) -> Result<Float64Array, String> {
    let floats = arrow::compute::cast(values, &DataType::Float64).map_err(|e| {
        format!(
            "fifo: price column '{name}' has type {}, not numeric: {e}",
            values.data_type()
        )
    })?;
    Ok(floats.as_primitive::<Float64Type>().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray, UInt64Array};
    use arrow::datatypes::UInt64Type;

    use crate::columns::{ELAPSED_MS, ROW_ID};

    /// An input row: symbol, side, qty, elapsed_ms, row_id.
    type In<'a> = (&'a str, Option<&'a str>, Option<i64>, i64, u64);
    /// An output row: source row_id and the five FIFO columns.
    type Out = (
        u64,
        Option<u64>,
        Option<i64>,
        Option<f64>,
        Option<f64>,
        Option<bool>,
    );

    fn batch(rows: &[In], prices: &[Option<f64>]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "ukey",
                Arc::new(StringArray::from_iter(rows.iter().map(|r| Some(r.0)))) as ArrayRef,
            ),
            (
                "side",
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))) as _,
            ),
            (
                "qty",
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))) as _,
            ),
            ("price", Arc::new(Float64Array::from(prices.to_vec())) as _),
            (
                ELAPSED_MS,
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))) as _,
            ),
            (
                ROW_ID,
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.4))) as _,
            ),
        ])
        .unwrap()
    }

    fn spec() -> FifoSpec {
        FifoSpec::new("side", "qty").with_price("price")
    }

    /// Runs `fifo_match` with prices `100 + row_id` unless given.
    fn run_with_prices(rows: &[In], prices: &[Option<f64>]) -> (Vec<Out>, FifoCounts) {
        let (out, counts) = fifo_match(&[batch(rows, prices)], &spec(), "ukey").unwrap();
        let mut result = Vec::new();
        for batch in &out {
            let col = |name: &str| batch.column_by_name(name).unwrap().clone();
            let (ids, entry, qty) = (col(ROW_ID), col(MATCHED_ENTRY_ID), col(MATCHED_QTY));
            let (holding, price, closed) = (
                col(HOLDING_PERIOD),
                col(MATCHED_ENTRY_PRICE),
                col(IS_CLOSED),
            );
            let entry = entry.as_primitive::<UInt64Type>().iter();
            let qty = qty.as_primitive::<Int64Type>().iter();
            let holding = holding.as_primitive::<Float64Type>().iter();
            let price = price.as_primitive::<Float64Type>().iter();
            let closed = closed.as_boolean().iter();
            let ids = ids.as_primitive::<UInt64Type>().values().to_vec();
            let fifo = entry.zip(qty).zip(holding).zip(price).zip(closed);
            for (id, ((((e, q), h), p), c)) in ids.into_iter().zip(fifo) {
                result.push((id, e, q, h, p, c));
            }
        }
        assert_eq!(counts.output_rows as usize, result.len());
        // The output may come in event order or in input order (each row's output rows
        // together either way); the expectations below are in input order.
        let input_position = |id: u64| rows.iter().position(|r| r.4 == id).unwrap();
        result.sort_by_key(|r| input_position(r.0));
        (result, counts)
    }

    fn run(rows: &[In]) -> (Vec<Out>, FifoCounts) {
        let prices: Vec<_> = rows.iter().map(|r| Some(100.0 + r.4 as f64)).collect();
        run_with_prices(rows, &prices)
    }

    const NULLS: Option<u64> = None;

    #[test]
    fn simple_match() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(100), 0, 0),
            ("A", Some("S"), Some(100), 5_000, 1),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(100), None, None, Some(true)),
                (1, Some(0), Some(100), Some(5.0), Some(100.0), Some(true)),
            ]
        );
        assert_eq!(
            (counts.entry_rows, counts.exit_rows, counts.unclosed_entries),
            (1, 1, 0)
        );
    }

    #[test]
    fn partial_exits_close_a_lot_in_steps() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(100), 0, 0),
            ("A", Some("S"), Some(60), 1_000, 1),
            ("A", Some("S"), Some(40), 3_500, 2),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(100), None, None, Some(true)),
                (1, Some(0), Some(60), Some(1.0), Some(100.0), Some(true)),
                (2, Some(0), Some(40), Some(3.5), Some(100.0), Some(true)),
            ]
        );
        assert_eq!(counts.unclosed_entries, 0);
    }

    #[test]
    fn an_exit_splits_over_two_lots() {
        // The example of SEMANTICS.md: four rows from three.
        let (out, counts) = run(&[
            ("A", Some("B"), Some(50), 0, 0),
            ("A", Some("B"), Some(50), 1_000, 1),
            ("A", Some("S"), Some(80), 61_000, 2),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(50), None, None, Some(true)),
                (1, None, Some(30), None, None, Some(false)),
                (2, Some(0), Some(50), Some(61.0), Some(100.0), Some(true)),
                (2, Some(1), Some(30), Some(60.0), Some(101.0), Some(true)),
            ]
        );
        assert_eq!((counts.unclosed_entries, counts.output_rows), (1, 4));
    }

    #[test]
    fn the_kernel_alone_on_plain_columns() {
        // Symbol one: rows 0..3 (the example of SEMANTICS.md); symbol two: row 3.
        let side = [Side::Entry, Side::Entry, Side::Exit, Side::Exit];
        let qty = Int64Array::from(vec![50, 50, 80, 80]);
        let price = Float64Array::from(vec![Some(9.5), None, None, None]);
        let columns = FifoColumns {
            side: &side,
            qty: &qty,
            elapsed_ms: &[0, 1_000, 61_000, 61_000],
            row_id: &[10, 11, 12, 13],
            price: Some(&price),
        };
        let mut out = FifoOutput::default();
        fifo_symbol(&columns, 0..3, &mut out);
        // A second symbol in the same output never touches the first one's open lot.
        fifo_symbol(&columns, 3..4, &mut out);
        assert_eq!(
            (out.counts.unmatched_exit_rows, out.counts.unclosed_entries),
            (1, 1)
        );
        assert_eq!(out.counts.output_rows, 5);
        assert_eq!(out.source, [0, 1, 2, 2, 3]);
        let [entry_id, qty, holding, price, closed] = out.into_arrays();
        let entry_id: Vec<_> = entry_id.as_primitive::<UInt64Type>().iter().collect();
        assert_eq!(entry_id, [None, None, Some(10), Some(11), None]);
        let qty: Vec<_> = qty.as_primitive::<Int64Type>().iter().collect();
        assert_eq!(qty, [Some(50), Some(30), Some(50), Some(30), Some(80)]);
        let holding: Vec<_> = holding.as_primitive::<Float64Type>().iter().collect();
        assert_eq!(holding, [None, None, Some(61.0), Some(60.0), None]);
        let price: Vec<_> = price.as_primitive::<Float64Type>().iter().collect();
        assert_eq!(price, [None, None, Some(9.5), None, None]);
        let closed: Vec<_> = closed.as_boolean().iter().collect();
        assert_eq!(
            closed,
            [Some(true), Some(false), Some(true), Some(true), Some(false)]
        );
    }

    #[test]
    fn unclosed_entries_report_what_was_closed() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(100), 0, 0),
            ("A", Some("S"), Some(30), 1_000, 1),
            ("A", Some("B"), Some(50), 2_000, 2),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(30), None, None, Some(false)),
                (1, Some(0), Some(30), Some(1.0), Some(100.0), Some(true)),
                (2, None, Some(0), None, None, Some(false)),
            ]
        );
        assert_eq!(counts.unclosed_entries, 2);
    }

    #[test]
    fn an_exit_before_any_entry_never_takes_a_later_lot() {
        let (out, counts) = run(&[
            ("A", Some("S"), Some(50), 0, 0),
            ("A", Some("B"), Some(50), 1_000, 1),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(50), None, None, Some(false)),
                (1, None, Some(0), None, None, Some(false)),
            ]
        );
        assert_eq!(
            (counts.unmatched_exit_rows, counts.unmatched_exit_qty),
            (1, 50)
        );
        assert_eq!(counts.unclosed_entries, 1);
    }

    #[test]
    fn an_exit_larger_than_all_open_lots_leaves_a_remainder() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(30), 0, 0),
            ("A", Some("B"), Some(20), 0, 1),
            ("A", Some("S"), Some(100), 2_000, 2),
            ("A", Some("S"), Some(5), 3_000, 3),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(30), None, None, Some(true)),
                (1, None, Some(20), None, None, Some(true)),
                (2, Some(0), Some(30), Some(2.0), Some(100.0), Some(true)),
                (2, Some(1), Some(20), Some(2.0), Some(101.0), Some(true)),
                (2, None, Some(50), None, None, Some(false)),
                (3, None, Some(5), None, None, Some(false)),
            ]
        );
        assert_eq!(
            (counts.unmatched_exit_rows, counts.unmatched_exit_qty),
            (2, 55)
        );
        assert_eq!(counts.unclosed_entries, 0);
    }

    #[test]
    fn zero_quantities_open_nothing_and_take_nothing() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(0), 0, 0),
            ("A", Some("S"), Some(0), 1_000, 1),
            ("A", Some("B"), Some(10), 2_000, 2),
            ("A", Some("S"), Some(0), 3_000, 3),
            ("A", Some("S"), Some(10), 4_000, 4),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(0), None, None, Some(true)),
                (1, None, Some(0), None, None, Some(false)),
                (2, None, Some(10), None, None, Some(true)),
                (3, None, Some(0), None, None, Some(false)),
                (4, Some(2), Some(10), Some(2.0), Some(102.0), Some(true)),
            ]
        );
        assert_eq!(counts.zero_qty_rows, 3);
        assert_eq!(
            (counts.unmatched_exit_rows, counts.unclosed_entries),
            (0, 0)
        );
    }

    #[test]
    fn other_sides_pass_through_with_null_fifo_columns() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(10), 0, 0),
            ("A", Some("X"), Some(10), 1_000, 1),
            ("A", Some("b"), Some(10), 1_000, 2),
            ("A", Some("S"), Some(10), 2_000, 3),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(10), None, None, Some(true)),
                (1, NULLS, None, None, None, None),
                (2, NULLS, None, None, None, None),
                (3, Some(0), Some(10), Some(2.0), Some(100.0), Some(true)),
            ]
        );
        assert_eq!(counts.other_side_rows, 2);
    }

    #[test]
    fn ties_in_time_are_resolved_by_row_id_whatever_the_input_order() {
        // Given out of order; event order is row 3 (B 7 at 500 ms), then at 1,000 ms
        // row 0 (B 10), row 1 (S 10) and row 2 (S 10). Input order would match nothing.
        // The output keeps the input order.
        let (out, _) = run(&[
            ("A", Some("S"), Some(10), 1_000, 2),
            ("A", Some("S"), Some(10), 1_000, 1),
            ("A", Some("B"), Some(10), 1_000, 0),
            ("A", Some("B"), Some(7), 500, 3),
        ]);
        assert_eq!(
            out,
            [
                (2, Some(0), Some(7), Some(0.0), Some(100.0), Some(true)),
                (2, None, Some(3), None, None, Some(false)),
                (1, Some(3), Some(7), Some(0.5), Some(103.0), Some(true)),
                (1, Some(0), Some(3), Some(0.0), Some(100.0), Some(true)),
                (0, None, Some(10), None, None, Some(true)),
                (3, None, Some(7), None, None, Some(true)),
            ]
        );
    }

    #[test]
    fn several_symbols_interleaved_are_matched_separately() {
        let (out, counts) = run(&[
            ("A", Some("B"), Some(10), 0, 0),
            ("Z", Some("S"), Some(5), 0, 1),
            ("A", Some("S"), Some(4), 1_000, 2),
            ("Z", Some("B"), Some(5), 1_000, 3),
            ("A", Some("S"), Some(10), 2_000, 4),
        ]);
        assert_eq!(
            out,
            [
                (0, None, Some(10), None, None, Some(true)),
                (1, None, Some(5), None, None, Some(false)),
                (2, Some(0), Some(4), Some(1.0), Some(100.0), Some(true)),
                (3, None, Some(0), None, None, Some(false)),
                (4, Some(0), Some(6), Some(2.0), Some(100.0), Some(true)),
                (4, None, Some(4), None, None, Some(false)),
            ]
        );
        assert_eq!(
            (counts.unmatched_exit_rows, counts.unclosed_entries),
            (2, 1)
        );
    }

    #[test]
    fn null_side_qty_and_price() {
        let rows = [
            ("A", None, Some(10), 0, 0),
            ("A", Some("B"), None, 0, 1),
            ("A", Some("B"), Some(-5), 0, 2),
            ("A", Some("B"), Some(10), 0, 3),
            ("A", Some("S"), None, 1_000, 4),
            ("A", Some("S"), Some(4), 1_000, 5),
            ("A", Some("X"), None, 1_000, 6),
        ];
        let prices = [
            Some(1.0),
            Some(1.0),
            Some(1.0),
            None,
            Some(1.0),
            Some(1.0),
            None,
        ];
        let (out, counts) = run_with_prices(&rows, &prices);
        assert_eq!(
            out,
            [
                (0, NULLS, None, None, None, None),
                (1, NULLS, None, None, None, None),
                (2, NULLS, None, None, None, None),
                (3, None, Some(4), None, None, Some(false)),
                (4, NULLS, None, None, None, None),
                (5, Some(3), Some(4), Some(1.0), None, Some(true)),
                (6, NULLS, None, None, None, None),
            ]
        );
        assert_eq!((counts.invalid_qty_rows, counts.other_side_rows), (3, 2));
    }

    #[test]
    fn a_null_symbol_is_a_symbol_of_its_own() {
        let batch = batch(
            &[
                ("A", Some("B"), Some(10), 0, 0),
                ("A", Some("S"), Some(10), 1_000, 1),
            ],
            &[None, None],
        );
        let symbols: ArrayRef = Arc::new(StringArray::from(vec![None, Some("A")]));
        let batch = crate::batch::with_columns(&batch, vec![("ukey".to_owned(), symbols)]);
        let (_, counts) = fifo_match(&[batch], &spec(), "ukey").unwrap();
        assert_eq!(
            (counts.unclosed_entries, counts.unmatched_exit_rows),
            (1, 1)
        );
    }

    #[test]
    fn integer_sides_and_narrow_quantities() {
        let good = batch(
            &[("A", None, None, 0, 0), ("A", None, None, 1_000, 1)],
            &[None; 2],
        );
        let sides: ArrayRef = Arc::new(arrow::array::Int8Array::from(vec![1, -1]));
        let qty: ArrayRef = Arc::new(arrow::array::UInt32Array::from(vec![5, 3]));
        let batch = crate::batch::with_columns(
            &good,
            vec![("side".to_owned(), sides), ("qty".to_owned(), qty)],
        );
        let spec = FifoSpec {
            entry_side: "1".into(),
            exit_side: "-1".into(),
            ..spec()
        };
        let (out, counts) = fifo_match(&[batch], &spec, "ukey").unwrap();
        let matched = out[0].column_by_name(MATCHED_QTY).unwrap();
        assert_eq!(matched.as_primitive::<Int64Type>().values(), &[3, 3]);
        assert_eq!(
            (counts.entry_rows, counts.exit_rows, counts.unclosed_entries),
            (1, 1, 1)
        );
    }

    #[test]
    fn error_texts() {
        let rows = [("A", Some("B"), Some(10), 0, 0)];
        let good = batch(&rows, &[None]);
        let error = |batches: &[RecordBatch], spec: &FifoSpec| {
            fifo_match(batches, spec, "ukey").unwrap_err()
        };
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![10.0]));
        let float_qty = crate::batch::with_columns(&good, vec![("qty".to_owned(), floats)]);
        assert_eq!(
            error(&[float_qty], &spec()),
            "FIFOMatch: quantity column 'qty' has type Float64; FIFO matches integer \
             quantities, so cast it first with [[cast]] column = \"qty\" and to = \"int64\""
        );
        let no_side = FifoSpec {
            side: "orderSide".into(),
            ..spec()
        };
        assert_eq!(
            error(std::slice::from_ref(&good), &no_side),
            "FIFOMatch: unknown column 'orderSide'; available columns: ukey, side, qty, price, \
             elapsed_ms, row_id"
        );
        let same = FifoSpec {
            exit_side: "B".into(),
            ..spec()
        };
        assert_eq!(
            error(std::slice::from_ref(&good), &same),
            "FIFOMatch: the entry side and the exit side are both 'B'; they must differ"
        );
        let late: ArrayRef = Arc::new(Int64Array::from(vec![1 << 27]));
        let late = crate::batch::with_columns(&good, vec![(ELAPSED_MS.to_owned(), late)]);
        assert_eq!(
            error(&[late], &spec()),
            "enrich: event time out of range (elapsed_ms 134217728, row_id 0); \
             elapsed_ms must be in 0..2^27 and row_id below 2^36"
        );
        let fewer = good.project(&[0, 1, 2, 4, 5]).unwrap();
        assert_eq!(
            error(&[good.clone(), fewer], &FifoSpec::new("side", "qty")),
            "enrich: batch 1 of the date has columns (ukey: Utf8, side: Utf8, qty: Int64, \
             elapsed_ms: Int64, row_id: UInt64) but batch 0 has (ukey: Utf8, side: Utf8, \
             qty: Int64, price: Float64, elapsed_ms: Int64, row_id: UInt64); all batches of \
             a date must share one schema"
        );
    }
}
