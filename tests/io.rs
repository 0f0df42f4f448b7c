//! Reading input files and writing partials (`vizflow::io`), by topic:
//! round trips per format, parts read in any order, error messages, damaged files,
//! atomic writes.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use chrono::NaiveDate;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vizflow::io::{
    DateFile, FileFormat, IoError, IpcCompression, read_parquet, write_batches,
    write_parquet_atomic,
};
use vizflow::synthetic::{GenSpec, alpha_schema, generate, generate_date};

const ALL_FORMATS: [(FileFormat, Option<IpcCompression>); 7] = [
    (FileFormat::IpcFile, None),
    (FileFormat::IpcFile, Some(IpcCompression::Lz4)),
    (FileFormat::IpcFile, Some(IpcCompression::Zstd)),
    (FileFormat::IpcStream, None),
    (FileFormat::IpcStream, Some(IpcCompression::Lz4)),
    (FileFormat::Parquet, None),
    (FileFormat::Csv, None),
];

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()
}

fn spec(rows: usize, format: FileFormat, compression: Option<IpcCompression>) -> GenSpec {
    GenSpec {
        rows,
        symbols: 50,
        seed: 7,
        format,
        compression,
        prefix: "alpha_".into(),
    }
}

/// Generates one date into `dir` and returns its path.
fn generate_file(dir: &Path, spec: &GenSpec) -> PathBuf {
    generate(spec, dir, &[date()]).unwrap().remove(0)
}

/// Reads every part of `path` with `columns`, in the given part order.
fn read_parts(
    file: &DateFile,
    parts: impl IntoIterator<Item = usize>,
    columns: &[&str],
    batch_rows: usize,
) -> Result<Vec<(u64, RecordBatch)>, IoError> {
    let mut out = Vec::new();
    for part in parts {
        out.extend(file.read_part(part, columns, batch_rows)?);
    }
    Ok(out)
}

fn read_all(path: &Path) -> Result<Vec<(u64, RecordBatch)>, IoError> {
    let file = DateFile::open(path)?;
    let names: Vec<String> = file
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let columns: Vec<&str> = names.iter().map(String::as_str).collect();
    read_parts(&file, 0..file.num_parts(), &columns, 4096)
}

/// Checks that batches start at contiguous row offsets from 0 and concatenates them.
fn contiguous(batches: &[(u64, RecordBatch)]) -> RecordBatch {
    let mut next_row = 0;
    for (first_row, batch) in batches {
        assert_eq!(*first_row, next_row);
        next_row += batch.num_rows() as u64;
    }
    let schema = batches[0].1.schema();
    concat_batches(&schema, batches.iter().map(|(_, b)| b)).unwrap()
}

mod round_trip {
    use super::*;

    #[test]
    fn every_format_reads_back_the_generated_columns() {
        let dir = tempfile::tempdir().unwrap();
        let columns = [
            "alpha1",
            "ticktime",
            "orderSide",
            "qty",
            "ukey",
            "AskPrice1",
        ];
        for (format, compression) in ALL_FORMATS {
            let spec = spec(140_000, format, compression);
            let path = generate_file(dir.path(), &spec);
            let file = DateFile::open(&path).unwrap();
            let expected_parts = match format {
                FileFormat::IpcFile | FileFormat::Parquet => 3,
                FileFormat::IpcStream | FileFormat::Csv => 1,
            };
            assert_eq!((file.format(), file.num_parts()), (format, expected_parts));
            assert_eq!(file.num_rows(), 140_000);
            assert_eq!(file.schema(), alpha_schema(), "{format}");

            let batches = read_parts(&file, 0..file.num_parts(), &columns, 10_000).unwrap();
            assert!(batches.iter().all(|(_, b)| b.num_rows() <= 10_000));
            let generated = generate_date(&spec, date());
            let order: Vec<usize> = columns
                .iter()
                .map(|c| generated.schema().index_of(c).unwrap())
                .collect();
            assert_eq!(
                contiguous(&batches),
                generated.project(&order).unwrap(),
                "{format}"
            );
        }
    }

