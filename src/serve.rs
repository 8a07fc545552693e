//! `--serve ADDR`: TCP subscribers (DESIGN.md §5).
//!
//! A client sends one line, `{"subscribe":["recs"],"snapshot":true}` (optionally
//! `"format":"upsert"`), and then reads the current state of those views as `diff:1` rows at
//! the current time, followed by live changes and progress lines. Every subscriber has a
//! bounded queue; the output thread never blocks on one: a subscriber whose queue is full is
//! dropped and told why in a last error line.

use crate::output::Format;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use intentflow_dataflows::ViewName;
use serde::Deserialize;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A chunk of output lines shared by every subscriber that receives it.
pub type Chunk = Arc<str>;

/// A subscription the output thread has yet to start.
pub struct SubscribeRequest {
    pub views: Vec<ViewName>,
    pub snapshot: bool,
    pub format: Format,
    pub queue: Sender<Chunk>,
    pub dropped: Arc<AtomicBool>,
}

/// A live subscription, owned by the output thread.
pub struct Subscriber {
    pub views: Vec<ViewName>,
    pub format: Format,
    queue: Sender<Chunk>,
    dropped: Arc<AtomicBool>,
}

impl Subscriber {
    pub fn new(request: SubscribeRequest) -> Self {
        Subscriber {
            views: request.views,
            format: request.format,
            queue: request.queue,
            dropped: request.dropped,
        }
    }

    pub fn wants(&self, view: ViewName) -> bool {
        self.views.contains(&view)
    }

