//! `vizflow bench`: one measured run of a pipeline, with where its time went.
//!
//! [`measure`] runs a pipeline over dates already on disk (the `vizflow` binary
//! generates them first, in a separate process, so that generating does not count in
//! the peak memory), then reads and decodes the same input columns once more without
//! computing anything: that is the *floor*, the least any engine must spend on the
//! input. The report gives the wall time, input rows per second, the time each stage
//! spent (summed over workers), the peak resident memory of the run, and the decoded
//! size of the input columns used, as a table ([`BenchReport::table`]) and as JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::Array;

use crate::config::{ConfigError, Pipeline};
use crate::io::{DateFile, IoError};
use crate::run::{DateStatus, RunError, RunOptions, input_path, run, select_dates};

/// Why a benchmark has no figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The run could not start.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The pipeline does not fit an input file (reading the floor).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A date of the run failed.
    #[error(
        "a date of the benchmark failed, so it has no figures: {message}; `vizflow run` with \
         the same pipeline and --data shows the date's report"
    )]
    DateFailed {
        /// The date's failure, starting with the date.
        message: String,
    },
    /// An input file could not be read for the floor. (Its message says why: not a
    /// `source`, which would print it twice.)
    #[error("{0}")]
    Read(IoError),
    /// A thread reading the input for the floor panicked.
    #[error("a thread reading the input panicked")]
    ReaderPanicked,
}

/// What one measured run gives.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    /// The pipeline file.
    pub pipeline: String,
    /// Dates run.
    pub dates: usize,
    /// Input rows over all dates.
    pub input_rows: u64,
    /// Worker threads.
    pub workers: usize,
    /// `symbol` or `date`.
    pub partition: String,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
    /// Input rows per second of wall time.
    pub input_rows_per_second: f64,
    /// Seconds each stage spent, summed over dates and workers (`Read` is reading and
    /// decoding parts of the input files).
    pub stage_seconds: BTreeMap<String, f64>,
    /// Peak resident memory of the process during the run (Linux `VmHWM`), bytes;
    /// it includes the pages of memory-mapped input files.
    pub peak_rss_bytes: Option<u64>,
    /// Peak anonymous memory (heap, not file-backed: `RssAnon`), bytes, sampled every
    /// 5 ms during the run (Linux keeps no peak of it): the memory the run itself
    /// allocated, without the memory-mapped input that `peak_rss_bytes` counts.
    pub peak_anon_bytes: Option<u64>,
    /// The decoded size of the input columns the pipeline reads, bytes, largest date.
    pub decoded_input_bytes: u64,
    /// Wall time to only read and decode the input columns, with the same number of
    /// threads, seconds.
    pub floor_seconds: f64,
}

impl BenchReport {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let gb = |bytes: u64| bytes as f64 / 1e9;
        let mut out = String::new();
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<28}{value}\n"));
        line("pipeline", self.pipeline.clone());
        line(
            "input",
            format!("{} date(s), {} rows", self.dates, self.input_rows),
        );
        line(
            "workers",
            format!("{} (partition by {})", self.workers, self.partition),
        );
        line("wall time", format!("{:.2} s", self.wall_seconds));
        line(
            "input rows/s",
            format!("{:.2}M", self.input_rows_per_second / 1e6),
        );
        line(
            "read+decode floor",
            format!(
                "{:.2} s (the run takes {:.1}x the floor)",
                self.floor_seconds,
                self.wall_seconds / self.floor_seconds.max(1e-9)
            ),
        );
        let rss = match self.peak_rss_bytes {
            Some(bytes) => format!(
                "{:.2} GB ({:.2}x the decoded input columns of the largest date, {:.2} GB)",
                gb(bytes),
                bytes as f64 / self.decoded_input_bytes.max(1) as f64,
                gb(self.decoded_input_bytes)
            ),
            None => "unknown (no /proc/self/status)".to_owned(),
        };
        line("peak RSS", rss);
        if let Some(bytes) = self.peak_anon_bytes {
            line(
                "peak anonymous memory",
                format!(
                    "{:.2} GB ({:.2}x; RSS without the memory-mapped input, sampled every 5 ms)",
                    gb(bytes),
                    bytes as f64 / self.decoded_input_bytes.max(1) as f64
                ),
            );
        }
        out.push_str("stage time (summed over workers):\n");
        let total: f64 = self.stage_seconds.values().sum();
        for (stage, seconds) in &self.stage_seconds {
            out.push_str(&format!(
                "  {stage:<26}{seconds:>7.2} s  {:>5.1}%\n",
                100.0 * seconds / total.max(1e-9)
            ));
        }
        out
    }
}

