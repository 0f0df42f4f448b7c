//! Runs across processes: connecting a timely cluster, and supervising local clusters.
//!
//! A cluster is `N` processes, each with the same number of worker threads, that know
//! each other from a *hostfile* (one `host:port` per line, in process order). Process
//! `i` listens on line `i`; every process connects to each process before it and
//! accepts a connection from each process after it, as timely does.
//!
//! [`connect`] makes those connections itself rather than leaving them to timely, so
//! that a peer that never starts gives a clear error after a timeout (timely waits
//! forever), and so that the processes check, before any data flows, that they run the
//! same pipeline with the same number of workers. Process 0 also hands every other
//! process its [`DatePlan`] (the dates to run), so that all processes run the same
//! dates even when they see different output directories. The handshake is typed (a
//! greeting, then a reply that welcomes the peer, with the plan from process 0, or
//! refuses it and says why), sent as JSON frames. The connected sockets are then
//! handed to timely's own networking.
//!
//! [`run_local`] supervises the processes of `vizflow cluster --local`: each tells it
//! how its dates went in typed [`crate::progress::ProcessMessage`]s on its stdout, and
//! it decides from their exit codes when to stop the others.
//!
//! Timely's failure model is fail-stop: when a process dies, its peers' network threads
//! panic on the closed socket. The `vizflow` binary aborts on any panic;
//! [`lost_peer_message`] turns that panic into a message that names the peer.

use std::any::Any;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::progress::{MESSAGES_ON_STDOUT, ProcessMessage, Progress, ProgressStyle};
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};

/// How one process joins a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// How many processes.
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process: usize,
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
    /// Worker threads per process (the same in every process).
    pub workers: usize,
    /// How long to wait for the other processes.
    pub connect_timeout: Duration,
}

impl ClusterSpec {
    /// The addresses of a hostfile, or `127.0.0.1:2101`, `:2102`, ... without one (as timely).
    pub fn addresses(
        hostfile: Option<&Path>,
        processes: usize,
    ) -> Result<Vec<String>, ClusterError> {
        let Some(path) = hostfile else {
            return Ok((0..processes)
                .map(|i| format!("127.0.0.1:{}", 2101 + i))
                .collect());
        };
        let addresses = read_hostfile(path)?;
        if addresses.len() < processes {
            return Err(ClusterError::Hostfile {
                path: path.to_owned(),
                message: format!(
                    "it lists {} address(es) but --processes is {processes}; write one \
                     host:port per line, in process order",
                    addresses.len()
                ),
            });
        }
        Ok(addresses.into_iter().take(processes).collect())
    }
}

/// Every `host:port` of a hostfile, in process order (blank lines and `#` comments
/// skipped); an error for an unreadable file, a malformed address or no address.
pub fn read_hostfile(path: &Path) -> Result<Vec<String>, ClusterError> {
    let hostfile_error = |message: String| ClusterError::Hostfile {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| hostfile_error(e.to_string()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if addresses.is_empty() {
        return Err(hostfile_error(
            "it lists no host:port; write one per line, in process order".into(),
        ));
    }
    for (line, address) in addresses.iter().enumerate() {
        if address
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(hostfile_error(format!(
                "address {} ('{address}', process {line}) is not host:port",
                line + 1
            )));
        }
    }
    Ok(addresses)
}

/// Why a cluster could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The hostfile is unreadable or malformed.
    #[error("hostfile {path}: {message}")]
    Hostfile {
        /// The hostfile.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The flags do not describe a cluster.
    #[error("{0}")]
    Usage(String),
    /// This process cannot listen on its address.
    #[error(
        "process {process} cannot listen on {address} (its line of the hostfile): {error}; \
         is another program using the port, or is the address not this host's?"
    )]
    Listen {
        /// This process.
        process: usize,
        /// Its address.
        address: String,
        /// Why (part of the message, so not a `source` to print twice).
        error: std::io::Error,
    },
    /// A peer did not connect or answer in time.
    #[error(
        "process {peer} ({address}) did not connect within {} s: {detail}; start every \
         process of the hostfile (or raise --connect-timeout)",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// The peer.
        peer: usize,
        /// Its address.
        address: String,
        /// The timeout.
        timeout: Duration,
        /// The last thing seen.
        detail: String,
    },
    /// A peer answered, but does not belong to this run.
    #[error("process {peer} ({address}): {message}")]
    Mismatch {
        /// The peer.
        peer: usize,
        /// Its address.
        address: String,
        /// What differs.
        message: String,
    },
    /// The sockets could not be handed to timely.
    #[error("cannot start the network threads: {0}")]
    Network(std::io::Error),
    /// A handshake message could not be encoded (a bug).
    #[error("cannot encode the {what} for the other processes: {error}")]
    Encode {
        /// Which message.
        what: &'static str,
        /// Why.
        error: serde_json::Error,
    },
}

