//! Property-based fuzzing of the input readers (`DateFile`, every format) and of the
//! pipeline configuration parser: random bytes, random bytes framed like each format
//! (magic bytes, lengths) so the decoders go past their first checks, and valid files
//! with bytes damaged, inserted or cut. Opening and reading every part with every
//! column must return `Ok` or `Err` within a time limit: no panic, no hang.
//!
//! Seeded, single-shot versions of the same (and exact error texts) are in `tests/io.rs`;
//! the time and expression parsers are fuzzed in `operators/tests/fuzz.rs`.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::datatypes::Schema;
use chrono::NaiveDate;
use proptest::prelude::*;
use vizflow::config::Pipeline;
use vizflow::io::{DateFile, FileFormat, IpcCompression, write_batches};
use vizflow::synthetic::{GenSpec, generate_date};

const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on a thread of its own, failing the case if it panics or takes longer than
/// [`LIMIT`] (a hang).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    match receiver.recv_timeout(LIMIT) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no result within {LIMIT:?}: a hang"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the case panicked"),
    }
}

/// Every format and IPC compression the readers accept.
const FORMATS: [(FileFormat, Option<IpcCompression>); 6] = [
    (FileFormat::IpcFile, None),
    (FileFormat::IpcFile, Some(IpcCompression::Lz4)),
    (FileFormat::IpcFile, Some(IpcCompression::Zstd)),
    (FileFormat::IpcStream, Some(IpcCompression::Zstd)),
    (FileFormat::Parquet, None),
    (FileFormat::Csv, None),
];

/// A small valid file of each of [`FORMATS`] (200 rows, parts of 64), made once.
fn valid_files() -> &'static Vec<Vec<u8>> {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = GenSpec {
            rows: 200,
            symbols: 5,
            seed: 3,
            format: FileFormat::IpcFile,
            compression: None,
            prefix: String::new(),
        };
        let day = generate_date(&spec, NaiveDate::from_ymd_opt(2024, 1, 2).unwrap());
        let parts: Vec<_> = (0..200)
            .step_by(64)
            .map(|s| day.slice(s, 64.min(200 - s)))
            .collect();
        FORMATS
            .iter()
            .map(|&(format, compression)| {
                let path = dir.path().join(format!("valid.{}", format.extension()));
                write_batches(&path, format, day.schema(), &parts, compression).unwrap();
                std::fs::read(path).unwrap()
            })
            .collect()
    })
}

/// Opens `bytes` as a file of `format` and reads every part with every column; the
/// outcome does not matter, only that there is one.
fn read_everything(bytes: Vec<u8>, format: FileFormat, batch_rows: usize) {
    within(move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(format!("alpha_20240102.{}", format.extension()));
        std::fs::write(&path, &bytes).unwrap();
        read_file(&path, batch_rows);
    });
}

fn read_file(path: &Path, batch_rows: usize) {
    let Ok(file) = DateFile::open(path) else {
        return;
    };
    let schema = file.schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut rows = 0u64;
    for part in 0..file.num_parts() {
        match file.read_part(part, &columns, batch_rows) {
            Ok(batches) => {
                for (start, batch) in batches {
                    assert!(batch.num_rows() <= batch_rows.max(1));
                    assert!(start + batch.num_rows() as u64 <= file.num_rows());
                    rows += batch.num_rows() as u64;
                }
            }
            Err(_) => return,
        }
    }
    // A file that reads without error has the rows its header promised.
    assert_eq!(rows, file.num_rows(), "{}", path.display());
}

fn format_index() -> impl Strategy<Value = usize> {
    0..FORMATS.len()
}

/// Random bytes dressed as `format`: its magic bytes at the start (and end), so the
/// decoders get past their first checks.
fn framed(format: FileFormat, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        FileFormat::IpcFile => {
            out.extend_from_slice(b"ARROW1\0\0");
            out.extend_from_slice(body);
            out.extend_from_slice(&(body.len().min(64) as i32).to_le_bytes());
            out.extend_from_slice(b"ARROW1");
        }
        FileFormat::IpcStream => {
            out.extend_from_slice(&[0xff; 4]);
            out.extend_from_slice(&(body.len() as i32 / 2).to_le_bytes());
            out.extend_from_slice(body);
        }
        FileFormat::Parquet => {
            out.extend_from_slice(b"PAR1");
            out.extend_from_slice(body);
            out.extend_from_slice(&(body.len().min(256) as i32).to_le_bytes());
            out.extend_from_slice(b"PAR1");
        }
        FileFormat::Csv => {
            out.extend_from_slice(b"ticktime,ukey,qty\n");
            out.extend_from_slice(body);
        }
    }
    out
}

