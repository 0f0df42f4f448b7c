//! The embedding API: a running dataflow that a caller feeds with batches and time.
//!
//! An [`Engine`] starts the timely workers of one process and builds the pipeline's
//! dataflow on each. The caller then, date by date in calendar order,
//! [begins a date](Engine::begin_date), [pushes](Engine::push) record batches of that
//! date in any order and any sizes, optionally [advances](Engine::advance_within_date)
//! the trading-time watermark, and receives one [`DateResult`] per date once the
//! date is complete. Reading files goes through the same path:
//! [`Engine::push_file_part`] has a worker decode a part of a file and feed it into the
//! same input as pushed batches.
//!
//! ```text
//! push / push_file_part ──> input ─> derive ─> parse_time ─> derive (timed columns)
//!     ─> [exchange by symbol] enrich (forward returns, then the [[enrich]] rules)
//!     ─> derive (late columns) ─> bin
//!     ─> aggregate (differential) ─> DateResult per date
//! ```
//!
//! Time model (see `vizflow_operators::time`): every batch is sent at `(date, bucket)`;
//! operators use each row's exact `elapsed_ms` and `row_id`, so the results do not
//! depend on batch sizes, arrival order or the number of workers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::Thread;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use crossbeam_channel::{Receiver, Sender};
use timely::dataflow::channels::pact::Pipeline as PipelinePact;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use vizflow_operators::aggregate::Aggregate;
use vizflow_operators::batch::{Batch, with_columns};
use vizflow_operators::bin::Bin;
use vizflow_operators::derive::Derive;
use vizflow_operators::enrich::Enrich;
use vizflow_operators::forward_return::ROW_ID;
use vizflow_operators::parse_time::ParseTime;
use vizflow_operators::report::{DateReport, Diagnostics};
use vizflow_operators::time::{self, Time};

use crate::config::BoundPipeline;
use crate::io::DateFile;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The timely workers could not start.
    #[error("cannot start the dataflow workers: {0}")]
    Start(String),
    /// Dates must be fed in increasing order.
    #[error("date {date} was begun after {current}; feed dates in increasing order")]
    DateOrder {
        /// The date asked for.
        date: NaiveDate,
        /// The current date.
        current: NaiveDate,
    },
    /// A batch was pushed before any date was begun.
    #[error("push called before begin_date; begin a date first")]
    NoDate,
    /// A pushed batch lacks a column the pipeline reads.
    #[error("pushed batch for {date}: {message}")]
    Schema {
        /// The date.
        date: NaiveDate,
        /// What is wrong.
        message: String,
    },
    /// The workers stopped (a worker failed); the run cannot go on.
    #[error("the dataflow workers stopped unexpectedly")]
    Stopped,
}

/// The outcome of one date.
#[derive(Debug)]
pub struct DateResult {
    /// The date.
    pub date: NaiveDate,
    /// The partial, or the errors that failed the date.
    pub partial: Result<RecordBatch, Vec<String>>,
    /// The date's counters (and errors).
    pub report: DateReport,
}

/// What the caller tells a worker.
enum Command {
    Push(RecordBatch),
    Read {
        file: Arc<DateFile>,
        part: usize,
        columns: Arc<Vec<String>>,
        batch_rows: usize,
    },
    Advance(Time),
}

/// What workers tell the caller.
enum Event {
    Partial(u32, RecordBatch),
    Frontier { worker: usize, time: Option<Time> },
}

struct Feed {
    commands: Sender<Command>,
    thread: Thread,
}

/// A running pipeline; see the module docs.
pub struct Engine {
    feeds: Vec<Feed>,
    events: Receiver<Event>,
    guards: Option<timely::communication::WorkerGuards<()>>,
    diagnostics: Diagnostics,
    output_schema: arrow::datatypes::SchemaRef,
    read_columns: Vec<String>,
    current: Option<u32>,
    time: Time,
    next_row_id: u64,
    next_worker: usize,
    /// Dates begun and not yet returned, with their partial once it arrived.
    open: BTreeMap<u32, Option<RecordBatch>>,
    frontiers: Vec<Option<Time>>,
}

