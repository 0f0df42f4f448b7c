//! Batch replay: run a pipeline over many dates, writing one partial per date.
//!
//! Dates run in calendar order through one dataflow ([`Engine`]); each date's file is
//! split into parts that the workers decode in parallel. Every partial is written
//! atomically (temporary file, then rename) to `{output_dir}/{YYYYMMDD}.parquet`, with
//! the date's quality report beside it as `{YYYYMMDD}.report.json`. A date that fails
//! (missing file, bad data) is reported and the others go on.
//!
//! A run may span several processes ([`RunOptions::cluster`]): every process runs the
//! same plan (process 0's: the dates to compute), each date's result comes out of the
//! process that owns it ([`crate::engine::date_owner`]), which alone writes its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use chrono::NaiveDate;
use vizflow_operators::next_day::NextDays;
use vizflow_operators::report::DateReport;
use vizflow_operators::time::date_key;

use vizflow_operators::batch::Partition;

use crate::calendar::{self, TradingCalendar};
use crate::cluster::{self, ClusterError, ClusterSpec, DatePlan};
use crate::config::{BoundPipeline, ConfigError, Pipeline, widest_schema};
use crate::engine::{DateResult, Engine, EngineError, Feeding, ResultKind, Workers, date_owner};
use crate::io::{
    DateFile, FileFormat, IoError, read_parquet, write_bytes_atomic, write_parquet_atomic,
};
use crate::partials::Layout;
pub use crate::progress::ProgressStyle;
use crate::progress::{DateProgressStatus, Progress};

/// Which dates to run.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum DateSelection {
    /// Every trading day of the calendar.
    #[default]
    All,
    /// A `--dates` spec: `20240102..20240131`, `20240102,20240103` or one date.
    Spec(String),
    /// A file with one date per line.
    File(PathBuf),
}

/// Options of a run (the CLI's flags).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Overrides `[input] dir`.
    pub input_dir: Option<PathBuf>,
    /// Overrides `[output] dir`.
    pub output_dir: Option<PathBuf>,
    /// The dates.
    pub dates: DateSelection,
    /// Worker threads.
    pub workers: usize,
    /// Skip dates whose partial exists and was made by the same pipeline.
    pub skip_existing: bool,
    /// Progress display.
    pub progress: ProgressStyle,
    /// How rows are spread over the workers; `None` chooses: by date when the run spans
    /// several processes and has at least as many dates as workers (no row crosses the
    /// network), by symbol otherwise (one date in memory at a time).
    pub partition: Option<Partition>,
    /// This process's place in a cluster of processes (`None`: this process alone).
    pub cluster: Option<ClusterSpec>,
    /// Stop at the first date that fails (the dates not run are reported as such).
    pub fail_fast: bool,
    /// Set from elsewhere (a Ctrl-C in Python) to stop the run: no date is begun after
    /// it is set, the dates in flight finish and are written, the rest are reported
    /// as not run.
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            input_dir: None,
            output_dir: None,
            dates: DateSelection::All,
            workers: 1,
            skip_existing: false,
            progress: ProgressStyle::Auto,
            partition: None,
            cluster: None,
            fail_fast: false,
            stop: None,
        }
    }
}

/// What happened to one date.
#[derive(Clone, Debug, PartialEq)]
pub enum DateStatus {
    /// The partial was written.
    Written {
        /// Where.
        path: PathBuf,
        /// Groups (rows of the partial).
        groups: usize,
    },
    /// An existing partial from the same pipeline was kept.
    Skipped,
    /// The date failed; nothing was written for it.
    Failed(String),
    /// The date was not run: an earlier date failed and the run was `--fail-fast`.
    NotRun,
}

/// One date's outcome.
#[derive(Clone, Debug)]
pub struct DateOutcome {
    /// The date.
    pub date: NaiveDate,
    /// What happened.
    pub status: DateStatus,
    /// Its counters.
    pub report: DateReport,
}

impl DateOutcome {
    /// A date with nothing counted.
    fn new(date: NaiveDate, status: DateStatus) -> DateOutcome {
        DateOutcome {
            date,
            status,
            report: DateReport::default(),
        }
    }

