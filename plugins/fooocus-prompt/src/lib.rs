//! Fooocus's prompt text handling as a focal prompt step (`modules/async_worker.py:
//! process_prompt` up to the styles): lines cleaned and split into main and extra prompts,
//! `<lora:name:weight>` tags taken out of the main prompt, `__wildcards__` drawn from the image's
//! generator (or read in order), `[[a,b]]` arrays picked by image index.

wit_bindgen::generate!({ world: "prompt-step", path: "../../wit/focal-plugin@0.1.0" });

mod text;
mod wildcards;

use exports::focal::plugin::prompt_processor::{Guest, PromptTask};

struct FooocusPrompt;

impl Guest for FooocusPrompt {
    fn styles() -> Vec<String> {
        vec![]
    }

    fn process(mut task: PromptTask) -> Result<PromptTask, String> {
        let lines = |text: &str| {
            let kept: Vec<String> = prompt_kit::splitlines(text).iter().map(|l| text::safe_str(l)).filter(|l| !l.is_empty()).collect();
            if kept.is_empty() {
                vec![String::new()]
            } else {
                kept
            }
        };
        let mut positive = lines(&task.prompt);
        let mut negative = lines(&task.negative_prompt);
        let (main, loras) = text::take_lora_tags(&positive.remove(0));
        let negative_main = negative.remove(0);
        task.extra_positive.splice(0..0, positive);
        task.extra_negative.splice(0..0, negative);
        task.loras.extend(loras);

        let lists = wildcards::Lists::load();
        let (i, in_order) = (task.index, task.read_wildcards_in_order);
        let pick = |text: &str| lists.apply(text, i, in_order, focal::plugin::random::below);
        task.prompt = text::apply_arrays(&pick(&main), i as usize);
        task.negative_prompt = pick(&negative_main);
        task.extra_positive = task.extra_positive.iter().map(|t| pick(t)).collect();
        task.extra_negative = task.extra_negative.iter().map(|t| pick(t)).collect();
        Ok(task)
    }
}

export!(FooocusPrompt);
