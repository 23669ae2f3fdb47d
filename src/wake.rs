//! What wakes a follower between passes: a PostgreSQL `NOTIFY` on
//! `OUTBOX_NOTIFY_CHANNEL` when one is configured, and always a poll every
//! `POLL_INTERVAL_MS` (an index-only probe), so a missed notification costs
//! at most one interval. MySQL/MariaDB have no `LISTEN`: they poll only.
//!
//! The `LISTEN` connection lives in a task of its own, on a pool of one
//! connection beside the relay's. When it drops (a restarted server, a
//! failover, an idle-connection reaper) the task reconnects with
//! exponential backoff, and meanwhile the follower polls at least every
//! [`POLL_WHILE_DEAF`]. Notifications sent while nobody listened are lost,
//! so every (re)connection counts as a wake-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::dialect::Dialect;
use crate::ident::Ident;
use crate::source::Source;
use crate::stop::Stop;

/// The longest poll interval while the `LISTEN` connection is down.
pub const POLL_WHILE_DEAF: Duration = Duration::from_millis(250);
/// First wait before reconnecting a dropped `LISTEN`; doubles up to
/// [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Why [`Waker::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// Rows may be waiting: a notification, or the probe found some.
    Rows,
    /// The stop was reached while waiting.
    Stopped,
}

/// Waits for rows on behalf of a follower.
pub struct Waker {
    source: Source,
    poll: Duration,
    listen: Option<Listening>,
}

/// The `LISTEN` task and what it shares with the follower.
struct Listening {
    notified: Arc<Notify>,
    up: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Waker {
    fn drop(&mut self) {
        if let Some(l) = &self.listen {
            l.task.abort();
        }
    }
}

impl Waker {
    /// Starts listening on `channel` (PostgreSQL only) and polling every `poll`.
    pub fn start(source: Source, channel: Option<&Ident>, poll: Duration) -> Waker {
        let listen = match (channel, source.listen_pool()) {
            (Some(channel), Some(pool)) => {
                let notified = Arc::new(Notify::new());
                let up = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(listen_loop(
                    pool,
                    channel.as_str().to_owned(),
                    notified.clone(),
                    up.clone(),
                ));
                Some(Listening { notified, up, task })
            }
            (Some(_), None) => {
                // Only reachable through DATABASE_SECRET_ARN: a URL's scheme
                // is checked with the settings.
                tracing::warn!(
                    "OUTBOX_NOTIFY_CHANNEL is ignored: the database is not PostgreSQL; polling only"
                );
                None
            }
            (None, _) => None,
        };
        debug_assert!(listen.is_none() || source.dialect == Dialect::Postgres);
        Waker {
            source,
            poll,
            listen,
        }
    }

    /// Waits until rows may be waiting, or `stop` is reached.
    pub async fn wait(&self, stop: &Stop) -> anyhow::Result<Woken> {
        loop {
            let deaf = self
                .listen
                .as_ref()
                .is_some_and(|l| !l.up.load(Ordering::SeqCst));
            let interval = if deaf {
                self.poll.min(POLL_WHILE_DEAF)
            } else {
                self.poll
            };
            let notified = async {
                match &self.listen {
                    Some(l) => l.notified.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.wait() => return Ok(Woken::Stopped),
                _ = notified => return Ok(Woken::Rows),
                _ = tokio::time::sleep(interval) => {
                    if self.source.probe().await? {
                        return Ok(Woken::Rows);
                    }
                }
            }
        }
    }
}

/// Keeps a `LISTEN` on `channel` open for as long as the follower runs,
/// turning each notification into a wake-up.
async fn listen_loop(pool: PgPool, channel: String, notified: Arc<Notify>, up: Arc<AtomicBool>) {
    let mut backoff = RECONNECT_MIN;
    loop {
        let mut listener = match listen(&pool, &channel).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(channel = %channel, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot LISTEN; polling meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        tracing::info!(channel = %channel, "listening for new rows");
        backoff = RECONNECT_MIN;
        up.store(true, Ordering::SeqCst);
        // Rows may have come while nobody listened: look once.
        notified.notify_one();
        let why = loop {
            match listener.try_recv().await {
                Ok(Some(_)) => notified.notify_one(),
                Ok(None) => break "connection lost".to_owned(),
                Err(e) => break format!("{e:#}"),
            }
        };
        up.store(false, Ordering::SeqCst);
        drop(listener);
        tracing::warn!(channel = %channel, reason = %why, "LISTEN connection dropped; reconnecting, polling meanwhile");
    }
}

async fn listen(pool: &PgPool, channel: &str) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // This loop reconnects itself, with backoff and a wake-up.
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    // `listen` quotes the channel: the name is matched exactly, as
    // pg_notify() in the trigger spells it.
    listener.listen(channel).await?;
    Ok(listener)
}
