//! One module per contract version (`focal:plugin@X.Y.Z` in `wit/focal-plugin@X.Y.Z/`), each with
//! its generated bindings, the host side of its imports and the conversions to the host's
//! domain types (Zed's `wasm_host/wit/since_v*` layout). The version a component speaks is read
//! from its imports and exports when it is loaded.

pub mod v0_1;
pub mod v0_2;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Engine;

/// A contract version this host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractVersion {
    V0_1,
    V0_2,
}

impl ContractVersion {
    pub const ALL: [ContractVersion; 2] = [ContractVersion::V0_1, ContractVersion::V0_2];

    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => "0.2.0",
        }
    }

    /// The version of `focal:plugin` a component was built against: the one its `focal:plugin`
    /// imports and exports name. `Err` names what is wrong (none, several, unknown ones).
    pub fn of(component: &Component, engine: &Engine) -> Result<ContractVersion, String> {
        let ty = component.component_type();
        let names = ty.imports(engine).chain(ty.exports(engine)).map(|(name, item)| (name.to_string(), item));
        let mut found: Vec<String> = Vec::new();
        for (name, item) in names {
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                continue;
            }
            if let Some(version) = name.strip_prefix("focal:plugin/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v.to_string()) {
                if !found.contains(&version) {
                    found.push(version);
                }
            }
        }
        match found.as_slice() {
            [] => Err("it neither imports nor exports any focal:plugin interface".into()),
            [one] => ContractVersion::ALL
                .into_iter()
                .find(|v| v.as_str() == one)
                .ok_or_else(|| format!("it was built against focal:plugin@{one}; this focal serves {}", served())),
            several => Err(format!("it mixes focal:plugin versions {}", several.join(", "))),
        }
    }
}

/// The served versions, for messages: `0.1.0, 0.2.0`.
pub fn served() -> String {
    ContractVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
}

/// Link every served version's imports (their names differ by version, so they coexist).
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<crate::host::State>) -> wasmtime::Result<()> {
    v0_1::add_to_linker(linker)?;
    v0_2::add_to_linker(linker)
}

/// The host side of the interfaces that read the same in every version so far (`types`, `log`,
/// `config`, `prompts`, `random`, `expansion`, `files`, `fetch`), written once and expanded in
/// each version's module, where the bindings give them the same names.
macro_rules! unchanged_interfaces {
    () => {
        impl types::Host for State {}

        impl log::Host for State {
            async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
                let level = match level {
                    log::Level::Trace => tracing::Level::TRACE,
                    log::Level::Debug => tracing::Level::DEBUG,
                    log::Level::Info => tracing::Level::INFO,
                    log::Level::Warn => tracing::Level::WARN,
                    log::Level::Error => tracing::Level::ERROR,
                };
                self.write_log(level, message);
                Ok(())
            }
        }

        impl config::Host for State {
            async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                Ok(self.config_value(&key))
            }
        }

        impl prompts::Host for State {
            async fn styles(&mut self) -> wasmtime::Result<Vec<String>> {
                Ok(self.prompt_styles().await)
            }
        }

        impl random::Host for State {
            async fn below(&mut self, n: u32) -> wasmtime::Result<u32> {
                self.random_below(n)
            }
        }

        impl expansion::Host for State {
            async fn expand(&mut self, prompt: String, seed: u64) -> wasmtime::Result<Result<String, String>> {
                Ok(self.expand_prompt(prompt, seed)?.await)
            }
        }

        impl files::Host for State {
            async fn read(&mut self, path: String, format: Option<String>) -> wasmtime::Result<Option<files::File>> {
                let file = self.files()?.read(&self.owner, &path, format.as_deref());
                Ok(file.map(|f| files::File { content_type: f.content_type, body: f.body }))
            }
        }

        impl fetch::Host for State {
            async fn get(&mut self, url: String) -> wasmtime::Result<Result<Vec<u8>, String>> {
                Ok(self.fetch_url(url)?.await)
            }
        }
    };
}

/// The `engine` calls that read the same in every version so far (get, wait, files, queue,
/// history, delete, release-memory), expanded inside each version's `engine::Host` impl, with
/// that version's `job_info` conversion in scope.
macro_rules! engine_queries {
    () => {
        async fn get(&mut self, id: String) -> wasmtime::Result<Option<engine::JobInfo>> {
            Ok(self.engine()?.get(&self.owner, &id).map(job_info))
        }

        async fn wait(&mut self, id: String, timeout_ms: u32) -> wasmtime::Result<Option<engine::JobInfo>> {
            let engine = self.engine()?;
            Ok(engine.wait(&self.owner, &id, self.budget(timeout_ms)).await.map(job_info))
        }

        async fn image_file(&mut self, id: String, index: u32) -> wasmtime::Result<Option<Vec<u8>>> {
            Ok(self.engine()?.image_file(&self.owner, &id, index))
        }

        async fn queue(&mut self) -> wasmtime::Result<engine::QueueInfo> {
            let q = self.engine()?.queue(&self.owner);
            Ok(engine::QueueInfo { running_size: q.running_size, finished_size: q.finished_size, last_job_id: q.last_job_id })
        }

        async fn history(
            &mut self,
            job_id: Option<String>,
            offset: u32,
            limit: u32,
        ) -> wasmtime::Result<(Vec<engine::JobInfo>, Vec<engine::JobInfo>)> {
            let (queue, history) = self.engine()?.history(&self.owner, job_id.as_deref(), offset, limit);
            Ok((queue.into_iter().map(job_info).collect(), history.into_iter().map(job_info).collect()))
        }

        async fn delete(&mut self, id: String) -> wasmtime::Result<bool> {
            Ok(self.engine()?.delete(&self.owner, &id))
        }

        async fn release_memory(&mut self) -> wasmtime::Result<()> {
            self.engine()?.release_memory();
            Ok(())
        }
    };
}

/// Conversions between the domain `PromptTask` and a version's `prompt-task` record (the same
/// fields in every version so far).
macro_rules! prompt_task_conversions {
    ($task:ident) => {
        pub(crate) fn prompt_task_in(t: focal_core::PromptTask) -> $task {
            $crate::bindings::copy_prompt_task!(t, $task)
        }
        pub(crate) fn prompt_task_out(t: $task) -> focal_core::PromptTask {
            use focal_core::PromptTask as Domain;
            $crate::bindings::copy_prompt_task!(t, Domain)
        }
    };
}

macro_rules! copy_prompt_task {
    ($t:ident, $ty:ident) => {
        $ty {
            index: $t.index,
            seed: $t.seed,
            prompt: $t.prompt,
            negative_prompt: $t.negative_prompt,
            extra_positive: $t.extra_positive,
            extra_negative: $t.extra_negative,
            styles: $t.styles,
            applied_styles: $t.applied_styles,
            positive: $t.positive,
            negative: $t.negative,
            placeholder_used: $t.placeholder_used,
            expansion: $t.expansion,
            loras: $t.loras,
            read_wildcards_in_order: $t.read_wildcards_in_order,
        }
    };
}

pub(crate) use {copy_prompt_task, engine_queries, prompt_task_conversions, unchanged_interfaces};
