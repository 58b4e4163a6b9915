//! focal's plugin host: one wasmtime `Engine` and `Linker`, components compiled once (cached on
//! disk), a fresh isolated instance per request from a pooling allocator, per-plugin limits
//! (memory, wall time through epoch interruption) and capabilities, and the host side of the
//! `focal:plugin@0.1.0` WIT package.
pub mod manifest;
pub mod prompts;
pub mod pyrandom;
pub mod services;

mod bindings;
mod host;
mod imports;

pub use bindings::exports::focal::plugin::handler::{Request, Response};
pub use host::{HostOptions, Plugin, PluginFailure, PluginHost};
pub use imports::escape_plugin_text;
pub use manifest::{Capability, Limits, PluginManifest};

/// Where this build put the guest components of `plugins/` (`<name>.wasm`).
pub const BUILT_PLUGINS_DIR: &str = env!("FOCAL_PLUGINS_OUT");

/// Plugins compiled into the focal binary, so a fresh build serves the Fooocus-API.
pub mod builtin {
    /// `(manifest TOML, component bytes)` of each built-in plugin.
    pub const PLUGINS: &[(&str, &[u8])] = &[
        (
            include_str!("../../../plugins/fooocus-api/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_api.wasm")),
        ),
        (
            include_str!("../../../plugins/fooocus-prompt/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_prompt.wasm")),
        ),
        (
            include_str!("../../../plugins/fooocus-expansion/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_expansion.wasm")),
        ),
        (
            include_str!("../../../plugins/fooocus-styles/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_styles.wasm")),
        ),
    ];
}
