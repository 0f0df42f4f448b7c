//! `vizflow live --record DIR`: every accepted batch appended to `DIR/{date}.arrows`, an
//! Arrow IPC stream per date, flushed batch by batch, so that `vizflow run` over the
//! recording replays the day (`row_id` included: the rows' numbers in the live run).

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
    open: BTreeMap<NaiveDate, StreamWriter<BufWriter<File>>>,
}

impl Recording {
    pub(super) fn new(dir: PathBuf) -> Self {
        Recording {
            dir,
            open: BTreeMap::new(),
        }
    }

    /// The recording of `date`.
    pub(super) fn path(dir: &std::path::Path, date: NaiveDate) -> PathBuf {
        dir.join(format!("{}.arrows", calendar::format_date(date)))
    }

    /// Appends `rows` of `date` and flushes them to the file.
    pub(super) fn append(&mut self, date: NaiveDate, rows: &RecordBatch) -> Result<(), ArrowError> {
        if !self.open.contains_key(&date) {
            std::fs::create_dir_all(&self.dir)?;
            let file = File::create(Self::path(&self.dir, date))?;
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
