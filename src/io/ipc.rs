//! Arrow IPC framing: finding the record batches of an IPC file or stream and their row
//! counts from message headers alone, without decoding bodies.
//!
//! Every offset and length read from the file is checked against the file size here, so
//! that arrow's decoder, which slices buffers without bounds checks, never sees
//! out-of-range values from a corrupt file.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayData, ArrayRef, RecordBatch, make_array};
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::convert::try_fb_to_schema;
use arrow::ipc::reader::read_footer_length;
use arrow::ipc::{Block, Message, MetadataVersion, root_as_footer, root_as_message};

use super::IoError;

const MAGIC: &[u8] = b"ARROW1";
const CONTINUATION: [u8; 4] = [0xff; 4];

/// A memory-mapped input file.
pub(super) type Map = Arc<memmap2::Mmap>;

/// Memory-maps an IPC file into one buffer that record batches are decoded from
/// without copying, so an uncompressed file costs only the pages of the columns read.
#[allow(unsafe_code)]
pub(super) fn load(path: &Path) -> Result<(Map, Buffer), IoError> {
    let read_error = |source| IoError::Read {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // SAFETY: a mapping is undefined behaviour if the file is modified or truncated while
    // mapped. Input files are treated as immutable while a date is read (VizFlow and its
    // generator write files atomically, by rename, never in place); the README says so.
    let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(read_error)?);
    let whole = Pages {
        range: 0..map.len(),
        map: map.clone(),
        release: false,
    };
    Ok((map, Buffer::from(bytes::Bytes::from_owner(whole))))
}

/// A range of a mapped file that buffers point into. With `release`, its whole pages
/// leave the process's resident memory when the last buffer goes (they stay in the page
/// cache, and are read back from there should the range be decoded again).
struct Pages {
    map: Map,
    range: Range<usize>,
    release: bool,
}

impl AsRef<[u8]> for Pages {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl Drop for Pages {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.release {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
            let base = self.map.as_ptr() as usize;
            let (start, end) = match page {
                0 => return,
                page => (
                    (base + self.range.start).next_multiple_of(page),
                    (base + self.range.end) / page * page,
                ),
            };
            if start < end {
                // SAFETY: [start, end) lies within the mapping, which `self.map` keeps
                // alive. The mapping is shared and read-only, so MADV_DONTNEED only drops
                // the page table entries: a later read faults the same file bytes back
                // in. Only whole pages of this range are dropped, whatever other buffers
                // still point into them; the result is ignored (an error just leaves
                // the pages resident).
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
            }
        }
    }
}

/// Gives each column of `batch`, decoded from the mapped file without copying, an owner
/// of its own: the bytes of its buffers within `block` (the record batch's block in the
/// file, where a column's buffers lie next to each other), released as [`Pages`] say once no
/// array holds the column any more. A stage that has consumed a column (a timestamp
/// parsed, prices averaged) then gives its memory back while the later stages run.
/// Buffers outside `block` (decompressed ones, dictionary values) keep their owner.
pub(super) fn own_columns(batch: RecordBatch, map: &Map, block: Range<usize>) -> RecordBatch {
    let base = map.as_ptr() as usize;
    // An empty buffer may point anywhere in the block (a writer may record it at
    // offset 0): it neither widens a column's range nor needs its owner.
    let within = |buffer: &Buffer| {
        let start = (buffer.as_ptr() as usize).wrapping_sub(base);
        (!buffer.is_empty()
            && block.start <= start
            && start.saturating_add(buffer.len()) <= block.end)
            .then(|| start..start + buffer.len())
    };
    // The ranges of the block that columns point into (none of a compressed one).
    let mut used: Vec<Range<usize>> = Vec::new();
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            let mut range: Option<Range<usize>> = None;
            visit_buffers(&data, &mut |buffer| {
                if let Some(r) = within(buffer) {
                    range = Some(match range.take() {
                        Some(old) => old.start.min(r.start)..old.end.max(r.end),
                        None => r,
                    });
                }
            });
            let Some(range) = range else {
                return column.clone();
            };
            used.push(range.clone());
            let first = range.start;
            let pages = Buffer::from(bytes::Bytes::from_owner(Pages {
                map: map.clone(),
                range,
                release: true,
            }));
            let rebase = |buffer: &Buffer| match within(buffer) {
                Some(r) => pages.slice_with_length(r.start - first, buffer.len()),
                None => buffer.clone(),
            };
            make_array(rebased(data, &rebase))
        })
        .collect();
    let batch =
        RecordBatch::try_new(batch.schema(), columns).expect("the same columns as the batch");
    // The rest of the block (compressed buffers, whose batch owns their decompressed
    // bytes, and the message header) leaves resident memory now: a 1 GB lz4 file would
    // otherwise stay mapped in as it is read.
    used.sort_by_key(|r| r.start);
    let mut from = block.start;
    for range in used
        .into_iter()
        .chain(std::iter::once(block.end..block.end))
    {
        if range.start > from {
            drop(Pages {
                map: map.clone(),
                range: from..range.start,
                release: true,
            });
        }
        from = from.max(range.end);
    }
    batch
}

