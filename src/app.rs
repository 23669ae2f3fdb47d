//! The long-lived part of a process: settings, AWS clients, and the relay,
//! connected on first use and reused by every later pass.
//!
//! In Lambda one execution environment serves many invocations, so the
//! database pool, the secret and the queue's attributes are fetched once.
//! Connecting lazily keeps the cold start short and turns an unreachable
//! database into an error response of the invocation (retried), instead of
//! a crash of the runtime.
//!
//! The one exception to "fetched once" is a rotated secret: when the
//! database refuses the password the relay was built with, the relay is
//! dropped and built again from a fresh read of the secret, and the pass
//! runs once more. Connections opened before the rotation keep working, so
//! this shows only when the pool opens a new one.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;

use crate::config::{Config, DatabaseLocator};
use crate::database::ConnectOptions;
use crate::error::RelayError;
use crate::event::PassRequest;
use crate::ledger::Ledger;
use crate::message::Target;
use crate::queue::Queue;
use crate::relay::Relay;
use crate::source::Source;
use crate::stats::CountRequests;
use crate::stop::Stop;
use crate::summary::Summary;
use secrecy::ExposeSecret;

/// Settings and clients of one process.
pub struct App {
    config: Config,
    aws: aws_config::SdkConfig,
    /// Connected on first use; replaced after a credentials refusal.
    relay: Mutex<Option<Arc<Relay>>>,
}