    #[test]
    fn parts_read_in_reverse_or_concurrently_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        for format in [FileFormat::IpcFile, FileFormat::Parquet] {
            let path = generate_file(dir.path(), &spec(200_000, format, None));
            let file = DateFile::open(&path).unwrap();
            let columns = ["ticktime", "fillPrice"];
            let forward = read_parts(&file, 0..file.num_parts(), &columns, 50_000).unwrap();
            let mut reverse =
                read_parts(&file, (0..file.num_parts()).rev(), &columns, 50_000).unwrap();
            reverse.sort_by_key(|(first_row, _)| *first_row);
            assert_eq!(forward, reverse);

            let file = &file;
            let mut concurrent: Vec<(u64, RecordBatch)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..file.num_parts())
                    .map(|part| {
                        scope.spawn(move || file.read_part(part, &columns, 50_000).unwrap())
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap())
                    .collect()
            });
            concurrent.sort_by_key(|(first_row, _)| *first_row);
            assert_eq!(forward, concurrent);
        }
    }

    #[test]
    fn repeated_and_single_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate_file(dir.path(), &spec(1000, FileFormat::IpcFile, None));
        let file = DateFile::open(&path).unwrap();
        let batches = file.read_part(0, &["qty", "ukey", "qty"], 1000).unwrap();
        let batch = &batches[0].1;
        assert_eq!(batch.num_columns(), 3);
        assert_eq!(batch.column(0), batch.column(2));
        assert_eq!(batch.schema().field(1).name(), "ukey");
    }

    #[test]
    fn date_file_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<DateFile>();
    }
}

