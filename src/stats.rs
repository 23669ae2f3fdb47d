//! Counters of the work a process did: SQL round trips, AWS requests per
//! operation, and the items of batch writes. `make bench` reads them to report cost per row from what
//! the relay really did, not from estimates.
//!
//! Process-wide atomics rather than values passed around: they are
//! observations, like log lines, and threading a counter through every
//! call would make the protocol code harder to read for no gain.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

static SQL_ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);
static AWS_REQUESTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static AWS_BATCH_ITEMS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Statements sent to the database (BEGIN and COMMIT included).
    pub sql_round_trips: u64,
    /// HTTP requests per `Service.Operation`, retries included.
    pub aws_requests: BTreeMap<String, u64>,
    /// Items a batch operation (`DynamoDB.BatchWriteItem`) really wrote:
    /// DynamoDB bills a write unit per item, not per request.
    pub aws_batch_items: BTreeMap<String, u64>,
}

/// Counts one database round trip.
pub fn sql_round_trip(n: u64) {
    SQL_ROUND_TRIPS.fetch_add(n, Ordering::Relaxed);
}

/// Counts `n` items written by one call of the batch operation `op`.
pub fn batch_items(op: &str, n: u64) {
    if let Ok(mut counts) = AWS_BATCH_ITEMS.lock() {
        *counts.entry(op.to_owned()).or_default() += n;
    }
}

/// The counters now.
pub fn snapshot() -> Snapshot {
    Snapshot {
        sql_round_trips: SQL_ROUND_TRIPS.load(Ordering::Relaxed),
        aws_requests: AWS_REQUESTS.lock().map(|m| m.clone()).unwrap_or_default(),
        aws_batch_items: AWS_BATCH_ITEMS
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default(),
    }
}

/// An SDK interceptor that counts every request as it goes on the wire
/// (each retry is a request, and is billed as one).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountRequests;

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            let key = format!("{}.{}", m.service(), m.name());
            if let Ok(mut counts) = AWS_REQUESTS.lock() {
                *counts.entry(key).or_default() += 1;
            }
        }
        Ok(())
    }
}
