//! The columnar container that flows on every VizFlow stream, and the exchange that
//! routes its rows by symbol.
//!
//! Rows never travel one by one: a [`Batch`] holds an Arrow [`RecordBatch`]. Across
//! processes (and in-process with timely's serialized `ProcessBinary` mode) a batch is
//! encoded as one Arrow IPC stream message. [`BySymbol`] routes each row to the worker
//! of its symbol, so a symbol's rows always meet on the same worker: every destination
//! gets the batch, shared, with a selection of its rows, which is copied out when the
//! batch is encoded or an operator takes it ([`Batch::take`]); the keyed operator reads
//! through the selection ([`Batch::take_selected`]) and copies only what it must.

use std::hash::Hasher;
use std::sync::OnceLock;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::datatypes::{DataType, Int64Type};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use rustc_hash::FxHasher;
use timely::Accountable;
use timely::communication::Push;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::DistributorPact;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::channels::pushers::exchange::Distributor;
use timely::dataflow::channels::{ContainerBytes, Message};
use timely::dataflow::operators::generic::Operator;

use crate::report::Diagnostics;
use crate::time::{Time, date_key_of};

/// A batch of rows: the container type of VizFlow streams.
///
/// `Default` (required by timely) is the empty batch. The IPC encoding is computed at
/// most once, because timely asks for the length before asking for the bytes.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The rows, or `None` for an empty container. With a `selection`, only the
    /// selected rows of it belong to this container: read it through [`Batch::take`]
    /// or [`Batch::take_selected`], not directly, after an exchange by symbol.
    pub data: Option<RecordBatch>,
    /// The rows of `data` this container holds (ascending), when not all of them: the
    /// exchange by symbol shares a batch between workers of one process this way
    /// instead of copying each worker's rows out of it.
    selection: Option<UInt32Array>,
    /// Under `[stream] emit_every`, what the keyed stage's output is for: the final
    /// result or a provisional one ([`Emission`]). Kept through the stateless stages
    /// after the keyed stage, which are pipelined (it is not encoded: no exchange comes
    /// between the keyed stage and the aggregate).
    pub emission: Option<Emission>,
    encoded: OnceLock<Vec<u8>>,
}

/// What a batch out of the keyed stage is for when provisional results are asked for
/// (`[stream] emit_every`), so that the aggregate can tell a provisional result's rows
/// from the final rows, and the final rows already in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emission {
    /// Final rows, sent after the provisional result at the previous multiple of
    /// `emit_every` and before the one at `next` (ms of trading time): they count in
    /// every provisional result at `next` and after.
    Final {
        /// The next provisional result's watermark.
        next: i64,
    },
    /// Rows' contributions to the aggregate's components `parts` that no longer change
    /// (incremental provisional results): they count in every provisional result at
    /// `next` and after, and not in the final result (the final rows carry them).
    Settled {
        /// The next provisional result's watermark.
        next: i64,
        /// The components they count in.
        parts: Parts,
    },
    /// Rows' contributions to the aggregate's components `parts`, each sent once, when
    /// it no longer changes (incremental provisional results whose final result is made
    /// of them too: no final rows come). They count in every provisional result at
    /// `next` and after (`i64::MAX`: in the final result alone), and in the final
    /// result. The stages count a row where its [`Parts::BASE`] goes (once).
    Part {
        /// The next provisional result's watermark, or `i64::MAX`.
        next: i64,
        /// The components they count in.
        parts: Parts,
        /// When the aggregate keeps the rows' groups for their narrow parts
        /// ([`Emission::Narrow`], [`Emission::Revised`]), the number those parts name
        /// this batch by.
        kept: Option<u64>,
        /// How many of its rows are entries a rule holds open, whose changes come as
        /// [`Emission::Revised`] (each settles once, or stays open to the date's end).
        open: u32,
        /// Whether each open entry's values come once, when it settles (or the date
        /// ends), its revised columns null here, and nothing is withdrawn (`[stream]`
        /// without provisional results): the batch's groups can go as soon as they
        /// all came.
        once: bool,
    },
    /// The return at one horizon of the rows of the [`Emission::Part`] batch `kept`, a
    /// column of their number (by its name), null for the rows not in this part: the
    /// [`Parts::horizon`] of `rows` of them (each row's once), for components that read
    /// that return alone. The stages after the keyed stage pass it on as it is; the
    /// aggregate folds it into the groups it kept for the rows (a null adds nothing).
    Narrow {
        /// The next provisional result's watermark, or `i64::MAX`.
        next: i64,
        /// The components they count in: one horizon's.
        parts: Parts,
        /// The [`Emission::Part`] batch whose rows these are.
        kept: u64,
        /// How many of its rows are in this part.
        rows: u32,
    },
    /// Changes of the revised columns of open entries sent before in numbered
    /// [`Emission::Part`] batches, narrow: per row, its batch ([`KEPT_BATCH`](crate::columns::KEPT_BATCH)) and row
    /// in it ([`KEPT_ROW`](crate::columns::KEPT_ROW)), the revised columns and the other columns that the derived
    /// columns of `parts` read. `withdrawn`: as they were sent, taken out of the
    /// components `parts` from the provisional result at `next` on; else as they are
    /// now, with [`SETTLES`](crate::columns::SETTLES) true for the entries that no longer change. Only for
    /// parts whose components take a withdrawal exactly. The derive stages after the
    /// keyed stage evaluate the derived columns they can on them, the other stages pass
    /// them on; the aggregate folds them into the groups it kept for their batches.
    Revised {
        /// The next provisional result's watermark, or `i64::MAX`.
        next: i64,
        /// The components they count in.
        parts: Parts,
        /// Whether they are withdrawn.
        withdrawn: bool,
    },
    /// Rows' contributions to `parts` sent before ([`Emission::Part`],
    /// [`Emission::Settled`]) and withdrawn, as they were sent: their values changed
    /// (an open entry matched further) and come again. Only for parts whose components
    /// are counts and sums, which take a withdrawal exactly.
    Withdrawn {
        /// The next provisional result's watermark (as for the rows sent again).
        next: i64,
        /// The components they are withdrawn from.
        parts: Parts,
    },
    /// Rows of the provisional result at watermark `at` (ms of trading time) that are
    /// not final yet, evaluated on the date cut at `at`, counting in its components
    /// `parts`; it may have no rows. The rows sent before it for `at`
    /// ([`Emission::Final`], [`Emission::Settled`]) count in it too.
    Provisional {
        /// Its watermark.
        at: i64,
        /// The components its rows count in.
        parts: Parts,
    },
}

