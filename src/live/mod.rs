//! `vizflow live`: a pipeline fed by producers over Arrow IPC streams (standard input,
//! or any number of TCP connections), writing each date's provisional partial as it
//! goes and its final outputs, exactly as `vizflow run` writes them, when it closes;
//! optionally recording every accepted batch so that `vizflow run` over the recording
//! gives the same partials.
//!
//! Batches carry the pipeline's input columns, `date` (Date32, or an integer
//! `YYYYMMDD`) and optionally `row_id` (else rows are numbered in arrival order per
//! date). Two optional control columns let a producer speak without rows: a row with
//! `vizflow_watermark_ms` set moves its date's watermark to that many ms of trading
//! time (a producer idle over the lunch break); a row with `vizflow_end_date` true says
//! the producer is done with its date. Such rows are not data.
//!
//! A date closes once every producer connected has moved to a later date, said it is
//! done with it, or ended its stream. Rows of a later date wait, and their stream is not
//! read meanwhile (TCP flow control then holds its producer back): memory stays bounded
//! by a few batches per producer.
//!
//! Across processes (a hostfile), each process takes its own producers, and the rows
//! are exchanged by symbol: a process closes a date for its producers, and the date is
//! complete once every process closed it. The watermark of a date is the smallest of
//! the processes' (a row is late against the rows that came before it to the same
//! process), and each date's outputs are written by the process that owns it
//! ([`Feeding::PerProcess`]). The cluster forms when process 0 has its first batch:
//! its schema is the one every process binds the pipeline to (the others wait for it,
//! their producers held back meanwhile).

mod input;
mod record;
mod send;
mod snapshots;

pub use send::send;

use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Date32Type, Int64Type, Schema};
use chrono::{NaiveDate, Timelike};
use crossbeam_channel::{Receiver, Select, TryRecvError, bounded};
use vizflow_operators::batch::{Partition, with_columns};
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::next_day::NextDays;
use vizflow_operators::time::date_key;

use crate::calendar;
use crate::cluster::{self, ClusterError, ClusterSpec, DatePlan};
use crate::config::{BoundPipeline, Pipeline};
use crate::engine::{DateResult, Engine, EngineError, Feeding, ResultKind, Workers};
use crate::partials::Layout;
use crate::run::{DateOutcome, DateStatus, PROVISIONAL_RESULTS, outcome_of, partial_path};

use input::{Event, Gate};
use record::Recording;
use snapshots::{Snapshot, Snapshots};

/// The column of a live batch that says which date each row is of.
pub const DATE_COLUMN: &str = "date";
/// A control column: a row with a value moves its date's watermark (ms of trading time).
pub const WATERMARK_CONTROL: &str = "vizflow_watermark_ms";
/// A control column: a row with `true` says its producer is done with the row's date.
pub const END_DATE_CONTROL: &str = "vizflow_end_date";

/// Where the producers' streams come from.
#[derive(Clone, Debug)]
pub enum LiveInput {
    /// One stream on standard input.
    Stdin,
    /// Any number of TCP connections to this address, one stream each.
    Listen(SocketAddr),
}

/// What moves a date's watermark besides its rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LiveClock {
    /// Only the rows (and control rows).
    #[default]
    Data,
    /// Also the wall clock in the market's time zone: the watermark of today's date
    /// follows the trading time of now minus the lateness (so it reaches the morning's
    /// end over the lunch break), and a date closes once its last session ended more
    /// than the lateness ago.
    Wall,
}

/// What `vizflow live` does.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Where the streams come from.
    pub input: LiveInput,
    /// Where the outputs go (`{date}.live.parquet`, then `{date}.parquet` and its
    /// report).
    pub output_dir: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Where to record the accepted batches (`{date}.arrows`), if anywhere.
    pub record: Option<PathBuf>,
    /// The largest IPC message (metadata or body) a producer may send.
    pub max_message_bytes: usize,
    /// With `Listen`, stop once this many producers' streams have ended (and none is
    /// connected); without it, run until stopped.
    pub producers: Option<usize>,
    /// Where to note when rows were fed and results written (`vizflow bench --live`).
    pub timeline: Option<Arc<Mutex<Timeline>>>,
    /// What moves the watermark besides the rows.
    pub clock: LiveClock,
    /// Across processes: this process's place in the cluster (see the module docs).
    pub cluster: Option<ClusterSpec>,
}

