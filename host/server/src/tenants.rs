//! Tenants: named customers of one focal, each with an API key (stored as its SHA-256 only; the
//! key is shown once, when made) and a quota, kept in the job database (`<data-dir>/focal.db`).
//! A request with a tenant's key runs as that tenant's [`Owner`]: the engine, files and history
//! answer it with its own jobs only. Quotas are checked when a request arrives (rate) and when a
//! job is submitted (size, steps, queued jobs, images per day); going over one is a 429.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use focal_core::{Owner, QuotaExceeded};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A tenant's limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub max_queued: Option<u32>,
    pub images_per_day: Option<u32>,
    /// Width × height of one image.
    pub max_pixels: Option<u64>,
    pub max_steps: Option<u32>,
    pub requests_per_minute: Option<u32>,
    /// Memory (MiB) and time (ms) a request to one of the tenant's own plugins may use.
    pub plugin_memory_mb: Option<u64>,
    pub plugin_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub name: String,
    pub quota: Quota,
    pub revoked: bool,
}

impl Tenant {
    pub fn owner(&self) -> Owner {
        Owner(self.name.clone())
    }
}

pub struct TenantStore {
    db: Mutex<Connection>,
    /// Request times in the last minute, per tenant.
    requests: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key: 244 random bits from two v4 UUIDs, with a prefix that says what it is.
fn new_key() -> String {
    format!("focal_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// How metrics name the host's own owner; no tenant may be called so.
pub const HOST_LABEL: &str = "host";

/// Tenant names become owners and folder names: 1–32 of `a-z 0-9 _ -`, starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        bail!("tenant name '{name}' must be 1–32 characters of a-z, 0-9, _ and -, starting with a letter");
    }
    if name == HOST_LABEL {
        bail!("tenant name '{HOST_LABEL}' is reserved (the metrics' name for the host's own jobs)");
    }
    Ok(())
}

/// Days since the Unix epoch (UTC), and the seconds left in the current one.
fn utc_day() -> (i64, u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    ((now / 86_400) as i64, 86_400 - now % 86_400)
}

fn over(limit: &str, message: String, retry_after_s: u64) -> QuotaExceeded {
    QuotaExceeded { limit: limit.into(), message, retry_after_s }
}

impl TenantStore {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let db = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS tenants (
                 name     TEXT PRIMARY KEY,
                 key_hash TEXT NOT NULL UNIQUE,
                 quota    TEXT NOT NULL,
                 revoked  INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS tenant_usage (
                 name   TEXT NOT NULL,
                 day    INTEGER NOT NULL,
                 images INTEGER NOT NULL,
                 PRIMARY KEY (name, day)
             );",
        )
        .with_context(|| format!("{}: cannot create the tenant tables", path.display()))?;
        Ok(Self { db: Mutex::new(db), requests: Mutex::new(HashMap::new()) })
    }

    /// Add a tenant; returns its key (shown once).
    pub fn add(&self, name: &str, quota: &Quota) -> Result<String> {
        check_name(name)?;
        let key = new_key();
        let db = self.db.lock().unwrap();
        let exists: bool = db.query_row("SELECT 1 FROM tenants WHERE name = ?1", [name], |_| Ok(true)).optional()?.unwrap_or(false);
        if exists {
            bail!("tenant '{name}' exists (rotate its key or revoke it)");
        }
        db.execute(
            "INSERT INTO tenants (name, key_hash, quota, revoked) VALUES (?1, ?2, ?3, 0)",
            params![name, key_hash(&key), serde_json::to_string(quota)?],
        )?;
        Ok(key)
    }

    /// A new key for `name` (the old one stops working; a revoked tenant is active again).
    pub fn rotate(&self, name: &str) -> Result<String> {
        let key = new_key();
        let n = self
            .db
            .lock()
            .unwrap()
            .execute("UPDATE tenants SET key_hash = ?2, revoked = 0 WHERE name = ?1", params![name, key_hash(&key)])?;
        if n == 0 {
            bail!("no tenant '{name}'");
        }
        Ok(key)
    }

