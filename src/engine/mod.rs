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
//! The stages between the input and the aggregation are the bound pipeline's
//! [`stages`](BoundPipeline::stages), built in their order (see `config::stages`).
//!
//! Time model (see `vizflow_operators::time`): every batch is sent at `(date, bucket)`;
//! operators use each row's exact `elapsed_ms` and `row_id`, so the results do not
//! depend on batch sizes, arrival order or the number of workers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::Thread;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt64Array};
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use crossbeam_channel::{Receiver, Sender};
use vizflow_operators::batch::{Partition, with_columns};
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::report::{DateReport, Diagnostics};
use vizflow_operators::time::{self, DateOwners, Time};

mod arrivals;
mod worker;

use worker::{Command, WorkerContext, WorkerMessage, run_worker};

use crate::cluster::Connected;
use crate::config::BoundPipeline;
use crate::io::DateFile;

/// Commands waiting for a worker in its channel: a caller that sends more waits. One:
/// rows queued ahead of the dataflow are latency for a live feed's provisional results
/// (4 here and in the worker's queue: p50 170 ms, p99 280 ms; 1 and 1: 68 and 102 ms,
/// `vizflow bench --live`, 10M rows), and file runs go as fast with one.
const COMMANDS_IN_FLIGHT: usize = 1;

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
    /// With [`Partition::Date`], rows must be pushed in the process that owns the date.
    #[error(
        "pushed batch for {date}: partitioned by date, the date belongs to worker {worker} of \
         another process; push a date's rows in the process that owns it (Engine::owns)"
    )]
    NotOwner {
        /// The date.
        date: NaiveDate,
        /// Its owner (a global worker index).
        worker: usize,
    },
    /// The workers stopped (a worker failed); the run cannot go on.
    #[error("the dataflow workers stopped unexpectedly")]
    Stopped,
}

/// The outcome of one date: its final result, or a provisional one.
#[derive(Debug)]
pub struct DateResult {
    /// The date.
    pub date: NaiveDate,
    /// Final, or provisional at a watermark.
    pub kind: ResultKind,
    /// The partial, or the errors that failed the date (a provisional result is always
    /// a partial: a date fails in its final result).
    pub partial: Result<RecordBatch, Vec<String>>,
    /// The date's counters (and errors), from every process; empty in a provisional
    /// result (a date's counts are known once it is complete).
    pub report: DateReport,
}

/// Which result of a date a [`DateResult`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultKind {
    /// The date's result once it is complete.
    Final,
    /// A provisional result (`[stream] emit_every`): the partial of the date cut at the
    /// watermark `watermark_ms` (ms of trading time), as SEMANTICS.md, *Streaming*,
    /// defines it. A date's provisional results come in watermark order, before its
    /// final result, from the process that owns the date.
    Provisional {
        /// The watermark, in ms of trading time.
        watermark_ms: i64,
    },
}

impl DateResult {
    /// True for a date's final result.
    pub fn is_final(&self) -> bool {
        self.kind == ResultKind::Final
    }
}

/// The owner (a global worker index) of the `ordinal`-th date begun (0-based), out of
/// `peers` workers in all processes: the worker that builds its partial, whose process
/// returns its result, and, partitioned by date, the one that reads its rows.
pub fn date_owner(ordinal: usize, peers: usize) -> usize {
    ordinal % peers
}

/// How the processes of a cluster are fed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Feeding {
    /// Every process begins the same dates in the same order and numbers every part of
    /// a date alike ([`Engine::push_file_part`] over shared files, each process reading
    /// its share): one arrival order per date. The `n`-th date begun is owned by worker
    /// `n mod peers`.
    #[default]
    Shared,
    /// Each process begins the dates its own rows are of and [pushes](Engine::push) its
    /// own rows (`vizflow live` across processes, each with its producers): under
    /// `[stream]` a row is late against the rows pushed before it in the same process,
    /// and the date's watermark is the smallest of the processes'. A date is owned by
    /// worker `date_key mod peers`, whether or not its process fed it.
    PerProcess,
}

