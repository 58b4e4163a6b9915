//! focal's plugin host: one wasmtime `Engine` and `Linker`, components compiled once (cached on
//! disk), a fresh isolated instance per request from a pooling allocator, per-plugin limits
//! (memory, wall time through epoch interruption) and capabilities, and the host side of the
//! `focal:plugin` WIT packages (every served version, see `bindings`).
pub mod manifest;
pub mod prompts;
pub mod pyrandom;

mod bindings;
mod failure;
mod host;
mod http;
mod imports;

pub use bindings::ContractVersion;
pub use failure::PluginFailure;
/// The services are the host's domain (`focal-core`); re-exported for the server.
pub use focal_core::services;
pub use host::{HostOptions, Plugin, PluginHost, World};
pub use http::{Request, Response};
pub use imports::escape_plugin_text;
pub use manifest::{Capability, Limits, PluginManifest};

/// Where this build put the guest components of `plugins/` (`<name>.wasm`).
pub const BUILT_PLUGINS_DIR: &str = env!("FOCAL_PLUGINS_OUT");

/// Plugins compiled into the focal binary, so a fresh build serves the Fooocus-API.
pub mod builtin {
    /// `(manifest TOML, component bytes)` of each built-in plugin.
    pub const PLUGINS: &[(&str, &[u8])] = &[
        (include_str!("../../../plugins/fooocus-api/plugin.toml"), include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_api.wasm"))),
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
        (
            include_str!("../../../plugins/fooocus-image-tasks/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_image_tasks.wasm")),
        ),
        (
            include_str!("../../../plugins/fooocus-controls/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_controls.wasm")),
        ),
        (
            include_str!("../../../plugins/fooocus-describe/plugin.toml"),
            include_bytes!(concat!(env!("FOCAL_PLUGINS_OUT"), "/fooocus_describe.wasm")),
        ),
    ];
}
