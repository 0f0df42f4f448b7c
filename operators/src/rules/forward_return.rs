//! `forward_return`: as-of forward returns at several horizons, per symbol and date.
//!
//! Implements SEMANTICS.md, *Forward returns*: for horizon `h` seconds and price `p`,
//! the target is `elapsed_ms + 1000 h`; past the day's total trading time the return is
//! null; otherwise the future price is `p` of the last row of the same symbol and date
//! with `elapsed_ms <= target`, in event order (`elapsed_ms`, then `row_id`), and
//! `return_{h} = future / current - 1`. A null current or future price gives a null
//! return; NaN and infinities follow IEEE arithmetic. The horizon `close`
//! (SEMANTICS.md, *Cross-date returns*) targets the day's total trading time itself:
//! its future price is the symbol's last row of the date, `return_close`.
//!
//! The computation is a rule of the keyed [`crate::enrich`] operator, which brings each
//! symbol's rows of a date together in event order: every horizon is one forward-moving
//! pointer per symbol over the rows, writing the returns in order. A pipeline runs it
//! as the first rule of its enrich stage, so returns are computed on the original rows
//! (before FIFO matching expands exits) and expanded rows carry their source row's
//! returns. [`forward_returns`] runs it alone over a date's batches.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};

use crate::enrich::{EnrichError, EnrichRule, EnrichSpec, Rows, RuleOutput, enrich_owned};

/// A forward return's horizon. Its `Debug` is its `Display` (`60`, `"close"`): a
/// pipeline's hash is taken over its `Debug`, and horizons in seconds keep the hashes
/// they had as plain numbers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Horizon {
    /// `h` seconds of trading time after the row (`return_{h}`).
    Seconds(i64),
    /// The close of the row's date: the symbol's last row of the date
    /// (`return_close`).
    Close,
    /// The open of the next trading day: the symbol's first row that day
    /// (`return_next_open`). The keyed stage outputs the row's own price in its place;
    /// [`crate::next_day`] divides the next day's price by it once that day is read.
    NextOpen,
    /// The close of the next trading day: the symbol's last row that day
    /// (`return_next_close`), computed as [`Horizon::NextOpen`] is.
    NextClose,
}

impl Horizon {
    /// The output column, `return_{h}` or `return_close`.
    pub fn output(self) -> String {
        match self {
            Horizon::Seconds(h) => format!("return_{h}"),
            Horizon::Close => "return_close".to_owned(),
            Horizon::NextOpen => "return_next_open".to_owned(),
            Horizon::NextClose => "return_next_close".to_owned(),
        }
    }

    /// Whether the target is on the next trading day (`next_open`, `next_close`).
    pub fn crosses_date(self) -> bool {
        matches!(self, Horizon::NextOpen | Horizon::NextClose)
    }

    /// The target time of a row at `elapsed_ms` of a day that closes at `close_ms`
    /// (its total trading time), or `None` when it is past the close.
    #[inline(always)]
    pub fn target(self, elapsed_ms: i64, close_ms: i64) -> Option<i64> {
        match self {
            Horizon::Seconds(h) => Some(elapsed_ms + 1000 * h).filter(|t| *t <= close_ms),
            Horizon::Close => (elapsed_ms <= close_ms).then_some(close_ms),
            // Not within the date (the keyed stage does not look for it).
            Horizon::NextOpen | Horizon::NextClose => None,
        }
    }

    /// How long after a row its return may still change, in ms of trading time: `h`
    /// s, the whole day (`day_ms`) for the close, and for the next day longer than any
    /// date (never final before the date is complete).
    pub fn reach_ms(self, day_ms: i64) -> i64 {
        match self {
            Horizon::Seconds(h) => 1000 * h,
            Horizon::Close => day_ms,
            Horizon::NextOpen | Horizon::NextClose => i64::MAX / 4,
        }
    }

    /// Whether the return is null until it is final, then final (it changes once):
    /// the close's return on a date cut at `W` is the price at `W`'s, which moves on.
    pub fn changes_once(self) -> bool {
        matches!(self, Horizon::Seconds(_))
    }
}

impl std::fmt::Debug for Horizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Horizon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Horizon::Seconds(h) => write!(f, "{h}"),
            Horizon::Close => f.write_str("\"close\""),
            Horizon::NextOpen => f.write_str("\"next_open\""),
            Horizon::NextClose => f.write_str("\"next_close\""),
        }
    }
}

/// What to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardReturnSpec {
    /// The symbol column (rows are matched within a symbol).
    pub symbol: String,
    /// The price column.
    pub price: String,
    /// The horizons.
    pub horizons: Vec<Horizon>,
    /// The day's total trading time in ms (targets past it give null).
    pub day_ms: i64,
}

