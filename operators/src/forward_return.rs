//! `forward_return`: as-of forward returns at several horizons, per symbol and date.
//!
//! Implements SEMANTICS.md, *Forward returns*: for horizon `h` seconds and price `p`,
//! the target is `elapsed_ms + 1000 h`; past the day's total trading time the return is
//! null; otherwise the future price is `p` of the last row of the same symbol and date
//! with `elapsed_ms <= target`, in event order (`elapsed_ms`, then `row_id`), and
//! `return_{h} = future / current - 1`. A null current or future price gives a null
//! return; NaN and infinities follow IEEE arithmetic.
//!
//! The operator exchanges rows by symbol, keeps each date's batches, and when the date
//! is complete computes every horizon in one pass per symbol (a sort by event time, then
//! one forward-moving pointer per horizon). Output batches are the input batches with
//! `return_{h}` columns appended; no other column is copied.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use timely::dataflow::Stream;

use crate::batch::{Batch, by_symbol, per_date, symbol_ids, with_columns};
use crate::report::Diagnostics;
use crate::time::Time;

/// The name of the event-time column added by `parse_time`.
pub const ELAPSED_MS: &str = "elapsed_ms";
/// The name of the row identity column (0-based position in the date's file).
pub const ROW_ID: &str = "row_id";

/// What to compute.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardReturnSpec {
    /// The symbol column (rows are matched within a symbol).
    pub symbol: String,
    /// The price column.
    pub price: String,
    /// Horizons in seconds of trading time.
    pub horizons_s: Vec<i64>,
    /// The day's total trading time in ms (targets past it give null).
    pub day_ms: i64,
}

impl ForwardReturnSpec {
    /// The output column of a horizon, `return_{h}`.
    pub fn output(horizon_s: i64) -> String {
        format!("return_{horizon_s}")
    }
}

/// A column of every batch as `f64` arrays (cast when needed).
fn float_columns(batches: &[RecordBatch], column: &str) -> Result<Vec<Float64Array>, String> {
    batches
        .iter()
        .map(|batch| {
            let array = batch
                .column_by_name(column)
                .ok_or_else(|| format!("forward_return: price column '{column}' is missing"))?;
            let floats = arrow::compute::cast(array, &DataType::Float64).map_err(|e| {
                format!("forward_return: price column '{column}' is not numeric: {e}")
            })?;
            Ok(floats.as_primitive::<Float64Type>().clone())
        })
        .collect()
}

/// Event-order key of a row: `elapsed_ms` in the high bits, `row_id` in the low 36.
fn event_key(elapsed_ms: i64, row_id: u64) -> Result<u64, String> {
    if !(0..1 << 27).contains(&elapsed_ms) || row_id >= 1 << 36 {
        return Err(format!(
            "forward_return: event time out of range (elapsed_ms {elapsed_ms}, row_id {row_id}); \
             elapsed_ms must be in 0..2^27 and row_id below 2^36"
        ));
    }
    Ok(((elapsed_ms as u64) << 36) | row_id)
}

/// One row in event order: its event key, its row (the top bit set when its price is
/// valid) and its price. Carrying the price here means the scan reads it sequentially.
#[derive(Clone, Copy, Default)]
struct Event {
    key: u64,
    row: u32,
    price: f64,
}

const PRICE_VALID: u32 = 1 << 31;

impl Event {
    fn elapsed_ms(&self) -> i64 {
        (self.key >> 36) as i64
    }
    fn row(&self) -> usize {
        (self.row & !PRICE_VALID) as usize
    }
    fn valid(&self) -> bool {
        self.row & PRICE_VALID != 0
    }
}

