//! Faults no stand-in produces, injected by the fault proxy between the
//! relays and SQS or DynamoDB while the relays run; then healed and
//! drained. Nothing is lost, a row goes twice only where the relay could
//! not know whether it was sent, and a row is quarantined only for a fault
//! that blames the message.

use std::collections::{BTreeMap, BTreeSet};

use super::processes::{finish, passes, spawn, unsure_rows};
use super::scenario::{Rows, Scenario, Setup, ledger_states};
use super::{LEASE_SECONDS, scale};
use crate::checker::Verdict;
use crate::common::{self, Db, Opts};
use crate::proxy::{EntryFailure, FaultPlan};

/// Starts a Postgres scenario whose relays go through the proxy with
/// `plan`: batches of `batch_size`, a FIFO queue (grouped rows) if `fifo`.
async fn start(fifo: bool, batch_size: u32, rows: Rows, plan: FaultPlan) -> Scenario {
    Setup {
        db: Db::Postgres,
        opts: Opts {
            fifo,
            group_column: fifo,
            batch_size: Some(batch_size),
            ..Opts::default()
        },
        rows,
        faults: Some(plan),
    }
    .start()
    .await
    .expect("PostgreSQL is configured")
}

/// Scenario 3: 10 % of sends are ambiguous: SQS enqueues them, the relay
/// sees a broken connection.
async fn ambiguous_sends(fifo: bool) {
    // make test: 400 rows; make chaos: 2,000.
    let rows = Rows::Grouped {
        groups: 20,
        per_group: (20 * scale()).min(100),
    };
    let plan = FaultPlan {
        ambiguous_send_rate: 0.10,
        ..Default::default()
    };
    let s = start(fifo, 20, rows, plan).await;
    finish((0..4).map(|_| spawn(&s.f, &[])).collect()).await;
    let faulted = s.proxy().count("SendMessageBatch").faulted;
    assert!(
        faulted > 0,
        "no send was made ambiguous: the scenario did not run"
    );
    let _ = s.heal().await;
    let name = format!(
        "{} ambiguous sends 10 %, {} rows ({faulted} sends broken)",
        s.queue_kind(),
        s.inserted.len()
    );
    // On FIFO every resend falls in the deduplication window: the end
    // asserts no duplicate at all. Standard: any row may have gone twice
    // through the SDK's own retry of a broken send.
    let all: BTreeSet<String> = s.inserted.iter().cloned().collect();
    s.end(&name, &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_sends_lose_nothing_on_a_standard_queue() {
    ambiguous_sends(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_sends_lose_and_double_nothing_on_a_fifo_queue() {
    ambiguous_sends(true).await;
}

/// Scenario 5: 20 % of DynamoDB writes throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_ledger_writes_lose_and_double_nothing() {
    let plan = FaultPlan {
        ddb_throttle_rate: 0.20,
        ..Default::default()
    };
    let s = start(false, 25, Rows::Plain(400 * scale()), plan).await;
    // The schedule's next passes, while the throttling goes on.
    let exits = passes(&s.f, 5).await;
    // Claims (and fenced marks) are UpdateItems; batched marks BatchWriteItems.
    let proxy = s.proxy();
    let throttled = proxy.count("UpdateItem").faulted + proxy.count("BatchWriteItem").faulted;
    assert!(
        throttled > 0,
        "nothing was throttled: the scenario did not run"
    );
    no_claim_outlives_its_lease(&s).await;
    let healed = s.heal().await;
    let mut unsure = unsure_rows(&exits);
    unsure.extend(healed);
    let name = format!(
        "20 % throttled DynamoDB writes, {} rows ({throttled} writes throttled)",
        s.inserted.len()
    );
    let v = s.end(&name, &unsure).await;
    println!("rows sent but not marked despite retries: {}", unsure.len());
    assert!(v.duplicated.len() <= unsure.len());
}

/// Every CLAIMED item's lease ends within LEASE_SECONDS of now: retries
/// of a throttled write are bounded by the operation timeout.
async fn no_claim_outlives_its_lease(s: &Scenario) {
    let horizon = common::now_ms() + LEASE_SECONDS * 1000;
    for (key, state) in ledger_states(&s.f).await {
        if state == "CLAIMED" {
            let lease = s.f.ledger(&key).await.unwrap()["lease_until_ms"]
                .as_n()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            assert!(lease <= horizon, "claim of {key} outlives its lease");
        }
    }
}

/// What a proxy-fault scenario found, beyond the closing checks' verdict.
struct ProxyRun {
    verdict: Verdict,
    /// Dead letters (row key, reason).
    quarantined: Vec<(String, String)>,
    /// Requests the proxy faulted, per operation.
    faulted: BTreeMap<String, u64>,
}

/// A fault injected by the proxy while two relays run a few passes; then
/// healed and drained. Nothing is lost, and a row is quarantined only for
/// a fault that blames the message: `quarantinable` says which reasons may
/// appear in the dead-letter table (none if empty).
async fn under_proxy_fault(fifo: bool, plan: FaultPlan, quarantinable: &str) -> ProxyRun {
    let rows = Rows::Grouped {
        groups: 10,
        per_group: 20 * scale(),
    };
    let mut s = start(fifo, 20, rows, plan).await;
    let exits = passes(&s.f, 3).await;
    let faulted = faulted_requests(&s);
    let mut unsure = unsure_rows(&exits);
    unsure.extend(s.heal().await);
    let quarantined = s.f.dead_letters().await;
    for (key, reason) in &quarantined {
        assert!(
            !quarantinable.is_empty() && reason.contains(quarantinable),
            "row {key} quarantined for a fault that does not blame it: {reason}"
        );
    }
    let name = format!(
        "{} {faulted:?}, {} rows, {} quarantined",
        s.queue_kind(),
        s.inserted.len(),
        quarantined.len()
    );
    // A quarantined row belongs in the dead-letter table, not on the queue.
    let gone: BTreeSet<&String> = quarantined.iter().map(|(k, _)| k).collect();
    s.inserted.retain(|k| !gone.contains(k));
    let verdict = s.end(&name, &unsure).await;
    ProxyRun {
        verdict,
        quarantined,
        faulted,
    }
}

/// The requests the proxy faulted, per operation; asserts there were some.
fn faulted_requests(s: &Scenario) -> BTreeMap<String, u64> {
    let faulted: BTreeMap<String, u64> = s
        .proxy()
        .counts()
        .into_iter()
        .filter(|(_, c)| c.faulted > 0)
        .map(|(op, c)| (op, c.faulted))
        .collect();
    assert!(
        !faulted.is_empty(),
        "no request was faulted: the scenario did not run"
    );
    faulted
}

/// A plan failing `rate` of the batch entries with SQS's `code`.
fn entry_failures(rate: f64, code: &'static str, sender_fault: bool) -> FaultPlan {
    FaultPlan {
        entry_failure_rate: rate,
        entry_failure: EntryFailure { code, sender_fault },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_applied_whose_replies_were_lost_lose_and_double_nothing() {
    let plan = FaultPlan {
        claim_reply_lost_rate: 0.2,
        ..Default::default()
    };
    let run = under_proxy_fault(false, plan, "").await;
    // No message had gone out when a claim's reply was lost.
    assert!(run.verdict.duplicated.is_empty(), "{:?}", run.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_applied_whose_replies_were_lost_lose_nothing_on_fifo() {
    let plan = FaultPlan {
        mark_reply_lost_rate: 0.2,
        ..Default::default()
    };
    let run = under_proxy_fault(true, plan, "").await;
    assert!(run.faulted.contains_key("BatchWriteItem") || run.faulted.contains_key("UpdateItem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_batch_marks_fall_back_to_fenced_marks_and_lose_nothing() {
    let plan = FaultPlan {
        batch_unprocessed_rate: 1.0,
        ..Default::default()
    };
    let run = under_proxy_fault(false, plan, "").await;
    assert!(run.faulted.contains_key("BatchWriteItem"));
    // The fenced mark of each row stands in for the unprocessed batch.
    assert!(run.verdict.duplicated.is_empty(), "{:?}", run.verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_failed_by_sqs_itself_are_retried_never_quarantined_and_keep_fifo_order() {
    under_proxy_fault(true, entry_failures(0.2, "InternalError", false), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_sqs_refuses_as_the_senders_fault_are_quarantined_with_the_reason() {
    let plan = entry_failures(0.1, "InvalidParameterValue", true);
    let run = under_proxy_fault(false, plan, "InvalidParameterValue").await;
    assert!(
        !run.quarantined.is_empty(),
        "a refused message is a poison row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_failures_of_entries_are_retried_never_quarantined() {
    under_proxy_fault(
        false,
        entry_failures(0.3, "KMS.ThrottlingException", true),
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_sends_are_retried_never_quarantined() {
    for code in ["ThrottlingException", "RequestThrottled"] {
        let plan = FaultPlan {
            sqs_throttle_rate: 0.3,
            sqs_throttle_code: code,
            ..Default::default()
        };
        under_proxy_fault(false, plan, "").await;
    }
}
