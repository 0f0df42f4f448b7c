//! The dataflow each worker runs, and the commands and messages it exchanges with the
//! [`Engine`](super::Engine) of its process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use crossbeam_channel::{Receiver, Sender};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline as PipelinePact};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use vizflow_operators::aggregate::Aggregate;
use vizflow_operators::batch::{Batch, Emission, Partition, with_columns};
use vizflow_operators::bin::Bin;
use vizflow_operators::columns::ROW_ID;
use vizflow_operators::derive::{Derive, derive_fn};
use vizflow_operators::enrich::{Enrich, Provisional};
use vizflow_operators::forward_return::ForwardReturnSpec;
use vizflow_operators::next_day::{NextDayReturns, NextDaySpec, day_prices};
use vizflow_operators::parse_time::{ParseTime, parse_time_selected_fn};
use vizflow_operators::report::{DateReport, Diagnostics, first_errors};
use vizflow_operators::stash::FrontierStash;
use vizflow_operators::time::{self, DateOwners, Time};

use super::arrivals::{Arrivals, StageFn, SummaryInput};
use crate::config::{BoundPipeline, Stage};
use crate::io::DateFile;

/// What the caller tells a worker.
pub(super) enum Command {
    /// A batch of the current date, the date's part `part` in arrival order.
    Push {
        batch: RecordBatch,
        part: u64,
    },
    /// Part `part` of the current date's file, the date's part `arrival` in arrival
    /// order.
    Read {
        file: Arc<DateFile>,
        part: usize,
        arrival: u64,
        columns: Arc<Vec<String>>,
        batch_rows: usize,
    },
    Advance(Time),
    /// The producer's explicit watermark of the current date (`[stream]` only).
    Floor(i64),
    /// This process's report of a completed date (sent to one worker; the others get
    /// `None`), which every worker's report input then passes.
    Report(u32, Option<DateReport>),
}

impl Command {
    /// Whether the command brings rows of the current date (paced under `[stream]`).
    fn brings_rows(&self) -> bool {
        matches!(self, Command::Read { .. } | Command::Push { .. })
    }
}

/// What workers tell the caller.
pub(crate) enum WorkerMessage {
    Partial(u32, RecordBatch),
    /// A date's provisional partial at a watermark (ms of trading time).
    Provisional(u32, i64, RecordBatch),
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
    /// Each local worker's row input time (`u64::MAX` once closed), for pacing under
    /// `[stream]`.
    pub(super) input_times: Arc<Vec<AtomicU64>>,
    /// The index of this process's first worker.
    pub(super) first_worker: usize,
    /// The arrival order the workers number their parts in (`Arrivals::new`).
    pub(super) source: u32,
}

/// The input of the report dataflow: each process's report of a date, by date key.
type ReportInput = InputHandle<Time, CapacityContainerBuilder<Vec<(u32, DateReport)>>>;

/// The input of the rows dataflow.
pub(super) type RowInput = InputHandle<Time, CapacityContainerBuilder<Batch>>;

/// Commands a worker takes from its channel before carrying them out (one: see
/// `COMMANDS_IN_FLIGHT` in the engine).
const MAX_QUEUED: usize = 1;

