//! focal's HTTP server: every request is routed by path prefix to a plugin, which runs in a
//! fresh sandboxed instance. Plugins come from the plugins directory (`<name>.wasm` plus an
//! optional `<name>.toml` manifest) and are reloaded when their files change, so operators add
//! endpoints to a running server without rebuilding or restarting it.
pub mod admin;
pub mod catalog;
pub mod decode;
pub mod describe;
pub mod expansion;
pub mod faces;
pub mod fetch;
pub mod heads;
pub mod images;
pub mod jobs;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod outputs;
pub mod policy;
pub mod registry;
pub mod request_body;
pub mod steps;
pub mod store;
pub mod tenant_plugins;
pub mod tenants;
pub mod timings;
pub mod webhook;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Request as HttpRequest, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Router;
use focal_core::Owner;
use focal_runtime::{PluginHost, Request};

pub use registry::Registry;

#[derive(Clone)]
struct AppState {
    host: Arc<PluginHost>,
    registry: Arc<Registry>,
    api_key: Option<Arc<str>>,
    tenants: Option<Arc<tenants::TenantStore>>,
    routes: admin::HostRoutes,
    max_body_bytes: usize,
}

/// Server-wide settings that are not about plugins.
#[derive(Clone)]
pub struct ServerOptions {
    /// When set, requests carrying it in `X-API-KEY` (as Fooocus-API's `--apikey`) run as the
    /// host's own owner.
    pub api_key: Option<String>,
    /// Largest request body handed to a plugin (413 beyond).
    pub max_body_bytes: usize,
    /// Tenants: a request with a tenant's key runs as that tenant.
    pub tenants: Option<Arc<tenants::TenantStore>>,
    /// The admin API's key (`X-Admin-Key`); without one the admin API is off and `/metrics` open.
    pub admin_key: Option<String>,
    /// `/ready`'s check.
    pub ready: Option<admin::ReadyCheck>,
    /// The data folder, where tenants' own plugins live (none: no tenant plugins).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            api_key: None,
            max_body_bytes: limits::RequestLimits::default().max_body_bytes,
            tenants: None,
            admin_key: None,
            ready: None,
            data_dir: None,
        }
    }
}

pub fn router(host: Arc<PluginHost>, registry: Arc<Registry>, options: &ServerOptions) -> Router {
    let api_key = options.api_key.as_deref().map(Arc::from);
    let tenant_plugins = options.data_dir.as_deref().map(|dir| tenant_plugins::TenantPlugins::new(dir, host.clone()));
    let routes = admin::HostRoutes {
        admin_key: options.admin_key.as_deref().map(Arc::from),
        tenants: options.tenants.clone(),
        tenant_plugins,
        ready: options.ready.clone(),
    };
    let state = AppState { host, registry, api_key, tenants: options.tenants.clone(), routes, max_body_bytes: options.max_body_bytes };
    Router::new().fallback(dispatch).with_state(state)
}

/// Whether the host answers `path` itself.
fn host_route(path: &str) -> bool {
    matches!(path, "/health" | "/ready" | "/metrics" | "/admin") || path.starts_with("/admin/")
}

/// A 429 naming the quota, with `Retry-After` when it resets.
fn over_quota(q: &focal_core::QuotaExceeded) -> HttpResponse {
    let body = serde_json::json!({"detail": q.message, "limit": q.limit, "retry_after_s": q.retry_after_s});
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, [("content-type", "application/json")], body.to_string()).into_response();
    if q.retry_after_s > 0 {
        resp.headers_mut().insert("retry-after", HeaderValue::from(q.retry_after_s));
    }
    resp
}

/// Who a request is: the host's own owner (no keys configured, the `--apikey` key, or no key on
/// an open path), a tenant (its key; its request rate counted), or refused.
/// Why a request was refused before any plugin ran.
enum Refusal {
    Key,
    Quota(focal_core::QuotaExceeded),
}

fn owner_of(app: &AppState, req: &HttpRequest<Body>) -> Result<Owner, Refusal> {
    // As the seed: result files and the API docs are readable without the key.
    let path = req.uri().path();
    let open_path = path.starts_with("/files/") || matches!(path, "/docs" | "/redoc" | "/openapi.json");
    let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if let (Some(key), Some(given)) = (&app.api_key, given) {
        if given == &**key {
            return Ok(Owner::default());
        }
    }
    if let (Some(tenants), Some(given)) = (&app.tenants, given) {
        if let Some(tenant) = tenants.authenticate(given) {
            tenants.admit_request(&tenant).map_err(Refusal::Quota)?;
            return Ok(tenant.owner());
        }
    }
    let keys_required = app.api_key.is_some() || app.tenants.as_ref().is_some_and(|t| t.any());
    if !keys_required || (open_path && given.is_none()) {
        return Ok(Owner::default());
    }
    Err(Refusal::Key)
}

/// FastAPI-style error body (`{"detail": …}`), as Fooocus-API clients expect.
fn error(status: StatusCode, detail: &str) -> HttpResponse {
    (status, [("content-type", "application/json")], serde_json::json!({ "detail": detail }).to_string()).into_response()
}

