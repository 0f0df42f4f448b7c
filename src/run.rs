//! Batch replay: run a pipeline over many dates, writing one partial per date.
//!
//! Dates run in calendar order through one dataflow ([`Engine`]); each date's file is
//! split into parts that the workers decode in parallel. Every partial is written
//! atomically (temporary file, then rename) to `{output_dir}/{YYYYMMDD}.parquet`, with
//! the date's quality report beside it as `{YYYYMMDD}.report.json`. A date that fails
//! (missing file, bad data) is reported and the others go on.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use vizflow_operators::report::DateReport;

use crate::calendar::{self, TradingCalendar};
use crate::config::{BoundPipeline, ConfigError, Pipeline};
use crate::engine::{DateResult, Engine, EngineError};
use crate::io::{DateFile, read_parquet, write_bytes_atomic, write_parquet_atomic};

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

/// How to show progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A bar on a terminal, log lines otherwise.
    #[default]
    Auto,
    /// Log lines (to stderr).
    Log,
    /// Nothing.
    Quiet,
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
}

/// The input file of `date`.
pub fn input_path(dir: &Path, pattern: &str, date: NaiveDate) -> PathBuf {
    dir.join(pattern.replace("{date}", &calendar::format_date(date)))
}

/// The partial of `date`.
pub fn partial_path(dir: &Path, date: NaiveDate) -> PathBuf {
    dir.join(format!("{}.parquet", calendar::format_date(date)))
}

/// Key-value metadata names in every partial.
pub const CONFIG_HASH_KEY: &str = "vizflow.config_hash";

/// Resolves the dates of a run.
pub fn select_dates(
    pipeline: &Pipeline,
    input_dir: &Path,
    selection: &DateSelection,
) -> Result<Vec<NaiveDate>, RunError> {
    let calendar = || -> Result<TradingCalendar, RunError> {
        Ok(match &pipeline.input.calendar {
            Some(path) => TradingCalendar::from_file(path)?,
            None => TradingCalendar::discover(input_dir, &pipeline.input.pattern)?,
        })
    };
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

/// True when `path` holds a partial made by a pipeline with `hash`.
fn made_by(path: &Path, hash: &str) -> Option<bool> {
    let (_, metadata) = read_parquet(path).ok()?;
    Some(
        metadata
            .iter()
            .any(|(k, v)| k == CONFIG_HASH_KEY && v == hash),
    )
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    log: bool,
    started: Instant,
    rows: u64,
}

impl Progress {
    fn new(style: ProgressStyle, dates: usize) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (style == ProgressStyle::Auto && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(dates as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} dates  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let log = style == ProgressStyle::Log || (style == ProgressStyle::Auto && !terminal);
        Progress {
            bar,
            log,
            started: Instant::now(),
            rows: 0,
        }
    }

    fn date(&mut self, outcome: &DateOutcome, done: usize, total: usize) {
        let rows = outcome.report.count("rows_read");
        self.rows += rows;
        let rate = self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let status = match &outcome.status {
            DateStatus::Written { path, groups } => {
                format!("{rows} rows -> {groups} groups, {}", path.display())
            }
            DateStatus::Skipped => "skipped (partial exists)".to_owned(),
            DateStatus::Failed(error) => format!("FAILED: {error}"),
        };
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{:.2}M rows/s", rate / 1e6));
            bar.inc(1);
            if matches!(outcome.status, DateStatus::Failed(_)) {
                bar.println(format!("{}: {status}", calendar::format_date(outcome.date)));
            }
        }
        if self.log {
            eprintln!(
                "[{done}/{total}] {}: {status} ({:.2}M rows/s overall)",
                calendar::format_date(outcome.date),
                rate / 1e6
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn write_outputs(output_dir: &Path, result: &DateResult, hash: &str) -> Result<PathBuf, String> {
    let path = partial_path(output_dir, result.date);
    let partial = result
        .partial
        .as_ref()
        .map_err(|errors| errors.join("; "))?;
    let metadata = vec![
        (CONFIG_HASH_KEY.to_owned(), hash.to_owned()),
        (
            "vizflow.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        (
            "vizflow.date".to_owned(),
            calendar::format_date(result.date),
        ),
    ];
    write_parquet_atomic(&path, partial, &metadata).map_err(|e| e.to_string())?;
    let report = serde_json::to_vec_pretty(&result.report).map_err(|e| e.to_string())?;
    let report_path = output_dir.join(format!(
        "{}.report.json",
        calendar::format_date(result.date)
    ));
    write_bytes_atomic(&report_path, &report).map_err(|e| e.to_string())?;
    Ok(path)
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
    let mut progress = Progress::new(options.progress, dates.len());
    let mut summary = RunSummary::default();
    let mut finished = 0usize;
    let mut record = |summary: &mut RunSummary, progress: &mut Progress, outcome: DateOutcome| {
        finished += 1;
        progress.date(&outcome, finished, dates.len());
        summary.rows += outcome.report.count("rows_read");
        summary.dates.push(outcome);
    };

    let mut engine: Option<(Engine, BoundPipeline)> = None;
    for &date in &dates {
        if options.skip_existing && made_by(&partial_path(&output_dir, date), &hash) == Some(true) {
            record(
                &mut summary,
                &mut progress,
                DateOutcome {
                    date,
                    status: DateStatus::Skipped,
                    report: DateReport::default(),
                },
            );
            continue;
        }
        let path = input_path(&input_dir, &pipeline.input.pattern, date);
        let file = match DateFile::open(&path) {
            Ok(file) => Arc::new(file),
            Err(error) => {
                record(
                    &mut summary,
                    &mut progress,
                    DateOutcome::failed(date, error.to_string()),
                );
                continue;
            }
        };
        if engine.is_none() {
            let bound = pipeline.bind(&file.schema()).map_err(|e| match e {
                ConfigError::Invalid(message) => {
                    ConfigError::Invalid(format!("{message} (in {})", path.display()))
                }
                other => other,
            })?;
            engine = Some((Engine::start(bound.clone(), options.workers)?, bound));
        }
        let (running, bound) = engine.as_mut().expect("started above");
        if let Err(message) = bound.check_schema(&file.schema()) {
            let message = format!("{}: {message}", path.display());
            record(
                &mut summary,
                &mut progress,
                DateOutcome::failed(date, message),
            );
            continue;
        }
        // Beginning the date completes the previous one; its result is written before
        // this date's rows are read, so that two dates' rows are never in memory at once.
        running.begin_date(date)?;
        while let Some(result) = running.next_result()? {
            let outcome = outcome_of(&output_dir, result, &hash);
            record(&mut summary, &mut progress, outcome);
        }
        for part in 0..file.num_parts() {
            running.push_file_part(file.clone(), part, pipeline.input.batch_rows)?;
        }
    }
    if let Some((running, _)) = engine {
        for result in running.finish()? {
            let outcome = outcome_of(&output_dir, result, &hash);
            record(&mut summary, &mut progress, outcome);
        }
    }
    progress.finish();
    summary.dates.sort_by_key(|d| d.date);
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn outcome_of(output_dir: &Path, result: DateResult, hash: &str) -> DateOutcome {
    let date = result.date;
    let status = match write_outputs(output_dir, &result, hash) {
        Ok(path) => DateStatus::Written {
            path,
            groups: result.partial.as_ref().map_or(0, |p| p.num_rows()),
        },
        Err(error) => DateStatus::Failed(format!("{}: {error}", calendar::format_date(date))),
    };
    DateOutcome {
        date,
        status,
        report: result.report,
    }
}
