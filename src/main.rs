//! The `vizflow` command: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use vizflow::calendar;
use vizflow::cluster::ClusterSpec;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, IpcCompression};
use vizflow::operators::batch::Partition;
use vizflow::run::{DateSelection, DateStatus, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate};

/// Batches allocate and free many column buffers of a few hundred KB; the system
/// allocator hands those back to the kernel and faults fresh zeroed pages in for the
/// next batch, which cost a third of a run's time. mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// VizFlow: per-date market-data analysis on a streaming dataflow engine.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline over dates, writing one Parquet partial per date (and its
    /// provisional results beside it with `[stream] emit_every`).
    Run(RunArgs),
    /// Run a pipeline across several processes: start them on this machine (--local N),
    /// or print the command for each host of a hostfile (--hostfile F --print).
    Cluster(ClusterArgs),
    /// Run a pipeline over a live feed: Arrow IPC streams on standard input or TCP,
    /// writing each date's provisional partial as `{date}.live.parquet` while it is
    /// open, and its outputs as `vizflow run` writes them when it closes.
    Live(LiveArgs),
    /// Stream date files to a `vizflow live --listen` as one Arrow IPC stream, as fast
    /// as it takes them (a producer for trying a live pipeline, or replaying a day).
    Send(SendArgs),
    /// Merge a directory's partials exactly: any dates, grouped by any of their group
    /// columns (or date, month, weekday, year), filtered, with new metrics; shown as a
    /// table or written to a file.
    Reduce(ReduceArgs),
    /// Draw a figure of a directory's partials (merged exactly): a heatmap of a metric
    /// over two group columns, or lines of metrics over one; PNG or SVG.
    #[command(subcommand)]
    Plot(PlotCommand),
    /// A dashboard of a directory's partials in the browser (heatmap, lines, table, from
    /// the exact merge), and its JSON API: GET /api/reduce?dates=&by=&where=&metric=.
    Serve(ServeArgs),
    /// Show one date's rows as they leave a stage (optionally one symbol's): to check a
    /// FIFO match or a return by eye.
    Inspect(InspectArgs),
    /// Generate deterministic synthetic market data (the alpha schema).
    Gen(GenArgs),
    /// Measure a pipeline on generated data: wall time, rows/s, time per stage, peak
    /// memory, and the time to only read and decode the input (table and JSON).
    Bench(BenchArgs),
    /// Generate a few small dates, run examples/markout.toml and
    /// examples/alpha_markout.toml on them, show the results.
    Demo(DemoArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The pipeline file (TOML), e.g. examples/markout.toml.
    pipeline: PathBuf,
    #[command(flatten)]
    flags: RunFlags,
    /// Processes in the run: start one `vizflow run` per process, each with the same
    /// flags and its own --process (see `vizflow cluster`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// This process's index, 0 to --processes minus 1.
    #[arg(long, default_value_t = 0)]
    process: u16,
    /// The cluster's hostfile: one host:port per line, in process order; process I
    /// listens on line I. Default: 127.0.0.1:2101, 127.0.0.1:2102, ...
    #[arg(long, short = 'H')]
    hostfile: Option<PathBuf>,
}

/// The flags of a run, shared by `run` and `cluster`.
#[derive(clap::Args)]
struct RunFlags {
    /// Directory of the input files (overrides [input] dir).
    #[arg(long)]
    input_dir: Option<PathBuf>,
    /// Directory for the partials, their reports and provisional results (overrides
    /// [output] dir).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Dates to run: a range 20240102..20240131, a list 20240102,20240103, or one date.
    /// Default: every date with an input file (or in [input] calendar).
    #[arg(long, conflicts_with = "dates_file")]
    dates: Option<String>,
    /// A file with one date (YYYYMMDD) per line.
    #[arg(long)]
    dates_file: Option<PathBuf>,
    /// Worker threads per process [default: the machine's available cores; with
    /// `cluster --local N`, the cores shared among the N processes].
    #[arg(long, short = 'w', value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// How rows are spread over the workers: `symbol` (every worker reads a share of
    /// each date and rows are exchanged by symbol; one date in memory at a time),
    /// `date` (each worker reads and processes whole dates; no exchange, one date in
    /// flight per worker), or `auto`: by date across processes when there are at least
    /// as many dates as workers, by symbol otherwise.
    #[arg(long, value_enum, default_value_t = PartitionArg::Auto)]
    partition: PartitionArg,
    /// Keep partials that exist and were made by the same pipeline; compute the rest.
    #[arg(long)]
    skip_existing: bool,
    /// Stop at the first date that fails; the dates after it are reported as not run.
    #[arg(long)]
    fail_fast: bool,
    /// Seconds to wait for the other processes of a cluster to connect.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
    /// Progress display: auto (a bar on a terminal, log lines otherwise), log, quiet.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

impl RunFlags {
    /// The flags as command-line arguments, in a fixed order (for `cluster`).
    fn to_args(&self, progress: Option<ProgressArg>) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: Option<String>| {
            args.push(format!("--{name}"));
            args.extend(value);
        };
        let path = |p: &PathBuf| Some(p.display().to_string());
        if let Some(dir) = &self.input_dir {
            flag("input-dir", path(dir));
        }
        if let Some(dir) = &self.output_dir {
            flag("output-dir", path(dir));
        }
        if let Some(dates) = &self.dates {
            flag("dates", Some(dates.clone()));
        }
        if let Some(file) = &self.dates_file {
            flag("dates-file", path(file));
        }
        if let Some(workers) = self.workers {
            flag("workers", Some(workers.to_string()));
        }
        if !matches!(self.partition, PartitionArg::Auto) {
            let partition = self
                .partition
                .to_possible_value()
                .expect("no skipped values");
            flag("partition", Some(partition.get_name().to_owned()));
        }
        if self.skip_existing {
            flag("skip-existing", None);
        }
        if self.fail_fast {
            flag("fail-fast", None);
        }
        if self.connect_timeout != 60 {
            flag("connect-timeout", Some(self.connect_timeout.to_string()));
        }
        let progress = progress.unwrap_or(self.progress);
        if !matches!(progress, ProgressArg::Auto) {
            let value = progress.to_possible_value().expect("no skipped values");
            flag("progress", Some(value.get_name().to_owned()));
        }
        args
    }

