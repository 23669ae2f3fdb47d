//! A loopback HTTP fault-injection proxy for the tests: it sits between the
//! relay's AWS SDK clients and the local stack and makes the network
//! misbehave on purpose.
//!
//! Point `AWS_ENDPOINT_URL` (or a client's `endpoint_url`) at
//! [`FaultProxy::url`]; every HTTP/1.1 request is forwarded unchanged
//! (method, path, query, headers including `Host`, body) to the upstream and
//! the answer sent back, unless the current [`FaultPlan`] says otherwise:
//!
//! - **ambiguous sends**: a `SendMessage` / `SendMessageBatch` is forwarded,
//!   the queue enqueues it and answers, and then the client gets no usable
//!   answer (connection closed, reset, or a truncated body; see
//!   [`AmbiguousMode`]). This is the "timeout after SQS accepted" row of
//!   docs/design.md's crash table.
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
//! aborts the accept loop, whose `JoinSet` aborts every connection task
//! with it: no threads, processes or sockets outlive it.
//!
//! The parts: [`plan`] (what to break, and the dice), [`operation`] (which
//! AWS call a request is), [`server`] (the listener and the handle tests
//! hold), [`handle`] (one request's fate), [`upstream`] (forwarding),
//! [`aws_replies`] (the answers the proxy makes up), [`batch`] (partial
//! `SendMessageBatch` failures) and [`lost_reply`] (answers that never
//! arrive whole).

mod aws_replies;
mod batch;
mod handle;
mod lost_reply;
mod operation;
mod plan;
mod server;
mod upstream;

pub use batch::EntryFailure;
pub use operation::{Operation, Service, classify};
pub use plan::{AmbiguousMode, DEFAULT_SEED, FaultPlan, Faults};
pub use server::FaultProxy;
pub use upstream::Upstreams;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Any error of hyper, the HTTP client or a body, boxed.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every answer the proxy gives: the upstream's bytes, made-up
/// JSON, or a body cut short.
type ProxyBody = BoxBody<Bytes, BoxError>;

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
