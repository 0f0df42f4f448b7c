//! A worker's arrivals when the pipeline streams (`[stream]`): each part of a date's
//! rows (a part of its file, or a pushed batch) is mapped by the stages before the
//! keyed stage as it arrives, summarised (its largest `elapsed_ms`) to every worker,
//! and held until every earlier part's summary is in. Then its late rows are found
//! ([`vizflow_operators::watermark`]) and the others enter the dataflow, and the
//! worker's input moves up to the watermark, so that the operators downstream see the
//! date's frontier advance while it is being read.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::datatypes::{Int64Type, UInt64Type};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline as PipelinePact;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use vizflow_operators::batch::{Batch, SelectedRows, selected_len, take_rows};
use vizflow_operators::columns::{ELAPSED_MS, ROW_ID};
use vizflow_operators::report::Diagnostics;
use vizflow_operators::time::{self, Time};
use vizflow_operators::watermark::{Coverage, LatePolicy, StreamSpec, classify, watermark};

use super::worker::RowInput;

/// One stage's work on a batch as it arrives: the rows out, with the rows of them that
/// go on when not all do (a selection, read through by the exchange by symbol).
pub(super) type StageFn =
    Box<dyn FnMut(u32, RecordBatch, &Diagnostics) -> Result<SelectedRows, String>>;

/// A part's summary: its date, its source, its number in the source's arrival order of
/// the date and its largest `elapsed_ms`.
type Summary = (u32, u32, u64, Option<i64>);

/// The input of the summaries dataflow.
pub(super) type SummaryInput = InputHandle<Time, CapacityContainerBuilder<Vec<Summary>>>;

/// What every worker knows of each open date's parts, by date and source.
type Coverages = Rc<RefCell<BTreeMap<(u32, u32), Coverage>>>;

/// A part waiting for the summaries of the parts before it.
struct HeldPart {
    date_key: u32,
    part: u64,
    /// The producer's explicit watermark when the part arrived (`i64::MIN`: none).
    floor: i64,
    batches: Vec<SelectedRows>,
}