/// When a live run fed rows and wrote results, for measuring it.
#[derive(Debug, Default)]
pub struct Timeline {
    /// After each push: when, and the rows of its date fed so far.
    pub fed: Vec<(Instant, u64)>,
    /// Each provisional result written: when, and its watermark (ms of trading time).
    pub provisional: Vec<(Instant, i64)>,
    /// When each final result was written.
    pub finals: Vec<Instant>,
}

/// What a live run did.
#[derive(Debug, Default)]
pub struct LiveSummary {
    /// Each closed date's outcome, in date order.
    pub dates: Vec<DateOutcome>,
    /// Producer streams that ended, cleanly or not.
    pub streams: usize,
    /// The errors that closed a stream, each naming it.
    pub stream_errors: Vec<String>,
    /// Rows that came for a date already closed (dropped, and logged).
    pub rows_after_close: u64,
}

/// Why a live run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The pipeline has no `[stream]` section.
    #[error(
        "vizflow live needs a [stream] section in the pipeline: rows of a live feed arrive \
         in order up to a lateness, e.g.\n\n[stream]\nlateness = \"2s\"\nemit_every = \"60s\"\n"
    )]
    NoStream,
    /// `[input] calendar` could not be read (returns to the next trading day).
    #[error(transparent)]
    Calendar(#[from] crate::calendar::CalendarError),
    /// The listening address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The output directory could not be made.
    #[error("cannot create the output directory {}: {source}", path.display())]
    OutputDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine stopped.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The cluster could not be formed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Process 0 of the cluster handed over no usable schema of the feed.
    #[error(
        "process 0 of the cluster sent no schema of the feed ({0}); start every process \
         with `vizflow live` of the same version and pipeline"
    )]
    NoSchema(String),
}

/// Runs `pipeline` over the producers' streams until they end (see the module docs).
/// `listening` is told the bound address (with `--listen 127.0.0.1:0`, the port).
pub fn live(
    pipeline: &Pipeline,
    options: &LiveOptions,
    listening: impl FnOnce(SocketAddr),
) -> Result<LiveSummary, LiveError> {
    if pipeline.stream.is_none() {
        return Err(LiveError::NoStream);
    }
    let output = &options.output_dir;
    std::fs::create_dir_all(output).map_err(|source| LiveError::OutputDir {
        path: output.clone(),
        source,
    })?;
    // A few batches per producer in flight at most: the readers wait on it.
    let (events, received) = bounded(4);
    let max = options.max_message_bytes;
    match options.input {
        LiveInput::Stdin => {
            std::thread::spawn(move || {
                let _ = events.send(Event::Connected {
                    stream: 0,
                    peer: "standard input".into(),
                });
                input::read_stream(0, std::io::stdin().lock(), max, &events)
            });
        }
        LiveInput::Listen(address) => {
            let listener = TcpListener::bind(address)
                .map_err(|source| LiveError::Listen { address, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| LiveError::Listen { address, source })?;
            tracing::info!("listening on {bound}");
            listening(bound);
            std::thread::spawn(move || input::accept(listener, max, events));
        }
    }
    let stdin = matches!(options.input, LiveInput::Stdin);
    let mut feed = Feed::new(pipeline, options);
    if let Some(spec) = options.cluster.as_ref().filter(|spec| spec.process > 0) {
        feed.join(spec)?;
    }
    feed.run(received, if stdin { Some(1) } else { options.producers })?;
    feed.finish()
}

/// What the processes of a live cluster must agree on besides the pipeline: they hand
/// each other this instead of its hash alone, so that a `vizflow run` of the same
/// pipeline cannot join.
fn cluster_hash(hash: &str) -> String {
    format!("live:{hash}")
}

/// A producer's stream as the main loop sees it.
struct Producer {
    peer: String,
    gate: Option<Arc<Gate>>,
    /// Rows of later dates, waiting for their date (the stream is paused meanwhile).
    waiting: VecDeque<(NaiveDate, RecordBatch)>,
    /// The last date it said it is done with ([`NaiveDate::MAX`] once its stream
    /// ended).
    done_with: Option<NaiveDate>,
}

impl Producer {
    fn ended(&self) -> bool {
        self.done_with == Some(NaiveDate::MAX)
    }
}

/// The main loop's state: the engine (started at the first rows, bound to their
/// schema), the date being fed, the producers.
struct Feed<'a> {
    pipeline: &'a Pipeline,
    options: &'a LiveOptions,
    hash: String,
    /// What the partials say about themselves.
    layout: Layout,
    engine: Option<Engine>,
    bound: Option<BoundPipeline>,
    /// The date being fed, and whether it was closed already (every producer stopped
    /// without a later date to begin).
    current: Option<(NaiveDate, bool)>,
    producers: BTreeMap<usize, Producer>,
    /// Rows accepted for the current date (the next `row_id` when producers send none).
    rows: u64,
    /// Each open date's provisional results so far (a later date's may come before an
    /// earlier one's final result, across processes).
    provisional: BTreeMap<NaiveDate, Vec<(i64, RecordBatch)>>,
    /// Puts each provisional partial in place, beside the feed.
    snapshots: Snapshots,
    recording: Option<Recording>,
    summary: LiveSummary,
    /// The watermark the wall clock gave the date being fed.
    wall_watermark: i64,
}

