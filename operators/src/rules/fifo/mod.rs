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

mod kernel;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};

pub use self::kernel::{
    CLOSED, ENTRY, FifoColumns, FifoCounts, FifoOutput, Lot, MATCHED, PORTION, PRICED, Revision,
    Side, fifo_symbol, fifo_symbol_resumed,
};
pub use crate::enrich::OUTPUT_BATCH_ROWS;
use crate::enrich::{
    Carried, EnrichError, EnrichRule, EnrichSpec, Revisions, Rows, RuleOutput, enrich,
};

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
        self.side_of_bytes(value.as_bytes())
    }

    #[inline(always)]
    fn side_of_bytes(&self, value: &[u8]) -> Side {
        // Side values are a byte or two: compared inline, not by a call to memcmp.
        let is = |side: &str| {
            value.len() == side.len() && value.iter().zip(side.bytes()).all(|(a, b)| *a == b)
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

/// FIFO matching as a rule of the [`crate::enrich`] operator (`FIFOMatch` in the
/// seeds): reads the spec's side, quantity and (optional) price columns and adds the
/// five FIFO columns.
#[derive(Clone, Debug, PartialEq)]
pub struct FifoMatch {
    spec: FifoSpec,
}

impl FifoMatch {
    /// The rule for `spec`; the entry and exit sides must differ.
    pub fn new(spec: FifoSpec) -> Result<Self, EnrichError> {
        if spec.entry_side == spec.exit_side {
            return Err(EnrichError::FifoSides {
                side: spec.entry_side,
            });
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

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError> {
        let spec = &self.spec;
        let type_of = |name: &str| {
            schema
                .field_with_name(name)
                .map(|f| f.data_type().clone())
                .map_err(|source| EnrichError::RuleArrow {
                    rule: self.name(),
                    source,
                })
        };
        let qty = type_of(&spec.qty)?;
        if !qty.is_integer() {
            return Err(EnrichError::FifoQuantityType {
                column: spec.qty.clone(),
                data_type: qty,
            });
        }
        let side = type_of(&spec.side)?;
        if !arrow::compute::can_cast_types(&side, &DataType::Utf8) {
            return Err(EnrichError::FifoSideType {
                column: spec.side.clone(),
                data_type: side,
                entry_side: spec.entry_side.clone(),
                exit_side: spec.exit_side.clone(),
            });
        }
        if let Some(price) = &spec.price {
            let price_type = type_of(price)?;
            if !price_type.is_numeric() {
                return Err(EnrichError::PriceType {
                    rule: self.name(),
                    column: price.clone(),
                    data_type: price_type,
                });
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

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
        let inputs = self.read(rows)?;
        let columns = inputs.columns(rows);
        // Exits emit a row per lot they close: room for one and a half rows per row,
        // growing if needed.
        let n = rows.len();
        let mut out = FifoOutput::with_capacity(n + n / 2);
        for run in rows.runs.windows(2) {
            fifo_symbol(&columns, run[0]..run[1], &mut out);
        }
        Ok(rule_output(out, n, None))
    }

    /// Each symbol's open lots are carried to its next call; an exit that takes from a
    /// lot of an earlier call revises that entry row's `matched_qty` and `is_closed`.
    /// The lots still open at the date's end are counted by [`EnrichRule::finish`].
    fn resume(
        &self,
        rows: &Rows<'_>,
        symbols: &[u32],
        carried: &mut Carried,
    ) -> Result<RuleOutput, EnrichError> {
        let inputs = self.read(rows)?;
        let columns = inputs.columns(rows);
        let n = rows.len();
        let mut out = FifoOutput::with_capacity(n + n / 2);
        let (mut revisions, mut open) = (Vec::new(), Vec::new());
        let epoch = carried.epoch;
        for (run, symbol) in rows.runs.windows(2).zip(symbols) {
            let lots: &mut VecDeque<Lot> = carried.state_mut(*symbol);
            fifo_symbol_resumed(
                &columns,
                run[0]..run[1],
                lots,
                &mut out,
                &mut revisions,
                &mut open,
                epoch,
            );
        }
        let changed = !revisions.is_empty() || !open.is_empty();
        let revisions = changed.then(|| revisions_of(&revisions, open));
        Ok(rule_output(out, n, revisions))
    }

    fn revises(&self) -> Vec<String> {
        vec![MATCHED_QTY.to_owned(), IS_CLOSED.to_owned()]
    }

    fn places(&self) -> bool {
        true
    }

    /// The entries of lots still open at the date's end that exits took from, with
    /// what they took.
    fn unsettled(&self, carried: &Carried) -> Option<Revisions> {
        let revisions: Vec<Revision> = carried
            .states::<VecDeque<Lot>>()
            .flatten()
            .filter(|lot| lot.matched > 0)
            .map(|lot| Revision {
                row_id: lot.row_id,
                matched_qty: lot.matched,
                is_closed: false,
                reported: lot.reported,
                place: lot.place,
            })
            .collect();
        (!revisions.is_empty()).then(|| revisions_of(&revisions, Vec::new()))
    }

    fn unsettled_changed(&self, carried: &mut Carried) -> Option<Revisions> {
        // Exits take from the first lot on: the lots behind it are unmatched, as they
        // went out.
        let revisions: Vec<Revision> = (carried.states_mut::<VecDeque<Lot>>())
            .filter_map(|lots| lots.front_mut())
            .filter(|lot| lot.matched != lot.reported)
            .map(|lot| {
                let reported = std::mem::replace(&mut lot.reported, lot.matched);
                Revision {
                    row_id: lot.row_id,
                    matched_qty: lot.matched,
                    is_closed: false,
                    reported,
                    place: lot.place,
                }
            })
            .collect();
        (!revisions.is_empty()).then(|| revisions_of(&revisions, Vec::new()))
    }

    fn finish(&self, carried: &mut Carried) -> Vec<(String, u64)> {
        let open: usize = carried
            .drain::<VecDeque<Lot>>()
            .map(|lots| lots.len())
            .sum();
        vec![("fifo.unclosed_entries".to_owned(), open as u64)]
    }
}

impl FifoMatch {
    /// The rule's input columns as the kernel reads them.
    fn read(&self, rows: &Rows<'_>) -> Result<KernelInputs, EnrichError> {
        let spec = &self.spec;
        let mut side = Vec::with_capacity(rows.len());
        push_sides(&rows.columns[0], spec, &mut side)?;
        let qty = quantities(&rows.columns[1], &spec.qty)?;
        let price = match &spec.price {
            Some(name) => Some(prices(&rows.columns[2], name)?),
            None => None,
        };
        Ok(KernelInputs { side, qty, price })
    }
}

/// The sides, quantities and prices of a call's rows, as the kernel reads them.
struct KernelInputs {
    side: Vec<Side>,
    qty: Int64Array,
    price: Option<Float64Array>,
}

impl KernelInputs {
    /// The kernel's columns: these and the rows' event keys.
    fn columns<'a>(&'a self, rows: &Rows<'a>) -> FifoColumns<'a> {
        FifoColumns {
            side: &self.side,
            qty: &self.qty,
            elapsed_ms: rows.elapsed_ms,
            row_id: rows.row_id,
            price: self.price.as_ref(),
        }
    }
}

/// The kernel's revisions, and a call's `open` rows, as [`Revisions`].
fn revisions_of(revisions: &[Revision], open: Vec<u64>) -> Revisions {
    Revisions {
        row_ids: revisions.iter().map(|r| r.row_id).collect(),
        columns: revised_columns(revisions, |r| r.matched_qty, |r| r.is_closed),
        settled: revisions.iter().map(|r| r.is_closed).collect(),
        open,
        places: revisions.iter().map(|r| r.place).collect(),
        // An entry that went out closed does not change again.
        before: revised_columns(revisions, |r| r.reported, |_| false),
    }
}

/// The revised columns of `revisions`: `matched_qty` and `is_closed` as given.
fn revised_columns(
    revisions: &[Revision],
    matched_qty: impl Fn(&Revision) -> i64,
    is_closed: impl Fn(&Revision) -> bool,
) -> Vec<(String, ArrayRef)> {
    let matched = Int64Array::from_iter_values(revisions.iter().map(matched_qty));
    let closed = BooleanArray::from_iter(revisions.iter().map(|r| Some(is_closed(r))));
    vec![
        (MATCHED_QTY.to_owned(), Arc::new(matched) as ArrayRef),
        (IS_CLOSED.to_owned(), Arc::new(closed) as ArrayRef),
    ]
}

/// The kernel's output for `n` rows as a [`RuleOutput`].
fn rule_output(mut out: FifoOutput, n: usize, revisions: Option<Revisions>) -> RuleOutput {
    let counts = out.counts.named();
    let source = std::mem::take(&mut out.source);
    let expanded = source.len() != n;
    RuleOutput {
        source: expanded.then_some(source),
        columns: out.into_arrays().to_vec(),
        counts: counts
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count))
            .collect(),
        revisions,
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
) -> Result<(Vec<RecordBatch>, FifoCounts), EnrichError> {
    let spec = EnrichSpec {
        symbol: symbol.to_owned(),
        rules: vec![Arc::new(FifoMatch::new(spec.clone())?)],
        keep: None,
        open_in_place: None,
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

/// The side of row `i` of a `Utf8` column (`offsets`, `bytes`): when both sides are one
/// byte, a one-byte value's side by `table` (by byte), without a branch on the value (the
/// sides of consecutive rows do not follow a pattern the processor can predict). Inlined:
/// as a call per row it cost more than the comparison.
#[inline(always)]
fn utf8_side(
    offsets: &[i32],
    bytes: &[u8],
    i: usize,
    table: Option<&[Side; 256]>,
    spec: &FifoSpec,
) -> Side {
    let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
    match table {
        Some(table) => {
            let side = table[usize::from(bytes.get(start).copied().unwrap_or(0))];
            if end == start + 1 { side } else { Side::Other }
        }
        None => spec.side_of_bytes(&bytes[start..end]),
    }
}

/// Appends each row's [`Side`]. Dictionaries are classified once per dictionary value.
fn push_sides(values: &ArrayRef, spec: &FifoSpec, out: &mut Vec<Side>) -> Result<(), EnrichError> {
    let classify = |value: Option<&str>| value.map_or(Side::Other, |v| spec.side_of(v));
    match values.data_type() {
        DataType::Utf8 => {
            // By index, so the vector is sized once (an array iterator is not
            // `TrustedLen`: extending from it checks the capacity at every row), and
            // from the offsets and bytes: a side is a byte or two.
            let strings = values.as_string::<i32>();
            let (offsets, bytes) = (strings.value_offsets(), strings.value_data());
            let table = match (spec.entry_side.as_bytes(), spec.exit_side.as_bytes()) {
                ([entry], [exit]) => {
                    let mut table = [Side::Other; 256];
                    table[usize::from(*entry)] = Side::Entry;
                    table[usize::from(*exit)] = Side::Exit;
                    Some(table)
                }
                _ => None,
            };
            let side = |i: usize| utf8_side(offsets, bytes, i, table.as_ref(), spec);
            match strings.nulls().filter(|nulls| nulls.null_count() > 0) {
                None => out.extend((0..strings.len()).map(side)),
                Some(nulls) => out.extend((0..strings.len()).map(|i| match nulls.is_null(i) {
                    true => Side::Other,
                    false => side(i),
                })),
            }
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
            let utf8 = arrow::compute::cast(values, &DataType::Utf8).map_err(|source| {
                EnrichError::FifoSideCast {
                    column: spec.side.clone(),
                    data_type: data_type.clone(),
                    entry_side: spec.entry_side.clone(),
                    exit_side: spec.exit_side.clone(),
                    source: Box::new(source),
                }
            })?;
            out.extend(utf8.as_string::<i32>().iter().map(classify));
        }
    }
    Ok(())
}

/// The quantity column as `Int64`; it must hold integers.
fn quantities(values: &ArrayRef, name: &str) -> Result<Int64Array, EnrichError> {
    let data_type = values.data_type();
    if !data_type.is_integer() {
        return Err(EnrichError::FifoQuantityNotInteger {
            column: name.to_owned(),
            data_type: data_type.clone(),
        });
    }
    // `safe: false`: a UInt64 quantity above i64::MAX is an error, not a silent null.
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let int64 = arrow::compute::cast_with_options(values, &DataType::Int64, &options).map_err(
        |source| EnrichError::FifoQuantityRange {
            column: name.to_owned(),
            source,
        },
    )?;
    Ok(int64.as_primitive::<Int64Type>().clone())
}

/// The price column as `f64`.
fn prices(values: &ArrayRef, name: &str) -> Result<Float64Array, EnrichError> {
    let floats = arrow::compute::cast(values, &DataType::Float64).map_err(|source| {
        EnrichError::FifoPriceCast {
            column: name.to_owned(),
            data_type: values.data_type().clone(),
            source,
        }
    })?;
    Ok(floats.as_primitive::<Float64Type>().clone())
}
