//! The FIFO matching kernel: one symbol's rows in event order in, the five FIFO columns
//! out (see the [module docs](super) for the rules). It runs on plain columns and knows
//! nothing of batches or of the enrich operator; [`super::FifoMatch`] feeds it.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, UInt64Array};
use arrow::buffer::{BooleanBuffer, NullBuffer};

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

/// The first steps of every row, shared by [`fifo_symbol`] and [`fifo_symbol_resumed`]:
/// a row of another side or with an invalid quantity is emitted with null FIFO columns
/// and counted (`None`); an entry or exit gives its side and quantity (zero counted).
#[inline]
fn matchable(rows: &FifoColumns<'_>, index: usize, out: &mut FifoOutput) -> Option<(Side, i64)> {
    let side = rows.side[index];
    if side == Side::Other {
        out.counts.other_side_rows += 1;
        out.push(index as u32, 0, 0, 0.0, 0.0, 0);
        return None;
    }
    let qty = rows.qty.value(index);
    if rows.qty.is_null(index) || qty < 0 {
        out.counts.invalid_qty_rows += 1;
        out.push(index as u32, 0, 0, 0.0, 0.0, 0);
        return None;
    }
    out.counts.zero_qty_rows += u64::from(qty == 0);
    Some((side, qty))
}

/// Emits an entry row (its `matched_qty` is filled in as exits take from its lot).
#[inline]
fn push_entry(out: &mut FifoOutput, source: u32, qty: i64) {
    out.counts.entry_rows += 1;
    let closed = if qty == 0 { CLOSED } else { 0 };
    out.push(source, 0, 0, 0.0, 0.0, MATCHED | ENTRY | closed);
}

/// An exit's last row: the quantity no open lot took (or the single row of an exit that
/// took nothing), counted when positive.
#[inline]
fn push_remainder(out: &mut FifoOutput, source: u32, remaining: i64, first_exit_row: usize) {
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

/// A row's price as a lot records it: the value and [`PRICED`], or 0 without one.
#[inline]
fn lot_price(rows: &FifoColumns<'_>, row: usize) -> (f64, u8) {
    match rows.price {
        Some(prices) if prices.is_valid(row) => (prices.value(row), PRICED),
        _ => (0.0, 0),
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
    for index in range {
        let source = index as u32;
        let Some((side, qty)) = matchable(rows, index, out) else {
            continue;
        };
        if side == Side::Entry {
            lots_opened += u64::from(qty > 0);
            push_entry(out, source, qty);
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
            let (lot_price, priced) = lot_price(rows, lot_row);
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
        push_remainder(out, source, remaining, first_exit_row);
    }
    out.counts.unclosed_entries += lots_opened - lots_closed;
    out.counts.output_rows += (out.len() - first_row) as u64;
}

/// A lot still open after a call of [`fifo_symbol_resumed`], carried to the next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lot {
    /// The entry row's `row_id`.
    pub row_id: u64,
    /// The entry row's `elapsed_ms`.
    pub elapsed_ms: i64,
    /// The lot's quantity.
    pub qty: i64,
    /// How much of it exits have taken so far.
    pub matched: i64,
    /// The lot's price ([`PRICED`] in `priced` when valid).
    pub price: f64,
    /// [`PRICED`] or 0.
    pub priced: u8,
    /// The entry's output row in this call's output, or `u32::MAX` for a lot of an
    /// earlier call.
    row: u32,
    /// `matched` as the entry row last went out: in its call's output, or as a change
    /// since ([`crate::rules::fifo::FifoMatch`]'s `unsettled_changed`).
    pub(crate) reported: i64,
    /// Where the entry row went out: the call's epoch and its place in the call's
    /// `open` ([`crate::enrich::Revisions::places`]).
    pub(crate) place: (u32, u32),
}

/// A lot of an earlier call that an exit took from: its entry row's `matched_qty` and
/// `is_closed` are now these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision {
    /// The entry row's `row_id`.
    pub row_id: u64,
    /// Its `matched_qty` now.
    pub matched_qty: i64,
    /// Its `is_closed` now.
    pub is_closed: bool,
    /// Its `matched_qty` as it last went out (its `is_closed` was false).
    pub reported: i64,
    /// Where it went out ([`Lot`]'s `place`).
    pub place: (u32, u32),
}

/// [`fifo_symbol`] over rows that continue the symbol's rows of earlier calls: `lots`
/// holds the symbol's open lots of those calls, oldest first, and on return its open
/// lots after this call's rows. Exits take from them first; a lot of an earlier call
/// that they close gets a [`Revision`] (a lot still open at the date's end has what was
/// matched of it in `lots`). This call's entry rows have what was closed by the end of
/// the call; the `row_id`s of those whose lots are still open are pushed to `open`,
/// and each such lot's place is `(epoch, its index in open)`.
/// `unclosed_entries` is not counted here: the lots left open at the end of the
/// date are.
pub fn fifo_symbol_resumed(
    rows: &FifoColumns<'_>,
    range: Range<usize>,
    lots: &mut VecDeque<Lot>,
    out: &mut FifoOutput,
    revisions: &mut Vec<Revision>,
    open: &mut Vec<u64>,
    epoch: u32,
) {
    let first_row = out.len();
    for index in range {
        let source = index as u32;
        let Some((side, qty)) = matchable(rows, index, out) else {
            continue;
        };
        if side == Side::Entry {
            if qty > 0 {
                let (price, priced) = lot_price(rows, index);
                lots.push_back(Lot {
                    row_id: rows.row_id[index],
                    elapsed_ms: rows.elapsed_ms[index],
                    qty,
                    matched: 0,
                    price,
                    priced,
                    row: out.len() as u32,
                    reported: 0,
                    place: (epoch, u32::MAX),
                });
            }
            push_entry(out, source, qty);
            continue;
        }
        out.counts.exit_rows += 1;
        let first_exit_row = out.len();
        let mut remaining = qty;
        while remaining > 0 {
            let Some(lot) = lots.front_mut() else { break };
            let portion = remaining.min(lot.qty - lot.matched);
            remaining -= portion;
            lot.matched += portion;
            let closed = lot.matched == lot.qty;
            if lot.row == u32::MAX {
                if closed {
                    revisions.push(Revision {
                        row_id: lot.row_id,
                        matched_qty: lot.matched,
                        is_closed: true,
                        reported: lot.reported,
                        place: lot.place,
                    });
                }
            } else {
                let row = lot.row as usize;
                out.matched_qty[row] = lot.matched;
                if closed {
                    out.flags[row] |= CLOSED;
                }
            }
            let holding_s = (rows.elapsed_ms[index] - lot.elapsed_ms) as f64 / 1000.0;
            let flags = MATCHED | PORTION | CLOSED | lot.priced;
            let (entry_id, price) = (lot.row_id, lot.price);
            if closed {
                lots.pop_front();
            }
            out.push(source, entry_id, portion, holding_s, price, flags);
        }
        push_remainder(out, source, remaining, first_exit_row);
    }
    // This call's lots still open are the last ones (those of earlier calls are before
    // them): the row goes out with what they matched.
    for lot in lots.iter_mut().rev() {
        if lot.row == u32::MAX {
            break;
        }
        lot.place = (epoch, open.len() as u32);
        open.push(lot.row_id);
        lot.reported = lot.matched;
        lot.row = u32::MAX;
    }
    out.counts.output_rows += (out.len() - first_row) as u64;
}