/// This process's share of a connected cluster, ready for [`crate::engine::Engine`].
pub struct Connected {
    pub(crate) builders: Vec<AllocatorBuilder>,
    pub(crate) guard: Box<dyn Any + Send>,
    /// This process's index.
    pub process: usize,
    /// How many processes.
    pub processes: usize,
    /// The plan of process 0 (for process 0, its own).
    pub plan: DatePlan,
}

/// The dates every process of a run computes, decided by process 0 and handed to the
/// others when they connect.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatePlan {
    /// Dates to compute, in order.
    #[serde(with = "date_keys")]
    pub run: Vec<NaiveDate>,
    /// Dates whose partial exists from the same pipeline (`--skip-existing`).
    #[serde(with = "date_keys")]
    pub skipped: Vec<NaiveDate>,
    /// Dates of `run` read only for their prices: the next trading day of a date to
    /// compute that is not computed itself (returns to the next day).
    #[serde(with = "date_keys", default)]
    pub prices_only: Vec<NaiveDate>,
    /// (date, next trading day) as date keys, for the dates to compute whose next
    /// trading day has a file (returns to the next day).
    #[serde(default)]
    pub next: Vec<(u32, u32)>,
    /// `vizflow live`: the dates are those the feeds bring, and this is the schema of
    /// the feed's batches (an Arrow IPC stream with no batch), from process 0's first
    /// batch, that every process binds the pipeline to.
    #[serde(default)]
    pub live_schema: Option<Vec<u8>>,
}

/// Dates as `YYYYMMDD` numbers on the wire.
mod date_keys {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use vizflow_operators::time::{date_key, date_of_key};

    pub fn serialize<S: Serializer>(dates: &[NaiveDate], s: S) -> Result<S::Ok, S::Error> {
        let keys: Vec<u32> = dates.iter().map(|d| date_key(*d)).collect();
        keys.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NaiveDate>, D::Error> {
        Ok(Vec::<u32>::deserialize(d)?
            .into_iter()
            .map(date_of_key)
            .collect())
    }
}

/// What a process says when it connects to a peer.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Greeting {
    version: String,
    processes: usize,
    process: usize,
    workers: usize,
    config_hash: String,
}

/// What the peer answers a [`Greeting`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    /// The peer belongs to this run; process 0 also hands over its plan.
    Welcome {
        /// Process 0's plan (`None` from the other processes).
        plan: Option<DatePlan>,
    },
    /// The peer does not belong to this run, and why.
    Refused {
        /// What differs.
        reason: String,
    },
}

const MAGIC: &[u8; 8] = b"VIZFLOW1";
/// How long a poll for a connection or an answer waits before looking again.
const POLL: Duration = Duration::from_millis(20);

static CLUSTER: OnceLock<(usize, Vec<String>)> = OnceLock::new();

