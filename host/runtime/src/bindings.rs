//! Host bindings generated from `wit/` (world `endpoint`). The engine records derive serde so
//! the server can store job specs and results as they are.
wasmtime::component::bindgen!({
    world: "endpoint",
    path: "../../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [serde::Serialize, serde::Deserialize],
});
