//! Partial failures of `SendMessageBatch`: some entries fail, the others
//! go through, as SQS reports a batch it accepted only in part.

use bytes::Bytes;
use hyper::Response;
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use serde_json::{Value, json};

use super::aws_replies::{full, json_reply};
use super::server::{Abort, Shared};
use super::upstream::forward;
use super::{FaultPlan, ProxyBody, Service};

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

/// `SendMessageBatch` with some entries failed on purpose: those are left
/// out of the forwarded request and listed `Failed` in SQS's reply, so SQS
/// never sees them; the others go through as usual.
pub(super) async fn fail_some_entries(
    shared: &Shared,
    parts: &Parts,
    body: Bytes,
    plan: &FaultPlan,
) -> Result<Response<ProxyBody>, Abort> {
    let mut request: Value =
        serde_json::from_slice(&body).map_err(|_| Abort("SendMessageBatch body is not JSON"))?;
    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
    let (failed, kept): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|_| shared.faults.roll(plan.entry_failure_rate));
    if !failed.is_empty() {
        shared.count("SendMessageBatch", |c| c.faulted += 1);
    }
    let mut reply = if kept.is_empty() {
        json!({ "Successful": [] })
    } else {
        request["Entries"] = Value::Array(kept);
        match send_kept(shared, parts, &request).await? {
            Ok(reply) => reply,
            // SQS refused the whole batch: pass its answer on as it is.
            Err(refused) => return Ok(refused),
        }
    };
    let mut all_failed = reply["Failed"].as_array().cloned().unwrap_or_default();
    all_failed.extend(failed.iter().map(|e| failed_entry(e, plan)));
    reply["Failed"] = Value::Array(all_failed);
    Ok(json_reply(StatusCode::OK, &reply, &[]))
}

/// An entry of the reply's `Failed` list, as SQS words one.
fn failed_entry(entry: &Value, plan: &FaultPlan) -> Value {
    json!({
        "Id": entry["Id"],
        "Code": plan.entry_failure.code,
        "Message": "injected by the fault proxy",
        "SenderFault": plan.entry_failure.sender_fault,
    })
}

/// Forwards the batch of the entries kept: SQS's JSON reply, or its
/// unsuccessful answer as a response to pass on.
async fn send_kept(
    shared: &Shared,
    parts: &Parts,
    request: &Value,
) -> Result<Result<Value, Response<ProxyBody>>, Abort> {
    let body = Bytes::from(request.to_string());
    let mut parts = parts.clone();
    // The body shrank by the entries left out.
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    let target = shared.upstreams.of(Service::Sqs);
    let upstream = forward(&shared.client, target, &parts, body)
        .await
        .map_err(|_| Abort("upstream failed"))?;
    shared.count("SendMessageBatch", |c| c.forwarded += 1);
    if !upstream.status().is_success() {
        return Ok(Err(upstream.map(full)));
    }
    serde_json::from_slice(upstream.body())
        .map(Ok)
        .map_err(|_| Abort("SQS reply is not JSON"))
}