/// The rows of a date grouped by symbol (a counting sort, reading every column in input
/// order) and sorted in event order within each symbol; and where each symbol's run
/// starts.
fn event_order(
    batches: &[RecordBatch],
    spec: &ForwardReturnSpec,
) -> Result<(Vec<Event>, Vec<usize>), String> {
    let (symbols, symbol_count) = symbol_ids(batches, &spec.symbol, "forward_return")?;
    if symbols.len() >= PRICE_VALID as usize {
        return Err(format!(
            "forward_return: {} rows on one worker for one date; at most 2^31 are supported",
            symbols.len()
        ));
    }
    let mut starts = vec![0usize; symbol_count + 1];
    for s in &symbols {
        starts[*s as usize + 1] += 1;
    }
    for s in 0..symbol_count {
        starts[s + 1] += starts[s];
    }
    let mut order = vec![Event::default(); symbols.len()];
    let mut cursor = starts.clone();
    let prices = float_columns(batches, &spec.price)?;
    let mut row = 0usize;
    for (batch, prices) in batches.iter().zip(&prices) {
        let missing = |name: &str| {
            format!("forward_return: column '{name}' is missing (run parse_time first)")
        };
        let elapsed = batch
            .column_by_name(ELAPSED_MS)
            .ok_or_else(|| missing(ELAPSED_MS))?;
        let row_id = batch
            .column_by_name(ROW_ID)
            .ok_or_else(|| missing(ROW_ID))?;
        let elapsed = elapsed.as_primitive::<Int64Type>();
        let row_id = row_id.as_primitive::<UInt64Type>();
        for (i, (e, r)) in elapsed
            .values()
            .iter()
            .zip(row_id.values().iter())
            .enumerate()
        {
            let s = symbols[row] as usize;
            let valid = if prices.is_valid(i) { PRICE_VALID } else { 0 };
            order[cursor[s]] = Event {
                key: event_key(*e, *r)?,
                row: row as u32 | valid,
                price: prices.values()[i],
            };
            cursor[s] += 1;
            row += 1;
        }
    }
    for s in 0..symbol_count {
        order[starts[s]..starts[s + 1]].sort_unstable_by_key(|event| event.key);
    }
    Ok((order, starts))
}

/// Computes the returns of every horizon for one date's rows (all of a worker's
/// symbols), returning the batches with `return_{h}` columns appended.
pub fn forward_returns(
    batches: Vec<RecordBatch>,
    spec: &ForwardReturnSpec,
) -> Result<Vec<RecordBatch>, String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let (order, starts) = event_order(&batches, spec)?;

    let mut outputs = Vec::with_capacity(spec.horizons_s.len());
    for horizon in &spec.horizons_s {
        let mut values = vec![0.0f64; rows];
        let mut valid = BooleanBufferBuilder::new(rows);
        valid.append_n(rows, false);
        for run in starts.windows(2) {
            let (first, end) = (run[0], run[1]);
            let mut ahead = first;
            for i in first..end {
                let target = order[i].elapsed_ms() + 1000 * horizon;
                if target > spec.day_ms {
                    continue;
                }
                ahead = ahead.max(i);
                while ahead + 1 < end && order[ahead + 1].elapsed_ms() <= target {
                    ahead += 1;
                }
                let (now, future) = (&order[i], &order[ahead]);
                if now.valid() && future.valid() {
                    values[now.row()] = future.price / now.price - 1.0;
                    valid.set_bit(now.row(), true);
                }
            }
        }
        let nulls = NullBuffer::new(valid.finish());
        outputs.push(Float64Array::new(values.into(), Some(nulls)));
    }

    let mut offset = 0;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let n = batch.num_rows();
        let columns = spec
            .horizons_s
            .iter()
            .zip(&outputs)
            .map(|(horizon, values)| {
                (
                    ForwardReturnSpec::output(*horizon),
                    Arc::new(values.slice(offset, n)) as ArrayRef,
                )
            })
            .collect();
        out.push(with_columns(&batch, columns));
        offset += n;
    }
    Ok(out)
}

/// The `forward_return` operator.
pub trait ForwardReturn<'scope> {
    /// Appends `return_{h}` for every horizon, per symbol and date (see the module docs).
    fn forward_return(
        self,
        spec: ForwardReturnSpec,
        diagnostics: Diagnostics,
    ) -> Stream<'scope, Time, Batch>;
}

impl<'scope> ForwardReturn<'scope> for Stream<'scope, Time, Batch> {
    fn forward_return(
        self,
        spec: ForwardReturnSpec,
        diagnostics: Diagnostics,
    ) -> Stream<'scope, Time, Batch> {
        let pact = by_symbol(&spec.symbol);
        per_date(
            self,
            pact,
            "ForwardReturn",
            diagnostics,
            move |_date, batches, _diagnostics| forward_returns(batches, &spec),
        )
    }
}
