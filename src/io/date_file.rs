//! [`DateFile`]: one date's input file, read in independent parts with a column projection.

use std::fs::File;
use std::io::{BufReader, Cursor, Seek};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::csv::reader::{Format, ReaderBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileDecoder, StreamReader};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};

use super::ipc::{self, IpcFileIndex};
use super::{FileFormat, IoError, check_input};
use vizflow_operators::suggest::closest;

/// Rows read to infer the column types of a CSV file.
const CSV_INFER_ROWS: usize = 1000;

/// A date's input file opened for reading only the needed columns, split into parts that can
/// be read independently (IPC record batches, Parquet row groups; a CSV file or an IPC stream
/// is one part).
///
/// The file must not change while it is open. `DateFile` is `Send + Sync`: worker threads
/// read different parts concurrently.
#[derive(Debug)]
pub struct DateFile {
    path: PathBuf,
    format: FileFormat,
    schema: SchemaRef,
    source: Source,
    /// File row index of the first row of each part, then the total row count.
    part_starts: Vec<u64>,
    /// The bytes after an IPC stream's last complete message (a recording cut short),
    /// not read.
    torn_bytes: u64,
}

#[derive(Debug)]
enum Source {
    IpcFile {
        data: Buffer,
        map: ipc::Map,
        index: IpcFileIndex,
    },
    IpcStream {
        data: Buffer,
    },
    Parquet {
        metadata: ArrowReaderMetadata,
    },
    Csv,
}

impl DateFile {
    /// Opens `path`, reading its schema and the row count of each part (IPC: from message
    /// headers only; Parquet: from the footer; CSV: one parsing pass).
    pub fn open(path: &Path) -> Result<DateFile, IoError> {
        let format = FileFormat::from_path(path)?;
        check_input(path)?;
        let (schema, source, part_rows, torn_bytes) =
            without_panics(path, format, || open_source(path, format))?;
        let part_starts = std::iter::once(0)
            .chain(part_rows.iter().scan(0, |total, rows| {
                *total += rows;
                Some(*total)
            }))
            .collect();
        Ok(DateFile {
            path: path.into(),
            format,
            schema,
            source,
            part_starts,
            torn_bytes,
        })
    }

