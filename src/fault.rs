//! Fault points at the step boundaries of a batch, for the crash tests.
//!
//! Compiled in only with the `faults` cargo feature; without it
//! [`point`] is an empty function the optimiser removes. With it, the
//! `OUTBOX_FAULTS` variable arms points, `;`-separated:
//!
//! ```text
//! OUTBOX_FAULTS="after-send=abort@3"        crash (SIGABRT) at the 3rd hit
//! OUTBOX_FAULTS="after-claim=pause(70000)"  freeze 70 s at every hit
//! OUTBOX_FAULTS="after-mark=abort%20"       crash with probability 20 %
//! ```
//!
//! `abort` is a real crash: no destructor runs, no transaction is rolled
//! back by the client, exactly what a killed Lambda does. Reading the
//! environment here, outside `config`, is deliberate: this is test
//! machinery, not a setting.

/// The step boundaries a fault can be placed at, in protocol order.
pub const POINTS: &[&str] = &[
    "after-select",
    "after-claim",
    "mid-send",
    "after-send",
    "after-mark",
    "after-delete",
    "after-commit",
];

#[cfg(not(feature = "faults"))]
/// Does nothing: fault injection is not compiled in.
#[inline(always)]
pub async fn point(_name: &str) {}

#[cfg(feature = "faults")]
pub use armed::point;

#[cfg(feature = "faults")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    enum Action {
        Abort,
        Pause(Duration),
    }

    enum When {
        Always,
        Nth(u64),
        Percent(u64),
    }

    struct Rule {
        point: String,
        action: Action,
        when: When,
        hits: AtomicU64,
    }

    fn rules() -> &'static [Rule] {
        static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
        RULES.get_or_init(|| {
            let spec = std::env::var("OUTBOX_FAULTS").unwrap_or_default();
            spec.split(';')
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse(s.trim()).unwrap_or_else(|| panic!("bad OUTBOX_FAULTS rule {s:?}")))
                .collect()
        })
    }

    fn parse(rule: &str) -> Option<Rule> {
        let (point, rest) = rule.split_once('=')?;
        let (action, when) = if let Some((a, n)) = rest.split_once('@') {
            (a, When::Nth(n.parse().ok()?))
        } else if let Some((a, p)) = rest.split_once('%') {
            (a, When::Percent(p.parse().ok()?))
        } else {
            (rest, When::Always)
        };
        let action = if action == "abort" {
            Action::Abort
        } else {
            let ms = action
                .strip_prefix("pause(")?
                .strip_suffix(')')?
                .parse()
                .ok()?;
            Action::Pause(Duration::from_millis(ms))
        };
        Some(Rule {
            point: point.to_owned(),
            action,
            when,
            hits: AtomicU64::new(0),
        })
    }

    /// A cheap per-process random number: enough to spread faults.
    fn roll() -> u64 {
        static STATE: AtomicU64 = AtomicU64::new(0);
        let mut x = STATE.load(Ordering::Relaxed);
        if x == 0 {
            x = u64::from(std::process::id()) << 32 | 0x9E37_79B9;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        STATE.store(x, Ordering::Relaxed);
        x % 100
    }

    /// Fires the rules armed for `name`.
    pub async fn point(name: &str) {
        for rule in rules().iter().filter(|r| r.point == name) {
            let hit = rule.hits.fetch_add(1, Ordering::SeqCst) + 1;
            let fire = match rule.when {
                When::Always => true,
                When::Nth(n) => hit == n,
                When::Percent(p) => roll() < p,
            };
            if !fire {
                continue;
            }
            match rule.action {
                Action::Abort => {
                    eprintln!("fault: abort at {name} (hit {hit})");
                    std::process::abort();
                }
                Action::Pause(d) => {
                    eprintln!("fault: pause {d:?} at {name} (hit {hit})");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
}