/// For a panic on one of timely's network threads (`timely:recv-{i}` / `timely:send-{i}`),
/// a message that says which peer was lost and what to do.
pub fn lost_peer_message(thread_name: &str) -> Option<String> {
    let (process, addresses) = CLUSTER.get()?;
    let peer: usize = thread_name
        .strip_prefix("timely:recv-")
        .or_else(|| thread_name.strip_prefix("timely:send-"))?
        .parse()
        .ok()?;
    let address = addresses.get(peer).map_or("?", String::as_str);
    Some(format!(
        "error: process {process} lost its connection to process {peer} ({address}): that \
         process stopped (it failed or was killed; see its own output). Stopping process \
         {process} too. Partials already written are complete; rerun with --skip-existing to \
         compute the missing dates."
    ))
}

/// Connects this process to the others of `spec`. Every process passes the hash of
/// its pipeline; all must agree. `plan` is what process 0 hands every other process
/// (returned as [`Connected::plan`]).
pub fn connect(
    spec: &ClusterSpec,
    config_hash: &str,
    plan: &DatePlan,
) -> Result<Connected, ClusterError> {
    let ClusterSpec {
        processes,
        process,
        ref addresses,
        workers,
        connect_timeout,
    } = *spec;
    if process >= processes {
        return Err(ClusterError::Usage(format!(
            "--process {process} is out of range: with --processes {processes} the processes are \
             numbered 0 to {}",
            processes - 1
        )));
    }
    if addresses.len() < processes {
        return Err(ClusterError::Usage(format!(
            "{} addresses for {processes} processes",
            addresses.len()
        )));
    }
    let deadline = Instant::now() + connect_timeout;
    let greeting = Greeting {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        processes,
        process,
        workers,
        config_hash: config_hash.to_owned(),
    };
    let listener = if process + 1 < processes {
        Some(listen(process, &addresses[process])?)
    } else {
        None
    };
    let (lower, higher) = std::thread::scope(|scope| {
        let accepting = listener
            .as_ref()
            .map(|listener| scope.spawn(|| accept_all(listener, spec, &greeting, plan, deadline)));
        let lower: Result<Vec<(TcpStream, Reply)>, ClusterError> = (0..process)
            .map(|peer| connect_to(peer, spec, &greeting, deadline))
            .collect();
        let higher = match accepting {
            Some(handle) => handle.join().unwrap_or_else(|_| {
                Err(ClusterError::Usage(
                    "the connection listener panicked".into(),
                ))
            }),
            None => Ok(Vec::new()),
        };
        (lower, higher)
    });
    let lower = lower?;
    let higher = higher?;
    let agreed_plan = match lower.first() {
        Some((_, Reply::Welcome { plan: Some(plan) })) => plan.clone(),
        Some(_) => {
            return Err(ClusterError::Mismatch {
                peer: 0,
                address: addresses[0].clone(),
                message: "it sent no plan of the dates to run; run the same version of \
                          VizFlow everywhere"
                    .into(),
            });
        }
        None => plan.clone(),
    };
    if agreed_plan.run.is_empty() && agreed_plan.live_schema.is_none() {
        // Nothing to compute anywhere (every date skipped): every process has the agreed
        // plan and ends here, without starting a network whose connections the others
        // would see drop.
        return Ok(Connected {
            builders: Vec::new(),
            guard: Box::new(()),
            process,
            processes,
            plan: agreed_plan,
        });
    }
    let mut sockets: Vec<Option<TcpStream>> = lower.into_iter().map(|(s, _)| Some(s)).collect();
    sockets.push(None);
    sockets.extend(higher.into_iter().map(Some));
    for socket in sockets.iter().flatten() {
        socket
            .set_read_timeout(None)
            .and_then(|()| socket.set_nodelay(true))
            .map_err(ClusterError::Network)?;
    }
    let _ = CLUSTER.set((process, addresses.clone()));
    let hooks = timely::communication::Hooks::default();
    let process_allocators =
        ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(process_allocators, sockets, process, workers, hooks)
            .map_err(ClusterError::Network)?;
    Ok(Connected {
        builders: builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        guard: Box::new(guard),
        process,
        processes,
        plan: agreed_plan,
    })
}