impl<'a> Feed<'a> {
    fn new(pipeline: &'a Pipeline, options: &'a LiveOptions) -> Self {
        Feed {
            pipeline,
            options,
            hash: pipeline.config_hash(),
            layout: Layout::of(pipeline),
            engine: None,
            bound: None,
            current: None,
            producers: BTreeMap::new(),
            rows: 0,
            provisional: BTreeMap::new(),
            snapshots: Snapshots::start(options.timeline.clone()),
            recording: (options.record.clone())
                .map(|dir| Recording::new(dir, options.cluster.as_ref().map(|c| c.process))),
            summary: LiveSummary::default(),
            wall_watermark: i64::MIN,
        }
    }

    fn run(&mut self, events: Receiver<Event>, producers: Option<usize>) -> Result<(), LiveError> {
        loop {
            // Wait for a producer, or for the workers (a result may be ready while no
            // producer sends anything).
            let mut select = Select::new();
            let input = select.recv(&events);
            if let Some(engine) = &self.engine {
                select.recv(engine.messages());
            }
            let ready = match self.options.clock {
                LiveClock::Data => Some(select.ready()),
                LiveClock::Wall => select.ready_timeout(WALL_TICK).ok(),
            };
            let event = match ready == Some(input) {
                true => match events.try_recv() {
                    Ok(event) => Some(event),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                },
                false => None,
            };
            match event {
                None => {}
                Some(Event::Connected { stream, peer }) => {
                    tracing::info!("producer {stream} connected ({peer})");
                    let producer = Producer {
                        peer,
                        gate: None,
                        waiting: VecDeque::new(),
                        done_with: None,
                    };
                    self.producers.insert(stream, producer);
                }
                Some(Event::Batch {
                    stream,
                    batch,
                    gate,
                }) => {
                    // A stream closed because of an error may still have sent some.
                    let Some(producer) = self.producers.get_mut(&stream) else {
                        continue;
                    };
                    if producer.ended() {
                        continue;
                    }
                    producer.gate = Some(gate);
                    if self.engine.is_none()
                        && let Err(error) = self.start(&batch)?
                    {
                        self.close_stream(stream, Some(error));
                        continue;
                    }
                    if let Err(error) = self.batch(stream, batch) {
                        self.close_stream(stream, Some(error));
                    }
                }
                Some(Event::Ended { stream }) => self.close_stream(stream, None),
                Some(Event::Failed { stream, error }) => self.close_stream(stream, Some(error)),
            }
            if self.options.clock == LiveClock::Wall {
                self.wall_clock()?;
            }
            self.close_dates()?;
            self.results()?;
            let ended = producers.is_some_and(|n| self.summary.streams >= n);
            if ended && self.producers.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// `--clock wall`: moves today's watermark to the trading time of now minus the
    /// lateness, and closes the date being fed once its day is over (its last session
    /// ended more than the lateness ago, or it is an earlier day).
    fn wall_clock(&mut self) -> Result<(), LiveError> {
        let Some((date, false)) = self.current else {
            return Ok(());
        };
        let clock = &self.pipeline.market.clock;
        let lateness = self.pipeline.stream.as_ref().map_or(0, |s| s.lateness_ms);
        let now = chrono::Utc::now().with_timezone(&clock.time_zone());
        let today = now.date_naive();
        let since_midnight = i64::from(now.time().num_seconds_from_midnight()) * 1000
            + i64::from(now.timestamp_subsec_millis().min(999));
        let close = clock.sessions().last().map_or(0, |s| s.end_ms);
        if date < today || (date == today && since_midnight > close + lateness) {
            // Every producer is done with it.
            for producer in self.producers.values_mut() {
                producer.done_with = producer.done_with.max(Some(date));
            }
            return Ok(());
        }
        if date == today {
            let (elapsed, _) = clock.elapsed_ms_clamped(since_midnight);
            let watermark = elapsed - lateness;
            if watermark > self.wall_watermark {
                self.wall_watermark = watermark;
                self.engine
                    .as_mut()
                    .expect("a date began")
                    .advance_within_date(watermark)?;
            }
        }
        Ok(())
    }

    /// A producer's stream ended (with an error, logged): it no longer holds any date
    /// open. Its rows waiting for a later date are still fed.
    fn close_stream(&mut self, stream: usize, error: Option<String>) {
        let Some(producer) = self.producers.get_mut(&stream).filter(|p| !p.ended()) else {
            return;
        };
        if let Some(gate) = &producer.gate {
            gate.shut();
        }
        let name = format!("producer {stream} ({})", producer.peer);
        match error {
            Some(error) => {
                tracing::error!("{name}: {error}; its stream is closed, its rows so far kept");
                self.summary.stream_errors.push(format!("{name}: {error}"));
            }
            None => tracing::info!("{name} ended its stream"),
        }
        producer.done_with = Some(NaiveDate::MAX);
        self.summary.streams += 1;
        // Its waiting rows stay until their date; then it goes.
        if producer.waiting.is_empty() {
            self.producers.remove(&stream);
        }
    }

    /// Takes a batch of a producer: its rows of the current date are fed, those of a
    /// later date wait (and the stream pauses), those of a closed date are dropped.
    fn batch(&mut self, stream: usize, batch: RecordBatch) -> Result<(), String> {
        let dates = dates_of(&batch)?;
        for (date, rows) in split_by_date(&batch, &dates)? {
            let (data, control) = controls(&rows)?;
            if self.current.is_none() {
                self.begin(date).map_err(|e| e.to_string())?;
            }
            let (current, closed) = self.current.expect("begun above");
            if date < current || (date == current && closed) {
                self.summary.rows_after_close += data.num_rows() as u64;
                tracing::warn!(
                    "producer {stream}: {} rows of {}, which is closed, dropped",
                    data.num_rows(),
                    calendar::format_date(date)
                );
                continue;
            }
            let producer = self.producers.get_mut(&stream).expect("connected");
            if date > current || !producer.waiting.is_empty() {
                producer.waiting.push_back((date, rows));
                if let Some(gate) = &producer.gate {
                    gate.pause();
                }
                continue;
            }
            self.accept(data)?;
            self.control(stream, date, control)?;
        }
        Ok(())
    }

    /// The control rows of a producer's batch of the current date.
    fn control(&mut self, stream: usize, date: NaiveDate, control: Control) -> Result<(), String> {
        if let (Some(ms), Some(engine)) = (control.watermark_ms, self.engine.as_mut()) {
            engine.advance_within_date(ms).map_err(|e| e.to_string())?;
        }
        if control.end_date
            && let Some(producer) = self.producers.get_mut(&stream)
        {
            producer.done_with = producer.done_with.max(Some(date));
        }
        Ok(())
    }

    /// Starts the engine at the first batch, bound to its schema (a batch whose columns
    /// do not fit the pipeline: `Ok(Err)`, its stream is closed). Process 0 of a cluster
    /// forms the cluster now, handing the schema to the others.
    fn start(&mut self, batch: &RecordBatch) -> Result<Result<(), String>, LiveError> {
        let schema = input_schema(batch.schema().as_ref());
        let bound = match self.pipeline.bind(&schema) {
            Ok(bound) => bound,
            Err(error) => return Ok(Err(format!("its columns do not fit the pipeline: {error}"))),
        };
        let workers = match &self.options.cluster {
            Some(spec) => {
                let plan = DatePlan {
                    live_schema: Some(schema_to_ipc(&schema).map_err(LiveError::NoSchema)?),
                    ..DatePlan::default()
                };
                tracing::info!("forming the cluster of {} processes", spec.processes);
                Workers::Cluster(cluster::connect(spec, &cluster_hash(&self.hash), &plan)?)
            }
            None => Workers::threads(self.options.workers),
        };
        self.launch(bound, workers)?;
        Ok(Ok(()))
    }

    /// Process `spec.process` > 0: joins the cluster once process 0 forms it, and starts
    /// the engine bound to the schema it hands over.
    fn join(&mut self, spec: &ClusterSpec) -> Result<(), LiveError> {
        tracing::info!(
            "process {}: waiting for process 0 to form the cluster",
            spec.process
        );
        let connected = cluster::connect(spec, &cluster_hash(&self.hash), &DatePlan::default())?;
        let schema = (connected.plan.live_schema.as_deref())
            .ok_or_else(|| "none".to_owned())
            .and_then(schema_from_ipc)
            .map_err(LiveError::NoSchema)?;
        let bound = self
            .pipeline
            .bind(&schema)
            .map_err(|e| LiveError::NoSchema(format!("the pipeline does not bind to it: {e}")))?;
        self.launch(bound, Workers::Cluster(connected))
    }

    fn launch(&mut self, mut bound: BoundPipeline, workers: Workers) -> Result<(), LiveError> {
        if !bound.price_read.is_empty() {
            // Returns to the next trading day: found as the dates come (the calendar's
            // next date when it is set, else the feed's next date).
            let calendar = match &self.pipeline.input.calendar {
                Some(path) => Some(calendar::TradingCalendar::from_file(path)?),
                None => None,
            };
            let keys = calendar.map(|c| c.dates().iter().map(|d| date_key(*d)).collect());
            bound.next_days = Arc::new(NextDays::following(keys));
        }
        let engine = Engine::launch(
            bound.clone(),
            workers,
            Partition::Symbol,
            Feeding::PerProcess,
        )?;
        self.engine = Some(engine);
        self.bound = Some(bound);
        Ok(())
    }

    /// Begins `date` (the engine started).
    fn begin(&mut self, date: NaiveDate) -> Result<(), LiveError> {
        self.engine
            .as_mut()
            .expect("started at the first batch")
            .begin_date(date)?;
        self.begun(date);
        Ok(())
    }

    /// `date` is the one being fed now: nothing of it is fed yet.
    fn begun(&mut self, date: NaiveDate) {
        self.current = Some((date, false));
        self.rows = 0;
        self.wall_watermark = i64::MIN;
        tracing::info!("{} begins", calendar::format_date(date));
    }

    /// Feeds rows of the current date (checked against the bound schema), numbered in
    /// arrival order unless they carry `row_id`, and records them.
    fn accept(&mut self, rows: RecordBatch) -> Result<(), String> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let bound = self.bound.as_ref().expect("the engine started");
        let mut conformed = Vec::new();
        for column in &bound.read {
            let expected = bound.input_schema.field_with_name(column).ok();
            let Some(values) = rows.column_by_name(column) else {
                let expected = expected.map_or(String::new(), |f| format!(" ({})", f.data_type()));
                return Err(format!(
                    "a batch lacks the column '{column}'{expected} that the pipeline reads"
                ));
            };
            // The feed's types are those of the first batch (process 0's, in a cluster).
            if let Some(field) = expected.filter(|f| f.data_type() != values.data_type()) {
                let cast = arrow::compute::cast(values, field.data_type()).map_err(|e| {
                    format!(
                        "its column '{column}' is {}, and the feed's is {} (from the first \
                         batch): {e}",
                        values.data_type(),
                        field.data_type()
                    )
                })?;
                conformed.push((column.clone(), cast));
            }
        }
        let rows = match conformed.is_empty() {
            true => rows,
            false => with_columns(&rows, conformed),
        };
        let n = rows.num_rows() as u64;
        let ids: ArrayRef = match rows.column_by_name(ROW_ID) {
            Some(ids) => arrow::compute::cast(ids, &DataType::UInt64)
                .map_err(|e| format!("its row_id column: {e}"))?,
            None => Arc::new(UInt64Array::from_iter_values(self.rows..self.rows + n)),
        };
        let rows = with_columns(&rows, vec![(ROW_ID.to_owned(), ids)]);
        let (date, _) = self.current.expect("begun");
        if let Some(recording) = &mut self.recording {
            recording.append(date, &rows).map_err(|e| e.to_string())?;
        }
        self.rows += n;
        let engine = self.engine.as_mut().expect("started");
        engine.push(rows).map_err(|e| e.to_string())?;
        if let Some(timeline) = &self.options.timeline {
            let fed = (Instant::now(), self.rows);
            timeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fed
                .push(fed);
        }
        Ok(())
    }

    /// Closes the current date once every producer is past it, then begins the next
    /// date that rows wait for, and feeds them (which may close it again).
    fn close_dates(&mut self) -> Result<(), LiveError> {
        loop {
            let Some((current, closed)) = self.current else {
                return Ok(());
            };
            let past = |p: &Producer| {
                p.done_with.is_some_and(|d| d >= current)
                    || p.waiting.front().is_some_and(|(d, _)| *d > current)
            };
            if closed || !self.producers.values().all(past) {
                return Ok(());
            }
            self.closed(current);
            let next = (self.producers.values())
                .filter_map(|p| p.waiting.front().map(|(d, _)| *d))
                .min();
            let Some(next) = next else {
                self.engine.as_mut().expect("a date began").end_date()?;
                self.current = Some((current, true));
                return Ok(());
            };
            self.engine
                .as_mut()
                .expect("a date began")
                .begin_date(next)?;
            self.begun(next);
            self.results()?;
            self.feed_waiting(next);
        }
    }

    /// Feeds the rows waiting for `date`, resuming the streams with nothing left waiting.
    fn feed_waiting(&mut self, date: NaiveDate) {
        let streams: Vec<usize> = self.producers.keys().copied().collect();
        for stream in streams {
            let mut failed = None;
            let producer = self.producers.get_mut(&stream).expect("listed");
            let mut ready = Vec::new();
            while producer.waiting.front().is_some_and(|(d, _)| *d == date) {
                ready.push(producer.waiting.pop_front().expect("checked").1);
            }
            for rows in ready {
                let (data, control) = match controls(&rows) {
                    Ok(parts) => parts,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                };
                if let Err(error) = self
                    .accept(data)
                    .and_then(|_| self.control(stream, date, control))
                {
                    failed = Some(error);
                    break;
                }
            }
            let producer = self.producers.get_mut(&stream).expect("listed");
            if producer.waiting.is_empty() {
                if producer.ended() {
                    self.producers.remove(&stream);
                } else if let Some(gate) = &producer.gate {
                    gate.resume();
                }
            }
            if let Some(error) = failed {
                self.close_stream(stream, Some(error));
            }
        }
    }

    fn closed(&mut self, date: NaiveDate) {
        tracing::info!("{} closes", calendar::format_date(date));
        if let Some(recording) = &mut self.recording {
            recording.close(date);
        }
    }

    /// Writes the results that are ready: a provisional one replaces the date's
    /// `.live.parquet`; a final one gives the date's outputs as `vizflow run` writes
    /// them, and the `.live.parquet` goes.
    fn results(&mut self) -> Result<(), LiveError> {
        // Every message that arrived taken first: what waits on them must find the
        // channel empty once nothing is left to write.
        if let Some(engine) = self.engine.as_mut() {
            engine.absorb();
        }
        while let Some(result) = match self.engine.as_mut() {
            Some(engine) => engine.ready_result()?,
            None => None,
        } {
            self.result(result);
        }
        Ok(())
    }

    fn result(&mut self, mut result: DateResult) {
        let output = &self.options.output_dir;
        if let ResultKind::Provisional { watermark_ms } = result.kind {
            let Ok(partial) = result.partial else { return };
            let rows = match self.current {
                Some((date, _)) if date == result.date => self.rows,
                _ => 0,
            };
            let mut metadata = self.layout.metadata();
            metadata.extend([
                (
                    "vizflow.date".to_owned(),
                    calendar::format_date(result.date),
                ),
                ("vizflow.provisional".to_owned(), "true".to_owned()),
                ("vizflow.watermark_ms".to_owned(), watermark_ms.to_string()),
                ("vizflow.rows".to_owned(), rows.to_string()),
            ]);
            let snapshot = Snapshot {
                path: live_path(output, result.date),
                partial: partial.clone(),
                metadata,
                date: calendar::format_date(result.date),
                watermark_ms,
                rows,
            };
            self.snapshots.write(snapshot);
            let date = self.provisional.entry(result.date).or_default();
            date.push((watermark_ms, partial));
            return;
        }
        // The date's `.live.parquet` is in place before its final outputs remove it.
        self.snapshots.sync();
        let provisional = self.provisional.remove(&result.date).unwrap_or_default();
        if !provisional.is_empty() {
            let count = result.report.counts.entry(PROVISIONAL_RESULTS.to_owned());
            *count.or_default() += provisional.len() as u64;
        }
        let input = Path::new("the live feed");
        let outcome = outcome_of(output, input, result, &provisional, &self.layout);
        if let Some(timeline) = &self.options.timeline {
            let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
            timeline.finals.push(Instant::now());
        }
        match &outcome.status {
            DateStatus::Written { path, groups } => {
                let _ = std::fs::remove_file(live_path(output, outcome.date));
                tracing::info!(
                    "{}: {} rows, {groups} groups -> {}",
                    calendar::format_date(outcome.date),
                    outcome.report.count("rows_read"),
                    path.display()
                );
            }
            DateStatus::Failed(error) => tracing::error!("{error}"),
            _ => {}
        }
        self.summary.dates.push(outcome);
    }

    /// The input is over: closes every date and stops the engine.
    fn finish(mut self) -> Result<LiveSummary, LiveError> {
        if let Some((date, false)) = self.current {
            self.closed(date);
        }
        if let Some(engine) = self.engine.take() {
            for result in engine.finish()? {
                self.result(result);
            }
        }
        Ok(self.summary)
    }
}

/// How often `--clock wall` looks at the clock when nothing else happens.
const WALL_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a date's provisional partial is while the date is open.
pub fn live_path(dir: &Path, date: NaiveDate) -> PathBuf {
    let path = partial_path(dir, date);
    path.with_file_name(format!("{}.live.parquet", calendar::format_date(date)))
}

/// A schema as an Arrow IPC stream without batches (to hand it to other processes).
fn schema_to_ipc(schema: &Schema) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new(&mut bytes, schema).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    Ok(bytes)
}