/// Calls `f` with every buffer of `data` and of its children (not a dictionary's values,
/// which lie in another block), validity bitmaps included.
fn visit_buffers(data: &ArrayData, f: &mut impl FnMut(&Buffer)) {
    data.buffers().iter().for_each(&mut *f);
    if let Some(nulls) = data.nulls() {
        f(nulls.buffer());
    }
    if !matches!(data.data_type(), DataType::Dictionary(..)) {
        for child in data.child_data() {
            visit_buffers(child, f);
        }
    }
}

/// `data` with every buffer (and its children's, as [`visit_buffers`]) replaced by
/// `rebase(buffer)`, which holds the same bytes.
fn rebased(data: ArrayData, rebase: &impl Fn(&Buffer) -> Buffer) -> ArrayData {
    let buffers = data.buffers().iter().map(rebase).collect();
    let nulls = data.nulls().map(|nulls| {
        let bits = BooleanBuffer::new(rebase(nulls.buffer()), nulls.offset(), nulls.len());
        // SAFETY: the same bits as `nulls`, whose null count is right.
        #[allow(unsafe_code)]
        unsafe {
            NullBuffer::new_unchecked(bits, nulls.null_count())
        }
    });
    let children = match data.data_type() {
        DataType::Dictionary(..) => data.child_data().to_vec(),
        _ => data
            .child_data()
            .iter()
            .map(|child| rebased(child.clone(), rebase))
            .collect(),
    };
    let builder = data
        .into_builder()
        .buffers(buffers)
        .nulls(nulls)
        .child_data(children);
    // SAFETY: the same layout and bytes as `data`, which the decoder built and checked.
    #[allow(unsafe_code)]
    unsafe {
        builder.build_unchecked()
    }
}

/// Why the framing of an IPC file or stream is corrupt (the message of an
/// [`IoError::Corrupt`]).
#[derive(Debug, thiserror::Error)]
pub(super) enum FramingError {
    /// The file does not begin with `ARROW1`.
    #[error("the file does not start with the ARROW1 magic bytes")]
    NoMagic,
    /// Arrow rejected the footer length or the schema.
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    /// The footer claims more bytes than the file has.
    #[error("footer length {footer_len} exceeds the file size")]
    FooterTooLong {
        /// The footer length the trailer gives.
        footer_len: usize,
    },
    /// The footer's flatbuffer does not verify.
    #[error("bad footer: {detail}")]
    BadFooter {
        /// The verifier's description.
        detail: String,
    },
    /// The footer has no schema.
    #[error("the footer has no schema")]
    NoSchema,
    /// The file was written on a machine of the other endianness.
    #[error("the file's endianness differs from this machine's")]
    Endianness,
    /// A dictionary block's message is not a dictionary batch.
    #[error("a dictionary block holds no dictionary")]
    NoDictionary,
    /// A record batch block's message is not a record batch.
    #[error("a block holds no record batch")]
    NoRecordBatch,
    /// A length in a message header is negative.
    #[error("negative {what}")]
    NegativeLength {
        /// Which length: `record batch length`, `message length`, `body length`.
        what: &'static str,
    },
    /// A block's offset and lengths reach past the end of the file.
    #[error("a block at offset {offset} lies outside the file")]
    BlockOutside {
        /// The block's offset.
        offset: i64,
    },
    /// A message header's flatbuffer does not verify.
    #[error("bad message header: {detail}")]
    BadMessageHeader {
        /// The verifier's description.
        detail: String,
    },
    /// A buffer reaches past its body, or declares an impossible uncompressed size.
    #[error("a buffer lies outside its message body or has an impossible size")]
    BadBuffer,
    /// A stream ends before its end-of-stream marker.
    #[error("the stream ends before its end-of-stream marker")]
    Truncated,
    /// A stream has no schema message.
    #[error("the stream has no schema message")]
    NoStreamSchema,
    /// A stream's first message is not its schema.
    #[error("the stream does not start with a schema message")]
    SchemaNotFirst,
    /// A dictionary batch message has no data.
    #[error("empty dictionary batch")]
    EmptyDictionaryBatch,
}