impl Emission {
    /// Whether the batch is for provisional results only (its rows count nowhere else:
    /// their final versions do).
    pub fn provisional_only(emission: Option<Emission>) -> bool {
        matches!(
            emission,
            Some(
                Emission::Provisional { .. }
                    | Emission::Settled { .. }
                    | Emission::Withdrawn { .. }
            )
        )
    }

    /// Whether the stages count the batch's rows in the date's report: final rows, and
    /// the [`Parts::BASE`] of rows sent in parts ([`Emission::Part`]), where each row
    /// goes once.
    pub fn counted(emission: Option<Emission>) -> bool {
        match emission {
            None | Some(Emission::Final { .. }) => true,
            Some(Emission::Part { parts, .. }) => parts.meets(Parts::BASE),
            Some(
                Emission::Narrow { .. }
                | Emission::Revised { .. }
                | Emission::Settled { .. }
                | Emission::Withdrawn { .. }
                | Emission::Provisional { .. },
            ) => false,
        }
    }
}

/// A set of parts of the aggregate's components, as bits: with incremental provisional
/// results, a row's contribution to each part is sent once, when it no longer changes
/// (see `vizflow_operators::aggregate`). [`Parts::BASE`]: components of columns known
/// when the row is cut; [`Parts::REVISED`]: those that read a column a rule revises
/// (an entry's `matched_qty` until its lot closes); [`Parts::horizon`]: those that
/// read the return at one horizon (and no other late column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Parts(pub u32);

impl Parts {
    /// Every component.
    pub const ALL: Parts = Parts(u32::MAX);
    /// No component.
    pub const NONE: Parts = Parts(0);
    /// Components known when a row is cut.
    pub const BASE: Parts = Parts(1);
    /// Components that read a revised column.
    pub const REVISED: Parts = Parts(2);
    /// How many horizons have a part of their own.
    pub const HORIZONS: usize = 30;

    /// The components that read the return at the `k`-th horizon with a part
    /// (`k < Parts::HORIZONS`).
    pub const fn horizon(k: usize) -> Parts {
        Parts(4 << k)
    }

    /// Whether the two sets share a part.
    pub const fn meets(self, other: Parts) -> bool {
        self.0 & other.0 != 0
    }

    /// Both sets.
    pub const fn with(self, other: Parts) -> Parts {
        Parts(self.0 | other.0)
    }
}

/// A batch and, optionally, the rows of it that count (see [`Batch::take_selected`]).
pub type SelectedRows = (RecordBatch, Option<UInt32Array>);

impl Batch {
    /// Wraps a record batch.
    pub fn new(data: RecordBatch) -> Self {
        Batch {
            data: Some(data),
            selection: None,
            emission: None,
            encoded: OnceLock::new(),
        }
    }