/// The schema of [`schema_to_ipc`]'s bytes.
fn schema_from_ipc(bytes: &[u8]) -> Result<Schema, String> {
    let reader =
        arrow::ipc::reader::StreamReader::try_new(bytes, None).map_err(|e| e.to_string())?;
    Ok(reader.schema().as_ref().clone())
}

/// The schema the pipeline binds to: a live batch's, without `date` and the controls.
fn input_schema(schema: &Schema) -> Schema {
    let live = [DATE_COLUMN, WATERMARK_CONTROL, END_DATE_CONTROL];
    let fields = (schema.fields().iter())
        .filter(|f| !live.contains(&f.name().as_str()))
        .cloned()
        .collect::<Vec<_>>();
    Schema::new(fields)
}

/// Each row's date, from the `date` column (Date32, or an integer `YYYYMMDD`).
fn dates_of(batch: &RecordBatch) -> Result<Vec<NaiveDate>, String> {
    let column = batch.column_by_name(DATE_COLUMN).ok_or_else(|| {
        format!("a batch has no '{DATE_COLUMN}' column (Date32, or an integer YYYYMMDD)")
    })?;
    if column.null_count() > 0 {
        return Err(format!("the '{DATE_COLUMN}' column has nulls"));
    }
    match column.data_type() {
        DataType::Date32 => by_runs(column.as_primitive::<Date32Type>().values(), |d| {
            calendar::date_of_date32(d)
                .ok_or_else(|| format!("the '{DATE_COLUMN}' value {d} is not a date"))
        }),
        t if t.is_integer() => {
            let ints = arrow::compute::cast(column, &DataType::Int64).map_err(|e| e.to_string())?;
            by_runs(ints.as_primitive::<Int64Type>().values(), |v| {
                let (year, month, day) = (v / 10_000, v / 100 % 100, v % 100);
                (i32::try_from(year)
                    .ok()
                    .filter(|y| (1000..=9999).contains(y)))
                .and_then(|y| NaiveDate::from_ymd_opt(y, month as u32, day as u32))
                .ok_or_else(|| format!("the '{DATE_COLUMN}' value {v} is not a date YYYYMMDD"))
            })
        }
        other => Err(format!(
            "the '{DATE_COLUMN}' column is {other}; send Date32 or an integer YYYYMMDD"
        )),
    }
}