/// What an IPC file's footer and block headers say.
#[derive(Debug)]
pub(super) struct IpcFileIndex {
    pub schema: SchemaRef,
    pub version: MetadataVersion,
    pub dictionaries: Vec<Block>,
    pub batches: Vec<Block>,
    /// Row count of each record batch, in file order.
    pub batch_rows: Vec<u64>,
}

/// Reads the footer of an IPC file and the header of each block.
pub(super) fn index_file(data: &[u8]) -> Result<IpcFileIndex, FramingError> {
    if data.len() < 2 * MAGIC.len() + 4 || !data.starts_with(MAGIC) {
        return Err(FramingError::NoMagic);
    }
    let trailer = data.len() - 10;
    let footer_len = read_footer_length(data[trailer..].try_into().expect("10 bytes"))?;
    let footer = trailer
        .checked_sub(footer_len)
        .map(|start| &data[start..trailer])
        .ok_or(FramingError::FooterTooLong { footer_len })?;
    let footer = root_as_footer(footer).map_err(|e| FramingError::BadFooter {
        detail: e.to_string(),
    })?;
    let schema = footer.schema().ok_or(FramingError::NoSchema)?;
    if !schema.endianness().equals_to_target_endianness() {
        return Err(FramingError::Endianness);
    }
    let schema = Arc::new(try_fb_to_schema(schema)?);
    let dictionaries: Vec<Block> = footer.dictionaries().iter().flatten().copied().collect();
    let batches: Vec<Block> = footer.recordBatches().iter().flatten().copied().collect();
    for block in &dictionaries {
        let (message, body) = block_message(data, block)?;
        let batch = message.header_as_dictionary_batch().and_then(|d| d.data());
        check_buffers(batch.ok_or(FramingError::NoDictionary)?, body)?;
    }
    let batch_rows = batches
        .iter()
        .map(|block| {
            let (message, body) = block_message(data, block)?;
            let batch = message
                .header_as_record_batch()
                .ok_or(FramingError::NoRecordBatch)?;
            check_buffers(batch, body)?;
            u64::try_from(batch.length()).map_err(|_| FramingError::NegativeLength {
                what: "record batch length",
            })
        })
        .collect::<Result<_, FramingError>>()?;
    Ok(IpcFileIndex {
        schema,
        version: footer.version(),
        dictionaries,
        batches,
        batch_rows,
    })
}

/// The bytes of `block` (metadata and body), checked to lie within the file.
pub(super) fn block_bytes(data: &Buffer, block: &Block) -> Result<Buffer, FramingError> {
    let range = block_range(data.len(), block)?;
    Ok(data.slice_with_length(range.start, range.len()))
}

pub(super) fn block_range(file_len: usize, block: &Block) -> Result<Range<usize>, FramingError> {
    let start = usize::try_from(block.offset()).ok();
    let meta = usize::try_from(block.metaDataLength())
        .ok()
        .filter(|&m| m >= 8);
    let body = usize::try_from(block.bodyLength()).ok();
    match (start, meta, body) {
        (Some(start), Some(meta), Some(body)) => start
            .checked_add(meta)
            .and_then(|end| end.checked_add(body))
            .filter(|&end| end <= file_len)
            .map(|end| start..end),
        _ => None,
    }
    .ok_or(FramingError::BlockOutside {
        offset: block.offset(),
    })
}

/// The message header of `block` and its body, as the decoder will see them.
fn block_message<'a>(
    data: &'a [u8],
    block: &Block,
) -> Result<(Message<'a>, &'a [u8]), FramingError> {
    let bytes = &data[block_range(data.len(), block)?];
    let (metadata, body) = bytes.split_at(block.metaDataLength() as usize);
    let flatbuffer = match metadata[..4] == CONTINUATION {
        true => &metadata[8..],
        false => &metadata[4..],
    };
    let message = root_as_message(flatbuffer).map_err(bad_header)?;
    Ok((message, body))
}