/// A damage to a valid file: bytes overwritten, inserted or removed, or a cut.
#[derive(Clone, Debug)]
enum Damage {
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Cut(usize),
}

fn damages() -> impl Strategy<Value = Vec<Damage>> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..16);
    let damage = prop_oneof![
        4 => (any::<usize>(), bytes()).prop_map(|(at, b)| Damage::Overwrite(at, b)),
        1 => (any::<usize>(), bytes()).prop_map(|(at, b)| Damage::Insert(at, b)),
        1 => (any::<usize>(), 1..64usize).prop_map(|(at, n)| Damage::Remove(at, n)),
        1 => any::<usize>().prop_map(Damage::Cut),
    ];
    prop::collection::vec(damage, 1..6)
}

fn damaged(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for damage in damages {
        let at = |i: usize| i % bytes.len().max(1);
        match damage {
            Damage::Overwrite(i, b) => {
                let start = at(*i);
                for (k, byte) in b.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(start + k) {
                        *slot = *byte;
                    }
                }
            }
            Damage::Insert(i, b) => {
                let start = at(*i);
                bytes.splice(start..start, b.iter().copied());
            }
            Damage::Remove(i, n) => {
                let start = at(*i);
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Damage::Cut(i) => bytes.truncate(at(*i)),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        format in format_index(),
        batch_rows in prop::sample::select(vec![1usize, 7, 4096]),
    ) {
        read_everything(bytes, FORMATS[format].0, batch_rows);
    }

    #[test]
    fn framed_random_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        format in format_index(),
    ) {
        let format = FORMATS[format].0;
        read_everything(framed(format, &body), format, 64);
    }

    #[test]
    fn damaged_valid_files_never_panic(
        format in format_index(),
        damages in damages(),
        batch_rows in prop::sample::select(vec![1usize, 50, 4096]),
    ) {
        let bytes = damaged(valid_files()[format].clone(), &damages);
        read_everything(bytes, FORMATS[format].0, batch_rows);
    }

    /// CSV text of the characters that matter to its parser: separators, quotes,
    /// line ends, digits, signs, and anything else.
    #[test]
    fn csv_text_never_panics(
        text in prop_oneof!["[0-9a-z,\"\r\n.:+-]{0,600}", "(.{0,20}\n){0,20}"],
    ) {
        read_everything(framed(FileFormat::Csv, text.as_bytes()), FileFormat::Csv, 16);
    }
}

// ---- the pipeline configuration ----

const MARKOUT: &str = include_str!("../examples/markout.toml");

/// `examples/markout.toml` with lines removed, duplicated, or with a value replaced.
fn mutated_config() -> impl Strategy<Value = String> {
    let values = prop::sample::select(vec![
        "\"\"",
        "0",
        "-1",
        "1e400",
        "nan",
        "[]",
        "{}",
        "[[]]",
        "\"x\"",
        "true",
        "\"{date}{date}\"",
        "\"ticktime\"",
        "\"sum(\"",
        "[60, 60]",
        "{ time_zone = \"Mars/Base\" }",
    ]);
    let edit = (any::<usize>(), 0..3usize, values);
    prop::collection::vec(edit, 1..5).prop_map(|edits| {
        let mut lines: Vec<String> = MARKOUT.lines().map(str::to_owned).collect();
        for (at, how, value) in edits {
            let at = at % lines.len();
            match how {
                0 => {
                    lines.remove(at);
                }
                1 => {
                    let line = lines[at].clone();
                    lines.insert(at, line);
                }
                _ => {
                    if let Some((key, _)) = lines[at].split_once('=') {
                        lines[at] = format!("{key}= {value}");
                    }
                }
            }
        }
        lines.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pipeline_config_never_panics(text in prop_oneof![mutated_config(), ".{0,200}"]) {
        within(move || {
            let schema: Arc<Schema> = vizflow::synthetic::alpha_schema();
            if let Ok(pipeline) = Pipeline::from_toml(&text)
                && let Ok(bound) = pipeline.bind(&schema)
            {
                let _ = bound.check_schema(&schema);
            }
        });
    }
}
