//! Host bindings generated from `wit/`: world `endpoint` at this level, world `prompt-step` in
//! [`step`] (sharing the `log` and `config` host implementations). The engine records derive
//! serde so the server can store job specs and results as they are.
wasmtime::component::bindgen!({
    world: "endpoint",
    path: "../../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});

pub mod step {
    wasmtime::component::bindgen!({
        world: "prompt-step",
        path: "../../wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "focal:plugin/log": crate::bindings::focal::plugin::log,
            "focal:plugin/config": crate::bindings::focal::plugin::config,
        },
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}
