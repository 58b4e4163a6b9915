//! The loaded plugins and the route table, rebuilt when the plugins directory changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use focal_runtime::{Plugin, PluginHost, PluginManifest, World};

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
    /// File stem → (files' fingerprint, plugin).
    plugins: BTreeMap<String, (Fingerprint, Arc<Plugin>)>,
    /// File stem → fingerprint of files that were refused: not compiled or logged again until
    /// they change.
    refused: BTreeMap<String, Fingerprint>,
    /// Route prefix → endpoint plugin, longest prefix first.
    routes: Vec<(String, Arc<Plugin>)>,
    /// Every plugin served (built-ins not overridden, then directory plugins), by name.
    served: BTreeMap<String, Arc<Plugin>>,
}

/// Modification times and sizes of a plugin's `.wasm` and `.toml`.
type Fingerprint = Vec<(SystemTime, u64)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())).collect()
}

/// A directory plugin on its way to being served.
struct Candidate {
    file: String,
    fingerprint: Fingerprint,
    plugin: Arc<Plugin>,
    /// The version served before this scan (when the file changed, the previous one).
    previous: Option<(Fingerprint, Arc<Plugin>)>,
    /// Unchanged since the last scan: it keeps what it holds against newcomers.
    serving: bool,
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
        // The first scan publishes even an empty directory, so the built-ins are routed.
        registry.scan(host, true);
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

    /// Reload what changed; keep serving the previous version of a plugin that fails to load
    /// or is refused.
    pub fn rescan(&self, host: &PluginHost) {
        self.scan(host, false);
    }

    fn scan(&self, host: &PluginHost, first: bool) {
        let (current, mut refused) = {
            let state = self.state.read().unwrap();
            (state.plugins.clone(), state.refused.clone())
        };
        let mut changed = first;
        let mut candidates = Vec::new();
        let found = self.components();
        refused.retain(|file, _| found.iter().any(|(f, _, _)| f == file));
        // The operator's policy is read on every scan; editing it reloads every plugin.
        let policy = crate::policy::Policy::load(&self.dir);
        let policy_file = crate::policy::path(&self.dir);
        for (file, manifest_path, wasm_path) in found {
            let fp = fingerprint(&[wasm_path.clone(), manifest_path.clone(), policy_file.clone()]);
            let previous = current.get(&file).cloned();
            if let Some((old_fp, old)) = &previous {
                if *old_fp == fp {
                    candidates.push(Candidate { file, fingerprint: fp, plugin: old.clone(), previous: None, serving: true });
                    continue;
                }
            }
            if refused.get(&file) == Some(&fp) {
                // Refused before and unchanged: its previous version (if any) keeps serving.
                if let Some((old_fp, old)) = previous {
                    candidates.push(Candidate { file, fingerprint: old_fp, plugin: old, previous: None, serving: true });
                }
                continue;
            }
            changed = true;
            refused.remove(&file);
            match load_one(host, &file, &manifest_path, &wasm_path, &policy) {
                Ok(p) => candidates.push(Candidate { file, fingerprint: fp, plugin: Arc::new(p), previous, serving: false }),
                Err(e) => {
                    tracing::error!("{e:#}");
                    refused.insert(file.clone(), fp);
                    if let Some((old_fp, old)) = previous {
                        candidates.push(Candidate { file, fingerprint: old_fp, plugin: old, previous: None, serving: true });
                    }
                }
            }
        }
        if candidates.len() != current.len() {
            changed = true;
        }
        if !changed {
            return;
        }
        let (plugins, served, routes) = self.settle(candidates, &mut refused);
        *self.state.write().unwrap() = Loaded { plugins, refused, routes, served };
    }

