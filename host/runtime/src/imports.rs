//! The host side of the plugin imports, once for every contract version: each version's
//! bindings (`bindings::v0_1`, `bindings::v0_2`) convert their records and call these on the
//! per-request store data. Log output is escaped and capped; capabilities a manifest does not
//! grant are refused with a message naming them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use focal_core::services::{CatalogService, DescribeService, EngineService, ExpansionService, FetchService, FileService, ImageService};

use crate::host::State;

/// A plugin's text made safe for the host's log: newlines and other control characters
/// (ANSI escapes included) are written as escapes, so one plugin line stays one log line and
/// cannot imitate a host line or restyle the terminal.
pub fn escape_plugin_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

impl State {
    /// `log.log`: one escaped line under the plugin's name, within the request's log budget.
    pub(crate) fn write_log(&mut self, level: tracing::Level, message: String) {
        if self.log_budget == 0 {
            return;
        }
        let plugin = &*self.plugin;
        let mut message = escape_plugin_text(&message);
        if message.len() >= self.log_budget {
            let cut = (0..=self.log_budget.min(message.len())).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
            message.truncate(cut);
            message.push_str(" [log limit reached: further lines of this request dropped]");
            self.log_budget = 0;
        } else {
            self.log_budget -= message.len();
        }
        // Every line names its plugin up front, under a target of its own.
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            tracing::Level::DEBUG => tracing::debug!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            tracing::Level::INFO => tracing::info!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            tracing::Level::WARN => tracing::warn!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            tracing::Level::ERROR => tracing::error!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
        }
    }

    /// `config.get`: `host.<setting>` from the host, anything else from the manifest.
    pub(crate) fn config_value(&self, key: &str) -> Option<String> {
        match key.strip_prefix("host.") {
            Some("version") => Some(env!("CARGO_PKG_VERSION").to_string()),
            Some(setting) => self.settings.get(setting).cloned(),
            None => self.config.get(key).cloned(),
        }
    }

    /// The service behind a capability, or a trap that names what the manifest lacks (the
    /// request fails with that message; nothing else does).
    fn granted<T: ?Sized>(&self, service: &Option<Arc<T>>, capability: &str) -> wasmtime::Result<Arc<T>> {
        service
            .clone()
            .ok_or_else(|| wasmtime::Error::msg(format!("plugin '{}' has no '{capability}' capability in its manifest", self.plugin)))
    }

    pub(crate) fn engine(&self) -> wasmtime::Result<Arc<dyn EngineService>> {
        self.granted(&self.services.engine, "engine")
    }

    pub(crate) fn describer(&self) -> wasmtime::Result<Arc<dyn DescribeService>> {
        self.granted(&self.services.describe, "engine")
    }

    pub(crate) fn catalog(&self) -> wasmtime::Result<Arc<dyn CatalogService>> {
        self.granted(&self.services.catalog, "engine")
    }

    pub(crate) fn images_service(&self) -> wasmtime::Result<Arc<dyn ImageService>> {
        self.granted(&self.services.images, "images")
    }

    pub(crate) fn files(&self) -> wasmtime::Result<Arc<dyn FileService>> {
        self.granted(&self.services.files, "files")
    }

    /// What is left of the request's wall budget, capped at `ms`.
    pub(crate) fn budget(&self, ms: u32) -> Duration {
        Duration::from_millis(ms as u64).min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// `prompts.styles` (a future that holds no borrow of the store data).
    pub(crate) fn prompt_styles(&self) -> impl Future<Output = Vec<String>> + Send + 'static {
        let prompts = self.services.prompts.clone();
        async move {
            match prompts {
                Some(p) => p.styles().await,
                None => vec![],
            }
        }
    }

    pub(crate) fn random_below(&mut self, n: u32) -> wasmtime::Result<u32> {
        let rng = self.random.as_mut().ok_or_else(|| wasmtime::Error::msg("no image generator outside a prompt step"))?;
        Ok(rng.below(n))
    }

    /// `expansion.expand` within the request's budget.
    pub(crate) fn expand_prompt(
        &self,
        prompt: String,
        seed: u64,
    ) -> wasmtime::Result<impl Future<Output = Result<String, String>> + Send + 'static> {
        let service: Arc<dyn ExpansionService> = self.granted(&self.services.expansion, "expansion")?;
        let budget = self.budget(u32::MAX);
        Ok(async move {
            match tokio::time::timeout(budget, service.expand(prompt, seed)).await {
                Ok(r) => r,
                Err(_) => Err("the prompt expansion did not finish within the plugin's time limit".into()),
            }
        })
    }

    /// `fetch.get` within the request's budget.
    /// (see [`url_host`] for the host an allow-list is matched against)
    pub(crate) fn fetch_url(&self, url: String) -> wasmtime::Result<impl Future<Output = Result<Vec<u8>, String>> + Send + 'static> {
        let fetch: Arc<dyn FetchService> = self.granted(&self.services.fetch, "fetch")?;
        let budget = self.budget(u32::MAX);
        let refused = self.fetch_hosts.as_ref().and_then(|hosts| {
            let name = url_host(&url);
            (!hosts.iter().any(|h| h.eq_ignore_ascii_case(name)))
                .then(|| format!("{url}: the operator's policy does not let this plugin fetch from '{name}'"))
        });
        Ok(async move {
            if let Some(why) = refused {
                return Err(why);
            }
            match tokio::time::timeout(budget, fetch.get(url)).await {
                Ok(r) => r,
                Err(_) => Err("the fetch did not finish within the plugin's time limit".into()),
            }
        })
    }
}

/// The host name of a URL (no user info, port or brackets' contents parsed further): what an
/// operator's fetch allow-list names.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    }
}

#[cfg(test)]
mod url_host_tests {
    #[test]
    fn hosts_of_urls() {
        for (url, host) in [
            ("https://example.com/a.png", "example.com"),
            ("http://user:pw@Example.com:8080/x?y", "Example.com"),
            ("http://[::1]:80/x", "::1"),
            ("http://evil.com#@example.com/", "evil.com"),
            ("nonsense", ""),
        ] {
            assert_eq!(super::url_host(url), host, "{url}");
        }
    }
}