/// `date` of each value, computed once per run of equal values (a batch's rows are
/// mostly of one date).
fn by_runs<T: Copy + PartialEq>(
    values: &[T],
    date: impl Fn(T) -> Result<NaiveDate, String>,
) -> Result<Vec<NaiveDate>, String> {
    let mut dates = Vec::with_capacity(values.len());
    let mut last: Option<(T, NaiveDate)> = None;
    for value in values {
        let day = match last {
            Some((of, day)) if of == *value => day,
            _ => date(*value)?,
        };
        last = Some((*value, day));
        dates.push(day);
    }
    Ok(dates)
}

/// The batch's rows by date, in date order (each date's rows in arrival order).
fn split_by_date(
    batch: &RecordBatch,
    dates: &[NaiveDate],
) -> Result<Vec<(NaiveDate, RecordBatch)>, String> {
    let first = dates.first().copied();
    if dates.iter().all(|d| Some(*d) == first) {
        return Ok(first.map(|d| (d, batch.clone())).into_iter().collect());
    }
    let mut by_date: BTreeMap<NaiveDate, Vec<u32>> = BTreeMap::new();
    for (row, date) in dates.iter().enumerate() {
        by_date.entry(*date).or_default().push(row as u32);
    }
    by_date
        .into_iter()
        .map(|(date, rows)| {
            arrow::compute::take_record_batch(batch, &UInt32Array::from(rows))
                .map(|rows| (date, rows))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// What a batch's control rows say.
#[derive(Default)]
struct Control {
    watermark_ms: Option<i64>,
    end_date: bool,
}

/// The batch's data rows, and what its control rows say.
fn controls(batch: &RecordBatch) -> Result<(RecordBatch, Control), String> {
    let watermark = match batch.column_by_name(WATERMARK_CONTROL) {
        Some(c) => Some(
            arrow::compute::cast(c, &DataType::Int64)
                .map_err(|e| format!("the '{WATERMARK_CONTROL}' column: {e}"))?,
        ),
        None => None,
    };
    let end = match batch.column_by_name(END_DATE_CONTROL) {
        Some(c) => Some(
            arrow::compute::cast(c, &DataType::Boolean)
                .map_err(|e| format!("the '{END_DATE_CONTROL}' column: {e}"))?,
        ),
        None => None,
    };
    let mut control = Control::default();
    if watermark.is_none() && end.is_none() {
        return Ok((batch.clone(), control));
    }
    let n = batch.num_rows();
    let mut data = vec![true; n];
    if let Some(watermark) = &watermark {
        let values = watermark.as_primitive::<Int64Type>();
        for (row, keep) in data.iter_mut().enumerate() {
            if values.is_valid(row) {
                *keep = false;
                control.watermark_ms = control.watermark_ms.max(Some(values.value(row)));
            }
        }
    }
    if let Some(end) = &end {
        let values = end.as_boolean();
        for (row, keep) in data.iter_mut().enumerate() {
            if values.is_valid(row) && values.value(row) {
                *keep = false;
                control.end_date = true;
            }
        }
    }
    let keep = BooleanArray::from(data);
    let rows = arrow::compute::filter_record_batch(batch, &keep).map_err(|e| e.to_string())?;
    Ok((rows, control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, Int32Array};
    use std::sync::Arc;

    fn batch(dates: ArrayRef) -> RecordBatch {
        RecordBatch::try_from_iter([(DATE_COLUMN, dates)]).unwrap()
    }

    fn day(date: &str) -> NaiveDate {
        NaiveDate::parse_from_str(date, "%Y%m%d").unwrap()
    }

    #[test]
    fn each_rows_date_from_integers_or_date32_in_runs_or_not() {
        let ints = Arc::new(Int32Array::from(vec![
            20240102, 20240102, 20240103, 20240102, 20240103,
        ]));
        let expected = ["20240102", "20240102", "20240103", "20240102", "20240103"].map(day);
        assert_eq!(dates_of(&batch(ints)).unwrap(), expected);
        let days = expected.map(|d| (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days());
        let date32 = Arc::new(Date32Array::from_iter_values(days.map(|d| d as i32)));
        assert_eq!(dates_of(&batch(date32)).unwrap(), expected);
    }

    #[test]
    fn a_value_that_is_no_date_is_named_even_after_good_ones() {
        let ints = Arc::new(Int32Array::from(vec![20240102, 20240102, 20241302]));
        assert_eq!(
            dates_of(&batch(ints)).unwrap_err(),
            "the 'date' value 20241302 is not a date YYYYMMDD"
        );
    }
}
