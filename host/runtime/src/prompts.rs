//! The prompt pipeline: every prompt-step plugin in order on one image's prompt, then the
//! workloads assembled as Fooocus's `process_prompt` does (see `wit/plugin.wit`,
//! `prompt-processor`).

use std::sync::Arc;

use crate::host::{Plugin, PluginHost};
use crate::pyrandom::PyRandom;
use focal_core::PromptTask;

/// One image's prompt as a job asks for it.
#[derive(Debug, Clone)]
pub struct PromptInput {
    pub index: u32,
    pub seed: u64,
    pub prompt: String,
    pub negative_prompt: String,
    pub styles: Vec<String>,
    pub read_wildcards_in_order: bool,
}

/// What the engine encodes for one image, and what its metadata reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptOutput {
    /// The main prompt after the steps (wildcards, arrays, LoRA tags removed …).
    pub prompt: String,
    pub negative_prompt: String,
    /// Fooocus's log text: main line and extra lines joined by newlines.
    pub log_prompt: String,
    pub log_negative_prompt: String,
    /// Workloads, each encoded on its own and concatenated along the sequence.
    pub positive: Vec<String>,
    pub negative: Vec<String>,
    /// How many leading workloads feed the (summed) pooled vector.
    pub positive_pooled: usize,
    pub negative_pooled: usize,
    pub expansion: String,
    /// Styles applied, in order (a "Random Style" replaced by the style it drew).
    pub styles: Vec<String>,
    /// Requested styles no step knew.
    pub unknown_styles: Vec<String>,
    /// LoRAs the prompt asked for, as (file stem, weight).
    pub loras: Vec<(String, f32)>,
}

/// Python's `remove_empty_str(items, default)`.
fn non_empty(items: Vec<String>, default: &str) -> Vec<String> {
    let kept: Vec<String> = items.into_iter().filter(|s| !s.is_empty()).collect();
    if kept.is_empty() {
        vec![default.to_string()]
    } else {
        kept
    }
}

/// The task the first step receives: the request's whole texts, nothing applied yet.
pub fn initial_task(input: PromptInput) -> PromptTask {
    PromptTask {
        index: input.index,
        seed: input.seed,
        prompt: input.prompt,
        negative_prompt: input.negative_prompt,
        styles: input.styles,
        read_wildcards_in_order: input.read_wildcards_in_order,
        ..PromptTask::default()
    }
}

/// Run `steps` (already in pipeline order) on one image. Any step's failure or refusal fails
/// the image with a message naming the step.
pub async fn run(host: &PluginHost, steps: &[Arc<Plugin>], input: PromptInput) -> Result<PromptOutput, String> {
    let mut random = PyRandom::new(input.seed);
    let mut task = initial_task(input);
    for step in steps {
        let name = &step.manifest.name;
        let (result, rng) = host.process_prompt(step, task, random).await.map_err(|e| format!("prompt step '{name}': {e}"))?;
        task = result.map_err(|e| format!("prompt step '{name}': {e}"))?;
        random = rng;
    }
    Ok(assemble(task))
}

/// Fooocus's workload assembly after the steps (see `prompt-processor` in the WIT).
pub fn assemble(mut task: PromptTask) -> PromptOutput {
    let mut positive = if task.placeholder_used { vec![] } else { vec![task.prompt.clone()] };
    positive.append(&mut task.positive);
    positive.extend(task.extra_positive.iter().cloned());
    let mut negative = std::mem::take(&mut task.negative);
    negative.push(task.negative_prompt.clone());
    negative.extend(task.extra_negative.iter().cloned());
    let mut positive = non_empty(positive, &task.prompt);
    let negative = non_empty(negative, &task.negative_prompt);
    let (positive_pooled, negative_pooled) = (positive.len(), negative.len());
    if !task.expansion.is_empty() {
        positive.push(task.expansion.clone());
    }
    let join = |main: &str, extra: &[String]| std::iter::once(main.to_string()).chain(extra.iter().cloned()).collect::<Vec<_>>().join("\n");
    PromptOutput {
        log_prompt: join(&task.prompt, &task.extra_positive),
        log_negative_prompt: join(&task.negative_prompt, &task.extra_negative),
        prompt: task.prompt,
        negative_prompt: task.negative_prompt,
        positive,
        negative,
        positive_pooled,
        negative_pooled,
        expansion: task.expansion,
        styles: task.applied_styles,
        unknown_styles: task.styles,
        loras: task.loras,
    }
}