/// Columns decoded from a memory-mapped IPC file without copying, each with its own
/// pages that leave the process's resident memory once no array holds the column.
mod mapped_pages {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int32Array, Int64Array, ListArray,
        StringArray,
    };
    use arrow::datatypes::{Float64Type, Int32Type};
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions};

    use super::*;

    fn write_ipc(path: &Path, batches: &[RecordBatch], options: IpcWriteOptions) {
        let file = std::fs::File::create(path).unwrap();
        let mut writer =
            FileWriter::try_new_with_options(file, &batches[0].schema(), options).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
    }

    /// A batch of every layout the rebasing handles: nulls, offsets, a dictionary (whose
    /// values lie in another block), a nested list, booleans.
    fn layouts(rows: usize, seed: u64) -> RecordBatch {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let some = |rng: &mut ChaCha8Rng| rng.random_bool(0.8);
        let ints: Int64Array = (0..rows)
            .map(|_| some(&mut rng).then(|| rng.random_range(-1000..1000)))
            .collect();
        let words = ["B", "S", "BUY", ""];
        let strings: StringArray = (0..rows)
            .map(|_| some(&mut rng).then(|| words[rng.random_range(0..4)]))
            .collect();
        let keys: Int32Array = (0..rows)
            .map(|_| some(&mut rng).then(|| rng.random_range(0..4)))
            .collect();
        let dictionary =
            DictionaryArray::<Int32Type>::new(keys, Arc::new(StringArray::from(words.to_vec())));
        let lists = ListArray::from_iter_primitive::<Float64Type, _, _>((0..rows).map(|_| {
            some(&mut rng).then(|| {
                let len = rng.random_range(0..3);
                (0..len)
                    .map(|_| some(&mut rng).then(|| rng.random::<f64>()))
                    .collect::<Vec<_>>()
            })
        }));
        let bools: BooleanArray = (0..rows)
            .map(|_| some(&mut rng).then(|| rng.random_bool(0.5)))
            .collect();
        let floats: Float64Array = (0..rows).map(|_| Some(rng.random::<f64>())).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("ints", Arc::new(ints)),
            ("strings", Arc::new(strings)),
            ("dictionary", Arc::new(dictionary)),
            ("lists", Arc::new(lists)),
            ("bools", Arc::new(bools)),
            ("floats", Arc::new(floats)),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[test]
    fn columns_of_every_layout_read_back_unchanged_and_own_their_pages() {
        let dir = tempfile::tempdir().unwrap();
        // Three batches, and an empty one (every buffer empty) in the middle.
        let mut batches: Vec<RecordBatch> =
            (0..3).map(|i| layouts(5000 + 7 * i, i as u64)).collect();
        batches.insert(1, layouts(0, 9));
        for compression in [None, Some(arrow::ipc::CompressionType::LZ4_FRAME)] {
            let path = dir.path().join("layouts.arrow");
            let options = IpcWriteOptions::default()
                .try_with_compression(compression)
                .unwrap();
            write_ipc(&path, &batches, options);
            let file = DateFile::open(&path).unwrap();
            let columns = ["floats", "lists", "ints", "dictionary", "bools", "strings"];
            for (part, written) in batches.iter().enumerate() {
                let read = file.read_part(part, &columns, 1 << 20).unwrap();
                if written.num_rows() == 0 {
                    assert!(read.iter().all(|(_, batch)| batch.num_rows() == 0));
                    continue;
                }
                let order: Vec<usize> = columns
                    .iter()
                    .map(|c| written.schema().index_of(c).unwrap())
                    .collect();
                assert_eq!(
                    read[0].1,
                    written.project(&order).unwrap(),
                    "{compression:?}"
                );
                if compression.is_none() {
                    // Only the column's own buffers (values, validity) share its owner,
                    // each held twice (by the batch and by `to_data`'s copy); the
                    // file's other columns and the file itself do not.
                    let floats = read[0].1.column(0).to_data();
                    assert_eq!(floats.buffers()[0].strong_count(), 2, "floats");
                    let ints = read[0].1.column(2).to_data();
                    assert_eq!(ints.buffers()[0].strong_count(), 4, "ints and their nulls");
                }
            }
        }
    }

    /// The resident size of the mapping of `path` in this process, in KiB.
    #[cfg(target_os = "linux")]
    fn resident_kib(path: &Path) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut lines = smaps.lines();
        let mut total = 0;
        while let Some(line) = lines.next() {
            if line.ends_with(name) {
                let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
                total += rss
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        total
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_column_no_array_holds_leaves_resident_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two_columns.arrow");
        let rows = 1 << 21; // 16 MiB a column
        let a: Float64Array = (0..rows).map(|i| Some(i as f64)).collect();
        let b: Float64Array = (0..rows).map(|i| Some(-(i as f64))).collect();
        let batch =
            RecordBatch::try_from_iter([("a", Arc::new(a) as ArrayRef), ("b", Arc::new(b) as _)])
                .unwrap();
        write_ipc(&path, &[batch], IpcWriteOptions::default());
        let file = DateFile::open(&path).unwrap();
        let read = file.read_part(0, &["a", "b"], rows).unwrap().remove(0).1;
        let sum = |i: usize| {
            let column = read
                .column(i)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap();
            column.values().iter().sum::<f64>()
        };
        assert_eq!(sum(0), -sum(1));
        let column_kib = (rows * 8 / 1024) as u64;
        let both = resident_kib(&path);
        assert!(
            both >= 2 * column_kib,
            "both columns read: {both} KiB resident"
        );

        let only_b = read.project(&[1]).unwrap();
        drop(read);
        let after_a = resident_kib(&path);
        assert!(
            after_a.abs_diff(column_kib) < column_kib / 16,
            "column a dropped: {after_a} KiB resident, expected about {column_kib}"
        );
        drop(only_b);
        let after_both = resident_kib(&path);
        assert!(
            after_both < column_kib / 16,
            "both dropped: {after_both} KiB resident"
        );
        drop(file);
    }
}

mod errors {
    use super::*;

    #[test]
    fn missing_column_suggests_the_closest_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate_file(dir.path(), &spec(100, FileFormat::IpcFile, None));
        let file = DateFile::open(&path).unwrap();
        let available = "ticktime, ukey, orderSide, qty, fillPrice, BidPrice1, AskPrice1, \
                         alpha1, alpha2";
        let error = file.read_part(0, &["qty", "tick_time"], 100).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "column 'tick_time' not found in {}; did you mean 'ticktime'? available: \
                 {available}",
                path.display()
            )
        );
        let error = file.read_part(0, &["price"], 100).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "column 'price' not found in {}; available: {available}",
                path.display()
            )
        );
    }

    #[test]
    fn missing_empty_and_unsupported_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("alpha_20240102.feather");
        assert_eq!(
            DateFile::open(&missing).unwrap_err().to_string(),
            format!(
                "input file not found: {}; check input_dir and pattern",
                missing.display()
            )
        );
        for (format, _) in ALL_FORMATS {
            let empty = dir.path().join(format!("empty.{}", format.extension()));
            std::fs::write(&empty, b"").unwrap();
            assert_eq!(
                DateFile::open(&empty).unwrap_err().to_string(),
                format!(
                    "input file {} is empty (0 bytes); regenerate it or remove the date",
                    empty.display()
                )
            );
        }
        let json = dir.path().join("alpha_20240102.json");
        assert!(matches!(
            DateFile::open(&json),
            Err(IoError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn part_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate_file(dir.path(), &spec(100, FileFormat::Parquet, None));
        let error = DateFile::open(&path)
            .unwrap()
            .read_part(1, &["qty"], 10)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "part 1 out of range for {}, which has 1 parts",
                path.display()
            )
        );
    }

    #[test]
    fn truncated_files_give_errors_but_a_stream_cut_after_its_schema() {
        let dir = tempfile::tempdir().unwrap();
        for (format, compression) in ALL_FORMATS {
            let path = generate_file(dir.path(), &spec(3000, format, compression));
            let bytes = std::fs::read(&path).unwrap();
            let len = bytes.len();
            for cut in [
                1,
                5,
                9,
                17,
                100,
                len / 3,
                len / 2,
                len - 17,
                len - 8,
                len - 1,
            ] {
                std::fs::write(&path, &bytes[..cut]).unwrap();
                let result = read_all(&path);
                match format {
                    // A CSV cut inside or after the last field still parses.
                    FileFormat::Csv => {
                        if let Ok(batches) = result {
                            let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
                            assert!(rows < 3000 || cut > len - 20, "cut at {cut}: {rows} rows");
                        }
                    }
                    // A stream cut after its schema reads up to its last complete
                    // message (a recording cut short), with the rest counted.
                    FileFormat::IpcStream if result.is_ok() => {
                        let rows: usize = result.unwrap().iter().map(|(_, b)| b.num_rows()).sum();
                        assert!(cut >= len - 8 || rows < 3000, "cut at {cut}: {rows} rows");
                    }
                    _ => {
                        let message = result.unwrap_err().to_string();
                        let prefix = format!("{} is not a valid {format}", path.display());
                        assert!(message.starts_with(&prefix), "cut at {cut}: {message}");
                    }
                }
            }
        }
    }

    #[test]
    fn random_bytes_give_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (format, _) in ALL_FORMATS {
            let path = dir.path().join(format!("random.{}", format.extension()));
            let bytes: Vec<u8> = (0..5000).map(|_| rng.random()).collect();
            std::fs::write(&path, bytes).unwrap();
            assert!(read_all(&path).is_err(), "{format}");
        }
    }

    /// Flipped bytes anywhere in a file may decode to other values or fail, but never panic.
    #[test]
    fn corrupted_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (format, compression) in ALL_FORMATS {
            let path = generate_file(dir.path(), &spec(500, format, compression));
            let bytes = std::fs::read(&path).unwrap();
            for _ in 0..100 {
                let mut damaged = bytes.clone();
                for _ in 0..4 {
                    let position = rng.random_range(0..damaged.len());
                    damaged[position] = rng.random();
                }
                std::fs::write(&path, &damaged).unwrap();
                let _ = read_all(&path);
            }
        }
    }

    #[test]
    fn csv_bad_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpha_20240102.csv");
        // Past the 1000 rows used for type inference, so `ukey` is inferred as Int64.
        let mut text = String::from("ticktime,ukey,qty\n");
        for i in 0..1200 {
            let ukey = if i == 1099 {
                "6x0001".to_string()
            } else {
                (600000 + i % 7).to_string()
            };
            text += &format!("{},{ukey},{}.0\n", 93000000 + i * 10, 100 * (1 + i % 5));
        }
        std::fs::write(&path, text).unwrap();
        let file = DateFile::open(&path).unwrap();
        assert_eq!(file.num_rows(), 1200);
        let error = file.read_part(0, &["ukey"], 4096).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot parse CSV file {}: line 1101, column 'ukey': value '6x0001' is not a \
                 valid Int64 (the type inferred from the first 1000 rows); fix the line or \
                 regenerate the file",
                path.display()
            )
        );
    }

    #[test]
    fn csv_short_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpha_20240102.csv");
        let open_error = |short_line: usize| {
            let mut text = String::from("ticktime,ukey,qty\n");
            for line in 2..=1600 {
                let qty = if line == short_line { "" } else { ",100" };
                text += &format!("{},600000{qty}\n", 93000000 + line * 10);
            }
            std::fs::write(&path, text).unwrap();
            DateFile::open(&path).unwrap_err().to_string()
        };
        let prefix = format!("cannot parse CSV file {}: Csv error: ", path.display());
        let suffix = "; fix the line or regenerate the file";
        // Within the rows read to infer the schema, then beyond them.
        assert_eq!(
            open_error(3),
            format!(
                "{prefix}Encountered unequal lengths between records on CSV file. Expected 3 \
                 records, found 2 records at line 3{suffix}"
            )
        );
        assert_eq!(
            open_error(1503),
            format!("{prefix}incorrect number of fields for line 1503, expected 3 got 2{suffix}")
        );
    }
}

