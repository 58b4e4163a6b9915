//! Webhook delivery off the engine worker: each finished job's notice is POSTed on the async
//! runtime with retries and exponential backoff, so a slow or failing receiver never delays the
//! next job (the seed posted synchronously on its worker thread, once).

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

#[derive(Clone, Debug)]
pub struct WebhookPolicy {
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each later one.
    pub first_backoff: Duration,
    pub timeout: Duration,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self { attempts: 5, first_backoff: Duration::from_millis(500), timeout: Duration::from_secs(15) }
    }
}

/// Handle used by the job manager (from any thread) to queue a delivery.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::UnboundedSender<(String, Value)>,
}

impl Webhooks {
    /// Start the delivery loop on the current tokio runtime.
    pub fn start(policy: WebhookPolicy) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(policy.timeout).build()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Value)>();
        tokio::spawn(async move {
            while let Some((url, body)) = rx.recv().await {
                tokio::spawn(deliver(client.clone(), policy.clone(), url, body));
            }
        });
        Ok(Self { tx })
    }

    pub fn send(&self, url: String, body: Value) {
        let _ = self.tx.send((url, body));
    }
}

async fn deliver(client: reqwest::Client, policy: WebhookPolicy, url: String, body: Value) {
    let mut backoff = policy.first_backoff;
    for attempt in 1..=policy.attempts {
        let outcome = client.post(&url).header("content-type", "application/json").body(body.to_string()).send().await;
        let problem = match outcome {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%url, attempt, "webhook delivered");
                crate::metrics::inc("focal_webhooks_total", &[("outcome", "delivered")]);
                return;
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt == policy.attempts {
            tracing::error!(%url, attempt, "webhook failed, giving up: {problem}");
            crate::metrics::inc("focal_webhooks_total", &[("outcome", "failed")]);
            return;
        }
        crate::metrics::inc("focal_webhooks_total", &[("outcome", "retried")]);
        tracing::warn!(%url, attempt, retry_in_ms = backoff.as_millis() as u64, "webhook failed: {problem}");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}