    /// A date that failed before it ran, with nothing counted.
    fn failed(date: NaiveDate, message: String) -> DateOutcome {
        let status = DateStatus::Failed(format!("{}: {message}", calendar::format_date(date)));
        DateOutcome {
            date,
            status,
            report: DateReport::default(),
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// One entry per selected date, in date order.
    pub dates: Vec<DateOutcome>,
    /// Input rows processed.
    pub rows: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Seconds each stage spent, summed over dates and this process's workers.
    pub stage_seconds: BTreeMap<String, f64>,
}

impl RunSummary {
    /// The dates that failed.
    pub fn failed(&self) -> impl Iterator<Item = &DateOutcome> {
        self.dates
            .iter()
            .filter(|d| matches!(d.status, DateStatus::Failed(_)))
    }
}

/// An error that stops a run before any date runs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The pipeline does not fit the data.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The dates could not be resolved.
    #[error(transparent)]
    Calendar(#[from] calendar::CalendarError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The output directory could not be created.
    #[error("cannot create output directory {path}: {source}")]
    Output {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No date matched.
    #[error("no dates to run: {0}")]
    NoDates(String),
    /// The processes of a cluster could not connect.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// The input file of `date`.
pub fn input_path(dir: &Path, pattern: &str, date: NaiveDate) -> PathBuf {
    dir.join(pattern.replace("{date}", &calendar::format_date(date)))
}

/// The partial of `date`.
pub fn partial_path(dir: &Path, date: NaiveDate) -> PathBuf {
    dir.join(format!("{}.parquet", calendar::format_date(date)))
}

/// The quality report of `date`, beside its partial.
pub fn report_path(dir: &Path, date: NaiveDate) -> PathBuf {
    dir.join(format!("{}.report.json", calendar::format_date(date)))
}

/// The provisional results of `date` (`[stream] emit_every`), beside its partial: one
/// file, each provisional partial's rows with its `watermark_ms` first.
pub fn provisional_path(dir: &Path, date: NaiveDate) -> PathBuf {
    dir.join(format!(
        "{}.provisional.parquet",
        calendar::format_date(date)
    ))
}

/// The count, in a date's report, of its provisional results written beside it.
pub const PROVISIONAL_RESULTS: &str = "stream.provisional_results";

/// The column of [`provisional_path`]'s file that says which provisional result a row
/// is of: its watermark, in ms of trading time.
pub const WATERMARK_COLUMN: &str = "watermark_ms";

pub use crate::partials::CONFIG_HASH_KEY;

/// Resolves the dates of a run.
pub fn select_dates(
    pipeline: &Pipeline,
    input_dir: &Path,
    selection: &DateSelection,
) -> Result<Vec<NaiveDate>, RunError> {
    let calendar = || trading_calendar(pipeline, input_dir);
    let mut dates = match selection {
        DateSelection::All => calendar()?.dates().to_vec(),
        DateSelection::Spec(spec) => calendar::parse_date_spec(spec, &calendar()?)?,
        DateSelection::File(path) => calendar::read_dates_file(path)?,
    };
    dates.sort();
    dates.dedup();
    if dates.is_empty() {
        return Err(RunError::NoDates(format!(
            "no files match {} in {}; check [input] dir and pattern, or pass --dates",
            pipeline.input.pattern,
            input_dir.display()
        )));
    }
    Ok(dates)
}

/// The run's trading days: `[input] calendar`, else the dates of the input files.
pub(crate) fn trading_calendar(
    pipeline: &Pipeline,
    input_dir: &Path,
) -> Result<TradingCalendar, RunError> {
    Ok(match &pipeline.input.calendar {
        Some(path) => TradingCalendar::from_file(path)?,
        None => TradingCalendar::discover(input_dir, &pipeline.input.pattern)?,
    })
}

/// True when `path` holds a partial made by a pipeline with `hash`.
fn made_by(path: &Path, hash: &str) -> Option<bool> {
    let (_, metadata) = read_parquet(path).ok()?;
    Some(
        metadata
            .iter()
            .any(|(k, v)| k == CONFIG_HASH_KEY && v == hash),
    )
}

/// A date's report file: its counts and errors (not how the run handles them).
#[derive(serde::Serialize)]
struct ReportFile<'a> {
    counts: &'a BTreeMap<String, u64>,
    errors: &'a [String],
    /// The first late rows' `row_id`s (`[stream] late = "drop"`), when there are any.
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    late_row_ids: &'a [u64],
}

impl ReportFile<'_> {
    fn of(report: &DateReport) -> ReportFile<'_> {
        ReportFile {
            counts: &report.counts,
            errors: &report.errors,
            late_row_ids: &report.late_row_ids,
        }
    }
}

/// Why a date's outputs could not be written (the date fails with this message).
#[derive(Debug, thiserror::Error)]
enum OutputError {
    /// The report could not be encoded as JSON.
    #[error("{0}")]
    Report(#[from] serde_json::Error),
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] IoError),
    /// The provisional partials could not be put in one table (a bug: they share the
    /// final partial's columns).
    #[error("the provisional results could not be put together: {0}")]
    Provisional(#[from] arrow::error::ArrowError),
}

fn write_outputs(
    output_dir: &Path,
    result: &DateResult,
    partial: &RecordBatch,
    provisional: &[(i64, RecordBatch)],
    layout: &Layout,
) -> Result<PathBuf, OutputError> {
    let path = partial_path(output_dir, result.date);
    let mut metadata = layout.metadata();
    metadata.push((
        "vizflow.date".to_owned(),
        calendar::format_date(result.date),
    ));
    // The report first: a partial on disk always has its report beside it, even when
    // the process is killed between the two writes (then the date has no partial and
    // is computed again).
    let report = serde_json::to_vec_pretty(&ReportFile::of(&result.report))?;
    write_bytes_atomic(&report_path(output_dir, result.date), &report)?;
    if !provisional.is_empty() {
        let rows = provisional_rows(partial, provisional)?;
        write_parquet_atomic(&provisional_path(output_dir, result.date), &rows, &metadata)?;
    }
    write_parquet_atomic(&path, partial, &metadata)?;
    Ok(path)
}

/// A date's provisional partials in one batch, `watermark_ms` first, in watermark
/// order (the final partial gives the schema).
fn provisional_rows(
    final_partial: &RecordBatch,
    provisional: &[(i64, RecordBatch)],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let mut fields = vec![Arc::new(Field::new(
        WATERMARK_COLUMN,
        DataType::Int64,
        false,
    ))];
    fields.extend(final_partial.schema().fields().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    let batches = (provisional.iter())
        .map(|(at, partial)| {
            let at: ArrayRef = Arc::new(Int64Array::from(vec![*at; partial.num_rows()]));
            let columns = std::iter::once(at).chain(partial.columns().iter().cloned());
            RecordBatch::try_new(schema.clone(), columns.collect())
        })
        .collect::<Result<Vec<_>, _>>()?;
    arrow::compute::concat_batches(&schema, &batches)
}

/// Runs `pipeline` over the selected dates.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let input_dir = options
        .input_dir
        .clone()
        .unwrap_or_else(|| pipeline.input.dir.clone());
    let output_dir = options
        .output_dir
        .clone()
        .unwrap_or_else(|| pipeline.output.dir.clone());
    let dates = select_dates(pipeline, &input_dir, &options.dates)?;
    std::fs::create_dir_all(&output_dir).map_err(|source| RunError::Output {
        path: output_dir.clone(),
        source,
    })?;
    let hash = pipeline.config_hash();
    let mut plan = plan_dates(dates, &output_dir, &hash, options);
    plan_next_days(pipeline, &input_dir, &mut plan)?;
    let (workers, place, plan) = join(plan, &hash, options)?;
    let prices_only: BTreeSet<NaiveDate> = plan.prices_only.iter().copied().collect();
    let skipped = if place.process == 0 {
        plan.skipped.len()
    } else {
        0
    };
    let total = skipped
        + (plan.run.iter().enumerate())
            .filter(|(i, date)| place.owns(*i) && !prices_only.contains(date))
            .count();
    let mut recorder = Recorder {
        progress: Progress::run(options.progress, total),
        total,
        summary: RunSummary::default(),
        output_dir: &output_dir,
        input_dir: &input_dir,
        pattern: &pipeline.input.pattern,
        layout: Layout::of(pipeline),
        first_failure: None,
        fail_fast: options.fail_fast,
        provisional: BTreeMap::new(),
        prices_only,
        stop: options.stop.clone(),
        unfed: BTreeSet::new(),
    };
    if place.process == 0 {
        for &date in &plan.skipped {
            recorder.record(DateOutcome::new(date, DateStatus::Skipped));
        }
    }
    let inputs = Inputs {
        dir: &input_dir,
        pattern: &pipeline.input.pattern,
    };
    let Some(opened) = open_inputs(&plan, &inputs, place, &mut recorder) else {
        return Ok(recorder.finish(started));
    };
    let mut bound = match &opened.first {
        Some(first) => bind(pipeline, first, &opened.others)?,
        None => return Ok(recorder.finish(started)),
    };
    bound.next_days = Arc::new(NextDays::new(
        plan.next.iter().copied(),
        plan.prices_only.iter().map(|d| date_key(*d)),
    ));
    let partition =
        options
            .partition
            .unwrap_or(if place.in_cluster() && plan.run.len() >= place.peers() {
                Partition::Date
            } else {
                Partition::Symbol
            });
    let engine = Engine::launch(bound.clone(), workers, partition, Feeding::Shared)?;
    let feeder = Feeder {
        plan: &plan,
        inputs: &inputs,
        bound: &bound,
        batch_rows: pipeline.input.batch_rows,
        place,
        // Dates in flight: one partitioned by symbol (a date's rows are never in memory
        // beside another's), one per worker partitioned by date.
        // A date waiting for its next trading day's prices (returns to the next day)
        // is in flight beside the dates up to that day.
        window: match partition {
            Partition::Symbol => 1,
            Partition::Date => place.peers(),
        } + next_day_lag(&plan),
    };
    feeder.run(engine, opened, &mut recorder)?;
    Ok(recorder.finish(started))
}

/// The dates to compute and, with `--skip-existing`, those whose partial exists from
/// the same pipeline.
fn plan_dates(
    dates: Vec<NaiveDate>,
    output_dir: &Path,
    hash: &str,
    options: &RunOptions,
) -> DatePlan {
    let mut plan = DatePlan::default();
    for date in dates {
        let partial = partial_path(output_dir, date);
        // A partial counts only with its report (older versions wrote the report last).
        let complete = |partial: &Path| {
            report_path(output_dir, date)
                .exists()
                .then(|| made_by(partial, hash))?
        };
        match options.skip_existing.then(|| complete(&partial)).flatten() {
            Some(true) => plan.skipped.push(date),
            Some(false) => {
                if options.progress != ProgressStyle::Quiet {
                    eprintln!(
                        "{}: the partial there was made by a different pipeline; recomputing it",
                        partial.display()
                    );
                }
                plan.run.push(date);
            }
            None => plan.run.push(date),
        }
    }
    plan
}

/// With returns to the next trading day (`"next_open"`, `"next_close"`): the next
/// trading day of each date to compute (the calendar's next date, `[input] calendar`
/// or the input files), when it has a file, and those next days not computed, which
/// are read for their prices alone (SEMANTICS.md, *Cross-date returns*).
fn plan_next_days(
    pipeline: &Pipeline,
    input_dir: &Path,
    plan: &mut DatePlan,
) -> Result<(), RunError> {
    let crosses = (pipeline.forward_return.as_ref())
        .is_some_and(|(_, horizons)| horizons.iter().any(|h| h.crosses_date()));
    if !crosses || plan.run.is_empty() {
        return Ok(());
    }
    let calendar = trading_calendar(pipeline, input_dir)?;
    let computed: BTreeSet<NaiveDate> = plan.run.iter().copied().collect();
    for &date in &plan.run {
        let Some(next) = calendar.next(date) else {
            continue;
        };
        if !input_path(input_dir, &pipeline.input.pattern, next).exists() {
            continue;
        }
        plan.next.push((date_key(date), date_key(next)));
        // Two dates share a next day when a dates file lists one the calendar does not.
        if !computed.contains(&next) && !plan.prices_only.contains(&next) {
            plan.prices_only.push(next);
        }
    }
    plan.run.extend(plan.prices_only.iter().copied());
    plan.run.sort();
    Ok(())
}

/// How many dates of the run a date may wait beyond (returns to the next day): 1 when
/// each date's next trading day is the next date of the run, more when dates the
/// calendar does not list (a `--dates-file`) come between.
fn next_day_lag(plan: &DatePlan) -> usize {
    let ordinal = |key: u32| plan.run.iter().position(|d| date_key(*d) == key);
    (plan.next.iter())
        .filter_map(|(date, next)| Some(ordinal(*next)? - ordinal(*date)?))
        .max()
        .unwrap_or(0)
}

/// This process's place among the workers of a run.
#[derive(Clone, Copy, Debug)]
struct Place {
    /// This process's index.
    process: usize,
    /// How many processes.
    processes: usize,
    /// Worker threads per process.
    workers: usize,
}

impl Place {
    /// Workers in all processes.
    fn peers(self) -> usize {
        self.workers * self.processes
    }