    /// Queues a chunk; false if the subscriber is gone or too slow (and now dropped).
    pub fn offer(&self, chunk: &Chunk) -> bool {
        match self.queue.try_send(Arc::clone(chunk)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.dropped.store(true, Ordering::Release);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeLine {
    subscribe: Vec<String>,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    format: Option<String>,
}

/// Counts subscriber connections that still have queued output to write, so that the
/// process can let them finish (up to a deadline) before it exits: a subscriber must see the
/// final `{"progress":null}` just as stdout does.
#[derive(Default)]
pub struct Forwarders {
    active: Mutex<usize>,
    idle: Condvar,
}

impl Forwarders {
    fn enter(self: &Arc<Self>) -> ForwarderGuard {
        *self.active.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        ForwarderGuard(Arc::clone(self))
    }

    /// Waits until every subscriber has written its queue out, or `limit` has passed;
    /// returns how many were still writing.
    pub fn wait_idle(&self, limit: Duration) -> usize {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let (active, _) = self
            .idle
            .wait_timeout_while(active, limit, |active| *active > 0)
            .unwrap_or_else(|e| e.into_inner());
        *active
    }
}

struct ForwarderGuard(Arc<Forwarders>);

impl Drop for ForwarderGuard {
    fn drop(&mut self) {
        let mut active = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        *active -= 1;
        if *active == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Listens on `addr` and forwards every valid subscription to `requests`.
pub fn spawn_server(
    addr: &str,
    maintained: Vec<ViewName>,
    queue_capacity: usize,
    requests: Sender<SubscribeRequest>,
) -> Result<(std::net::SocketAddr, Arc<Forwarders>), String> {
    let listener = TcpListener::bind(addr).map_err(|error| format!("--serve {addr}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    let forwarders = Arc::new(Forwarders::default());
    let tracker = Arc::clone(&forwarders);
    std::thread::Builder::new()
        .name("serve".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let maintained = maintained.clone();
                let requests = requests.clone();
                let tracker = Arc::clone(&tracker);
                let _ = std::thread::Builder::new()
                    .name("subscriber".into())
                    .spawn(move || {
                        serve_client(stream, &maintained, queue_capacity, &requests, &tracker)
                    });
            }
        })
        .map_err(|error| error.to_string())?;
    Ok((local, forwarders))
}

fn error_line(message: &str) -> String {
    format!("{}\n", serde_json::json!({ "error": message }))
}

fn serve_client(
    stream: TcpStream,
    maintained: &[ViewName],
    queue_capacity: usize,
    requests: &Sender<SubscribeRequest>,
    forwarders: &Arc<Forwarders>,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    // A stuck client must not pin this thread forever.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut line = String::new();
    if BufReader::new(stream).take_line(&mut line).is_err() {
        let _ = writer.write_all(error_line("expected one subscribe line").as_bytes());
        return;
    }
    let request = match parse_subscribe(&line, maintained) {
        Ok(request) => request,
        Err(message) => {
            let _ = writer.write_all(error_line(&message).as_bytes());
            return;
        }
    };
    let (queue, chunks) = crossbeam_channel::bounded(queue_capacity);
    let dropped = Arc::new(AtomicBool::new(false));
    let (views, snapshot, format) = request;
    let request = SubscribeRequest {
        views,
        snapshot,
        format,
        queue,
        dropped: Arc::clone(&dropped),
    };
    // Counted before the request is handed over, so that no accepted subscription can be
    // missed by `wait_idle`.
    let _counted = forwarders.enter();
    if requests.send(request).is_err() {
        let _ = writer.write_all(error_line("engine is shutting down").as_bytes());
        return;
    }
    forward(&mut writer, &chunks, &dropped, queue_capacity, &peer);
}

/// Writes queued chunks to the client until the stream ends or the client falls behind.
///
/// What is queued when the forwarder wakes goes out in one write (a time's changes come
/// as one chunk per view, then a progress line), and with Nagle off: a progress line
/// written behind unacknowledged changes would otherwise wait for the client's delayed
/// ACK.
fn forward(
    writer: &mut TcpStream,
    chunks: &Receiver<Chunk>,
    dropped: &AtomicBool,
    capacity: usize,
    peer: &str,
) {
    let _ = writer.set_nodelay(true);
    let mut out = BufWriter::with_capacity(1 << 16, &mut *writer);
    'chunks: while let Ok(first) = chunks.recv() {
        for chunk in std::iter::once(first).chain(chunks.try_iter()) {
            if dropped.load(Ordering::Acquire) {
                break 'chunks;
            }
            if out.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
        if out.flush().is_err() {
            return;
        }
    }
    if out.flush().is_err() {
        return;
    }
    drop(out);
    if dropped.load(Ordering::Acquire) {
        let message =
            format!("subscriber too slow: its queue of {capacity} messages is full; disconnected");
        eprintln!("intentflow: subscriber {peer}: {message}");
        let _ = writer.write_all(error_line(&message).as_bytes());
    }
    let _ = writer.flush();
}

type ParsedRequest = (Vec<ViewName>, bool, Format);

fn parse_subscribe(line: &str, maintained: &[ViewName]) -> Result<ParsedRequest, String> {
    let request: SubscribeLine = serde_json::from_str(line.trim())
        .map_err(|error| format!("bad subscribe line: {error}; expected {{\"subscribe\":[\"view\",...],\"snapshot\":true}}"))?;
    let mut views = Vec::new();
    for name in &request.subscribe {
        let view: ViewName = name.parse()?;
        if !maintained.contains(&view) {
            return Err(format!(
                "view {name:?} is not maintained by this engine (see --views)"
            ));
        }
        views.push(view);
    }
    let format = match request.format.as_deref() {
        None | Some("diff") => Format::Diff,
        Some("upsert") => Format::Upsert,
        Some(other) => return Err(format!("unknown format {other:?} (diff or upsert)")),
    };
    Ok((views, request.snapshot, format))
}

trait TakeLine {
    fn take_line(self, line: &mut String) -> std::io::Result<()>;
}

impl<R: std::io::Read> TakeLine for BufReader<R> {
    /// Reads the subscribe line, refusing to buffer an unbounded one.
    fn take_line(self, line: &mut String) -> std::io::Result<()> {
        let read = std::io::Read::take(self, 64 * 1024).read_line(line)?;
        if read == 0 || !line.ends_with('\n') {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_line_is_validated() {
        let maintained = [ViewName::Sessions, ViewName::Scores];
        let (views, snapshot, format) =
            parse_subscribe(r#"{"subscribe":["scores"],"snapshot":true}"#, &maintained).unwrap();
        assert_eq!(views, vec![ViewName::Scores]);
        assert!(snapshot);
        assert_eq!(format, Format::Diff);
        let error = parse_subscribe(r#"{"subscribe":["recs"]}"#, &[ViewName::Scores]).unwrap_err();
        assert!(error.contains("recs"), "{error}");
        assert!(parse_subscribe("hello", &maintained).is_err());
    }
}