    /// The bytes of an IPC stream (`.arrows`) after its last complete message, not read:
    /// a recording whose writer stopped in the middle of a message. 0 for a complete
    /// file, and for other formats.
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// The file format.
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full file schema (CSV: inferred from the first 1000 rows, with the columns
    /// that look like integers checked on every row; see `csv_schema_and_rows`).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The total number of rows.
    pub fn num_rows(&self) -> u64 {
        *self.part_starts.last().expect("part_starts starts with 0")
    }

    /// The number of independently readable parts.
    pub fn num_parts(&self) -> usize {
        self.part_starts.len() - 1
    }

    /// Reads part `i` with only `columns`, in that order, as batches of at most `batch_rows`
    /// rows (at least 1), each paired with the 0-based file row index of its first row.
    ///
    /// An unknown column name gives [`IoError::MissingColumn`] with the closest existing name
    /// suggested and all available columns listed.
    pub fn read_part(
        &self,
        i: usize,
        columns: &[&str],
        batch_rows: usize,
    ) -> Result<Vec<(u64, RecordBatch)>, IoError> {
        if i >= self.num_parts() {
            let num_parts = self.num_parts();
            return Err(IoError::PartOutOfRange {
                path: self.path.clone(),
                part: i,
                num_parts,
            });
        }
        let requested = columns
            .iter()
            .map(|&column| {
                self.schema
                    .index_of(column)
                    .map_err(|_| self.missing_column(column))
            })
            .collect::<Result<Vec<usize>, IoError>>()?;
        // Readers return columns in file order; `order` maps them back to the requested order.
        let mut projection = requested.clone();
        projection.sort_unstable();
        projection.dedup();
        let order: Vec<usize> = requested
            .iter()
            .map(|&c| projection.partition_point(|&p| p < c))
            .collect();

        let batch_rows = batch_rows.max(1);
        let batches = without_panics(&self.path, self.format, || {
            self.read_projected(i, projection, batch_rows)
        })?;
        let mut next_row = self.part_starts[i];
        let mut out = Vec::new();
        for batch in batches {
            let batch = batch.project(&order).map_err(|e| self.corrupt(e))?;
            for start in (0..batch.num_rows()).step_by(batch_rows) {
                let len = batch_rows.min(batch.num_rows() - start);
                out.push((next_row + start as u64, batch.slice(start, len)));
            }
            next_row += batch.num_rows() as u64;
        }
        Ok(out)
    }

    fn read_projected(
        &self,
        i: usize,
        projection: Vec<usize>,
        batch_rows: usize,
    ) -> Result<Vec<RecordBatch>, IoError> {
        match &self.source {
            Source::IpcFile { data, map, index } => {
                let mut decoder = FileDecoder::new(self.schema.clone(), index.version)
                    .with_projection(projection);
                let block_bytes =
                    |block| ipc::block_bytes(data, block).map_err(|m| self.corrupt(m));
                for block in &index.dictionaries {
                    let bytes = block_bytes(block)?;
                    decoder
                        .read_dictionary(block, &bytes)
                        .map_err(|e| self.corrupt(e))?;
                }
                let block = &index.batches[i];
                let batch = decoder.read_record_batch(block, &block_bytes(block)?);
                let range = ipc::block_range(data.len(), block).map_err(|m| self.corrupt(m))?;
                let batch = batch.map_err(|e| self.corrupt(e))?;
                Ok(batch
                    .map(|batch| ipc::own_columns(batch, map, range))
                    .into_iter()
                    .collect())
            }
            Source::IpcStream { data } => {
                let reader = StreamReader::try_new(Cursor::new(data.as_slice()), Some(projection))
                    .map_err(|e| self.corrupt(e))?;
                reader
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.corrupt(e))
            }
            Source::Parquet { metadata } => {
                let mask = ProjectionMask::roots(metadata.parquet_schema(), projection);
                let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(
                    self.reopen()?,
                    metadata.clone(),
                )
                .with_projection(mask)
                .with_row_groups(vec![i])
                .with_batch_size(batch_rows)
                .build()
                .map_err(|e| self.corrupt(e))?;
                reader
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.corrupt(e))
            }
            Source::Csv => {
                let reader = ReaderBuilder::new(self.schema.clone())
                    .with_header(true)
                    .with_projection(projection)
                    .with_batch_size(batch_rows)
                    .build(BufReader::new(self.reopen()?))
                    .map_err(|e| csv_error(&self.path, &self.schema, e))?;
                reader
                    .collect::<Result<_, _>>()
                    .map_err(|e| csv_error(&self.path, &self.schema, e))
            }
        }
    }

    fn reopen(&self) -> Result<File, IoError> {
        open_file(&self.path)
    }

    fn corrupt(&self, error: impl ToString) -> IoError {
        let (path, format) = (self.path.clone(), self.format);
        IoError::Corrupt {
            path,
            format,
            message: error.to_string(),
        }
    }

    fn missing_column(&self, column: &str) -> IoError {
        let available: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        IoError::MissingColumn {
            path: self.path.clone(),
            column: column.into(),
            suggestion: closest(column, available.iter().map(String::as_str)).map(String::from),
            available,
        }
    }
}

/// What [`DateFile::open`] learns from a file: schema, source, row count of each part,
/// and the bytes not read after a stream's last complete message.
type Opened = (SchemaRef, Source, Vec<u64>, u64);

fn open_source(path: &Path, format: FileFormat) -> Result<Opened, IoError> {
    let corrupt = |message: String| IoError::Corrupt {
        path: path.into(),
        format,
        message,
    };
    Ok(match format {
        FileFormat::IpcFile => {
            let (map, data) = ipc::load(path)?;
            let index = ipc::index_file(&data).map_err(|e| corrupt(e.to_string()))?;
            let (schema, rows) = (index.schema.clone(), index.batch_rows.clone());
            (schema, Source::IpcFile { data, map, index }, rows, 0)
        }
        FileFormat::IpcStream => {
            let (_, data) = ipc::load(path)?;
            let (schema, rows, complete) =
                ipc::index_stream(&data).map_err(|e| corrupt(e.to_string()))?;
            let torn = (data.len() - complete) as u64;
            let data = data.slice_with_length(0, complete);
            (schema, Source::IpcStream { data }, vec![rows], torn)
        }
        FileFormat::Parquet => {
            let file = open_file(path)?;
            let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
                .map_err(|e| corrupt(e.to_string()))?;
            let rows = metadata.metadata().row_groups().iter();
            let rows = rows.map(|group| group.num_rows().max(0) as u64).collect();
            (
                metadata.schema().clone(),
                Source::Parquet { metadata },
                rows,
                0,
            )
        }
        FileFormat::Csv => {
            let (schema, rows) = csv_schema_and_rows(path)?;
            (schema, Source::Csv, vec![rows], 0)
        }
    })
}

/// Runs a decoder, reporting a panic as a corrupt file: arrow-rs 60 can still panic on
/// some corrupt input (e.g. an IPC offsets buffer whose length is not a multiple of 4).
fn without_panics<T>(
    path: &Path,
    format: FileFormat,
    decode: impl FnOnce() -> Result<T, IoError>,
) -> Result<T, IoError> {
    std::panic::catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(IoError::Corrupt {
            path: path.into(),
            format,
            message: format!("decoder panicked: {message}"),
        })
    })
}