    fn in_cluster(self) -> bool {
        self.processes > 1
    }

    /// True when this process reports the `ordinal`-th date of the plan.
    fn owns(self, ordinal: usize) -> bool {
        date_owner(ordinal, self.peers()) / self.workers == self.process
    }
}

/// Where the workers run; in a cluster, every process takes process 0's plan.
fn join(
    plan: DatePlan,
    hash: &str,
    options: &RunOptions,
) -> Result<(Workers, Place, DatePlan), RunError> {
    let place = |process, processes| Place {
        process,
        processes,
        workers: options.workers,
    };
    Ok(match &options.cluster {
        Some(spec) if spec.processes > 1 => {
            let mut connected = cluster::connect(spec, hash, &plan)?;
            let plan = std::mem::take(&mut connected.plan);
            let place = place(spec.process, spec.processes);
            (Workers::Cluster(connected), place, plan)
        }
        _ => (Workers::threads(options.workers), place(0, 1), plan),
    })
}

/// Where the input files are.
struct Inputs<'a> {
    dir: &'a Path,
    pattern: &'a str,
}

impl Inputs<'_> {
    fn open(&self, date: NaiveDate) -> Result<Arc<DateFile>, IoError> {
        DateFile::open(&input_path(self.dir, self.pattern, date)).map(Arc::new)
    }
}

