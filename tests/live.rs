//! `vizflow live`, end to end with real processes: a producer streams generated dates
//! (Arrow IPC) over standard input or TCP; the outputs equal `vizflow run`'s over the
//! same rows, and `vizflow run` over the recording gives them again. Bad input closes
//! only its own connection.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use chrono::NaiveDate;
use vizflow::config::Pipeline;
use vizflow::io::{FileFormat, read_parquet};
use vizflow::run::{DateStatus, ProgressStyle, RunOptions, run};
use vizflow::synthetic::{GenSpec, generate_date};

fn dates() -> Vec<NaiveDate> {
    vec![
        NaiveDate::from_ymd_opt(2024, 1, 2).unwrap(),
        NaiveDate::from_ymd_opt(2024, 1, 3).unwrap(),
    ]
}

fn spec() -> GenSpec {
    GenSpec {
        rows: 30_000,
        symbols: 40,
        seed: 7,
        format: FileFormat::IpcFile,
        compression: None,
        prefix: "alpha_".into(),
    }
}

/// `examples/alpha_markout.toml` over `input` (files named by `pattern`) into
/// `output`, with `stream` as its `[stream]` section.
fn pipeline_text(input: &Path, pattern: &str, output: &Path, stream: &str) -> String {
    pipeline_text_with(input, pattern, output, stream, |text| text)
}

/// [`pipeline_text`] edited by `edit`.
fn pipeline_text_with(
    input: &Path,
    pattern: &str,
    output: &Path,
    stream: &str,
    edit: fn(String) -> String,
) -> String {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/alpha_markout_live.toml"),
    )
    .unwrap();
    let example = example[..example.find("[stream]").unwrap()]
        .replace("dir = \"data\"", &format!("dir = \"{}\"", input.display()))
        .replace("alpha_{date}.feather", pattern)
        .replace(
            "dir = \"out/alpha_markout_live\"",
            &format!("dir = \"{}\"", output.display()),
        );
    edit(format!("{example}\n[stream]\n{stream}\n"))
}

/// A generated date's rows in the order they are sent (and written for `vizflow run`):
/// as generated (in time order with local disorder within 2 s), but every 2,000th row
/// held back by 3,000 rows (some 24 minutes of trading time), beyond the lateness.
fn day_rows(date: NaiveDate) -> RecordBatch {
    let rows = generate_date(&spec(), date);
    let n = rows.num_rows() as u32;
    let mut order: Vec<u32> = (0..n).filter(|i| i % 2_000 != 1_000).collect();
    for held in (1_000..n).step_by(2_000) {
        let at = ((held + 3_000).min(n) - held / 2_000 - 1) as usize;
        order.insert(at.min(order.len()), held);
    }
    arrow::compute::take_record_batch(&rows, &arrow::array::UInt32Array::from(order)).unwrap()
}

/// Writes [`day_rows`] of `dates` as `dir/alpha_{date}.feather`.
fn write_days(dir: &Path, dates: &[NaiveDate]) {
    std::fs::create_dir_all(dir).unwrap();
    for date in dates {
        let rows = day_rows(*date);
        let path = dir.join(format!("alpha_{}.feather", date.format("%Y%m%d")));
        vizflow::io::write_batches(&path, FileFormat::IpcFile, rows.schema(), &[rows], None)
            .unwrap();
    }
}

/// `vizflow run` over `input`: the date's partial, its provisional results and report.
fn run_over(text: &str) -> Vec<Outputs> {
    run_over_dates(text, dates().len())
}

/// [`run_over`] for the first `count` dates.
fn run_over_dates(text: &str, count: usize) -> Vec<Outputs> {
    let pipeline = Pipeline::from_toml(text).unwrap();
    let options = RunOptions {
        workers: 2,
        progress: ProgressStyle::Quiet,
        ..RunOptions::default()
    };
    let summary = run(&pipeline, &options).unwrap();
    for date in &summary.dates {
        assert!(
            matches!(date.status, DateStatus::Written { .. }),
            "{:?}",
            date.status
        );
    }
    outputs(&pipeline.output.dir, count)
}

/// A date's outputs: the partial, the provisional results (if any) and the report.
#[derive(Debug, PartialEq)]
struct Outputs {
    partial: RecordBatch,
    provisional: Option<RecordBatch>,
    report: String,
}