/// Runs `pipeline` with `options` (quietly) and measures it; see the module docs.
pub fn measure(
    pipeline_file: &str,
    pipeline: &Pipeline,
    options: &RunOptions,
) -> Result<BenchReport, BenchError> {
    // Reset the peak so it is the run's own (Linux; elsewhere there is no peak).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = status_kb("RssAnon:");
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(std::time::Duration::from_millis(5))
        {
            peak = peak.max(status_kb("RssAnon:"));
        }
        peak.map(|kb| kb * 1024)
    });
    let summary = run(pipeline, options);
    drop(stop);
    let peak_anon_bytes = sampler.join().unwrap_or(None);
    let summary = summary?;
    let peak_rss_bytes = peak_rss();
    let failure = summary.failed().find_map(|date| match &date.status {
        DateStatus::Failed(message) => Some(message),
        _ => None,
    });
    if let Some(message) = failure {
        return Err(BenchError::DateFailed {
            message: message.clone(),
        });
    }
    let wall_seconds = summary.elapsed.as_secs_f64();
    let input_dir = options
        .input_dir
        .clone()
        .unwrap_or_else(|| pipeline.input.dir.clone());
    let dates = select_dates(pipeline, &input_dir, &options.dates)?;
    let files: Vec<PathBuf> = dates
        .iter()
        .map(|d| input_path(&input_dir, &pipeline.input.pattern, *d))
        .collect();
    let (floor_seconds, decoded_input_bytes) = floor(pipeline, &files, options.workers)?;
    Ok(BenchReport {
        pipeline: pipeline_file.to_owned(),
        dates: summary.dates.len(),
        input_rows: summary.rows,
        workers: options.workers,
        partition: match options.partition {
            Some(partition) => format!("{partition:?}").to_lowercase(),
            None => "symbol (one process)".to_owned(),
        },
        wall_seconds,
        input_rows_per_second: summary.rows as f64 / wall_seconds.max(1e-9),
        stage_seconds: summary.stage_seconds,
        peak_rss_bytes,
        peak_anon_bytes,
        decoded_input_bytes,
        floor_seconds,
    })
}

/// The peak resident memory of this process (`VmHWM` of `/proc/self/status`).
fn peak_rss() -> Option<u64> {
    status_kb("VmHWM:").map(|kb| kb * 1024)
}

/// A field of `/proc/self/status` in kB, e.g. `VmHWM:`; `None` where there is none.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Reads and decodes the pipeline's input columns of every file with `workers`
/// threads, touching every byte (a memory-mapped file is only read when touched).
/// Returns the wall time and the decoded size of the largest file's columns.
fn floor(pipeline: &Pipeline, files: &[PathBuf], workers: usize) -> Result<(f64, u64), BenchError> {
    let started = Instant::now();
    let mut largest = 0u64;
    for path in files {
        let file = Arc::new(DateFile::open(path).map_err(BenchError::Read)?);
        let bound = pipeline.bind(&file.schema())?;
        let columns: Vec<&str> = bound.read.iter().map(String::as_str).collect();
        let batch_rows = pipeline.input.batch_rows;
        let parts = file.num_parts();
        let bytes: u64 = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..workers.max(1))
                .map(|worker| {
                    let (file, columns) = (&file, &columns);
                    scope.spawn(move || -> Result<u64, IoError> {
                        let mut bytes = 0u64;
                        let mut checksum = 0u64;
                        for part in (worker..parts).step_by(workers.max(1)) {
                            let batches = file.read_part(part, columns, batch_rows)?;
                            for (_, batch) in batches {
                                for column in batch.columns() {
                                    let data = column.to_data();
                                    bytes += data.get_slice_memory_size().unwrap_or(0) as u64;
                                    for buffer in data.buffers() {
                                        checksum = buffer
                                            .as_slice()
                                            .chunks(4096)
                                            .fold(checksum, |sum, page| sum ^ page[0] as u64);
                                    }
                                }
                            }
                        }
                        std::hint::black_box(checksum);
                        Ok(bytes)
                    })
                })
                .collect();
            let mut bytes = 0u64;
            for thread in threads {
                match thread.join() {
                    Ok(read) => bytes += read.map_err(BenchError::Read)?,
                    Err(_) => return Err(BenchError::ReaderPanicked),
                }
            }
            Ok(bytes)
        })?;
        largest = largest.max(bytes);
    }
    Ok((started.elapsed().as_secs_f64(), largest))
}

