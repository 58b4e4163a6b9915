//! The operator's grants to directory plugins (`<plugins dir>/policy.toml`). A plugin's manifest
//! *requests* capabilities and limits; with a policy file, only what the policy *grants* loads:
//! a plugin asking for more is refused at load with a message naming what was refused (the
//! version it would replace keeps serving). Without the file every request is granted, as
//! before policies existed. Built-in plugins are the host's own and not subject to it.
//!
//! ```toml
//! [default]                      # every plugin not named below (absent: nothing granted)
//! capabilities = ["engine", "files"]
//! max_memory_mb = 256
//! max_timeout_ms = 60000
//!
//! [plugins.studio]               # fields left out fall back to [default]
//! capabilities = ["engine", "files", "fetch"]
//! fetch_hosts = ["images.example.com"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use focal_runtime::{Capability, PluginManifest};
use serde::Deserialize;

pub const FILE_NAME: &str = "policy.toml";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub capabilities: Option<Vec<Capability>>,
    pub max_memory_mb: Option<u64>,
    pub max_timeout_ms: Option<u64>,
    /// Hosts `fetch` may reach (absent: any the host's fetch policy allows).
    pub fetch_hosts: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub default: Grant,
    #[serde(default)]
    pub plugins: BTreeMap<String, Grant>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl Policy {
    /// The policy in `dir`, `None` without one; a file that does not parse is an error (every
    /// directory plugin is then refused rather than granted everything).
    pub fn load(dir: &Path) -> anyhow::Result<Option<Policy>> {
        let file = path(dir);
        if !file.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file)?;
        let policy = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: invalid plugin policy: {e}", file.display()))?;
        Ok(Some(policy))
    }

    /// Check `manifest` against its grant and bind the fetch allow-list; the error names
    /// everything refused.
    pub fn apply(&self, manifest: &mut PluginManifest) -> Result<(), String> {
        let own = self.plugins.get(&manifest.name).cloned().unwrap_or_default();
        let grant = Grant {
            capabilities: own.capabilities.or_else(|| self.default.capabilities.clone()),
            max_memory_mb: own.max_memory_mb.or(self.default.max_memory_mb),
            max_timeout_ms: own.max_timeout_ms.or(self.default.max_timeout_ms),
            fetch_hosts: own.fetch_hosts.or_else(|| self.default.fetch_hosts.clone()),
        };
        let granted = grant.capabilities.unwrap_or_default();
        let mut refused: Vec<String> = manifest
            .capabilities
            .iter()
            .filter(|c| !granted.contains(c))
            .map(|c| format!("capability {}", format!("{c:?}").to_lowercase()))
            .collect();
        if let Some(max) = grant.max_memory_mb.filter(|m| manifest.limits.memory_mb > *m) {
            refused.push(format!("memory_mb {} (granted {max})", manifest.limits.memory_mb));
        }
        if let Some(max) = grant.max_timeout_ms.filter(|m| manifest.limits.timeout_ms > *m) {
            refused.push(format!("timeout_ms {} (granted {max})", manifest.limits.timeout_ms));
        }
        if !refused.is_empty() {
            return Err(format!(
                "plugin '{}' requests what the operator's {FILE_NAME} does not grant: {}",
                manifest.name,
                refused.join(", ")
            ));
        }
        manifest.fetch_hosts = grant.fetch_hosts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> PluginManifest {
        PluginManifest::parse(text, Path::new("x.toml")).unwrap()
    }

    #[test]
    fn grants_are_checked_and_merged_with_the_default() {
        let policy: Policy = toml::from_str(
            "[default]\ncapabilities = [\"engine\"]\nmax_memory_mb = 128\n[plugins.studio]\ncapabilities = [\"engine\", \"fetch\"]\nfetch_hosts = [\"a.example\"]\n",
        )
        .unwrap();
        let mut ok = manifest("name = \"studio\"\ncapabilities = [\"engine\", \"fetch\"]\n[limits]\nmemory_mb = 100\n");
        policy.apply(&mut ok).unwrap();
        assert_eq!(ok.fetch_hosts, Some(vec!["a.example".to_string()]));
        let mut greedy = manifest("name = \"other\"\ncapabilities = [\"engine\", \"files\"]\n[limits]\nmemory_mb = 512\n");
        let e = policy.apply(&mut greedy).unwrap_err();
        assert!(e.contains("capability files") && e.contains("memory_mb 512 (granted 128)"), "{e}");
        let nothing: Policy = toml::from_str("").unwrap();
        assert!(
            nothing.apply(&mut manifest("name = \"p\"\ncapabilities = [\"engine\"]\n")).is_err(),
            "a policy file grants nothing by default"
        );
    }
}