/// One worker: builds the dataflows, then feeds commands into them until the engine
/// hangs up and the dataflows are done.
pub(super) fn run_worker(
    worker: &mut timely::worker::Worker,
    context: &WorkerContext,
    commands: Receiver<Command>,
    events: Sender<WorkerMessage>,
) {
    let index = worker.index();
    let (rows, probe, keyed) = build_rows(worker, context, &events);
    let (reports, report_probe) = build_reports(worker, &context.owners, &events);
    let (arrivals, summaries, summary_probe) = match &context.pipeline.pipeline.stream {
        Some(spec) => {
            let stages = arrival_stages(&context.pipeline);
            let (arrivals, input, probe) =
                Arrivals::new(worker, spec.clone(), context.source, stages);
            (Some(arrivals), Some(input), Some(probe))
        }
        None => (None, None, None),
    };
    let mut inputs = WorkerInputs {
        rows: Some(rows),
        reports: Some(reports),
        summaries,
        arrivals,
    };
    // Commands not carried out yet: under `[stream]`, the input cannot leave a date
    // while a part of it waits for the parts before it.
    let mut queue = VecDeque::new();
    let streaming = context.pipeline.pipeline.stream.is_some();
    let keyed_streams = keyed_streams(&context.pipeline);
    let mut hung_up = false;
    let mut reported: Option<Option<Time>> = None;
    // Whether a command was carried out or the input moved since the last step: then
    // the worker steps without parking, so that the release below sees it (a
    // producer's watermark comes without rows, and moving the input activates nothing
    // by itself).
    let mut moved = false;
    loop {
        // At most `MAX_QUEUED` taken: the rest wait in the (bounded) channel, and so
        // does the caller (nothing in the channel is needed to carry out the queue).
        while queue.len() < MAX_QUEUED {
            match commands.try_recv() {
                Ok(command) => queue.push_back(command),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    hung_up = true;
                    break;
                }
            }
        }
        // Under `[stream]` rows go in a part at a time, the dataflow stepped in between,
        // and only while the keyed stage is within `KEYED_LAG_MS` of the input, so that
        // it releases rows as they come instead of the reader running ahead with the
        // whole date.
        let lagging = keyed_streams && inputs.keyed_lags(&keyed, &context.input_times);
        while queue.front().is_some_and(|c| inputs.ready(c, lagging)) {
            let command = queue.pop_front().expect("a command");
            let paced = streaming && command.brings_rows();
            inputs.apply(command, context);
            moved = true;
            if paced {
                break;
            }
        }
        if hung_up && queue.is_empty() {
            inputs.close();
        }
        let closed = inputs.rows.is_none() && inputs.reports.is_none();
        let summarised = summary_probe.as_ref().is_none_or(|p| p.done());
        if closed && probe.done() && report_probe.done() && summarised {
            break;
        }
        if streaming {
            let time = inputs.rows.as_ref().map_or(u64::MAX, |rows| *rows.time());
            context.input_times[index - context.first_worker].store(time, Ordering::Relaxed);
        }
        let lagging = keyed_streams && inputs.keyed_lags(&keyed, &context.input_times);
        if moved || queue.front().is_some_and(|c| inputs.ready(c, lagging)) {
            worker.step();
        } else {
            worker.step_or_park(None);
        }
        moved = false;
        if let (Some(arrivals), Some(rows)) = (inputs.arrivals.as_mut(), inputs.rows.as_mut()) {
            let before = *rows.time();
            arrivals.release(rows, &context.diagnostics);
            moved = *rows.time() > before;
        }
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

/// The stages a streaming pipeline runs on each batch as it arrives, before its late
/// rows are found: the leading `Derive` and `ParseTime` stages, up to the keyed stage
/// (they map batch by batch, so running them before the dataflow changes nothing).
fn arrival_stages(pipeline: &BoundPipeline) -> Vec<(&'static str, StageFn)> {
    let count = arrival_stage_count(pipeline);
    pipeline.stages[..count]
        .iter()
        .filter_map(|stage| -> Option<(&'static str, StageFn)> {
            match stage {
                Stage::Derive(spec) => {
                    let mut derive = derive_fn(spec.clone());
                    let run = move |d, b, g: &Diagnostics| {
                        derive(d, b, g)
                            .map(|b| (b, None))
                            .map_err(|e| e.to_string())
                    };
                    Some(("Derive", Box::new(run)))
                }
                // Its rows out of session go as a selection: no copy of the others.
                Stage::ParseTime(spec) => {
                    let mut parse = parse_time_selected_fn(spec.clone());
                    let run =
                        move |d, b, g: &Diagnostics| parse(d, b, g).map_err(|e| e.to_string());
                    Some(("ParseTime", Box::new(run)))
                }
                // Not counted by arrival_stage_count.
                Stage::Keyed(_) | Stage::Bin(_) => None,
            }
        })
        .collect()
}

/// How many of the pipeline's stages run as batches arrive when it streams.
fn arrival_stage_count(pipeline: &BoundPipeline) -> usize {
    match &pipeline.pipeline.stream {
        Some(_) => pipeline
            .stages
            .iter()
            .take_while(|s| matches!(s, Stage::Derive(_) | Stage::ParseTime(_)))
            .count(),
        None => 0,
    }
}

/// How far, in trading time, the keyed stage may fall behind the row input under
/// `[stream]` before the worker stops reading (rows in between wait in channels).
const KEYED_LAG_MS: i64 = 30_000;

/// Builds the rows dataflow: the input, the bound pipeline's stages in order, the
/// aggregation, and an operator sending each date's partial to the engine. Returns the
/// input, a probe at the end and one after the keyed stage.
fn build_rows(
    worker: &mut timely::worker::Worker,
    context: &WorkerContext,
    events: &Sender<WorkerMessage>,
) -> (RowInput, ProbeHandle<Time>, ProbeHandle<Time>) {
    let WorkerContext {
        pipeline,
        diagnostics,
        owners,
        partition,
        ..
    } = context;
    let mut input = InputHandle::new();
    let probe = ProbeHandle::new();
    let keyed = ProbeHandle::new();
    worker.dataflow::<Time, _, _>(|scope| {
        let mut rows = scope.input_from(&mut input);
        for stage in &pipeline.stages[arrival_stage_count(pipeline)..] {
            let diagnostics = diagnostics.clone();
            rows = match stage {
                Stage::Derive(spec) => rows.derive(spec.clone(), diagnostics),
                Stage::ParseTime(spec) => rows.parse_time(spec.clone(), diagnostics),
                Stage::Keyed(spec) => {
                    let stream = pipeline.pipeline.stream.as_ref();
                    let provisional =
                        stream
                            .and_then(|s| s.emit_every_ms)
                            .map(|every_ms| Provisional {
                                every_ms,
                                day_ms: pipeline.pipeline.market.clock.total_ms(),
                                incremental: pipeline.incremental,
                            });
                    let watermark = keyed_streams(pipeline);
                    let (spec, partition) = (spec.clone(), *partition);
                    // Returns to the next trading day: each date's first and last
                    // prices are taken on the way in, and its rows wait on the way out
                    // for its next day's.
                    let (rows, next_day) = match NextDaySpec::of(&spec) {
                        Some(next) => {
                            let days = pipeline.next_days.clone();
                            let (rows, tables) =
                                day_prices(rows, next.clone(), days.clone(), diagnostics.clone());
                            (rows, Some((next, days, tables)))
                        }
                        None => (rows, None),
                    };
                    let enriched = (rows.enrich_partitioned(
                        spec,
                        diagnostics.clone(),
                        partition,
                        watermark,
                        provisional,
                    ))
                    .probe_with(&keyed);
                    match next_day {
                        Some((next, days, tables)) => {
                            enriched.next_day_returns(tables.broadcast(), next, days, diagnostics)
                        }
                        None => enriched,
                    }
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
                            let date_key = time::date_key_of(*time.time());
                            for batch in data {
                                let emission = batch.emission;
                                let Some(partial) = batch.take() else {
                                    continue;
                                };
                                let message = match emission {
                                    Some(Emission::Provisional { at, .. }) => {
                                        WorkerMessage::Provisional(date_key, at, partial)
                                    }
                                    _ => WorkerMessage::Partial(date_key, partial),
                                };
                                let _ = partial_events.send(message);
                            }
                        });
                    }
                },
            )
            .probe_with(&probe);
    });
    (input, probe, keyed)
}

