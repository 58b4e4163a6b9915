//! The host's own routes, answered before any plugin: `/health` (the process serves), `/ready`
//! (the default model can be loaded), `/metrics` (Prometheus) and the admin API for tenants
//! (`/admin/tenants…`, with the operator's admin key in `X-Admin-Key`).

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::tenant_plugins::TenantPlugins;
use crate::tenants::{Quota, TenantStore};

/// Whether the model a plain request would load is there (or can be fetched); the error says why not.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the host routes need.
#[derive(Clone, Default)]
pub struct HostRoutes {
    pub admin_key: Option<Arc<str>>,
    pub tenants: Option<Arc<TenantStore>>,
    pub tenant_plugins: Option<Arc<TenantPlugins>>,
    pub ready: Option<ReadyCheck>,
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// The host routes as OpenAPI 3.1 (`GET /admin/openapi.json`; the plugins' routes are in their
/// own documents, e.g. the Fooocus-API's `/openapi.json`).
fn openapi() -> serde_json::Value {
    let admin = json!([{"ApiKeyAuth": []}]);
    let quota = json!({"type": "object", "properties": {
        "max_queued": {"type": "integer"}, "images_per_day": {"type": "integer"}, "max_pixels": {"type": "integer"},
        "max_steps": {"type": "integer"}, "requests_per_minute": {"type": "integer"},
        "plugin_memory_mb": {"type": "integer"}, "plugin_timeout_ms": {"type": "integer"}}});
    let op = |summary: &str, body: Option<serde_json::Value>, ok: &str| {
        let mut o = json!({"summary": summary, "security": admin, "responses": {ok: {"description": "done"}, "403": {"description": "wrong or missing X-Admin-Key"}, "422": {"description": "refused; `detail` says why"}}});
        if let Some(schema) = body {
            o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        o
    };
    let name = json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "focal host routes", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"}}},
        "paths": {
            "/health": {"get": {"summary": "The process serves", "responses": {"200": {"description": "ok"}}}},
            "/ready": {"get": {"summary": "The default model can be loaded", "responses": {"200": {"description": "ready"}, "503": {"description": "not ready; `detail` says why"}}}},
            "/metrics": {"get": {"summary": "Prometheus text format (needs X-Admin-Key when one is set)", "responses": {"200": {"description": "metrics"}}}},
            "/admin/tenants": {
                "get": op("List tenants and quotas (never keys)", None, "200"),
                "post": op("Add a tenant; answers its key once", Some(json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "quota": quota}})), "201"),
            },
            "/admin/tenants/{name}": {"parameters": name, "delete": op("Revoke the tenant's key", None, "200")},
            "/admin/tenants/{name}/rotate": {"parameters": name, "post": op("A new key (the old one stops working)", None, "200")},
            "/admin/tenants/{name}/plugins": {
                "parameters": name,
                "get": op("The tenant's plugins being served", None, "200"),
                "put": op("Install or replace a plugin, served under /t/{name}/", Some(json!({"type": "object", "required": ["manifest", "component"], "properties": {"manifest": {"type": "string", "description": "plugin.toml"}, "component": {"type": "string", "description": "the .wasm, base64"}}})), "202"),
            },
            "/admin/tenants/{name}/plugins/{plugin}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "plugin", "in": "path", "required": true, "schema": {"type": "string"}}],
                "delete": op("Remove the tenant's plugin", None, "200"),
            },
        }
    })
}

#[derive(Deserialize)]
struct NewPlugin {
    /// The plugin's manifest (TOML); its routes are under `/t/<tenant>`.
    manifest: String,
    /// The component, base64.
    component: String,
}

#[derive(Deserialize)]
struct NewTenant {
    name: String,
    #[serde(default)]
    quota: Quota,
}

impl HostRoutes {
    fn admin_allowed(&self, headers: &HeaderMap) -> bool {
        let given = headers.get("x-admin-key").and_then(|v| v.to_str().ok());
        self.admin_key.as_deref().is_some_and(|key| given == Some(key))
    }

