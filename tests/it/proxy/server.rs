//! The running proxy: its listener, its connections and the [`FaultProxy`]
//! handle a test holds (URL, faults, counts).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::handle::handle;
use super::upstream::HttpClient;
use super::{DEFAULT_SEED, Faults, OpCount, Operation, Service, Upstreams};

/// State shared by the accept loop, every connection and the handle.
pub(super) struct Shared {
    /// `scheme://authority` of each upstream, without a trailing slash.
    pub(super) upstreams: Upstreams,
    pub(super) client: HttpClient,
    pub(super) faults: Arc<Faults>,
    counts: Mutex<BTreeMap<String, OpCount>>,
    raw_targets: Mutex<BTreeSet<String>>,
}

impl Shared {
    /// Names the operation of a request (`unknown` when it names none),
    /// notes its wire target and counts it as seen.
    pub(super) fn recognise(&self, op: Option<Operation>) -> (Service, String) {
        let (service, name) = match op {
            Some(op) => {
                self.raw_targets.lock().unwrap().insert(op.raw);
                (op.service, op.name)
            }
            None => (Service::Other, "unknown".to_owned()),
        };
        self.count(&name, |c| c.seen += 1);
        (service, name)
    }

    /// Bumps one of an operation's counters.
    pub(super) fn count(&self, op: &str, bump: impl FnOnce(&mut OpCount)) {
        bump(
            self.counts
                .lock()
                .unwrap()
                .entry(op.to_owned())
                .or_default(),
        );
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy in front of the local stack as `make test` starts it
    /// (DynamoDB Local, LocalStack's SQS, moto for the rest), routing each
    /// request by its service. Point a relay at it with
    /// [`FaultProxy::endpoint_env`].
    pub async fn for_stack() -> FaultProxy {
        Self::start_routed(Upstreams::from_env(), DEFAULT_SEED).await
    }

    /// Starts a proxy forwarding each service's requests to its upstream.
    pub async fn start_routed(upstreams: Upstreams, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstreams,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            faults: Arc::new(Faults::for_seed(seed)),
            counts: Mutex::default(),
            raw_targets: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FaultProxy {
            port,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL` or `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables that send a relay's every AWS request through the
    /// proxy: `AWS_ENDPOINT_URL` and the per-service ones, which would
    /// otherwise win.
    pub fn endpoint_env(&self) -> [(String, String); 3] {
        [
            ("AWS_ENDPOINT_URL".to_owned(), self.url()),
            ("AWS_ENDPOINT_URL_SQS".to_owned(), self.url()),
            ("AWS_ENDPOINT_URL_DYNAMODB".to_owned(), self.url()),
        ]
    }

    /// The shared fault settings; changes apply to the next request.
    pub fn faults(&self) -> Arc<Faults> {
        self.shared.faults.clone()
    }

    /// Requests per operation name (`SendMessageBatch`, `UpdateItem`, …;
    /// `unknown` for requests naming no operation) since the start or the
    /// last [`FaultProxy::reset_counts`].
    pub fn counts(&self) -> BTreeMap<String, OpCount> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// The count of one operation (zero if never seen).
    pub fn count(&self, op: &str) -> OpCount {
        self.shared
            .counts
            .lock()
            .unwrap()
            .get(op)
            .copied()
            .unwrap_or_default()
    }

    /// Zeroes the counters (e.g. after a benchmark's set-up).
    pub fn reset_counts(&self) {
        self.shared.counts.lock().unwrap().clear();
    }

    /// Every distinct `X-Amz-Target` (or `Action=…`) seen, to check which
    /// wire protocol the SDK speaks.
    pub fn raw_targets(&self) -> BTreeSet<String> {
        self.shared.raw_targets.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the task drops the listener and the JoinSet, which aborts
        // every connection task in turn.
        self.accept.abort();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url())
            .field("upstreams", &self.shared.upstreams)
            .field("plan", &self.shared.faults.plan())
            .finish()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, shared.clone()));
                }
                // Out of file descriptors or the like: back off, don't spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow for ever.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Per-connection handle for [`AmbiguousMode::Reset`]: a duplicate of the
/// socket's file descriptor. `SO_LINGER` is a property of the socket, not
/// of the descriptor, so setting it to zero through the duplicate makes
/// hyper's own close of the connection an abortive one (RST).
pub(super) struct ConnCtl {
    dup: Mutex<Option<std::net::TcpStream>>,
}

impl ConnCtl {
    /// Makes the connection's coming close an abortive one (RST).
    pub(super) fn arm_reset(&self) {
        if let Some(dup) = self.dup.lock().unwrap().take() {
            let _ = TcpSocket::from_std_stream(dup).set_zero_linger();
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (stream, dup) = match stream.into_std() {
        Ok(std_stream) => {
            let dup = std_stream.try_clone().ok();
            match TcpStream::from_std(std_stream) {
                Ok(stream) => (stream, dup),
                Err(_) => return,
            }
        }
        Err(_) => return,
    };
    let ctl = Arc::new(ConnCtl {
        dup: Mutex::new(dup),
    });
    let service = service_fn(move |req| handle(shared.clone(), ctl.clone(), req));
    // An error here is mostly our own `Abort`: hyper then drops the
    // connection without writing a response, which is the point.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The service's error: makes hyper drop the connection without replying.
#[derive(Debug)]
pub(super) struct Abort(pub(super) &'static str);

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault proxy aborted the connection: {}", self.0)
    }
}

impl std::error::Error for Abort {}
