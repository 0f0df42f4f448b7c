//! The output of the kernel, [`EnrichOutput`]: an iterator of batches built as it is
//! consumed, in one of four orders ([`OutputOrder`]): input order with each input row's
//! output row where it was ([`OutputOrder::Whole`]), input order with rows expanded or
//! dropped ([`OutputOrder::Reshaped`]), event order ([`OutputOrder::Events`]), or event
//! order with the rules run a chunk of symbols at a time ([`OutputOrder::Chunks`]).

use std::collections::{BTreeMap, VecDeque};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;

use super::EnrichError;
use super::frame::{Added, Frame};
use super::plan::RulePlan;
use crate::batch::{SelectedRows, selected_len, take_rows};

/// The most rows in one output batch.
pub const OUTPUT_BATCH_ROWS: usize = 1 << 16;

/// How output rows map to input rows and to the rows the rules left.
enum OutputOrder {
    /// No rule expanded or dropped rows: input row `g` is output row `g`, and
    /// `positions[g]` is its row in the added columns.
    Whole { positions: Vec<u32> },
    /// `first[g]..first[g + 1]` are input row `g`'s output positions,
    /// `position_row[p]` is output position `p`'s current row (its row in the added
    /// columns), and `events[r]` is current row `r`'s event (its row in the added
    /// columns with a value per event).
    Reshaped {
        first: Vec<u32>,
        position_row: Vec<u32>,
        events: Vec<u32>,
    },
    /// The output is in event order: the columns in the schema's order, each sliced or
    /// gathered batch by batch (see [`EventColumn`]); `rows` are the current rows'
    /// events, `None` when they are the events themselves.
    Events {
        columns: Vec<EventColumn>,
        rows: Option<UInt32Array>,
    },
    /// The rules run a chunk of symbols at a time (see [`Chunks`]).
    Chunks(Box<Chunks>),
}

/// The output when the rules run a chunk of symbols at a time.
struct Chunks {
    /// The whole date: input columns in event order, events and runs.
    frame: Frame,
    plan: RulePlan,
    /// The rows of a chunk (a chunk has at least one symbol).
    chunk_rows: usize,
    /// The first symbol of the next chunk.
    next_symbol: usize,
    /// The output of the current chunk.
    current: Option<Box<EnrichOutput>>,
}

/// An output column in event order.
enum EventColumn {
    /// One value per output row (an added column), sliced into batches.
    Current(ArrayRef),
    /// One value per event (an input column), gathered through the current rows one
    /// output batch at a time, so no whole expanded copy is ever held.
    Events(ArrayRef),
}

/// The rows behind one output batch in input order.
struct BatchRows {
    /// The rows of the input batch.
    input: InputRows,
    /// The rows of the added columns with a value per current row (`None` when no rule
    /// added a column).
    current: Option<UInt32Array>,
    /// The rows of the added columns with a value per event (`None` when there are
    /// none).
    events: Option<UInt32Array>,
}

/// The rows of an input batch behind one output batch.
enum InputRows {
    /// A run: offset and length (sliced, not copied).
    Run(usize, usize),
    /// Any rows, repeated where a row expands.
    Indices(UInt32Array),
}

/// The output of the enrich kernel, built as it is consumed so the keyed operator can
/// pass each part downstream before building the next: in input order, one input
/// batch at a time; in event order, one output batch at a time (or, when the rules
/// run chunk by chunk, one chunk of symbols at a time).
pub struct EnrichOutput {
    /// The number of output rows, over all batches (of the current chunk, when the
    /// rules run chunk by chunk).
    rows: usize,
    /// The rules' counts (complete once the output is exhausted).
    counts: BTreeMap<String, u64>,
    /// The rows of the batches returned so far.
    emitted: usize,
    inputs: VecDeque<SelectedRows>,
    added: Vec<Added>,
    schema: SchemaRef,
    order: OutputOrder,
    /// The global row of the next input batch's first row.
    batch_start: usize,
    ready: VecDeque<RecordBatch>,
}

impl Iterator for EnrichOutput {
    type Item = Result<RecordBatch, EnrichError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = match self.order {
            OutputOrder::Chunks(_) => self.next_chunked(),
            _ => self.next_batch(),
        };
        if let Some(Ok(batch)) = &next {
            self.emitted += batch.num_rows();
        }
        next
    }
}

