//! The plugin host: engine, linker, compile cache, and one fresh store per request.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use focal_core::image_task::{ImageTaskCall, ImageTaskOutput, UpscaleService};
use focal_core::services::Services;
use focal_core::{Image, Owner, PromptTask};

use crate::bindings::{self, v0_1, v0_2, ContractVersion};
use crate::failure::{failure, within_budget, PluginFailure};
use crate::http::{Request, Response};
use crate::manifest::{Capability, PluginManifest};
use crate::pyrandom::PyRandom;

/// How often the epoch advances; wall-time budgets are checked at this granularity.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Panic messages and other guest stderr kept for the log, per request.
const STDERR_CAPTURE: usize = 64 << 10;
/// Bytes of `log::log` output a plugin may write per request; the rest is dropped (noted once).
pub(crate) const LOG_BUDGET: usize = 64 << 10;
/// Instances kept for prompt steps (they run inside jobs and inside other plugins' requests, so
/// endpoints flooding the host must not be able to take them).
const STEP_INSTANCES: u32 = 32;

#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Where compiled components are cached (`None`: compile on every load).
    pub cache_dir: Option<PathBuf>,
    /// Endpoint requests served at once across all plugins (parked requests included); more
    /// get 503. Prompt steps have [`STEP_INSTANCES`] of their own besides.
    pub max_instances: u32,
    /// The most requests one plugin may serve at once, whatever its manifest asks: the rest of
    /// `max_instances` stays for the other plugins.
    pub max_concurrency_per_plugin: u32,
    /// Largest linear memory any plugin may be granted, in MiB.
    pub max_memory_mb: u64,
    /// Host settings every plugin can read with `config.get("host.<key>")`, e.g. `base-url`.
    pub settings: BTreeMap<String, String>,
    /// Mounted read-only at `/wildcards` for plugins granted `wildcards` (when it exists).
    pub wildcards_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 256,
            max_concurrency_per_plugin: 160,
            max_memory_mb: 512,
            settings: BTreeMap::new(),
            wildcards_dir: None,
        }
    }
}

/// A loaded plugin: its manifest and the pre-linked component.
pub struct Plugin {
    pub manifest: PluginManifest,
    /// sha256 of the component bytes.
    pub digest: String,
    kind: Kind,
    /// Requests in flight at once: the manifest's `concurrency`, capped by the host.
    slots: Arc<Semaphore>,
    concurrency: u32,
}

/// Which world of which contract version a component implements (told apart by its imports
/// and exports at load time).
enum Kind {
    Endpoint01(v0_1::EndpointPre<State>),
    PromptStep01(v0_1::PromptStepPre<State>),
    Endpoint02(v0_2::EndpointPre<State>),
    PromptStep02(v0_2::PromptStepPre<State>),
    ImageStep02(v0_2::ImageStepPre<State>),
    ImageTask02(v0_2::image_task::ImageTaskPre<State>),
}

/// The world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Endpoint,
    PromptStep,
    ImageStep,
    ImageTask,
}

impl Plugin {
    pub fn world(&self) -> World {
        match self.kind {
            Kind::Endpoint01(_) | Kind::Endpoint02(_) => World::Endpoint,
            Kind::PromptStep01(_) | Kind::PromptStep02(_) => World::PromptStep,
            Kind::ImageStep02(_) => World::ImageStep,
            Kind::ImageTask02(_) => World::ImageTask,
        }
    }

    /// A prompt step (world `prompt-step`).
    pub fn is_prompt_step(&self) -> bool {
        self.world() == World::PromptStep
    }

    /// The contract version the component was built against.
    pub fn contract(&self) -> ContractVersion {
        match self.kind {
            Kind::Endpoint01(_) | Kind::PromptStep01(_) => ContractVersion::V0_1,
            Kind::Endpoint02(_) | Kind::PromptStep02(_) | Kind::ImageStep02(_) | Kind::ImageTask02(_) => ContractVersion::V0_2,
        }
    }
}

/// Per-request store data.
pub struct State {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Whose request this is: every engine query is scoped to it.
    pub(crate) owner: Owner,
    /// Image resources the plugin holds now (bounded, see `bindings::v0_2`).
    pub(crate) live_images: usize,
    limits: StoreLimits,
    pub(crate) plugin: Arc<str>,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) settings: Arc<BTreeMap<String, String>>,
    /// Only the services the manifest grants.
    pub(crate) services: Services,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    /// The image's Python generator while a prompt step runs (`focal:plugin/random`).
    pub(crate) random: Option<PyRandom>,
    /// What is left of [`LOG_BUDGET`] for this request.
    pub(crate) log_budget: usize,
    /// A submit this request made went over its owner's quota: the request answers 429.
    pub(crate) over_quota: Option<focal_core::QuotaExceeded>,
    /// The operator's allow-list for `fetch` (see [`PluginManifest::fetch_hosts`]).
    pub(crate) fetch_hosts: Option<Arc<[String]>>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