/// Set by `vizflow cluster --local` for a process that listens: its standard input is
/// then the socket already listening on its line of the hostfile. The supervisor binds
/// it and hands it over, so that no other program can take the port between the two
/// (as one could if the supervisor chose a free port and the process bound it later).
pub const LISTENER_ON_STDIN: &str = "VIZFLOW_LISTENER_ON_STDIN";

/// The listener of process `process` on `address`: bound here, or handed over on
/// standard input ([`LISTENER_ON_STDIN`]).
fn listen(process: usize, address: &str) -> Result<TcpListener, ClusterError> {
    if std::env::var_os(LISTENER_ON_STDIN).is_none() {
        return TcpListener::bind(address).map_err(|error| ClusterError::Listen {
            process,
            address: address.to_owned(),
            error,
        });
    }
    let not_handed_over = |detail: String| {
        ClusterError::Usage(format!(
            "{LISTENER_ON_STDIN} is set, but the standard input of process {process} is not \
             a socket listening on {address} ({detail}); unset it"
        ))
    };
    use std::os::fd::AsFd;
    let listener = std::io::stdin().as_fd().try_clone_to_owned();
    let listener = TcpListener::from(listener.map_err(|e| not_handed_over(e.to_string()))?);
    let bound = listener
        .local_addr()
        .map_err(|e| not_handed_over(e.to_string()))?;
    let wanted = resolve(address).map_err(|e| not_handed_over(e.to_string()))?;
    if bound != wanted {
        return Err(not_handed_over(format!("it is bound to {bound}")));
    }
    Ok(listener)
}

fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address")
    })
}

/// Connects to the lower-numbered process `peer`, retrying until the deadline.
fn connect_to(
    peer: usize,
    spec: &ClusterSpec,
    greeting: &Greeting,
    deadline: Instant,
) -> Result<(TcpStream, Reply), ClusterError> {
    let address = &spec.addresses[peer];
    let timeout = |detail: String| ClusterError::Timeout {
        peer,
        address: address.clone(),
        timeout: spec.connect_timeout,
        detail,
    };
    let mut stream = loop {
        let attempt = resolve(address).and_then(|addr| {
            let left = deadline.saturating_duration_since(Instant::now()).max(POLL);
            TcpStream::connect_timeout(&addr, left)
        });
        match attempt {
            Ok(stream) => break stream,
            Err(error) if Instant::now() >= deadline => {
                return Err(timeout(format!("connecting failed: {error}")));
            }
            // The peer is not listening yet: look again shortly (as timely does, faster).
            Err(_) => std::thread::sleep(POLL),
        }
    };
    let io = |e: std::io::Error| timeout(format!("the handshake failed: {e}"));
    stream
        .set_read_timeout(Some(
            deadline.saturating_duration_since(Instant::now()).max(POLL),
        ))
        .map_err(io)?;
    let greeting = serde_json::to_vec(greeting).map_err(|error| ClusterError::Encode {
        what: "greeting",
        error,
    })?;
    write_frame(&mut stream, Some(MAGIC), &greeting).map_err(io)?;
    let reply: Reply = serde_json::from_slice(&read_frame(&mut stream, false).map_err(io)?)
        .map_err(|e| timeout(format!("its answer is not VizFlow's: {e}")))?;
    if let Reply::Refused { reason } = reply {
        return Err(ClusterError::Mismatch {
            peer,
            address: address.clone(),
            message: reason,
        });
    }
    Ok((stream, reply))
}