    /// Decide which candidates are served and who serves each route. A plugin already serving
    /// keeps its name and routes against a newcomer; a newcomer that claims a name or a route
    /// someone else holds is refused with a warning naming both (a route can be taken over
    /// only from the plugin the newcomer's manifest names in `replaces`); a directory plugin
    /// with a built-in's name replaces that built-in as a whole.
    #[allow(clippy::type_complexity)]
    fn settle(
        &self,
        mut candidates: Vec<Candidate>,
        refused: &mut BTreeMap<String, Fingerprint>,
    ) -> (BTreeMap<String, (Fingerprint, Arc<Plugin>)>, BTreeMap<String, Arc<Plugin>>, Vec<(String, Arc<Plugin>)>) {
        // Serving first; then a file named after its plugin; then by file name.
        candidates.sort_by(|a, b| {
            let key = |c: &Candidate| (!c.serving, c.file != c.plugin.manifest.name, c.file.clone());
            key(a).cmp(&key(b))
        });
        let mut accepted: Vec<Candidate> = Vec::new();
        for c in candidates {
            let name = &c.plugin.manifest.name;
            if let Some(holder) = accepted.iter().find(|a| &a.plugin.manifest.name == name) {
                tracing::warn!(
                    "{}.wasm refused: plugin name '{name}' is already served by {}.wasm; rename one of them",
                    c.file,
                    holder.file
                );
                self.refuse(c, refused, &mut accepted);
                continue;
            }
            accepted.push(c);
        }
        // Routes: the built-ins not replaced by name, then the directory plugins in order.
        let mut served: BTreeMap<String, Arc<Plugin>> = self.builtins.clone();
        for c in &accepted {
            served.insert(c.plugin.manifest.name.clone(), c.plugin.clone());
        }
        let mut routes: Vec<(String, Arc<Plugin>)> = Vec::new();
        let endpoints = |p: &Arc<Plugin>| p.world() == World::Endpoint;
        for p in self.builtins.values().filter(|p| endpoints(p) && Arc::ptr_eq(&served[&p.manifest.name], p)) {
            routes.extend(p.manifest.routes.iter().map(|r| (r.clone(), p.clone())));
        }
        let mut kept = Vec::new();
        for c in accepted {
            if !endpoints(&c.plugin) {
                kept.push(c);
                continue;
            }
            let m = &c.plugin.manifest;
            let conflict = m.routes.iter().find_map(|r| {
                let holder = routes.iter().find(|(held, _)| held == r)?;
                (m.replaces.as_deref() != Some(holder.1.manifest.name.as_str())).then(|| (r.clone(), holder.1.manifest.name.clone()))
            });
            if let Some((route, holder)) = conflict {
                tracing::warn!(
                    "{}.wasm refused: plugin '{}' claims route '{route}', which plugin '{holder}' serves \
                     (set `replaces = \"{holder}\"` in its manifest to take it over)",
                    c.file,
                    m.name
                );
                served.remove(&m.name);
                let mut fallback = Vec::new();
                self.refuse(c, refused, &mut fallback);
                // The previous version of a changed file keeps serving what it served.
                for old in fallback {
                    served.insert(old.plugin.manifest.name.clone(), old.plugin.clone());
                    routes.extend(old.plugin.manifest.routes.iter().map(|r| (r.clone(), old.plugin.clone())));
                    kept.push(old);
                }
                continue;
            }
            for r in &m.routes {
                if let Some(pos) = routes.iter().position(|(held, _)| held == r) {
                    tracing::warn!("plugin '{}' takes over route '{r}' from plugin '{}' (replaces)", m.name, routes[pos].1.manifest.name);
                    routes.remove(pos);
                }
                routes.push((r.clone(), c.plugin.clone()));
            }
            kept.push(c);
        }
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let plugins = kept.into_iter().map(|c| (c.file, (c.fingerprint, c.plugin))).collect();
        (plugins, served, routes)
    }

    /// Remember a refused candidate's files; its previous version, if any, goes to `fallback`.
    fn refuse(&self, c: Candidate, refused: &mut BTreeMap<String, Fingerprint>, fallback: &mut Vec<Candidate>) {
        if c.serving {
            // Only a newcomer is refused; an unchanged serving plugin never gets here.
            return;
        }
        refused.insert(c.file.clone(), c.fingerprint);
        if let Some((fp, old)) = c.previous {
            fallback.push(Candidate { file: c.file, fingerprint: fp, plugin: old, previous: None, serving: true });
        }
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

fn load_one(
    host: &PluginHost,
    file_name: &str,
    manifest_path: &Path,
    wasm_path: &Path,
    policy: &anyhow::Result<Option<crate::policy::Policy>>,
) -> anyhow::Result<Plugin> {
    let mut manifest = if manifest_path.exists() {
        let text = std::fs::read_to_string(manifest_path)?;
        PluginManifest::parse(&text, manifest_path)?
    } else {
        PluginManifest::default_for(file_name)
    };
    match policy {
        Ok(Some(policy)) => policy.apply(&mut manifest).map_err(|e| anyhow::anyhow!("{}: {e}", wasm_path.display()))?,
        Ok(None) => {}
        Err(e) => anyhow::bail!("{}: refused: {e:#}", wasm_path.display()),
    }
    let wasm = std::fs::read(wasm_path)?;
    host.load(manifest, &wasm).map_err(|e| anyhow::anyhow!("{}: {e:#}", wasm_path.display()))
}