impl Engine {
    /// Starts `workers` worker threads in this process.
    pub fn start(pipeline: BoundPipeline, workers: usize) -> Result<Engine, EngineError> {
        let communication = if workers > 1 {
            timely::CommunicationConfig::Process(workers)
        } else {
            timely::CommunicationConfig::Thread
        };
        Self::start_with(
            pipeline,
            timely::Config {
                communication,
                worker: Default::default(),
            },
        )
    }

    /// Starts the workers with an explicit timely configuration, e.g.
    /// `CommunicationConfig::ProcessBinary(n)` to serialize every exchanged batch.
    pub fn start_with(
        pipeline: BoundPipeline,
        config: timely::Config,
    ) -> Result<Engine, EngineError> {
        let diagnostics = Diagnostics::default();
        let (event_tx, events) = crossbeam_channel::unbounded();
        let (feed_tx, feed_rx) = crossbeam_channel::unbounded::<(usize, Feed)>();
        let pipeline = Arc::new(pipeline);
        let worker_diagnostics = diagnostics.clone();
        let worker_pipeline = pipeline.clone();
        let guards = timely::execute(config, move |worker| {
            let (commands_tx, commands) = crossbeam_channel::unbounded();
            let index = worker.index();
            let feed = Feed {
                commands: commands_tx,
                thread: std::thread::current(),
            };
            if feed_tx.send((index, feed)).is_err() {
                return;
            }
            run_worker(
                worker,
                &worker_pipeline,
                &worker_diagnostics,
                commands,
                event_tx.clone(),
            );
        })
        .map_err(EngineError::Start)?;
        let mut feeds: Vec<(usize, Feed)> = feed_rx.iter().take(guards.guards().len()).collect();
        feeds.sort_by_key(|(index, _)| *index);
        let feeds: Vec<Feed> = feeds.into_iter().map(|(_, f)| f).collect();
        let frontiers = vec![Some(0); feeds.len()];
        Ok(Engine {
            feeds,
            events,
            guards: Some(guards),
            diagnostics,
            output_schema: pipeline.output_schema(),
            read_columns: pipeline.read.clone(),
            current: None,
            time: 0,
            next_row_id: 0,
            next_worker: 0,
            open: BTreeMap::new(),
            frontiers,
        })
    }

    /// The number of workers in this process.
    pub fn workers(&self) -> usize {
        self.feeds.len()
    }