/// Accepts a connection from every higher-numbered process, until the deadline.
fn accept_all(
    listener: &TcpListener,
    spec: &ClusterSpec,
    greeting: &Greeting,
    plan: &DatePlan,
    deadline: Instant,
) -> Result<Vec<TcpStream>, ClusterError> {
    let me = spec.process;
    let mut peers: Vec<Option<TcpStream>> = (me + 1..spec.processes).map(|_| None).collect();
    listener
        .set_nonblocking(true)
        .map_err(ClusterError::Network)?;
    while let Some(missing) = peers.iter().position(Option::is_none) {
        let (mut stream, _) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let peer = me + 1 + missing;
                    return Err(ClusterError::Timeout {
                        peer,
                        address: spec.addresses[peer].clone(),
                        timeout: spec.connect_timeout,
                        detail: format!(
                            "process {me} listened on {} and heard nothing from it",
                            spec.addresses[me]
                        ),
                    });
                }
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => return Err(ClusterError::Network(e)),
        };
        // A stray connection (a port scanner, a stale peer) is dropped, not fatal.
        let Some((peer, reply)) = handshake(&mut stream, spec, greeting, plan, deadline) else {
            continue;
        };
        let encoded = serde_json::to_vec(&reply).map_err(|error| ClusterError::Encode {
            what: "answer",
            error,
        })?;
        let _ = write_frame(&mut stream, None, &encoded);
        if let Reply::Refused { reason } = reply {
            return Err(ClusterError::Mismatch {
                peer,
                address: spec.addresses.get(peer).cloned().unwrap_or_default(),
                message: reason,
            });
        }
        peers[peer - me - 1] = Some(stream);
    }
    Ok(peers.into_iter().flatten().collect())
}

/// Reads a peer's greeting and checks it against ours; `None` for a connection that is
/// not a VizFlow peer at all.
fn handshake(
    stream: &mut TcpStream,
    spec: &ClusterSpec,
    ours: &Greeting,
    plan: &DatePlan,
    deadline: Instant,
) -> Option<(usize, Reply)> {
    stream.set_nonblocking(false).ok()?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    stream.set_read_timeout(Some(wait)).ok()?;
    let theirs: Greeting = serde_json::from_slice(&read_frame(stream, true).ok()?).ok()?;
    let peer = theirs.process;
    let error = if peer <= spec.process || peer >= spec.processes {
        Some(format!(
            "it says it is process {peer} of {}, which process {} does not expect; check that \
             every process has its own --process and the same hostfile",
            theirs.processes, spec.process
        ))
    } else if theirs.processes != ours.processes {
        Some(format!(
            "it runs with --processes {}, process {} with {}; give every process the same",
            theirs.processes, spec.process, ours.processes
        ))
    } else if theirs.workers != ours.workers {
        Some(format!(
            "it runs {} worker(s), process {} runs {}; give every process the same --workers",
            theirs.workers, spec.process, ours.workers
        ))
    } else if theirs.version != ours.version {
        Some(format!(
            "it is VizFlow {}, process {} is {}; run the same version everywhere",
            theirs.version, spec.process, ours.version
        ))
    } else if theirs.config_hash != ours.config_hash {
        Some(format!(
            "it runs a different pipeline than process {} (the pipeline files differ); give \
             every process the same pipeline file",
            spec.process
        ))
    } else {
        None
    };
    let reply = match error {
        Some(reason) => Reply::Refused { reason },
        None => Reply::Welcome {
            plan: (spec.process == 0).then(|| plan.clone()),
        },
    };
    Some((peer, reply))
}

fn write_frame(
    stream: &mut TcpStream,
    magic: Option<&[u8; 8]>,
    body: &[u8],
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(12 + body.len());
    if let Some(magic) = magic {
        frame.extend_from_slice(magic);
    }
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)
}

