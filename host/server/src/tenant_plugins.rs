//! Tenants' own endpoint plugins: installed through the admin API into
//! `<data-dir>/tenants/<tenant>/plugins/`, served under `/t/<tenant>/…` to that tenant's key only,
//! running as that tenant (its engine and files calls see its own jobs), within what its plan
//! grants (the host writes the folder's `policy.toml` from the plan: `engine` and `files`, its
//! plugin memory and time). Each folder is a registry of its own, watched like the main one: a
//! replaced plugin serves new requests once it compiled, in-flight ones finish on the old
//! version, and one that fails to compile or speaks an unsupported contract is refused while
//! the old one keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use focal_runtime::{PluginHost, PluginManifest};

use crate::registry::Registry;
use crate::tenants::Quota;

/// What a tenant plugin gets when its plan does not say (the host's plugin defaults).
const DEFAULT_MEMORY_MB: u64 = 128;
const DEFAULT_TIMEOUT_MS: u64 = 60_000;

pub struct TenantPlugins {
    root: PathBuf,
    host: Arc<PluginHost>,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
}

/// Write through a temporary name, so the watcher never reads half a file.
fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)?;
    Ok(())
}

impl TenantPlugins {
    /// `root` is the data folder (`<root>/tenants/<name>/plugins`).
    pub fn new(root: &Path, host: Arc<PluginHost>) -> Arc<Self> {
        Arc::new(Self { root: root.to_path_buf(), host, registries: Mutex::new(HashMap::new()) })
    }

    fn dir(&self, tenant: &str) -> PathBuf {
        self.root.join("tenants").join(tenant).join("plugins")
    }

    /// The tenant's registry, loaded and watched on first use (call inside the tokio runtime).
    pub fn registry(&self, tenant: &str) -> Option<Arc<Registry>> {
        let dir = self.dir(tenant);
        if !dir.is_dir() {
            return None;
        }
        let mut all = self.registries.lock().unwrap();
        if let Some(r) = all.get(tenant) {
            return Some(r.clone());
        }
        let registry = Registry::load(&self.host, &dir);
        registry.clone().watch(self.host.clone());
        all.insert(tenant.to_string(), registry.clone());
        Some(registry)
    }

    /// Install (or replace) `tenant`'s plugin from its manifest and component; it serves once
    /// the watcher compiled it (within a second).
    pub fn install(&self, tenant: &str, plan: &Quota, manifest: &str, component: &[u8]) -> Result<String> {
        crate::tenants::check_name(tenant)?;
        let parsed = PluginManifest::parse(manifest, Path::new("manifest"))?;
        if parsed.replaces.is_some() {
            bail!("a tenant plugin cannot replace another plugin");
        }
        let dir = self.dir(tenant);
        std::fs::create_dir_all(&dir)?;
        let policy = format!(
            "# Written by focal from tenant '{tenant}''s plan; edits are overwritten.\n[default]\ncapabilities = [\"engine\", \"files\"]\nmax_memory_mb = {}\nmax_timeout_ms = {}\nfetch_hosts = []\n",
            plan.plugin_memory_mb.unwrap_or(DEFAULT_MEMORY_MB),
            plan.plugin_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
        );
        if std::fs::read_to_string(crate::policy::path(&dir)).ok().as_deref() != Some(policy.as_str()) {
            put(&crate::policy::path(&dir), policy.as_bytes())?;
        }
        let name = parsed.name;
        put(&dir.join(format!("{name}.wasm")), component)?;
        put(&dir.join(format!("{name}.toml")), manifest.as_bytes())?;
        Ok(name)
    }

    pub fn remove(&self, tenant: &str, name: &str) -> Result<()> {
        let dir = self.dir(tenant);
        let wasm = dir.join(format!("{name}.wasm"));
        if name.contains(['/', '\\', '.']) || !wasm.is_file() {
            bail!("tenant '{tenant}' has no plugin '{name}'");
        }
        std::fs::remove_file(wasm)?;
        let _ = std::fs::remove_file(dir.join(format!("{name}.toml")));
        Ok(())
    }

    /// The names of the tenant's plugins being served.
    pub fn served(&self, tenant: &str) -> Vec<String> {
        self.registry(tenant).map(|r| r.plugins().iter().map(|p| p.manifest.name.clone()).collect()).unwrap_or_default()
    }
}
