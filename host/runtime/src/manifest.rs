//! Plugin manifests (`<name>.toml` beside `<name>.wasm`): routes, limits, capabilities, config.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    /// Unique plugin name (also the default route prefix `/{name}`).
    pub name: String,
    /// Path prefixes this plugin serves, e.g. `["/v1/generation", "/ping"]`.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    /// Host capabilities the plugin may use; anything else is refused at call time.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Values the plugin reads with `config.get`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Prompt steps run in ascending `order` (ties by name); endpoints ignore it.
    #[serde(default = "default_order")]
    pub order: i32,
    /// A plugin whose routes this one may take over. Without it, a route another plugin
    /// already serves is refused (an operator sets this to replace, say, the built-in `/`).
    #[serde(default)]
    pub replaces: Option<String>,
    /// Hosts `fetch` may reach, set by the operator's policy (never by the plugin's own
    /// manifest); `None`: any host the fetch policy allows.
    #[serde(skip)]
    pub fetch_hosts: Option<Vec<String>>,
}

fn default_order() -> i32 {
    50
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory ceiling per request, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// Wall-clock budget per request, in milliseconds (includes time spent waiting on the host).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests this plugin serves at once (capped by the host's per-plugin limit); more get
    /// 503, so one busy plugin cannot take the instances every other plugin needs.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_concurrency() -> u32 {
    32
}

fn default_memory_mb() -> u64 {
    64
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_mb: default_memory_mb(), timeout_ms: default_timeout_ms(), concurrency: default_concurrency() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Submit, query and stop generation jobs; list model files (`focal:plugin/engine`).
    Engine,
    /// Read the host's output files (`focal:plugin/files`).
    Files,
    /// Outbound HTTP GET under the host's policy (`focal:plugin/fetch`).
    Fetch,
    /// Read the host's wildcards folder, mounted read-only at `/wildcards`.
    Wildcards,
    /// Run the host's Fooocus V2 prompt expansion (`focal:plugin/expansion`).
    Expansion,
}

impl PluginManifest {
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let m: PluginManifest = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}: invalid plugin manifest: {e}", origin.display()))?;
        if m.name.is_empty() || !m.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            anyhow::bail!("{}: plugin name '{}' must be non-empty ASCII letters, digits, '-' or '_'", origin.display(), m.name);
        }
        for r in &m.routes {
            if !r.starts_with('/') {
                anyhow::bail!("{}: route '{r}' must start with '/'", origin.display());
            }
        }
        Ok(m)
    }

    /// A manifest with defaults for a component that has none: served under `/{name}`.
    pub fn default_for(name: &str) -> Self {
        Self {
            name: name.to_string(),
            routes: vec![format!("/{name}")],
            limits: Limits::default(),
            capabilities: vec![],
            config: BTreeMap::new(),
            order: default_order(),
            replaces: None,
            fetch_hosts: None,
        }
    }

    pub fn grants(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}
