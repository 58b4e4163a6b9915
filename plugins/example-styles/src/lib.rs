//! Example prompt step for plugin authors: a style pack of its own (`styles.json`, the format
//! of Fooocus's style files). Built with the other plugins; an operator drops
//! `example_styles.wasm` into the plugins folder to add these styles, or names it
//! `fooocus_styles` in its manifest to replace Fooocus's styles, without rebuilding focal.

wit_bindgen::generate!({ world: "prompt-step", path: "../../wit/focal-plugin@0.1.0" });

use prompt_kit::StylePack;

fn pack() -> Result<StylePack, String> {
    StylePack::load(&[("styles.json", include_str!("../styles.json"))], false)
}

prompt_kit::style_step!(ExampleStyles, pack());
