//! SEMANTICS.md, "Streaming", row by row: which rows of a date are late, and the date
//! cut at a watermark `W` (the rows a provisional result at `W` is made of, with `W`
//! as the day's end), beside the as-of forward returns of "Forward returns" with any
//! close. A provisional result at `W` is the whole-date oracle run over
//! [`cut_at`]'s rows with [`forward_returns`]`(.., close = W)`; FIFO matching needs no
//! change ([`fifo`](crate::fifo::fifo) over the cut rows closes what was closed by `W`).

/// The late rows of a date, as indices into `elapsed_ms` (the rows' trading times in
/// arrival order: file order for a file, push order for a feed): a row is late when its
/// `elapsed_ms` is below the watermark when it arrives, the largest `elapsed_ms` of the
/// rows before it minus `lateness_ms` (a late row is below it, so it cannot raise it).
pub fn late_rows(elapsed_ms: &[i64], lateness_ms: i64) -> Vec<usize> {
    let mut largest: Option<i64> = None;
    let mut late = Vec::new();
    for (i, &t) in elapsed_ms.iter().enumerate() {
        match largest {
            Some(seen) if t < seen.saturating_sub(lateness_ms) => late.push(i),
            Some(seen) if t <= seen => {}
            _ => largest = Some(t),
        }
    }
    late
}

/// The rows of a date cut at `w`, as indices into `elapsed_ms` in their order: the rows
/// with `elapsed_ms <= w`.
pub fn cut_at(elapsed_ms: &[i64], w: i64) -> Vec<usize> {
    (0..elapsed_ms.len())
        .filter(|i| elapsed_ms[*i] <= w)
        .collect()
}

/// `return_{h}` of each of one symbol's rows, given as `(elapsed_ms, price)` in event
/// order, with `close_ms` as the day's end (its total trading time for a final result,
/// `W` for a provisional one): target = `elapsed_ms + 1000 h`; null past `close_ms`;
/// otherwise the price of the last row with `elapsed_ms <= target`, over the row's own
/// price, minus 1. A null price gives a null return (no division).
pub fn forward_returns(
    rows: &[(i64, Option<f64>)],
    horizon_s: i64,
    close_ms: i64,
) -> Vec<Option<f64>> {
    rows.iter()
        .enumerate()
        .map(|(i, &(t, price))| {
            let target = t + 1000 * horizon_s;
            if target > close_ms {
                return None;
            }
            // The last row at or before the target, in event order (the row itself
            // qualifies).
            let last = (i..rows.len())
                .take_while(|j| rows[*j].0 <= target)
                .last()?;
            Some(rows[last].1? / price? - 1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fifo::{FifoRow, fifo};

    #[test]
    fn late_rows_are_below_the_largest_time_seen_minus_the_lateness() {
        // Times in arrival order; lateness 2 s.
        let times = [1_000, 5_000, 3_000, 2_999, 7_000, 5_000, 4_999, 9_000];
        assert_eq!(late_rows(&times, 2_000), [3, 6]);
        assert_eq!(late_rows(&times, 0), [2, 3, 5, 6]);
        assert!(late_rows(&times, i64::MAX).is_empty());
    }

    /// The worked example of SEMANTICS.md, "Streaming": one symbol, horizon 60 s,
    /// `W` = 120,000; rows B 100 at 0, S 60 at 60,000, S 60 at 300,000.
    #[test]
    fn the_worked_example() {
        let elapsed = [0, 60_000, 300_000];
        let sides = ["B", "S", "S"];
        let qty = [100, 60, 60];
        let prices = [Some(10.0), Some(11.0), Some(12.0)];
        let rows = |indices: &[usize]| -> Vec<FifoRow<'static>> {
            (indices.iter())
                .map(|&i| FifoRow {
                    side: Some(sides[i]),
                    qty: Some(qty[i]),
                    elapsed_ms: elapsed[i],
                })
                .collect()
        };
        let w = 120_000;
        let cut = cut_at(&elapsed, w);
        assert_eq!(cut, [0, 1], "the last S row is not there yet");
        let (at_w, _) = fifo(&rows(&cut));
        assert_eq!(at_w[0].matched_qty, Some(60));
        assert_eq!(at_w[0].is_closed, Some(false));
        assert_eq!(
            (at_w[1].matched_entry, at_w[1].matched_qty),
            (Some(0), Some(60))
        );
        assert_eq!(at_w[1].holding_period, Some(60.0));
        let priced: Vec<(i64, Option<f64>)> =
            cut.iter().map(|&i| (elapsed[i], prices[i])).collect();
        // Both targets (60,000 and 120,000) are at or before W: both returns known.
        let returns = forward_returns(&priced, 60, w);
        assert_eq!(returns, [Some(11.0 / 10.0 - 1.0), Some(0.0)]);

        let all = [0, 1, 2];
        let (last, _) = fifo(&rows(&all));
        assert_eq!(
            (last[0].matched_qty, last[0].is_closed),
            (Some(100), Some(true))
        );
        // The last S row becomes two: 40 from the lot, a remainder of 20.
        assert_eq!(last.len(), 4);
        assert_eq!(
            (last[2].input, last[2].matched_entry, last[2].matched_qty),
            (2, Some(0), Some(40))
        );
        assert_eq!(last[2].holding_period, Some(300.0));
        assert_eq!(
            (last[3].input, last[3].matched_qty, last[3].is_closed),
            (2, Some(20), Some(false))
        );
    }

    #[test]
    fn a_return_past_the_close_is_null() {
        let rows = [(0, Some(10.0)), (30_000, Some(10.5)), (90_000, Some(11.0))];
        assert_eq!(
            forward_returns(&rows, 60, 60_000),
            [Some(10.5 / 10.0 - 1.0), None, None],
            "W = 60,000: only the first row's target is at or before it"
        );
        assert_eq!(
            forward_returns(&rows, 60, 200_000)[1],
            Some(11.0 / 10.5 - 1.0)
        );
        assert_eq!(forward_returns(&[(0, None)], 1, 1_000), [None]);
    }
}
