//! The "Fooocus V2" style as a focal prompt step: when a request selects it, the main prompt
//! (after wildcards and arrays) is expanded by the host's GPT-2 with the image's seed and the
//! result becomes the last positive workload (outside the pooled vector), as Fooocus's
//! `process_prompt` does.
//!
//! Without the expansion model files the style is skipped with a logged warning rather than
//! failing the job: Fooocus-API clients send "Fooocus V2" by default, and the model is
//! CC-BY-NC, so an operator may rightly not install it.

wit_bindgen::generate!({ world: "prompt-step", path: "../../wit/focal-plugin@0.1.0" });

use exports::focal::plugin::prompt_processor::{Guest, PromptTask};
use focal::plugin::{expansion, log};

pub const STYLE: &str = "Fooocus V2";

struct FooocusExpansion;

impl Guest for FooocusExpansion {
    fn styles() -> Vec<String> {
        vec![STYLE.to_string()]
    }

    fn process(mut task: PromptTask) -> Result<PromptTask, String> {
        let before = task.styles.len();
        task.styles.retain(|s| s != STYLE);
        // An empty main prompt disables the expansion (Fooocus's `use_expansion`).
        if task.styles.len() == before || task.prompt.is_empty() {
            return Ok(task);
        }
        match expansion::expand(&task.prompt, task.seed) {
            Ok(text) => {
                task.expansion = text;
                task.applied_styles.push(STYLE.to_string());
            }
            Err(why) => log::log(log::Level::Warn, &format!("'{STYLE}' skipped: {why}")),
        }
        Ok(task)
    }
}

export!(FooocusExpansion);
