//! A loopback HTTP fault-injection proxy for the tests: it sits between the
//! relay's AWS SDK clients and moto and makes the network misbehave on
//! purpose.
//!
//! Point `AWS_ENDPOINT_URL` (or a client's `endpoint_url`) at
//! [`FaultProxy::url`]; every HTTP/1.1 request is forwarded unchanged
//! (method, path, query, headers including `Host`, body) to the upstream and
//! the answer sent back, unless the current [`FaultPlan`] says otherwise:
//!
//! - **ambiguous sends**: a `SendMessage` / `SendMessageBatch` is forwarded,
//!   moto enqueues it and answers, and then the client gets no usable answer
//!   (connection closed, reset, or a truncated body; see [`AmbiguousMode`]).
//!   This is the "timeout after SQS accepted" row of docs/design.md's crash table.
//! - **DynamoDB throttling / 500s**: a write (`PutItem`, `UpdateItem`,
//!   `DeleteItem`, `TransactWriteItems`, `BatchWriteItem`) is answered by the
//!   proxy itself, never forwarded, with the error body DynamoDB would send.
//! - **latency**: a delay before every request, faulted or not.
//!
//! The plan lives behind a shared [`Faults`] handle, so a test can switch
//! faults on, heal them and watch the per-operation [`OpCount`]s while the
//! relay runs. Randomness comes from a seeded splitmix64 generator, so a
//! failing run reproduces with the same seed (as far as the order of
//! concurrent requests repeats).
//!
//! The proxy lives in the test's tokio runtime; dropping [`FaultProxy`]
//! aborts the accept loop, whose [`JoinSet`] aborts every connection task
//! with it: no threads, processes or sockets outlive it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Seed of [`FaultProxy::start`]; use [`FaultProxy::start_with_seed`] or
/// [`Faults::reseed`] to vary it.
pub const DEFAULT_SEED: u64 = 0x5EED_F00D_FA17;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// How an ambiguous send fails on the client side after moto has accepted
/// it. The SDK reports each differently (dispatch failure vs. response
/// error), so the relay should be tested against all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AmbiguousMode {
    /// Close the connection (FIN) without writing a response.
    #[default]
    Close,
    /// Abort the connection (RST, via `SO_LINGER` 0) without a response.
    Reset,
    /// Send moto's status and headers and half of the body, then close:
    /// the client reads a 200 whose body ends early.
    Truncate,
}

/// What the proxy does to the traffic; every rate is a probability in
/// `0.0..=1.0` per request, drawn independently.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// `SendMessage` / `SendMessageBatch`: forward, then fail the reply.
    pub ambiguous_send_rate: f64,
    /// How the reply of an ambiguous send fails.
    pub ambiguous_mode: AmbiguousMode,
    /// DynamoDB writes: answer 400 `ProvisionedThroughputExceededException`
    /// without forwarding.
    pub ddb_throttle_rate: f64,
    /// DynamoDB writes: answer 500 `InternalServerError` without forwarding
    /// (drawn after the throttle, for the writes that were not throttled).
    pub ddb_error_rate: f64,
    /// Added before every request is handled.
    pub latency: Duration,
    /// Ledger claims (`UpdateItem` with the claim condition): forward, let
    /// DynamoDB apply it, then lose the reply (connection closed).
    pub claim_reply_lost_rate: f64,
    /// Ledger marks (fenced `UpdateItem`, `BatchWriteItem`): likewise.
    pub mark_reply_lost_rate: f64,
    /// `BatchWriteItem`: answered by the proxy with every item in
    /// `UnprocessedItems`, without forwarding (DynamoDB's partial answer).
    pub batch_unprocessed_rate: f64,
    /// `SendMessageBatch` entries: each, drawn alone, left out of the
    /// forwarded request and listed `Failed` in the reply with
    /// [`FaultPlan::entry_failure`].
    pub entry_failure_rate: f64,
    /// What a failed entry says.
    pub entry_failure: EntryFailure,
    /// `SendMessageBatch`: answered 400 with [`FaultPlan::sqs_throttle_code`]
    /// without forwarding.
    pub sqs_throttle_rate: f64,
    /// `ThrottlingException` or `RequestThrottled` (SQS says either).
    pub sqs_throttle_code: &'static str,
}

