//! focal's HTTP server: every request is routed by path prefix to a plugin, which runs in a
//! fresh sandboxed instance. Plugins come from the plugins directory (`<name>.wasm` plus an
//! optional `<name>.toml` manifest) and are reloaded when their files change, so operators add
//! endpoints to a running server without rebuilding or restarting it.
pub mod expansion;
pub mod fetch;
pub mod jobs;
pub mod metadata;
pub mod outputs;
pub mod prompts;
pub mod registry;
pub mod store;
pub mod webhook;

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Request as HttpRequest, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Router;
use focal_runtime::{PluginHost, Request};

pub use registry::Registry;

/// Largest request body handed to a plugin.
const MAX_BODY: usize = 64 << 20;

#[derive(Clone)]
struct AppState {
    host: Arc<PluginHost>,
    registry: Arc<Registry>,
    api_key: Option<Arc<str>>,
}

/// Server-wide settings that are not about plugins.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// When set, every request must carry it in `X-API-KEY` (as Fooocus-API's `--apikey`).
    pub api_key: Option<String>,
}

pub fn router(host: Arc<PluginHost>, registry: Arc<Registry>, options: &ServerOptions) -> Router {
    let api_key = options.api_key.as_deref().map(Arc::from);
    Router::new().fallback(dispatch).with_state(AppState { host, registry, api_key })
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
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    match app.host.handle(&plugin, Request { method, path, query, headers, body }).await {
        Ok(r) => {
            let mut resp = HttpResponse::new(Body::from(r.body));
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (k, v) in r.headers {
                if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                    resp.headers_mut().append(k, v);
                }
            }
            resp
        }
        Err(failure) => {
            let status = StatusCode::from_u16(failure.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, &failure.to_string())
        }
    }
}

/// Serve on a bound listener until Ctrl-C.
pub async fn serve_on(listener: tokio::net::TcpListener, host: Arc<PluginHost>, registry: Arc<Registry>, options: ServerOptions) -> anyhow::Result<()> {
    registry.clone().watch(host.clone());
    axum::serve(listener, router(host, registry, &options))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