impl App {
    /// Loads the AWS configuration (region, credentials, endpoints), and
    /// warns when the database connection is not verified.
    pub async fn new(config: Config) -> Result<Self, RelayError> {
        if let Some(warning) = config.tls.warning() {
            tracing::warn!("{warning}");
        }
        let aws = crate::aws::sdk_config().await?;
        Ok(App {
            config,
            aws,
            relay: Mutex::new(None),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The relay, connecting it the first time.
    pub async fn relay(&self) -> Result<Arc<Relay>, RelayError> {
        let mut slot = self.relay.lock().await;
        if let Some(relay) = slot.as_ref() {
            return Ok(relay.clone());
        }
        let relay = Arc::new(self.connect().await.map_err(RelayError::Setup)?);
        *slot = Some(relay.clone());
        Ok(relay)
    }

    /// Drops the relay and connects afresh, reading the secret again:
    /// the database refused the credentials the relay was built with.
    async fn reconnect(&self) -> Result<Arc<Relay>, RelayError> {
        tracing::warn!("the database refused the credentials from the secret; reading it again");
        let old = self.relay.lock().await.take();
        if let Some(relay) = old {
            relay.source().close().await;
        }
        self.relay().await
    }

    /// True when credentials from the secret were refused and a fresh read
    /// of the secret might help (it was rotated since it was read).
    fn refused_secret_credentials(&self, error: &anyhow::Error) -> bool {
        matches!(self.config.database, DatabaseLocator::SecretArn(_))
            && crate::source::refused_credentials(error)
    }

    /// How to connect to the database: from `DATABASE_URL`, or from the
    /// secret (read afresh on every call), with the TLS settings applied.
    pub async fn database_options(&self) -> anyhow::Result<ConnectOptions> {
        let cfg = &self.config;
        Ok(match &cfg.database {
            DatabaseLocator::Url(url) => ConnectOptions::from_url(url.expose_secret(), &cfg.tls)?,
            DatabaseLocator::SecretArn(arn) => {
                let conf = aws_sdk_secretsmanager::config::Builder::from(&self.aws)
                    .interceptor(CountRequests)
                    .build();
                let client = aws_sdk_secretsmanager::Client::from_conf(conf);
                let secret = crate::secret::read(&client, arn).await?;
                ConnectOptions::from_secret(&secret, &cfg.tls)
            }
        })
    }

    /// The AWS SDK configuration (operator commands build their clients
    /// from it).
    pub fn aws(&self) -> &aws_config::SdkConfig {
        &self.aws
    }

    async fn connect(&self) -> anyhow::Result<Relay> {
        let cfg = &self.config;
        let options = self.database_options().await?;
        // On a standard queue the SDK's own retry of a send that timed out
        // after SQS accepted it makes a duplicate nobody hears about. With
        // no SDK retry, every such send surfaces as ambiguous, is logged
        // with its row key, and goes again only after the lease, as the
        // protocol says. FIFO queues deduplicate a retry, so the SDK may
        // retry there.
        let sqs_retries = if cfg.is_fifo() {
            aws_config::retry::RetryConfig::standard().with_max_attempts(3)
        } else {
            aws_config::retry::RetryConfig::disabled()
        };
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&self.aws)
                .retry_config(sqs_retries)
                .interceptor(CountRequests)
                .build(),
        );
        let ddb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.aws)
                .interceptor(CountRequests)
                .build(),
        );
        // The checks are independent: run them side by side. Queues:
        // QUEUE_URL first, then each routed queue once.
        let urls = cfg.shaping.queue_urls(&cfg.queue_url);
        let opens = urls.iter().enumerate().map(|(i, url)| {
            let variable = if i == 0 { "QUEUE_URL" } else { "QUEUE_ROUTES" };
            Queue::open_as(sqs.clone(), url, variable)
        });
        let (source, queues) = tokio::try_join!(
            Source::connect(options, cfg),
            futures_util::future::try_join_all(opens),
        )?;
        let ledger = Ledger::new(ddb, cfg.claims_table.clone(), cfg.lease, cfg.retention);
        let target = Target {
            source: cfg.table.to_string(),
            fifo: cfg.is_fifo(),
            max_message_bytes: queues.iter().map(|q| q.max_message_bytes).collect(),
            routes: crate::shaping::Routes::new(&cfg.shaping, &cfg.queue_url),
        };
        Ok(Relay::new(source, ledger, queues, target, cfg.batch_size))
    }

    /// Runs one pass; on failure the error carries what was done.
    /// `stop_at` ends the pass between batches; no send starts that could
    /// outlast `deadline` (see [`Relay::pass`]).
    pub async fn run(
        &self,
        req: &PassRequest,
        stop_at: Option<Instant>,
        deadline: Option<Instant>,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) -> Result<Summary, RelayError> {
        self.run_until(req, &Stop::at(stop_at), deadline, on_batch)
            .await
    }

    /// [`App::run`], stopping between batches once `stop` is reached.
    pub async fn run_until(
        &self,
        req: &PassRequest,
        stop: &Stop,
        deadline: Option<Instant>,
        on_batch: &(dyn Fn(&Summary) + Sync),
    ) -> Result<Summary, RelayError> {
        let relay = match self.relay().await {
            Err(RelayError::Setup(e)) if self.refused_secret_credentials(&e) => {
                self.reconnect().await?
            }
            other => other?,
        };
        let (mut summary, mut result) = relay.pass(req, stop, deadline, on_batch).await;
        if let Err(e) = &result
            && self.refused_secret_credentials(e)
        {
            // Passes are idempotent: the second one picks up where the
            // first stopped, with a pool built from the rotated secret.
            let relay = self.reconnect().await?;
            let done = summary;
            let rest = PassRequest {
                max_rows: req.max_rows.map(|m| {
                    m.saturating_sub(done.deleted + done.quarantined + done.skipped)
                        .max(1)
                }),
                ..req.clone()
            };
            let (again, r) = relay.pass(&rest, stop, deadline, on_batch).await;
            summary = again;
            summary.merge_earlier(&done);
            result = r;
        }
        match result {
            Ok(()) => Ok(summary),
            Err(error) => Err(RelayError::Pass {
                done: summary,
                error,
            }),
        }
    }

    /// Closes the database pool (the CLI, before it exits).
    pub async fn close(&self) {
        if let Some(relay) = self.relay.lock().await.as_ref() {
            relay.source().close().await;
        }
    }
}