/// A per-entry failure of `SendMessageBatch`, as SQS reports one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryFailure {
    pub code: &'static str,
    /// SQS's `SenderFault`: true blames the message (only then may a row be
    /// quarantined, and not for throttling or KMS); false is SQS's own fault.
    pub sender_fault: bool,
}

impl Default for EntryFailure {
    fn default() -> Self {
        EntryFailure {
            code: "InternalError",
            sender_fault: false,
        }
    }
}

/// The runtime-adjustable fault settings of one proxy, shared with tests.
pub struct Faults {
    plan: Mutex<FaultPlan>,
    /// splitmix64 state: one atomic add per draw, so concurrent connections
    /// need no lock and a given sequence of draws is fixed by the seed.
    rng: AtomicU64,
}

impl Faults {
    /// A handle with no faults, its random sequence seeded by `seed` (the
    /// proxy makes its own; this is for testing the draws themselves).
    pub fn for_seed(seed: u64) -> Self {
        Faults {
            plan: Mutex::new(FaultPlan::default()),
            rng: AtomicU64::new(seed),
        }
    }

    /// The current plan.
    pub fn plan(&self) -> FaultPlan {
        self.plan.lock().unwrap().clone()
    }

    /// Replaces the whole plan.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock().unwrap() = plan;
    }

    /// Changes the plan in place, e.g. `faults.update(|p| p.ddb_error_rate = 0.1)`.
    pub fn update(&self, change: impl FnOnce(&mut FaultPlan)) {
        change(&mut self.plan.lock().unwrap());
    }

    pub fn set_ambiguous_send_rate(&self, rate: f64) {
        self.update(|p| p.ambiguous_send_rate = rate);
    }

    pub fn set_ambiguous_mode(&self, mode: AmbiguousMode) {
        self.update(|p| p.ambiguous_mode = mode);
    }

    pub fn set_ddb_throttle_rate(&self, rate: f64) {
        self.update(|p| p.ddb_throttle_rate = rate);
    }

    pub fn set_ddb_error_rate(&self, rate: f64) {
        self.update(|p| p.ddb_error_rate = rate);
    }

    pub fn set_latency(&self, latency: Duration) {
        self.update(|p| p.latency = latency);
    }

    /// Turns every fault and the latency off (the "heal" step before a
    /// test drains and checks).
    pub fn heal(&self) {
        self.set_plan(FaultPlan::default());
    }

    /// Draws once: true with probability `rate`. Rates of 0 and 1 draw
    /// nothing, so switching one fault on or off leaves the sequence of the
    /// others unchanged.
    pub fn roll(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < rate
    }

    fn next_u64(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Requests of one operation as the proxy saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCount {
    /// Requests received (each SDK retry counts again).
    pub seen: u64,
    /// Requests forwarded to the upstream and answered by it.
    pub forwarded: u64,
    /// Requests given a fault: throttled or failed without forwarding, or
    /// forwarded and then made ambiguous (those count in `forwarded` too).
    pub faulted: u64,
}

/// The AWS service a request is for, as far as the proxy needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sqs,
    DynamoDb,
    Other,
}

/// An AWS operation recognised in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub service: Service,
    /// The bare operation name, e.g. `SendMessageBatch`; the key of
    /// [`FaultProxy::counts`].
    pub name: String,
    /// What it was recognised by: the `X-Amz-Target` value
    /// (`AmazonSQS.SendMessage`) or `Action=SendMessage` (query protocol).
    pub raw: String,
}