fn outputs(dir: &Path, count: usize) -> Vec<Outputs> {
    dates()
        .into_iter()
        .take(count)
        .map(|date| {
            let name = date.format("%Y%m%d").to_string();
            let provisional = dir.join(format!("{name}.provisional.parquet"));
            Outputs {
                partial: read_parquet(&dir.join(format!("{name}.parquet")))
                    .unwrap()
                    .0,
                provisional: provisional
                    .exists()
                    .then(|| read_parquet(&provisional).unwrap().0),
                report: std::fs::read_to_string(dir.join(format!("{name}.report.json"))).unwrap(),
            }
        })
        .collect()
}

/// `batch` with `columns` added at the end.
fn with_columns(batch: &RecordBatch, columns: Vec<(Field, ArrayRef)>) -> RecordBatch {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut arrays = batch.columns().to_vec();
    for (field, array) in columns {
        fields.push(field);
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

/// A `date` column of `n` rows of `date` (an integer YYYYMMDD).
fn date_column(date: NaiveDate, n: usize) -> (Field, ArrayRef) {
    let key: i32 = date.format("%Y%m%d").to_string().parse().unwrap();
    let field = Field::new("date", DataType::Int32, false);
    (field, Arc::new(Int32Array::from(vec![key; n])))
}

/// Writes the pipeline of [`pipeline_text`] over `data` into `out` to `dir/live.toml`.
fn live_pipeline(dir: &Path, data: &Path, out: &Path, stream: &str) -> PathBuf {
    live_pipeline_with(dir, data, out, stream, |text| text)
}

/// [`live_pipeline`] with the text edited by `edit`.
fn live_pipeline_with(
    dir: &Path,
    data: &Path,
    out: &Path,
    stream: &str,
    edit: fn(String) -> String,
) -> PathBuf {
    let path = dir.join("live.toml");
    let text = pipeline_text_with(data, "alpha_{date}.feather", out, stream, edit);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes the test's dates into `dir/in` and runs `vizflow run` over them into
/// `dir/run`: the input directory, and the outputs live must equal.
fn run_first(dir: &Path, stream: &str) -> (PathBuf, Vec<Outputs>) {
    run_first_with(dir, stream, |text| text)
}

/// [`run_first`] with the pipeline's text edited by `edit`.
fn run_first_with(dir: &Path, stream: &str, edit: fn(String) -> String) -> (PathBuf, Vec<Outputs>) {
    let data = dir.join("in");
    write_days(&data, &dates());
    let text = pipeline_text_with(
        &data,
        "alpha_{date}.feather",
        &dir.join("run"),
        stream,
        edit,
    );
    (data, run_over(&text))
}

/// The generated dates' rows with `date` (an integer YYYYMMDD) and, when `row_ids`,
/// their `row_id` (place in the date's file).
fn live_batches(row_ids: bool) -> Vec<RecordBatch> {
    dates()
        .into_iter()
        .map(|date| {
            let rows = day_rows(date);
            let n = rows.num_rows();
            let mut columns = vec![date_column(date, n)];
            if row_ids {
                let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(0..n as u64));
                columns.push((Field::new("row_id", DataType::UInt64, false), ids));
            }
            with_columns(&rows, columns)
        })
        .collect()
}

/// Writes `batches` as one IPC stream to `out`, in slices of `size` rows.
fn send(out: impl Write, batches: &[RecordBatch], size: usize) {
    try_send(out, batches, size).unwrap();
}

/// [`send`] for a producer that the receiver may cut off.
fn try_send(
    out: impl Write,
    batches: &[RecordBatch],
    size: usize,
) -> Result<(), arrow::error::ArrowError> {
    let mut writer = StreamWriter::try_new(out, &batches[0].schema())?;
    for batch in batches {
        let mut start = 0;
        while start < batch.num_rows() {
            let length = size.min(batch.num_rows() - start);
            writer.write(&batch.slice(start, length))?;
            start += length;
        }
    }
    writer.finish()
}

/// The rows of `batches` whose symbol (`ukey`) has parity `part`.
fn by_parity(batches: &[RecordBatch], part: i64) -> Vec<RecordBatch> {
    batches
        .iter()
        .map(|batch| {
            let symbols = batch.column_by_name("ukey").unwrap();
            let symbols = arrow::compute::cast(symbols, &DataType::Int64).unwrap();
            let symbols = symbols
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            let keep: arrow::array::BooleanArray = symbols
                .iter()
                .map(|s| Some(s.unwrap() % 2 == part))
                .collect();
            arrow::compute::filter_record_batch(batch, &keep).unwrap()
        })
        .collect()
}

/// Reads `child`'s "listening on ADDRESS" line.
fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line.trim().strip_prefix("listening on ");
    address
        .expect("vizflow live says where it listens")
        .to_owned()
}

/// Kills `pids` unless the returned guard is dropped within `seconds` (a failure that
/// leaves a process waiting fails its test instead of hanging it). Dropping the guard
/// disarms it at once, so it never signals a process id the system gave out again.
fn watchdog(pids: Vec<u32>, seconds: u64) -> std::sync::mpsc::Sender<()> {
    let (guard, disarmed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let limit = std::time::Duration::from_secs(seconds);
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(limit) {
            for pid in pids {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        }
    });
    guard
}

fn vizflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vizflow"))
}