/// The input files opened before the run: the first that opens, the schemas of the
/// others, and the CSV files kept for their turn.
struct OpenedInputs {
    /// The position in the plan of the first date whose file opens.
    first_ordinal: usize,
    /// Its file, until its date is fed.
    first: Option<Arc<DateFile>>,
    /// The schemas of the other files that open.
    others: Vec<Schema>,
    /// Opening a CSV file is a parsing pass (it counts the rows and settles the
    /// types), so the opened files are kept for their turn; they hold no data. Other
    /// formats open from their footers and are opened again.
    csv: BTreeMap<NaiveDate, Arc<DateFile>>,
}

/// Opens every date's file of the plan; `None` when none opens. The dates before the
/// first that opens fail here (those this process reports); later failures are
/// reported when the date's turn comes.
fn open_inputs(
    plan: &DatePlan,
    inputs: &Inputs,
    place: Place,
    recorder: &mut Recorder,
) -> Option<OpenedInputs> {
    let mut opened: Option<OpenedInputs> = None;
    for (ordinal, &date) in plan.run.iter().enumerate() {
        match (inputs.open(date), opened.as_mut()) {
            (Ok(file), None) => {
                opened = Some(OpenedInputs {
                    first_ordinal: ordinal,
                    first: Some(file),
                    others: Vec::new(),
                    csv: BTreeMap::new(),
                })
            }
            (Ok(file), Some(opened)) => {
                opened.others.push(file.schema().as_ref().clone());
                if file.format() == FileFormat::Csv {
                    opened.csv.insert(date, file);
                }
            }
            (Err(_), Some(_)) => {}
            (Err(error), None) if place.owns(ordinal) && !recorder.prices_only.contains(&date) => {
                recorder.record(DateOutcome::failed(date, error.to_string()))
            }
            (Err(_), None) => {}
        }
    }
    opened
}

