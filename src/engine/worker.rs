//! The dataflow each worker runs, and the commands and messages it exchanges with the
//! [`Engine`](super::Engine) of its process.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use crossbeam_channel::{Receiver, Sender};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as PipelinePact};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use vizflow_operators::aggregate::Aggregate;
use vizflow_operators::batch::{Batch, Partition, with_columns};
use vizflow_operators::bin::Bin;
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::derive::Derive;
use vizflow_operators::enrich::Enrich;
use vizflow_operators::parse_time::ParseTime;
use vizflow_operators::report::{DateReport, Diagnostics, first_errors};
use vizflow_operators::stash::FrontierStash;
use vizflow_operators::time::{self, DateOwners, Time};

use crate::config::{BoundPipeline, Stage};
use crate::io::DateFile;

/// What the caller tells a worker.
pub(super) enum Command {
    Push(RecordBatch),
    Read {
        file: Arc<DateFile>,
        part: usize,
        columns: Arc<Vec<String>>,
        batch_rows: usize,
    },
    Advance(Time),
    /// This process's report of a completed date (sent to one worker; the others get
    /// `None`), which every worker's report input then passes.
    Report(u32, Option<DateReport>),
}

/// What workers tell the caller.
pub(super) enum WorkerMessage {
    Partial(u32, RecordBatch),
    /// A date's report merged from every process (every process gets it: one that does
    /// not own the date learns whether it failed).
    Report(u32, DateReport),
    Frontier {
        worker: usize,
        time: Option<Time>,
    },
}

/// What every worker of a process shares.
pub(super) struct WorkerContext {
    pub(super) pipeline: Arc<BoundPipeline>,
    pub(super) diagnostics: Diagnostics,
    pub(super) owners: DateOwners,
    pub(super) partition: Partition,
}

/// The input of the report dataflow: each process's report of a date, by date key.
type ReportInput = InputHandle<Time, CapacityContainerBuilder<Vec<(u32, DateReport)>>>;

/// The input of the rows dataflow.
type RowInput = InputHandle<Time, CapacityContainerBuilder<Batch>>;

/// One worker: builds the dataflows, then feeds commands into them until the engine
/// hangs up and both dataflows are done.
pub(super) fn run_worker(
    worker: &mut timely::worker::Worker,
    context: &WorkerContext,
    commands: Receiver<Command>,
    events: Sender<WorkerMessage>,
) {
    let index = worker.index();
    let (rows, probe) = build_rows(worker, context, &events);
    let (reports, report_probe) = build_reports(worker, &context.owners, &events);
    let mut inputs = WorkerInputs {
        rows: Some(rows),
        reports: Some(reports),
    };
    let mut reported: Option<Option<Time>> = None;
    loop {
        loop {
            match commands.try_recv() {
                Ok(command) => inputs.apply(command, &context.diagnostics),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    inputs = WorkerInputs {
                        rows: None,
                        reports: None,
                    };
                    break;
                }
            }
        }
        let closed = inputs.rows.is_none() && inputs.reports.is_none();
        if closed && probe.done() && report_probe.done() {
            break;
        }
        worker.step_or_park(None);
        let frontier = probe.with_frontier(|f| f.first().copied());
        if reported != Some(frontier) {
            reported = Some(frontier);
            let _ = events.send(WorkerMessage::Frontier {
                worker: index,
                time: frontier,
            });
        }
    }
}

/// Builds the rows dataflow: the input, the bound pipeline's stages in order, the
/// aggregation, and an operator sending each date's partial to the engine.
fn build_rows(
    worker: &mut timely::worker::Worker,
    context: &WorkerContext,
    events: &Sender<WorkerMessage>,
) -> (RowInput, ProbeHandle<Time>) {
    let WorkerContext {
        pipeline,
        diagnostics,
        owners,
        partition,
    } = context;
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<Time, _, _>(|scope| {
        let mut rows = scope.input_from(&mut input);
        for stage in &pipeline.stages {
            let diagnostics = diagnostics.clone();
            rows = match stage {
                Stage::Derive(spec) => rows.derive(spec.clone(), diagnostics),
                Stage::ParseTime(spec) => rows.parse_time(spec.clone(), diagnostics),
                Stage::Keyed(spec) => {
                    rows.enrich_partitioned(spec.clone(), diagnostics, *partition)
                }
                Stage::Bin(bins) => rows.bin(bins.clone(), diagnostics),
            };
        }
        let partial_events = events.clone();
        rows.aggregate(pipeline.plan.clone(), diagnostics.clone(), owners.clone())
            .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                PipelinePact,
                "Results",
                move |_, _| {
                    move |input, _output| {
                        input.for_each_time(|time, data| {
                            for batch in data {
                                if let Some(partial) = batch.take() {
                                    let _ = partial_events.send(WorkerMessage::Partial(
                                        time::date_key_of(*time.time()),
                                        partial,
                                    ));
                                }
                            }
                        });
                    }
                },
            )
            .probe_with(&probe);
    });
    (input, probe)
}