/// Where the workers run.
pub enum Workers {
    /// Threads of this process, as a timely configuration says (`Thread`, `Process(n)`,
    /// or `ProcessBinary(n)` to serialize every exchanged batch).
    Local(timely::Config),
    /// This process's share of a cluster connected by [`crate::cluster::connect`].
    Cluster(Connected),
}

impl Workers {
    /// `workers` threads in this process.
    pub fn threads(workers: usize) -> Workers {
        let communication = if workers > 1 {
            timely::CommunicationConfig::Process(workers)
        } else {
            timely::CommunicationConfig::Thread
        };
        Workers::Local(timely::Config {
            communication,
            worker: Default::default(),
        })
    }
}

struct Feed {
    commands: Sender<Command>,
    thread: Thread,
}

/// A date begun and not yet returned.
#[derive(Default)]
struct OpenDate {
    /// The date's owner (a global worker index).
    owner: usize,
    partial: Option<RecordBatch>,
    /// The merged report.
    report: Option<DateReport>,
    /// Whether this process's report was sent.
    reported: bool,
}

/// A running pipeline; see the module docs.
pub struct Engine {
    feeds: Vec<Feed>,
    events: Receiver<WorkerMessage>,
    guards: Option<timely::communication::WorkerGuards<()>>,
    diagnostics: Diagnostics,
    output_schema: arrow::datatypes::SchemaRef,
    read_columns: Vec<String>,
    partition: Partition,
    owners: DateOwners,
    /// The global index of this process's first worker.
    first_worker: usize,
    /// Workers in all processes.
    peers: usize,
    /// Dates begun so far (the next date's ordinal).
    begun: usize,
    current: Option<u32>,
    time: Time,
    next_row_id: u64,
    /// The current date's parts so far (pushed batches and file parts), which number
    /// them in arrival order.
    next_part: u64,
    /// True under `[stream]`: workers move their inputs with the watermark.
    streaming: bool,
    next_worker: usize,
    open: BTreeMap<u32, OpenDate>,
    frontiers: Vec<Option<Time>>,
    /// Dates of other processes that failed, in date order, not yet taken.
    failed_elsewhere: Vec<(NaiveDate, Vec<String>)>,
    /// Provisional results received and not yet returned, in arrival order.
    provisional: VecDeque<DateResult>,
    feeding: Feeding,
    /// Dates whose final result was returned (fed per process, a worker's late copy of
    /// a message must not open them again).
    returned: BTreeSet<u32>,
    /// The latest date whose report this process sent (reports go in date order).
    reported_through: Option<u32>,
}

impl Engine {
    /// Starts `workers` worker threads in this process.
    pub fn start(pipeline: BoundPipeline, workers: usize) -> Result<Engine, EngineError> {
        Self::launch(
            pipeline,
            Workers::threads(workers),
            Partition::Symbol,
            Feeding::Shared,
        )
    }

    /// Starts the workers with an explicit timely configuration, e.g.
    /// `CommunicationConfig::ProcessBinary(n)` to serialize every exchanged batch.
    pub fn start_with(
        pipeline: BoundPipeline,
        config: timely::Config,
    ) -> Result<Engine, EngineError> {
        Self::launch(
            pipeline,
            Workers::Local(config),
            Partition::Symbol,
            Feeding::Shared,
        )
    }

