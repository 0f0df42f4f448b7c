//! `vizflow reduce`: the partials of a directory merged exactly into one table
//! (SEMANTICS.md, *Reduce*), grouped by any subset of their group-by columns or by
//! `date`, `month`, `weekday`, `year`, filtered by a SQL condition over the groups, with
//! metrics recomputed from the merged components (the pipeline's, and new ones).
//!
//! The partials describe themselves ([`crate::partials::Layout`]); they are read in
//! parallel and folded into a [`Reducer`] one at a time, so memory follows the groups,
//! not the dates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, Schema};
use chrono::{Datelike, NaiveDate};
use serde_json::Value;
use vizflow_operators::aggregate::Reducer;
use vizflow_operators::expr::{Expr, MetricExpr};

use crate::calendar;
use crate::io::read_parquet;
use crate::partials::{self, Bin, Layout};

/// The time keys a reduce can group by besides the partials' columns, from `date`.
pub const TIME_KEYS: [&str; 3] = ["month", "weekday", "year"];

/// What to merge and how.
#[derive(Clone, Debug, Default)]
pub struct ReduceOptions {
    /// The dates to merge: a range `20240102..20240131` (the partials within it), a
    /// list `20240102,20240103` (each must have a partial) or one date; all the
    /// directory's partials when `None`.
    pub dates: Option<String>,
    /// The columns to group by (the partials' group-by columns when `None`).
    pub by: Option<Vec<String>>,
    /// A SQL condition over the group columns (and `date`, `month`, `weekday`, `year`).
    pub filter: Option<String>,
    /// New metrics, `(name, expression over aggregate calls)`; a name of the
    /// pipeline's replaces its metric.
    pub metrics: Vec<(String, String)>,
    /// Bin columns whose adjacent bins are merged, by an odd factor.
    pub rebin: Vec<(String, i64)>,
    /// Merge partials of different pipelines whose metrics agree.
    pub allow_mixed: bool,
    /// The layout of partials written before partials described themselves (from
    /// `--pipeline`).
    pub layout: Option<Layout>,
    /// Also merge the provisional partial (`{date}.live.parquet`) of each date that has
    /// no final partial yet: the dates `vizflow live` has open, as far as they have come.
    pub live: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// The merged table and what it holds.
#[derive(Debug)]
pub struct Reduced {
    /// The groups in key order: the `by` columns, the metrics, the components.
    pub table: RecordBatch,
    /// The layout of the table (its group-by columns, metrics and bins after rebinning).
    pub layout: Layout,
    /// The dates merged.
    pub dates: Vec<NaiveDate>,
    /// The dates of those merged from a provisional partial (with
    /// [`ReduceOptions::live`]).
    pub provisional: Vec<NaiveDate>,
}

/// Why partials could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// The directory cannot be listed.
    #[error("cannot list the partials in {}: {source}", dir.display())]
    List {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No partial to merge.
    #[error("no partial {{YYYYMMDD}}.parquet {what} in {}; write them with `vizflow run`", dir.display())]
    NoPartials {
        /// The directory.
        dir: PathBuf,
        /// `of the dates asked for`, or empty.
        what: &'static str,
    },
    /// A partial cannot be read.
    #[error("{}: {message}", path.display())]
    Partial {
        /// The partial.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A partial does not describe itself.
    #[error(
        "{} was written by VizFlow {version} and does not describe its columns; pass \
         --pipeline P.toml, the pipeline that made it",
        path.display()
    )]
    Undescribed {
        /// The partial.
        path: PathBuf,
        /// The version that wrote it, if it says.
        version: String,
    },
    /// Partials of different pipelines.
    #[error(
        "{} and {} were made by different pipelines (hashes {first_hash} and \
         {other_hash}); merge the partials of one pipeline, or pass --allow-mixed when \
         their metrics agree",
        first.display(),
        other.display()
    )]
    Mixed {
        /// The first partial.
        first: PathBuf,
        /// Its pipeline's hash.
        first_hash: String,
        /// A partial of another pipeline.
        other: PathBuf,
        /// Its pipeline's hash.
        other_hash: String,
    },
    /// Partials whose metrics differ, even with `--allow-mixed`.
    #[error(
        "{} and {} have different metrics ({first} against {other}): they cannot be merged",
        first_path.display(),
        other_path.display()
    )]
    MetricsDiffer {
        /// The first partial.
        first_path: PathBuf,
        /// Its metrics.
        first: String,
        /// The other partial.
        other_path: PathBuf,
        /// Its metrics.
        other: String,
    },
    /// A flag names something the partials do not have, or is malformed.
    #[error("{flag}: {message}")]
    Usage {
        /// The flag, e.g. `--by`.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The merge failed.
    #[error(transparent)]
    Merge(#[from] vizflow_operators::aggregate::ReduceError),
}

/// Merges the partials in `dir` as `options` say.
pub fn reduce(dir: &Path, options: &ReduceOptions) -> Result<Reduced, ReduceError> {
    let listed = if options.live {
        partials::list_with_live(dir)
    } else {
        partials::list(dir)
    };
    let listed = listed.map_err(|source| ReduceError::List {
        dir: dir.to_owned(),
        source,
    })?;
    let files: Vec<(NaiveDate, PathBuf)> = match &options.dates {
        Some(spec) => select(dir, listed, spec)?,
        None => listed,
    };
    if files.is_empty() {
        let what = if options.dates.is_some() {
            "of the dates asked for "
        } else {
            ""
        };
        return Err(ReduceError::NoPartials {
            dir: dir.to_owned(),
            what: what.trim_end_matches(' '),
        });
    }
    let bar = progress_bar(options.progress, files.len());
    let mut merge: Option<Merge> = None;
    let mut failure = None;
    read_in_parallel(&files, |index, read| {
        let path = &files[index].1;
        let result = read.and_then(|(batch, metadata)| {
            let layout = layout_of(path, &metadata, options)?;
            let merge = match &mut merge {
                Some(merge) => {
                    merge.check(path, &layout, options.allow_mixed)?;
                    merge
                }
                None => merge.insert(Merge::new(path, layout, &batch, options)?),
            };
            merge.add(&batch)
        });
        bar.inc(1);
        match result {
            Ok(()) => true,
            Err(error) => {
                failure = Some(error);
                false
            }
        }
    });
    bar.finish_and_clear();
    if let Some(error) = failure {
        return Err(error);
    }
    let merge = merge.expect("at least one partial read");
    let provisional = (files.iter())
        .filter(|(_, path)| partials::is_live(path))
        .map(|(d, _)| *d)
        .collect();
    let dates = files.into_iter().map(|(d, _)| d).collect();
    merge.finish(dates, provisional)
}

/// The partials of the dates of `spec` (see [`ReduceOptions::dates`]).
fn select(
    dir: &Path,
    listed: Vec<(NaiveDate, PathBuf)>,
    spec: &str,
) -> Result<Vec<(NaiveDate, PathBuf)>, ReduceError> {
    let usage = |message: String| ReduceError::Usage {
        flag: "--dates",
        message,
    };
    let parse = |text: &str| calendar::parse_date(text.trim()).map_err(|e| usage(e.to_string()));
    if let Some((from, to)) = spec.split_once("..") {
        let (from, to) = (parse(from)?, parse(to)?);
        return Ok(listed
            .into_iter()
            .filter(|(d, _)| (from..=to).contains(d))
            .collect());
    }
    let wanted: Vec<NaiveDate> = spec.split(',').map(parse).collect::<Result<_, _>>()?;
    if let Some(missing) = wanted.iter().find(|w| !listed.iter().any(|(d, _)| d == *w)) {
        return Err(usage(format!(
            "there is no partial of {} in {} (write it with `vizflow run --dates {}`)",
            calendar::format_date(*missing),
            dir.display(),
            calendar::format_date(*missing)
        )));
    }
    Ok(listed
        .into_iter()
        .filter(|(d, _)| wanted.contains(d))
        .collect())
}

/// Reads `files` on the available cores and hands each to `take` (on this thread, in
/// the order they are read) until it returns false.
fn read_in_parallel(
    files: &[(NaiveDate, PathBuf)],
    mut take: impl FnMut(usize, Result<(RecordBatch, Vec<(String, String)>), ReduceError>) -> bool,
) {
    let next = AtomicUsize::new(0);
    let readers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let (sender, received) = crossbeam_channel::bounded(2 * readers);
    std::thread::scope(|scope| {
        for _ in 0..readers {
            let sender = sender.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, path)) = files.get(index) else {
                        break;
                    };
                    let read = read_parquet(path).map_err(|error| ReduceError::Partial {
                        path: path.clone(),
                        message: format!("not a readable partial ({error})"),
                    });
                    if sender.send((index, read)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);
        for (index, read) in received.iter() {
            if !take(index, read) {
                // The readers stop at their next send.
                next.store(files.len(), Ordering::Relaxed);
                break;
            }
        }
        drop(received);
    });
}