impl ForwardReturnSpec {
    /// The output column of a horizon, `return_{h}` or `return_close`.
    pub fn output(horizon: Horizon) -> String {
        horizon.output()
    }

    /// Whether a horizon reaches the day's close (or the next day): the keyed stage then
    /// waits for the date's end, under `[stream]` too, unless provisional results are
    /// asked for.
    pub fn reaches_the_close(&self) -> bool {
        (self.horizons.iter()).any(|h| h.reach_ms(self.day_ms) >= self.day_ms)
    }

    /// The returns as a rule of the enrich operator.
    pub fn rule(&self) -> Arc<dyn EnrichRule> {
        Arc::new(self.clone())
    }

    fn enrich_spec(&self) -> EnrichSpec {
        EnrichSpec {
            symbol: self.symbol.clone(),
            rules: vec![self.rule()],
            keep: None,
            open_in_place: None,
        }
    }
}

impl EnrichRule for ForwardReturnSpec {
    fn name(&self) -> String {
        "forward_return".to_owned()
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.price.clone()]
    }

    fn output_names(&self) -> Vec<String> {
        self.horizons.iter().map(|h| h.output()).collect()
    }

    fn outputs(&self, schema: &Schema) -> Result<Vec<Field>, EnrichError> {
        let price =
            schema
                .field_with_name(&self.price)
                .map_err(|source| EnrichError::RuleArrow {
                    rule: self.name(),
                    source,
                })?;
        if !price.data_type().is_numeric() {
            return Err(EnrichError::PriceType {
                rule: self.name(),
                column: self.price.clone(),
                data_type: price.data_type().clone(),
            });
        }
        Ok(self
            .output_names()
            .into_iter()
            .map(|name| Field::new(name, DataType::Float64, true))
            .collect())
    }

    fn forward_returns(&self) -> Option<&ForwardReturnSpec> {
        Some(self)
    }

    fn apply(&self, rows: &Rows<'_>) -> Result<RuleOutput, EnrichError> {
        let prices =
            arrow::compute::cast(&rows.columns[0], &DataType::Float64).map_err(|source| {
                EnrichError::ReturnPriceCast {
                    column: self.price.clone(),
                    source,
                }
            })?;
        let prices = prices.as_primitive::<Float64Type>();
        let columns = self
            .horizons
            .iter()
            .map(|horizon| returns(rows, prices, *horizon, self.day_ms))
            .collect();
        Ok(RuleOutput {
            source: None,
            columns,
            counts: Vec::new(),
            revisions: None,
        })
    }
}

/// The returns of one horizon over rows in event order, symbol by symbol.
fn returns(rows: &Rows<'_>, prices: &Float64Array, horizon: Horizon, day_ms: i64) -> ArrayRef {
    if horizon.crosses_date() {
        // The row's own price, for `next_day` to divide the next day's by.
        return Arc::new(prices.clone());
    }
    let n = rows.len();
    let elapsed = rows.elapsed_ms;
    let price = prices.values();
    let mut values = Vec::with_capacity(n);
    // Each row's future row, kept only when nulls have to be looked up.
    let nulls = prices.nulls().filter(|nulls| nulls.null_count() > 0);
    let mut futures = Vec::with_capacity(if nulls.is_some() { n } else { 0 });
    let mut valid = BooleanBufferBuilder::new(n);
    for run in rows.runs.windows(2) {
        let (first, end) = (run[0], run[1]);
        if first == end {
            // A symbol whose rows an earlier rule dropped.
            continue;
        }
        // The rows whose target is within the day: a prefix of the run (times ascend).
        let within =
            first + elapsed[first..end].partition_point(|e| horizon.target(*e, day_ms).is_some());
        let (mut ahead, last) = (first, end - 1);
        for i in first..within {
            let target = horizon.target(elapsed[i], day_ms).unwrap_or(day_ms);
            ahead = ahead.max(i);
            ahead = last_at_or_before(elapsed, ahead, last, target);
            values.push(price[ahead] / price[i] - 1.0);
            if nulls.is_some() {
                futures.push(ahead as u32);
            }
        }
        values.resize(end, 0.0);
        valid.append_n(within - first, true);
        valid.append_n(end - within, false);
        if nulls.is_some() {
            futures.resize(end, 0);
        }
    }
    let mut valid = valid.finish();
    if let Some(nulls) = nulls {
        // A null current or future price gives a null return.
        let both = (0..n).map(|i| nulls.is_valid(i) && nulls.is_valid(futures[i] as usize));
        valid = &valid & &arrow::buffer::BooleanBuffer::from_iter(both);
    }
    Arc::new(Float64Array::new(
        values.into(),
        Some(NullBuffer::new(valid)),
    ))
}