    /// Starts the workers where `workers` says, with rows spread as `partition` says.
    /// In a cluster every process starts its engine the same way and then, as `feeding`
    /// says, begins the same dates in the same order or each the dates of its own rows;
    /// each date's result is returned by the process that owns it ([`Engine::owns`]).
    pub fn launch(
        pipeline: BoundPipeline,
        workers: Workers,
        partition: Partition,
        feeding: Feeding,
    ) -> Result<Engine, EngineError> {
        let (builders, others, worker_config, process, processes) = match workers {
            Workers::Local(config) => {
                let (builders, others) = config
                    .communication
                    .try_build()
                    .map_err(EngineError::Start)?;
                (builders, others, config.worker, 0, 1)
            }
            Workers::Cluster(connected) => (
                connected.builders,
                connected.guard,
                timely::WorkerConfig::default(),
                connected.process,
                connected.processes,
            ),
        };
        let threads = builders.len();
        let first_worker = process * threads;
        let diagnostics = Diagnostics::default();
        let owners = DateOwners::default();
        let (event_tx, events) = crossbeam_channel::unbounded();
        let (feed_tx, feed_rx) = crossbeam_channel::unbounded::<(usize, Feed)>();
        let pipeline = Arc::new(pipeline);
        let context = WorkerContext {
            pipeline: pipeline.clone(),
            diagnostics: diagnostics.clone(),
            owners: owners.clone(),
            partition,
            input_times: Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect()),
            first_worker,
            source: match feeding {
                Feeding::Shared => 0,
                Feeding::PerProcess => process as u32,
            },
        };
        let guards =
            timely::execute::execute_from(builders, others, worker_config, move |worker| {
                // Bounded, so that a producer pushing faster than the dataflow takes
                // rows waits instead of growing memory (`worker::MAX_QUEUED` more wait
                // in the worker).
                let (commands_tx, commands) = crossbeam_channel::bounded(COMMANDS_IN_FLIGHT);
                let feed = Feed {
                    commands: commands_tx,
                    thread: std::thread::current(),
                };
                if feed_tx.send((worker.index() - first_worker, feed)).is_err() {
                    return;
                }
                run_worker(worker, &context, commands, event_tx.clone());
            })
            .map_err(EngineError::Start)?;
        let mut feeds: Vec<(usize, Feed)> = feed_rx.iter().take(threads).collect();
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
            partition,
            owners,
            first_worker,
            peers: threads * processes,
            begun: 0,
            current: None,
            time: 0,
            next_row_id: 0,
            next_part: 0,
            streaming: pipeline.pipeline.stream.is_some(),
            next_worker: 0,
            open: BTreeMap::new(),
            frontiers,
            failed_elsewhere: Vec::new(),
            provisional: VecDeque::new(),
            feeding,
            returned: BTreeSet::new(),
            reported_through: None,
        })
    }

    /// The number of workers in this process.
    pub fn workers(&self) -> usize {
        self.feeds.len()
    }

    /// The number of workers in all processes.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// The diagnostics shared with the workers.
    pub fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }

    /// The local index of a global worker index, when the worker is in this process.
    fn local(&self, worker: usize) -> Option<usize> {
        worker
            .checked_sub(self.first_worker)
            .filter(|local| *local < self.feeds.len())
    }

    /// Dates begun whose result is not yet returned (or dropped, in processes that do
    /// not own them).
    pub fn pending_dates(&self) -> usize {
        self.open.len()
    }

    /// True when this process returns `date`'s result (its owner is one of this
    /// process's workers). Only for dates begun.
    pub fn owns(&self, date: NaiveDate) -> bool {
        self.open
            .get(&time::date_key(date))
            .is_some_and(|open| self.local(open.owner).is_some())
    }

    fn send(&self, worker: usize, command: Command) -> Result<(), EngineError> {
        let feed = &self.feeds[worker];
        let command = match feed.commands.try_send(command) {
            Ok(()) => None,
            Err(crossbeam_channel::TrySendError::Full(command)) => Some(command),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                return Err(EngineError::Stopped);
            }
        };
        if let Some(command) = command {
            // The worker is behind: wake it, and wait for room.
            feed.thread.unpark();
            feed.commands
                .send(command)
                .map_err(|_| EngineError::Stopped)?;
        }
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
        let owner = match self.feeding {
            Feeding::Shared => date_owner(self.begun, self.peers),
            Feeding::PerProcess => key as usize % self.peers,
        };
        self.begun += 1;
        self.owners.assign(key, owner);
        self.advance(time::date_start(key))?;
        self.current = Some(key);
        self.next_row_id = 0;
        self.next_part = 0;
        self.open.insert(
            key,
            OpenDate {
                owner,
                ..OpenDate::default()
            },
        );
        Ok(())
    }

    /// The workers' messages, for a caller that waits on them beside other channels
    /// (`vizflow live`): when one is ready, [`Engine::next_result`] has something to
    /// take, or [`Engine::absorb`] does.
    pub(crate) fn messages(&self) -> &Receiver<worker::WorkerMessage> {
        &self.events
    }

    /// Takes the workers' messages that arrived, without waiting.
    pub(crate) fn absorb(&mut self) {
        while let Ok(message) = self.events.try_recv() {
            self.receive(message);
        }
    }

    /// Ends the current date without beginning another (a live feed whose producers
    /// all stopped): its result follows from [`Engine::next_result`], and a later date
    /// may still begin.
    pub fn end_date(&mut self) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        // The first time after the date's last.
        self.advance(time::date_end(key) + 1)
    }

    /// Says that no row of the current date earlier than `elapsed_ms` of trading time
    /// will be pushed any more (a live feed's watermark, e.g. a producer idle over the
    /// lunch break). Without `[stream]` it is optional: results are the same without
    /// it. Under `[stream]` it moves the date's watermark to at least `elapsed_ms`:
    /// rows pushed after it below that are late.
    pub fn advance_within_date(&mut self, elapsed_ms: i64) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        if self.streaming {
            for worker in 0..self.feeds.len() {
                self.send(worker, Command::Floor(elapsed_ms))?;
            }
            return Ok(());
        }
        self.advance(time::pack(key, time::bucket_for_elapsed(elapsed_ms)))
    }

    /// Fails the current date with `message` (e.g. its file could not be read in this
    /// process): the date's result carries the error and no partial.
    pub fn fail_current_date(&mut self, message: String) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        self.diagnostics.error(key, message);
        Ok(())
    }

    /// Pushes rows of the current date. The batch needs the columns the pipeline reads
    /// (others are ignored). A `row_id` column (the row's position in the date's file)
    /// is used when present; otherwise rows are numbered in push order.
    pub fn push(&mut self, batch: RecordBatch) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        let date = time::date_of_key(key);
        let worker = match self.partition {
            Partition::Symbol => {
                self.next_worker = (self.next_worker + 1) % self.feeds.len();
                self.next_worker
            }
            Partition::Date => {
                let owner = self.owners.worker_of(key) % self.peers;
                self.local(owner).ok_or(EngineError::NotOwner {
                    date,
                    worker: owner,
                })?
            }
        };
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
        let part = self.next_part;
        self.next_part += 1;
        self.send(worker, Command::Push { batch, part })
    }

    /// Has a worker read part `part` of `file` (rows of the current date) and feed it
    /// in as if pushed, with `row_id` = the row's position in the file. In a cluster
    /// every process calls this for every part; each reads its share (partitioned by
    /// symbol, part `p` goes to worker `p mod peers`; by date, the date's owner reads
    /// every part).
    pub fn push_file_part(
        &mut self,
        file: Arc<DateFile>,
        part: usize,
        batch_rows: usize,
    ) -> Result<(), EngineError> {
        let key = self.current.ok_or(EngineError::NoDate)?;
        let arrival = self.next_part;
        self.next_part += 1;
        let reader = match self.partition {
            Partition::Symbol => part % self.peers,
            Partition::Date => self.owners.worker_of(key) % self.peers,
        };
        let Some(worker) = self.local(reader) else {
            return Ok(()); // another process reads this part
        };
        let columns = Arc::new(self.read_columns.clone());
        self.send(
            worker,
            Command::Read {
                file,
                part,
                arrival,
                columns,
                batch_rows,
            },
        )
    }

    /// Waits for the next completed date of this process. Returns `None` when no begun
    /// date is pending. A date completes once a later date is begun or the engine is
    /// finished. With `[stream] emit_every`, a date's provisional results come first,
    /// as soon as they are built (without waiting while the date is being fed).
    pub fn next_result(&mut self) -> Result<Option<DateResult>, EngineError> {
        loop {
            if let Some(result) = self.provisional.pop_front() {
                return Ok(Some(result));
            }
            self.report_completed()?;
            if let Some(result) = self.completed() {
                return Ok(Some(result));
            }
            let Some(first) = self.open.keys().next().copied() else {
                return Ok(None);
            };
            if self.current == Some(first) && self.time <= time::date_end(first) && !self.closed() {
                // The current date is still being fed: only what has arrived.
                while let Ok(message) = self.events.try_recv() {
                    self.receive(message);
                }
                return Ok(self.provisional.pop_front());
            }
            match self.events.recv() {
                Ok(message) => self.receive(message),
                Err(_) => return Err(EngineError::Stopped),
            }
        }
    }

    /// Waits until at most `window` begun dates are pending, and returns the results
    /// (provisional ones first) that came out meanwhile, in order. Unlike looping over
    /// [`Engine::next_result`], it also returns once a date of another process is
    /// dropped: a process that waits for its own next result may hold up the others
    /// (a date waiting for its next trading day's prices needs every process to have
    /// begun the day after).
    pub fn wait_for_window(&mut self, window: usize) -> Result<Vec<DateResult>, EngineError> {
        let mut results = Vec::new();
        loop {
            results.extend(self.provisional.drain(..));
            self.report_completed()?;
            while let Some(result) = self.completed() {
                results.push(result);
            }
            if self.open.len() <= window {
                return Ok(results);
            }
            match self.events.recv() {
                Ok(message) => self.receive(message),
                Err(_) => return Err(EngineError::Stopped),
            }
        }
    }

    fn receive(&mut self, message: WorkerMessage) {
        match message {
            WorkerMessage::Partial(date_key, batch) => {
                if let Some(open) = self.open_date(date_key) {
                    open.partial = Some(batch);
                }
            }
            WorkerMessage::Provisional(date_key, watermark_ms, batch) => {
                self.provisional.push_back(DateResult {
                    date: time::date_of_key(date_key),
                    kind: ResultKind::Provisional { watermark_ms },
                    partial: Ok(batch),
                    report: DateReport::default(),
                });
            }
            WorkerMessage::Report(date_key, report) => {
                if let Some(open) = self.open_date(date_key) {
                    open.report = Some(report);
                }
            }
            WorkerMessage::Frontier { worker, time } => {
                self.frontiers[worker - self.first_worker] = time
            }
        }
    }

    /// The open date a worker's message is about. Fed per process, a date this process
    /// owns may come from the other processes' rows alone: it is opened here, with
    /// nothing of this process to report.
    fn open_date(&mut self, date_key: u32) -> Option<&mut OpenDate> {
        let owner = date_key as usize % self.peers;
        let ours = self.feeding == Feeding::PerProcess && self.local(owner).is_some();
        if ours && !self.open.contains_key(&date_key) && !self.returned.contains(&date_key) {
            let open = OpenDate {
                owner,
                // This process's report of it went with those of the dates around it
                // (`report_completed`), or goes now.
                reported: Some(date_key) <= self.reported_through,
                ..OpenDate::default()
            };
            self.open.insert(date_key, open);
        }
        self.open.get_mut(&date_key)
    }

    fn closed(&self) -> bool {
        self.time == Time::MAX
    }

    /// Sends this process's report of every date the dataflow has completed, in date
    /// order, to the date's owner (through the workers' report dataflow).
    fn report_completed(&mut self) -> Result<(), EngineError> {
        let frontiers = &self.frontiers;
        let passed = |date_key: &u32| {
            (frontiers.iter()).all(|f| f.is_none_or(|t| t > time::date_end(*date_key)))
        };
        let mut done: Vec<u32> = (self.open.iter())
            .filter(|(_, open)| !open.reported)
            .map(|(date_key, _)| *date_key)
            .take_while(passed)
            .collect();
        if self.feeding == Feeding::PerProcess {
            // Dates that only the other processes fed, whose rows this process's
            // workers took part in (exchanged by symbol): their counts go too.
            let reported = self.reported_through;
            let others = (self.diagnostics.dates().into_iter())
                .filter(|d| !self.open.contains_key(d) && Some(*d) > reported && passed(d));
            done.extend(others);
            done.sort_unstable();
        }
        for date_key in done {
            self.reported_through = self.reported_through.max(Some(date_key));
            let mut report = Some(self.diagnostics.take(date_key));
            for worker in 0..self.feeds.len() {
                self.send(worker, Command::Report(date_key, report.take()))?;
            }
            if let Some(open) = self.open.get_mut(&date_key) {
                open.reported = true;
            }
        }
        Ok(())
    }

    /// The earliest open date once it is complete and every process's report of it has
    /// arrived (merged): its result if this process owns it; a date of another process
    /// is dropped, its failure noted. Dates come out in date order, so no result comes
    /// before this process knows whether every earlier date failed.
    fn completed(&mut self) -> Option<DateResult> {
        loop {
            let (first_worker, workers) = (self.first_worker, self.feeds.len());
            let mut entry = self.open.first_entry()?;
            if !entry.get().reported {
                return None;
            }
            let report = entry.get_mut().report.take()?;
            if !(first_worker..first_worker + workers).contains(&entry.get().owner) {
                // Another process returns it; a failure is noted for
                // `take_failed_elsewhere`.
                let date = time::date_of_key(*entry.key());
                entry.remove();
                if !report.errors.is_empty() {
                    self.failed_elsewhere.push((date, report.errors));
                }
                continue;
            }
            let (date_key, open) = entry.remove_entry();
            if self.feeding == Feeding::PerProcess {
                self.returned.insert(date_key);
            }
            let partial = if report.errors.is_empty() {
                Ok(open
                    .partial
                    .unwrap_or_else(|| RecordBatch::new_empty(self.output_schema.clone())))
            } else {
                Err(report.errors.clone())
            };
            return Some(DateResult {
                date: time::date_of_key(date_key),
                kind: ResultKind::Final,
                partial,
                report,
            });
        }
    }

    /// The dates owned by other processes that failed, found since the last call, in
    /// date order, with their errors. Each comes out before any later date's result of
    /// this process (from [`Engine::next_result`] or [`Engine::finish`]): a
    /// `--fail-fast` run learns of it before it writes a later date.
    pub fn take_failed_elsewhere(&mut self) -> Vec<(NaiveDate, Vec<String>)> {
        std::mem::take(&mut self.failed_elsewhere)
    }

    /// Closes the input and waits for every remaining date; the workers go on until
    /// [`Engine::finish`] (which returns nothing more after this) or the drop.
    pub fn drain(&mut self) -> Result<Vec<DateResult>, EngineError> {
        self.advance(Time::MAX)?;
        let mut results = Vec::new();
        while let Some(result) = self.next_result()? {
            results.push(result);
        }
        Ok(results)
    }

    /// Closes the input, waits for every remaining date, and stops the workers.
    pub fn finish(mut self) -> Result<Vec<DateResult>, EngineError> {
        let mut results = self.drain()?;
        self.hang_up();
        if let Some(guards) = self.guards.take() {
            for result in guards.join() {
                result.map_err(|_| EngineError::Stopped)?;
            }
        }
        // Fed per process, the results of dates only the other processes fed may come
        // after this process's own: every message is in now that the workers ended.
        while let Some(result) = self.ready_result()? {
            results.push(result);
        }
        Ok(results)
    }

    /// The next result that is ready, without waiting (for a caller that waits on
    /// [`Engine::messages`] beside other channels).
    pub(crate) fn ready_result(&mut self) -> Result<Option<DateResult>, EngineError> {
        self.absorb();
        self.report_completed()?;
        Ok(self.provisional.pop_front().or_else(|| self.completed()))
    }

    /// Leaves the workers as they are, with their inputs open, to end with the process.
    /// For a process of a cluster that must stop at once: closing its inputs would let
    /// the other processes complete the dates in flight without this process's rows
    /// (dropping an engine closes them and waits for the workers). The feeds and the
    /// worker threads' guards move to a thread that stays parked until the process
    /// exits, so nothing closes them.
    pub fn abandon(mut self) {
        let feeds = std::mem::take(&mut self.feeds);
        let guards = self.guards.take();
        std::thread::spawn(move || {
            let _open = (feeds, guards);
            loop {
                std::thread::park();
            }
        });
    }
}

impl Engine {
    /// Disconnects the command channels and wakes the workers, which then close their
    /// inputs and finish.
    fn hang_up(&mut self) {
        for feed in std::mem::take(&mut self.feeds) {
            drop(feed.commands);
            feed.thread.unpark();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.hang_up(); // then the guards join the workers
    }
}