fn open_file(path: &Path) -> Result<File, IoError> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => IoError::NotFound { path: path.into() },
        _ => IoError::Read {
            path: path.into(),
            source,
        },
    })
}

fn csv_error(path: &Path, schema: &Schema, error: ArrowError) -> IoError {
    let message = error.to_string();
    let message = csv_value_error(&message, schema).unwrap_or(message);
    IoError::Csv {
        path: path.into(),
        message,
    }
}

/// Rewrites arrow-csv's "Error while parsing value 'v' as type 'T' for column i at line n"
/// with the column's name and a 1-based file line: arrow counts these lines from 0 (the
/// header), unlike its other CSV errors, which count from 1.
fn csv_value_error(message: &str, schema: &Schema) -> Option<String> {
    let rest = message.split_once("Error while parsing value '")?.1;
    let (value, rest) = rest.split_once("' as type '")?;
    let (data_type, rest) = rest.split_once("' for column ")?;
    let (column, rest) = rest.split_once(" at line ")?;
    let column = schema.fields().get(column.parse::<usize>().ok()?)?.name();
    let line = rest.split_once('.')?.0.parse::<usize>().ok()? + 1;
    Some(format!(
        "line {line}, column '{column}': value '{value}' is not a valid {data_type} \
         (the type inferred from the first {CSV_INFER_ROWS} rows)"
    ))
}

/// Infers a CSV file's schema from its first rows, then counts its rows in one pass that
/// also reads the columns inferred as integers as text, to settle their types on every
/// row: a column with a number that has a leading zero (`000001`, a symbol code) is
/// text, and one with a fraction or exponent further down (`100.5` after 1,000 whole
/// numbers) is Float64. Other types stay as inferred; a value they cannot parse fails
/// the read, naming its line.
fn csv_schema_and_rows(path: &Path) -> Result<(SchemaRef, u64), IoError> {
    let mut file = BufReader::new(open_file(path)?);
    let format = Format::default().with_header(true);
    let (inferred, _) = format
        .infer_schema(&mut file, Some(CSV_INFER_ROWS))
        .map_err(|e| csv_error(path, &Schema::empty(), e))?;
    let integers: Vec<usize> = (0..inferred.fields().len())
        .filter(|i| inferred.field(*i).data_type() == &DataType::Int64)
        .collect();
    let mut fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for &i in &integers {
        fields[i] = fields[i].clone().with_data_type(DataType::Utf8);
    }
    let as_text = SchemaRef::new(Schema::new(fields.clone()));
    let read_error = |source| IoError::Read {
        path: path.into(),
        source,
    };
    file.rewind().map_err(read_error)?;
    // Without columns the reader only splits records, checking each line's field count.
    let reader = ReaderBuilder::new(as_text.clone())
        .with_header(true)
        .with_projection(integers.clone())
        .build(file)
        .map_err(|e| csv_error(path, &as_text, e))?;
    let mut rows = 0;
    let mut kinds = vec![NumberText::Integer; integers.len()];
    for batch in reader {
        let batch = batch.map_err(|e| csv_error(path, &as_text, e))?;
        rows += batch.num_rows() as u64;
        for (kind, column) in kinds.iter_mut().zip(batch.columns()) {
            if *kind != NumberText::Text {
                let values = column.as_string::<i32>().iter().flatten();
                *kind = values.fold(*kind, |kind, value| kind.max(NumberText::of(value)));
            }
        }
    }
    for (&i, kind) in integers.iter().zip(kinds) {
        fields[i] = fields[i].clone().with_data_type(match kind {
            NumberText::Integer => DataType::Int64,
            NumberText::Float => DataType::Float64,
            NumberText::Text => DataType::Utf8,
        });
    }
    Ok((SchemaRef::new(Schema::new(fields)), rows))
}

/// What the values of a CSV column inferred as integers turn out to be, from the
/// narrowest type to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NumberText {
    /// Every value is an integer (or not a number at all: the read names it).
    Integer,
    /// Some value is a number that is not an integer.
    Float,
    /// Some value is an integer with a leading zero: a code to keep as written.
    Text,
}

impl NumberText {
    fn of(value: &str) -> NumberText {
        let digits = value.strip_prefix('-').unwrap_or(value).as_bytes();
        if digits.len() > 1 && digits[0] == b'0' && digits.iter().all(u8::is_ascii_digit) {
            NumberText::Text
        } else if value.parse::<i64>().is_err() && value.parse::<f64>().is_ok() {
            NumberText::Float
        } else {
            NumberText::Integer
        }
    }
}
