//! Helpers shared by the integration tests.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use vizflow::operators::batch::with_columns;

/// The rows of `day` at `indices`, with a `row_id` column holding their positions in
/// `day` (as a file reader would number them).
pub fn rows_with_ids(day: &RecordBatch, indices: &[u32]) -> RecordBatch {
    let rows =
        arrow::compute::take_record_batch(day, &UInt32Array::from(indices.to_vec())).unwrap();
    let ids = UInt64Array::from_iter_values(indices.iter().map(|i| *i as u64));
    with_columns(
        &rows,
        vec![("row_id".to_owned(), Arc::new(ids) as ArrayRef)],
    )
}

/// SEMANTICS.md, parse_time, for the CN market and `HHMMSSmmm` timestamps, written out
/// by hand: ms since 09:30, the lunch break and the hours outside clamped.
#[allow(dead_code)] // not every test crate uses every helper
pub fn oracle_elapsed_ms(ticktime: i64) -> i64 {
    let t =
        ticktime / 10_000_000 * 3_600_000 + ticktime / 100_000 % 100 * 60_000 + ticktime % 100_000;
    let (am_open, am_close, pm_open, pm_close) = (34_200_000, 41_400_000, 46_800_000, 54_000_000);
    if t < am_open {
        0
    } else if t <= am_close {
        t - am_open
    } else if t < pm_open {
        7_200_000
    } else if t <= pm_close {
        7_200_000 + t - pm_open
    } else {
        14_400_000
    }
}

/// A timely configuration of `workers` threads in this process.
#[allow(dead_code)]
pub fn process(workers: usize) -> timely::Config {
    timely::Config {
        communication: timely::CommunicationConfig::Process(workers),
        worker: Default::default(),
    }
}
