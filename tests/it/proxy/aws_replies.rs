//! The answers the proxy makes up instead of forwarding, shaped as the AWS
//! service would send them, so the SDK parses and retries them as it would
//! the real ones.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header;
use hyper::{Response, StatusCode};

use super::ProxyBody;

/// A whole body of these bytes.
pub(super) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An awsJson1_0 answer: `status`, `json` as the body, a fresh request id
/// and the `extra` headers (the error codes some clients read there).
pub(super) fn json_reply(
    status: StatusCode,
    json: &serde_json::Value,
    extra: &[(&str, String)],
) -> Response<ProxyBody> {
    let mut reply = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.0")
        .header("x-amzn-RequestId", uuid::Uuid::new_v4().to_string());
    for (name, value) in extra {
        reply = reply.header(*name, value);
    }
    reply
        .body(full(Bytes::from(json.to_string())))
        .expect("a valid response")
}

/// `BatchWriteItem`'s answer when DynamoDB processed none of the items.
pub(super) fn all_unprocessed(body: &[u8]) -> Response<ProxyBody> {
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let reply = serde_json::json!({ "UnprocessedItems": request["RequestItems"] });
    json_reply(StatusCode::OK, &reply, &[])
}

/// SQS's error shape in its JSON protocol: the code in `__type` and, for
/// clients of the older query protocol, in `x-amzn-query-error`.
pub(super) fn sqs_error(code: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.sqs#{code}"),
        "message": message,
    });
    let query_error = ("x-amzn-query-error", format!("{code};Sender"));
    json_reply(StatusCode::BAD_REQUEST, &body, &[query_error])
}

/// DynamoDB's error shape for the awsJson1_0 protocol: the SDK reads the
/// code from `x-amzn-ErrorType` (or `__type`) and decides retries from it.
pub(super) fn ddb_error(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    json_reply(status, &body, &[("x-amzn-ErrorType", kind.to_owned())])
}
