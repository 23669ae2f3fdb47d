//! One request's fate: counted, delayed, then refused with a made-up AWS
//! error, partly failed, forwarded, or forwarded with its answer lost, as
//! the fault plan draws it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::aws_replies::{all_unprocessed, ddb_error, full, sqs_error};
use super::batch::fail_some_entries;
use super::lost_reply::{draw_loss, lose};
use super::operation::is_ddb_write;
use super::server::{Abort, ConnCtl, Shared};
use super::upstream::forward;
use super::{BoxError, FaultPlan, ProxyBody, Service, classify};

/// Serves one request of a connection.
pub(super) async fn handle(
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
    let (service, name) = shared.recognise(classify(&parts.headers, parts.uri.query(), &body));

    let plan = shared.faults.plan();
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    if let Some(refusal) = refusal(&shared, &plan, service, &name, &body) {
        shared.count(&name, |c| c.faulted += 1);
        return Ok(refusal);
    }
    if service == Service::Sqs && name == "SendMessageBatch" && plan.entry_failure_rate > 0.0 {
        return fail_some_entries(&shared, &parts, body, &plan).await;
    }
    let loss = draw_loss(&shared.faults, &plan, service, &name, &body);

    let target = shared.upstreams.of(service);
    let upstream = match forward(&shared.client, target, &parts, body).await {
        Ok(response) => response,
        Err(e) => return Ok(bad_gateway(target, e)),
    };
    shared.count(&name, |c| c.forwarded += 1);
    let Some(loss) = loss else {
        return Ok(upstream.map(full));
    };
    // The upstream has acted and answered; now lose the answer.
    shared.count(&name, |c| c.faulted += 1);
    lose(loss, upstream, &ctl)
}

/// The answer the proxy gives itself, without forwarding, if the plan
/// draws one: DynamoDB throttling or a 500 on a write, `BatchWriteItem`
/// processing nothing, SQS throttling a batch. Drawn in that order, each
/// only for the requests it applies to.
fn refusal(
    shared: &Shared,
    plan: &FaultPlan,
    service: Service,
    name: &str,
    body: &[u8],
) -> Option<Response<ProxyBody>> {
    let roll = |rate| shared.faults.roll(rate);
    if service == Service::DynamoDb && is_ddb_write(name) {
        if roll(plan.ddb_throttle_rate) {
            let kind = "ProvisionedThroughputExceededException";
            return Some(ddb_error(StatusCode::BAD_REQUEST, kind, "Rate exceeded"));
        }
        if roll(plan.ddb_error_rate) {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            return Some(ddb_error(status, "InternalServerError", "injected"));
        }
    }
    if name == "BatchWriteItem" && roll(plan.batch_unprocessed_rate) {
        return Some(all_unprocessed(body));
    }
    if service == Service::Sqs && name == "SendMessageBatch" && roll(plan.sqs_throttle_rate) {
        return Some(sqs_error(plan.sqs_throttle_code, "Rate exceeded"));
    }
    None
}

/// The upstream is down or broke the connection: say so plainly, so that a
/// test does not mistake it for an injected fault.
fn bad_gateway(target: &str, e: BoxError) -> Response<ProxyBody> {
    let text = format!("fault proxy: upstream {target} failed: {e}");
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