/// Builds the reports dataflow. Every process's report of a date meets on the date's
/// owner, which merges them once every worker's report input has passed the date, then
/// sends the merged report to every worker: each process learns every date's outcome
/// (a process must know that another's date failed before it writes a later date under
/// --fail-fast).
fn build_reports(
    worker: &mut timely::worker::Worker,
    owners: &DateOwners,
    events: &Sender<WorkerMessage>,
) -> (ReportInput, ProbeHandle<Time>) {
    let mut reports = InputHandle::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<Time, _, _>(|scope| {
        let report_events = events.clone();
        let owners = owners.clone();
        scope
            .input_from(&mut reports)
            .unary_frontier::<CapacityContainerBuilder<Vec<(u32, DateReport)>>, _, _, _>(
                Exchange::new(move |(date_key, _): &(u32, DateReport)| {
                    owners.worker_of(*date_key) as u64
                }),
                "Reports",
                move |_, _| {
                    let mut pending: FrontierStash<u32, DateReport> = FrontierStash::per_date();
                    move |(input, frontier), output| {
                        input.for_each_time(|time, data| {
                            for parts in data {
                                for (date_key, part) in parts.drain(..) {
                                    pending.stash(date_key, *time.time(), &time).merge(part);
                                }
                            }
                        });
                        for (date_key, capability, mut report) in pending.ready(frontier) {
                            report.errors = first_errors(std::mem::take(&mut report.errors));
                            output.session(&capability).give((date_key, report));
                        }
                    }
                },
            )
            .broadcast()
            .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                PipelinePact,
                "Outcomes",
                move |_, _| {
                    move |input, _output| {
                        input.for_each_time(|_time, data| {
                            for reports in data {
                                for (date_key, report) in reports.drain(..) {
                                    let _ =
                                        report_events.send(WorkerMessage::Report(date_key, report));
                                }
                            }
                        });
                    }
                },
            )
            .probe_with(&probe);
    });
    (reports, probe)
}

/// A worker's two inputs; `None` once closed.
struct WorkerInputs {
    rows: Option<RowInput>,
    reports: Option<ReportInput>,
}

impl WorkerInputs {
    /// Carries out one command of the engine.
    fn apply(&mut self, command: Command, diagnostics: &Diagnostics) {
        match command {
            Command::Push(batch) => {
                if let Some(input) = self.rows.as_mut() {
                    input.send_batch(&mut Batch::new(batch));
                }
            }
            Command::Read {
                file,
                part,
                columns,
                batch_rows,
            } => {
                if let Some(input) = self.rows.as_mut() {
                    read_part(input, &file, part, &columns, batch_rows, diagnostics);
                }
            }
            Command::Advance(time) => {
                if time == Time::MAX {
                    self.rows = None; // closes the input: the remaining dates complete
                } else if let Some(input) = self.rows.as_mut() {
                    input.advance_to(time);
                }
            }
            Command::Report(date_key, report) => {
                if let Some(reports) = self.reports.as_mut() {
                    reports.advance_to(time::date_start(date_key));
                    if let Some(report) = report {
                        reports.send((date_key, report));
                    }
                    reports.advance_to(time::date_end(date_key) + 1);
                }
            }
        }
    }
}

/// Reads a part of a date's file into the rows input, numbering the rows by their
/// place in the file (`row_id`); a read error fails the date.
fn read_part(
    input: &mut RowInput,
    file: &DateFile,
    part: usize,
    columns: &[String],
    batch_rows: usize,
    diagnostics: &Diagnostics,
) {
    let date_key = time::date_key_of(*input.time());
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let read = file.read_part(part, &names, batch_rows);
    diagnostics.time(date_key, "Read", started);
    match read {
        Ok(batches) => {
            for (offset, batch) in batches {
                let n = batch.num_rows() as u64;
                diagnostics.add(date_key, "rows_read", n);
                let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(offset..offset + n));
                let row_ids = vec![(ROW_ID.to_owned(), ids)];
                input.send_batch(&mut Batch::new(with_columns(&batch, row_ids)));
            }
        }
        Err(error) => diagnostics.input_error(date_key, error.to_string()),
    }
}