/// `vizflow live PIPELINE --stdin --workers N [--record DIR]`, its standard input and
/// error piped.
fn live_on_stdin(pipeline: &Path, workers: &str, record: Option<&Path>) -> Child {
    let mut command = vizflow();
    command
        .arg("live")
        .arg(pipeline)
        .args(["--stdin", "--workers", workers]);
    if let Some(record) = record {
        command.arg("--record").arg(record);
    }
    (command.stdin(Stdio::piped()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends `batches` (in batches of `size` rows) to `child`'s standard input from a thread
/// of its own, while its standard error is read: a producer must not wait on a
/// consumer that waits on its log being read. Returns the log.
fn sent_and_finished(mut child: Child, batches: Vec<RecordBatch>, size: usize) -> String {
    let input = child.stdin.take().unwrap();
    let sender = std::thread::spawn(move || send(input, &batches, size));
    let stderr = finished(child);
    sender.join().unwrap();
    stderr
}

/// Waits for `child` and returns its stderr, asserting it succeeded.
fn finished(child: Child) -> String {
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "vizflow live failed:\n{stderr}");
    stderr
}

/// Over standard input: the outputs equal `vizflow run`'s (partials, provisional
/// results, reports, late rows included), no `.live.parquet` is left, and `vizflow run`
/// over the recording gives them again. With provisional results, and without (open
/// entries then go on in place).
#[test]
fn live_over_stdin_equals_run_and_its_recording_replays() {
    for stream in [
        "lateness = \"2s\"\nemit_every = \"60s\"",
        "lateness = \"2s\"",
    ] {
        live_over_stdin_equals_run(stream);
    }
}

fn live_over_stdin_equals_run(stream: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (data, expected) = run_first(dir.path(), stream);
    assert_eq!(
        expected[0].provisional.is_some(),
        stream.contains("emit_every")
    );
    // Rows held back beyond the lateness are late, in both.
    assert!(
        expected[0].report.contains("stream.late_rows"),
        "{}",
        expected[0].report
    );

    for workers in ["1", "2"] {
        let live_out = dir.path().join(format!("live{workers}"));
        let record = dir.path().join(format!("record{workers}"));
        let pipeline_file = live_pipeline(dir.path(), &data, &live_out, stream);
        let child = live_on_stdin(&pipeline_file, workers, Some(&record));
        sent_and_finished(child, live_batches(false), 777);
        assert_eq!(
            outputs(&live_out, 2),
            expected,
            "{workers} workers: live equals run"
        );
        for date in dates() {
            let live = live_out.join(format!("{}.live.parquet", date.format("%Y%m%d")));
            assert!(
                !live.exists(),
                "{} is removed when its date closes",
                live.display()
            );
        }
        let replay = dir.path().join(format!("replay{workers}"));
        let replayed = run_over(&pipeline_text(&record, "{date}.arrows", &replay, stream));
        assert_eq!(
            replayed, expected,
            "{workers} workers: the recording replays"
        );
    }
}

/// Over two TCP connections (symbols split between them, rows numbered by the
/// producer), with a lateness that no interleaving of the two exceeds: the finals equal
/// `vizflow run`'s. A third connection sends bytes that are no IPC stream, a fourth a
/// batch without a column the pipeline reads, a fifth a message over
/// `--max-message-bytes`: each is closed with an error naming what was wrong, and the
/// others go on.
#[test]
fn live_over_tcp_takes_several_producers_and_survives_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let stream = "lateness = \"4h\"";
    let (data, expected) = run_first(dir.path(), stream);

    let live_out = dir.path().join("live");
    let pipeline_file = live_pipeline(dir.path(), &data, &live_out, stream);
    let mut child = vizflow()
        .args([
            "live",
            pipeline_file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--workers",
            "2",
            "--producers",
            "5",
            "--max-message-bytes",
            "2000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let address = listening(&mut child);
    // Its log, line by line (a date closes once every producer connected moved on: the
    // good producers send once both are connected).
    let (log, lines) = std::sync::mpsc::channel::<String>();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = log.send(line.unwrap());
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |text: &str| {
        while !seen.iter().any(|l: &String| l.contains(text)) {
            seen.push(lines.recv().expect("vizflow live logs it"));
        }
    };

    // The bad producers first: nothing of theirs is accepted.
    let mut garbage = TcpStream::connect(&address).unwrap();
    garbage
        .write_all(&[0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0])
        .unwrap();
    garbage.write_all(b"not a flatbuffer").unwrap();
    drop(garbage);
    let batches = live_batches(true);
    let lacking = batches[0].project(&[1, 2]).unwrap(); // ukey, then another column
    let lacking = with_columns(&lacking, vec![date_column(dates()[0], lacking.num_rows())]);
    // Cut off at their first batch (the sends may fail then).
    let _ = try_send(TcpStream::connect(&address).unwrap(), &[lacking], 100);
    let _ = try_send(TcpStream::connect(&address).unwrap(), &batches, 1_000_000);

    // The good ones: symbols split by parity, sent at once.
    let parts: Vec<Vec<RecordBatch>> = (0..2).map(|part| by_parity(&batches, part)).collect();
    let connections: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    wait_for("producer 5 connected");
    let senders: Vec<_> = (parts.into_iter().zip(connections))
        .map(|(part, connection)| std::thread::spawn(move || send(connection, &part, 500)))
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let status = child.wait().unwrap();
    seen.extend(lines.iter());
    let stderr = seen.join("\n");
    assert!(status.success(), "vizflow live failed:\n{stderr}");
    let finals: Vec<RecordBatch> = outputs(&live_out, 2)
        .into_iter()
        .map(|o| o.partial)
        .collect();
    let expected: Vec<RecordBatch> = expected.into_iter().map(|o| o.partial).collect();
    assert_eq!(finals, expected, "live equals run\n{stderr}");
    assert!(
        stderr.contains("not a valid Arrow IPC stream message"),
        "{stderr}"
    );
    // Named when the pipeline is bound to it (the first batch) or after.
    assert!(
        stderr.contains("unknown column 'qty'") || stderr.contains("lacks the column 'qty'"),
        "{stderr}"
    );
    assert!(stderr.contains("over --max-message-bytes"), "{stderr}");
}

/// Across two processes (a hostfile), each taking one producer (symbols split by
/// parity, rows numbered by the producer, late rows held back in each): the outputs,
/// written once per date, equal `vizflow run`'s over the whole dates (partials,
/// provisional results, reports with the late rows). A row is late against the rows
/// that came to its own process before it: with a lateness beyond the local disorder,
/// the rows held back are late in each process's order as in the whole date's, and no
/// other row is.
#[test]
fn live_across_two_processes_equals_run() {
    // Also with returns to the next trading day (the tables cross the processes).
    let edits = [
        ("", (|text| text) as Edit),
        (" with next-day returns", with_next_day),
    ];
    for (case, edit) in edits {
        let dir = tempfile::tempdir().unwrap();
        let stream = "lateness = \"60s\"\nemit_every = \"60s\"";
        let (data, expected) = run_first_with(dir.path(), stream, edit);
        assert!(expected[0].report.contains("stream.late_rows"));
        let live_out = dir.path().join("live");
        let pipeline_file = live_pipeline_with(dir.path(), &data, &live_out, stream, edit);
        let batches = live_batches(true);
        let feeds = [by_parity(&batches, 0), by_parity(&batches, 1)];
        let logs = live_cluster(dir.path(), &pipeline_file, "2", feeds).join("\n");
        assert_eq!(
            outputs(&live_out, 2),
            expected,
            "2 processes{case}: live equals run\n{logs}"
        );
        let live_files = std::fs::read_dir(&live_out).unwrap().filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".live.parquet")
        });
        assert_eq!(live_files.count(), 0, "each .live.parquet is removed{case}");
    }
}