    /// Wraps a record batch sent for `emission`.
    pub fn emitted(data: RecordBatch, emission: Option<Emission>) -> Self {
        Batch {
            emission,
            ..Batch::new(data)
        }
    }

    /// The rows `selection` (ascending indices) of `data`, shared, not copied.
    pub fn selected(data: RecordBatch, selection: UInt32Array) -> Self {
        Batch {
            data: Some(data),
            selection: Some(selection),
            emission: None,
            encoded: OnceLock::new(),
        }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        match (&self.data, &self.selection) {
            (None, _) => 0,
            (Some(_), Some(selection)) => selection.len(),
            (Some(data), None) => data.num_rows(),
        }
    }

    /// True when the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the record batch out, leaving an empty container. Selected rows are
    /// copied out of the shared batch here.
    pub fn take(&mut self) -> Option<RecordBatch> {
        let (data, selection) = self.take_selected()?;
        Some(match selection {
            Some(rows) => take_rows(&data, &rows),
            None => data,
        })
    }

    /// Takes the batch and its selection out, leaving an empty container: for
    /// operators that can read through a selection instead of copying the rows.
    pub fn take_selected(&mut self) -> Option<SelectedRows> {
        self.encoded = OnceLock::new();
        let selection = self.selection.take();
        self.data.take().map(|data| (data, selection))
    }

    fn encoded(&self) -> &[u8] {
        self.encoded.get_or_init(|| {
            let Some(data) = &self.data else {
                return Vec::new();
            };
            let selected;
            let batch = match &self.selection {
                Some(rows) => {
                    selected = take_rows(data, rows);
                    &selected
                }
                None => data,
            };
            // Sized up front: growing a vector of megabytes copies it again and again.
            // (A slice of a larger batch reports the larger one's memory: capped.)
            let size = batch.get_array_memory_size().min(64 << 20);
            let mut out = Vec::with_capacity(size + 4096);
            {
                // Writing to a Vec can only fail on a schema Arrow cannot encode, which
                // would be a bug in an operator: fail loudly rather than lose rows.
                let mut writer = StreamWriter::try_new(&mut out, &batch.schema())
                    .expect("an Arrow schema VizFlow produced must be IPC-encodable");
                writer
                    .write(batch)
                    .expect("an Arrow batch must be IPC-encodable");
                writer
                    .finish()
                    .expect("finishing an in-memory IPC stream cannot fail");
            }
            out
        })
    }
}

impl Accountable for Batch {
    /// The rows; a provisional result's marker without rows counts as one, since timely
    /// does not send an empty container and the aggregate needs the mark.
    fn record_count(&self) -> i64 {
        let marker =
            self.data.is_some() && matches!(self.emission, Some(Emission::Provisional { .. }));
        (self.len() as i64).max(i64::from(marker))
    }
}

const fn pad8(n: usize) -> usize {
    (n + 7) & !7
}

/// Layout: `[ipc length: u64 little-endian][ipc stream bytes][zero padding to 8 bytes]`.
impl ContainerBytes for Batch {
    fn from_bytes(bytes: timely::bytes::arc::Bytes) -> Self {
        let len = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length prefix")) as usize;
        if len == 0 {
            return Batch::default();
        }
        // The bytes were written by `into_bytes` of a peer running this same code; a
        // failure here is a transport bug, not bad user input.
        let mut reader = StreamReader::try_new(std::io::Cursor::new(&bytes[8..8 + len]), None)
            .expect("a peer sent a batch that is not an Arrow IPC stream");
        let data = reader
            .next()
            .expect("a peer sent an IPC stream without a batch")
            .expect("a peer sent an undecodable Arrow batch");
        Batch::new(data)
    }

    fn length_in_bytes(&self) -> usize {
        8 + pad8(self.encoded().len())
    }

    fn into_bytes<W: std::io::Write>(&self, writer: &mut W) {
        let encoded = self.encoded();
        let padding = pad8(encoded.len()) - encoded.len();
        writer
            .write_all(&(encoded.len() as u64).to_le_bytes())
            .and_then(|()| writer.write_all(encoded))
            .and_then(|()| writer.write_all(&[0u8; 8][..padding]))
            .expect("timely's byte buffers accept writes");
    }
}

