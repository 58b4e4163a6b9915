//! focal's HTTP server: every request is routed by path prefix to a plugin, which runs in a
//! fresh sandboxed instance. Plugins come from the plugins directory (`<name>.wasm` plus an
//! optional `<name>.toml` manifest) and are reloaded when their files change, so operators add
//! endpoints to a running server without rebuilding or restarting it.
pub mod catalog;
pub mod decode;
pub mod expansion;
pub mod fetch;
pub mod heads;
pub mod images;
pub mod jobs;
pub mod limits;
pub mod metadata;
pub mod outputs;
pub mod registry;
pub mod steps;
pub mod store;
pub mod timings;
pub mod webhook;

use std::sync::Arc;

use axum::body::{to_bytes, Body};
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
    max_body_bytes: usize,
}

/// Server-wide settings that are not about plugins.
#[derive(Clone)]
pub struct ServerOptions {
    /// When set, every request must carry it in `X-API-KEY` (as Fooocus-API's `--apikey`).
    pub api_key: Option<String>,
    /// Largest request body handed to a plugin (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { api_key: None, max_body_bytes: limits::RequestLimits::default().max_body_bytes }
    }
}

pub fn router(host: Arc<PluginHost>, registry: Arc<Registry>, options: &ServerOptions) -> Router {
    let api_key = options.api_key.as_deref().map(Arc::from);
    Router::new().fallback(dispatch).with_state(AppState { host, registry, api_key, max_body_bytes: options.max_body_bytes })
}

/// FastAPI-style error body (`{"detail": …}`), as Fooocus-API clients expect.
fn error(status: StatusCode, detail: &str) -> HttpResponse {
    (status, [("content-type", "application/json")], serde_json::json!({ "detail": detail }).to_string()).into_response()
}

async fn dispatch(State(app): State<AppState>, req: HttpRequest<Body>) -> HttpResponse {
    // As the seed: result files and the API docs are readable without the key.
    let open_path = |p: &str| p.starts_with("/files/") || matches!(p, "/docs" | "/redoc" | "/openapi.json");
    if let (Some(key), false) = (&app.api_key, open_path(req.uri().path())) {
        let given = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        if given != Some(&**key) {
            return error(StatusCode::FORBIDDEN, "Forbidden");
        }
    }
    let path = req.uri().path().to_string();
    let Some(plugin) = app.registry.route(&path) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect();
    let body = match to_bytes(req.into_body(), app.max_body_bytes).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            let limit = format!("request body over the limit of {} bytes (--max-body-mb)", app.max_body_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, &limit);
        }
    };
    // Every request is the host's own until tenancy binds requests to owners.
    let owner = Owner::default();
    match app.host.handle(&plugin, Request { method, path, query, headers, body }, owner).await {
        Ok(r) => plugin_response(&plugin.manifest.name, r),
        Err(failure) => {
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
