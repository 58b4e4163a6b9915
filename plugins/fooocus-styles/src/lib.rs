//! Fooocus's 277 styles (and "Random Style") as a focal prompt step. Loads the six style files
//! in Fooocus's order (fooocus, sai, mre, twri, diva, marc_k3nt3l) and applies the requested
//! styles it knows, leaving others for later steps.

wit_bindgen::generate!({ world: "prompt-step", path: "../../wit/focal-plugin@0.1.0" });

use prompt_kit::StylePack;

/// Fooocus's load order puts these six last, in this order; there are no other files.
const FILES: [(&str, &str); 6] = [
    ("sdxl_styles_fooocus.json", include_str!("../styles/sdxl_styles_fooocus.json")),
    ("sdxl_styles_sai.json", include_str!("../styles/sdxl_styles_sai.json")),
    ("sdxl_styles_mre.json", include_str!("../styles/sdxl_styles_mre.json")),
    ("sdxl_styles_twri.json", include_str!("../styles/sdxl_styles_twri.json")),
    ("sdxl_styles_diva.json", include_str!("../styles/sdxl_styles_diva.json")),
    ("sdxl_styles_marc_k3nt3l.json", include_str!("../styles/sdxl_styles_marc_k3nt3l.json")),
];

fn pack() -> Result<StylePack, String> {
    StylePack::load(&FILES, true)
}

prompt_kit::style_step!(FooocusStyles, pack());