/// A stable hash of a symbol value: the same on every worker, process and run.
fn symbol_hash_i64(value: i64) -> u64 {
    // Fibonacci hashing spreads consecutive ids evenly over any number of workers.
    (value as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

fn symbol_hash_bytes(value: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(value);
    hasher.finish() >> 17
}

/// The worker (out of `peers`) that owns each row's symbol.
///
/// Integer symbols (any width) hash by value, string symbols (Utf8, LargeUtf8 or
/// dictionary-encoded) by their bytes. A null symbol is owned by worker 0.
pub fn symbol_destinations(column: &dyn Array, peers: usize) -> Vec<u32> {
    let peers_u64 = peers as u64;
    let to_dest = |hash: u64| (hash % peers_u64) as u32;
    let mut out = Vec::with_capacity(column.len());
    match column.data_type() {
        DataType::Int64 => {
            let values = column.as_primitive::<Int64Type>();
            out.extend(values.values().iter().map(|v| to_dest(symbol_hash_i64(*v))));
        }
        DataType::Utf8 => {
            let values = column.as_string::<i32>();
            out.extend(
                (0..values.len()).map(|i| to_dest(symbol_hash_bytes(values.value(i).as_bytes()))),
            );
        }
        DataType::LargeUtf8 => {
            let values = column.as_string::<i64>();
            out.extend(
                (0..values.len()).map(|i| to_dest(symbol_hash_bytes(values.value(i).as_bytes()))),
            );
        }
        DataType::Dictionary(_, _) => {
            let utf8 = arrow::compute::cast(column, &DataType::Utf8)
                .expect("dictionary symbols were validated to cast to Utf8");
            return symbol_destinations(&utf8, peers);
        }
        _ => {
            let ints = arrow::compute::cast(column, &DataType::Int64)
                .expect("symbol columns are validated to be integers or strings");
            return symbol_destinations(&ints, peers);
        }
    }
    if column.null_count() > 0 {
        for (i, dest) in out.iter_mut().enumerate() {
            if column.is_null(i) {
                *dest = 0;
            }
        }
    }
    out
}

/// A symbol column [`symbol_ids`] cannot read; the text starts with the operator's name.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    /// A batch without the symbol column.
    #[error("{operator}: symbol column '{column}' is missing")]
    Missing {
        /// The operator reading the symbols, e.g. `enrich`.
        operator: String,
        /// The symbol column.
        column: String,
    },
    /// String symbols that do not convert to plain strings.
    #[error("{operator}: symbol column '{column}': {source}")]
    Strings {
        /// The operator reading the symbols.
        operator: String,
        /// The symbol column.
        column: String,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
    /// Symbols that are neither integers nor strings.
    #[error("{operator}: symbol column '{column}' must hold integers or strings: {source}")]
    NotIntegersOrStrings {
        /// The operator reading the symbols.
        operator: String,
        /// The symbol column.
        column: String,
        /// Arrow's error.
        source: arrow::error::ArrowError,
    },
}

impl SymbolError {
    /// Whose fault the error is: the data's (a date's batch whose symbol column is
    /// missing or of another type than the configuration was checked against).
    pub fn fault(&self) -> crate::Fault {
        crate::Fault::Data
    }
}

/// Dense per-row symbol ids (0, 1, ... in order of first appearance) over a date's
/// batches, each read through its selection of rows (all rows when `None`), so rows
/// can be grouped by symbol with a counting sort. Integer symbols of any width and
/// string symbols (plain or dictionary) are accepted; a null symbol is its own group.
/// Returns the ids and how many symbols there are. `operator` names the caller in errors.
pub fn symbol_ids(
    parts: &[SelectedRows],
    column: &str,
    operator: &str,
) -> Result<(Vec<u32>, usize), SymbolError> {
    let columns = symbol_columns(parts, column, operator)?;
    let mut ids = Vec::with_capacity(parts.iter().map(selected_len).sum());
    let mut interner = SymbolInterner::default();
    // Integer symbols in a narrow range (codes such as 600000..603000) are looked up in
    // a table, others in a hash map.
    let ints: Vec<&Int64Array> = columns
        .iter()
        .filter_map(|(c, _)| c.as_primitive_opt::<Int64Type>())
        .collect();
    let (low, high) = ints
        .iter()
        .flat_map(|c| c.values().iter())
        .fold((i64::MAX, i64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
    let span = usize::try_from(i128::from(high) - i128::from(low) + 1).unwrap_or(0);
    if ints.len() < columns.len() || span > (4 * ids.capacity()).max(1 << 16) {
        for (values, selection) in &columns {
            interner.push_ids(values, *selection, &mut ids);
        }
        return Ok((ids, interner.len()));
    }
    let mut table = vec![u32::MAX; span];
    for (values, selection) in &columns {
        let int64 = values.as_primitive::<Int64Type>();
        let (values, nulls) = (int64.values(), int64.nulls());
        for_each_row(int64.len(), *selection, |row| {
            ids.push(if nulls.is_some_and(|n| n.is_null(row)) {
                interner.null_id()
            } else {
                let slot = &mut table[(values[row] - low) as usize];
                if *slot == u32::MAX {
                    *slot = interner.fresh();
                }
                *slot
            })
        });
    }
    Ok((ids, interner.len()))
}

/// Symbol ids that last: the same symbol gets the same id in every call of
/// [`SymbolInterner::ids`] (0, 1, ... in order of first appearance; a null symbol is
/// its own group), so a keyed stage that takes a date's rows in several releases keeps
/// each symbol's state under one number.
#[derive(Debug, Default)]
pub struct SymbolInterner {
    next: u32,
    null: Option<u32>,
    by_int: rustc_hash::FxHashMap<i64, u32>,
    by_string: rustc_hash::FxHashMap<String, u32>,
}

impl SymbolInterner {
    /// The ids of the rows the parts select (see [`symbol_ids`] for the column types).
    pub fn ids(
        &mut self,
        parts: &[SelectedRows],
        column: &str,
        operator: &str,
    ) -> Result<Vec<u32>, SymbolError> {
        let columns = symbol_columns(parts, column, operator)?;
        let mut ids = Vec::with_capacity(parts.iter().map(selected_len).sum());
        for (values, selection) in &columns {
            self.push_ids(values, *selection, &mut ids);
        }
        Ok(ids)
    }

    /// The number of symbols seen.
    pub fn len(&self) -> usize {
        self.next as usize
    }

    /// True before any symbol is seen.
    pub fn is_empty(&self) -> bool {
        self.next == 0
    }

    fn fresh(&mut self) -> u32 {
        self.next += 1;
        self.next - 1
    }

    fn null_id(&mut self) -> u32 {
        match self.null {
            Some(id) => id,
            None => {
                let id = self.fresh();
                *self.null.insert(id)
            }
        }
    }

    /// Pushes the ids of `values` (Int64 or Utf8) at the rows `selection` keeps.
    fn push_ids(&mut self, values: &ArrayRef, selection: Option<&UInt32Array>, ids: &mut Vec<u32>) {
        if let Some(utf8) = values.as_string_opt::<i32>() {
            for_each_row(values.len(), selection, |row| {
                ids.push(if utf8.is_null(row) {
                    self.null_id()
                } else {
                    let value = utf8.value(row);
                    match self.by_string.get(value) {
                        Some(id) => *id,
                        None => {
                            let id = self.fresh();
                            self.by_string.insert(value.to_owned(), id);
                            id
                        }
                    }
                })
            });
            return;
        }
        let int64 = values.as_primitive::<Int64Type>();
        let (values, nulls) = (int64.values(), int64.nulls());
        for_each_row(int64.len(), selection, |row| {
            ids.push(if nulls.is_some_and(|n| n.is_null(row)) {
                self.null_id()
            } else {
                match self.by_int.get(&values[row]) {
                    Some(id) => *id,
                    None => {
                        let id = self.fresh();
                        self.by_int.insert(values[row], id);
                        id
                    }
                }
            })
        });
    }
}

/// Each part's symbols as Int64 or Utf8 (a cast that is free for those types), with
/// the rows its selection keeps (a cast that copies copies only those).
fn symbol_columns<'a>(
    parts: &'a [SelectedRows],
    column: &str,
    operator: &str,
) -> Result<Vec<(ArrayRef, Option<&'a UInt32Array>)>, SymbolError> {
    let mut columns = Vec::with_capacity(parts.len());
    for (batch, selection) in parts {
        let values = batch
            .column_by_name(column)
            .ok_or_else(|| SymbolError::Missing {
                operator: operator.to_owned(),
                column: column.to_owned(),
            })?;
        let to = match values.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(_, _) => DataType::Utf8,
            _ => DataType::Int64,
        };
        let cast_error = |source: arrow::error::ArrowError| {
            let (operator, column) = (operator.to_owned(), column.to_owned());
            match to {
                DataType::Utf8 => SymbolError::Strings {
                    operator,
                    column,
                    source,
                },
                _ => SymbolError::NotIntegersOrStrings {
                    operator,
                    column,
                    source,
                },
            }
        };
        // A cast that copies (a dictionary, Int32, ...) copies only the selected rows:
        // every worker holds the same shared batch.
        let (values, selection) = match (values.data_type() == &to, selection) {
            (false, Some(rows)) => {
                let selected = arrow::compute::take(values, rows, None).map_err(cast_error)?;
                (
                    arrow::compute::cast(&selected, &to).map_err(cast_error)?,
                    None,
                )
            }
            _ => (
                arrow::compute::cast(values, &to).map_err(cast_error)?,
                selection.as_ref(),
            ),
        };
        columns.push((values, selection));
    }
    Ok(columns)
}

/// Calls `each(row)` for the rows of a batch of `len` rows that `selection` keeps
/// (all when `None`), in order.
#[inline(always)]
pub fn for_each_row(len: usize, selection: Option<&UInt32Array>, mut each: impl FnMut(usize)) {
    match selection {
        None => (0..len).for_each(each),
        Some(rows) => rows.values().iter().for_each(|row| each(*row as usize)),
    }
}

/// The number of rows of a batch that its selection keeps.
pub fn selected_len((batch, selection): &SelectedRows) -> usize {
    selection
        .as_ref()
        .map_or(batch.num_rows(), UInt32Array::len)
}

/// Splits each batch into one batch per destination worker, by symbol.
pub struct BySymbol {
    column: String,
}

impl Distributor<Batch> for BySymbol {
    fn partition<T: Clone, P: Push<Message<T, Batch>>>(
        &mut self,
        container: &mut Batch,
        time: &T,
        pushers: &mut [P],
    ) {
        // A selection (rows a stage before dropped are left out of it) is read through.
        let Some((batch, selection)) = container.take_selected() else {
            return;
        };
        let Some(column) = batch.column_by_name(&self.column) else {
            panic!(
                "the symbol column '{}' was validated before the dataflow ran",
                self.column
            )
        };
        let destinations = symbol_destinations(column.as_ref(), pushers.len());
        // Each destination's rows, allocated at their exact size (a date's selections
        // live until the keyed stage has ordered the rows).
        let mut counts = vec![0usize; pushers.len()];
        for_each_row(batch.num_rows(), selection.as_ref(), |row| {
            counts[destinations[row] as usize] += 1;
        });
        let mut indices: Vec<Vec<u32>> = counts.into_iter().map(Vec::with_capacity).collect();
        for_each_row(batch.num_rows(), selection.as_ref(), |row| {
            indices[destinations[row] as usize].push(row as u32);
        });
        for (dest, rows) in indices.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            // Every worker gets the whole batch, shared, with the rows that are its
            // own: nothing is copied in a process; an encoding copies just those rows.
            let mut part = if rows.len() == batch.num_rows() {
                Batch::new(batch.clone())
            } else {
                Batch::selected(batch.clone(), UInt32Array::from(rows))
            };
            Message::push_at(&mut part, time.clone(), &mut pushers[dest]);
        }
    }

    fn flush<T: Clone, P: Push<Message<T, Batch>>>(&mut self, _time: &T, _pushers: &mut [P]) {}
}

/// Selects rows of a batch (all columns) by index.
pub fn take_rows(batch: &RecordBatch, indices: &UInt32Array) -> RecordBatch {
    arrow::compute::take_record_batch(batch, indices).expect("row indices are in bounds")
}

/// How a date's rows are spread over the workers of a run (all processes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Partition {
    /// Every worker reads a share of each date's file and the keyed stage exchanges
    /// rows by symbol: all workers work on every date, and one date is in memory at a
    /// time. Needed for huge dates and live feeds.
    #[default]
    Symbol,
    /// Each date belongs to one worker ([`crate::time::DateOwners`]), which reads and
    /// processes all its rows: no rows are exchanged, and as many dates are in flight
    /// as there are workers. Best for runs over many dates.
    Date,
}

