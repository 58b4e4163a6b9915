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
    /// Plugins compiled into the binary; a directory plugin of the same name replaces one.
    builtins: BTreeMap<String, Arc<Plugin>>,
    state: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    // (directory plugins only; built-ins live in `Registry::builtins`)
    /// Plugin name → (files' fingerprint, plugin).
    plugins: BTreeMap<String, (Fingerprint, Arc<Plugin>)>,
    /// Route prefix → endpoint plugin, longest prefix first.
    routes: Vec<(String, Arc<Plugin>)>,
    /// Every plugin served (built-ins not overridden, then directory plugins), by name.
    served: BTreeMap<String, Arc<Plugin>>,
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
        Self::with_builtins(host, dir, &[])
    }

    /// Like [`load`](Self::load), plus built-in plugins given as `(manifest TOML, component)`.
    pub fn with_builtins(host: &PluginHost, dir: &Path, builtins: &[(&str, &[u8])]) -> Arc<Self> {
        let mut loaded = BTreeMap::new();
        for (toml, wasm) in builtins {
            let plugin = PluginManifest::parse(toml, Path::new("<built-in>")).and_then(|m| host.load(m, wasm));
            match plugin {
                Ok(p) => {
                    loaded.insert(p.manifest.name.clone(), Arc::new(p));
                }
                Err(e) => tracing::error!("built-in plugin: {e:#}"),
            }
        }
        let registry = Arc::new(Self { dir: dir.to_path_buf(), builtins: loaded, state: RwLock::new(Loaded::default()) });
        registry.rescan(host);
        // Publish even when the directory is empty, so the built-ins are routed.
        let current = registry.state.read().unwrap().plugins.clone();
        registry.publish(current, true);
        registry
    }

    /// The plugins being served (built-ins not overridden, then directory plugins), by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.state.read().unwrap().served.values().cloned().collect()
    }

    /// The prompt steps, in pipeline order (manifest `order`, then name).
    pub fn prompt_steps(&self) -> Vec<Arc<Plugin>> {
        let mut steps: Vec<Arc<Plugin>> = self.plugins().into_iter().filter(|p| p.is_prompt_step()).collect();
        steps.sort_by(|a, b| (a.manifest.order, &a.manifest.name).cmp(&(b.manifest.order, &b.manifest.name)));
        steps
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
        self.publish(next, changed);
    }

    /// Install `plugins` (directory plugins) with the built-ins and rebuild the route table.
    fn publish(&self, plugins: BTreeMap<String, (Fingerprint, Arc<Plugin>)>, changed: bool) {
        if !changed {
            return;
        }
        let mut state = self.state.write().unwrap();
        let mut served: BTreeMap<String, Arc<Plugin>> = self.builtins.clone();
        for (_, p) in plugins.values() {
            served.insert(p.manifest.name.clone(), p.clone());
        }
        let mut routes: Vec<(String, Arc<Plugin>)> = served
            .values()
            .filter(|p| !p.is_prompt_step())
            .flat_map(|p| p.manifest.routes.iter().map(move |r| (r.clone(), p.clone())))
            .collect();
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        *state = Loaded { plugins, routes, served };
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