    /// Refuse `name`'s key from now on (its jobs and files stay).
    pub fn revoke(&self, name: &str) -> Result<()> {
        if self.db.lock().unwrap().execute("UPDATE tenants SET revoked = 1 WHERE name = ?1", [name])? == 0 {
            bail!("no tenant '{name}'");
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<Tenant>> {
        let db = self.db.lock().unwrap();
        let mut stmt = db.prepare("SELECT name, quota, revoked FROM tenants ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)? != 0)))?;
        rows.map(|row| {
            let (name, quota, revoked) = row?;
            Ok(Tenant { name, quota: serde_json::from_str(&quota).unwrap_or_default(), revoked })
        })
        .collect()
    }

    /// Whether any tenant exists (then keys are required).
    pub fn any(&self) -> bool {
        self.db.lock().unwrap().query_row("SELECT 1 FROM tenants LIMIT 1", [], |_| Ok(())).optional().ok().flatten().is_some()
    }

    /// The active tenant whose key this is.
    pub fn authenticate(&self, key: &str) -> Option<Tenant> {
        let db = self.db.lock().unwrap();
        let row = db
            .query_row("SELECT name, quota FROM tenants WHERE key_hash = ?1 AND revoked = 0", [key_hash(key)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .ok()??;
        Some(Tenant { name: row.0, quota: serde_json::from_str(&row.1).unwrap_or_default(), revoked: false })
    }

    /// The tenant called `name`, revoked or not.
    pub fn get(&self, name: &str) -> Option<Tenant> {
        let db = self.db.lock().unwrap();
        let row = db
            .query_row("SELECT quota, revoked FROM tenants WHERE name = ?1", [name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? != 0))
            })
            .optional()
            .ok()??;
        Some(Tenant { name: name.to_string(), quota: serde_json::from_str(&row.0).unwrap_or_default(), revoked: row.1 })
    }

    fn quota_of(&self, owner: &Owner) -> Option<Quota> {
        let db = self.db.lock().unwrap();
        let quota: String = db.query_row("SELECT quota FROM tenants WHERE name = ?1", [&owner.0], |r| r.get(0)).optional().ok()??;
        serde_json::from_str(&quota).ok()
    }

    /// Count a request against the tenant's rate (requests in the last 60 s).
    pub fn admit_request(&self, tenant: &Tenant) -> Result<(), QuotaExceeded> {
        let Some(limit) = tenant.quota.requests_per_minute else { return Ok(()) };
        let now = Instant::now();
        let mut all = self.requests.lock().unwrap();
        let times = all.entry(tenant.name.clone()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            times.pop_front();
        }
        if times.len() >= limit as usize {
            let wait = 60 - times.front().map_or(0, |t| now.duration_since(*t).as_secs()).min(59);
            return Err(over("requests_per_minute", format!("tenant '{}' is limited to {limit} requests a minute", tenant.name), wait));
        }
        times.push_back(now);
        Ok(())
    }

    /// Whether `owner` may queue a job of `images` images of `pixels` pixels and `steps` steps
    /// while it has `queued` unfinished jobs; counts the images when it may. Owners that are
    /// not tenants (the host's own) are not limited.
    pub fn admit_job(&self, owner: &Owner, images: u32, pixels: u64, steps: u32, queued: usize) -> Result<(), QuotaExceeded> {
        let Some(q) = self.quota_of(owner) else { return Ok(()) };
        let name = &owner.0;
        if let Some(max) = q.max_pixels.filter(|m| pixels > *m) {
            return Err(over("max_pixels", format!("tenant '{name}' may generate at most {max} pixels an image; this asks {pixels}"), 0));
        }
        if let Some(max) = q.max_steps.filter(|m| steps > *m) {
            return Err(over("max_steps", format!("tenant '{name}' may sample at most {max} steps; this asks {steps}"), 0));
        }
        if let Some(max) = q.max_queued.filter(|m| queued >= *m as usize) {
            return Err(over("max_queued", format!("tenant '{name}' may have at most {max} unfinished jobs"), 0));
        }
        let (day, left) = utc_day();
        let db = self.db.lock().unwrap();
        let used: i64 = db
            .query_row("SELECT images FROM tenant_usage WHERE name = ?1 AND day = ?2", params![name, day], |r| r.get(0))
            .optional()
            .ok()
            .flatten()
            .unwrap_or(0);
        if let Some(max) = q.images_per_day.filter(|m| used as u64 + images as u64 > *m as u64) {
            return Err(over(
                "images_per_day",
                format!("tenant '{name}' may generate {max} images a day (UTC); {used} used, this asks {images}"),
                left,
            ));
        }
        let _ = db.execute(
            "INSERT INTO tenant_usage (name, day, images) VALUES (?1, ?2, ?3)
             ON CONFLICT(name, day) DO UPDATE SET images = images + ?3",
            params![name, day, images],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_hashed_and_rotate_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = TenantStore::open(&dir.path().join("focal.db")).unwrap();
        assert!(!store.any());
        let key = store.add("acme", &Quota::default()).unwrap();
        assert!(store.add("acme", &Quota::default()).is_err(), "names are unique");
        assert!(store.add("Bad Name", &Quota::default()).is_err());
        assert!(store.add("host", &Quota::default()).is_err(), "reserved");
        assert_eq!(store.authenticate(&key).unwrap().name, "acme");
        let raw = std::fs::read(dir.path().join("focal.db")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&raw).contains(&key), "the key itself is never stored");
        let new = store.rotate("acme").unwrap();
        assert!(store.authenticate(&key).is_none() && store.authenticate(&new).is_some());
        store.revoke("acme").unwrap();
        assert!(store.authenticate(&new).is_none());
        assert!(store.list().unwrap()[0].revoked);
    }

    #[test]
    fn job_quotas_name_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = TenantStore::open(&dir.path().join("focal.db")).unwrap();
        let quota = Quota {
            max_queued: Some(2),
            images_per_day: Some(3),
            max_pixels: Some(64 * 64),
            max_steps: Some(4),
            requests_per_minute: Some(2),
            ..Quota::default()
        };
        let key = store.add("t", &quota).unwrap();
        let t = store.authenticate(&key).unwrap();
        let o = t.owner();
        assert_eq!(store.admit_job(&o, 1, 128 * 128, 1, 0).unwrap_err().limit, "max_pixels");
        assert_eq!(store.admit_job(&o, 1, 64 * 64, 5, 0).unwrap_err().limit, "max_steps");
        assert_eq!(store.admit_job(&o, 1, 64 * 64, 4, 2).unwrap_err().limit, "max_queued");
        store.admit_job(&o, 2, 64 * 64, 4, 0).unwrap();
        let e = store.admit_job(&o, 2, 64 * 64, 4, 0).unwrap_err();
        assert_eq!(e.limit, "images_per_day");
        assert!(e.retry_after_s > 0 && e.retry_after_s <= 86_400);
        store.admit_job(&o, 1, 64 * 64, 4, 0).unwrap();
        assert!(store.admit_job(&Owner::default(), 100, 1 << 30, 1000, 1000).is_ok(), "the host's own jobs are not limited");
        store.admit_request(&t).unwrap();
        store.admit_request(&t).unwrap();
        assert_eq!(store.admit_request(&t).unwrap_err().limit, "requests_per_minute");
    }
}
