//! Event order: a worker's rows of a date grouped by symbol (a counting sort), each
//! symbol's rows sorted by their event key (`elapsed_ms` above `row_id`).

use arrow::array::{Array, AsArray};
use arrow::buffer::ScalarBuffer;
use arrow::datatypes::{DataType, Int64Type, UInt64Type};

use super::EnrichError;
use crate::batch::{SelectedRows, for_each_row};
use crate::columns::{ELAPSED_MS, ROW_ID};

/// The low bits of an event key that hold the `row_id`; `elapsed_ms` is above them.
const ROW_ID_BITS: u32 = 36;

/// The `row_id` of a part's first selected row (0 when it has none or no `row_id`
/// column; [`event_values`] reports a missing one).
pub(super) fn first_row_id((batch, selection): &SelectedRows) -> u64 {
    let first = selection
        .as_ref()
        .map_or(Some(0), |rows| rows.values().first().map(|r| *r as usize));
    let ids = batch
        .column_by_name(ROW_ID)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>());
    match (ids, first) {
        (Some(ids), Some(row)) if row < ids.len() => ids.values()[row],
        _ => 0,
    }
}

/// A part's `elapsed_ms` and `row_id` values, checked to have no nulls among the rows
/// it selects.
pub(super) fn event_values(
    (batch, selection): &SelectedRows,
) -> Result<(&[i64], &[u64]), EnrichError> {
    let column = |column: &'static str| {
        batch
            .column_by_name(column)
            .ok_or(EnrichError::MissingEventColumn { column })
    };
    let (elapsed, ids) = (column(ELAPSED_MS)?, column(ROW_ID)?);
    let elapsed =
        elapsed
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| EnrichError::EventColumnType {
                column: ELAPSED_MS,
                data_type: elapsed.data_type().clone(),
                expected: DataType::Int64,
            })?;
    let ids = ids
        .as_primitive_opt::<UInt64Type>()
        .ok_or_else(|| EnrichError::EventColumnType {
            column: ROW_ID,
            data_type: ids.data_type().clone(),
            expected: DataType::UInt64,
        })?;
    for (name, nulls) in [(ELAPSED_MS, elapsed.nulls()), (ROW_ID, ids.nulls())] {
        let Some(nulls) = nulls else {
            continue;
        };
        let mut count = 0;
        for_each_row(batch.num_rows(), selection.as_ref(), |row| {
            count += usize::from(nulls.is_null(row));
        });
        if count > 0 {
            return Err(EnrichError::EventColumnNulls {
                column: name,
                nulls: count,
            });
        }
    }
    Ok((elapsed.values(), ids.values()))
}

/// A worker's rows of a date in event order: grouped by symbol (a counting sort), each
/// symbol's rows sorted by event key.
#[derive(Clone)]
pub(super) struct Events {
    /// Where each symbol's events start, then the end.
    pub(super) starts: Vec<usize>,
    /// Each event's input row (its index over the parts' selected rows).
    pub(super) rows: Vec<u32>,
    /// Each event's `elapsed_ms` and `row_id`.
    pub(super) times: EventTimes,
}

/// The events' times: packed in their sort keys (8 bytes an event) until a rule needs
/// them, then split into `elapsed_ms` and `row_id` (16 bytes), and the keys let go.
/// Rules run a chunk of symbols at a time when they can, so the split exists for one
/// chunk, not for the date.
#[derive(Clone)]
pub(super) enum EventTimes {
    /// `elapsed_ms` above `row_id` ([`ROW_ID_BITS`]).
    Keys(ScalarBuffer<u64>),
    /// `elapsed_ms` and `row_id`.
    Split(ScalarBuffer<i64>, ScalarBuffer<u64>),
}

impl EventTimes {
    pub(super) fn len(&self) -> usize {
        match self {
            EventTimes::Keys(keys) => keys.len(),
            EventTimes::Split(_, row_id) => row_id.len(),
        }
    }

    /// The times of events `offset..offset + len` (no copy).
    pub(super) fn slice(&self, offset: usize, len: usize) -> EventTimes {
        match self {
            EventTimes::Keys(keys) => EventTimes::Keys(keys.slice(offset, len)),
            EventTimes::Split(elapsed, row_id) => {
                EventTimes::Split(elapsed.slice(offset, len), row_id.slice(offset, len))
            }
        }
    }

    /// `elapsed_ms` and `row_id`, split from the keys the first time.
    pub(super) fn split(&mut self) -> (&[i64], &[u64]) {
        if let EventTimes::Keys(keys) = self {
            let (elapsed, row_id): (Vec<i64>, Vec<u64>) = keys
                .iter()
                .map(|key| ((key >> ROW_ID_BITS) as i64, key & ((1 << ROW_ID_BITS) - 1)))
                .unzip();
            *self = EventTimes::Split(elapsed.into(), row_id.into());
        }
        match self {
            EventTimes::Split(elapsed, row_id) => (elapsed, row_id),
            EventTimes::Keys(_) => unreachable!("split above"),
        }
    }
}