/// Recognises the AWS operation of a request. The JSON protocols (awsJson1_0,
/// which the Rust SDK uses for both SQS and DynamoDB) name it in
/// `X-Amz-Target: <service prefix>.<Operation>`; the older query protocol
/// names it in an `Action=` field of the form body or the query string.
pub fn classify(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Option<Operation> {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, name) = target.rsplit_once('.')?;
        let service = if prefix == "AmazonSQS" {
            Service::Sqs
        } else if prefix.starts_with("DynamoDB_") {
            Service::DynamoDb
        } else {
            Service::Other
        };
        return Some(Operation {
            service,
            name: name.to_owned(),
            raw: target.to_owned(),
        });
    }
    let action = |form: &[u8]| {
        form.split(|&b| b == b'&')
            .find_map(|pair| pair.strip_prefix(b"Action="))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let name = query
        .and_then(|q| action(q.as_bytes()))
        .or_else(|| action(body))?;
    // Of the services here only SQS ever spoke the query protocol.
    Some(Operation {
        service: Service::Sqs,
        raw: format!("Action={name}"),
        name,
    })
}

fn is_ddb_write(name: &str) -> bool {
    matches!(
        name,
        "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem"
    )
}

/// Which ledger write a DynamoDB request is: the relay's marks are the
/// owner-fenced `UpdateItem` and `BatchWriteItem`; every other conditional
/// `UpdateItem` is a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LedgerWrite {
    Claim,
    Mark,
}

fn ledger_write(name: &str, body: &[u8]) -> Option<LedgerWrite> {
    let text = std::str::from_utf8(body).unwrap_or_default();
    match name {
        "BatchWriteItem" => Some(LedgerWrite::Mark),
        // The claim's update sets `#o = :me` too; only the mark is
        // conditioned on it.
        "UpdateItem" if text.contains(r##""ConditionExpression":"#o = :me"##) => {
            Some(LedgerWrite::Mark)
        }
        "UpdateItem" if text.contains("ConditionExpression") => Some(LedgerWrite::Claim),
        _ => None,
    }
}

fn is_sqs_send(name: &str) -> bool {
    matches!(name, "SendMessage" | "SendMessageBatch")
}

/// Where the proxy forwards each service's requests.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub sqs: String,
    pub dynamodb: String,
    /// Every other service (Secrets Manager).
    pub other: String,
}

impl Upstreams {
    /// The stack's endpoints, as the SDK reads them: the per-service
    /// variable when it is set, else `AWS_ENDPOINT_URL`.
    pub fn from_env() -> Upstreams {
        let main = std::env::var("AWS_ENDPOINT_URL")
            .expect("AWS_ENDPOINT_URL is not set: run the tests with `make test`");
        let of = |var: &str| plain_http(&std::env::var(var).unwrap_or_else(|_| main.clone()));
        Upstreams {
            sqs: of("AWS_ENDPOINT_URL_SQS"),
            dynamodb: of("AWS_ENDPOINT_URL_DYNAMODB"),
            other: plain_http(&main),
        }
    }

    fn of(&self, service: Service) -> &str {
        match service {
            Service::Sqs => &self.sqs,
            Service::DynamoDb => &self.dynamodb,
            Service::Other => &self.other,
        }
    }
}

fn plain_http(url: &str) -> String {
    let url = url.trim_end_matches('/').to_owned();
    assert!(
        url.starts_with("http://"),
        "the fault proxy forwards plain HTTP only, got {url}"
    );
    url
}

/// State shared by the accept loop, every connection and the handle.
struct Shared {
    /// `scheme://authority` of each upstream, without a trailing slash.
    upstreams: Upstreams,
    client: Client<HttpConnector, Full<Bytes>>,
    faults: Arc<Faults>,
    counts: Mutex<BTreeMap<String, OpCount>>,
    raw_targets: Mutex<BTreeSet<String>>,
}