/// Across two processes of one worker each, a date that only process 1's producer
/// feeds (the first; the odd symbols) is owned by process 0 (20240102 mod 2 workers):
/// process 0 writes it all the same, equal to `vizflow run` over those rows.
#[test]
fn a_date_fed_by_one_process_is_written_by_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let stream = "lateness = \"60s\"\nemit_every = \"60s\"";
    let batches = live_batches(true);
    let mut odd = by_parity(&batches, 1);
    let even = by_parity(&batches, 0);
    // The first date's odd rows numbered as in a file of them alone.
    let first = &odd[0];
    let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(0..first.num_rows() as u64));
    let columns = [&first.columns()[..first.num_columns() - 1], &[ids]].concat();
    odd[0] = RecordBatch::try_new(first.schema(), columns).unwrap();
    // What `vizflow run` reads: the first date's odd rows, the second date whole.
    let data = dir.path().join("in");
    std::fs::create_dir_all(&data).unwrap();
    for (date, rows) in dates().into_iter().zip([&odd[0], &batches[1]]) {
        let n = rows.num_columns();
        let without_date: Vec<usize> = (0..n - 2).collect();
        let rows = rows.project(&without_date).unwrap();
        let path = data.join(format!("alpha_{}.feather", date.format("%Y%m%d")));
        vizflow::io::write_batches(&path, FileFormat::IpcFile, rows.schema(), &[rows], None)
            .unwrap();
    }
    let expected = run_over(&pipeline_text(
        &data,
        "alpha_{date}.feather",
        &dir.path().join("run"),
        stream,
    ));
    let live_out = dir.path().join("live");
    let pipeline_file = live_pipeline(dir.path(), &data, &live_out, stream);
    let logs = live_cluster(dir.path(), &pipeline_file, "1", [even[1..].to_vec(), odd]);
    let all = logs.join("\n");
    assert_eq!(outputs(&live_out, 2), expected, "live equals run\n{all}");
    assert!(
        !logs[0].contains("20240102 begins"),
        "process 0 has no row of it\n{all}"
    );
    assert!(
        logs[0].contains("20240102.parquet"),
        "process 0 writes it\n{all}"
    );
    assert!(
        !logs[1].contains("20240102.parquet"),
        "process 1 does not\n{all}"
    );
}