/// What `vizflow bench --live` gives: one date streamed over TCP by a producer process
/// (`vizflow send`) into `vizflow live`, as fast as it takes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiveBenchReport {
    /// The pipeline file.
    pub pipeline: String,
    /// Rows streamed.
    pub rows: u64,
    /// Worker threads.
    pub workers: usize,
    /// Seconds from the first rows fed to the last.
    pub feed_seconds: f64,
    /// Seconds from the first rows fed to the final partial written.
    pub wall_seconds: f64,
    /// Rows per second from the first rows fed to the final partial written
    /// (`rows / wall_seconds`): with bounded queues, the producer cannot run ahead of
    /// the pipeline by more than a few batches.
    pub sustained_rows_per_second: f64,
    /// Provisional results written.
    pub provisional_results: usize,
    /// Per provisional result at `W`: ms from the rows that moved the watermark past
    /// `W` being fed to its `.live.parquet` being in place. Median and 99th percentile.
    pub snapshot_latency_ms_p50: f64,
    /// See `snapshot_latency_ms_p50`.
    pub snapshot_latency_ms_p99: f64,
    /// The largest.
    pub snapshot_latency_ms_max: f64,
    /// Peak resident memory of the live process (`VmHWM`), bytes; the producer is
    /// another process.
    pub peak_rss_bytes: Option<u64>,
}

impl LiveBenchReport {
    /// The report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<28}{value}\n"));
        line("pipeline", self.pipeline.clone());
        line("input", format!("1 date, {} rows over TCP", self.rows));
        line("workers", self.workers.to_string());
        line(
            "sustained rows/s",
            format!(
                "{:.2}M (final partial {:.2} s after the first rows; fed in {:.2} s)",
                self.sustained_rows_per_second / 1e6,
                self.wall_seconds,
                self.feed_seconds
            ),
        );
        line(
            "snapshot latency",
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} provisional results)",
                self.snapshot_latency_ms_p50,
                self.snapshot_latency_ms_p99,
                self.snapshot_latency_ms_max,
                self.provisional_results
            ),
        );
        let rss = self.peak_rss_bytes.map_or("unknown".to_owned(), |b| {
            format!("{:.2} GB", b as f64 / 1e9)
        });
        line("peak RSS", rss);
        out
    }
}