pub struct PluginHost {
    engine: Engine,
    linker: Linker<State>,
    options: HostOptions,
    settings: Arc<BTreeMap<String, String>>,
    services: Services,
    stop_ticker: Arc<AtomicBool>,
    /// Endpoint requests in flight across all plugins ([`HostOptions::max_instances`]).
    endpoint_slots: Semaphore,
    /// Prompt-step calls in flight ([`STEP_INSTANCES`]).
    step_slots: Semaphore,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginHost {
    pub fn new(options: HostOptions, services: Services) -> anyhow::Result<Self> {
        let max_memory = (options.max_memory_mb as usize) << 20;
        let mut pool = PoolingAllocationConfig::default();
        let instances = options.max_instances + STEP_INSTANCES;
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .max_core_instances_per_component(16)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(max_memory)
            // Reset the first pages with memset instead of madvise: avoids VM-lock contention
            // between workers (see wasmtime#5243).
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(4 << 20)
            .async_stack_keep_resident(4 << 20);
        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(max_memory as u64)
            .memory_guard_size(32 << 20)
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(2 << 20);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::add_to_linker(&mut linker)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new().name("focal-plugin-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                ticker_engine.increment_epoch();
            }
        })?;
        let settings = Arc::new(options.settings.clone());
        let endpoint_slots = Semaphore::new(options.max_instances as usize);
        let step_slots = Semaphore::new(STEP_INSTANCES as usize);
        Ok(Self { engine, linker, options, settings, services, stop_ticker, endpoint_slots, step_slots })
    }

    /// Compile (or load from the cache) and link a component. Fails if the component is not a
    /// valid endpoint plugin or imports something the host does not provide.
    pub fn load(&self, manifest: PluginManifest, wasm: &[u8]) -> anyhow::Result<Plugin> {
        let digest = hex(&Sha256::digest(wasm));
        let component = self.compile(&digest, wasm).with_context(|| format!("plugin '{}'", manifest.name))?;
        let name = &manifest.name;
        let version = ContractVersion::of(&component, &self.engine).map_err(|e| anyhow::anyhow!("plugin '{name}': {e}"))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("plugin '{name}' imports something focal:plugin@{} does not offer", version.as_str()))?;
        let worlds = || -> Result<Kind, Vec<String>> {
            let mut why = Vec::new();
            macro_rules! try_world {
                ($pre:ty, $kind:path, $world:literal) => {
                    match <$pre>::new(pre.clone()) {
                        Ok(p) => return Ok($kind(p)),
                        Err(e) => why.push(format!("not a focal:plugin/{}@{} component ({e:#})", $world, version.as_str())),
                    }
                };
            }
            match version {
                ContractVersion::V0_1 => {
                    try_world!(v0_1::EndpointPre<State>, Kind::Endpoint01, "endpoint");
                    try_world!(v0_1::PromptStepPre<State>, Kind::PromptStep01, "prompt-step");
                }
                ContractVersion::V0_2 => {
                    try_world!(v0_2::EndpointPre<State>, Kind::Endpoint02, "endpoint");
                    try_world!(v0_2::PromptStepPre<State>, Kind::PromptStep02, "prompt-step");
                    try_world!(v0_2::ImageStepPre<State>, Kind::ImageStep02, "image-step");
                    try_world!(v0_2::image_task::ImageTaskPre<State>, Kind::ImageTask02, "image-task");
                }
            }
            Err(why)
        };
        let kind = worlds().map_err(|why| anyhow::anyhow!("plugin '{name}' is {}", why.join("; ")))?;
        if manifest.limits.memory_mb > self.options.max_memory_mb {
            anyhow::bail!(
                "plugin '{}' asks for {} MiB of memory; the host allows at most {} MiB",
                manifest.name,
                manifest.limits.memory_mb,
                self.options.max_memory_mb
            );
        }
        let concurrency = manifest.limits.concurrency.clamp(1, self.options.max_concurrency_per_plugin.max(1));
        Ok(Plugin { manifest, digest, kind, slots: Arc::new(Semaphore::new(concurrency as usize)), concurrency })
    }

    fn compile(&self, digest: &str, wasm: &[u8]) -> anyhow::Result<Component> {
        let Some(dir) = &self.options.cache_dir else { return Ok(Component::new(&self.engine, wasm)?) };
        // Key by content and by everything in the engine config that changes generated code.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let path = dir.join(format!("{digest}-{:016x}.cwasm", h.finish()));
        if path.exists() {
            // SAFETY: the cache directory is owned by the host and written only below, from
            // this engine's own output; plugins have no access to it.
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, &path) } {
                return Ok(c);
            }
        }
        let bytes = self.engine.precompile_component(wasm)?;
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        // SAFETY: as above; these are the bytes this engine just produced.
        Ok(unsafe { Component::deserialize(&self.engine, &bytes) }?)
    }

    /// A fresh store for one call into `m`'s plugin, with its limits and granted services.
    fn store(&self, m: &PluginManifest, owner: Owner, random: Option<PyRandom>) -> (Store<State>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        if let Some(dir) = self.options.wildcards_dir.as_ref().filter(|d| m.grants(Capability::Wildcards) && d.is_dir()) {
            if let Err(e) = wasi.preopened_dir(dir, "/wildcards", FsPerms::ReadOnly) {
                tracing::warn!(plugin = %m.name, "cannot mount {}: {e:#}", dir.display());
            }
        }
        let wasi = wasi.build();
        let now = Instant::now();
        let state = State {
            wasi,
            table: ResourceTable::new(),
            owner,
            live_images: 0,
            limits: StoreLimitsBuilder::new()
                .memory_size((m.limits.memory_mb as usize) << 20)
                .instances(32)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            plugin: Arc::from(m.name.as_str()),
            fetch_hosts: m.fetch_hosts.clone().map(Arc::from),
            config: Arc::new(m.config.clone()),
            settings: self.settings.clone(),
            services: Services {
                engine: self.services.engine.clone().filter(|_| m.grants(Capability::Engine)),
                catalog: self.services.catalog.clone().filter(|_| m.grants(Capability::Engine)),
                images: self.services.images.clone(),
                files: self.services.files.clone().filter(|_| m.grants(Capability::Files)),
                fetch: self.services.fetch.clone().filter(|_| m.grants(Capability::Fetch)),
                expansion: self.services.expansion.clone().filter(|_| m.grants(Capability::Expansion)),
                prompts: self.services.prompts.clone(),
                describe: self.services.describe.clone().filter(|_| m.grants(Capability::Engine)),
                faces: self.services.faces.clone(),
                upscaler: None,
            },
            started: now,
            deadline: now + Duration::from_millis(m.limits.timeout_ms),
            random,
            log_budget: LOG_BUDGET,
            over_quota: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        // Yield to the async runtime at every tick (so busy plugins never starve other
        // requests) and stop the plugin once its wall budget is spent.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        (store, stderr)
    }

    /// Serve one request of `owner` on a fresh instance of `plugin`.
    pub async fn handle(&self, plugin: &Plugin, req: Request, owner: Owner) -> Result<Response, PluginFailure> {
        let m = &plugin.manifest;
        if plugin.world() != World::Endpoint {
            return Err(PluginFailure::BadResponse { plugin: m.name.clone(), message: "only endpoints serve requests".into() });
        }
        // The plugin's own share first, so a flooded plugin is refused without touching the
        // capacity the others need.
        let _plugin_slot =
            plugin.slots.try_acquire().map_err(|_| PluginFailure::Busy { plugin: m.name.clone(), limit: plugin.concurrency })?;
        let _host_slot = self.endpoint_slots.try_acquire().map_err(|_| PluginFailure::HostBusy)?;
        let (mut store, stderr) = self.store(m, owner, None);
        let response = match &plugin.kind {
            Kind::Endpoint01(pre) => {
                let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
                let req = req.into();
                let call = instance.focal_plugin_handler().call_handle(&mut store, &req);
                within_budget(m, call).await?.map(Response::from)
            }
            Kind::Endpoint02(pre) => {
                let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
                let req = req.into();
                let call = instance.focal_plugin_handler().call_handle(&mut store, &req);
                within_budget(m, call).await?.map(Response::from)
            }
            _ => unreachable!("checked above"),
        };
        let response = response.map_err(|e| failure(m, &stderr, e, &store))?;
        if let Some(quota) = store.data_mut().over_quota.take() {
            return Err(PluginFailure::OverQuota(quota));
        }
        validate(&response).map_err(|message| PluginFailure::BadResponse { plugin: m.name.clone(), message })?;
        Ok(response)
    }

    /// The style names a prompt step offers (empty for other plugins).
    pub async fn prompt_styles(&self, plugin: &Plugin) -> Result<Vec<String>, PluginFailure> {
        let m = &plugin.manifest;
        if plugin.world() != World::PromptStep {
            return Ok(vec![]);
        }
        let _slot = self.step_slot(m).await?;
        let (mut store, stderr) = self.store(m, Owner::default(), None);
        let styles = match &plugin.kind {
            Kind::PromptStep01(pre) => {
                let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
                within_budget(m, instance.focal_plugin_prompt_processor().call_styles(&mut store)).await?
            }
            Kind::PromptStep02(pre) => {
                let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
                within_budget(m, instance.focal_plugin_prompt_processor().call_styles(&mut store)).await?
            }
            _ => unreachable!("checked above"),
        };
        styles.map_err(|e| failure(m, &stderr, e, &store))
    }

    /// One of the instances kept for prompt steps, waited for within the step's time budget.
    async fn step_slot(&self, m: &PluginManifest) -> Result<tokio::sync::SemaphorePermit<'_>, PluginFailure> {
        let limit = Duration::from_millis(m.limits.timeout_ms);
        match tokio::time::timeout(limit, self.step_slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(PluginFailure::HostBusy),
        }
    }

    /// Run one prompt step on one image's task, drawing from (and handing back) its generator.
    /// The inner error is the step's own refusal; the outer one a failed plugin.
    pub async fn process_prompt(
        &self,
        plugin: &Plugin,
        task: PromptTask,
        random: PyRandom,
    ) -> Result<(Result<PromptTask, String>, PyRandom), PluginFailure> {
        let m = &plugin.manifest;
        if plugin.world() != World::PromptStep {
            return Err(PluginFailure::BadResponse { plugin: m.name.clone(), message: "not a prompt step".into() });
        }
        let _slot = self.step_slot(m).await?;
        let (mut store, stderr) = self.store(m, Owner::default(), Some(random));
        let result = match &plugin.kind {
            Kind::PromptStep01(pre) => {
                let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
                let task = v0_1::prompt_task_in(task);
                let call = instance.focal_plugin_prompt_processor().call_process(&mut store, &task);
                within_budget(m, call).await?.map(|r| r.map(v0_1::prompt_task_out))
            }
            Kind::PromptStep02(pre) => {
                let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
                let task = v0_2::prompt_task_in(task);
                let call = instance.focal_plugin_prompt_processor().call_process(&mut store, &task);
                within_budget(m, call).await?.map(|r| r.map(v0_2::prompt_task_out))
            }
            _ => unreachable!("checked above"),
        };
        let result = result.map_err(|e| failure(m, &stderr, e, &store))?;
        let random = store.data_mut().random.take().expect("the generator stays in the store");
        Ok((result, random))
    }

    /// Run one image step on one image. The inner error is the step's own refusal; the outer
    /// one a failed plugin.
    pub async fn process_image(
        &self,
        plugin: &Plugin,
        image: Image,
        options: &[(String, String)],
    ) -> Result<Result<Image, String>, PluginFailure> {
        let m = &plugin.manifest;
        let Kind::ImageStep02(pre) = &plugin.kind else {
            return Err(PluginFailure::BadResponse { plugin: m.name.clone(), message: "not an image step".into() });
        };
        let _slot = self.step_slot(m).await?;
        let (mut store, stderr) = self.store(m, Owner::default(), None);
        let input = store.data_mut().new_image(image).map_err(|e| failure(m, &stderr, e, &store))?;
        let input = input.map_err(|message| PluginFailure::BadResponse { plugin: m.name.clone(), message })?;
        let instance = pre.instantiate_async(&mut store).await.map_err(|e| failure(m, &stderr, e, &store))?;
        let call = instance.focal_plugin_image_processor().call_process(&mut store, input, options);
        let output = within_budget(m, call).await?.map_err(|e| failure(m, &stderr, e, &store))?;
        Ok(match output {
            Ok(handle) => Ok(store.data_mut().take_image(handle).map_err(|e| failure(m, &stderr, e, &store))?),
            Err(refusal) => Err(refusal),
        })
    }
    /// Run one call of an image-task component; `upscaler` serves its `super-resolve` for the
    /// job. The inner error is the component's own refusal; the outer one a failed plugin. The
    /// wall budget is the epoch deadline alone, which the upscaler's time moves (a network that
    /// takes minutes on a CPU is the host's time, not the component's).
    pub async fn image_task(
        &self,
        plugin: &Plugin,
        call: ImageTaskCall,
        upscaler: Option<Arc<dyn UpscaleService>>,
    ) -> Result<Result<ImageTaskOutput, String>, PluginFailure> {
        let m = &plugin.manifest;
        let Kind::ImageTask02(pre) = &plugin.kind else {
            return Err(PluginFailure::BadResponse { plugin: m.name.clone(), message: "not an image-task component".into() });
        };
        let _slot = self.step_slot(m).await?;
        let (mut store, stderr) = self.store(m, Owner::default(), None);
        store.data_mut().services.upscaler = upscaler;
        v0_2::image_task::run(pre, &mut store, call).await.map_err(|e| failure(m, &stderr, e, &store))
    }
}

fn validate(r: &Response) -> Result<(), String> {
    if !(100..=599).contains(&r.status) {
        return Err(format!("status {} is not an HTTP status", r.status));
    }
    for (k, v) in &r.headers {
        let bad_name = k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if bad_name || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("invalid header {k:?}"));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