fn progress_bar(show: bool, total: usize) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} partials {elapsed}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// A partial's layout, from its metadata or `--pipeline`.
fn layout_of(
    path: &Path,
    metadata: &[(String, String)],
    options: &ReduceOptions,
) -> Result<Layout, ReduceError> {
    match Layout::from_metadata(metadata) {
        Ok(Some(layout)) => Ok(layout),
        Ok(None) => options.layout.clone().ok_or_else(|| {
            let version = metadata.iter().find(|(k, _)| k == partials::VERSION_KEY);
            ReduceError::Undescribed {
                path: path.to_owned(),
                version: version.map_or("0.1.0 or earlier".to_owned(), |(_, v)| v.clone()),
            }
        }),
        Err(message) => Err(ReduceError::Partial {
            path: path.to_owned(),
            message,
        }),
    }
}

/// The merge under way: the first partial's layout, and what each partial goes
/// through before the reducer.
struct Merge {
    first: PathBuf,
    layout: Layout,
    by: Vec<String>,
    /// The time keys to derive from `date`.
    time_keys: Vec<&'static str>,
    filter: Option<Expr>,
    rebin: Vec<(String, i64)>,
    metrics: Vec<(String, MetricExpr)>,
    /// The first partial's metrics, as its pipeline has them.
    pipeline_metrics: Vec<(String, String)>,
    reducer: Option<Reducer>,
}