fn read_frame(stream: &mut TcpStream, magic: bool) -> std::io::Result<Vec<u8>> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    if magic {
        let mut seen = [0u8; 8];
        stream.read_exact(&mut seen)?;
        if &seen != MAGIC {
            return Err(invalid("not a VizFlow peer"));
        }
    }
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(invalid("oversized handshake"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}

/// The `vizflow run` command of every process of a cluster across machines, one per
/// line of the hostfile, each with a comment naming its host (`vizflow cluster --print`).
pub fn print_commands(run_args: &[String], hostfile: &Path, addresses: &[String]) -> String {
    let processes = addresses.len();
    let mut out = format!(
        "# A cluster of {processes} processes from {hostfile}. Start each command on its host\n\
         # (by ssh or a job scheduler), from a directory where the pipeline file, the input\n\
         # directory and the hostfile have the same paths, e.g. on a shared filesystem.\n\
         # Process I listens on line I of the hostfile; each date's partial is written once,\n\
         # by the process that owns the date, under the output directory of its host.\n",
        hostfile = hostfile.display()
    );
    for (process, address) in addresses.iter().enumerate() {
        let mut args: Vec<String> = vec!["vizflow".into()];
        args.extend(run_args.iter().cloned());
        args.extend([
            "--processes".into(),
            processes.to_string(),
            "--process".into(),
            process.to_string(),
            "--hostfile".into(),
            hostfile.display().to_string(),
        ]);
        let line: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        out.push_str(&format!(
            "# process {process} on {address}\n{}\n",
            line.join(" ")
        ));
    }
    out
}

/// Quotes `arg` for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// How long the other processes get to stop on their own after one failed, before
/// they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `processes` copies of `exe run_args... --processes N --process I --hostfile H`
/// on this machine, on free loopback ports, and supervises them (`vizflow cluster
/// --local N`): their progress messages make one display, their other output is passed
/// on prefixed with the process, and when one fails the others are stopped. Returns
/// the exit code for the whole run: 0 when every process succeeded, 1 when dates
/// failed, 2 when a process stopped with an error, 3 when one died (killed, or by a
/// panic).
pub fn run_local(
    exe: &Path,
    run_args: &[String],
    processes: usize,
    style: ProgressStyle,
) -> std::io::Result<u8> {
    let (mut children, outputs, _hostfile_dir) = start_local(exe, run_args, processes)?;
    let mut display = Progress::cluster(style, processes);
    let statuses = supervise(&mut children, &outputs, &mut display)?;
    display.finish();
    let mut code = 0u8;
    for (process, status) in statuses.iter().enumerate() {
        let this = match status.code() {
            Some(0) => 0,
            Some(1) => 1,
            Some(_) => 2,
            None => 3,
        };
        if this != 0 {
            eprintln!("process {process} {}", describe_exit(*status));
        }
        code = code.max(this);
    }
    if code == 0 {
        eprintln!("all {processes} processes finished");
    }
    Ok(code)
}

/// What the processes of a local cluster say to their supervisor.
enum ProcessOutput {
    /// A typed message (progress) from standard output.
    Message(usize, ProcessMessage),
    /// A line of standard output that is not a message.
    Unreadable(usize, String, serde_json::Error),
    /// A line of standard error, passed on as it is.
    Line(usize, String),
    /// One of the process's two streams closed.
    Closed,
}

/// Starts the processes of a local cluster, each with its stdout (messages) and stderr
/// (other output) read into the returned channel. The directory holds the hostfile.
fn start_local(
    exe: &Path,
    run_args: &[String],
    processes: usize,
) -> std::io::Result<(
    Vec<Child>,
    crossbeam_channel::Receiver<ProcessOutput>,
    tempfile::TempDir,
)> {
    // Free ports: bind to port 0 and hand each listener to its process (the last one
    // only connects; its port is held until every process has started).
    let listeners = (0..processes)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut listeners = listeners.into_iter();
    let dir = tempfile::tempdir()?;
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(&hostfile, addresses.join("\n") + "\n")?;

    let (tx, rx) = crossbeam_channel::unbounded();
    let mut children: Vec<Child> = Vec::new();
    for process in 0..processes {
        let mut command = Command::new(exe);
        command
            .args(run_args)
            .args([
                "--processes",
                &processes.to_string(),
                "--process",
                &process.to_string(),
            ])
            .arg("--hostfile")
            .arg(&hostfile)
            .env(MESSAGES_ON_STDOUT, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let listener = listeners.next().expect("a listener per process");
        if process + 1 < processes {
            let listener = std::os::fd::OwnedFd::from(listener);
            command.stdin(listener).env(LISTENER_ON_STDIN, "1");
        }
        let spawned = command.spawn();
        drop(command); // the supervisor's copy of the listener
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                for child in &mut children {
                    let _ = child.kill();
                }
                return Err(error);
            }
        };
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        forward_lines(stdout, tx.clone(), move |line| {
            match serde_json::from_str(&line) {
                Ok(message) => ProcessOutput::Message(process, message),
                Err(error) => ProcessOutput::Unreadable(process, line, error),
            }
        });
        forward_lines(stderr, tx.clone(), move |line| {
            ProcessOutput::Line(process, line)
        });
        children.push(child);
    }
    Ok((children, rx, dir))
}