mod write {
    use super::*;

    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn parquet_partial_round_trips_with_metadata_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial_20240102.parquet");
        let batch = generate_date(&spec(5000, FileFormat::Parquet, None), date());
        let metadata = vec![
            ("vizflow.date".to_string(), "20240102".to_string()),
            ("vizflow.config_hash".to_string(), "abc123".to_string()),
        ];
        write_parquet_atomic(&path, &batch, &metadata).unwrap();
        // Overwriting replaces the file in one step.
        write_parquet_atomic(&path, &batch, &metadata).unwrap();
        assert_eq!(file_names(dir.path()), ["partial_20240102.parquet"]);
        let (read, read_metadata) = read_parquet(&path).unwrap();
        assert_eq!(read, batch);
        assert_eq!(read_metadata, metadata);
    }

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let batch = generate_date(&spec(10, FileFormat::Parquet, None), date());
        // The destination is a directory, so the final rename fails.
        let occupied = dir.path().join("occupied.parquet");
        std::fs::create_dir(&occupied).unwrap();
        std::fs::write(occupied.join("keep"), b"").unwrap();
        let error = write_parquet_atomic(&occupied, &batch, &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot write {}: ", occupied.display()))
        );
        assert_eq!(file_names(dir.path()), ["occupied.parquet"]);

        let no_dir = dir.path().join("missing").join("out.parquet");
        assert!(matches!(
            write_parquet_atomic(&no_dir, &batch, &[]),
            Err(IoError::Write { .. })
        ));
    }

    #[test]
    fn write_batches_leaves_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let batch = generate_date(&spec(100, FileFormat::Csv, None), date());
        for (format, compression) in ALL_FORMATS {
            let path = dir.path().join(format!("out.{}", format.extension()));
            write_batches(
                &path,
                format,
                batch.schema(),
                std::slice::from_ref(&batch),
                compression,
            )
            .unwrap();
        }
        assert_eq!(
            file_names(dir.path()),
            ["out.arrows", "out.csv", "out.feather", "out.parquet"]
        );
    }
}