/// Whether the keyed stage releases rows as the watermark passes them (`[stream]`), so
/// that the input is paced to it. Not when a return to the close (or the next trading
/// day) is asked for without provisional results: such a return is final only when
/// the date is, the date is held whole, and the whole-date path holds it best (one
/// sort at the close, no segments; the late rows are found on arrival either way).
fn keyed_streams(pipeline: &BoundPipeline) -> bool {
    let Some(stream) = &pipeline.pipeline.stream else {
        return false;
    };
    let to_the_close = pipeline.stages.iter().any(|stage| {
        matches!(stage, Stage::Keyed(spec) if (spec.rules.first())
            .and_then(|rule| rule.forward_returns())
            .is_some_and(ForwardReturnSpec::reaches_the_close))
    });
    stream.emit_every_ms.is_some() || !to_the_close
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

/// A worker's inputs, `None` once closed, and its arrivals under `[stream]`.
struct WorkerInputs {
    rows: Option<RowInput>,
    reports: Option<ReportInput>,
    summaries: Option<SummaryInput>,
    arrivals: Option<Arrivals>,
}

impl WorkerInputs {
    /// Whether the keyed stage (its output frontier, `keyed`) is more than
    /// [`KEYED_LAG_MS`] of trading time behind the row inputs of this process's workers
    /// (`input_times`: the slowest of them, so that the workers' usual distance of a
    /// part or two does not count) within a date.
    fn keyed_lags(&self, keyed: &ProbeHandle<Time>, input_times: &[AtomicU64]) -> bool {
        let slowest = input_times.iter().map(|t| t.load(Ordering::Relaxed)).min();
        let (Some(input), Some(keyed)) = (
            slowest.filter(|t| *t != u64::MAX),
            keyed.with_frontier(|f| f.first().copied()),
        ) else {
            return false;
        };
        time::date_key_of(input) == time::date_key_of(keyed)
            && i64::from(time::bucket_of(input)) - i64::from(time::bucket_of(keyed))
                > KEYED_LAG_MS / time::BUCKET_MS
    }

    /// Whether `command` can be carried out now: not an advance past a held part, nor
    /// rows while the keyed stage is `lagging`.
    fn ready(&self, command: &Command, lagging: bool) -> bool {
        !(self.blocked(command) || lagging && command.brings_rows())
    }

    /// True when `command` must wait: it would move the input past a date of which a
    /// part is held.
    fn blocked(&self, command: &Command) -> bool {
        match (command, &self.arrivals) {
            (Command::Advance(time), Some(arrivals)) => arrivals.holds_before(*time),
            _ => false,
        }
    }

    /// Closes the inputs: the remaining dates complete.
    fn close(&mut self) {
        self.rows = None;
        self.reports = None;
        self.summaries = None;
    }

    /// Carries out one command of the engine.
    fn apply(&mut self, command: Command, context: &WorkerContext) {
        let diagnostics = &context.diagnostics;
        if let Command::Report(date_key, report) = command {
            if let Some(reports) = self.reports.as_mut() {
                reports.advance_to(time::date_start(date_key));
                if let Some(report) = report {
                    reports.send((date_key, report));
                }
                reports.advance_to(time::date_end(date_key) + 1);
            }
        } else if let Some(input) = self.rows.as_mut() {
            let date_key = time::date_key_of(*input.time());
            let arrivals = self.arrivals.as_mut().zip(self.summaries.as_mut());
            match command {
                Command::Push { batch, part } => match arrivals {
                    Some((arrivals, summaries)) => {
                        arrivals.arrive(date_key, part, vec![batch], summaries, diagnostics)
                    }
                    None => input.send_batch(&mut Batch::new(batch)),
                },
                Command::Read {
                    file,
                    part,
                    arrival,
                    columns,
                    batch_rows,
                } => {
                    let pipeline = &context.pipeline;
                    let batches = if pipeline.next_days.is_prices_only(date_key) {
                        // Read for its prices alone: the columns they come from, the
                        // others null.
                        let read = &pipeline.price_read;
                        let batches =
                            read_part(date_key, &file, part, read, batch_rows, diagnostics);
                        batches.iter().map(|b| pipeline.with_nulls(b)).collect()
                    } else {
                        read_part(date_key, &file, part, &columns, batch_rows, diagnostics)
                    };
                    match arrivals {
                        Some((arrivals, summaries)) => {
                            arrivals.arrive(date_key, arrival, batches, summaries, diagnostics)
                        }
                        None => {
                            for batch in batches {
                                input.send_batch(&mut Batch::new(batch));
                            }
                        }
                    }
                }
                Command::Advance(Time::MAX) => {
                    // Closes the input: the remaining dates complete.
                    self.rows = None;
                    self.summaries = None;
                }
                Command::Advance(time) => {
                    if time > *input.time() {
                        input.advance_to(time);
                    }
                    if let Some((_, summaries)) = arrivals
                        && time > *summaries.time()
                    {
                        summaries.advance_to(time);
                    }
                }
                Command::Floor(elapsed_ms) => {
                    if let Some((arrivals, _)) = arrivals {
                        arrivals.raise_floor(date_key, elapsed_ms);
                    }
                }
                Command::Report(..) => {}
            }
        }
    }
}

/// Reads a part of a date's file, numbering the rows by their place in the file
/// (`row_id`); a read error fails the date (and gives no batches).
fn read_part(
    date_key: u32,
    file: &DateFile,
    part: usize,
    columns: &[String],
    batch_rows: usize,
    diagnostics: &Diagnostics,
) -> Vec<RecordBatch> {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let read = file.read_part(part, &names, batch_rows);
    diagnostics.time(date_key, "Read", started);
    match read {
        Ok(batches) => batches
            .into_iter()
            .map(|(offset, batch)| {
                let n = batch.num_rows() as u64;
                diagnostics.add(date_key, "rows_read", n);
                let ids: ArrayRef = Arc::new(UInt64Array::from_iter_values(offset..offset + n));
                with_columns(&batch, vec![(ROW_ID.to_owned(), ids)])
            })
            .collect(),
        Err(error) => {
            diagnostics.input_error(date_key, error.to_string());
            Vec::new()
        }
    }
}
