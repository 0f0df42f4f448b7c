//! The writer of `{date}.live.parquet`: a thread of its own, so that writing a
//! provisional partial (and syncing it to disk, about a millisecond twice over) does not
//! hold up the feed. Snapshots are written in order; when the disk falls behind, a
//! snapshot still waiting is replaced by a later one of its date (only the latest is
//! ever read), so the queue stays short whatever the disk's pace.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use arrow::array::RecordBatch;
use crossbeam_channel::{Receiver, Sender, bounded};

use super::Timeline;
use crate::io::write_parquet_snapshot_atomic;

/// A provisional partial to put in place.
pub(super) struct Snapshot {
    pub path: PathBuf,
    pub partial: RecordBatch,
    pub metadata: Vec<(String, String)>,
    /// For the log: the date, the watermark and the rows so far.
    pub date: String,
    pub watermark_ms: i64,
    pub rows: u64,
}

enum Job {
    Write(Snapshot),
    /// Answers once every snapshot sent before is written.
    Sync(Sender<()>),
}

/// The writer thread's handle (see the module docs).
pub(super) struct Snapshots {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Where each snapshot put in place is noted (`vizflow bench --live`).
    timeline: Option<Arc<Mutex<Timeline>>>,
}

/// How many jobs may wait for the writer, and how many it looks ahead at for later
/// snapshots: the feed waits (and with it, its producers) beyond that.
const QUEUE: usize = 64;

impl Snapshots {
    /// Starts the writer; it notes each snapshot put in place in `timeline`.
    pub(super) fn start(timeline: Option<Arc<Mutex<Timeline>>>) -> Self {
        let (jobs, queue) = bounded(QUEUE);
        let noted = timeline.clone();
        let thread = std::thread::Builder::new()
            .name("vizflow-snapshots".into())
            .spawn(move || write_all(queue, noted))
            .ok();
        if thread.is_none() {
            tracing::warn!("cannot start a thread to write the provisional partials");
        }
        Snapshots {
            jobs: thread.is_some().then_some(jobs),
            thread,
            timeline,
        }
    }

    /// Queues `snapshot`; writes it here when the writer thread could not start.
    pub(super) fn write(&self, snapshot: Snapshot) {
        let snapshot = match &self.jobs {
            Some(jobs) => match jobs.send(Job::Write(snapshot)) {
                Ok(()) => return,
                Err(error) => match error.into_inner() {
                    Job::Write(snapshot) => snapshot,
                    Job::Sync(_) => return,
                },
            },
            None => snapshot,
        };
        put_in_place(snapshot, &mut Vec::new(), self.timeline.as_ref());
    }

