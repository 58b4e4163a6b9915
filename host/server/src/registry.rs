//! The loaded plugins and the route table, rebuilt when the plugins directory changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use focal_runtime::{Plugin, PluginHost, PluginManifest};

/// How often the plugins directory is checked for added, changed or removed plugins.
const POLL: Duration = Duration::from_millis(500);

pub struct Registry {
    dir: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// Plugin name → (files' fingerprint, plugin).
    plugins: BTreeMap<String, (Fingerprint, Arc<Plugin>)>,
    /// Route prefix → plugin, longest prefix first.
    routes: Vec<(String, Arc<Plugin>)>,
}

/// Modification times and sizes of a plugin's `.wasm` and `.toml`.
type Fingerprint = Vec<(SystemTime, u64)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        .collect()
}

impl Registry {
    /// Load every plugin in `dir` (errors are logged and the plugin skipped, so one bad file
    /// never keeps the server from starting).
    pub fn load(host: &PluginHost, dir: &Path) -> Arc<Self> {
        let registry = Arc::new(Self { dir: dir.to_path_buf(), state: RwLock::new(Loaded::default()) });
        registry.rescan(host);
        registry
    }

    /// Plugins as `(name, plugin)`, sorted by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.state.read().unwrap().plugins.values().map(|(_, p)| p.clone()).collect()
    }

    /// The plugin serving `path` (longest matching route prefix on a segment boundary).
    pub fn route(&self, path: &str) -> Option<Arc<Plugin>> {
        let state = self.state.read().unwrap();
        state
            .routes
            .iter()
            .find(|(prefix, _)| path == prefix || path.starts_with(&format!("{}/", prefix.trim_end_matches('/'))) || prefix == "/")
            .map(|(_, p)| p.clone())
    }

    fn components(&self) -> Vec<(String, PathBuf, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return vec![] };
        let mut v: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .filter_map(|p| {
                let name = p.file_stem()?.to_str()?.to_string();
                Some((name, p.with_extension("toml"), p))
            })
            .collect();
        v.sort();
        v
    }

    /// Reload what changed; keep serving the previous version of a plugin that fails to load.
    pub fn rescan(&self, host: &PluginHost) {
        let found = self.components();
        let mut changed = false;
        let mut next: BTreeMap<String, (Fingerprint, Arc<Plugin>)> = BTreeMap::new();
        let current = self.state.read().unwrap().plugins.clone();
        for (file_name, manifest_path, wasm_path) in found {
            let fp = fingerprint(&[wasm_path.clone(), manifest_path.clone()]);
            if let Some((old_fp, old)) = current.get(&file_name) {
                if *old_fp == fp {
                    next.insert(file_name, (fp, old.clone()));
                    continue;
                }
            }
            changed = true;
            match load_one(host, &file_name, &manifest_path, &wasm_path) {
                Ok(p) => {
                    tracing::info!(plugin = %p.manifest.name, routes = ?p.manifest.routes, "plugin loaded");
                    next.insert(file_name, (fp, Arc::new(p)));
                }
                Err(e) => {
                    tracing::error!("{e:#}");
                    if let Some(old) = current.get(&file_name) {
                        next.insert(file_name, old.clone());
                    }
                }
            }
        }
        if next.len() != current.len() {
            changed = true;
        }
        if !changed {
            return;
        }
        let mut routes: Vec<(String, Arc<Plugin>)> = next
            .values()
            .flat_map(|(_, p)| p.manifest.routes.iter().map(move |r| (r.clone(), p.clone())))
            .collect();
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        *self.state.write().unwrap() = Loaded { plugins: next, routes };
    }

    /// Poll the directory in the background and reload changed plugins (compiling off the
    /// async workers).
    pub fn watch(self: Arc<Self>, host: Arc<PluginHost>) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let (registry, host) = (self.clone(), host.clone());
                let _ = tokio::task::spawn_blocking(move || registry.rescan(&host)).await;
            }
        });
    }
}

fn load_one(host: &PluginHost, file_name: &str, manifest_path: &Path, wasm_path: &Path) -> anyhow::Result<Plugin> {
    let manifest = if manifest_path.exists() {
        let text = std::fs::read_to_string(manifest_path)?;
        PluginManifest::parse(&text, manifest_path)?
    } else {
        PluginManifest::default_for(file_name)
    };
    let wasm = std::fs::read(wasm_path)?;
    host.load(manifest, &wasm).map_err(|e| anyhow::anyhow!("{}: {e:#}", wasm_path.display()))
}