impl EnrichOutput {
    /// An output with no input batches or added columns yet.
    fn new(schema: SchemaRef, order: OutputOrder, rows: usize) -> Self {
        EnrichOutput {
            rows,
            counts: BTreeMap::new(),
            emitted: 0,
            inputs: VecDeque::new(),
            added: Vec::new(),
            schema,
            order,
            batch_start: 0,
            ready: VecDeque::new(),
        }
    }

    /// The output of `frame`, over which the rules have run (with these `counts`), batch
    /// by batch, in whichever order moves fewer columns (downstream operators do not
    /// depend on it):
    ///
    /// * in event order (`event_order`, decided before the rules ran by the
    ///   [`RulePlan`]): each output batch slices the added columns and gathers the
    ///   input columns (in event order) through the rows the rules left, or slices them
    ///   when no rule reshaped the rows;
    /// * otherwise in input row order: per input batch, batches of at most
    ///   [`OUTPUT_BATCH_ROWS`] rows, the input columns sliced (or gathered, where a row
    ///   expands or is dropped) and the added columns taken into that order. Each input
    ///   batch is freed once its output is built.
    ///
    /// What the rules needed and the output does not is freed first.
    pub(super) fn of_frame(
        frame: Frame,
        schema: SchemaRef,
        event_order: bool,
        counts: BTreeMap<String, u64>,
    ) -> Result<Self, EnrichError> {
        let mut output = match event_order {
            true => Self::in_event_order(frame, schema)?,
            false => Self::in_input_order(frame, schema),
        };
        output.counts = counts;
        Ok(output)
    }

