//! Host bindings generated from `wit/` (world `endpoint`).
wasmtime::component::bindgen!({
    world: "endpoint",
    path: "../../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "focal:plugin/engine.image": crate::services::ImageRef,
        "focal:plugin/engine.task": crate::services::TaskRef,
    },
});
