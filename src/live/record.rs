//! `vizflow live --record DIR`: every accepted batch appended to `DIR/{date}.arrows`, an
//! Arrow IPC stream per date, flushed batch by batch, so that `vizflow run` over the
//! recording replays the day (`row_id` included: the rows' numbers in the live run).
//! Process `I` of a cluster records its own rows to `DIR/{date}.p{I}.arrows`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use chrono::NaiveDate;

use crate::calendar;

/// The open recordings, one per date being fed.
pub(super) struct Recording {
    dir: PathBuf,
    /// `.p{I}` for process `I` of a cluster, else empty.
    process: String,
    open: BTreeMap<NaiveDate, StreamWriter<BufWriter<File>>>,
}

impl Recording {
    /// Recordings in `dir`, of process `process` of a cluster if any.
    pub(super) fn new(dir: PathBuf, process: Option<usize>) -> Self {
        Recording {
            dir,
            process: process.map_or(String::new(), |i| format!(".p{i}")),
            open: BTreeMap::new(),
        }
    }

    /// The recording of `date`.
    fn path(&self, date: NaiveDate) -> PathBuf {
        let date = calendar::format_date(date);
        self.dir.join(format!("{date}{}.arrows", self.process))
    }

    /// Appends `rows` of `date` and flushes them to the file.
    pub(super) fn append(&mut self, date: NaiveDate, rows: &RecordBatch) -> Result<(), ArrowError> {
        if !self.open.contains_key(&date) {
            std::fs::create_dir_all(&self.dir)?;
            let file = File::create(self.path(date))?;
            let writer = StreamWriter::try_new(BufWriter::new(file), &rows.schema())?;
            self.open.insert(date, writer);
        }
        let writer = self.open.get_mut(&date).expect("opened above");
        writer.write(rows)?;
        writer.get_mut().flush()?;
        Ok(())
    }

    /// Ends `date`'s recording (its end-of-stream marker).
    pub(super) fn close(&mut self, date: NaiveDate) {
        if let Some(mut writer) = self.open.remove(&date)
            && let Err(error) = writer.finish()
        {
            tracing::error!("cannot finish the recording of {date}: {error}");
        }
    }
}
