//! SEMANTICS.md, "FIFO matching", row by row: per symbol, in event order, a `B` row opens
//! a lot and an `S` row closes the oldest lots first, one output row per lot it takes
//! from. With the documented decisions of `rules/fifo`: a zero quantity opens nothing
//! (its entry row is closed at once) and closes nothing (its exit row is one unmatched
//! row); a null or negative quantity is invalid and, like a null or other side, passes
//! through with the FIFO columns null.

use std::collections::VecDeque;

/// One row as FIFO matching reads it.
#[derive(Clone, Copy, Debug)]
pub struct FifoRow<'a> {
    /// `B` (entry), `S` (exit), anything else or null (passed through).
    pub side: Option<&'a str>,
    /// The quantity.
    pub qty: Option<i64>,
    /// The event time, in milliseconds.
    pub elapsed_ms: i64,
}

/// One output row. `input` and `matched_entry` are indices into the rows given to
/// [`fifo`]; the test maps them back to its own rows (for `row_id`, the entry's price).
#[derive(Clone, Debug, PartialEq)]
pub struct FifoOut {
    /// The row this output row comes from.
    pub input: usize,
    /// `matched_entry_id`: the entry row of the lot an exit row closed from.
    pub matched_entry: Option<usize>,
    /// `matched_qty`: of an entry, what of it was closed by the end of the rows; of an
    /// exit, the lot's portion or the unmatched remainder.
    pub matched_qty: Option<i64>,
    /// `holding_period`, in seconds, of an exit's portion of a lot.
    pub holding_period: Option<f64>,
    /// `is_closed`.
    pub is_closed: Option<bool>,
}

/// The `fifo.*` counters of the rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FifoCounts {
    /// Valid `B` rows.
    pub entry_rows: u64,
    /// Valid `S` rows.
    pub exit_rows: u64,
    /// Valid rows of quantity zero.
    pub zero_qty_rows: u64,
    /// Exit rows left (partly) unmatched.
    pub unmatched_exit_rows: u64,
    /// Their unmatched quantity.
    pub unmatched_exit_qty: u64,
    /// `B` or `S` rows with a null or negative quantity.
    pub invalid_qty_rows: u64,
    /// Rows of another or a null side.
    pub other_side_rows: u64,
    /// Lots still open after the last row.
    pub unclosed_entries: u64,
    /// Output rows.
    pub output_rows: u64,
}

impl FifoCounts {
    /// The counters by their report names (`fifo.entry_rows`, ...), zero or not.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        [
            ("fifo.entry_rows", self.entry_rows),
            ("fifo.exit_rows", self.exit_rows),
            ("fifo.zero_qty_rows", self.zero_qty_rows),
            ("fifo.unmatched_exit_rows", self.unmatched_exit_rows),
            ("fifo.unmatched_exit_qty", self.unmatched_exit_qty),
            ("fifo.invalid_qty_rows", self.invalid_qty_rows),
            ("fifo.other_side_rows", self.other_side_rows),
            ("fifo.unclosed_entries", self.unclosed_entries),
            ("fifo.output_rows", self.output_rows),
        ]
    }
}

/// FIFO matching over one symbol's rows in event order. Returns the output rows in
/// event order (an exit's rows in the order its lots were taken, then its remainder)
/// and the counters.
pub fn fifo(rows: &[FifoRow<'_>]) -> (Vec<FifoOut>, FifoCounts) {
    struct Lot {
        /// The entry's output row.
        output: usize,
        remaining: i64,
    }
    let mut counts = FifoCounts::default();
    let mut out: Vec<FifoOut> = Vec::new();
    let mut lots: VecDeque<Lot> = VecDeque::new();
    let pass_through = |input| FifoOut {
        input,
        matched_entry: None,
        matched_qty: None,
        holding_period: None,
        is_closed: None,
    };
    for (input, row) in rows.iter().enumerate() {
        match (row.side, row.qty) {
            (Some("B"), Some(qty)) if qty >= 0 => {
                counts.entry_rows += 1;
                counts.zero_qty_rows += u64::from(qty == 0);
                if qty > 0 {
                    lots.push_back(Lot {
                        output: out.len(),
                        remaining: qty,
                    });
                }
                out.push(FifoOut {
                    matched_qty: Some(0),
                    is_closed: Some(qty == 0),
                    ..pass_through(input)
                });
            }
            (Some("S"), Some(qty)) if qty >= 0 => {
                counts.exit_rows += 1;
                counts.zero_qty_rows += u64::from(qty == 0);
                let (mut remaining, mut emitted) = (qty, 0);
                while remaining > 0 {
                    let Some(lot) = lots.front_mut() else { break };
                    let portion = remaining.min(lot.remaining);
                    remaining -= portion;
                    lot.remaining -= portion;
                    let entry = &mut out[lot.output];
                    *entry.matched_qty.as_mut().expect("an entry's matched_qty") += portion;
                    let entry_input = entry.input;
                    if lot.remaining == 0 {
                        entry.is_closed = Some(true);
                        lots.pop_front();
                    }
                    let holding_ms = row.elapsed_ms - rows[entry_input].elapsed_ms;
                    out.push(FifoOut {
                        matched_entry: Some(entry_input),
                        matched_qty: Some(portion),
                        holding_period: Some(holding_ms as f64 / 1000.0),
                        is_closed: Some(true),
                        ..pass_through(input)
                    });
                    emitted += 1;
                }
                if remaining > 0 || emitted == 0 {
                    if remaining > 0 {
                        counts.unmatched_exit_rows += 1;
                        counts.unmatched_exit_qty += remaining as u64;
                    }
                    out.push(FifoOut {
                        matched_qty: Some(remaining),
                        is_closed: Some(false),
                        ..pass_through(input)
                    });
                }
            }
            (Some("B" | "S"), _) => {
                counts.invalid_qty_rows += 1;
                out.push(pass_through(input));
            }
            _ => {
                counts.other_side_rows += 1;
                out.push(pass_through(input));
            }
        }
    }
    counts.unclosed_entries = lots.len() as u64;
    counts.output_rows = out.len() as u64;
    (out, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_closes_the_oldest_lots_first_and_reports_its_remainder() {
        let row = |side, qty, elapsed_ms| FifoRow {
            side: Some(side),
            qty: Some(qty),
            elapsed_ms,
        };
        let rows = [row("B", 5, 0), row("B", 5, 1000), row("S", 12, 3000)];
        let (out, counts) = fifo(&rows);
        let taken: Vec<_> = out
            .iter()
            .map(|o| (o.input, o.matched_entry, o.matched_qty, o.is_closed))
            .collect();
        assert_eq!(
            taken,
            [
                (0, None, Some(5), Some(true)),
                (1, None, Some(5), Some(true)),
                (2, Some(0), Some(5), Some(true)),
                (2, Some(1), Some(5), Some(true)),
                (2, None, Some(2), Some(false)),
            ]
        );
        assert_eq!(out[2].holding_period, Some(3.0));
        assert_eq!((counts.unmatched_exit_qty, counts.output_rows), (2, 5));
    }
}
