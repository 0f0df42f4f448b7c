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