/// The events of the rows the parts select, whose symbol ids are `symbols`: each row's
/// event key (`elapsed_ms` above `row_id`, both checked to fit) goes straight to its
/// symbol's place, then each symbol's keys are sorted with their rows: 16 bytes a row
/// (symbol id, key and row), of which the keys and rows are kept.
pub(super) fn event_order(
    parts: &[SelectedRows],
    symbols: &[u32],
    symbol_count: usize,
) -> Result<Events, EnrichError> {
    let mut starts = vec![0usize; symbol_count + 1];
    for s in symbols {
        starts[*s as usize + 1] += 1;
    }
    for s in 0..symbol_count {
        starts[s + 1] += starts[s];
    }
    let mut keys = vec![0u64; symbols.len()];
    let mut rows = vec![0u32; symbols.len()];
    let mut cursor = starts.clone();
    let (mut row, mut out_of_range) = (0usize, None);
    for part in parts {
        let (elapsed, ids) = event_values(part)?;
        for_each_row(part.0.num_rows(), part.1.as_ref(), |r| {
            let (e, id) = (elapsed[r], ids[r]);
            if !(0..1 << (64 - ROW_ID_BITS - 1)).contains(&e) || id >= 1 << ROW_ID_BITS {
                out_of_range.get_or_insert((e, id));
            }
            let at = &mut cursor[symbols[row] as usize];
            keys[*at] = ((e as u64) << ROW_ID_BITS) | id;
            rows[*at] = row as u32;
            *at += 1;
            row += 1;
        });
    }
    if let Some((elapsed_ms, row_id)) = out_of_range {
        return Err(EnrichError::EventOutOfRange { elapsed_ms, row_id });
    }
    drop(cursor);
    for s in 0..symbol_count {
        let symbol = starts[s]..starts[s + 1];
        sort_events(&mut keys[symbol.clone()], &mut rows[symbol]);
    }
    Ok(Events {
        starts,
        rows,
        times: EventTimes::Keys(keys.into()),
    })
}

/// Sorts one symbol's events by key, moving each event's row with its key. They come
/// nearly sorted (in row_id order, and times mostly increase with it), so an insertion
/// sort is about one pass; past a budget of moves (input far from event order) a
/// general sort takes over.
fn sort_events(keys: &mut [u64], rows: &mut [u32]) {
    let budget = 8 * keys.len() + 64;
    let mut moves = 0;
    for i in 1..keys.len() {
        let (key, row) = (keys[i], rows[i]);
        if key >= keys[i - 1] {
            continue;
        }
        let mut j = i;
        while j > 0 && keys[j - 1] > key {
            keys[j] = keys[j - 1];
            rows[j] = rows[j - 1];
            j -= 1;
        }
        keys[j] = key;
        rows[j] = row;
        moves += i - j;
        if moves > budget {
            let mut events: Vec<(u64, u32)> =
                keys.iter().copied().zip(rows.iter().copied()).collect();
            events.sort_unstable_by_key(|(key, _)| *key);
            for (i, (key, row)) in events.into_iter().enumerate() {
                keys[i] = key;
                rows[i] = row;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_sort_equals_a_general_sort_near_order_and_far_from_it() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            let n = rng.random_range(0..2_000);
            // Keys in order with local swaps and ties of time (distinct keys), then some
            // cases reversed or shuffled, past the insertion sort's budget.
            let mut events: Vec<(u64, u32)> = (0..n as u32)
                .map(|row| (u64::from(row / 3) << ROW_ID_BITS | u64::from(row), row))
                .collect();
            for i in 0..n {
                if rng.random_bool(0.05) {
                    let j = (i + rng.random_range(1..5)).min(n - 1);
                    events.swap(i, j);
                }
            }
            match case % 4 {
                0 => events.reverse(),
                1 => {
                    for i in (1..n).rev() {
                        events.swap(i, rng.random_range(0..=i));
                    }
                }
                _ => {}
            }
            let mut expected = events.clone();
            expected.sort_unstable_by_key(|(key, _)| *key);
            let (mut keys, mut rows): (Vec<u64>, Vec<u32>) = events.into_iter().unzip();
            sort_events(&mut keys, &mut rows);
            let sorted: Vec<(u64, u32)> = keys.into_iter().zip(rows).collect();
            assert_eq!(sorted, expected, "case {case}");
        }
    }
}