impl Shared {
    fn count(&self, op: &str, bump: impl FnOnce(&mut OpCount)) {
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
struct ConnCtl {
    dup: Mutex<Option<std::net::TcpStream>>,
}

impl ConnCtl {
    fn arm_reset(&self) {
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
struct Abort(&'static str);

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault proxy aborted the connection: {}", self.0)
    }
}

impl std::error::Error for Abort {}

async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Abort> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| Abort("reading the request body failed"))?
        .to_bytes();
    let op = classify(&parts.headers, parts.uri.query(), &body);
    let (service, name) = match &op {
        Some(op) => {
            shared.raw_targets.lock().unwrap().insert(op.raw.clone());
            (op.service, op.name.as_str())
        }
        None => (Service::Other, "unknown"),
    };
    shared.count(name, |c| c.seen += 1);

    let plan = shared.faults.plan();
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }

    if service == Service::DynamoDb && is_ddb_write(name) {
        let injected = if shared.faults.roll(plan.ddb_throttle_rate) {
            Some((
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                "Rate exceeded",
            ))
        } else if shared.faults.roll(plan.ddb_error_rate) {
            Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "injected",
            ))
        } else {
            None
        };
        if let Some((status, kind, message)) = injected {
            shared.count(name, |c| c.faulted += 1);
            return Ok(ddb_error(status, kind, message));
        }
    }
    if name == "BatchWriteItem" && shared.faults.roll(plan.batch_unprocessed_rate) {
        shared.count(name, |c| c.faulted += 1);
        return Ok(all_unprocessed(&body));
    }
    if service == Service::Sqs && name == "SendMessageBatch" {
        if shared.faults.roll(plan.sqs_throttle_rate) {
            shared.count(name, |c| c.faulted += 1);
            return Ok(sqs_error(plan.sqs_throttle_code, "Rate exceeded"));
        }
        if plan.entry_failure_rate > 0.0 {
            return fail_some_entries(&shared, &parts, body, &plan).await;
        }
    }
    let reply_lost = match ledger_write(name, &body) {
        Some(LedgerWrite::Claim) => shared.faults.roll(plan.claim_reply_lost_rate),
        Some(LedgerWrite::Mark) => shared.faults.roll(plan.mark_reply_lost_rate),
        None => false,
    };
    let ambiguous = reply_lost
        || (service == Service::Sqs
            && is_sqs_send(name)
            && shared.faults.roll(plan.ambiguous_send_rate));

    let target = shared.upstreams.of(service);
    let upstream = match forward(&shared, target, &parts, body).await {
        Ok(response) => response,
        Err(e) => {
            // The upstream is down or broke the connection: say so plainly,
            // the test should not mistake it for an injected fault.
            let text = format!("fault proxy: upstream {target} failed: {e}");
            let mut response = Response::new(full(Bytes::from(text)));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            return Ok(response);
        }
    };
    shared.count(name, |c| c.forwarded += 1);
    if !ambiguous {
        return Ok(upstream.map(full));
    }

    // The upstream has acted and answered; now lose the answer.
    shared.count(name, |c| c.faulted += 1);
    if reply_lost {
        return Err(Abort("reply lost"));
    }
    match plan.ambiguous_mode {
        AmbiguousMode::Close => Err(Abort("ambiguous send")),
        AmbiguousMode::Reset => {
            ctl.arm_reset();
            Err(Abort("ambiguous send"))
        }
        AmbiguousMode::Truncate => {
            let (mut head, body) = upstream.into_parts();
            if body.is_empty() {
                return Err(Abort("ambiguous send"));
            }
            // Announce the whole length, deliver half: the client reads a
            // complete status line and headers, then an early EOF.
            head.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
            let half = body.slice(..body.len() / 2);
            Ok(Response::from_parts(head, TruncatedBody::new(half).boxed()))
        }
    }
}

/// Sends the request on to the upstream and reads the whole answer, so that
/// by the time the proxy decides what the client sees, moto has acted.
async fn forward(
    shared: &Shared,
    upstream: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Bytes>, BoxError> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{upstream}{path}"))
        .body(Full::new(body))?;
    // The Host header is kept as the client sent it (the proxy's address):
    // it is part of the SigV4 signature, and moto does not mind which host
    // it is (it does not verify signatures, and names queues by the path).
    *out.headers_mut() = parts.headers.clone();
    strip_hop_by_hop(out.headers_mut());
    let response = shared.client.request(out).await?;
    let (mut head, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    strip_hop_by_hop(&mut head.headers);
    // The body is re-sent whole; let hyper set the length it really has.
    head.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(head, body))
}