    /// [`EnrichOutput::of_frame`] in event order. The frame, with the input batches if
    /// it still holds them, goes once the columns are taken.
    fn in_event_order(mut frame: Frame, schema: SchemaRef) -> Result<Self, EnrichError> {
        let mut added = std::mem::take(&mut frame.added);
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = field.name();
            let column = if let Some(values) = frame.gathered.remove(name) {
                EventColumn::Current(values)
            } else if let Some(i) = added.iter().position(|a| &a.name == name) {
                let added = added.swap_remove(i);
                match added.per_event {
                    true => EventColumn::Events(added.values),
                    false => EventColumn::Current(added.values),
                }
            } else {
                let values = frame.ordered(name)?;
                frame.event_ordered.remove(name);
                EventColumn::Events(values)
            };
            columns.push(column);
        }
        let rows = frame.len();
        let order = OutputOrder::Events {
            columns,
            rows: frame.rows.take().map(UInt32Array::from),
        };
        Ok(Self::new(schema, order, rows))
    }

    /// [`EnrichOutput::of_frame`] in input order: the output takes the input batches
    /// and the added columns.
    fn in_input_order(mut frame: Frame, schema: SchemaRef) -> Self {
        let (order, rows) = if frame.rows.is_some() {
            let input_rows = frame.input_rows();
            let total: usize = frame.inputs.iter().map(selected_len).sum();
            let (first, position_row) = output_positions(&input_rows, total);
            let rows = position_row.len();
            let order = OutputOrder::Reshaped {
                first,
                position_row,
                events: frame.rows.take().unwrap_or_default(),
            };
            (order, rows)
        } else {
            if frame.positions.is_empty() && !frame.added.is_empty() {
                frame.positions();
            }
            let positions = std::mem::take(&mut frame.positions);
            let rows = frame.inputs.iter().map(selected_len).sum();
            (OutputOrder::Whole { positions }, rows)
        };
        let mut output = Self::new(schema, order, rows);
        output.inputs = std::mem::take(&mut frame.inputs).into();
        output.added = std::mem::take(&mut frame.added);
        output
    }

    /// The output of `frame`, whose input columns are in event order, with the rules of
    /// `plan` run a chunk of symbols at a time as the output is consumed.
    pub(super) fn chunked(frame: Frame, plan: RulePlan, chunk_rows: usize) -> Self {
        let schema = plan.schema.clone();
        let chunks = Chunks {
            frame,
            plan,
            chunk_rows,
            next_symbol: 0,
            current: None,
        };
        Self::new(schema, OutputOrder::Chunks(Box::new(chunks)), 0)
    }

    /// The next batch of the current chunk; when it is done, the rules run over the
    /// next chunk of symbols (at least one symbol, `chunk_rows` rows or so).
    fn next_chunked(&mut self) -> Option<Result<RecordBatch, EnrichError>> {
        let OutputOrder::Chunks(chunks) = &mut self.order else {
            return None;
        };
        loop {
            if let Some(current) = &mut chunks.current {
                match current.next_batch() {
                    Some(next) => return Some(next),
                    None => chunks.current = None,
                }
            }
            let runs = &chunks.frame.runs;
            let symbols = runs.len() - 1;
            let start = chunks.next_symbol;
            if start >= symbols {
                return None;
            }
            let end = runs
                .partition_point(|run| *run < runs[start] + chunks.chunk_rows)
                .clamp(start + 1, symbols);
            chunks.next_symbol = end;
            let mut frame = chunks.frame.chunk(start..end);
            let plan = &chunks.plan;
            match plan.run(&mut frame, &mut self.counts).and_then(|()| {
                EnrichOutput::of_frame(frame, plan.schema.clone(), true, BTreeMap::new())
            }) {
                Ok(output) => chunks.current = Some(Box::new(output)),
                Err(error) => {
                    chunks.next_symbol = symbols;
                    return Some(Err(error));
                }
            }
        }
    }

    /// The rules' counts, summed by name (complete once the output is exhausted).
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// The number of rows of the batches returned so far.
    pub fn rows_emitted(&self) -> usize {
        self.emitted
    }

    /// The next output batch (in the orders other than by chunks).
    fn next_batch(&mut self) -> Option<Result<RecordBatch, EnrichError>> {
        match self.order {
            OutputOrder::Events { .. } => self.next_in_event_order(),
            _ => self.next_in_input_order(),
        }
    }

    /// The next output batch in event order: the added columns sliced, the input
    /// columns sliced or gathered through the current rows' events.
    fn next_in_event_order(&mut self) -> Option<Result<RecordBatch, EnrichError>> {
        let OutputOrder::Events { columns, rows } = &self.order else {
            return None;
        };
        let start = self.batch_start;
        if start >= self.rows {
            return None;
        }
        let length = OUTPUT_BATCH_ROWS.min(self.rows - start);
        self.batch_start += length;
        let events = rows.as_ref().map(|rows| rows.slice(start, length));
        let columns = columns.iter().map(|column| match (column, &events) {
            (EventColumn::Events(values), Some(events)) => {
                arrow::compute::take(values, events, None)
            }
            (EventColumn::Current(values) | EventColumn::Events(values), _) => {
                Ok(values.slice(start, length))
            }
        });
        let batch = columns
            .collect::<Result<Vec<_>, _>>()
            .and_then(|columns| RecordBatch::try_new(self.schema.clone(), columns))
            .map_err(|source| EnrichError::Output { source });
        Some(batch)
    }

    /// The next output batch in input order, building the output of the next input
    /// batch when the last one's is all returned.
    fn next_in_input_order(&mut self) -> Option<Result<RecordBatch, EnrichError>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            let (batch, selection) = self.inputs.pop_front()?;
            // Selected rows are copied out here, one input batch at a time, for the
            // input columns the output keeps.
            let input = match selection {
                Some(rows) => take_rows(&batch, &rows),
                None => batch,
            };
            match self.output_of(&input) {
                Ok(batches) => self.ready.extend(batches),
                Err(error) => {
                    self.inputs.clear();
                    return Some(Err(error));
                }
            }
        }
    }

    /// The output batches of one input batch.
    fn output_of(&mut self, input: &RecordBatch) -> Result<Vec<RecordBatch>, EnrichError> {
        let start = self.batch_start;
        self.batch_start += input.num_rows();
        let batches = match &self.order {
            OutputOrder::Events { .. } | OutputOrder::Chunks(_) => {
                unreachable!("event-order output has no input batches")
            }
            OutputOrder::Whole { positions } => self.whole_rows(positions, start, input.num_rows()),
            OutputOrder::Reshaped {
                first,
                position_row,
                events,
            } => self.reshaped_rows(first, position_row, events, start..start + input.num_rows()),
        };
        batches
            .into_iter()
            .map(|rows| self.output_batch(input, rows))
            .collect()
    }

    /// The rows behind the output batches of an input batch whose `rows` rows start at
    /// global row `start`, when no rule reshaped the rows (the current rows are the
    /// events).
    fn whole_rows(&self, positions: &[u32], start: usize, rows: usize) -> Vec<BatchRows> {
        let mut batches = Vec::new();
        for chunk in (0..rows).step_by(OUTPUT_BATCH_ROWS) {
            let rows = OUTPUT_BATCH_ROWS.min(rows - chunk);
            let added = (!self.added.is_empty()).then(|| {
                UInt32Array::from(positions[start + chunk..start + chunk + rows].to_vec())
            });
            batches.push(BatchRows {
                input: InputRows::Run(chunk, rows),
                current: added.clone(),
                events: added,
            });
        }
        batches
    }

    /// The rows behind the output batches of the input batch of global rows
    /// `batch_rows`, after a rule expanded or dropped rows.
    fn reshaped_rows(
        &self,
        first: &[u32],
        position_row: &[u32],
        events: &[u32],
        batch_rows: std::ops::Range<usize>,
    ) -> Vec<BatchRows> {
        // The row of `input` behind each of its output rows.
        let mut local_rows =
            Vec::with_capacity((first[batch_rows.end] - first[batch_rows.start]) as usize);
        for row in batch_rows.clone() {
            let copies = first[row + 1] - first[row];
            local_rows.extend(std::iter::repeat_n(
                (row - batch_rows.start) as u32,
                copies as usize,
            ));
        }
        let positions = first[batch_rows.start] as usize;
        let mut batches = Vec::new();
        for chunk_start in (0..local_rows.len()).step_by(OUTPUT_BATCH_ROWS) {
            let chunk = chunk_start..local_rows.len().min(chunk_start + OUTPUT_BATCH_ROWS);
            let rows = &local_rows[chunk.clone()];
            let current = &position_row[positions + chunk.start..positions + chunk.end];
            let per_event = self.added.iter().any(|a| a.per_event).then(|| {
                current
                    .iter()
                    .map(|r| events[*r as usize])
                    .collect::<UInt32Array>()
            });
            let added = UInt32Array::from(current.to_vec());
            // Without expansion or drops the output rows are a run of input
            // rows: slice, don't copy.
            let run = rows.windows(2).all(|w| w[1] == w[0] + 1);
            let input_rows = if run {
                InputRows::Run(rows[0] as usize, rows.len())
            } else {
                InputRows::Indices(UInt32Array::from(rows.to_vec()))
            };
            batches.push(BatchRows {
                input: input_rows,
                current: Some(added),
                events: per_event,
            });
        }
        batches
    }

    /// One output batch of `input`: its columns through `rows.input`, the added columns
    /// through `rows.current` or `rows.events`.
    fn output_batch(
        &self,
        input: &RecordBatch,
        rows: BatchRows,
    ) -> Result<RecordBatch, EnrichError> {
        let gather_error = |source: arrow::error::ArrowError| EnrichError::Output { source };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            if let Some(added) = self.added.iter().find(|a| &a.name == field.name()) {
                let indices = match added.per_event {
                    true => rows.events.as_ref(),
                    false => rows.current.as_ref(),
                };
                let indices = indices.expect("there are added columns");
                let taken = arrow::compute::take(&added.values, indices, None);
                columns.push(taken.map_err(gather_error)?);
                continue;
            }
            let column = input
                .column_by_name(field.name())
                .expect("the schema's input columns are in every batch");
            match &rows.input {
                InputRows::Run(offset, length) => columns.push(column.slice(*offset, *length)),
                InputRows::Indices(indices) => {
                    columns.push(arrow::compute::take(column, indices, None).map_err(gather_error)?)
                }
            }
        }
        RecordBatch::try_new(self.schema.clone(), columns).map_err(gather_error)
    }
}

