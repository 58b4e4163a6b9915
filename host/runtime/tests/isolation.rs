//! Misbehaving plugins fail only their own request, quickly and with a clear error, while
//! normal requests keep being served.
use std::sync::Arc;
use std::time::{Duration, Instant};

use focal_core::services::{BoxFuture, EngineService, Services};
use focal_core::{Image, JobInfo, JobSpec, Owner, QueueInfo, SubmitError};
use focal_runtime::{Capability, ContractVersion, HostOptions, Plugin, PluginFailure, PluginHost, PluginManifest, Request, World};

fn wasm(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn get(path: &str) -> Request {
    Request { method: "GET".into(), path: path.into(), query: String::new(), headers: vec![], body: vec![] }
}

fn hostile(host: &PluginHost, timeout_ms: u64, memory_mb: u64, caps: Vec<Capability>) -> Plugin {
    let mut m = PluginManifest::default_for("hostile");
    m.limits.timeout_ms = timeout_ms;
    m.limits.memory_mb = memory_mb;
    m.capabilities = caps;
    host.load(m, &wasm("hostile")).unwrap()
}

fn body(r: &focal_runtime::Response) -> String {
    String::from_utf8_lossy(&r.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_action_fails_only_its_own_request() {
    let host = PluginHost::new(HostOptions::default(), Services::default()).unwrap();
    let plugin = hostile(&host, 1000, 64, vec![]);

    let t = Instant::now();
    let err = host.handle(&plugin, get("/hostile/loop"), Owner::default()).await.unwrap_err();
    assert!(matches!(err, PluginFailure::Timeout { .. }), "{err}");
    assert_eq!(err.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(3), "loop stopped after {:?}", t.elapsed());

    let err = host.handle(&plugin, get("/hostile/alloc"), Owner::default()).await.unwrap_err();
    assert!(matches!(err, PluginFailure::OutOfMemory { limit_mb: 64, .. }), "{err}");

    let err = host.handle(&plugin, get("/hostile/stack"), Owner::default()).await.unwrap_err();
    assert!(matches!(err, PluginFailure::Trap { .. }), "{err}");

    let err = host.handle(&plugin, get("/hostile/trap"), Owner::default()).await.unwrap_err();
    assert!(err.to_string().contains("panicked on purpose"), "{err}");

    let err = host.handle(&plugin, get("/hostile/garbage"), Owner::default()).await.unwrap_err();
    assert!(matches!(err, PluginFailure::BadResponse { .. }), "{err}");

    let r = host.handle(&plugin, get("/hostile/escape"), Owner::default()).await.unwrap();
    assert_eq!(body(&r).matches("denied").count(), 3, "{}", body(&r));

    let err = host.handle(&plugin, get("/hostile/capability"), Owner::default()).await.unwrap_err();
    assert!(err.to_string().contains("no 'engine' capability"), "{err}");

    // After all of that, the same plugin still serves normally.
    let r = host.handle(&plugin, get("/hostile/ok"), Owner::default()).await.unwrap();
    assert_eq!((r.status, body(&r).as_str()), (200, "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_requests_are_served_while_plugins_spin() {
    let host = Arc::new(PluginHost::new(HostOptions::default(), Services::default()).unwrap());
    let plugin = Arc::new(hostile(&host, 1500, 64, vec![]));
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let (host, plugin) = (host.clone(), plugin.clone());
            tokio::spawn(async move { host.handle(&plugin, get("/hostile/loop"), Owner::default()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let r = host.handle(&plugin, get("/hostile/ok"), Owner::default()).await.unwrap();
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
    }
    assert!(worst < Duration::from_millis(500), "an ok request took {worst:?} while plugins spun");
    for s in spinners {
        assert!(matches!(s.await.unwrap(), Err(PluginFailure::Timeout { .. })));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugin_reads_its_config_and_the_cache_is_reused() {
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(HostOptions { cache_dir: Some(cache.path().into()), ..Default::default() }, Services::default()).unwrap();
    let mut m = PluginManifest::default_for("hello");
    m.config.insert("greeting".into(), "Bonjour".into());
    let plugin = host.load(m.clone(), &wasm("hello")).unwrap();
    let r = host.handle(&plugin, get("/hello/Ada"), Owner::default()).await.unwrap();
    assert_eq!(body(&r), r#"{"greeting": "Bonjour, Ada!"}"#);
    let cached: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(cached.len(), 1);
    let again = host.load(m, &wasm("hello")).unwrap();
    assert_eq!(again.digest, plugin.digest);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
    let err = host.load(PluginManifest::default_for("junk"), b"not wasm").err().unwrap();
    assert!(format!("{err:#}").contains("junk"), "{err:#}");
}

/// A stand-in engine for the capability test (the real one is exercised by the server tests).
struct EmptyEngine;

impl EngineService for EmptyEngine {
    fn submit(&self, _: JobSpec) -> Result<String, SubmitError> {
        Err(SubmitError::QueueFull)
    }
    fn get(&self, _: &Owner, _: &str) -> Option<JobInfo> {
        None
    }
    fn wait(&self, _: &Owner, _: &str, _: Duration) -> BoxFuture<'_, Option<JobInfo>> {
        Box::pin(async { None })
    }
    fn preview(&self, _: &Owner, _: &str) -> Option<Image> {
        None
    }
    fn image_file(&self, _: &Owner, _: &str, _: u32) -> Option<Vec<u8>> {
        None
    }
    fn stop(&self, _: &Owner, _: Option<&str>) -> bool {
        false
    }
    fn queue(&self, _: &Owner) -> QueueInfo {
        QueueInfo { running_size: 7, finished_size: 0, last_job_id: None }
    }
    fn history(&self, _: &Owner, _: Option<&str>, _: u32, _: u32) -> (Vec<JobInfo>, Vec<JobInfo>) {
        (vec![], vec![])
    }
    fn delete(&self, _: &Owner, _: &str) -> bool {
        false
    }
    fn release_memory(&self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_capability_reaches_the_engine_service() {
    let services = Services { engine: Some(Arc::new(EmptyEngine)), ..Default::default() };
    let host = PluginHost::new(HostOptions::default(), services).unwrap();
    let granted = hostile(&host, 1000, 64, vec![Capability::Engine]);
    let r = host.handle(&granted, get("/hostile/capability"), Owner::default()).await.unwrap();
    assert_eq!((r.status, body(&r).as_str()), (200, "queue has 7 jobs"));
    let denied = hostile(&host, 1000, 64, vec![]);
    let failure = host.handle(&denied, get("/hostile/capability"), Owner::default()).await.unwrap_err();
    assert_eq!(failure.status(), 500);
    assert!(failure.to_string().contains("no 'engine' capability"), "{failure}");
}

fn fixture(file: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/plugins").join(file)).unwrap()
}

/// The contract version is read from the component: a prebuilt 0.1.0 component and the same
/// example built against 0.2.0 load into one host and both serve; a version this host does
/// not serve is refused with a message saying which ones it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_every_served_contract_version_load_side_by_side() {
    let host = PluginHost::new(HostOptions::default(), Services::default()).unwrap();
    let old = host.load(PluginManifest::default_for("hello01"), &fixture("hello-0.1.0.wasm")).unwrap();
    let new = host.load(PluginManifest::default_for("hello"), &wasm("hello")).unwrap();
    assert_eq!((old.contract(), new.contract()), (ContractVersion::V0_1, ContractVersion::V0_2));
    assert_eq!((old.world(), new.world()), (World::Endpoint, World::Endpoint));
    for plugin in [&old, &new] {
        let r = host.handle(plugin, get("/hello/Ada"), Owner::default()).await.unwrap();
        assert_eq!(body(&r), r#"{"greeting": "Hello, Ada!"}"#);
    }
    let step = host.load(PluginManifest::default_for("grayscale"), &wasm("grayscale")).unwrap();
    assert_eq!((step.contract(), step.world()), (ContractVersion::V0_2, World::ImageStep));
    let prompt_step = host.load(PluginManifest::default_for("example_styles"), &wasm("example_styles")).unwrap();
    assert_eq!((prompt_step.contract(), prompt_step.world()), (ContractVersion::V0_1, World::PromptStep));

    // The same bytes with every `@0.1.0` renamed `@0.9.0` (same length, still a valid component).
    let mut future = fixture("hello-0.1.0.wasm");
    let (from, to) = (b"focal:plugin/", b"@0.1.0");
    let mut i = 0;
    while i + to.len() <= future.len() {
        if future[i..].starts_with(to) && future[..i].windows(from.len()).rev().take(40).any(|w| w == from) {
            future[i..i + to.len()].copy_from_slice(b"@0.9.0");
        }
        i += 1;
    }
    let err = host.load(PluginManifest::default_for("future"), &future).err().expect("0.9.0 is not served");
    let text = format!("{err:#}");
    assert!(text.contains("focal:plugin@0.9.0") && text.contains("0.1.0, 0.2.0"), "{text}");
}
