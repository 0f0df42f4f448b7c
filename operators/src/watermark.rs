//! `watermark`: which rows of a date arrive late (SEMANTICS.md, *Streaming*).
//!
//! A date's rows arrive in an order the input defines: file order (`row_id`) for a
//! file, push order for a feed. The **watermark** when a row arrives is the largest
//! `elapsed_ms` of the rows before it minus the lateness, or a floor the producer set
//! explicitly (`Engine::advance_within_date`) if that is higher. A row below it is
//! **late**: with [`LatePolicy::Drop`] it is dropped and counted, with
//! [`LatePolicy::Error`] the date fails naming it.
//!
//! Arrival order is defined by the input, not by which worker read what first: the
//! rows come in *parts* (a file's parts, or pushed batches) numbered in arrival order,
//! and a part is classified once the largest `elapsed_ms` of every part before it is
//! known ([`Coverage`]). Within a part the scan is sequential ([`classify`]). So which
//! rows are late does not depend on the number of workers, processes or batch sizes.

use std::collections::BTreeMap;

use arrow::array::{Array, Int64Array};

/// The `[stream]` section: how late a row may arrive, what happens to one that arrives
/// later, and how often provisional results come out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// How far (ms of trading time) a row may arrive behind the latest row of its date.
    pub lateness_ms: i64,
    /// What happens to a row that arrives later than that.
    pub late: LatePolicy,
    /// Provisional results at every multiple of this much trading time (ms), if set.
    pub emit_every_ms: Option<i64>,
}

/// What happens to a late row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatePolicy {
    /// The row takes no part in any result; counted as `stream.late_rows`, its `row_id`
    /// listed in the date's report (the first [`LATE_ROW_IDS_SHOWN`]).
    Drop,
    /// The date fails, naming the row, its time and the watermark.
    Error,
}

/// How many late `row_id`s a date's report lists (the smallest: the first to arrive
/// in a file).
pub const LATE_ROW_IDS_SHOWN: usize = 1_000;

/// The report counter of late rows.
pub const LATE_ROWS: &str = "stream.late_rows";

/// A late row: where it is in the part, its identity, its time and the watermark it
/// arrived below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateRow {
    /// The row's index in the batch scanned.
    pub index: usize,
    /// The row's `elapsed_ms`.
    pub elapsed_ms: i64,
    /// The watermark when it arrived.
    pub watermark: i64,
}

impl LateRow {
    /// The error of [`LatePolicy::Error`], naming the row (`row_id`), its time and the
    /// watermark, and what to do.
    pub fn error(&self, row_id: u64, spec: &StreamSpec) -> String {
        format!(
            "stream: row {row_id} arrived late: its elapsed_ms {} is below the watermark {} \
             (the largest elapsed_ms before it minus lateness {} ms, or the producer's \
             advance); raise [stream] lateness, or set late = \"drop\" to drop and count \
             such rows",
            self.elapsed_ms, self.watermark, spec.lateness_ms
        )
    }
}

/// Scans a part's `elapsed_ms` in arrival order. `largest` is the largest `elapsed_ms`
/// that arrived before (updated as the scan goes), `floor` the producer's explicit
/// watermark when the part arrived (`i64::MIN` for none). Returns the late rows, in
/// order. Nulls (which `parse_time` never produces) are never late.
pub fn classify(
    elapsed_ms: &Int64Array,
    largest: &mut Option<i64>,
    floor: i64,
    lateness_ms: i64,
) -> Vec<LateRow> {
    let mut late = Vec::new();
    let (mut top, mut mark) = (*largest, watermark(*largest, floor, lateness_ms));
    // The watermark moves only when the largest time does: worked out then, not per row.
    let mut see = |index: usize, t: i64| {
        if t < mark {
            late.push(LateRow {
                index,
                elapsed_ms: t,
                watermark: mark,
            });
        } else if top.is_none_or(|l| t > l) {
            top = Some(t);
            mark = watermark(top, floor, lateness_ms);
        }
    };
    let values = elapsed_ms.values();
    match elapsed_ms.nulls().filter(|n| n.null_count() > 0) {
        None => values.iter().enumerate().for_each(|(i, t)| see(i, *t)),
        Some(nulls) => nulls.valid_indices().for_each(|i| see(i, values[i])),
    }
    *largest = top;
    late
}

/// The watermark after rows up to `largest` and an explicit `floor` (`i64::MIN` when
/// none has been seen or set).
pub fn watermark(largest: Option<i64>, floor: i64, lateness_ms: i64) -> i64 {
    largest
        .map_or(i64::MIN, |l| l.saturating_sub(lateness_ms))
        .max(floor)
}

/// What is known of one date's parts: each part's largest `elapsed_ms`, as the parts
/// are summarised (in any order), and how far the parts are known without a gap.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// Parts summarised beyond the first gap: part number -> its largest `elapsed_ms`.
    ahead: BTreeMap<u64, Option<i64>>,
    /// The largest `elapsed_ms` of the parts before each known part number: `before[k]`
    /// covers parts `0..k`. `before.len() - 1` parts are known without a gap.
    before: Vec<Option<i64>>,
}