    /// Waits until every snapshot queued is written: before a date's final outputs,
    /// which remove its `.live.parquet`.
    pub(super) fn sync(&self) {
        let Some(jobs) = &self.jobs else { return };
        let (done, wait) = bounded(1);
        if jobs.send(Job::Sync(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for Snapshots {
    /// Lets the writer finish what is queued, and waits for it.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: each job in order, a snapshot skipped when a later one of its
/// file is already queued.
fn write_all(queue: Receiver<Job>, timeline: Option<Arc<Mutex<Timeline>>>) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    // The snapshots skipped, each in place when the next one of its file is.
    let mut skipped: Vec<Snapshot> = Vec::new();
    loop {
        if pending.is_empty() {
            match queue.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        // Looks ahead at most a queue's worth for later snapshots.
        let room = QUEUE.saturating_sub(pending.len());
        pending.extend(queue.try_iter().take(room));
        let job = pending.pop_front().expect("one job at least");
        match job {
            Job::Sync(done) => {
                let _ = done.send(());
            }
            Job::Write(snapshot) => {
                // A later snapshot of the file, queued before any wait for this one.
                let superseded = (pending.iter())
                    .take_while(|later| matches!(later, Job::Write(_)))
                    .any(|later| matches!(later, Job::Write(l) if l.path == snapshot.path));
                if superseded {
                    skipped.push(snapshot);
                    continue;
                }
                let mut replaced: Vec<Snapshot>;
                (replaced, skipped) = skipped.into_iter().partition(|s| s.path == snapshot.path);
                put_in_place(snapshot, &mut replaced, timeline.as_ref());
            }
        }
    }
}

/// Writes `snapshot` atomically (a temporary file, synced, then renamed), in place of
/// the snapshots `skipped` too (taken: the log names them).
fn put_in_place(
    snapshot: Snapshot,
    skipped: &mut Vec<Snapshot>,
    timeline: Option<&Arc<Mutex<Timeline>>>,
) {
    let Snapshot {
        path,
        partial,
        metadata,
        date,
        watermark_ms,
        rows,
    } = snapshot;
    let written = write_parquet_snapshot_atomic(&path, &partial, &metadata);
    if let Err(error) = &written {
        tracing::error!("cannot write {}: {error}", path.display());
    }
    for earlier in skipped.iter().filter(|_| written.is_ok()) {
        tracing::info!(
            "{} at {} ms: {} rows so far, {} groups -> {} (replaced before it was written \
             by the one at {watermark_ms} ms)",
            earlier.date,
            earlier.watermark_ms,
            earlier.rows,
            earlier.partial.num_rows(),
            path.display()
        );
    }
    if written.is_ok() {
        tracing::info!(
            "{date} at {watermark_ms} ms: {rows} rows so far, {} groups -> {}",
            partial.num_rows(),
            path.display()
        );
    }
    let watermarks = (skipped.drain(..).map(|s| s.watermark_ms)).chain([watermark_ms]);
    if let Some(timeline) = timeline {
        let now = Instant::now();
        let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
        timeline.provisional.extend(watermarks.map(|w| (now, w)));
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array};

    use super::*;
    use crate::io::read_parquet;

    fn snapshot(path: &std::path::Path, watermark_ms: i64) -> Snapshot {
        let values: ArrayRef = Arc::new(Int64Array::from(vec![watermark_ms]));
        Snapshot {
            path: path.to_owned(),
            partial: RecordBatch::try_from_iter([("w", values)]).unwrap(),
            metadata: vec![("w".to_owned(), watermark_ms.to_string())],
            date: "20240102".to_owned(),
            watermark_ms,
            rows: 0,
        }
    }

    /// Jobs queued before the writer looks: of the snapshots of one file, only the
    /// last before a wait is written, but each counts as in place when it is; a wait
    /// is answered after every snapshot before it; another file's are all written.
    #[test]
    fn a_snapshot_queued_behind_a_later_one_of_its_file_is_replaced_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        let (jobs, queue) = bounded(16);
        let (done, waited) = bounded(1);
        for job in [
            Job::Write(snapshot(&a, 1)),
            Job::Write(snapshot(&b, 2)),
            Job::Write(snapshot(&a, 3)),
            Job::Sync(done),
            Job::Write(snapshot(&a, 4)),
            Job::Write(snapshot(&a, 5)),
        ] {
            jobs.send(job).unwrap();
        }
        drop(jobs);
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        write_all(queue, Some(timeline.clone()));
        waited.try_recv().expect("the wait was answered");
        let written = |path: &std::path::Path| read_parquet(path).unwrap().1;
        let value = |metadata: Vec<(String, String)>| {
            (metadata.into_iter()).find_map(|(k, v)| (k == "w").then_some(v))
        };
        assert_eq!(value(written(&a)).as_deref(), Some("5"));
        assert_eq!(value(written(&b)).as_deref(), Some("2"));
        let timeline = timeline.lock().unwrap();
        let watermarks: Vec<i64> = timeline.provisional.iter().map(|(_, w)| *w).collect();
        // 1 goes with 3 (written before the wait), 4 with 5.
        assert_eq!(watermarks, [2, 1, 3, 4, 5]);
        let at = |w: i64| {
            timeline
                .provisional
                .iter()
                .find(|(_, x)| *x == w)
                .unwrap()
                .0
        };
        assert_eq!(at(1), at(3));
        assert_eq!(at(4), at(5));
    }
}