    /// The diagnostics shared with the workers.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    fn send(&self, worker: usize, command: Command) -> Result<(), EngineError> {
        let feed = &self.feeds[worker];
        feed.commands
            .send(command)
            .map_err(|_| EngineError::Stopped)?;
        feed.thread.unpark();
        Ok(())
    }

    fn advance(&mut self, time: Time) -> Result<(), EngineError> {
        if time > self.time {
            self.time = time;
            for worker in 0..self.feeds.len() {
                self.send(worker, Command::Advance(time))?;
            }
        }
        Ok(())
    }

    /// Starts feeding `date`. Dates must increase; the previous date is complete once
    /// this returns, and its result follows from [`Engine::next_result`].
    pub fn begin_date(&mut self, date: NaiveDate) -> Result<(), EngineError> {
        let key = time::date_key(date);
        if let Some(current) = self.current
            && key <= current
        {
            return Err(EngineError::DateOrder {
                date,
                current: time::date_of_key(current),
            });
        }
        self.advance(time::date_start(key))?;
        self.current = Some(key);
        self.next_row_id = 0;
        self.open.insert(key, None);
        Ok(())
    }

    /// Says that no row of the current date earlier than `elapsed_ms` of trading time
    /// will be pushed any more (a live feed's watermark). Optional: results are the
    /// same without it.
    pub fn advance_within_date(&mut self, elapsed_ms: i64) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        self.advance(time::pack(key, time::bucket_for_elapsed(elapsed_ms)))
    }

    /// Pushes rows of the current date. The batch needs the columns the pipeline reads
    /// (others are ignored). A `row_id` column (the row's position in the date's file)
    /// is used when present; otherwise rows are numbered in push order.
    pub fn push(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        let date = time::date_of_key(key);
        let schema = batch.schema();
        let mut indices = Vec::with_capacity(self.read_columns.len() + 1);
        for column in &self.read_columns {
            let index = schema.index_of(column).map_err(|_| EngineError::Schema {
                date,
                message: format!(
                    "column '{column}' is missing; the pipeline reads {}",
                    self.read_columns.join(", ")
                ),
            })?;
            indices.push(index);
        }
        let rows = batch.num_rows();
        let row_ids: ArrayRef = match schema.index_of(ROW_ID) {
            Ok(i) => arrow::compute::cast(batch.column(i), &DataType::UInt64).map_err(|e| {
                EngineError::Schema {
                    date,
                    message: format!("row_id column: {e}"),
                }
            })?,
            Err(_) => {
                let start = self.next_row_id;
                self.next_row_id += rows as u64;
                Arc::new(UInt64Array::from_iter_values(start..start + rows as u64))
            }
        };
        if row_ids.null_count() > 0 {
            return Err(EngineError::Schema {
                date,
                message: "row_id column has nulls".into(),
            });
        }
        let projected = batch.project(&indices).map_err(|e| EngineError::Schema {
            date,
            message: e.to_string(),
        })?;
        let batch = with_columns(&projected, vec![(ROW_ID.to_owned(), row_ids)]);
        self.diagnostics.add(key, "rows_read", rows as u64);
        let worker = self.next_worker;
        self.next_worker = (self.next_worker + 1) % self.feeds.len();
        self.send(worker, Command::Push(batch))
    }

    /// Has a worker read part `part` of `file` (rows of the current date) and feed it
    /// in as if pushed, with `row_id` = the row's position in the file.
    pub fn push_file_part(
        &mut self,
        file: Arc<DateFile>,
        part: usize,
        batch_rows: usize,
    ) -> Result<(), EngineError> {
        self.current.ok_or(EngineError::NoDate)?;
        let worker = part % self.feeds.len();
        let columns = Arc::new(self.read_columns.clone());
        self.send(
            worker,
            Command::Read {
                file,
                part,
                columns,
                batch_rows,
            },
        )
    }

    /// Waits for the next completed date. Returns `None` when no begun date is pending.
    /// A date completes once a later date is begun or the engine is finished.
    pub fn next_result(&mut self) -> Result<Option<DateResult>, EngineError> {
        loop {
            if let Some(result) = self.completed() {
                return Ok(Some(result));
            }
            let Some(first) = self.open.keys().next().copied() else {
                return Ok(None);
            };
            if self.current == Some(first) && self.time <= time::date_end(first) && !self.closed() {
                return Ok(None); // the current date is still being fed
            }
            match self.events.recv() {
                Ok(Event::Partial(date_key, batch)) => {
                    self.open.insert(date_key, Some(batch));
                }
                Ok(Event::Frontier { worker, time }) => self.frontiers[worker] = time,
                Err(_) => return Err(EngineError::Stopped),
            }
        }
    }

    fn closed(&self) -> bool {
        self.time == Time::MAX
    }

    /// The earliest open date, if every worker's frontier is past it.
    fn completed(&mut self) -> Option<DateResult> {
        let (&date_key, _) = self.open.first_key_value()?;
        let done = self
            .frontiers
            .iter()
            .all(|f| f.is_none_or(|t| t > time::date_end(date_key)));
        if !done {
            return None;
        }
        let partial = self.open.remove(&date_key).flatten();
        let report = self.diagnostics.take(date_key);
        let partial = if report.errors.is_empty() {
            Ok(partial.unwrap_or_else(|| RecordBatch::new_empty(self.output_schema.clone())))
        } else {
            Err(report.errors.clone())
        };
        Some(DateResult {
            date: time::date_of_key(date_key),
            partial,
            report,
        })
    }

    /// Closes the input, waits for every remaining date, and stops the workers.
    pub fn finish(mut self) -> Result<Vec<DateResult>, EngineError> {
        self.advance(Time::MAX)?;
        let mut results = Vec::new();
        while let Some(result) = self.next_result()? {
            results.push(result);
        }
        drop(std::mem::take(&mut self.feeds)); // workers see the channel close and exit
        if let Some(guards) = self.guards.take() {
            for result in guards.join() {
                result.map_err(|_| EngineError::Stopped)?;
            }
        }
        Ok(results)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Disconnecting the command channels lets the workers finish; the guards join.
        self.feeds.clear();
    }
}