/// Sends each line of `stream` into `tx`, as `wrap` makes it, then [`ProcessOutput::Closed`].
fn forward_lines(
    stream: impl Read + Send + 'static,
    tx: crossbeam_channel::Sender<ProcessOutput>,
    wrap: impl Fn(String) -> ProcessOutput + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(wrap(line));
        }
        let _ = tx.send(ProcessOutput::Closed);
    });
}

/// Shows what the processes say until every one has ended (exit code 1, a finished
/// run with failed dates, lets the others go on; any other failure stops them, killed
/// after [`STOP_GRACE`]). Returns how each ended.
fn supervise(
    children: &mut [Child],
    outputs: &crossbeam_channel::Receiver<ProcessOutput>,
    display: &mut Progress,
) -> std::io::Result<Vec<ExitStatus>> {
    let processes = children.len();
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; processes];
    let mut open_streams = 2 * processes;
    let mut stop_by: Option<Instant> = None;
    while open_streams > 0 || statuses.iter().any(Option::is_none) {
        match outputs.recv_timeout(Duration::from_millis(100)) {
            Ok(ProcessOutput::Message(process, message)) => {
                display.process_message(process, message)
            }
            Ok(ProcessOutput::Unreadable(process, line, error)) => display.message(&format!(
                "process {process} sent a message that is not VizFlow's ({error}): {line}"
            )),
            Ok(ProcessOutput::Line(process, line)) => display.process_output(process, &line),
            Ok(ProcessOutput::Closed) => open_streams -= 1,
            Err(_) => {}
        }
        for (process, child) in children.iter_mut().enumerate() {
            if statuses[process].is_some() {
                continue;
            }
            if let Some(status) = child.try_wait()? {
                statuses[process] = Some(status);
                if !matches!(status.code(), Some(0 | 1)) && stop_by.is_none() {
                    display.message(&format!(
                        "process {process} {}; stopping the others",
                        describe_exit(status)
                    ));
                    stop_by = Some(Instant::now() + STOP_GRACE);
                }
            }
        }
        if stop_by.is_some_and(|t| Instant::now() >= t) {
            for (process, child) in children.iter_mut().enumerate() {
                if statuses[process].is_none() {
                    display.message(&format!(
                        "process {process} did not stop within {} s; killing it",
                        STOP_GRACE.as_secs()
                    ));
                    let _ = child.kill();
                }
            }
            stop_by = None;
        }
    }
    Ok(statuses.into_iter().flatten().collect())
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(1), _) => "exited with code 1 (dates failed)".to_owned(),
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(6)) => "aborted (a panic, or a peer process that stopped)".to_owned(),
        (None, Some(9)) => "was killed (signal 9)".to_owned(),
        (None, Some(signal)) => format!("was stopped by signal {signal}"),
        (None, None) => "stopped".to_owned(),
    }
}
