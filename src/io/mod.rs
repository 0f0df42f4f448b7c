//! Reading a date's input file and writing per-date partial results.
//!
//! - [`DateFile`] opens one date's input (Arrow IPC file or stream, Parquet or CSV, chosen by
//!   [`FileFormat::from_path`]) and reads it in independent *parts* (IPC record batches,
//!   Parquet row groups, or the whole CSV/IPC stream) with only the columns a pipeline needs.
//!   Every batch comes with the file row index of its first row, the origin of `row_id`
//!   (see SEMANTICS.md, "Rows, dates, order").
//! - [`write_parquet_atomic`] and [`read_parquet`] write and read per-date partials;
//!   [`write_batches`] writes any input format (used by the data generator).
//! - Every failure is an [`IoError`] naming the file and, where relevant, the column, line or
//!   value, and what to do about it.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Float64Array, Int64Array, RecordBatch};
//! use vizflow::io::{DateFile, FileFormat, write_batches};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("alpha_20240102.feather");
//! let batch = RecordBatch::try_from_iter([
//!     ("ticktime", Arc::new(Int64Array::from(vec![93000000, 93000010])) as _),
//!     ("qty", Arc::new(Float64Array::from(vec![100.0, 200.0])) as _),
//! ])
//! .unwrap();
//! write_batches(&path, FileFormat::IpcFile, batch.schema(), &[batch], None).unwrap();
//!
//! let file = DateFile::open(&path).unwrap();
//! assert_eq!(file.num_rows(), 2);
//! let batches = file.read_part(0, &["qty"], 1024).unwrap();
//! assert_eq!(batches[0].0, 0); // file row index of the first row
//! assert_eq!(batches[0].1.num_columns(), 1);
//! ```

mod date_file;
mod ipc;
mod write;

use std::fmt;
use std::path::{Path, PathBuf};

pub use date_file::DateFile;
pub use write::{
    read_parquet, read_parquet_metadata, write_batches, write_bytes_atomic, write_parquet_atomic,
    write_parquet_snapshot_atomic,
};

/// The on-disk format of an input file, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileFormat {
    /// Arrow IPC file (`.feather`, `.arrow`, `.ipc`), buffers uncompressed or lz4/zstd.
    IpcFile,
    /// Arrow IPC stream (`.arrows`).
    IpcStream,
    /// Parquet (`.parquet`).
    Parquet,
    /// CSV with a header line (`.csv`); column types are inferred from the first 1000 rows,
    /// and a column of integers is checked on every row: one with a leading zero
    /// (`000001`) is read as text, one with a fraction further down as Float64.
    Csv,
}

impl FileFormat {
    /// The format of `path` from its extension (case-insensitive).
    pub fn from_path(path: &Path) -> Result<FileFormat, IoError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        match extension.to_ascii_lowercase().as_str() {
            "feather" | "arrow" | "ipc" => Ok(FileFormat::IpcFile),
            "arrows" => Ok(FileFormat::IpcStream),
            "parquet" => Ok(FileFormat::Parquet),
            "csv" => Ok(FileFormat::Csv),
            _ => Err(IoError::UnsupportedFormat { path: path.into() }),
        }
    }

    /// The extension written for this format (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::IpcFile => "feather",
            FileFormat::IpcStream => "arrows",
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::IpcFile => "Arrow IPC file",
            FileFormat::IpcStream => "Arrow IPC stream",
            FileFormat::Parquet => "Parquet file",
            FileFormat::Csv => "CSV file",
        })
    }
}

/// Buffer compression of written Arrow IPC files and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpcCompression {
    /// LZ4 frame compression: fast to decode.
    Lz4,
    /// Zstandard: smaller files.
    Zstd,
}

/// An error reading or writing a file; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The input file does not exist.
    #[error("input file not found: {}; check input_dir and pattern", .path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// The input file has 0 bytes.
    #[error("input file {} is empty (0 bytes); regenerate it or remove the date", .path.display())]
    Empty {
        /// The empty file.
        path: PathBuf,
    },
    /// The file extension names no supported format.
    #[error(
        "unsupported file extension in {}; supported: .feather, .arrow, .ipc (Arrow IPC file), \
         .arrows (Arrow IPC stream), .parquet, .csv",
        .path.display()
    )]
    UnsupportedFormat {
        /// The file with the unknown extension.
        path: PathBuf,
    },
    /// The bytes of an IPC or Parquet file do not decode.
    #[error("{} is not a valid {format} (truncated or corrupt): {message}", .path.display())]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// The format the extension promised.
        format: FileFormat,
        /// The decoder's description of the problem.
        message: String,
    },
    /// A CSV line does not parse; the message carries the 1-based line number and value.
    #[error("cannot parse CSV file {}: {message}; fix the line or regenerate the file", .path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The parser's message, with line, column and value.
        message: String,
    },
    /// A requested column is not in the file.
    #[error(
        "column '{column}' not found in {}; {}available: {}",
        .path.display(),
        vizflow_operators::suggest::did_you_mean(.suggestion.as_deref()),
        .available.join(", ")
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The requested column.
        column: String,
        /// The closest existing column name, if one is close enough.
        suggestion: Option<String>,
        /// All columns of the file, in file order.
        available: Vec<String>,
    },
    /// A part index beyond [`DateFile::num_parts`] (a caller bug).
    #[error("part {part} out of range for {}, which has {num_parts} parts", .path.display())]
    PartOutOfRange {
        /// The file.
        path: PathBuf,
        /// The requested part.
        part: usize,
        /// The number of parts in the file.
        num_parts: usize,
    },
    /// The operating system could not read the file.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing the file failed; nothing was left at `path`.
    #[error("cannot write {}: {message}; check that the directory exists and is writable", .path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Checks that an input file exists and is not empty; returns its length in bytes.
fn check_input(path: &Path) -> Result<u64, IoError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(IoError::Empty { path: path.into() }),
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(IoError::NotFound { path: path.into() })
        }
        Err(source) => Err(IoError::Read {
            path: path.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(
            FileFormat::from_path(Path::new("a/b.FEATHER")).unwrap(),
            FileFormat::IpcFile
        );
        assert_eq!(
            FileFormat::from_path(Path::new("b.arrows")).unwrap(),
            FileFormat::IpcStream
        );
        let error = FileFormat::from_path(Path::new("data/alpha.json")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unsupported file extension in data/alpha.json; supported: .feather, .arrow, .ipc \
             (Arrow IPC file), .arrows (Arrow IPC stream), .parquet, .csv"
        );
    }
}
