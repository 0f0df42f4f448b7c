//! Atomic writers (per-date partials, generated inputs) and the Parquet partial reader.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::{FileFormat, IoError, IpcCompression, check_input};

/// The footer key under which arrow stores its schema; not user metadata.
const ARROW_SCHEMA_KEY: &str = "ARROW:schema";

/// Writes `batch` to `path` as zstd Parquet atomically: into a temporary file in the same
/// directory, fsync, then rename. Key-value `metadata` pairs are stored in the Parquet
/// footer. Never leaves a partial file at `path`.
pub fn write_parquet_atomic(
    path: &Path,
    batch: &RecordBatch,
    metadata: &[(String, String)],
) -> Result<(), IoError> {
    write_one_parquet_atomic(path, batch, metadata, zstd())
}

/// [`write_parquet_atomic`] uncompressed, for a small file written again and again (a
/// live feed's provisional partial, at every `emit_every`): there a compressor for each
/// column of each file costs more than it saves.
pub fn write_parquet_snapshot_atomic(
    path: &Path,
    batch: &RecordBatch,
    metadata: &[(String, String)],
) -> Result<(), IoError> {
    write_one_parquet_atomic(path, batch, metadata, Compression::UNCOMPRESSED)
}

/// `batch` to `path` as Parquet with `compression`, atomically.
fn write_one_parquet_atomic(
    path: &Path,
    batch: &RecordBatch,
    metadata: &[(String, String)],
    compression: Compression,
) -> Result<(), IoError> {
    write_atomic(path, |out| {
        let batches = std::slice::from_ref(batch);
        write_parquet(out, batch.schema(), batches, metadata, compression)
    })
}

/// How partials and tables are compressed.
fn zstd() -> Compression {
    Compression::ZSTD(ZstdLevel::default())
}

/// Reads a whole Parquet file (all columns) into one batch plus its key-value metadata
/// (without arrow's own `ARROW:schema` entry).
pub fn read_parquet(path: &Path) -> Result<(RecordBatch, Vec<(String, String)>), IoError> {
    check_input(path)?;
    let corrupt = |error: parquet::errors::ParquetError| IoError::Corrupt {
        path: path.into(),
        format: FileFormat::Parquet,
        message: error.to_string(),
    };
    let file = File::open(path).map_err(|source| IoError::Read {
        path: path.into(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(corrupt)?;
    let metadata = key_values(&builder);
    // The reader copies the footer metadata into the schema; it is returned separately.
    let schema = Arc::new(
        builder
            .schema()
            .as_ref()
            .clone()
            .with_metadata(std::collections::HashMap::new()),
    );
    let batches = builder
        .build()
        .map_err(corrupt)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(e.into()))?;
    let batch = concat_batches(&schema, &batches).map_err(|e| corrupt(e.into()))?;
    Ok((batch, metadata))
}

/// The key-value metadata of a Parquet file (without arrow's `ARROW:schema` entry), read
/// from its footer alone.
pub fn read_parquet_metadata(path: &Path) -> Result<Vec<(String, String)>, IoError> {
    let file = File::open(path).map_err(|source| IoError::Read {
        path: path.into(),
        source,
    })?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| IoError::Corrupt {
            path: path.into(),
            format: FileFormat::Parquet,
            message: error.to_string(),
        })?;
    Ok(key_values(&builder))
}

/// The footer's key-value metadata without arrow's own `ARROW:schema` entry.
fn key_values(builder: &ParquetRecordBatchReaderBuilder<File>) -> Vec<(String, String)> {
    let metadata = builder.metadata().file_metadata().key_value_metadata();
    (metadata.into_iter().flatten())
        .filter(|kv| kv.key != ARROW_SCHEMA_KEY)
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

/// Writes `batches` to `path` in `format`, atomically like [`write_parquet_atomic`].
///
/// Each batch becomes one IPC record batch or one Parquet row group, so the batches are the
/// parts a [`DateFile`](super::DateFile) later reads. `compression` applies to IPC buffers
/// (`None`: uncompressed); Parquet is always zstd, CSV uncompressed with a header line.
pub fn write_batches(
    path: &Path,
    format: FileFormat,
    schema: SchemaRef,
    batches: &[RecordBatch],
    compression: Option<IpcCompression>,
) -> Result<(), IoError> {
    let ipc_options = || {
        let compression = compression.map(|c| match c {
            IpcCompression::Lz4 => CompressionType::LZ4_FRAME,
            IpcCompression::Zstd => CompressionType::ZSTD,
        });
        IpcWriteOptions::default().try_with_compression(compression)
    };
    write_atomic(path, |out| match format {
        FileFormat::IpcFile => {
            let mut writer = FileWriter::try_new_with_options(out, &schema, ipc_options()?)?;
            batches.iter().try_for_each(|batch| writer.write(batch))?;
            Ok(writer.finish()?)
        }
        FileFormat::IpcStream => {
            let mut writer = StreamWriter::try_new_with_options(out, &schema, ipc_options()?)?;
            batches.iter().try_for_each(|batch| writer.write(batch))?;
            Ok(writer.finish()?)
        }
        FileFormat::Parquet => write_parquet(out, schema, batches, &[], zstd()),
        FileFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            Ok(batches.iter().try_for_each(|batch| writer.write(batch))?)
        }
    })
}

fn write_parquet(
    out: &mut BufWriter<File>,
    schema: SchemaRef,
    batches: &[RecordBatch],
    metadata: &[(String, String)],
    compression: Compression,
) -> Result<(), Box<dyn std::error::Error>> {
    let metadata = metadata
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let properties = WriterProperties::builder()
        .set_compression(compression)
        .set_key_value_metadata(Some(metadata))
        .build();
    let mut writer = ArrowWriter::try_new(out, schema, Some(properties))?;
    for batch in batches {
        writer.write(batch)?;
        writer.flush()?;
    }
    writer.close()?;
    Ok(())
}

/// Writes `bytes` to `path` atomically: to a temporary file in the same directory, then
/// renamed over `path`, so a reader never sees a half-written file.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    write_atomic(path, |out| Ok(std::io::Write::write_all(out, bytes)?))
}

/// Runs `write` on a temporary file next to `path`, fsyncs it, renames it to `path` and
/// fsyncs the directory. On any error the temporary file is removed.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), IoError> {
    let error = |message: String| IoError::Write {
        path: path.into(),
        message,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| error("the path has no file name".into()))?;
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| error(e.to_string()))?;
    let (file, temp_path) = temp.into_parts();
    // Temporary files are created private (0600); the result is an ordinary file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temp_path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| error(e.to_string()))?;
    }
    let mut out = BufWriter::new(file);
    write(&mut out).map_err(|e| error(e.to_string()))?;
    let file = out.into_inner().map_err(|e| error(e.error().to_string()))?;
    file.sync_all().map_err(|e| error(e.to_string()))?;
    temp_path
        .persist(path)
        .map_err(|e| error(e.error.to_string()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| error(e.to_string()))
}