/// A worker's arrivals (see the module docs).
pub(super) struct Arrivals {
    spec: StreamSpec,
    /// The arrival order this worker's parts are numbered in (see [`Arrivals::new`]).
    source: u32,
    /// The stages before the keyed stage, run on each batch as it arrives.
    stages: Vec<(&'static str, StageFn)>,
    held: VecDeque<HeldPart>,
    coverage: Coverages,
    /// The producer's explicit watermark of the current date.
    floor: i64,
    floor_date: u32,
}

impl Arrivals {
    /// Builds the summaries dataflow on `worker` (every part's summary goes to every
    /// worker) and the arrivals of a pipeline that streams under `spec`. The worker's
    /// parts are numbered in the arrival order of `source`: a row is late against the
    /// rows of the same source before it, and the worker's input follows that source's
    /// watermark (every process reading shared files numbers every part alike, source
    /// 0; processes fed separately number their own, each its own source).
    pub(super) fn new(
        worker: &mut timely::worker::Worker,
        spec: StreamSpec,
        source: u32,
        stages: Vec<(&'static str, StageFn)>,
    ) -> (Arrivals, SummaryInput, ProbeHandle<Time>) {
        let coverage: Coverages = Rc::default();
        let mut input = InputHandle::new();
        let probe = ProbeHandle::new();
        let known = coverage.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .broadcast()
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    PipelinePact,
                    "Summaries",
                    move |_, _| {
                        move |input, _output| {
                            input.for_each_time(|_time, data| {
                                let mut known = known.borrow_mut();
                                for summaries in data {
                                    for (date_key, source, part, largest) in summaries.drain(..) {
                                        let key = (date_key, source);
                                        known.entry(key).or_default().add(part, largest);
                                    }
                                }
                            });
                        }
                    },
                )
                .probe_with(&probe);
        });
        let arrivals = Arrivals {
            spec,
            source,
            stages,
            held: VecDeque::new(),
            coverage,
            floor: i64::MIN,
            floor_date: 0,
        };
        (arrivals, input, probe)
    }

    /// Part `part` of date `date_key` arrives: it is mapped by the stages before the
    /// keyed stage, summarised to every worker and held.
    pub(super) fn arrive(
        &mut self,
        date_key: u32,
        part: u64,
        batches: Vec<RecordBatch>,
        summaries: &mut SummaryInput,
        diagnostics: &Diagnostics,
    ) {
        let mut mapped = Vec::with_capacity(batches.len());
        let mut largest: Option<i64> = None;
        for batch in batches {
            let mut batch = Some((batch, None));
            for (name, stage) in &mut self.stages {
                let Some((rows, selection)) = batch.take() else {
                    break;
                };
                // A stage reads every row of its batch: a selection is copied out first.
                let rows = match selection {
                    Some(selection) => take_rows(&rows, &selection),
                    None => rows,
                };
                let started = std::time::Instant::now();
                let result = stage(date_key, rows, diagnostics);
                diagnostics.time(date_key, name, started);
                match result {
                    Ok(out) if selected_len(&out) > 0 => batch = Some(out),
                    Ok(_) => {}
                    Err(error) => diagnostics.error(date_key, error),
                }
            }
            let Some((batch, selection)) = batch else {
                continue;
            };
            if let Some(elapsed) = batch.column_by_name(ELAPSED_MS) {
                let elapsed = elapsed.as_primitive::<Int64Type>();
                let max = match &selection {
                    None => arrow::compute::max(elapsed),
                    Some(rows) => (rows.values().iter())
                        .filter(|row| elapsed.is_valid(**row as usize))
                        .map(|row| elapsed.value(*row as usize))
                        .max(),
                };
                largest = largest.max(max);
            }
            mapped.push((batch, selection));
        }
        if summaries.time() < &time::date_start(date_key) {
            summaries.advance_to(time::date_start(date_key));
        }
        summaries.send((date_key, self.source, part, largest));
        // Delivered now, not when the input's buffer fills: workers wait for it.
        summaries.flush();
        self.held.push_back(HeldPart {
            date_key,
            part,
            floor: self.floor_of(date_key),
            batches: mapped,
        });
    }

    /// The producer moves date `date_key`'s watermark to at least `elapsed_ms`: rows
    /// that arrive after this below it are late.
    pub(super) fn raise_floor(&mut self, date_key: u32, elapsed_ms: i64) {
        if self.floor_date != date_key {
            (self.floor_date, self.floor) = (date_key, i64::MIN);
        }
        self.floor = self.floor.max(elapsed_ms);
    }

    /// The producer's explicit watermark of date `date_key` (`i64::MIN`: none).
    fn floor_of(&self, date_key: u32) -> i64 {
        if self.floor_date == date_key {
            self.floor
        } else {
            i64::MIN
        }
    }

    /// True while a part of a date before `time`'s is held: the input must not move to
    /// `time` yet.
    pub(super) fn holds_before(&self, time: Time) -> bool {
        self.held
            .front()
            .is_some_and(|part| time > time::date_end(part.date_key))
    }

    /// Lets the held parts whose earlier parts are all summarised into the dataflow
    /// (their late rows dropped or failing the date), then moves the input up to the
    /// watermark.
    pub(super) fn release(&mut self, input: &mut RowInput, diagnostics: &Diagnostics) {
        let coverage = self.coverage.clone();
        let coverage = coverage.borrow();
        while let Some(part) = self.held.front() {
            let known = coverage.get(&(part.date_key, self.source));
            let Some(before) = known.and_then(|c| c.largest_before(part.part)) else {
                break;
            };
            let part = self.held.pop_front().expect("a front part");
            self.send(part, before, input, diagnostics);
        }
        let date_key = time::date_key_of(*input.time());
        if let Some(known) = coverage.get(&(date_key, self.source)) {
            let lateness = self.spec.lateness_ms;
            let prefix = watermark(known.largest_known(), i64::MIN, lateness);
            let floor = self.floor_of(date_key);
            // A held part's rows enter no earlier than its own watermark, at least the
            // prefix's (every part not yet known comes after it).
            let held = self
                .held
                .iter()
                .filter(|p| p.date_key == date_key)
                .map(|p| prefix.max(p.floor))
                .min();
            let to = prefix.max(floor).min(held.unwrap_or(i64::MAX));
            if to > 0 {
                let to = time::pack(date_key, time::bucket_for_elapsed(to));
                if to > *input.time() && to <= time::date_end(date_key) {
                    input.advance_to(to);
                }
            }
        }
        drop(coverage);
        // Dates the input has left are done with.
        let current = time::date_key_of(*input.time());
        let oldest_held = self.held.front().map_or(current, |p| p.date_key);
        self.coverage
            .borrow_mut()
            .retain(|(date, _), _| *date >= current.min(oldest_held));
    }

    /// Classifies a part whose earlier parts' largest `elapsed_ms` is `before` and sends
    /// its on-time rows.
    fn send(
        &self,
        part: HeldPart,
        before: Option<i64>,
        input: &mut RowInput,
        diagnostics: &Diagnostics,
    ) {
        let date_key = part.date_key;
        let mut largest = before;
        for (batch, selection) in part.batches {
            let Some(elapsed) = batch.column_by_name(ELAPSED_MS) else {
                input.send_batch(&mut batch_of(batch, selection));
                continue;
            };
            let elapsed = elapsed.as_primitive::<Int64Type>();
            // The selected rows' times, in order: the late rows are found among them.
            let selected = match &selection {
                Some(rows) => match arrow::compute::take(elapsed, rows, None) {
                    Ok(times) => Some(times.as_primitive::<Int64Type>().clone()),
                    Err(error) => {
                        diagnostics.error(date_key, format!("stream: {error}"));
                        continue;
                    }
                },
                None => None,
            };
            let times = selected.as_ref().unwrap_or(elapsed);
            let late = classify(times, &mut largest, part.floor, self.spec.lateness_ms);
            if late.is_empty() {
                input.send_batch(&mut batch_of(batch, selection));
                continue;
            }
            // The row of the batch that the `index`-th selected row is.
            let row_of = |index: usize| {
                selection
                    .as_ref()
                    .map_or(index, |s| s.value(index) as usize)
            };
            let row_ids = batch
                .column_by_name(ROW_ID)
                .map(|c| c.as_primitive::<UInt64Type>().clone());
            let row_id = |index: usize| {
                let row = row_of(index);
                row_ids.as_ref().map_or(row as u64, |ids| ids.value(row))
            };
            match self.spec.late {
                LatePolicy::Error => {
                    let first = &late[0];
                    diagnostics.error(date_key, first.error(row_id(first.index), &self.spec));
                }
                LatePolicy::Drop => {
                    let ids: Vec<u64> = late.iter().map(|row| row_id(row.index)).collect();
                    diagnostics.late_rows(date_key, &ids);
                    let mut keep = vec![true; times.len()];
                    for row in &late {
                        keep[row.index] = false;
                    }
                    let kept = (0..times.len())
                        .filter(|i| keep[*i])
                        .map(|i| row_of(i) as u32);
                    let kept = UInt32Array::from_iter_values(kept);
                    if !kept.is_empty() {
                        input.send_batch(&mut Batch::selected(batch, kept));
                    }
                }
            }
        }
    }
}

/// A batch to send, with its selection.
fn batch_of(batch: RecordBatch, selection: Option<UInt32Array>) -> Batch {
    match selection {
        Some(rows) => Batch::selected(batch, rows),
        None => Batch::new(batch),
    }
}