    /// `--workers`, or the available cores shared among `processes` processes of this
    /// machine (at least one each).
    fn workers(&self, processes: usize) -> usize {
        self.workers.map_or_else(
            || {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                (cores / processes.max(1)).max(1)
            },
            usize::from,
        )
    }

    fn options(&self, cluster: Option<ClusterSpec>) -> RunOptions {
        RunOptions {
            input_dir: self.input_dir.clone(),
            output_dir: self.output_dir.clone(),
            dates: match (&self.dates, &self.dates_file) {
                (Some(spec), _) => DateSelection::Spec(spec.clone()),
                (None, Some(file)) => DateSelection::File(file.clone()),
                (None, None) => DateSelection::All,
            },
            workers: self.workers(1),
            skip_existing: self.skip_existing,
            progress: self.progress.style(),
            partition: self.partition.partition(),
            cluster,
            fail_fast: self.fail_fast,
            stop: None,
        }
    }
}

#[derive(clap::Args)]
#[command(after_help = "\
Batches carry the pipeline's input columns, `date` (Date32 or an integer YYYYMMDD) and \
optionally `row_id` (else rows are numbered in arrival order per date). A row with \
`vizflow_watermark_ms` set moves its date's watermark (a producer idle over the lunch \
break); a row with `vizflow_end_date` true says its producer is done with its date. A \
date closes when every producer has moved to a later date, said it is done with it, or \
ended its stream. The pipeline needs a [stream] section.")]
struct LiveArgs {
    /// The pipeline file (TOML); it needs a [stream] section.
    pipeline: PathBuf,
    /// Read one Arrow IPC stream from standard input; exit when it ends.
    #[arg(long, conflicts_with = "listen", required_unless_present = "listen")]
    stdin: bool,
    /// Accept producers on this address, each connection one Arrow IPC stream (port 0:
    /// any free port, printed). Loopback unless you name another interface.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory for the outputs (overrides [output] dir).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Worker threads [default: the machine's available cores].
    #[arg(long, short = 'w', value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Append every accepted batch to DIR/{date}.arrows (with row_id), so that
    /// `vizflow run` over them replays the day (process I of a cluster:
    /// DIR/{date}.pI.arrows, its own rows).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// The largest IPC message a producer may send (metadata or body, bytes); a larger
    /// one closes its connection.
    #[arg(long, default_value_t = 256 << 20)]
    max_message_bytes: usize,
    /// With --listen, exit once this many producer streams have ended and none is
    /// connected [default: run until stopped].
    #[arg(long)]
    producers: Option<usize>,
    /// What moves a date's watermark: `data` (its rows only) or `wall` (also the wall
    /// clock in the market's time zone, so results come over an idle lunch break, and
    /// the date closes its lateness after the last session).
    #[arg(long, value_enum, default_value_t = ClockArg::Data)]
    clock: ClockArg,
    /// What it logs on standard error: auto or log (a line per connection, date and
    /// provisional result written, and every error), quiet (errors and warnings only).
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// Processes in the cluster: start one `vizflow live` per process, each with its
    /// own --process, --listen and producers; rows are exchanged by symbol and each
    /// date's outputs are written once, by the process that owns it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// This process's index, 0 to --processes minus 1. Process 0 forms the cluster when
    /// its first batch arrives; the feed's schema is that batch's.
    #[arg(long, default_value_t = 0)]
    process: u16,
    /// The cluster's hostfile: one host:port per line, in process order, where the
    /// processes connect to each other (not where producers connect: that is --listen).
    /// Default: 127.0.0.1:2101, 127.0.0.1:2102, ...
    #[arg(long, short = 'H')]
    hostfile: Option<PathBuf>,
    /// Seconds a process other than 0 waits for process 0 to form the cluster (it does
    /// at its first batch), and process 0 for the others then.
    #[arg(long, default_value_t = 86_400)]
    connect_timeout: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockArg {
    /// The rows alone.
    Data,
    /// The rows and the wall clock.
    Wall,
}

#[derive(clap::Args)]
struct ReduceArgs {
    /// The directory of partials ({date}.parquet, as `vizflow run` writes them).
    dir: PathBuf,
    /// Dates to merge: a range 20240102..20240131 (the partials within it), a list
    /// 20240102,20240103, or one date [default: every partial in DIR].
    #[arg(long)]
    dates: Option<String>,
    /// Group by these columns, comma-separated: any of the partials' group-by columns,
    /// and date, month (YYYYMM), weekday (1 = Monday) or year; empty for one row of
    /// totals [default: the partials' group-by columns].
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    by: Option<Vec<String>>,
    /// Keep the groups for which this SQL condition over the group columns holds, e.g.
    /// "orderSide = 'B' AND alpha1_bin BETWEEN -10 AND 10".
    #[arg(long = "where", value_name = "SQL")]
    filter: Option<String>,
    /// A metric over the merged components, NAME=EXPR, e.g. "hit=sum(is_closed) /
    /// count()"; repeat for more. A pipeline metric of the same name is replaced.
    #[arg(long, value_name = "NAME=EXPR")]
    metric: Vec<String>,
    /// Merge adjacent bins of a bin column, COL=FACTOR with an odd factor: bin k goes to
    /// round(k / FACTOR), a bin FACTOR times as wide, still centred on its multiple of
    /// the width; repeat for more columns.
    #[arg(long, value_name = "COL=FACTOR")]
    rebin: Vec<String>,
    /// Write the result to FILE instead of showing it: .parquet (with the exact sums,
    /// so that it merges again), .csv or .json.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Merge partials of different pipelines when their metrics agree.
    #[arg(long)]
    allow_mixed: bool,
    /// Also merge the provisional partial ({date}.live.parquet) of each date that has no
    /// final partial yet: the dates a `vizflow live` has open, as far as they have come.
    #[arg(long)]
    live: bool,
    /// The pipeline (TOML) that made partials written before partials described their
    /// columns (VizFlow 0.1.0).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Progress display: auto (a bar on a terminal), log or quiet (none).
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The directory of partials ({date}.parquet, and the {date}.live.parquet of dates a
    /// `vizflow live` has open, shown as provisional and refreshed as they change).
    dir: PathBuf,
    /// The address to listen on. Loopback by default; another address (e.g.
    /// 0.0.0.0:8050) shows the dashboard to the network, without authentication.
    #[arg(long, default_value = "127.0.0.1:8050")]
    bind: std::net::SocketAddr,
    /// The most groups one request may return (a larger answer is refused, asking to
    /// group by fewer columns, filter or rebin).
    #[arg(long, default_value_t = vizflow::serve::DEFAULT_MAX_GROUPS)]
    max_groups: usize,
    /// Seconds a client may take to send a request's headers before its connection is
    /// closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    header_timeout: u64,
    /// The pipeline (TOML) that made partials written before partials described their
    /// columns (VizFlow 0.1.0).
    #[arg(long)]
    pipeline: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// The date, YYYYMMDD.
    #[arg(long)]
    date: String,
    /// Only this symbol's rows.
    #[arg(long)]
    symbol: Option<String>,
    /// After which stage: parse_time (with the columns derived from the trading time),
    /// enrich (forward returns and rules, with the columns derived from them) or bin
    /// (the rows as the aggregation gets them).
    #[arg(long, value_enum, default_value_t = AfterArg::Enrich)]
    after: AfterArg,
    /// Show at most this many rows (all of them with -o).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Directory of the input files (overrides [input] dir).
    #[arg(long)]
    input_dir: Option<PathBuf>,
    /// Write the rows to FILE (.parquet or .csv) instead of showing them.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AfterArg {
    ParseTime,
    Enrich,
    Bin,
}

#[derive(Subcommand)]
enum PlotCommand {
    /// A metric over two group columns, one cell per group: axes in real units for bin
    /// columns, returns in basis points, signed metrics on a scale centred on zero.
    Heatmap(HeatmapArgs),
    /// Metrics over one group column, a line per metric (and per value of --color).
    Line(LineArgs),
}

/// What every figure takes.
#[derive(clap::Args)]
struct FigureArgs {
    /// The directory of partials.
    dir: PathBuf,
    /// Dates to merge, as `vizflow reduce --dates` [default: every partial in DIR].
    #[arg(long)]
    dates: Option<String>,
    /// Keep the groups for which this SQL condition over the group columns holds.
    #[arg(long = "where", value_name = "SQL")]
    filter: Option<String>,
    /// Also merge the provisional partial ({date}.live.parquet) of each date a `vizflow
    /// live` has open, as `vizflow reduce --live`; the subtitle says which.
    #[arg(long)]
    live: bool,
    /// The file to write: .png, .svg or .html (interactive: value and count under the
    /// pointer; self-contained).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(clap::Args)]
struct HeatmapArgs {
    #[command(flatten)]
    figure: FigureArgs,
    /// The group column across, e.g. alpha1_bin.
    #[arg(long)]
    x: String,
    /// The group column up, e.g. orderSide.
    #[arg(long)]
    y: String,
    /// The metric, e.g. mean_return_60.
    #[arg(long)]
    z: String,
    /// Grey the cells with fewer rows than this.
    #[arg(long, default_value_t = 1)]
    min_count: i64,
}

#[derive(clap::Args)]
struct LineArgs {
    #[command(flatten)]
    figure: FigureArgs,
    /// The group column across, e.g. alpha1_bin or date.
    #[arg(long)]
    x: String,
    /// The metrics, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    y: Vec<String>,
    /// A group column with a line per value, e.g. orderSide.
    #[arg(long)]
    color: Option<String>,
    /// Leave out the points of groups with fewer rows than this.
    #[arg(long, default_value_t = 1)]
    min_count: i64,
}

#[derive(clap::Args)]
struct SendArgs {
    /// The address `vizflow live --listen` prints, e.g. 127.0.0.1:7700.
    address: std::net::SocketAddr,
    /// Files to send in order, each of the date its name holds (8 digits, YYYYMMDD),
    /// e.g. data/alpha_20240102.feather; any format `vizflow run` reads.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// The pipeline file (TOML), e.g. examples/alpha_markout.toml.
    pipeline: PathBuf,
    #[command(flatten)]
    flags: RunFlags,
    /// Start this many processes on this machine (on free loopback ports), show their
    /// combined progress, and stop them all if one fails.
    #[arg(long, conflicts_with = "hostfile", required_unless_present = "hostfile",
          value_parser = clap::value_parser!(u16).range(1..))]
    local: Option<u16>,
    /// The hostfile of a cluster across machines (one host:port per line, in process
    /// order); use with --print.
    #[arg(long, short = 'H', requires = "print")]
    hostfile: Option<PathBuf>,
    /// Print the `vizflow run` command to start on each host of --hostfile, and exit.
    #[arg(long, requires = "hostfile")]
    print: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum PartitionArg {
    Auto,
    Symbol,
    Date,
}

impl PartitionArg {
    fn partition(self) -> Option<Partition> {
        match self {
            PartitionArg::Auto => None,
            PartitionArg::Symbol => Some(Partition::Symbol),
            PartitionArg::Date => Some(Partition::Date),
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ProgressArg {
    Auto,
    Log,
    Quiet,
}

impl ProgressArg {
    fn style(self) -> ProgressStyle {
        match self {
            ProgressArg::Auto => ProgressStyle::Auto,
            ProgressArg::Log => ProgressStyle::Log,
            ProgressArg::Quiet => ProgressStyle::Quiet,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Feather,
    FeatherLz4,
    FeatherZstd,
    Arrows,
    Parquet,
    Csv,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Dates: a range 20240102..20240105 (weekdays) or a list 20240102,20240103.
    #[arg(long)]
    dates: String,
    /// Rows per date.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Number of symbols.
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// Random seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// File format.
    #[arg(long, value_enum, default_value_t = FormatArg::Feather)]
    format: FormatArg,
    /// File name prefix (files are {prefix}{date}.{ext}).
    #[arg(long, default_value = "alpha_")]
    prefix: String,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The pipeline file (TOML), e.g. examples/alpha_markout.toml.
    pipeline: PathBuf,
    /// Rows per date.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Number of symbols.
    #[arg(long, default_value_t = 3_000)]
    symbols: usize,
    /// How many dates (weekdays from 2024-01-02).
    #[arg(long, default_value_t = 1)]
    dates: usize,
    /// Worker threads.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// How rows are spread over the workers: auto (by symbol in one process), symbol or date.
    #[arg(long, value_enum, default_value_t = PartitionArg::Auto)]
    partition: PartitionArg,
    /// Where the generated input lives (generated when missing).
    /// Default: vizflow-bench/{rows}x{symbols}.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure `vizflow live` instead: a producer process streams the first date over
    /// TCP as fast as it can; sustained rows/s, the latency of each provisional result
    /// (p50, p99) and peak memory. The pipeline needs [stream] emit_every.
    #[arg(long)]
    live: bool,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where to put the demo's data and results.
    #[arg(long, default_value = "vizflow-demo")]
    dir: PathBuf,
    /// Worker threads.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
}

/// Weekdays of a `--dates` spec for `gen` (which has no calendar to resolve against).
fn gen_dates(spec: &str) -> anyhow::Result<Vec<chrono::NaiveDate>> {
    use chrono::Datelike;
    if let Some((from, to)) = spec.split_once("..") {
        let (from, to) = (calendar::parse_date(from)?, calendar::parse_date(to)?);
        anyhow::ensure!(
            from <= to,
            "--dates {spec}: the range is empty ({from} is after {to})"
        );
        Ok(from
            .iter_days()
            .take_while(|d| *d <= to)
            .filter(|d| d.weekday().num_days_from_monday() < 5)
            .collect())
    } else {
        spec.split(',')
            .map(|d| Ok(calendar::parse_date(d.trim())?))
            .collect()
    }
}

/// This process's place in a cluster of `--processes`, `--process` and `--hostfile`
/// (`None` for one process).
fn cluster_spec(
    (processes, process, hostfile): (u16, u16, Option<&std::path::Path>),
    workers: usize,
    connect_timeout: u64,
) -> anyhow::Result<Option<ClusterSpec>> {
    let (processes, process) = (processes as usize, process as usize);
    if processes <= 1 {
        return Ok(None);
    }
    anyhow::ensure!(
        process < processes,
        "--process {process} is out of range: with --processes {processes} the processes are \
         numbered 0 to {}",
        processes - 1
    );
    Ok(Some(ClusterSpec {
        processes,
        process,
        addresses: ClusterSpec::addresses(hostfile, processes)?,
        workers,
        connect_timeout: Duration::from_secs(connect_timeout),
    }))
}

fn run_command(args: RunArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::from_file(&args.pipeline)?;
    let cluster = cluster_spec(
        (args.processes, args.process, args.hostfile.as_deref()),
        args.flags.workers(1),
        args.flags.connect_timeout,
    )?;
    let mut options = args.flags.options(cluster);
    // A process of `vizflow cluster --local` tells its supervisor how it goes, in
    // messages rather than log lines.
    if std::env::var_os(vizflow::progress::MESSAGES_ON_STDOUT).is_some() {
        options.progress = ProgressStyle::Messages;
    }
    let summary = run(&pipeline, &options)?;
    let count = |wanted: fn(&DateStatus) -> bool| {
        summary.dates.iter().filter(|d| wanted(&d.status)).count()
    };
    let written = count(|s| matches!(s, DateStatus::Written { .. }));
    let skipped = count(|s| matches!(s, DateStatus::Skipped));
    let failed = count(|s| matches!(s, DateStatus::Failed(_)));
    let not_run = count(|s| matches!(s, DateStatus::NotRun));
    let not_run = match not_run {
        0 => String::new(),
        n => format!(", {n} not run"),
    };
    let workers = match options.workers {
        1 => "1 worker".to_owned(),
        n => format!("{n} workers"),
    };
    eprintln!(
        "{} dates: {written} written, {skipped} skipped, {failed} failed{not_run}; {} rows in \
         {:.2} s ({:.2}M rows/s) with {workers}",
        summary.dates.len(),
        summary.rows,
        summary.elapsed.as_secs_f64(),
        summary.rows as f64 / summary.elapsed.as_secs_f64().max(1e-9) / 1e6
    );
    if failed > 0 {
        eprintln!("failed dates:");
        for outcome in summary.failed() {
            if let DateStatus::Failed(error) = &outcome.status {
                eprintln!("  FAILED {error}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cluster_command(mut args: ClusterArgs) -> anyhow::Result<ExitCode> {
    // Fail on a bad pipeline here, once, rather than in every process.
    Pipeline::from_file(&args.pipeline)?;
    // Every process gets the same --workers (their handshake checks it): by default
    // this machine's cores, shared among the local processes.
    let processes = args.local.unwrap_or(1) as usize;
    let local = if args.hostfile.is_some() {
        1
    } else {
        processes
    };
    let workers = args.flags.workers(local);
    args.flags.workers = Some(u16::try_from(workers).unwrap_or(u16::MAX));
    let run_args = |progress: Option<ProgressArg>| {
        let mut run = vec!["run".to_owned(), args.pipeline.display().to_string()];
        run.extend(args.flags.to_args(progress));
        run
    };
    if let Some(hostfile) = &args.hostfile {
        let addresses = vizflow::cluster::read_hostfile(hostfile)?;
        print!(
            "{}",
            vizflow::cluster::print_commands(&run_args(None), hostfile, &addresses)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let progress = args.flags.progress.style();
    let exe = std::env::current_exe().context("cannot find the vizflow executable")?;
    let code =
        vizflow::cluster::run_local(&exe, &run_args(Some(ProgressArg::Log)), processes, progress)?;
    Ok(ExitCode::from(code))
}

fn bench_command(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use chrono::Datelike;
    anyhow::ensure!(
        args.workers >= 1 && args.dates >= 1,
        "--workers and --dates must be at least 1"
    );
    let pipeline = Pipeline::from_file(&args.pipeline)?;
    let data = args
        .data
        .unwrap_or_else(|| PathBuf::from(format!("vizflow-bench/{}x{}", args.rows, args.symbols)));
    let dates: Vec<chrono::NaiveDate> = calendar::parse_date("20240102")?
        .iter_days()
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .take(args.dates)
        .collect();
    let names: Vec<String> = dates.iter().map(|d| calendar::format_date(*d)).collect();
    let missing = dates
        .iter()
        .any(|d| !vizflow::run::input_path(&data, &pipeline.input.pattern, *d).exists());
    if missing {
        // In another process, so that generating does not count in the run's memory.
        eprintln!(
            "generating {} date(s) of {} rows into {} ...",
            args.dates,
            args.rows,
            data.display()
        );
        let exe = std::env::current_exe().context("cannot find the vizflow executable")?;
        let status = std::process::Command::new(exe)
            .arg("gen")
            .arg("--out")
            .arg(&data)
            .args([
                "--dates",
                &names.join(","),
                "--rows",
                &args.rows.to_string(),
            ])
            .args(["--symbols", &args.symbols.to_string(), "--seed", "1"])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "generating the input failed: {status}");
    }
    if args.live {
        let date = dates[0];
        let file = vizflow::run::input_path(&data, &pipeline.input.pattern, date);
        let exe = std::env::current_exe().context("cannot find the vizflow executable")?;
        let name = args.pipeline.display().to_string();
        let report =
            vizflow::bench::measure_live(&name, &pipeline, (date, file), args.workers, &exe)?;
        print!("{}", report.table());
        if let Some(path) = &args.json {
            vizflow::io::write_bytes_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
            println!("wrote {}", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let options = RunOptions {
        input_dir: Some(data),
        output_dir: Some(
            std::env::temp_dir().join(format!("vizflow-bench-{}", std::process::id())),
        ),
        dates: DateSelection::Spec(names.join(",")),
        workers: args.workers,
        progress: ProgressStyle::Quiet,
        partition: args.partition.partition(),
        ..RunOptions::default()
    };
    let report = vizflow::bench::measure(&args.pipeline.display().to_string(), &pipeline, &options);
    if let Some(dir) = &options.output_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    let report = report?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        vizflow::io::write_bytes_atomic(path, &json)?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn gen_command(args: GenArgs) -> anyhow::Result<ExitCode> {
    let (format, compression) = match args.format {
        FormatArg::Feather => (FileFormat::IpcFile, None),
        FormatArg::FeatherLz4 => (FileFormat::IpcFile, Some(IpcCompression::Lz4)),
        FormatArg::FeatherZstd => (FileFormat::IpcFile, Some(IpcCompression::Zstd)),
        FormatArg::Arrows => (FileFormat::IpcStream, None),
        FormatArg::Parquet => (FileFormat::Parquet, None),
        FormatArg::Csv => (FileFormat::Csv, None),
    };
    let spec = GenSpec {
        rows: args.rows,
        symbols: args.symbols,
        seed: args.seed,
        format,
        compression,
        prefix: args.prefix,
    };
    let dates = gen_dates(&args.dates)?;
    let paths = generate(&spec, &args.out, &dates)?;
    for path in &paths {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn demo_command(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dates = gen_dates("20240102..20240104")?;
    println!(
        "Generating {} dates of 300,000 rows (300 symbols) in {} ...",
        dates.len(),
        args.dir.join("data").display()
    );
    let output =
        vizflow::demo::demo(&args.dir, &dates, 300_000, args.workers).context("the demo failed")?;
    let runs = [
        (
            "examples/markout.toml",
            &output.markout,
            "Mean forward returns of mid after each fill, by alpha1 at the fill (all dates merged):",
        ),
        (
            "examples/alpha_markout.toml",
            &output.alpha_markout,
            "FIFO-matched fills by alpha1 at the fill (all dates merged): rows (an exit split\n\
             over several lots gives one row per lot), the share of them fully matched, the VWAP\n\
             of the matched quantity, and the mean holding period of exits in trading seconds:",
        ),
    ];
    for (file, demo_run, caption) in runs {
        let summary = &demo_run.summary;
        println!(
            "\nRan {file} on {} dates with {} workers: {} rows in {:.2} s ({:.2}M rows/s).\n",
            summary.dates.len(),
            args.workers,
            summary.rows,
            summary.elapsed.as_secs_f64(),
            summary.rows as f64 / summary.elapsed.as_secs_f64().max(1e-9) / 1e6
        );
        println!("{caption}\n");
        println!("{}", demo_run.table);
        println!("Partials (one Parquet file per date, with a quality report beside each):");
        for outcome in &summary.dates {
            if let DateStatus::Written { path, groups } = &outcome.status {
                println!("  {}  ({groups} groups)", path.display());
            }
        }
    }
    println!(
        "\nThe alpha markout's mean 60 s return by alpha1 bucket and side (open the HTML in a\nbrowser: each cell's value and count under the pointer):"
    );
    for figure in &output.figures {
        println!("  {}", figure.display());
    }
    println!("\nNext: edit the pipelines, or run them yourself:");
    for (file, demo_run) in [
        ("examples/markout.toml", &output.markout),
        ("examples/alpha_markout.toml", &output.alpha_markout),
    ] {
        let out = demo_run
            .output_dir
            .strip_prefix(&args.dir)
            .unwrap_or(&demo_run.output_dir);
        println!(
            "  cargo run --release -- run {file} --input-dir {} --output-dir {}",
            output.input_dir.display(),
            out.display()
        );
    }
    println!(
        "\nOr explore the alpha markout's partials in the browser (a heatmap, lines and the table,\n\
         merged exactly on the server; Ctrl-C to stop):\n  cargo run --release -- serve {}",
        output.alpha_markout.output_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn send_command(args: SendArgs) -> anyhow::Result<ExitCode> {
    let files = (args.files.iter())
        .map(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let digits: Vec<&str> = name
                .split(|c: char| !c.is_ascii_digit())
                .filter(|run| run.len() == 8)
                .collect();
            let date = match digits.as_slice() {
                [one] => calendar::parse_date(one)?,
                _ => anyhow::bail!(
                    "{}: its name should hold its date as 8 digits (YYYYMMDD), once",
                    path.display()
                ),
            };
            Ok((date, path.clone()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rows = vizflow::live::send(args.address, &files)?;
    eprintln!("sent {rows} rows to {}", args.address);
    Ok(ExitCode::SUCCESS)
}

fn reduce_command(args: ReduceArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    use vizflow::reduce::{ReduceOptions, for_display, json_rows, reduce, without_exact};
    let pair = |flag: &str, text: &str| {
        text.split_once('=')
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .ok_or_else(|| anyhow::anyhow!("{flag} {text}: write NAME=VALUE"))
    };
    let metrics = (args.metric.iter())
        .map(|m| pair("--metric", m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rebin = (args.rebin.iter())
        .map(|r| {
            let (column, factor) = pair("--rebin", r)?;
            let factor = factor
                .parse()
                .map_err(|_| anyhow::anyhow!("--rebin {r}: the factor must be an odd integer"))?;
            Ok((column, factor))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let layout = match &args.pipeline {
        Some(path) => Some(vizflow::partials::Layout::of(&Pipeline::from_file(path)?)),
        None => None,
    };
    let options = ReduceOptions {
        dates: args.dates,
        by: args
            .by
            .map(|by| by.into_iter().filter(|c| !c.is_empty()).collect()),
        filter: args.filter,
        metrics,
        rebin,
        allow_mixed: args.allow_mixed,
        layout,
        live: args.live,
        progress: matches!(args.progress, ProgressArg::Auto) && std::io::stderr().is_terminal(),
    };
    let reduced = reduce(&args.dir, &options)?;
    let groups = reduced.table.num_rows();
    let Some(output) = args.output else {
        const SHOWN: usize = 50;
        let table = for_display(&reduced);
        let shown = table.slice(0, groups.min(SHOWN));
        println!("{}", arrow::util::pretty::pretty_format_batches(&[shown])?);
        if groups > SHOWN {
            println!(
                "... {} more groups; write them all with -o FILE",
                groups - SHOWN
            );
        }
        eprintln!(
            "{groups} groups from {} dates{}",
            reduced.dates.len(),
            provisional_note(&reduced)
        );
        return Ok(ExitCode::SUCCESS);
    };
    let extension = output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match extension {
        "parquet" => {
            let mut metadata = reduced.layout.metadata();
            let dates: Vec<String> = reduced
                .dates
                .iter()
                .map(|d| calendar::format_date(*d))
                .collect();
            metadata.push(("vizflow.dates".to_owned(), dates.join(",")));
            vizflow::io::write_parquet_atomic(&output, &reduced.table, &metadata)?;
        }
        "csv" => {
            let mut bytes = Vec::new();
            arrow::csv::Writer::new(&mut bytes).write(&without_exact(&reduced.table))?;
            vizflow::io::write_bytes_atomic(&output, &bytes)?;
        }
        "json" => {
            let rows = serde_json::json!({ "rows": json_rows(&reduced.table) });
            vizflow::io::write_bytes_atomic(&output, &serde_json::to_vec_pretty(&rows)?)?;
        }
        _ => anyhow::bail!(
            "-o {}: write a .parquet, .csv or .json file",
            output.display()
        ),
    }
    eprintln!(
        "{groups} groups from {} dates{} -> {}",
        reduced.dates.len(),
        provisional_note(&reduced),
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// ` (20240105 provisional)` when provisional partials were merged.
fn provisional_note(reduced: &vizflow::reduce::Reduced) -> String {
    if reduced.provisional.is_empty() {
        return String::new();
    }
    let dates: Vec<String> = (reduced.provisional.iter())
        .map(|d| calendar::format_date(*d))
        .collect();
    format!(" ({} provisional)", dates.join(", "))
}

fn serve_command(args: ServeArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let options = vizflow::serve::ServeOptions {
        dir: args.dir,
        bind: args.bind,
        max_groups: args.max_groups,
        header_timeout: std::time::Duration::from_secs(args.header_timeout.max(1)),
        layout: match &args.pipeline {
            Some(path) => Some(vizflow::partials::Layout::of(&Pipeline::from_file(path)?)),
            None => None,
        },
    };
    vizflow::serve::serve(&options, |address| {
        if !address.ip().is_loopback() {
            eprintln!(
                "warning: listening on {address}: anyone who can reach this machine can see the \
                 dashboard (there is no authentication)"
            );
        }
        println!(
            "serving {} at http://{address}/ (Ctrl-C to stop)",
            options.dir.display()
        );
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}

fn inspect_command(args: InspectArgs) -> anyhow::Result<ExitCode> {
    use vizflow::inspect::{After, InspectOptions, inspect};
    let pipeline = Pipeline::from_file(&args.pipeline)?;
    let options = InspectOptions {
        date: calendar::parse_date(&args.date)?,
        symbol: args.symbol,
        after: match args.after {
            AfterArg::ParseTime => After::ParseTime,
            AfterArg::Enrich => After::Enrich,
            AfterArg::Bin => After::Bin,
        },
        input_dir: args.input_dir,
    };
    let rows = inspect(&pipeline, &options)?;
    let total = rows.num_rows();
    if total == 0 {
        let of = options
            .symbol
            .map_or(String::new(), |s| format!(" of symbol {s}"));
        eprintln!(
            "no rows{of} on {} after this stage (is the symbol spelled as in the '{}' column?)",
            args.date, pipeline.symbol
        );
        return Ok(ExitCode::SUCCESS);
    }
    match args.output {
        Some(path) => {
            match path.extension().and_then(|e| e.to_str()) {
                Some("parquet") => vizflow::io::write_parquet_atomic(&path, &rows, &[])?,
                Some("csv") => {
                    let mut bytes = Vec::new();
                    arrow::csv::Writer::new(&mut bytes).write(&rows)?;
                    vizflow::io::write_bytes_atomic(&path, &bytes)?;
                }
                _ => anyhow::bail!("-o {}: write a .parquet or .csv file", path.display()),
            }
            eprintln!("{total} rows -> {}", path.display());
        }
        None => {
            let shown = rows.slice(0, total.min(args.limit));
            println!("{}", arrow::util::pretty::pretty_format_batches(&[shown])?);
            if total > args.limit {
                println!(
                    "... {} more rows (--limit N, or -o FILE for all)",
                    total - args.limit
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plot_command(command: PlotCommand) -> anyhow::Result<ExitCode> {
    use vizflow::plot::{Figure, PlotOptions, plot};
    let (args, figure) = match command {
        PlotCommand::Heatmap(h) => (
            h.figure,
            Figure::Heatmap {
                x: h.x,
                y: h.y,
                z: h.z,
                min_count: h.min_count,
            },
        ),
        PlotCommand::Line(l) => (
            l.figure,
            Figure::Line {
                x: l.x,
                y: l.y,
                color: l.color,
                min_count: l.min_count,
            },
        ),
    };
    let options = PlotOptions {
        figure,
        dates: args.dates,
        filter: args.filter,
        live: args.live,
        output: args.output.clone(),
    };
    let plotted = plot(&args.dir, &options)?;
    eprintln!(
        "{} groups from {} dates -> {}",
        plotted.groups,
        plotted.dates,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn live_command(args: LiveArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    use vizflow::live::{LiveInput, LiveOptions, live};
    let level = match args.progress {
        ProgressArg::Quiet => tracing::Level::WARN,
        ProgressArg::Auto | ProgressArg::Log => tracing::Level::INFO,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_max_level(level)
        .try_init();
    let pipeline = Pipeline::from_file(&args.pipeline)?;
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let cluster = cluster_spec(
        (args.processes, args.process, args.hostfile.as_deref()),
        workers,
        args.connect_timeout,
    )?;
    let options = LiveOptions {
        input: match args.listen {
            Some(address) => LiveInput::Listen(address),
            None => LiveInput::Stdin,
        },
        output_dir: args
            .output_dir
            .unwrap_or_else(|| pipeline.output.dir.clone()),
        workers,
        record: args.record,
        max_message_bytes: args.max_message_bytes,
        producers: args.producers,
        timeline: None,
        clock: match args.clock {
            ClockArg::Data => vizflow::live::LiveClock::Data,
            ClockArg::Wall => vizflow::live::LiveClock::Wall,
        },
        cluster,
    };
    let summary = live(&pipeline, &options, |address| {
        // On standard output, for a script that asked for port 0.
        println!("listening on {address}");
    })?;
    let failed = summary
        .dates
        .iter()
        .any(|d| matches!(d.status, DateStatus::Failed(_)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    // A panicking worker thread can leave its peers waiting forever; stop the whole
    // process instead, after printing the panic.
    // When a peer process of a cluster dies, timely's network threads panic here: say
    // which peer, and stop.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        match thread.name().and_then(vizflow::cluster::lost_peer_message) {
            Some(message) => eprintln!("{message}"),
            None => default_hook(info),
        }
        std::process::abort();
    }));
    vizflow::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_command(args),
        Command::Cluster(args) => cluster_command(args),
        Command::Live(args) => live_command(args),
        Command::Send(args) => send_command(args),
        Command::Reduce(args) => reduce_command(args),
        Command::Plot(args) => plot_command(args),
        Command::Serve(args) => serve_command(args),
        Command::Inspect(args) => inspect_command(args),
        Command::Gen(args) => gen_command(args),
        Command::Bench(args) => bench_command(args),
        Command::Demo(args) => demo_command(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn flags(args: &[&str]) -> RunFlags {
        let mut argv = vec!["vizflow", "run", "pipeline.toml"];
        argv.extend(args);
        match Cli::parse_from(argv).command {
            Command::Run(args) => args.flags,
            _ => unreachable!("a run"),
        }
    }

    #[test]
    fn workers_default_to_the_cores_shared_among_local_processes() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(flags(&[]).workers(1), cores);
        assert_eq!(flags(&[]).workers(2), (cores / 2).max(1));
        assert_eq!(flags(&[]).workers(cores + 1), 1);
        assert_eq!(flags(&["--workers", "3"]).workers(2), 3);
    }
}
