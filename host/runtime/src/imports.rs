//! The host side of the `focal:plugin` imports, on the per-request store data: log (escaped,
//! capped), config, and the capabilities a manifest grants (engine, files, fetch, expansion),
//! each refused with a message naming the capability when not granted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::focal::plugin::{config, engine, fetch, files, log, prompts, types};
use crate::bindings::step::focal::plugin::{expansion, random};
use crate::host::State;
use crate::services::{EngineService, ExpansionService, FetchService, FileService};

impl types::Host for State {}

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

impl log::Host for State {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        if self.log_budget == 0 {
            return Ok(());
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
            log::Level::Trace => tracing::trace!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            log::Level::Debug => tracing::debug!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            log::Level::Info => tracing::info!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            log::Level::Warn => tracing::warn!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
            log::Level::Error => tracing::error!(target: "focal::plugin", plugin, "[{plugin}] {message}"),
        }
        Ok(())
    }
}

impl config::Host for State {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(match key.strip_prefix("host.") {
            Some("version") => Some(env!("CARGO_PKG_VERSION").to_string()),
            Some(setting) => self.settings.get(setting).cloned(),
            None => self.config.get(&key).cloned(),
        })
    }
}

impl State {
    /// The service behind a capability, or a trap that names what the manifest lacks (the
    /// request fails with that message; nothing else does).
    fn granted<T: ?Sized>(&self, service: &Option<Arc<T>>, capability: &str) -> wasmtime::Result<Arc<T>> {
        service.clone().ok_or_else(|| {
            wasmtime::Error::msg(format!("plugin '{}' has no '{capability}' capability in its manifest", self.plugin))
        })
    }

    fn engine(&self) -> wasmtime::Result<Arc<dyn EngineService>> {
        self.granted(&self.services.engine, "engine")
    }

    /// What is left of the request's wall budget, capped at `ms`.
    fn budget(&self, ms: u32) -> Duration {
        Duration::from_millis(ms as u64).min(self.deadline.saturating_duration_since(Instant::now()))
    }
}

impl engine::Host for State {
    async fn submit(&mut self, spec: engine::JobSpec) -> wasmtime::Result<Result<String, engine::SubmitError>> {
        Ok(self.engine()?.submit(spec))
    }

    async fn get(&mut self, id: String) -> wasmtime::Result<Option<engine::JobInfo>> {
        Ok(self.engine()?.get(&id))
    }

    async fn wait(&mut self, id: String, timeout_ms: u32) -> wasmtime::Result<Option<engine::JobInfo>> {
        let engine = self.engine()?;
        Ok(engine.wait(&id, self.budget(timeout_ms)).await)
    }

    async fn preview(&mut self, id: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.engine()?.preview(&id))
    }

    async fn image_file(&mut self, id: String, index: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.engine()?.image_file(&id, index))
    }

    async fn stop(&mut self) -> wasmtime::Result<()> {
        self.engine()?.stop();
        Ok(())
    }

    async fn queue(&mut self) -> wasmtime::Result<engine::QueueInfo> {
        Ok(self.engine()?.queue())
    }

    async fn history(
        &mut self,
        job_id: Option<String>,
        offset: u32,
        limit: u32,
    ) -> wasmtime::Result<(Vec<engine::JobInfo>, Vec<engine::JobInfo>)> {
        Ok(self.engine()?.history(job_id.as_deref(), offset, limit))
    }

    async fn delete(&mut self, id: String) -> wasmtime::Result<bool> {
        Ok(self.engine()?.delete(&id))
    }

    async fn models(&mut self) -> wasmtime::Result<engine::ModelFiles> {
        Ok(self.engine()?.models())
    }

    async fn release_memory(&mut self) -> wasmtime::Result<()> {
        self.engine()?.release_memory();
        Ok(())
    }
}

impl prompts::Host for State {
    async fn styles(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(match &self.services.prompts {
            Some(p) => p.styles().await,
            None => vec![],
        })
    }
}

impl random::Host for State {
    async fn below(&mut self, n: u32) -> wasmtime::Result<u32> {
        let rng = self.random.as_mut().ok_or_else(|| wasmtime::Error::msg("no image generator outside a prompt step"))?;
        Ok(rng.below(n))
    }
}

impl expansion::Host for State {
    async fn expand(&mut self, prompt: String, seed: u64) -> wasmtime::Result<Result<String, String>> {
        let service: Arc<dyn ExpansionService> = self.granted(&self.services.expansion, "expansion")?;
        let budget = self.budget(u32::MAX);
        Ok(match tokio::time::timeout(budget, service.expand(prompt, seed)).await {
            Ok(r) => r,
            Err(_) => Err("the prompt expansion did not finish within the plugin's time limit".into()),
        })
    }
}

impl files::Host for State {
    async fn read(&mut self, path: String, format: Option<String>) -> wasmtime::Result<Option<files::File>> {
        let files: Arc<dyn FileService> = self.granted(&self.services.files, "files")?;
        Ok(files.read(&path, format.as_deref()))
    }
}

impl fetch::Host for State {
    async fn get(&mut self, url: String) -> wasmtime::Result<Result<Vec<u8>, String>> {
        let fetch: Arc<dyn FetchService> = self.granted(&self.services.fetch, "fetch")?;
        let budget = self.budget(u32::MAX);
        Ok(match tokio::time::timeout(budget, fetch.get(url)).await {
            Ok(r) => r,
            Err(_) => Err("the fetch did not finish within the plugin's time limit".into()),
        })
    }
}