    /// The answer when `path` is a host route; `None` hands the request to the plugins.
    pub fn handle(&self, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        match (method, path) {
            (&Method::GET, "/health") => Some(reply(StatusCode::OK, json!({"status": "ok"}))),
            (&Method::GET, "/ready") => Some(match self.ready.as_ref().map_or(Ok(()), |check| check()) {
                Ok(()) => reply(StatusCode::OK, json!({"status": "ready"})),
                Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"status": "not ready", "detail": why})),
            }),
            (&Method::GET, "/metrics") => Some(if self.admin_key.is_some() && !self.admin_allowed(headers) {
                reply(StatusCode::FORBIDDEN, json!({"detail": "Forbidden"}))
            } else {
                ([("content-type", "text/plain; version=0.0.4")], crate::metrics::render()).into_response()
            }),
            (&Method::GET, "/admin/openapi.json") => Some(reply(StatusCode::OK, openapi())),
            (_, p) if p == "/admin" || p.starts_with("/admin/") => Some(self.admin(method, p, headers, body)),
            _ => None,
        }
    }

    fn admin(&self, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        if self.admin_key.is_none() {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"detail": "the admin API is off (start focal serve with --admin-key or --admin-key-file)"}),
            );
        }
        if !self.admin_allowed(headers) {
            return reply(StatusCode::FORBIDDEN, json!({"detail": "Forbidden"}));
        }
        let Some(tenants) = &self.tenants else {
            return reply(StatusCode::NOT_FOUND, json!({"detail": "this server has no tenant store"}));
        };
        let failed = |e: anyhow::Error| reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": format!("{e:#}")}));
        let rest: Vec<&str> = path.trim_start_matches("/admin/tenants").split('/').filter(|s| !s.is_empty()).collect();
        if !path.starts_with("/admin/tenants") {
            return reply(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
        }
        match (method, rest.as_slice()) {
            (&Method::GET, []) => match tenants.list() {
                Ok(list) => reply(StatusCode::OK, json!(list)),
                Err(e) => failed(e),
            },
            (&Method::POST, []) => {
                let new: NewTenant = match serde_json::from_slice(body) {
                    Ok(n) => n,
                    Err(e) => return reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": format!("body: {e}")})),
                };
                match tenants.add(&new.name, &new.quota) {
                    Ok(key) => reply(StatusCode::CREATED, json!({"name": new.name, "key": key})),
                    Err(e) => failed(e),
                }
            }
            (&Method::POST, [name, "rotate"]) => match tenants.rotate(name) {
                Ok(key) => reply(StatusCode::OK, json!({"name": name, "key": key})),
                Err(e) => failed(e),
            },
            (&Method::DELETE, [name]) => match tenants.revoke(name) {
                Ok(()) => reply(StatusCode::OK, json!({"name": name, "revoked": true})),
                Err(e) => failed(e),
            },
            (_, [name, "plugins", ..]) => {
                let Some(tenant) = tenants.get(name) else {
                    return reply(StatusCode::NOT_FOUND, json!({"detail": format!("no tenant '{name}'")}));
                };
                let Some(plugins) = &self.tenant_plugins else {
                    return reply(StatusCode::NOT_FOUND, json!({"detail": "this server runs no tenant plugins"}));
                };
                match (method, &rest[2..]) {
                    (&Method::GET, []) => reply(StatusCode::OK, json!({"served": plugins.served(name)})),
                    (&Method::PUT, []) => {
                        use base64::Engine;
                        let new: NewPlugin = match serde_json::from_slice(body) {
                            Ok(n) => n,
                            Err(e) => return reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": format!("body: {e}")})),
                        };
                        let Ok(component) = base64::engine::general_purpose::STANDARD.decode(new.component.trim()) else {
                            return reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": "component: not base64"}));
                        };
                        match plugins.install(name, &tenant.quota, &new.manifest, &component) {
                            Ok(plugin) => {
                                reply(StatusCode::ACCEPTED, json!({"tenant": name, "plugin": plugin, "served_at": format!("/t/{name}")}))
                            }
                            Err(e) => failed(e),
                        }
                    }
                    (&Method::DELETE, [plugin]) => match plugins.remove(name, plugin) {
                        Ok(()) => reply(StatusCode::OK, json!({"tenant": name, "removed": plugin})),
                        Err(e) => failed(e),
                    },
                    _ => reply(StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
                }
            }
            _ => reply(StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
        }
    }
}
