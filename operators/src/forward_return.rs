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

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::batch::{Batch, by_symbol, with_columns};
use crate::report::Diagnostics;
use crate::time::{Time, date_end, date_key_of};

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

/// Dense per-row symbol ids, so rows can be grouped by symbol with a counting sort.
fn symbol_ids(batches: &[RecordBatch], column: &str) -> Result<(Vec<u32>, usize), String> {
    let mut ids = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let mut ints: FxHashMap<i64, u32> = FxHashMap::default();
    let mut strings: FxHashMap<String, u32> = FxHashMap::default();
    let mut null_id = None;
    let mut next = 0u32;
    let mut fresh = || {
        next += 1;
        next - 1
    };
    for batch in batches {
        let values = batch
            .column_by_name(column)
            .ok_or_else(|| format!("forward_return: symbol column '{column}' is missing"))?;
        match values.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Dictionary(_, _)
            | DataType::Utf8View => {
                let utf8 =
                    arrow::compute::cast(values, &DataType::Utf8).map_err(|e| e.to_string())?;
                let utf8 = utf8.as_string::<i32>();
                for i in 0..utf8.len() {
                    let id = if utf8.is_null(i) {
                        *null_id.get_or_insert_with(&mut fresh)
                    } else {
                        match strings.get(utf8.value(i)) {
                            Some(id) => *id,
                            None => *strings
                                .entry(utf8.value(i).to_owned())
                                .or_insert_with(&mut fresh),
                        }
                    };
                    ids.push(id);
                }
            }
            _ => {
                let int64 = arrow::compute::cast(values, &DataType::Int64).map_err(|e| {
                    format!("forward_return: symbol column '{column}' must hold integers or strings: {e}")
                })?;
                let int64 = int64.as_primitive::<Int64Type>();
                for (i, value) in int64.values().iter().enumerate() {
                    let id = if int64.is_null(i) {
                        *null_id.get_or_insert_with(&mut fresh)
                    } else {
                        *ints.entry(*value).or_insert_with(&mut fresh)
                    };
                    ids.push(id);
                }
            }
        }
    }
    Ok((ids, next as usize))
}

/// Concatenates a column of every batch as `f64` values plus validity.
fn float_column(batches: &[RecordBatch], column: &str) -> Result<(Vec<f64>, Vec<bool>), String> {
    let mut values = Vec::new();
    let mut valid = Vec::new();
    for batch in batches {
        let array = batch
            .column_by_name(column)
            .ok_or_else(|| format!("forward_return: price column '{column}' is missing"))?;
        let floats = arrow::compute::cast(array, &DataType::Float64)
            .map_err(|e| format!("forward_return: price column '{column}' is not numeric: {e}"))?;
        let floats = floats.as_primitive::<Float64Type>();
        values.extend_from_slice(floats.values());
        valid.extend((0..floats.len()).map(|i| floats.is_valid(i)));
    }
    Ok((values, valid))
}

/// Event-order keys: `elapsed_ms` in the high bits, `row_id` in the low 36 bits.
fn event_keys(batches: &[RecordBatch]) -> Result<Vec<u64>, String> {
    let mut keys = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
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
        for (e, r) in elapsed.values().iter().zip(row_id.values().iter()) {
            if *e < 0 || *e >= 1 << 27 || *r >= 1 << 36 {
                return Err(format!(
                    "forward_return: event time out of range (elapsed_ms {e}, row_id {r}); \
                     elapsed_ms must be in 0..2^27 and row_id below 2^36"
                ));
            }
            keys.push(((*e as u64) << 36) | r);
        }
    }
    Ok(keys)
}

/// Computes the returns of every horizon for one date's rows (all of a worker's
/// symbols), returning the batches with `return_{h}` columns appended.
pub fn forward_returns(
    batches: Vec<RecordBatch>,
    spec: &ForwardReturnSpec,
) -> Result<Vec<RecordBatch>, String> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let (symbols, symbol_count) = symbol_ids(&batches, &spec.symbol)?;
    let (prices, price_valid) = float_column(&batches, &spec.price)?;
    let keys = event_keys(&batches)?;

    // Counting sort by symbol, then event order within each symbol.
    let mut starts = vec![0usize; symbol_count + 1];
    for s in &symbols {
        starts[*s as usize + 1] += 1;
    }
    for s in 0..symbol_count {
        starts[s + 1] += starts[s];
    }
    let mut order: Vec<(u64, u32)> = vec![(0, 0); rows];
    let mut cursor = starts.clone();
    for (row, s) in symbols.iter().enumerate() {
        order[cursor[*s as usize]] = (keys[row], row as u32);
        cursor[*s as usize] += 1;
    }
    for s in 0..symbol_count {
        order[starts[s]..starts[s + 1]].sort_unstable_by_key(|(key, _)| *key);
    }

    let horizons = spec.horizons_s.len();
    let mut returns = vec![vec![f64::NAN; rows]; horizons];
    let mut valid = vec![vec![false; rows]; horizons];
    for s in 0..symbol_count {
        let run = &order[starts[s]..starts[s + 1]];
        for (h, horizon) in spec.horizons_s.iter().enumerate() {
            let mut ahead = 0usize;
            for (i, (key, row)) in run.iter().enumerate() {
                let target = (key >> 36) as i64 + 1000 * horizon;
                if target > spec.day_ms {
                    continue;
                }
                ahead = ahead.max(i);
                while ahead + 1 < run.len() && (run[ahead + 1].0 >> 36) as i64 <= target {
                    ahead += 1;
                }
                let (row, future) = (*row as usize, run[ahead].1 as usize);
                if price_valid[row] && price_valid[future] {
                    returns[h][row] = prices[future] / prices[row] - 1.0;
                    valid[h][row] = true;
                }
            }
        }
    }

    let mut offset = 0;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let n = batch.num_rows();
        let columns = spec
            .horizons_s
            .iter()
            .enumerate()
            .map(|(h, horizon)| {
                let nulls = NullBuffer::from(&valid[h][offset..offset + n]);
                let values =
                    Float64Array::new(returns[h][offset..offset + n].to_vec().into(), Some(nulls));
                (
                    ForwardReturnSpec::output(*horizon),
                    Arc::new(values) as ArrayRef,
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
        self.unary_frontier::<CapacityContainerBuilder<Batch>, _, _, _>(
            pact,
            "ForwardReturn",
            move |_cap, _info| {
                // Each date's rows, held with a capability at the date's earliest time.
                let mut pending: BTreeMap<u32, (Capability<Time>, Vec<RecordBatch>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_time(|time, data| {
                        let date_key = date_key_of(*time.time());
                        let entry = pending
                            .entry(date_key)
                            .or_insert_with(|| (time.retain(0), Vec::new()));
                        if time.time() < entry.0.time() {
                            entry.0 = time.retain(0);
                        }
                        entry.1.extend(data.filter_map(Batch::take));
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(&date_end(*entry.key())) {
                            break;
                        }
                        let (date_key, (capability, batches)) = entry.remove_entry();
                        match forward_returns(batches, &spec) {
                            Ok(out) => {
                                let mut session = output.session(&capability);
                                for batch in out {
                                    session.give_container(&mut Batch::new(batch));
                                }
                            }
                            Err(message) => diagnostics.error(date_key, message),
                        }
                    }
                }
            },
        )
    }
}