/// Connection-level headers belong to one hop; the proxy frames its own.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    for name in HOP {
        headers.remove(HeaderName::from_static(name));
    }
}

/// `SendMessageBatch` with some entries failed on purpose: those are left
/// out of the forwarded request and listed `Failed` in SQS's reply, so SQS
/// never sees them; the others go through as usual.
async fn fail_some_entries(
    shared: &Shared,
    parts: &hyper::http::request::Parts,
    body: Bytes,
    plan: &FaultPlan,
) -> Result<Response<ProxyBody>, Abort> {
    let mut request: serde_json::Value =
        serde_json::from_slice(&body).map_err(|_| Abort("SendMessageBatch body is not JSON"))?;
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    let (failed, kept): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|_| shared.faults.roll(plan.entry_failure_rate));
    let failed: Vec<serde_json::Value> = failed
        .iter()
        .map(|e| {
            serde_json::json!({
                "Id": e["Id"],
                "Code": plan.entry_failure.code,
                "Message": "injected by the fault proxy",
                "SenderFault": plan.entry_failure.sender_fault,
            })
        })
        .collect();
    if !failed.is_empty() {
        shared.count("SendMessageBatch", |c| c.faulted += 1);
    }
    let mut reply = if kept.is_empty() {
        serde_json::json!({ "Successful": [] })
    } else {
        request["Entries"] = serde_json::Value::Array(kept);
        let body = Bytes::from(request.to_string());
        let mut parts = parts.clone();
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
        let target = shared.upstreams.of(Service::Sqs);
        let upstream = forward(shared, target, &parts, body)
            .await
            .map_err(|_| Abort("upstream failed"))?;
        shared.count("SendMessageBatch", |c| c.forwarded += 1);
        if !upstream.status().is_success() {
            return Ok(upstream.map(full));
        }
        serde_json::from_slice(upstream.body()).map_err(|_| Abort("SQS reply is not JSON"))?
    };
    let mut all_failed = reply["Failed"].as_array().cloned().unwrap_or_default();
    all_failed.extend(failed);
    reply["Failed"] = serde_json::Value::Array(all_failed);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string())
        .body(full(Bytes::from(reply.to_string())))
        .expect("a valid response"))
}

/// `BatchWriteItem`'s answer when DynamoDB processed none of the items.
fn all_unprocessed(body: &[u8]) -> Response<ProxyBody> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let reply = serde_json::json!({ "UnprocessedItems": request["RequestItems"] });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string())
        .body(full(Bytes::from(reply.to_string())))
        .expect("a valid response")
}

/// SQS's error shape in its JSON protocol: the code in `__type` and, for
/// clients of the older query protocol, in `x-amzn-query-error`.
fn sqs_error(code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.sqs#{code}"),
        "message": message,
    })
    .to_string();
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amzn-query-error", format!("{code};Sender"))
        .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string())
        .body(full(Bytes::from(body)))
        .expect("a valid error response")
}

/// DynamoDB's error shape for the awsJson1_0 protocol: the SDK reads the
/// code from `x-amzn-ErrorType` (or `__type`) and decides retries from it.
fn ddb_error(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    })
    .to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amzn-ErrorType", kind)
        .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string())
        .body(full(Bytes::from(body)))
        .expect("a valid error response")
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A body that yields its data, waits long enough for hyper to flush it,
/// then fails, which makes hyper close the connection mid-body. Failing at
/// once would let hyper drop the buffered bytes unsent: that would be
/// [`AmbiguousMode::Close`] again.
struct TruncatedBody {
    data: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl TruncatedBody {
    fn new(data: Bytes) -> Self {
        TruncatedBody {
            data: Some(data),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(20))),
        }
    }
}

impl hyper::body::Body for TruncatedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Abort("truncated response"))))),
        }
    }
}