/// The pipeline bound to the schema of the first date whose file opens, each column
/// widened to hold its type on every date (`widest_schema`), so that no date's values
/// change when they are read as the run's types.
fn bind(
    pipeline: &Pipeline,
    first: &DateFile,
    others: &[Schema],
) -> Result<BoundPipeline, ConfigError> {
    let widest = widest_schema(&first.schema(), others);
    // A pipeline that needs a column's narrower type (e.g. an integer symbol column
    // that is float on some date) binds to the first date's: the others fail alone.
    let bound = match pipeline.bind(&widest) {
        Ok(bound) => Ok(bound),
        Err(_) => pipeline.bind(&first.schema()),
    };
    bound.map_err(|e| match e {
        ConfigError::Invalid(message) => {
            ConfigError::Invalid(format!("{message} (in {})", first.path().display()))
        }
        other => other,
    })
}

/// Why a date's input file cannot be fed (the date fails with this message, which
/// names the file).
#[derive(Debug, thiserror::Error)]
enum InputError {
    /// The file does not open.
    #[error("{0}")]
    Open(IoError),
    /// Its schema does not fit the bound pipeline.
    #[error("{}: {message}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
}

/// Feeds the dates of a plan into the engine, one window of dates in flight.
struct Feeder<'a> {
    plan: &'a DatePlan,
    inputs: &'a Inputs<'a>,
    bound: &'a BoundPipeline,
    batch_rows: usize,
    place: Place,
    window: usize,
}