/// The last row from `ahead` to `last` whose time is at most `target` (`ahead`'s is),
/// `times` ascending. Usually the future row moves on by a row or two: this looks four
/// rows ahead at once, without branches (the rows at or before the target are a
/// prefix), and loops only when all four are.
#[inline(always)]
fn last_at_or_before(times: &[i64], mut ahead: usize, last: usize, target: i64) -> usize {
    loop {
        let at_or_before =
            |k: usize| usize::from(ahead + k <= last && times[(ahead + k).min(last)] <= target);
        let steps = [
            at_or_before(1),
            at_or_before(2),
            at_or_before(3),
            at_or_before(4),
        ];
        ahead += steps.iter().sum::<usize>();
        if steps[3] == 0 {
            return ahead;
        }
    }
}

/// A stretch of a date's rows in event order, symbol by symbol, for
/// [`returns_across`]: a keyed stage that releases a date's rows as a watermark passes
/// them keeps the stretches still within the longest horizon.
#[derive(Clone, Copy, Debug)]
pub struct Stretch<'a> {
    /// Where each symbol's rows start, then the end (symbols past the end have none).
    pub runs: &'a [usize],
    /// Each row's `elapsed_ms`.
    pub elapsed_ms: &'a [i64],
    /// Each row's price.
    pub prices: &'a Float64Array,
}

impl Stretch<'_> {
    /// Symbol `symbol`'s rows.
    fn rows(&self, symbol: usize) -> std::ops::Range<usize> {
        match self.runs.get(symbol + 1) {
            Some(end) => self.runs[symbol]..*end,
            None => 0..0,
        }
    }
}