/// Runs `vizflow live` as two processes of `workers` workers each (a hostfile), sends
/// `feeds[i]` to process `i` over TCP, and returns their logs once both succeeded.
fn live_cluster(
    dir: &Path,
    pipeline: &Path,
    workers: &str,
    feeds: [Vec<RecordBatch>; 2],
) -> Vec<String> {
    use std::os::fd::OwnedFd;
    // Process 0 listens for process 1 on the first address, handed its socket bound
    // (so that no other program takes the port meanwhile); process 1 listens on none.
    let cluster = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hosts = dir.join("hosts.txt");
    let addresses = [cluster.local_addr().unwrap(), spare.local_addr().unwrap()];
    std::fs::write(&hosts, format!("{}\n{}\n", addresses[0], addresses[1])).unwrap();
    drop(spare);
    let mut cluster = Some(cluster);
    let mut children: Vec<Child> = (0..2)
        .map(|process| {
            let mut command = vizflow();
            command.arg("live").arg(pipeline);
            command.args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                workers,
                "--producers",
                "1",
            ]);
            command.args(["--processes", "2", "--process", &process.to_string()]);
            command.arg("--hostfile").arg(&hosts);
            match cluster.take().filter(|_| process == 0) {
                Some(listener) => command
                    .stdin(OwnedFd::from(listener))
                    .env(vizflow::cluster::LISTENER_ON_STDIN, "1"),
                None => command.stdin(Stdio::null()),
            };
            (command.stdout(Stdio::piped()))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // A failure could leave them waiting for each other: stopped after two minutes
    // (the test then fails).
    let _watchdog = watchdog(children.iter().map(Child::id).collect(), 120);
    let senders: Vec<_> = (children.iter_mut().zip(feeds))
        .map(|(child, rows)| {
            let address = listening(child);
            std::thread::spawn(move || send(TcpStream::connect(address).unwrap(), &rows, 500))
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    // Both waited for at once: each one's log is read while the other runs.
    let waiting: Vec<_> = (children.into_iter())
        .map(|child| std::thread::spawn(move || finished(child)))
        .collect();
    waiting.into_iter().map(|w| w.join().unwrap()).collect()
}

/// `vizflow live --stdin` over the pipeline `text` (written in `dir`), which must fail
/// before reading: its standard error.
fn refused(dir: &Path, text: &str) -> String {
    let pipeline_file: PathBuf = dir.join("p.toml");
    std::fs::write(&pipeline_file, text).unwrap();
    let output = vizflow()
        .args(["live", pipeline_file.to_str().unwrap(), "--stdin"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Without `[stream]`, `vizflow live` says what to add.
#[test]
fn live_needs_a_stream_section() {
    let dir = tempfile::tempdir().unwrap();
    let text = pipeline_text(dir.path(), "alpha_{date}.feather", dir.path(), "");
    let stderr = refused(dir.path(), &text.replace("[stream]\n", ""));
    assert!(stderr.contains("needs a [stream] section"), "{stderr}");
    assert!(stderr.contains("lateness = \"2s\""), "{stderr}");
}

/// An edit of a pipeline's text.
type Edit = fn(String) -> String;

/// [`pipeline_text`] with returns to the next trading day's open and close.
fn with_next_day(text: String) -> String {
    assert!(text.contains("horizons = [60, 300, 600]"));
    (text.replace(
        "horizons = [60, 300, 600]",
        "horizons = [60, 300, 600, \"next_open\", \"next_close\"]",
    ))
    .replace(
        "[aggregate.metrics]",
        "[aggregate.metrics]\nnext_open = \"mean(return_next_open)\"\nnext_close = \"sum(return_next_close)\"",
    )
}

/// Returns to the next trading day, live: a date's final waits for the feed's next
/// date (its provisional results go on, with these returns null); the finals,
/// provisional results and reports equal `vizflow run` over the same files (whose next
/// day is the next file), and the recording replays to them.
#[test]
fn live_returns_to_the_next_day_equal_run() {
    let dir = tempfile::tempdir().unwrap();
    let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
    let (data, expected) = run_first_with(dir.path(), stream, with_next_day);
    // The first date has a next day; the last has none.
    assert!(
        !expected[0].report.contains("no_next_date"),
        "{}",
        expected[0].report
    );
    assert!(
        expected[1].report.contains("no_next_date"),
        "{}",
        expected[1].report
    );
    let live_out = dir.path().join("live");
    let record = dir.path().join("record");
    let pipeline_file = live_pipeline_with(dir.path(), &data, &live_out, stream, with_next_day);
    let child = live_on_stdin(&pipeline_file, "2", Some(&record));
    sent_and_finished(child, live_batches(false), 777);
    assert_eq!(outputs(&live_out, 2), expected, "live equals run");
    let replay = dir.path().join("replay");
    let text = pipeline_text_with(&record, "{date}.arrows", &replay, stream, with_next_day);
    assert_eq!(run_over(&text), expected, "the recording replays");
}

/// kill -9 in the middle of a date, twice: the `.live.parquet` on disk is a complete
/// file equal to `vizflow run`'s provisional result at its watermark, and `vizflow run`
/// over the recording (cut short, maybe in the middle of a message) gives the partial
/// of the rows it holds.
#[test]
fn a_killed_live_leaves_complete_files_and_a_recording_that_replays() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    let date = dates()[0];
    write_days(&data, &[date]);
    let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
    let run_dir = dir.path().join("run");
    run_over_dates(
        &pipeline_text(&data, "alpha_{date}.feather", &run_dir, stream),
        1,
    );
    let name = date.format("%Y%m%d").to_string();
    let provisional = read_parquet(&run_dir.join(format!("{name}.provisional.parquet")))
        .unwrap()
        .0;
    let rows = live_batches(false).remove(0);
    for (attempt, results_before_kill) in [(0, 1), (1, 5)] {
        let live_out = dir.path().join(format!("live{attempt}"));
        let record = dir.path().join(format!("record{attempt}"));
        let pipeline_file = live_pipeline(dir.path(), &data, &live_out, stream);
        let mut child = live_on_stdin(&pipeline_file, "2", Some(&record));
        // The producer sends the date in small batches and never ends its stream.
        let input = child.stdin.take().unwrap();
        let sending = rows.clone();
        std::thread::spawn(move || {
            let _ = try_send(input, &[sending], 200);
        });
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut written = 0;
        while written < results_before_kill {
            let line = log.next().expect("vizflow live logs").unwrap();
            written += usize::from(line.contains(".live.parquet"));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let (partial, metadata) =
            read_parquet(&live_out.join(format!("{name}.live.parquet"))).unwrap();
        let value = |key: &str| metadata.iter().find(|(k, _)| k == key).unwrap().1.clone();
        assert_eq!(value("vizflow.provisional"), "true");
        let watermark: i64 = value("vizflow.watermark_ms").parse().unwrap();
        assert!(value("vizflow.rows").parse::<u64>().unwrap() > 0);
        let at = arrow::compute::kernels::cmp::eq(
            provisional.column(0),
            &arrow::array::Int64Array::new_scalar(watermark),
        )
        .unwrap();
        let expected = arrow::compute::filter_record_batch(&provisional, &at).unwrap();
        let expected = expected.project(&(1..expected.num_columns()).collect::<Vec<_>>());
        assert_eq!(
            partial,
            expected.unwrap(),
            "attempt {attempt}: at {watermark}"
        );

        // The recording replays: the partial of the rows it holds.
        let recorded = vizflow::io::DateFile::open(&record.join(format!("{name}.arrows")))
            .unwrap()
            .num_rows() as usize;
        assert!(recorded > 0);
        let replayed = run_over_dates(
            &pipeline_text(
                &record,
                "{date}.arrows",
                &dir.path().join(format!("replay{attempt}")),
                stream,
            ),
            1,
        );
        let head = dir.path().join(format!("head{attempt}"));
        std::fs::create_dir_all(&head).unwrap();
        let first = day_rows(date).slice(0, recorded);
        let path = head.join(format!("alpha_{name}.feather"));
        vizflow::io::write_batches(&path, FileFormat::IpcFile, first.schema(), &[first], None)
            .unwrap();
        let expected = run_over_dates(
            &pipeline_text(
                &head,
                "alpha_{date}.feather",
                &dir.path().join(format!("heads{attempt}")),
                stream,
            ),
            1,
        );
        assert_eq!(
            replayed[0].partial, expected[0].partial,
            "attempt {attempt}"
        );
    }
}

/// The control rows, over standard input: a watermark row gives the provisional
/// results up to it without more rows (a producer idle over the lunch break), and an
/// end-of-date row closes the date while the stream stays open.
#[test]
fn control_rows_move_the_watermark_and_end_a_date() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live");
    let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
    let pipeline_file = live_pipeline(dir.path(), dir.path(), &out, stream);
    let mut child = live_on_stdin(&pipeline_file, "2", None);
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut wait_for = |text: &str| loop {
        let line = log.next().expect("vizflow live logs").unwrap();
        if line.contains(text) {
            return;
        }
    };
    // The morning's rows (before 11:30), then a watermark at 13:00:01 (the engine's
    // time moves by whole seconds: the result at 13:00 comes once it is past 13:00:00.999).
    let rows = live_batches(false).remove(0);
    let morning = {
        let times =
            arrow::compute::cast(rows.column_by_name("ticktime").unwrap(), &DataType::Int64);
        let times = times.unwrap();
        let times = times
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        let keep: arrow::array::BooleanArray = times
            .iter()
            .map(|t| Some(t.unwrap() < 113_000_000))
            .collect();
        arrow::compute::filter_record_batch(&rows, &keep).unwrap()
    };
    let with_controls = |batch: &RecordBatch, watermark: Option<i64>, end: Option<bool>| {
        let n = batch.num_rows();
        let watermark: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![watermark; n]));
        let end: ArrayRef = Arc::new(arrow::array::BooleanArray::from(vec![end; n]));
        let columns = vec![
            (
                Field::new("vizflow_watermark_ms", DataType::Int64, true),
                watermark,
            ),
            (Field::new("vizflow_end_date", DataType::Boolean, true), end),
        ];
        with_columns(batch, columns)
    };
    // A control row: the date, and nulls in the pipeline's columns.
    let control = |watermark: Option<i64>, end: Option<bool>| {
        let mut row = RecordBatch::new_empty(rows.schema());
        let columns: Vec<ArrayRef> = (rows.schema().fields().iter())
            .map(|f| match f.name().as_str() {
                "date" => Arc::new(Int32Array::from(vec![20240102])) as ArrayRef,
                _ => arrow::array::new_null_array(f.data_type(), 1),
            })
            .collect();
        row = RecordBatch::try_new(row.schema(), columns).unwrap();
        with_controls(&row, watermark, end)
    };
    let input = child.stdin.take().unwrap();
    let mut writer =
        StreamWriter::try_new(input, &with_controls(&morning, None, None).schema()).unwrap();
    writer.write(&with_controls(&morning, None, None)).unwrap();
    writer.flush().unwrap();
    wait_for("at 7140000 ms");
    // No row of the afternoon yet: the result at 13:00 (7,200,000) needs the control.
    writer.write(&control(Some(7_201_000), None)).unwrap();
    writer.flush().unwrap();
    wait_for("at 7200000 ms");
    // The end of the date, stream still open: its outputs are written.
    writer.write(&control(None, Some(true))).unwrap();
    writer.flush().unwrap();
    wait_for("20240102.parquet");
    let (partial, _) = read_parquet(&out.join("20240102.parquet")).unwrap();
    assert!(partial.num_rows() > 0);
    let report = std::fs::read_to_string(out.join("20240102.report.json")).unwrap();
    let morning_rows = format!("\"rows_read\": {}", morning.num_rows());
    assert!(report.contains(&morning_rows), "{report}");
    writer.finish().unwrap();
    drop(writer);
    assert!(child.wait().unwrap().success());
}

/// `--clock wall`, on a market whose one session runs from 20 minutes ago to 5 seconds
/// from now (in a time zone where it is about noon, so the day does not turn): rows of
/// its first 10 minutes only, and the stream left open; the wall clock gives the
/// provisional results up to now, and closes the date once the session has ended.
#[test]
fn the_wall_clock_moves_the_watermark_and_closes_the_day() {
    use chrono::Timelike;
    let utc = chrono::Utc::now();
    let offset = 12 - utc.hour() as i64;
    let zone = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"), // sic: Etc/GMT-5 is 5 hours ahead of UTC
        o => format!("Etc/GMT+{}", -o),
    };
    let local = utc.naive_utc() + chrono::Duration::hours(offset);
    let now_ms = i64::from(local.time().num_seconds_from_midnight()) * 1000;
    let (start, end) = (now_ms - 20 * 60_000, now_ms + 5_000);
    let hhmmss = |ms: i64| {
        format!(
            "{:02}:{:02}:{:02}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60
        )
    };
    let market = format!(
        r#"{{ time_zone = "{zone}", sessions = [["{}", "{}"]] }}"#,
        hhmmss(start),
        hhmmss(end)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live");
    let stream = "lateness = \"1s\"\nemit_every = \"60s\"";
    let pipeline_file = live_pipeline(dir.path(), dir.path(), &out, stream);
    let text = std::fs::read_to_string(&pipeline_file).unwrap();
    std::fs::write(&pipeline_file, text.replace("\"CN\"", &market)).unwrap();

    // 3,000 rows over the session's first 10 minutes.
    let date = local.date();
    let rows = generate_date(&spec(), date).slice(0, 3_000);
    let ticktime: ArrayRef = Arc::new(arrow::array::Int64Array::from_iter_values((0..3_000).map(
        |i| {
            let ms = start + i * 200;
            ms / 3_600_000 * 10_000_000 + ms / 60_000 % 60 * 100_000 + ms % 60_000
        },
    )));
    let columns: Vec<ArrayRef> = (rows.schema().fields().iter().zip(rows.columns()))
        .map(|(f, c)| {
            if f.name() == "ticktime" {
                ticktime.clone()
            } else {
                c.clone()
            }
        })
        .collect();
    let rows = RecordBatch::try_new(rows.schema(), columns).unwrap();
    let rows = with_columns(&rows, vec![date_column(date, 3_000)]);

    let mut command = vizflow();
    command.arg("live").arg(&pipeline_file);
    command.args(["--stdin", "--workers", "2", "--clock", "wall"]);
    let mut child = (command.stdin(Stdio::piped()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut writer = StreamWriter::try_new(child.stdin.take().unwrap(), &rows.schema()).unwrap();
    writer.write(&rows).unwrap();
    writer.flush().unwrap();
    // A failure would leave it waiting: stopped after a minute (the test then fails).
    let _watchdog = watchdog(vec![child.id()], 60);
    let mut wait_for = |text: &str| loop {
        let line = log.next().expect("vizflow live logs").unwrap();
        if line.contains(text) {
            return;
        }
    };
    // The rows alone reach 10 minutes; the wall clock, now (20 minutes).
    wait_for(&format!("at {} ms", 18 * 60_000));
    wait_for(&format!("{}.parquet", date.format("%Y%m%d")));
    writer.finish().unwrap();
    drop(writer);
    assert!(child.wait().unwrap().success());
}

/// `--progress quiet` logs only problems; the default logs each date and result.
#[test]
fn progress_quiet_logs_only_problems() {
    let dir = tempfile::tempdir().unwrap();
    let rows = live_batches(false).remove(0).slice(0, 2_000);
    for (progress, logs) in [("log", true), ("quiet", false)] {
        let out = dir.path().join(progress);
        let stream = "lateness = \"2s\"\nemit_every = \"60s\"";
        let pipeline_file = live_pipeline(dir.path(), dir.path(), &out, stream);
        let mut command = vizflow();
        command.arg("live").arg(&pipeline_file);
        command.args(["--stdin", "--progress", progress]);
        let mut child = (command.stdin(Stdio::piped()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        send(
            child.stdin.take().unwrap(),
            std::slice::from_ref(&rows),
            500,
        );
        let stderr = finished(child);
        assert!(out.join("20240102.parquet").exists(), "{progress}");
        assert_eq!(
            stderr.contains("20240102 begins"),
            logs,
            "{progress}: {stderr}"
        );
    }
}