/// Streams `file` (of `date`) from a producer process (`exe send`) into
/// [`crate::live::live`] in this process, and measures it (see [`LiveBenchReport`]).
pub fn measure_live(
    pipeline_file: &str,
    pipeline: &Pipeline,
    (date, file): (chrono::NaiveDate, PathBuf),
    workers: usize,
    exe: &std::path::Path,
) -> anyhow::Result<LiveBenchReport> {
    use crate::live::{LiveInput, LiveOptions, Timeline, live};
    let stream = (pipeline.stream.as_ref())
        .ok_or_else(|| anyhow::anyhow!("bench --live needs a [stream] section"))?;
    let every_ms = (stream.emit_every_ms)
        .ok_or_else(|| anyhow::anyhow!("bench --live needs [stream] emit_every"))?;
    let output = std::env::temp_dir().join(format!("vizflow-bench-live-{}", std::process::id()));
    let timeline = Arc::new(std::sync::Mutex::new(Timeline::default()));
    let options = LiveOptions {
        input: LiveInput::Listen("127.0.0.1:0".parse().expect("an address")),
        output_dir: output.clone(),
        workers,
        record: None,
        max_message_bytes: 256 << 20,
        producers: Some(1),
        timeline: Some(timeline.clone()),
        clock: crate::live::LiveClock::Data,
        cluster: None,
    };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let running = {
        let pipeline = pipeline.clone();
        std::thread::spawn(move || {
            live(&pipeline, &options, |address| {
                let _ = address_tx.send(address);
            })
        })
    };
    let address = address_rx.recv()?;
    let status = std::process::Command::new(exe)
        .arg("send")
        .arg(address.to_string())
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "the producer failed: {status}");
    let summary = running
        .join()
        .map_err(|_| anyhow::anyhow!("the live run panicked"))??;
    let peak_rss_bytes = peak_rss();
    let _ = std::fs::remove_dir_all(&output);
    if let Some(DateStatus::Failed(message)) = summary.dates.first().map(|d| &d.status) {
        anyhow::bail!("the date failed: {message}");
    }
    let timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
    let (first, last) = match (timeline.fed.first(), timeline.fed.last()) {
        (Some(first), Some(last)) => (*first, *last),
        _ => anyhow::bail!("no rows were fed"),
    };
    let done = timeline.finals.last().copied().unwrap_or(last.0);
    // Where the watermark passed each multiple of emit_every: the first row (in the
    // order sent) whose time, as a running maximum, is past it plus the lateness.
    let elapsed = elapsed_of(pipeline, date, &file)?;
    let mut passed = Vec::new(); // (watermark, rows fed by then)
    let mut max = i64::MIN;
    let mut next = every_ms;
    for (row, t) in elapsed.iter().enumerate() {
        max = max.max(*t);
        while max - stream.lateness_ms > next {
            passed.push((next, row as u64 + 1));
            next += every_ms;
        }
    }
    let mut latencies: Vec<f64> = (timeline.provisional.iter())
        .filter_map(|(written, at)| {
            let (_, rows) = passed.iter().find(|(w, _)| w == at)?;
            let fed = timeline.fed.iter().find(|(_, n)| n >= rows)?.0;
            Some(written.saturating_duration_since(fed).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or(f64::NAN)
    };
    let feed_seconds = last.0.duration_since(first.0).as_secs_f64();
    Ok(LiveBenchReport {
        pipeline: pipeline_file.to_owned(),
        rows: last.1,
        workers,
        feed_seconds,
        wall_seconds: done.duration_since(first.0).as_secs_f64(),
        sustained_rows_per_second: last.1 as f64
            / done.duration_since(first.0).as_secs_f64().max(1e-9),
        provisional_results: timeline.provisional.len(),
        snapshot_latency_ms_p50: quantile(0.5),
        snapshot_latency_ms_p99: quantile(0.99),
        snapshot_latency_ms_max: latencies.last().copied().unwrap_or(f64::NAN),
        peak_rss_bytes,
    })
}

/// Each row's `elapsed_ms` in the file's order.
fn elapsed_of(
    pipeline: &Pipeline,
    date: chrono::NaiveDate,
    file: &std::path::Path,
) -> anyhow::Result<Vec<i64>> {
    let file = DateFile::open(file)?;
    let mut elapsed = Vec::with_capacity(file.num_rows() as usize);
    for part in 0..file.num_parts() {
        for (_, batch) in file.read_part(part, &[pipeline.timestamp.as_str()], 1 << 20)? {
            let times = vizflow_operators::parse_time::elapsed_ms(
                batch.column(0).as_ref(),
                pipeline.time_format,
                &pipeline.market.clock,
                date,
                pipeline.out_of_session,
            )?;
            elapsed.extend(times.elapsed_ms.values().iter().copied());
        }
    }
    Ok(elapsed)
}