/// The returns at `horizon` of the rows of `stretches[0]`, where `stretches` are
/// consecutive stretches of a date's rows (each symbol's rows in event order across
/// them) holding every row up to the targets: the same values as the whole-date
/// computation ([`ForwardReturnSpec`]'s rule) gives those rows.
pub fn returns_across(stretches: &[Stretch<'_>], horizon: Horizon, day_ms: i64) -> ArrayRef {
    let first = &stretches[0];
    if horizon.crosses_date() {
        // The row's own price, as in the whole-date computation.
        return Arc::new(first.prices.clone());
    }
    let (elapsed, price) = (first.elapsed_ms, first.prices.values());
    let n = elapsed.len();
    let mut values = Vec::with_capacity(n);
    let mut valid = BooleanBufferBuilder::new(n);
    // Prices without nulls (the usual case) need no check per row.
    let nulls = stretches.iter().any(|s| s.prices.null_count() > 0);
    // The symbol's rows in each stretch that has some: (elapsed_ms, prices, rows).
    let mut slices: Vec<(&[i64], &Float64Array, Range<usize>)> = Vec::new();
    for symbol in 0..first.runs.len().saturating_sub(1) {
        let rows = first.rows(symbol);
        if rows.is_empty() {
            continue;
        }
        slices.clear();
        slices.extend(
            (stretches.iter())
                .map(|s| (s.elapsed_ms, s.prices, s.rows(symbol)))
                .filter(|(_, _, rows)| !rows.is_empty()),
        );
        // The rows whose target is within the day: a prefix (times ascend).
        let within = rows.start
            + elapsed[rows.clone()].partition_point(|e| horizon.target(*e, day_ms).is_some());
        // The future row: row `ahead` of slice `at`; it only moves forward.
        let (mut at, mut ahead) = (0usize, rows.start);
        for i in rows.start..within {
            let target = horizon.target(elapsed[i], day_ms).unwrap_or(day_ms);
            if at == 0 {
                ahead = ahead.max(i);
            }
            loop {
                let (times, _, range) = &slices[at];
                let last = range.end - 1;
                // A stretch that ends at or before the target is passed whole (under
                // `emit_every` a target is several short stretches ahead).
                ahead = match times[last] <= target {
                    true => last,
                    false => last_at_or_before(times, ahead, last, target),
                };
                if ahead < last {
                    break;
                }
                match slices.get(at + 1) {
                    Some((times, _, next)) if times[next.start] <= target => {
                        at += 1;
                        ahead = next.start;
                    }
                    _ => break,
                }
            }
            let future = slices[at].1;
            values.push(future.values()[ahead] / price[i] - 1.0);
            if nulls {
                valid.append(first.prices.is_valid(i) && future.is_valid(ahead));
            }
        }
        if !nulls {
            valid.append_n(within - rows.start, true);
        }
        values.resize(rows.end, 0.0);
        valid.append_n(rows.end - within, false);
    }
    debug_assert_eq!(values.len(), n);
    Arc::new(Float64Array::new(
        values.into(),
        Some(NullBuffer::new(valid.finish())),
    ))
}

/// Computes the returns of every horizon for one date's rows (all of a worker's
/// symbols), returning the batches with `return_{h}` columns appended.
pub fn forward_returns(
    batches: Vec<RecordBatch>,
    spec: &ForwardReturnSpec,
) -> Result<Vec<RecordBatch>, EnrichError> {
    enrich_owned(batches, &spec.enrich_spec()).map(|(batches, _)| batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_symbol_without_rows_is_skipped() {
        // Runs [0, 0, 2]: the first symbol's rows were all dropped by an earlier rule.
        let prices = Float64Array::from(vec![1.0, 2.0]);
        let rows = Rows {
            columns: &[],
            runs: &[0, 0, 2],
            elapsed_ms: &[0, 1_000],
            row_id: &[0, 1],
        };
        let returns = returns(&rows, &prices, Horizon::Seconds(1), 10_000);
        let returns = returns.as_primitive::<Float64Type>();
        assert_eq!(returns.values().as_ref(), &[1.0, 0.0]);
        assert_eq!(returns.null_count(), 0);
    }

    /// A date's rows for `symbols` symbols, each symbol's in event order: (symbol,
    /// elapsed_ms, price), with ties, null prices and symbols that pause.
    fn date() -> impl Strategy<Value = Vec<(usize, i64, Option<f64>)>> {
        proptest::collection::vec(
            (
                0..4usize,
                0..3i64,
                proptest::option::weighted(0.9, 1.0..2.0f64),
            ),
            0..300,
        )
        .prop_map(|rows| {
            let mut clocks = [0i64; 4];
            let mut rows: Vec<_> = rows
                .into_iter()
                .map(|(symbol, step, price)| {
                    clocks[symbol] += 500 * step;
                    (symbol, clocks[symbol], price)
                })
                .collect();
            rows.sort_by_key(|(symbol, elapsed, _)| (*symbol, *elapsed));
            rows
        })
    }

    proptest! {
        /// Returns across stretches cut at any points equal the whole-date computation.
        #[test]
        fn returns_across_stretches_equal_the_whole_date(
            rows in date(),
            cuts in proptest::collection::vec(0..40_000i64, 0..5),
            horizon_s in 0..9i64,
            day_ms in 5_000..40_000i64,
        ) {
            let runs = |rows: &[(usize, i64, Option<f64>)]| {
                let mut runs = vec![0usize; 5];
                for (symbol, _, _) in rows {
                    runs[symbol + 1] += 1;
                }
                for s in 0..4 {
                    runs[s + 1] += runs[s];
                }
                runs
            };
            let prices = |rows: &[(usize, i64, Option<f64>)]| -> Float64Array {
                rows.iter().map(|r| r.2).collect()
            };
            let elapsed: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let row_id: Vec<u64> = (0..rows.len() as u64).collect();
            // 8 stands for the close.
            let horizon = if horizon_s == 8 { Horizon::Close } else { Horizon::Seconds(horizon_s) };
            let whole_runs = runs(&rows);
            let whole = returns(
                &Rows { columns: &[], runs: &whole_runs, elapsed_ms: &elapsed, row_id: &row_id },
                &prices(&rows),
                horizon,
                day_ms,
            );
            // The stretches: the rows between consecutive cuts, each in event order.
            let mut cuts = cuts;
            cuts.push(i64::MAX);
            cuts.sort_unstable();
            let mut low = i64::MIN;
            let mut stretches = Vec::new();
            for cut in cuts {
                let part: Vec<_> = rows.iter().copied().filter(|r| low <= r.1 && r.1 < cut).collect();
                low = cut;
                stretches.push(part);
            }
            let columns: Vec<_> = stretches
                .iter()
                .map(|part| (runs(part), part.iter().map(|r| r.1).collect::<Vec<_>>(), prices(part)))
                .collect();
            let views: Vec<Stretch<'_>> = columns
                .iter()
                .map(|(runs, elapsed_ms, prices)| Stretch { runs, elapsed_ms, prices })
                .collect();
            // Each stretch's returns, by (symbol, elapsed_ms) then in order, against the
            // whole date's at the same rows.
            let whole = whole.as_primitive::<Float64Type>();
            let mut expected: Vec<(usize, i64, Option<u64>)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (r.0, r.1, whole.is_valid(i).then(|| whole.value(i).to_bits())))
                .collect();
            let mut actual = Vec::new();
            for k in 0..views.len() {
                let got = returns_across(&views[k..], horizon, day_ms);
                let got = got.as_primitive::<Float64Type>();
                for (i, r) in stretches[k].iter().enumerate() {
                    actual.push((r.0, r.1, got.is_valid(i).then(|| got.value(i).to_bits())));
                }
            }
            expected.sort_by_key(|e| (e.0, e.1));
            actual.sort_by_key(|e| (e.0, e.1));
            prop_assert_eq!(actual, expected);
        }
    }
}