impl Merge {
    fn new(
        path: &Path,
        layout: Layout,
        first: &RecordBatch,
        options: &ReduceOptions,
    ) -> Result<Merge, ReduceError> {
        let keys: Vec<String> = std::iter::once("date".to_owned())
            .chain(layout.group_by.iter().cloned())
            .chain(TIME_KEYS.iter().map(|k| k.to_string()))
            .collect();
        let by = options
            .by
            .clone()
            .unwrap_or_else(|| layout.group_by.clone());
        for column in &by {
            if !keys.contains(column) {
                return Err(ReduceError::Usage {
                    flag: "--by",
                    message: format!(
                        "'{column}' is not a group column of the partials; group by any of {}",
                        keys.join(", ")
                    ),
                });
            }
        }
        let filter = match &options.filter {
            Some(text) => {
                let expr = Expr::parse(text).map_err(|e| ReduceError::Usage {
                    flag: "--where",
                    message: e.to_string(),
                })?;
                if let Some(column) = expr.columns().into_iter().find(|c| !keys.contains(c)) {
                    return Err(ReduceError::Usage {
                        flag: "--where",
                        message: format!(
                            "'{column}' is not a group column; a condition is over the groups' \
                             columns: {}",
                            keys.join(", ")
                        ),
                    });
                }
                Some(expr)
            }
            None => None,
        };
        let mentioned: Vec<String> = (by.iter().cloned())
            .chain(filter.iter().flat_map(Expr::columns))
            .collect();
        let time_keys = TIME_KEYS
            .into_iter()
            .filter(|k| mentioned.iter().any(|m| m == k))
            .collect();
        for (column, factor) in &options.rebin {
            if !layout.bins.iter().any(|b| &b.column == column) {
                let bins: Vec<&str> = layout.bins.iter().map(|b| b.column.as_str()).collect();
                return Err(ReduceError::Usage {
                    flag: "--rebin",
                    message: format!(
                        "'{column}' is not a bin column; the partials' bin columns: {}",
                        if bins.is_empty() {
                            "none".to_owned()
                        } else {
                            bins.join(", ")
                        }
                    ),
                });
            }
            if *factor < 1 || factor % 2 == 0 {
                return Err(ReduceError::Usage {
                    flag: "--rebin",
                    message: format!(
                        "{column}={factor}: the factor must be odd (1, 3, 5, ...), so that the \
                         merged bins stay centred on the multiples of their width"
                    ),
                });
            }
        }
        let mut metric_texts = layout.metrics.clone();
        for (name, text) in &options.metrics {
            match metric_texts.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1 = text.clone(),
                None => metric_texts.push((name.clone(), text.clone())),
            }
        }
        let metrics = (metric_texts.iter())
            .map(|(name, text)| {
                MetricExpr::parse(text)
                    .map(|m| (name.clone(), m))
                    .map_err(|e| ReduceError::Usage {
                        flag: "--metric",
                        message: format!("{name} = '{text}': {e}"),
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut merge = Merge {
            pipeline_metrics: layout.metrics.clone(),
            first: path.to_owned(),
            layout,
            by,
            time_keys,
            filter,
            rebin: options.rebin.clone(),
            metrics,
            reducer: None,
        };
        let schema = merge.prepare(first)?.schema();
        merge.reducer = Some(Reducer::new(&schema, &merge.by)?);
        merge.layout.metrics = metric_texts;
        Ok(merge)
    }

    /// Refuses a partial of another pipeline (unless `allow_mixed` and the metrics
    /// agree).
    fn check(&self, path: &Path, layout: &Layout, allow_mixed: bool) -> Result<(), ReduceError> {
        if layout.config_hash == self.layout.config_hash {
            return Ok(());
        }
        if !allow_mixed {
            return Err(ReduceError::Mixed {
                first: self.first.clone(),
                first_hash: self.layout.config_hash.clone(),
                other: path.to_owned(),
                other_hash: layout.config_hash.clone(),
            });
        }
        if layout.metrics != self.pipeline_metrics {
            let text = |metrics: &[(String, String)]| {
                let pairs: Vec<String> =
                    metrics.iter().map(|(n, e)| format!("{n} = {e}")).collect();
                pairs.join(", ")
            };
            return Err(ReduceError::MetricsDiffer {
                first_path: self.first.clone(),
                first: text(&self.pipeline_metrics),
                other_path: path.to_owned(),
                other: text(&layout.metrics),
            });
        }
        Ok(())
    }

    /// A partial with the time keys derived, its bins merged and its groups filtered.
    fn prepare(&self, batch: &RecordBatch) -> Result<RecordBatch, ReduceError> {
        let mut columns: Vec<(String, ArrayRef)> = Vec::new();
        if !self.time_keys.is_empty() {
            let dates = batch
                .column_by_name("date")
                .and_then(|d| d.as_primitive_opt::<Date32Type>())
                .ok_or_else(|| self.damaged("it has no Date32 'date' column"))?;
            for key in &self.time_keys {
                let values: Int32Array = (dates.iter())
                    .map(|d| {
                        let date = d.and_then(calendar::date_of_date32)?;
                        Some(match *key {
                            "month" => date.year() * 100 + date.month() as i32,
                            "weekday" => date.weekday().number_from_monday() as i32,
                            _ => date.year(),
                        })
                    })
                    .collect();
                columns.push((key.to_string(), Arc::new(values)));
            }
        }
        for (column, factor) in &self.rebin {
            let values = batch
                .column_by_name(column)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| self.damaged(&format!("its bin column '{column}' is not Int64")))?;
            let merged: arrow::array::Int64Array = values.unary(|k| rebin(k, *factor));
            columns.push((column.clone(), Arc::new(merged)));
        }
        let batch = vizflow_operators::batch::with_columns(batch, columns);
        let Some(filter) = &self.filter else {
            return Ok(batch);
        };
        let keep = filter.evaluate(&batch).map_err(|e| ReduceError::Usage {
            flag: "--where",
            message: e.to_string(),
        })?;
        let keep = keep
            .as_boolean_opt()
            .cloned()
            .ok_or_else(|| ReduceError::Usage {
                flag: "--where",
                message: format!(
                    "'{}' is not a condition (it gives {})",
                    filter.text(),
                    keep.data_type()
                ),
            })?;
        // A group whose condition is null is left out, as in SQL.
        let keep: BooleanArray = keep.iter().map(|k| Some(k == Some(true))).collect();
        arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| self.damaged(&e.to_string()))
    }

    fn damaged(&self, message: &str) -> ReduceError {
        ReduceError::Partial {
            path: self.first.clone(),
            message: message.to_owned(),
        }
    }

    fn add(&mut self, batch: &RecordBatch) -> Result<(), ReduceError> {
        let prepared = self.prepare(batch)?;
        let reducer = self.reducer.as_mut().expect("made in new");
        reducer.add(&prepared)?;
        Ok(())
    }

    fn finish(
        self,
        dates: Vec<NaiveDate>,
        provisional: Vec<NaiveDate>,
    ) -> Result<Reduced, ReduceError> {
        let reducer = self.reducer.expect("made in new");
        let table = reducer.finish(&self.metrics)?;
        let mut layout = self.layout;
        for (column, factor) in &self.rebin {
            if let Some(bin) = layout.bins.iter_mut().find(|b| &b.column == column) {
                bin.width *= *factor as f64;
            }
        }
        layout.bins.retain(|b| self.by.contains(&b.column));
        layout.group_by = self.by;
        Ok(Reduced {
            table,
            layout,
            dates,
            provisional,
        })
    }
}

/// Bin `k` of width `w` merged into bin `round(k / factor)` of width `factor * w` (an
/// odd factor: bin 0 stays centred on zero, and each new bin is `factor` old ones).
pub fn rebin(k: i64, factor: i64) -> i64 {
    let half = factor / 2;
    if k >= 0 {
        (k + half) / factor
    } else {
        -((-k + half) / factor)
    }
}

/// The table for people: exact-sum columns left out, and each bin column followed by
/// its value in the source's units (`alpha1` beside `alpha1_bin`).
pub fn for_display(reduced: &Reduced) -> RecordBatch {
    let table = &reduced.table;
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in table.schema().fields().iter().zip(table.columns()) {
        if field.data_type() == &DataType::Binary && field.name().ends_with(".exact") {
            continue;
        }
        fields.push(field.as_ref().clone());
        columns.push(column.clone());
        let bin = reduced
            .layout
            .bins
            .iter()
            .find(|b| &b.column == field.name());
        if let (Some(Bin { source, width, .. }), Some(index)) =
            (bin, column.as_primitive_opt::<Int64Type>())
        {
            // Rounded to 12 significant digits: bin 3 at 1e-4 shows as 0.0003, not
            // 0.00030000000000000003.
            let in_units = |k: i64| {
                let value = k as f64 * width;
                format!("{value:.11e}").parse().unwrap_or(value)
            };
            let values: Float64Array = index.iter().map(|k| k.map(in_units)).collect();
            fields.push(Field::new(source, DataType::Float64, true));
            columns.push(Arc::new(values));
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .expect("columns of the table's length")
}

/// The table without its exact-sum columns (for CSV and JSON, where the rounded sums
/// say what a person needs).
pub fn without_exact(table: &RecordBatch) -> RecordBatch {
    let keep: Vec<usize> = (table.schema().fields().iter().enumerate())
        .filter(|(_, f)| !(f.data_type() == &DataType::Binary && f.name().ends_with(".exact")))
        .map(|(i, _)| i)
        .collect();
    table.project(&keep).expect("indices of the table")
}

/// The rows of `table` as JSON objects (`{column: value}`), for `-o FILE.json` and the
/// dashboard's API.
pub fn json_rows(table: &RecordBatch) -> Value {
    let table = without_exact(table);
    let schema = table.schema();
    let mut rows = vec![serde_json::Map::new(); table.num_rows()];
    for (field, column) in schema.fields().iter().zip(table.columns()) {
        let values: Vec<Value> = json_values(column);
        for (row, value) in rows.iter_mut().zip(values) {
            row.insert(field.name().clone(), value);
        }
    }
    Value::Array(rows.into_iter().map(Value::Object).collect())
}

fn json_values(column: &ArrayRef) -> Vec<Value> {
    let n = column.len();
    let value = |row: usize, f: &dyn Fn(usize) -> Value| {
        if column.is_null(row) {
            Value::Null
        } else {
            f(row)
        }
    };
    match column.data_type() {
        DataType::Boolean => {
            let a = column.as_boolean();
            (0..n)
                .map(|r| value(r, &|r| Value::from(a.value(r))))
                .collect()
        }
        DataType::Float64 => {
            let a = column.as_primitive::<arrow::datatypes::Float64Type>();
            // JSON has no NaN or infinity: null.
            (0..n)
                .map(|r| {
                    value(r, &|r| {
                        serde_json::Number::from_f64(a.value(r)).map_or(Value::Null, Value::Number)
                    })
                })
                .collect()
        }
        t if t.is_integer() => match arrow::compute::cast(column, &DataType::Int64) {
            Ok(ints) => {
                let a = ints.as_primitive::<Int64Type>();
                (0..n)
                    .map(|r| value(r, &|r| Value::from(a.value(r))))
                    .collect()
            }
            Err(_) => vec![Value::Null; n],
        },
        _ => {
            let text = arrow::compute::cast(column, &DataType::Utf8);
            match text {
                Ok(text) => {
                    let a = text.as_string::<i32>();
                    (0..n)
                        .map(|r| value(r, &|r| Value::from(a.value(r))))
                        .collect()
                }
                Err(_) => vec![Value::Null; n],
            }
        }
    }
}
