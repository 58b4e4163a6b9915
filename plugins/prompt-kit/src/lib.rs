//! Shared pieces of focal's prompt-step plugins: the Python string rules Fooocus's prompt code
//! relies on, and style packs (Fooocus's style JSON format, loaded and applied as Fooocus's
//! `modules/sdxl_styles.py` does).

mod styles;

pub use styles::{Applied, StylePack, RANDOM_STYLE};

/// Python's `str.splitlines()`: splits on every line boundary Python knows, drops the breaks,
/// no trailing empty line.
pub fn splitlines(s: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                lines.push(std::mem::take(&mut current));
            }
            '\n' | '\u{0b}' | '\u{0c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                lines.push(std::mem::take(&mut current));
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// The whole prompt step of a style pack: `styles` lists the pack, `process` applies the
/// requested styles it knows to the task (drawing "Random Style" from the image's generator)
/// and leaves the rest for later steps. Use it in a crate that ran
/// `wit_bindgen::generate!({ world: "prompt-step", … })`, with an expression giving
/// `Result<StylePack, String>`.
#[macro_export]
macro_rules! style_step {
    ($name:ident, $pack:expr) => {
        struct $name;

        impl exports::focal::plugin::prompt_processor::Guest for $name {
            fn styles() -> Vec<String> {
                let pack: Result<$crate::StylePack, String> = $pack;
                pack.map(|p| p.names()).unwrap_or_default()
            }

            fn process(
                mut task: exports::focal::plugin::prompt_processor::PromptTask,
            ) -> Result<exports::focal::plugin::prompt_processor::PromptTask, String> {
                let pack: $crate::StylePack = $pack?;
                let applied = pack.apply(&task.prompt, std::mem::take(&mut task.styles), focal::plugin::random::below);
                task.styles = applied.remaining;
                task.applied_styles.extend(applied.applied);
                task.positive.extend(applied.positive);
                task.negative.extend(applied.negative);
                task.placeholder_used |= applied.placeholder_used;
                Ok(task)
            }
        }

        export!($name);
    };
}

#[cfg(test)]
mod tests {
    use super::splitlines;

    #[test]
    fn splitlines_follows_python() {
        // Python: "a\r\nb\rc\n\nd\x0be\n".splitlines() == ['a', 'b', 'c', '', 'd', 'e']
        assert_eq!(splitlines("a\r\nb\rc\n\nd\u{0b}e\n"), ["a", "b", "c", "", "d", "e"]);
        assert!(splitlines("").is_empty());
        assert_eq!(splitlines("\n"), [""]);
    }
}