/// An IPC stream cut short (a recording whose writer was killed: no end-of-stream
/// marker, maybe in the middle of a message) reads up to its last complete message,
/// and says how many bytes it left; a cut before the schema is still an error.
#[test]
fn a_stream_cut_short_reads_up_to_its_last_complete_message() {
    let dir = tempfile::tempdir().unwrap();
    let batch = generate_date(&spec(1_000, FileFormat::IpcStream, None), date());
    let path = dir.path().join("whole.arrows");
    let batches: Vec<RecordBatch> = (0..4).map(|i| batch.slice(i * 250, 250)).collect();
    write_batches(&path, FileFormat::IpcStream, batch.schema(), &batches, None).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let whole = DateFile::open(&path).unwrap();
    assert_eq!((whole.num_rows(), whole.torn_bytes()), (1_000, 0));
    // The end-of-stream marker is 8 bytes; a batch message here is well over 100.
    for (cut, rows, torn) in [(8, 1_000, false), (100, 750, true)] {
        let cut_path = dir.path().join(format!("cut{cut}.arrows"));
        std::fs::write(&cut_path, &bytes[..bytes.len() - cut]).unwrap();
        let file = DateFile::open(&cut_path).unwrap();
        assert_eq!(file.num_rows(), rows, "cut {cut}");
        assert_eq!(file.torn_bytes() > 0, torn, "cut {cut}");
        let read = contiguous(&read_all(&cut_path).unwrap());
        assert_eq!(
            read,
            concat_batches(&batch.schema(), &batches[..rows as usize / 250]).unwrap()
        );
    }
    let cut_path = dir.path().join("schema.arrows");
    std::fs::write(&cut_path, &bytes[..40]).unwrap();
    assert!(
        DateFile::open(&cut_path).is_err(),
        "a stream without its schema"
    );
}