/// The exchange pact that routes rows by the symbol column `column`.
pub fn by_symbol(column: &str) -> DistributorPact<impl FnOnce(usize) -> BySymbol + use<>> {
    let column = column.to_owned();
    DistributorPact(move |_peers| BySymbol { column })
}

/// Appends `columns` (name, values) to a batch; values must have the batch's length.
pub fn with_columns(batch: &RecordBatch, columns: Vec<(String, ArrayRef)>) -> RecordBatch {
    use arrow::datatypes::{Field, Schema};
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut arrays = batch.columns().to_vec();
    for (name, values) in columns {
        let field = Field::new(&name, values.data_type().clone(), true);
        match fields.iter().position(|f| f.name() == &name) {
            Some(i) => {
                fields[i] = field;
                arrays[i] = values;
            }
            None => {
                fields.push(field);
                arrays.push(values);
            }
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)
        .expect("appended columns have the batch's length")
}

/// Applies `logic` to every batch of a stream, without exchanging rows: the shape of
/// the stateless operators (derive, parse_time, bin). `logic` gets the date key of the
/// batch's time, the batch and the diagnostics (to count what it did), and returns the
/// batch to pass on; an error (of the caller's type, recorded by its text) fails the
/// batch's date and passes nothing. Narrow batches ([`Emission::Narrow`],
/// [`Emission::Revised`]) pass as they are.
pub fn map_batches<'scope, L, E>(
    stream: Stream<'scope, Time, Batch>,
    name: &str,
    diagnostics: Diagnostics,
    logic: L,
) -> Stream<'scope, Time, Batch>
where
    L: FnMut(u32, RecordBatch, &Diagnostics) -> Result<RecordBatch, E> + 'static,
    E: std::fmt::Display + 'static,
{
    type Pass<E> = fn(RecordBatch) -> Result<RecordBatch, E>;
    map_stage(stream, name, diagnostics, logic, None::<Pass<E>>)
}

