//! Where requests go and how they get there: the upstream of each service
//! and the forwarding of one request, whole, to it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::{BoxError, Service};

/// The proxy's one HTTP client; it keeps connections to the upstreams alive,
/// as the SDK would to AWS.
pub(super) type HttpClient = Client<HttpConnector, Full<Bytes>>;

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

    pub(super) fn of(&self, service: Service) -> &str {
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

/// Sends the request on to the upstream and reads the whole answer, so that
/// by the time the proxy decides what the client sees, the upstream has acted.
pub(super) async fn forward(
    client: &HttpClient,
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
    // it is part of the SigV4 signature, and the local stand-ins do not
    // mind which host it is (they do not verify signatures, and name queues
    // by the path).
    *out.headers_mut() = parts.headers.clone();
    strip_hop_by_hop(out.headers_mut());
    let response = client.request(out).await?;
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