impl Feeder<'_> {
    /// Feeds every date, then drains the engine: each result is recorded, and the
    /// dates a `--fail-fast` run did not begin are recorded as not run.
    fn run(
        &self,
        mut engine: Engine,
        opened: OpenedInputs,
        recorder: &mut Recorder,
    ) -> Result<(), RunError> {
        let fed = match self.feed(&mut engine, opened, recorder) {
            Ok(fed) => fed,
            Err(error) => {
                if self.place.in_cluster() {
                    // Stopping gracefully would let the other processes go on without
                    // this process's rows; the workers end with the process instead.
                    engine.abandon();
                }
                return Err(error);
            }
        };
        let results = engine.drain()?;
        recorder.failed_elsewhere(engine.take_failed_elsewhere());
        for result in results {
            recorder.result(result);
        }
        engine.finish()?;
        for (ordinal, &date) in self.plan.run.iter().enumerate().skip(fed) {
            if self.place.owns(ordinal) && !recorder.prices_only.contains(&date) {
                recorder.record(DateOutcome::new(date, DateStatus::NotRun));
            }
        }
        Ok(())
    }

    /// Begins each date of the plan from the first that opened and pushes its file,
    /// taking results as they come out; returns how many dates were begun (fewer than
    /// planned when a `--fail-fast` run stopped).
    fn feed(
        &self,
        engine: &mut Engine,
        mut opened: OpenedInputs,
        recorder: &mut Recorder,
    ) -> Result<usize, RunError> {
        let plan = &self.plan.run;
        for (ordinal, &date) in plan.iter().enumerate().skip(opened.first_ordinal) {
            if recorder.stopped() {
                return Ok(ordinal);
            }
            engine.begin_date(date)?;
            for result in engine.wait_for_window(self.window)? {
                recorder.failed_elsewhere(engine.take_failed_elsewhere());
                recorder.result(result)
            }
            if recorder.stopped() {
                // Begun without rows: its result is "not run", not an empty partial.
                recorder.unfed.insert(date);
                return Ok(ordinal + 1);
            }
            match self.file(date, &mut opened) {
                Ok(file) => {
                    if file.torn_bytes() > 0 {
                        // A recording cut short: read up to its last complete message.
                        let torn = ("read.torn_tail_bytes", file.torn_bytes());
                        engine.diagnostics().add_all(date_key(date), [torn]);
                    }
                    for part in 0..file.num_parts() {
                        engine.push_file_part(file.clone(), part, self.batch_rows)?;
                    }
                }
                // The message names the file: the date's outcome will not name it again.
                Err(error) if self.place.in_cluster() => engine.diagnostics().input_error(
                    date_key(date),
                    format!("process {}: {error}", self.place.process),
                ),
                Err(error) => engine
                    .diagnostics()
                    .input_error(date_key(date), error.to_string()),
            }
        }
        Ok(plan.len())
    }

    /// The file of `date`, checked against the bound pipeline.
    fn file(
        &self,
        date: NaiveDate,
        opened: &mut OpenedInputs,
    ) -> Result<Arc<DateFile>, InputError> {
        // The first file is not kept open past its date (its mapping and index would
        // outlive it).
        let file = match opened.first.take().or_else(|| opened.csv.remove(&date)) {
            Some(file) => file,
            None => self.inputs.open(date).map_err(InputError::Open)?,
        };
        let checked = match self.bound.next_days.is_prices_only(date_key(date)) {
            true => (self.bound).check_columns(&file.schema(), &self.bound.price_read),
            false => self.bound.check_schema(&file.schema()),
        };
        match checked {
            Ok(()) => Ok(file),
            Err(message) => Err(InputError::Schema {
                path: file.path().to_owned(),
                message: message.to_string(),
            }),
        }
    }
}