impl Coverage {
    /// Records part `part`'s largest `elapsed_ms` (`None` for a part without rows).
    pub fn add(&mut self, part: u64, largest: Option<i64>) {
        if self.before.is_empty() {
            self.before.push(None);
        }
        self.ahead.insert(part, largest);
        while let Some(largest) = self.ahead.remove(&(self.known() as u64)) {
            let last = *self.before.last().expect("not empty");
            self.before.push(last.max(largest));
        }
    }

    /// How many parts are known without a gap (parts `0..known()`).
    pub fn known(&self) -> usize {
        self.before.len().saturating_sub(1)
    }

    /// The largest `elapsed_ms` of the parts before `part`, once they are all known.
    pub fn largest_before(&self, part: u64) -> Option<Option<i64>> {
        self.before.get(usize::try_from(part).ok()?).copied()
    }

    /// The largest `elapsed_ms` of the parts known without a gap: every part not yet
    /// known comes after them, so its rows arrive after that.
    pub fn largest_known(&self) -> Option<i64> {
        self.before.last().copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn coverage_folds_parts_in_order_whatever_order_they_come_in() {
        let mut coverage = Coverage::default();
        coverage.add(2, Some(30));
        assert_eq!(coverage.known(), 0);
        assert_eq!(coverage.largest_before(1), None);
        coverage.add(0, Some(10));
        assert_eq!(coverage.known(), 1);
        assert_eq!(coverage.largest_before(1), Some(Some(10)));
        coverage.add(1, None);
        assert_eq!(coverage.known(), 3);
        assert_eq!(coverage.largest_before(0), Some(None));
        assert_eq!(coverage.largest_before(2), Some(Some(10)));
        assert_eq!(coverage.largest_before(3), Some(Some(30)));
        assert_eq!(coverage.largest_known(), Some(30));
    }

    proptest! {
        /// Cut into parts summarised in any order, the late rows are the oracle's.
        #[test]
        fn parts_classified_with_their_prefix_equal_the_oracle(
            times in proptest::collection::vec(0i64..20_000, 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..6),
            lateness in 0i64..5_000,
            seed in any::<u64>(),
        ) {
            let expected = vizflow_testing::stream::late_rows(&times, lateness);
            let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(times.len())).collect();
            bounds.extend([0, times.len()]);
            bounds.sort_unstable();
            let parts: Vec<&[i64]> = bounds.windows(2).map(|w| &times[w[0]..w[1]]).collect();
            let mut coverage = Coverage::default();
            let mut order: Vec<usize> = (0..parts.len()).collect();
            // A deterministic shuffle of the order in which the parts are summarised.
            order.sort_by_key(|i| (*i as u64).wrapping_mul(seed | 1).rotate_left(17));
            for &i in &order {
                coverage.add(i as u64, parts[i].iter().copied().max());
            }
            let mut late = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let mut largest = coverage.largest_before(i as u64).unwrap();
                let rows = Int64Array::from(part.to_vec());
                for row in classify(&rows, &mut largest, i64::MIN, lateness) {
                    late.push(bounds[i] + row.index);
                }
            }
            prop_assert_eq!(late, expected);
        }
    }

    proptest! {
        /// Null times are skipped: the late rows, and the largest time after them, are
        /// those of the other rows alone.
        #[test]
        fn null_times_are_never_late_and_move_nothing(
            times in proptest::collection::vec(proptest::option::weighted(0.8, 0i64..20_000), 0..200),
            lateness in 0i64..5_000,
            floor in prop_oneof![Just(i64::MIN), 0i64..20_000],
        ) {
            let valid: Vec<(usize, i64)> = (times.iter().enumerate())
                .filter_map(|(i, t)| t.map(|t| (i, t)))
                .collect();
            let dense = Int64Array::from_iter_values(valid.iter().map(|(_, t)| *t));
            let (mut dense_largest, mut largest) = (None, None);
            let expected: Vec<(usize, i64, i64)> = classify(&dense, &mut dense_largest, floor, lateness)
                .into_iter()
                .map(|row| (valid[row.index].0, row.elapsed_ms, row.watermark))
                .collect();
            let late = classify(&Int64Array::from(times), &mut largest, floor, lateness);
            let late: Vec<(usize, i64, i64)> =
                late.into_iter().map(|row| (row.index, row.elapsed_ms, row.watermark)).collect();
            prop_assert_eq!(late, expected);
            prop_assert_eq!(largest, dense_largest);
        }
    }

    #[test]
    fn an_explicit_floor_makes_rows_below_it_late() {
        let rows = Int64Array::from(vec![Some(5_000), None, Some(4_000), Some(9_000)]);
        let mut largest = None;
        let late = classify(&rows, &mut largest, 6_000, 100_000);
        assert_eq!(
            late.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 2],
            "rows below the producer's floor are late whatever the lateness"
        );
        assert_eq!(late[0].watermark, 6_000);
        assert_eq!(largest, Some(9_000));
    }
}
