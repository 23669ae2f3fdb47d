//! The "AWS-like latency" of `make bench`: the tests' loopback fault proxy
//! (`tests/it/proxy/`) with only its latency setting on, in front of the local
//! stack. Every AWS call waits `<ms>` before it is forwarded, as an
//! in-region call to SQS or DynamoDB takes a few milliseconds; connections
//! are kept alive both ways, as AWS endpoints keep them.
//!
//! `latency_proxy <ms>` with the stack's `AWS_ENDPOINT_URL*` in the
//! environment: prints its URL on the first line, serves until stdin closes,
//! then prints the requests it forwarded per operation as one JSON line.

// The tests' proxy, whole: this example turns on only its latency, so the
// fault plans it never builds are dead code here (and live in tests/it/).
#[allow(dead_code)]
#[path = "../tests/it/proxy/mod.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::time::Duration;

use std::io::Read;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: latency_proxy <milliseconds>");
    let proxy = proxy::FaultProxy::for_stack().await;
    proxy.faults().set_latency(Duration::from_millis(ms));
    println!("{}", proxy.url());
    // Until the driver closes our stdin (or goes away).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::stdin().read_to_end(&mut sink)
    })
    .await;
    let forwarded: BTreeMap<String, u64> = proxy
        .counts()
        .into_iter()
        .map(|(op, c)| (op, c.forwarded))
        .collect();
    println!("{}", serde_json::to_string(&forwarded).unwrap());
}