/// Writes each date's outputs as its result arrives, and keeps the summary and the
/// progress display.
struct Recorder<'a> {
    progress: Progress,
    total: usize,
    summary: RunSummary,
    output_dir: &'a Path,
    input_dir: &'a Path,
    pattern: &'a str,
    /// What the partials say about themselves.
    layout: Layout,
    /// The earliest failed date and its error.
    first_failure: Option<(NaiveDate, String)>,
    fail_fast: bool,
    /// Each open date's provisional results so far, written with its final one.
    provisional: BTreeMap<NaiveDate, Vec<(i64, RecordBatch)>>,
    /// The dates read for their prices alone: no outcome of their own.
    prices_only: BTreeSet<NaiveDate>,
    /// [`RunOptions::stop`].
    stop: Option<Arc<AtomicBool>>,
    /// Dates begun but not fed (the run stopped meanwhile): their results are "not
    /// run".
    unfed: BTreeSet<NaiveDate>,
}

impl Recorder<'_> {
    /// True when a date failed in a `--fail-fast` run, or the run was asked to stop:
    /// no more dates are fed.
    fn stopped(&self) -> bool {
        (self.fail_fast && self.first_failure.is_some())
            || (self.stop.as_ref()).is_some_and(|stop| stop.load(Ordering::Relaxed))
    }

    fn record(&mut self, outcome: DateOutcome) {
        if let DateStatus::Failed(message) = &outcome.status
            && self
                .first_failure
                .as_ref()
                .is_none_or(|(d, _)| outcome.date < *d)
        {
            self.first_failure = Some((outcome.date, message.clone()));
        }
        let rows = outcome.report.count("rows_read");
        let status = match &outcome.status {
            DateStatus::Written { path, groups } => DateProgressStatus::Written {
                rows,
                groups: *groups,
                partial: path.display().to_string(),
                late_rows: outcome
                    .report
                    .count(vizflow_operators::watermark::LATE_ROWS),
                provisional: outcome.report.count(PROVISIONAL_RESULTS),
            },
            DateStatus::Skipped => DateProgressStatus::Skipped,
            DateStatus::Failed(error) => DateProgressStatus::Failed {
                error: error.clone(),
            },
            DateStatus::NotRun => DateProgressStatus::NotRun,
        };
        let done = self.summary.dates.len() + 1;
        self.progress
            .date(outcome.date, rows, status, done, self.total);
        self.summary.rows += rows;
        for (stage, seconds) in &outcome.report.stage_seconds {
            *self.summary.stage_seconds.entry(stage.clone()).or_default() += seconds;
        }
        self.summary.dates.push(outcome);
    }

    /// Dates of other processes that failed: under `--fail-fast`, no later date is
    /// written or fed (their owners report them).
    fn failed_elsewhere(&mut self, failures: Vec<(NaiveDate, Vec<String>)>) {
        for (date, errors) in failures {
            if self.prices_only.contains(&date) {
                continue;
            }
            if self.first_failure.as_ref().is_none_or(|(d, _)| date < *d) {
                let message = format!("{}: {}", calendar::format_date(date), errors.join("; "));
                self.first_failure = Some((date, message));
            }
        }
    }

    fn result(&mut self, mut result: DateResult) {
        if self.prices_only.contains(&result.date) {
            // Read for the date before it (its failure is counted there).
            return;
        }
        if let ResultKind::Provisional { watermark_ms } = result.kind {
            if let Ok(partial) = result.partial {
                let kept = self.provisional.entry(result.date).or_default();
                kept.push((watermark_ms, partial));
            }
            return;
        }
        let provisional = self.provisional.remove(&result.date).unwrap_or_default();
        if self.unfed.remove(&result.date) {
            self.record(DateOutcome::new(result.date, DateStatus::NotRun));
            return;
        }
        if !provisional.is_empty() {
            let count = result.report.counts.entry(PROVISIONAL_RESULTS.to_owned());
            *count.or_default() += provisional.len() as u64;
        }
        // With --fail-fast, dates after the first failed one are not written, even
        // those that were already in flight.
        if let (true, Some((failed, _))) = (self.fail_fast, &self.first_failure)
            && result.date > *failed
        {
            self.record(DateOutcome::new(result.date, DateStatus::NotRun));
            return;
        }
        let input = input_path(self.input_dir, self.pattern, result.date);
        let outcome = outcome_of(self.output_dir, &input, result, &provisional, &self.layout);
        self.record(outcome);
    }

    fn finish(mut self, started: Instant) -> RunSummary {
        self.progress.finish();
        self.summary.dates.sort_by_key(|d| d.date);
        self.summary.elapsed = started.elapsed();
        self.summary
    }
}

