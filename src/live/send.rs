//! `vizflow send`: streams date files to a `vizflow live` as one Arrow IPC stream, as
//! fast as the connection takes them: a producer for tests, benchmarks and replaying a
//! recorded day into a live instance.

use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use chrono::NaiveDate;

use super::DATE_COLUMN;
use crate::io::DateFile;

/// Rows per batch sent. A provisional result waits behind the few batches queued ahead
/// of the dataflow, so its latency grows with their size: on the live benchmark (10M
/// rows, 2 workers) p99 65-73 ms with 8,192 rows, 97-135 ms with 16,384, at the same
/// rate (2.1-2.4M rows/s); 4,096 halves it again and costs a few percent of the rate.
const BATCH_ROWS: usize = 8_192;

/// Sends `files` (each with its date), in order, to `address`; returns the rows sent.
pub fn send(address: SocketAddr, files: &[(NaiveDate, PathBuf)]) -> anyhow::Result<u64> {
    let connection = TcpStream::connect(address)?;
    connection.set_nodelay(true)?;
    // Smaller than a batch's body, which then goes to the socket without a copy into
    // the buffer; a message's prefix and metadata are gathered in it.
    let mut out = Some(BufWriter::with_capacity(64 << 10, connection));
    let mut writer: Option<StreamWriter<BufWriter<TcpStream>>> = None;
    let mut rows = 0u64;
    for (date, path) in files {
        let file = DateFile::open(path)?;
        let names: Vec<String> = (file.schema().fields().iter())
            .map(|f| f.name().clone())
            .filter(|name| name != DATE_COLUMN)
            .collect();
        let columns: Vec<&str> = names.iter().map(String::as_str).collect();
        let key = crate::calendar::format_date(*date).parse::<i32>()?;
        for part in 0..file.num_parts() {
            for (_, batch) in file.read_part(part, &columns, BATCH_ROWS)? {
                let batch = with_date(&batch, key)?;
                let writer = match &mut writer {
                    Some(writer) => writer,
                    None => {
                        let out = out.take().expect("one writer");
                        writer.insert(StreamWriter::try_new(out, &batch.schema())?)
                    }
                };
                writer.write(&batch)?;
                rows += batch.num_rows() as u64;
            }
        }
    }
    if let Some(mut writer) = writer {
        writer.finish()?;
        writer.into_inner()?.flush()?;
    }
    Ok(rows)
}

/// `batch` with a `date` column (`YYYYMMDD`).
fn with_date(batch: &RecordBatch, key: i32) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(DATE_COLUMN, DataType::Int32, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(Int32Array::from(vec![key; batch.num_rows()])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
