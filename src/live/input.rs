//! The producers' side of `vizflow live`: Arrow IPC streams read message by message,
//! each message's size checked before it is read, one thread per stream, and a gate
//! per stream that stops reading it (TCP flow control then holds the producer back)
//! while its rows wait for a later date.

use std::io::{BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex};

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use crossbeam_channel::Sender;

/// What a producer's stream gives the main loop.
pub(super) enum Event {
    /// A producer connected (`peer` names it in logs).
    Connected { stream: usize, peer: String },
    /// A record batch of the stream, with its gate.
    Batch {
        stream: usize,
        batch: RecordBatch,
        gate: Arc<Gate>,
    },
    /// The stream ended cleanly (its end-of-stream marker, or the end of the input).
    Ended { stream: usize },
    /// The stream was closed because of an error (named in the message); the rows
    /// already accepted are kept.
    Failed { stream: usize, error: String },
}

/// Whether a stream may be read: closed while its next rows wait for a later date.
/// Or shut: the stream is not read any more (the main loop closed it).
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum GateState {
    #[default]
    Open,
    Paused,
    Shut,
}

impl Gate {
    pub(super) fn pause(&self) {
        self.set(GateState::Paused);
    }

    pub(super) fn resume(&self) {
        self.set(GateState::Open);
    }

    pub(super) fn shut(&self) {
        self.set(GateState::Shut);
    }

    fn set(&self, to: GateState) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != GateState::Shut {
            *state = to;
        }
        self.changed.notify_all();
    }

    /// Waits while paused; false once shut.
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while *state == GateState::Paused {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        *state == GateState::Open
    }
}

/// Why a stream stopped: cleanly, or with an error that names what was wrong.
enum StreamEnd {
    Clean,
    Error(String),
}

/// Reads one IPC stream from `input` until its end, sending its batches (the main loop
/// holds the channel's other end; a bounded channel, so a slow consumer stops the
/// reading).
pub(super) fn read_stream(
    stream: usize,
    input: impl Read,
    max_message_bytes: usize,
    events: &Sender<Event>,
) {
    let gate = Arc::new(Gate::default());
    let end = read_messages(
        input,
        max_message_bytes,
        || gate.wait(),
        |batch| {
            let gate = gate.clone();
            events
                .send(Event::Batch {
                    stream,
                    batch,
                    gate,
                })
                .is_ok()
        },
    );
    let _ = events.send(match end {
        StreamEnd::Clean => Event::Ended { stream },
        StreamEnd::Error(error) => Event::Failed { stream, error },
    });
}

/// The IPC stream's messages, decoded: `each` gets every record batch, and returns
/// false to stop; `go_on`, asked before each message is read, may wait, or stop.
fn read_messages(
    input: impl Read,
    max_message_bytes: usize,
    go_on: impl Fn() -> bool,
    mut each: impl FnMut(RecordBatch) -> bool,
) -> StreamEnd {
    // Smaller than a batch's body, which then goes from the socket straight into its
    // message, not through the buffer (a copy of every byte fed, about 2% of the live
    // benchmark's CPU); the small reads (prefixes, metadata) still come from it.
    let mut input = BufReader::with_capacity(64 << 10, input);
    let mut decoder = StreamDecoder::new();
    let mut messages = 0usize;
    loop {
        if !go_on() {
            return StreamEnd::Clean;
        }
        let message = match next_message(&mut input, max_message_bytes) {
            Ok(Some(message)) => message,
            Ok(None) => return StreamEnd::Clean,
            Err(error) => {
                return StreamEnd::Error(format!("message {}: {error}", messages + 1));
            }
        };
        messages += 1;
        match decoder.decode(&mut Buffer::from(message)) {
            Ok(Some(batch)) => {
                if !each(batch) {
                    return StreamEnd::Clean;
                }
            }
            Ok(None) => {}
            Err(error) => {
                return StreamEnd::Error(format!(
                    "message {messages}: not a valid Arrow IPC stream message: {error}"
                ));
            }
        }
    }
}

/// What a stream that ends inside a message is told.
const CUT_SHORT: &str = "the producer disconnected in the middle of a message";