/// Writes a date's outputs; `input` is its input file, named in the errors unless one
/// came from reading it ([`DateReport::errors_name_input`]: its message names it).
pub(crate) fn outcome_of(
    output_dir: &Path,
    input: &Path,
    result: DateResult,
    provisional: &[(i64, RecordBatch)],
    layout: &Layout,
) -> DateOutcome {
    let date = calendar::format_date(result.date);
    let status = match &result.partial {
        Err(errors) => {
            let errors = errors.join("; ");
            match result.report.errors_name_input {
                true => DateStatus::Failed(format!("{date}: {errors}")),
                false => DateStatus::Failed(format!("{date}: {}: {errors}", input.display())),
            }
        }
        Ok(partial) => match write_outputs(output_dir, &result, partial, provisional, layout) {
            Ok(path) => DateStatus::Written {
                path,
                groups: partial.num_rows(),
            },
            Err(error) => DateStatus::Failed(format!("{date}: {error}")),
        },
    };
    let date = result.date;
    DateOutcome {
        date,
        status,
        report: result.report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(errors: &[&str], errors_name_input: bool) -> DateStatus {
        let date = NaiveDate::from_ymd_opt(2024, 1, 4).unwrap();
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let result = DateResult {
            date,
            kind: crate::engine::ResultKind::Final,
            partial: Err(errors.clone()),
            report: DateReport {
                errors,
                errors_name_input,
                ..DateReport::default()
            },
        };
        let input = Path::new("data/alpha_20240104.feather");
        outcome_of(Path::new("out"), input, result, &[], &Layout::default()).status
    }

    #[test]
    fn a_failed_date_names_its_input_unless_an_error_came_from_reading_it() {
        assert_eq!(
            failed(&["parse_time: bad value", "bin: bad"], false),
            DateStatus::Failed(
                "20240104: data/alpha_20240104.feather: parse_time: bad value; bin: bad".into()
            )
        );
        assert_eq!(
            failed(&["cannot read data/alpha_20240104.feather: gone"], true),
            DateStatus::Failed("20240104: cannot read data/alpha_20240104.feather: gone".into())
        );
        // Decided by where the error came from, not by what its text says.
        assert_eq!(
            failed(&["a value 'data/alpha_20240104.feather'"], false),
            DateStatus::Failed(
                "20240104: data/alpha_20240104.feather: a value 'data/alpha_20240104.feather'"
                    .into()
            )
        );
    }
}