/// One worker: builds the dataflow, then feeds commands into it until the engine hangs up.
fn run_worker(
    worker: &mut timely::worker::Worker,
    pipeline: &BoundPipeline,
    diagnostics: &Diagnostics,
    commands: Receiver<Command>,
    events: Sender<Event>,
) {
    let index = worker.index();
    let mut input: InputHandle<Time, timely::container::CapacityContainerBuilder<Batch>> =
        InputHandle::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<Time, _, _>(|scope| {
        let rows = scope.input_from(&mut input);
        let mut rows = rows.derive(pipeline.derive.clone(), diagnostics.clone());
        rows = rows.parse_time(pipeline.parse_time.clone(), diagnostics.clone());
        if let Some(spec) = &pipeline.timed_derive {
            rows = rows.derive(spec.clone(), diagnostics.clone());
        }
        if let Some(spec) = &pipeline.keyed {
            rows = rows.enrich(spec.clone(), diagnostics.clone());
        }
        if let Some(spec) = &pipeline.late_derive {
            rows = rows.derive(spec.clone(), diagnostics.clone());
        }
        if !pipeline.pipeline.bins.is_empty() {
            rows = rows.bin(pipeline.pipeline.bins.clone(), diagnostics.clone());
        }
        let partial_events = events.clone();
        rows.aggregate(pipeline.plan.clone(), diagnostics.clone())
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                PipelinePact,
                "Results",
                move |_, _| {
                    move |input, _output| {
                        input.for_each_time(|time, data| {
                            for batch in data {
                                if let Some(partial) = batch.take() {
                                    let _ = partial_events.send(Event::Partial(
                                        time::date_key_of(*time.time()),
                                        partial,
                                    ));
                                }
                            }
                        });
                    }
                },
            )
            .probe_with(&probe);
    });

    let mut reported: Option<Option<Time>> = None;
    loop {
        let mut hung_up = false;
        loop {
            match commands.try_recv() {
                Ok(Command::Push(batch)) => input.send_batch(&mut Batch::new(batch)),
                Ok(Command::Read {
                    file,
                    part,
                    columns,
                    batch_rows,
                }) => {
                    let date_key = time::date_key_of(*input.time());
                    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                    match file.read_part(part, &names, batch_rows) {
                        Ok(batches) => {
                            for (offset, batch) in batches {
                                let n = batch.num_rows() as u64;
                                diagnostics.add(date_key, "rows_read", n);
                                let ids: ArrayRef =
                                    Arc::new(UInt64Array::from_iter_values(offset..offset + n));
                                input.send_batch(&mut Batch::new(with_columns(
                                    &batch,
                                    vec![(ROW_ID.to_owned(), ids)],
                                )));
                            }
                        }
                        Err(error) => diagnostics.error(date_key, error.to_string()),
                    }
                }
                Ok(Command::Advance(time)) => {
                    if time == Time::MAX {
                        hung_up = true;
                    } else {
                        input.advance_to(time);
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    hung_up = true;
                    break;
                }
            }
        }
        if hung_up {
            break;
        }
        worker.step_or_park(None);
        let frontier = probe.with_frontier(|f| f.first().copied());
        if reported != Some(frontier) {
            reported = Some(frontier);
            let _ = events.send(Event::Frontier {
                worker: index,
                time: frontier,
            });
        }
    }
    drop(input);
    while !probe.done() {
        worker.step_or_park(None);
        let frontier = probe.with_frontier(|f| f.first().copied());
        if reported != Some(frontier) {
            reported = Some(frontier);
            let _ = events.send(Event::Frontier {
                worker: index,
                time: frontier,
            });
        }
    }
    let _ = events.send(Event::Frontier {
        worker: index,
        time: None,
    });
}