/// The next message of an IPC stream (its length prefix, metadata and body, as the
/// decoder takes them), or `None` at its end (the end-of-stream marker, or the end of
/// the input between messages). Its metadata and body must each fit in
/// `max_message_bytes`; their sizes are checked before anything is allocated.
fn next_message(
    input: &mut impl Read,
    max_message_bytes: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut word = [0u8; 4];
    match read_full(input, &mut word)? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(CUT_SHORT.into()),
    }
    let mut prefix = word.to_vec();
    if word == [0xff; 4] {
        // The continuation marker, then the length.
        if read_full(input, &mut word)? != 4 {
            return Err(CUT_SHORT.into());
        }
        prefix.extend_from_slice(&word);
    }
    let length = u32::from_le_bytes(word) as usize;
    if length == 0 {
        return Ok(None);
    }
    let too_large = |what: &str, size: usize| {
        format!(
            "its {what} is {size} bytes, over --max-message-bytes ({max_message_bytes}); send \
             smaller batches or raise the limit"
        )
    };
    if length > max_message_bytes {
        return Err(too_large("metadata", length));
    }
    let mut message = prefix;
    let start = message.len();
    read_more(input, &mut message, length)?;
    let body = arrow::ipc::root_as_message(&message[start..])
        .map_err(|e| format!("not a valid Arrow IPC stream message: {e}"))?
        .bodyLength();
    let body = usize::try_from(body).map_err(|_| format!("a negative body length {body}"))?;
    if body > max_message_bytes {
        return Err(too_large("body", body));
    }
    read_more(input, &mut message, body)?;
    Ok(Some(message))
}

/// Appends the next `length` bytes of `input` to `message`, read into its spare
/// capacity (not zeroed first: a message's body is most of what a feed reads).
fn read_more(input: &mut impl Read, message: &mut Vec<u8>, length: usize) -> Result<(), String> {
    message.reserve_exact(length);
    let read = (input.take(length as u64).read_to_end(message))
        .map_err(|e| format!("cannot read: {e}"))?;
    match read == length {
        true => Ok(()),
        false => Err(CUT_SHORT.into()),
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut read = 0;
    while read < buf.len() {
        match input.read(&mut buf[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    Ok(read)
}

/// Accepts producer connections on `listener`, one reading thread each.
pub(super) fn accept(listener: TcpListener, max_message_bytes: usize, events: Sender<Event>) {
    for (stream, connection) in (1..).zip(listener.incoming()) {
        let connection = match connection {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!("a producer could not connect: {error}");
                continue;
            }
        };
        let peer = connection
            .peer_addr()
            .map_or_else(|_| "unknown".to_owned(), |a: SocketAddr| a.to_string());
        if events.send(Event::Connected { stream, peer }).is_err() {
            return;
        }
        let events = events.clone();
        std::thread::spawn(move || read_stream(stream, connection, max_message_bytes, &events));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array};
    use arrow::ipc::writer::StreamWriter;

    use super::*;

    fn batches() -> Vec<RecordBatch> {
        (0..3)
            .map(|b| {
                let n = 1_000 * (b + 1);
                RecordBatch::try_from_iter([
                    ("id", Arc::new(Int64Array::from_iter_values(0..n)) as _),
                    (
                        "x",
                        Arc::new(Float64Array::from_iter_values(
                            (0..n).map(|i| i as f64 / 3.0),
                        )) as _,
                    ),
                ])
                .unwrap()
            })
            .collect()
    }

    fn stream(batches: &[RecordBatch]) -> Vec<u8> {
        let mut writer = StreamWriter::try_new(Vec::new(), &batches[0].schema()).unwrap();
        batches.iter().for_each(|b| writer.write(b).unwrap());
        writer.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8]) -> (Vec<RecordBatch>, StreamEnd) {
        let mut read = Vec::new();
        let end = read_messages(
            bytes,
            1 << 20,
            || true,
            |b| {
                read.push(b);
                true
            },
        );
        (read, end)
    }

    /// A stream reads back batch for batch; cut inside a message (in its length, its
    /// metadata or its body), the batches before it come and the stream ends with an
    /// error naming the message.
    #[test]
    fn messages_read_whole_or_fail_where_cut() {
        let sent = batches();
        let bytes = stream(&sent);
        let (read, end) = read_all(&bytes);
        assert!(matches!(end, StreamEnd::Clean));
        assert_eq!(read, sent);
        // Past the schema's and the first batch's messages: in the second batch's length,
        // metadata and body.
        let first = stream(&sent[..1]).len() - 8; // less the end-of-stream marker
        for cut in [first + 4, first + 100, first + 10_000] {
            let (read, end) = read_all(&bytes[..cut]);
            assert_eq!(read, sent[..1], "cut at {cut}");
            match end {
                StreamEnd::Error(error) => assert!(
                    error.contains("message 3") && error.contains("in the middle of a message"),
                    "cut at {cut}: {error}"
                ),
                StreamEnd::Clean => panic!("cut at {cut}: read as complete"),
            }
        }
    }
}
