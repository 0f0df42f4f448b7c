//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet};
use vizflow::run::{DateSelection, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use vizflow::operators::batch::with_columns;

/// The rows of `day` at `indices`, with a `row_id` column holding their positions in
/// `day` (as a file reader would number them).
#[allow(dead_code)]
pub fn rows_with_ids(day: &RecordBatch, indices: &[u32]) -> RecordBatch {
    let rows =
        arrow::compute::take_record_batch(day, &UInt32Array::from(indices.to_vec())).unwrap();
    let ids = UInt64Array::from_iter_values(indices.iter().map(|i| *i as u64));
    with_columns(
        &rows,
        vec![("row_id".to_owned(), Arc::new(ids) as ArrayRef)],
    )
}

/// SEMANTICS.md, parse_time, for the CN market and `HHMMSSmmm` timestamps, written out
/// by hand: ms since 09:30, the lunch break and the hours outside clamped.
#[allow(dead_code)] // not every test crate uses every helper
pub fn oracle_elapsed_ms(ticktime: i64) -> i64 {
    let t =
        ticktime / 10_000_000 * 3_600_000 + ticktime / 100_000 % 100 * 60_000 + ticktime % 100_000;
    let (am_open, am_close, pm_open, pm_close) = (34_200_000, 41_400_000, 46_800_000, 54_000_000);
    if t < am_open {
        0
    } else if t <= am_close {
        t - am_open
    } else if t < pm_open {
        7_200_000
    } else if t <= pm_close {
        7_200_000 + t - pm_open
    } else {
        14_400_000
    }
}

/// A timely configuration of `workers` threads in this process.
#[allow(dead_code)]
pub fn process(workers: usize) -> timely::Config {
    timely::Config {
        communication: timely::CommunicationConfig::Process(workers),
        worker: Default::default(),
    }
}

#[allow(dead_code)]
pub fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[allow(dead_code)]
pub fn pipeline_file() -> PathBuf {
    manifest("examples/alpha_markout.toml")
}

/// `count` weekdays of January 2024 generated into `dir`, in parts of 65,536 rows.
#[allow(dead_code)]
pub fn generate_days(dir: &Path, count: usize, rows: usize) -> Vec<NaiveDate> {
    use chrono::Datelike;
    let dates: Vec<NaiveDate> = NaiveDate::from_ymd_opt(2024, 1, 2)
        .unwrap()
        .iter_days()
        .filter(|d| d.weekday().num_days_from_monday() < 5)
        .take(count)
        .collect();
    generate(&days_spec(rows), dir, &dates).unwrap();
    dates
}

/// Regenerates `date` in `dir` with `rows` rows, as `generate_days` makes the others.
#[allow(dead_code)]
pub fn regenerate(dir: &Path, date: NaiveDate, rows: usize) {
    generate(&days_spec(rows), dir, &[date]).unwrap();
}

/// What `generate_days` writes: 120 symbols, seed 29, feather.
fn days_spec(rows: usize) -> GenSpec {
    GenSpec {
        rows,
        symbols: 120,
        seed: 29,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    }
}

/// The partials of one process with one worker, by the library.
#[allow(dead_code)]
pub fn reference(data: &Path, out: &Path) -> BTreeMap<String, Outputs> {
    let pipeline = Pipeline::from_file(&pipeline_file()).unwrap();
    let options = RunOptions {
        input_dir: Some(data.into()),
        output_dir: Some(out.into()),
        dates: DateSelection::All,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options).unwrap();
    assert_eq!(summary.failed().count(), 0);
    outputs(out)
}

/// A date's partial (with its footer metadata) and its report.
#[allow(dead_code)]
#[derive(Debug, PartialEq)]
pub struct Outputs {
    pub partial: (RecordBatch, Vec<(String, String)>),
    pub report: serde_json::Value,
}

/// Every partial in `dir` by date, with its report. Hidden files (the temporary files
/// of writes a kill interrupted) are not partials and are left out.
#[allow(dead_code)]
pub fn outputs(dir: &Path) -> BTreeMap<String, Outputs> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found; // not created yet
    };
    for entry in entries {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(date) = name.strip_suffix(".parquet") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let partial = read_parquet(&dir.join(&name))
            .unwrap_or_else(|e| panic!("{name} is not a complete partial: {e}"));
        let report = std::fs::read(dir.join(format!("{date}.report.json")))
            .unwrap_or_else(|e| panic!("{date}.report.json is missing beside its partial: {e}"));
        let report = serde_json::from_slice(&report).unwrap();
        found.insert(date.to_owned(), Outputs { partial, report });
    }
    found
}

/// The sum over processes of the `N written` and `N skipped` of their summary lines.
#[allow(dead_code)]
pub fn written_and_skipped(stderr: &str) -> (usize, usize) {
    let mut totals = (0, 0);
    for line in stderr.lines().filter(|l| l.contains(" dates: ")) {
        let count = |what: &str| -> usize {
            let before = line.split(what).next().unwrap();
            before
                .rsplit([' ', ','])
                .find(|w| !w.is_empty())
                .unwrap()
                .parse()
                .unwrap()
        };
        totals.0 += count(" written");
        totals.1 += count(" skipped");
    }
    totals
}

/// Waits at most `limit` for `child` to exit; past it, kills it (`kill -9`) and returns
/// `None`. A thread waits on the child, so nothing polls or sleeps.
#[allow(dead_code)]
pub fn wait_within(mut child: Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let pid = child.id().to_string();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait().unwrap());
    });
    match rx.recv_timeout(limit) {
        Ok(status) => Some(status),
        Err(_) => {
            // The child is not reaped until the waiter's `wait` returns: the pid is
            // still the child's.
            let killed = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
            assert!(killed.unwrap().success(), "cannot kill process {pid}");
            waiter.join().unwrap();
            None
        }
    }
}

/// Reads a child's stderr on a thread: each line goes to `lines`, all of it to the
/// returned handle's result.
#[allow(dead_code)]
pub fn read_lines(
    child: &mut Child,
    lines: crossbeam_channel::Sender<String>,
) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            let _ = lines.send(line);
        }
        all
    })
}

/// A finished command's standard error, as text.
#[allow(dead_code)]
pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `examples/alpha_markout.toml` over two generated dates, partials in `dir/alpha_markout`.
#[allow(dead_code)]
pub fn alpha_markout_partials(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let spec = GenSpec {
        rows: 20_000,
        symbols: 40,
        seed: 3,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    };
    let dates = [
        NaiveDate::from_ymd_opt(2024, 1, 2).unwrap(),
        NaiveDate::from_ymd_opt(2024, 1, 3).unwrap(),
    ];
    generate(&spec, &data, &dates).unwrap();
    let out = dir.join("alpha_markout");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alpha_markout.toml"),
    )
    .unwrap()
    .replace("dir = \"data\"", &format!("dir = \"{}\"", data.display()))
    .replace(
        "dir = \"out/alpha_markout\"",
        &format!("dir = \"{}\"", out.display()),
    );
    let options = RunOptions {
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    run(&Pipeline::from_toml(&text).unwrap(), &options).unwrap();
    out
}