async fn dispatch(State(app): State<AppState>, req: HttpRequest<Body>) -> HttpResponse {
    let started = std::time::Instant::now();
    if host_route(req.uri().path()) {
        let (parts, body) = req.into_parts();
        let Ok(body) = request_body::read_bounded(&parts.headers, body, app.max_body_bytes).await else {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "admin request body over the --max-body-mb limit");
        };
        let resp = app.routes.handle(&parts.method, parts.uri.path(), &parts.headers, &body).expect("a host route");
        metrics::inc("focal_http_requests_total", &[("plugin", "host"), ("status", resp.status().as_str())]);
        return resp;
    }
    let owner = match owner_of(&app, &req) {
        Ok(owner) => owner,
        Err(Refusal::Key) => {
            metrics::inc("focal_requests_refused_total", &[("reason", "key")]);
            return error(StatusCode::FORBIDDEN, "Forbidden");
        }
        Err(Refusal::Quota(q)) => {
            metrics::inc("focal_requests_refused_total", &[("reason", "quota")]);
            return over_quota(&q);
        }
    };
    let mut path = req.uri().path().to_string();
    let plugin = match path.strip_prefix("/t/").map(|rest| rest.split_once('/').unwrap_or((rest, ""))) {
        // A tenant's own plugins: only to that tenant's key (others see nothing there).
        Some((tenant, sub)) => {
            let sub = format!("/{sub}");
            let registry = (owner.0 == tenant).then(|| app.routes.tenant_plugins.as_ref()?.registry(tenant)).flatten();
            let plugin = registry.and_then(|r| r.route(&sub));
            path = sub;
            plugin
        }
        None => app.registry.route(&path),
    };
    let Some(plugin) = plugin else {
        metrics::inc("focal_http_requests_total", &[("plugin", "none"), ("status", "404")]);
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let name = plugin.manifest.name.clone();
    let span = tracing::info_span!("request", id = %uuid::Uuid::new_v4().simple(), tenant = %owner.0, plugin = %name, path = %path);
    let answered = async move {
        let resp = run_plugin(app, plugin, req, owner, path).await;
        // The access log line, inside the request's span (its id and tenant).
        tracing::info!(status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "answered");
        resp
    };
    let resp = tracing::Instrument::instrument(answered, span).await;
    metrics::inc("focal_http_requests_total", &[("plugin", &name), ("status", resp.status().as_str())]);
    metrics::observe("focal_plugin_request_duration_seconds", &[("plugin", &name)], started.elapsed().as_secs_f64());
    resp
}

async fn run_plugin(app: AppState, plugin: Arc<focal_runtime::Plugin>, req: HttpRequest<Body>, owner: Owner, path: String) -> HttpResponse {
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect();
    let (parts, body) = req.into_parts();
    let body = match request_body::read_bounded(&parts.headers, body, app.max_body_bytes).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            let limit = format!("request body over the limit of {} bytes (--max-body-mb)", app.max_body_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, &limit);
        }
    };
    match app.host.handle(&plugin, Request { method, path, query, headers, body }, owner).await {
        Ok(r) => plugin_response(&plugin.manifest.name, r),
        Err(focal_runtime::PluginFailure::OverQuota(q)) => {
            metrics::inc("focal_requests_refused_total", &[("reason", "quota")]);
            over_quota(&q)
        }
        Err(failure) => {
            let kind = match &failure {
                focal_runtime::PluginFailure::Timeout { .. } => "timeout",
                focal_runtime::PluginFailure::OutOfMemory { .. } => "memory",
                focal_runtime::PluginFailure::Trap { .. } => "trap",
                focal_runtime::PluginFailure::BadResponse { .. } => "bad_response",
                _ => "busy",
            };
            metrics::inc("focal_plugin_errors_total", &[("plugin", &plugin.manifest.name), ("kind", kind)]);
            let status = StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error(status, &failure.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                resp.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            }
            resp
        }
    }
}

/// Headers that frame the message or manage the connection. The host sets them itself (as
/// wasi-http hosts do): a plugin's `content-length` or `transfer-encoding` could otherwise
/// desynchronise a keep-alive connection and smuggle a response to the next request on it.
fn host_owned(name: &HeaderName) -> bool {
    matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "upgrade" | "te" | "trailer")
        || name.as_str().starts_with("proxy-")
}

/// A plugin's answer as an HTTP response the host frames; a header hyper could not send is a
/// 502 naming the plugin.
fn plugin_response(plugin: &str, r: focal_runtime::Response) -> HttpResponse {
    let Ok(status) = StatusCode::from_u16(r.status) else {
        return error(StatusCode::BAD_GATEWAY, &format!("plugin '{plugin}' returned an invalid response: status {}", r.status));
    };
    let mut resp = HttpResponse::new(Body::from(r.body));
    *resp.status_mut() = status;
    for (k, v) in r.headers {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) else {
            let detail = format!("plugin '{plugin}' returned an invalid response: header {k:?}");
            return error(StatusCode::BAD_GATEWAY, &detail);
        };
        if host_owned(&name) {
            tracing::debug!(plugin, header = %name, "header set by the host, not the plugin; dropped");
            continue;
        }
        resp.headers_mut().append(name, value);
    }
    resp
}

/// Serve on a bound listener until Ctrl-C. Each connection's request heads are checked by
/// [`heads::HeadCheck`] before hyper parses them, so malformed requests get JSON errors too.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    host: Arc<PluginHost>,
    registry: Arc<Registry>,
    options: ServerOptions,
) -> anyhow::Result<()> {
    registry.clone().watch(host.clone());
    let app = router(host, registry, &options);
    let shutdown = tokio::signal::ctrl_c();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(heads::HeadCheck::new(stream));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                // A refused head looks like the end of the stream: answer what came before it first.
                .half_close(true)
                .serve_connection(io, service)
                .with_upgrades()
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}
