//! Which AWS operation a request is, as far as the proxy needs to know to
//! pick its faults.

use hyper::header::HeaderMap;

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

/// The DynamoDB writes that throttling and 500s apply to (reads pass).
pub(super) fn is_ddb_write(name: &str) -> bool {
    matches!(
        name,
        "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem"
    )
}

/// Which ledger write a DynamoDB request is: the relay's marks are the
/// owner-fenced `UpdateItem` and `BatchWriteItem`; every other conditional
/// `UpdateItem` is a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LedgerWrite {
    Claim,
    Mark,
}

/// The ledger write `body` is, if it is one.
pub(super) fn ledger_write(name: &str, body: &[u8]) -> Option<LedgerWrite> {
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

/// The SQS operations whose answers an ambiguous send loses.
pub(super) fn is_sqs_send(name: &str) -> bool {
    matches!(name, "SendMessage" | "SendMessageBatch")
}
