//! The fault plan (what the proxy breaks, and how often) and the seeded
//! dice that decide each request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::EntryFailure;

/// Seed of [`super::FaultProxy::for_stack`]; pass another to
/// [`super::FaultProxy::start_routed`] to vary it.
pub const DEFAULT_SEED: u64 = 0x5EED_F00D_FA17;

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
