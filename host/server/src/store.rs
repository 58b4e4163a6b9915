//! Job records in SQLite (`<data-dir>/focal.db`): one row per job with its spec and its latest
//! state as JSON (the WIT records, serde-derived). Written when a job is queued, starts and
//! ends, so a killed server loses no finished job and requeues the unfinished ones.

use std::path::Path;

use anyhow::{Context, Result};
use focal_runtime::services::{JobInfo, JobSpec};
use rusqlite::{params, Connection};

pub struct Store {
    db: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let db = Connection::open(path).with_context(|| format!("cannot open job database {}", path.display()))?;
        // WAL: a committed row survives the process being killed at any point.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                 id   TEXT PRIMARY KEY,
                 seq  INTEGER NOT NULL,
                 spec TEXT NOT NULL,
                 info TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS jobs_seq ON jobs(seq);",
        )
        .with_context(|| format!("{}: not a focal job database", path.display()))?;
        Ok(Self { db })
    }

    /// Insert or replace a job's row (its queue position is kept).
    pub fn put(&self, spec: &JobSpec, info: &JobInfo) -> Result<()> {
        self.db.execute(
            "INSERT INTO jobs (id, seq, spec, info) VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, info = excluded.info",
            params![info.id, serde_json::to_string(spec)?, serde_json::to_string(info)?],
        )?;
        Ok(())
    }

    pub fn delete(&self, id: &str) -> Result<()> {
        self.db.execute("DELETE FROM jobs WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Every job in queue order; rows that no longer parse are skipped with a warning.
    pub fn load(&self) -> Result<Vec<(JobSpec, JobInfo)>> {
        let mut stmt = self.db.prepare("SELECT id, spec, info FROM jobs ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, spec, info) = row?;
            match (serde_json::from_str(&spec), serde_json::from_str(&info)) {
                (Ok(s), Ok(i)) => jobs.push((s, i)),
                _ => tracing::warn!(job = %id, "skipping a job record this version cannot read"),
            }
        }
        Ok(jobs)
    }
}
