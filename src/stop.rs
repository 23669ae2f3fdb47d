//! When a pass or a follow stops: at a time, on a shutdown request, or both.
//!
//! A pass checks [`Stop::reached`] only between batches, so a batch that
//! has started always finishes send → mark → delete; stopping it midway
//! would leave claims for the next relay to wait out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

/// A shutdown request (SIGTERM, SIGINT), shared by whoever asks for it and
/// the loops that honour it.
#[derive(Debug, Default)]
pub struct Shutdown {
    requested: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// A shutdown nobody has requested yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Shutdown::default())
    }

    /// Asks every loop watching this to stop (idempotent).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// True once a shutdown was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Completes once a shutdown is requested (at once if it already was).
    pub async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a request in between is not missed.
            notified.as_mut().enable();
            if self.is_requested() {
                return;
            }
            notified.await;
        }
    }
}

/// Turns the first SIGTERM or SIGINT into a graceful [`Shutdown::request`];
/// a second one ends the process at once (exit 130), as an impatient
/// operator expects. Even then nothing is lost: the crash table of
/// docs/design.md covers a process ended at any point.
pub fn on_signals(shutdown: Arc<Shutdown>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            seen += 1;
            if seen > 1 {
                eprintln!("outbox-relay: second {name}: exiting now");
                std::process::exit(130);
            }
            tracing::info!(
                signal = name,
                "stopping: the batch in flight finishes, no new one starts"
            );
            shutdown.request();
        }
    });
    Ok(())
}

/// When to stop starting batches.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// No batch starts at or after this time.
    pub at: Option<Instant>,
    /// No batch starts once this shutdown is requested.
    pub shutdown: Option<Arc<Shutdown>>,
}

impl Stop {
    /// Stops at a time only (a drain, a Lambda pass).
    pub fn at(at: Option<Instant>) -> Self {
        Stop { at, shutdown: None }
    }

    /// True when no new batch may start.
    pub fn reached(&self) -> bool {
        self.at.is_some_and(|t| Instant::now() >= t)
            || self.shutdown.as_ref().is_some_and(|s| s.is_requested())
    }

    /// Completes when the stop is reached (never, for an empty stop).
    pub async fn wait(&self) {
        let at = async {
            match self.at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let shutdown = async {
            match &self.shutdown {
                Some(s) => s.requested().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = at => {}
            _ = shutdown => {}
        }
    }
}