/// [`map_batches`], with `revised` for the narrow batches of revised values
/// ([`Emission::Revised`]) when the stage has work on them (a derive stage evaluates
/// the derived columns of the revised ones).
pub fn map_stage<'scope, L, R, E>(
    stream: Stream<'scope, Time, Batch>,
    name: &str,
    diagnostics: Diagnostics,
    mut logic: L,
    mut revised: Option<R>,
) -> Stream<'scope, Time, Batch>
where
    L: FnMut(u32, RecordBatch, &Diagnostics) -> Result<RecordBatch, E> + 'static,
    R: FnMut(RecordBatch) -> Result<RecordBatch, E> + 'static,
    E: std::fmt::Display,
{
    let stage = name.to_owned();
    stream.unary::<CapacityContainerBuilder<Batch>, _, _, _>(Pipeline, name, move |_cap, _info| {
        move |input, output| {
            input.for_each_time(|time, data| {
                let date_key = date_key_of(*time.time());
                let mut session = output.session(&time);
                for batch in data {
                    let emission = batch.emission;
                    match (emission, &mut revised) {
                        (Some(Emission::Revised { .. }), Some(revised)) => {
                            let Some(rows) = batch.take() else { continue };
                            let started = Instant::now();
                            match revised(rows) {
                                Ok(out) => {
                                    session.give_container(&mut Batch::emitted(out, emission))
                                }
                                Err(error) => diagnostics.error(date_key, error.to_string()),
                            }
                            diagnostics.time(date_key, &stage, started);
                            continue;
                        }
                        // Only the aggregate reads it.
                        (Some(Emission::Narrow { .. } | Emission::Revised { .. }), _) => {
                            session.give_container(batch);
                            continue;
                        }
                        _ => {}
                    }
                    let Some(rows) = batch.take() else { continue };
                    // A provisional result's rows count nowhere (their final versions
                    // do), and one without rows still goes on: it marks the result.
                    let provisional = Emission::provisional_only(emission);
                    if provisional && rows.num_rows() == 0 {
                        session.give_container(&mut Batch::emitted(rows, emission));
                        continue;
                    }
                    let started = Instant::now();
                    let result = match Emission::counted(emission) {
                        true => logic(date_key, rows, &diagnostics),
                        false => logic(date_key, rows, &Diagnostics::default()),
                    };
                    diagnostics.time(date_key, &stage, started);
                    match result {
                        Ok(out) if out.num_rows() > 0 || provisional => {
                            session.give_container(&mut Batch::emitted(out, emission))
                        }
                        Ok(_) => {}
                        // The final rows report it.
                        Err(_) if provisional => {}
                        Err(error) => diagnostics.error(date_key, error.to_string()),
                    }
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn sample() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "ukey",
                Arc::new(Int64Array::from(vec![1, 2, 3, 1])) as ArrayRef,
            ),
            (
                "px",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    None,
                    Some(3.0),
                    Some(f64::NAN),
                ])),
            ),
            (
                "side",
                Arc::new(StringArray::from(vec!["B", "S", "B", "S"])),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn bytes_round_trip() {
        let batch = Batch::new(sample());
        let mut bytes = Vec::new();
        batch.into_bytes(&mut bytes);
        assert_eq!(bytes.len(), batch.length_in_bytes());
        assert_eq!(bytes.len() % 8, 0);
        let back = Batch::from_bytes(timely::bytes::arc::BytesMut::from(bytes).freeze());
        assert_eq!(back.data.unwrap(), sample());
    }

    #[test]
    fn a_selection_holds_its_rows_only_taken_or_encoded() {
        let rows = UInt32Array::from(vec![1, 3]);
        let expected = take_rows(&sample(), &rows);
        let batch = Batch::selected(sample(), rows.clone());
        assert_eq!(batch.len(), 2);
        // Encoded (across processes), only the selected rows travel.
        let mut bytes = Vec::new();
        batch.into_bytes(&mut bytes);
        assert_eq!(bytes.len(), batch.length_in_bytes());
        let back = Batch::from_bytes(timely::bytes::arc::BytesMut::from(bytes).freeze());
        assert_eq!(back.data.unwrap(), expected);
        // Taken, the rows are copied out; taken with the selection, they are not.
        assert_eq!(batch.clone().take().unwrap(), expected);
        let (shared, selection) = batch.clone().take_selected().unwrap();
        assert_eq!((shared, selection), (sample(), Some(rows)));
    }

    #[test]
    fn the_exchange_shares_each_batch_with_every_worker_and_its_rows() {
        let mut pushers: Vec<Vec<Batch>> = vec![Vec::new(); 3];
        struct Keep<'a>(&'a mut Vec<Batch>);
        impl Push<Message<u64, Batch>> for Keep<'_> {
            fn push(&mut self, element: &mut Option<Message<u64, Batch>>) {
                if let Some(message) = element.take() {
                    self.0.push(message.data);
                }
            }
        }
        let mut keep: Vec<Keep<'_>> = pushers.iter_mut().map(Keep).collect();
        let mut split: BySymbol = (by_symbol("ukey").0)(3);
        split.partition(&mut Batch::new(sample()), &0, &mut keep);
        drop(keep);
        let destinations = symbol_destinations(sample().column(0).as_ref(), 3);
        let mut seen = 0;
        for (worker, parts) in pushers.iter_mut().enumerate() {
            for part in parts.iter_mut() {
                let rows = part.take().unwrap();
                let ukeys = rows.column(0).as_primitive::<Int64Type>();
                for ukey in ukeys.values() {
                    let row = [1, 2, 3].iter().position(|k| k == ukey).unwrap();
                    assert_eq!(destinations[row] as usize, worker, "ukey {ukey}");
                }
                seen += rows.num_rows();
            }
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn empty_round_trip() {
        let mut bytes = Vec::new();
        Batch::default().into_bytes(&mut bytes);
        let back = Batch::from_bytes(timely::bytes::arc::BytesMut::from(bytes).freeze());
        assert!(back.is_empty());
    }

    #[test]
    fn destinations_agree_across_encodings() {
        let ints = Int64Array::from(vec![600000, 600001, 600002, 600003]);
        let int32 = arrow::compute::cast(&ints, &DataType::Int32).unwrap();
        assert_eq!(
            symbol_destinations(&ints, 3),
            symbol_destinations(int32.as_ref(), 3)
        );
        let strings = StringArray::from(vec!["a", "b", "a", "c"]);
        let dict = arrow::compute::cast(
            &strings,
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        )
        .unwrap();
        let d = symbol_destinations(&strings, 4);
        assert_eq!(d, symbol_destinations(dict.as_ref(), 4));
        assert_eq!(d[0], d[2]);
    }

    #[test]
    fn a_missing_symbol_column_names_the_operator_and_the_column() {
        let error = symbol_ids(&[(sample(), None)], "sym", "enrich").unwrap_err();
        assert_eq!(error.to_string(), "enrich: symbol column 'sym' is missing");
    }

    #[test]
    fn symbol_ids_are_the_same_from_the_table_the_hash_map_and_strings() {
        // The same symbols as narrow codes (a table: null slots hold 0, which the range
        // covers), spread codes (the hash map), strings, a dictionary and Int32 codes,
        // with nulls, over two parts, one of them with a selection.
        let codes = [
            Some(7),
            Some(3),
            None,
            Some(7),
            Some(9),
            Some(3),
            None,
            Some(1),
        ];
        let parts_of = |column: ArrayRef| -> Vec<SelectedRows> {
            let batch = RecordBatch::try_from_iter([("s", column)]).unwrap();
            vec![
                (batch.slice(0, 5), Some(UInt32Array::from(vec![0, 2, 3, 4]))),
                (batch.slice(5, 3), None),
            ]
        };
        let narrow = Int64Array::from_iter(codes.iter().copied());
        let spread = Int64Array::from_iter(codes.iter().map(|c| c.map(|c| c * ((1 << 60) / 9))));
        let strings = StringArray::from_iter(codes.iter().map(|c| c.map(|c| format!("S{c}"))));
        // Cast (after taking the selected rows): a dictionary and 32-bit integers.
        let names: Vec<Option<String>> = codes.iter().map(|c| c.map(|c| format!("S{c}"))).collect();
        let dictionary: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
            names.iter().map(|n| n.as_deref()).collect();
        let narrow32 =
            arrow::array::Int32Array::from_iter(codes.iter().map(|c| c.map(|c| c as i32)));
        let expected = (vec![0, 1, 0, 2, 3, 1, 4], 5);
        for column in [
            Arc::new(narrow) as ArrayRef,
            Arc::new(spread) as ArrayRef,
            Arc::new(strings) as ArrayRef,
            Arc::new(dictionary) as ArrayRef,
            Arc::new(narrow32) as ArrayRef,
        ] {
            let kind = column.data_type().clone();
            assert_eq!(
                symbol_ids(&parts_of(column), "s", "test").unwrap(),
                expected,
                "{kind}"
            );
        }
    }
}
