//! Answers that never arrive whole: the upstream has acted, and the client
//! is left not knowing it (the ambiguous sends and the lost ledger
//! replies of the fault plan).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};

use super::operation::{LedgerWrite, is_sqs_send, ledger_write};
use super::server::{Abort, ConnCtl};
use super::{AmbiguousMode, BoxError, FaultPlan, Faults, ProxyBody, Service};

/// How the answer to a forwarded request is to be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loss {
    /// A ledger write's answer: the connection closes.
    Reply,
    /// A send's answer, the plan's way.
    Send(AmbiguousMode),
}

/// Draws whether the answer to this request will be lost. The ledger's
/// draw comes first and an ambiguous send is drawn only when it missed,
/// so the sequence of draws is the same for a given plan and seed.
pub(super) fn draw_loss(
    faults: &Faults,
    plan: &FaultPlan,
    service: Service,
    name: &str,
    body: &[u8],
) -> Option<Loss> {
    let reply_lost = match ledger_write(name, body) {
        Some(LedgerWrite::Claim) => faults.roll(plan.claim_reply_lost_rate),
        Some(LedgerWrite::Mark) => faults.roll(plan.mark_reply_lost_rate),
        None => false,
    };
    if reply_lost {
        return Some(Loss::Reply);
    }
    let ambiguous =
        service == Service::Sqs && is_sqs_send(name) && faults.roll(plan.ambiguous_send_rate);
    ambiguous.then_some(Loss::Send(plan.ambiguous_mode))
}

/// Loses `upstream`'s answer as `loss` says: an `Err` makes hyper drop the
/// connection without replying.
pub(super) fn lose(
    loss: Loss,
    upstream: Response<Bytes>,
    ctl: &ConnCtl,
) -> Result<Response<ProxyBody>, Abort> {
    match loss {
        Loss::Reply => Err(Abort("reply lost")),
        Loss::Send(AmbiguousMode::Close) => Err(Abort("ambiguous send")),
        Loss::Send(AmbiguousMode::Reset) => {
            ctl.arm_reset();
            Err(Abort("ambiguous send"))
        }
        Loss::Send(AmbiguousMode::Truncate) => {
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