/// Each input row's first output position (`first[g]..first[g + 1]` are input row `g`'s
/// positions, over `total` input rows) and the current row at each position, from the
/// input row behind each current row: a stable counting sort by input row, which keeps
/// an expanded row's rows in order.
fn output_positions(input_rows: &[u32], total: usize) -> (Vec<u32>, Vec<u32>) {
    let mut first = vec![0u32; total + 1];
    for row in input_rows {
        first[*row as usize + 1] += 1;
    }
    for row in 0..total {
        first[row + 1] += first[row];
    }
    let mut position_row = vec![0u32; input_rows.len()];
    let mut cursor = first.clone();
    for (k, row) in input_rows.iter().enumerate() {
        position_row[cursor[*row as usize] as usize] = k as u32;
        cursor[*row as usize] += 1;
    }
    (first, position_row)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray, UInt64Array};

    use super::*;
    use crate::columns::{ELAPSED_MS, ROW_ID};
    use crate::enrich::EnrichSpec;
    use crate::enrich::kernel::enrich_in_chunks;

    #[test]
    fn rules_run_chunk_by_chunk_as_over_the_whole_date() {
        use crate::fifo::{FifoMatch, FifoSpec};
        use crate::forward_return::{ForwardReturnSpec, Horizon};
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 3_000;
        let symbol: Vec<i64> = (0..n).map(|_| rng.random_range(0..40)).collect();
        let elapsed: Vec<i64> = (0..n)
            .map(|i| i as i64 * 37 + rng.random_range(0..200))
            .collect();
        let side: Vec<&str> = (0..n)
            .map(|_| ["B", "S", "X"][rng.random_range(0..3)])
            .collect();
        let qty: Vec<Option<i64>> = (0..n)
            .map(|_| (rng.random_range(0..20) > 0).then(|| rng.random_range(0..4) * 100))
            .collect();
        let price: Vec<f64> = (0..n).map(|_| rng.random_range(90.0..110.0)).collect();
        let day = RecordBatch::try_from_iter([
            ("ukey", Arc::new(Int64Array::from(symbol)) as ArrayRef),
            (ELAPSED_MS, Arc::new(Int64Array::from(elapsed)) as _),
            ("side", Arc::new(StringArray::from(side)) as _),
            ("qty", Arc::new(Int64Array::from(qty)) as _),
            (
                "price",
                Arc::new(arrow::array::Float64Array::from(price)) as _,
            ),
            (
                ROW_ID,
                Arc::new(UInt64Array::from_iter_values(0..n as u64)) as _,
            ),
        ])
        .unwrap();
        let returns = ForwardReturnSpec {
            symbol: "ukey".into(),
            price: "price".into(),
            horizons: vec![Horizon::Seconds(1), Horizon::Seconds(5)],
            day_ms: 120_000,
        };
        let fifo = FifoMatch::new(FifoSpec::new("side", "qty").with_price("price")).unwrap();
        // Keeping only the side of the input columns puts the output in event order,
        // where the rules run chunk by chunk.
        let spec = EnrichSpec {
            symbol: "ukey".into(),
            rules: vec![returns.rule(), Arc::new(fifo)],
            keep: Some(
                [
                    "side",
                    "return_1",
                    "return_5",
                    "matched_qty",
                    "matched_entry_id",
                ]
                .map(String::from)
                .to_vec(),
            ),
            open_in_place: None,
        };
        let run = |chunk_rows: usize| {
            let parts = vec![
                (day.slice(0, 1_700), None),
                (day.slice(1_700, n - 1_700), None),
            ];
            let mut output = enrich_in_chunks(parts, &spec, chunk_rows).unwrap();
            assert!(matches!(output.order, OutputOrder::Chunks(_)));
            let batches: Vec<RecordBatch> = output.by_ref().collect::<Result<_, _>>().unwrap();
            let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            (all, output.counts().clone(), output.rows_emitted())
        };
        let whole = run(usize::MAX);
        assert!(whole.0.num_rows() > n, "FIFO splits some exits");
        for chunk_rows in [1, 50, 700] {
            assert_eq!(run(chunk_rows), whole, "chunks of {chunk_rows} rows");
        }
    }
}
