//! One image's prompt on its way through the prompt-step plugins (see `prompt-processor` in
//! the WIT): the same record in every contract version so far.

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromptTask {
    pub index: u32,
    pub seed: u64,
    pub prompt: String,
    pub negative_prompt: String,
    pub extra_positive: Vec<String>,
    pub extra_negative: Vec<String>,
    pub styles: Vec<String>,
    pub applied_styles: Vec<String>,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
    pub placeholder_used: bool,
    pub expansion: String,
    pub loras: Vec<(String, f32)>,
    pub read_wildcards_in_order: bool,
}
