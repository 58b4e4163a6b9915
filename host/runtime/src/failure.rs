//! How a plugin call fails: the failure kinds and their HTTP statuses, the wall-time backstop
//! around a call, and the reading of a wasmtime error (trap, epoch interrupt, memory growth).

use std::time::Duration;

use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::host::{State, EPOCH_TICK};
use crate::imports::escape_plugin_text;
use crate::manifest::PluginManifest;

/// Why a plugin did not produce a response. The request fails; nothing else does.
#[derive(Debug, thiserror::Error)]
pub enum PluginFailure {
    #[error("plugin '{plugin}' exceeded its time limit of {limit_ms} ms")]
    Timeout { plugin: String, limit_ms: u64 },
    #[error("plugin '{plugin}' exceeded its memory limit of {limit_mb} MiB")]
    OutOfMemory { plugin: String, limit_mb: u64 },
    #[error("plugin '{plugin}' crashed: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin '{plugin}' returned an invalid response: {message}")]
    BadResponse { plugin: String, message: String },
    #[error("plugin '{plugin}' is serving its limit of {limit} requests at once; try again")]
    Busy { plugin: String, limit: u32 },
    #[error("too many plugin requests in flight; try again")]
    HostBusy,
    /// Not the plugin's failure: a job it submitted went over the owner's quota.
    #[error("{}", .0.message)]
    OverQuota(focal_core::QuotaExceeded),
}

impl PluginFailure {
    /// The HTTP status the failure maps to.
    pub fn status(&self) -> u16 {
        match self {
            PluginFailure::Timeout { .. } => 504,
            PluginFailure::Busy { .. } | PluginFailure::HostBusy => 503,
            // The plugin is the upstream here: what it answered is not a valid HTTP response.
            PluginFailure::BadResponse { .. } => 502,
            PluginFailure::OverQuota(_) => 429,
            _ => 500,
        }
    }
}

/// Await a call into a plugin, with a backstop for time spent in host awaits (the epoch only
/// fires while wasm runs).
pub(crate) async fn within_budget<T>(m: &PluginManifest, call: impl std::future::Future<Output = T>) -> Result<T, PluginFailure> {
    let limit = Duration::from_millis(m.limits.timeout_ms);
    tokio::time::timeout(limit + EPOCH_TICK * 10, call)
        .await
        .map_err(|_| PluginFailure::Timeout { plugin: m.name.clone(), limit_ms: m.limits.timeout_ms })
}

/// What a wasmtime error from a plugin call means for the caller (logged with the guest's
/// stderr, e.g. its panic message).
pub(crate) fn failure(m: &PluginManifest, stderr: &MemoryOutputPipe, e: wasmtime::Error, store: &Store<State>) -> PluginFailure {
    let name = &m.name;
    let elapsed = store.data().started.elapsed();
    let trap = e.downcast_ref::<Trap>().copied();
    let text = format!("{e:#}");
    let out = stderr.contents();
    let guest_said = String::from_utf8_lossy(&out);
    let stderr = escape_plugin_text(guest_said.trim());
    tracing::warn!(plugin = %name, ?trap, elapsed_ms = elapsed.as_millis() as u64, stderr = %stderr, "plugin failed: {}", escape_plugin_text(&text));
    if trap == Some(Trap::Interrupt) {
        PluginFailure::Timeout { plugin: name.clone(), limit_ms: m.limits.timeout_ms }
    } else if text.contains("forcing trap when growing memory") {
        PluginFailure::OutOfMemory { plugin: name.clone(), limit_mb: m.limits.memory_mb }
    } else if text.contains("concurrent limit") {
        PluginFailure::HostBusy
    } else {
        let detail = guest_said.lines().rev().find(|l| l.contains("panicked")).map(str::to_string);
        PluginFailure::Trap { plugin: name.clone(), message: detail.unwrap_or_else(|| first_line(&e.root_cause().to_string())) }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}