/// Checks that every buffer of a record batch lies within its message body and, if
/// compressed, declares an uncompressed size its codec can produce: arrow allocates that
/// size before decompressing, and an absurd one aborts the process.
fn check_buffers(batch: arrow::ipc::RecordBatch<'_>, body: &[u8]) -> Result<(), FramingError> {
    // No codec expands more than 32768x: a zstd RLE block turns 4 bytes into 128 KiB.
    const MAX_EXPANSION: u64 = 32_768;
    let compressed = batch.compression().is_some();
    let valid = |buffer: &arrow::ipc::Buffer| {
        let (Ok(start), Ok(len)) = (
            usize::try_from(buffer.offset()),
            usize::try_from(buffer.length()),
        ) else {
            return false;
        };
        let Some(bytes) = start.checked_add(len).and_then(|end| body.get(start..end)) else {
            return false;
        };
        match (compressed, bytes.get(..8)) {
            (true, Some(prefix)) => {
                let declared = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
                declared == -1
                    || u64::try_from(declared).is_ok_and(|d| d <= MAX_EXPANSION * len as u64)
            }
            _ => true,
        }
    };
    match batch.buffers().iter().flatten().all(valid) {
        true => Ok(()),
        false => Err(FramingError::BadBuffer),
    }
}

/// Walks the messages of an IPC stream: its schema, total row count, and the length of
/// its complete messages. A stream cut after its schema (a recording whose writer
/// stopped: no end-of-stream marker, or a torn last message) is read up to its last
/// complete message: the length says where that is.
pub(super) fn index_stream(data: &[u8]) -> Result<(SchemaRef, u64, usize), FramingError> {
    let mut schema: Option<Schema> = None;
    let mut rows = 0u64;
    let mut position = 0usize;
    let negative = |what| move |_| FramingError::NegativeLength { what };
    loop {
        let framed = match message_at(data, position) {
            Err(FramingError::Truncated) if schema.is_some() => None,
            framed => Some(framed?),
        };
        let (message, body, next) = match framed {
            Some(Framed::Message(message, body, next)) => (message, body, next),
            Some(Framed::End(end)) => {
                let schema = schema.ok_or(FramingError::NoStreamSchema)?;
                return Ok((Arc::new(schema), rows, end));
            }
            None => {
                let schema = schema.expect("checked above");
                return Ok((Arc::new(schema), rows, position));
            }
        };
        position = next;
        if let Some(fb_schema) = message.header_as_schema() {
            schema = Some(try_fb_to_schema(fb_schema)?);
        } else if schema.is_none() {
            return Err(FramingError::SchemaNotFirst);
        } else if let Some(batch) = message.header_as_record_batch() {
            check_buffers(batch, body)?;
            rows += u64::try_from(batch.length()).map_err(negative("record batch length"))?;
        } else if let Some(dictionary) = message.header_as_dictionary_batch() {
            let data = dictionary.data();
            check_buffers(data.ok_or(FramingError::EmptyDictionaryBatch)?, body)?;
        }
    }
}

/// A message of an IPC stream, as [`message_at`] finds it.
enum Framed<'a> {
    /// Its header, its body, and where the next message starts.
    Message(arrow::ipc::Message<'a>, &'a [u8], usize),
    /// The end-of-stream marker, and where it ends.
    End(usize),
}

/// The message of `data` at `position`; [`FramingError::Truncated`] when it is not all
/// there.
fn message_at(data: &[u8], mut position: usize) -> Result<Framed<'_>, FramingError> {
    let negative = |what| move |_| FramingError::NegativeLength { what };
    let mut word = data
        .get(position..position + 4)
        .ok_or(FramingError::Truncated)?;
    position += 4;
    if word == CONTINUATION {
        word = data
            .get(position..position + 4)
            .ok_or(FramingError::Truncated)?;
        position += 4;
    }
    let meta_len = i32::from_le_bytes(word.try_into().expect("4 bytes"));
    if meta_len == 0 {
        return Ok(Framed::End(position));
    }
    let meta_len = usize::try_from(meta_len).map_err(negative("message length"))?;
    let metadata = data
        .get(position..position + meta_len)
        .ok_or(FramingError::Truncated)?;
    let message = root_as_message(metadata).map_err(bad_header)?;
    let body_len = usize::try_from(message.bodyLength()).map_err(negative("body length"))?;
    position += meta_len;
    let body = data
        .get(position..position + body_len)
        .ok_or(FramingError::Truncated)?;
    Ok(Framed::Message(message, body, position + body_len))
}

fn bad_header(error: impl ToString) -> FramingError {
    FramingError::BadMessageHeader {
        detail: error.to_string(),
    }
}
