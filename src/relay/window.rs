//! The time a batch's claims leave for its sends and marks.

use std::time::{Duration, Instant};

use crate::aws::OPERATION_TIMEOUT;
use crate::ledger::now_ms;

/// Time a send must have left on its lease beyond the SDK's own operation
/// timeout: covers clock skew between relays and the mark that follows.
pub(super) const LEASE_SAFETY: Duration = Duration::from_secs(5);

/// The longest the mark that follows a send may take: a `BatchWriteItem`
/// up to the SDK's operation timeout.
const MARK_AFTER_SEND: Duration = OPERATION_TIMEOUT;

/// When a write that must complete under this batch's claims may start.
///
/// Three clocks bound it. The lease on this process's monotonic clock,
/// reckoned from before the claims were made. The same lease on the wall
/// clock, by which other relays judge it expired: the monotonic clock stops
/// while a machine is suspended (a laptop running a backfill), so after a
/// sleep it would still believe in a lease that others have long taken
/// over. And the invocation's hard deadline, when Lambda will end the
/// process: a send cut off before its mark is a duplicate.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// The lease's end on this process's monotonic clock.
    pub(super) lease_end: Instant,
    /// The lease's end on the wall clock: the earliest `lease_until_ms` of
    /// the batch's claims.
    pub(super) lease_until_ms: u64,
    /// When Lambda ends the invocation, if known.
    pub(super) deadline: Option<Instant>,
}

impl Window {
    /// True while a call that may take `need` would still end inside the
    /// window with [`LEASE_SAFETY`] to spare.
    pub(super) fn allows(&self, need: Duration) -> bool {
        let need = need + LEASE_SAFETY;
        let now = Instant::now();
        now + need <= self.lease_end
            && now_ms() + need.as_millis() as u64 <= self.lease_until_ms
            && self.deadline.is_none_or(|d| now + need <= d)
    }

    /// True while a send may start: it may take the SDK's operation
    /// timeout, and the invocation must then still outlive the mark that
    /// follows it. A send whose mark Lambda cuts off is a duplicate after
    /// the lease.
    pub(super) fn allows_send(&self) -> bool {
        let send_and_mark = OPERATION_TIMEOUT + MARK_AFTER_SEND + LEASE_SAFETY;
        self.allows(OPERATION_TIMEOUT)
            && self
                .deadline
                .is_none_or(|d| Instant::now() + send_and_mark <= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(lease_left: Duration, wall_left_ms: i64, deadline: Option<Duration>) -> Window {
        let now = Instant::now();
        Window {
            lease_end: now + lease_left,
            lease_until_ms: (now_ms() as i64 + wall_left_ms).max(0) as u64,
            deadline: deadline.map(|d| now + d),
        }
    }

    #[test]
    fn a_send_starts_only_while_every_clock_leaves_room_for_it() {
        let minute = Duration::from_secs(60);
        assert!(window(minute, 60_000, None).allows(OPERATION_TIMEOUT));
        // The lease is nearly over on this process's clock.
        assert!(!window(Duration::from_secs(12), 60_000, None).allows(OPERATION_TIMEOUT));
    }

    #[test]
    fn a_lease_expired_on_the_wall_clock_refuses_sends_after_a_suspend() {
        // After a sleep the monotonic clock says the lease is young, but by
        // the wall clock (the one other relays use) it has run out.
        let w = window(Duration::from_secs(55), -300_000, None);
        assert!(!w.allows(OPERATION_TIMEOUT));
    }

    #[test]
    fn no_send_starts_unless_its_mark_also_fits_before_the_deadline() {
        // 20 s left: the send fits (10 s and the 5 s margin), but the mark
        // after it, a batch write of up to 10 s more, would not.
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(20)),
        );
        assert!(w.allows(OPERATION_TIMEOUT));
        assert!(!w.allows_send());
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(26)),
        );
        assert!(w.allows_send());
        assert!(window(Duration::from_secs(60), 60_000, None).allows_send());
        assert!(!window(Duration::from_secs(12), 60_000, None).allows_send());
    }

    #[test]
    fn no_send_starts_that_could_outlast_the_invocation() {
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(8)),
        );
        assert!(!w.allows(OPERATION_TIMEOUT));
        let w = window(
            Duration::from_secs(60),
            60_000,
            Some(Duration::from_secs(40)),
        );
        assert!(w.allows(OPERATION_TIMEOUT));
    }
}
