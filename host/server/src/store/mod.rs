//! Job records. `JobStore` is what the job manager needs of a store; `SqliteStore` keeps them in
//! `<data-dir>/focal.db`, one row per job with its spec and latest state as JSON of the host's
//! own types, tagged with the schema that wrote it. Rows of older schemas are converted when
//! read (`v1`: focal 0.1's contract-0.1.0 records). Written when a job is queued, starts, saves
//! an image and ends, so a killed server loses no finished job and requeues the unfinished ones.

use std::path::Path;

use anyhow::{Context, Result};
use focal_core::{JobInfo, JobSpec};
use rusqlite::{params, Connection};

mod v1;

/// The schema rows are written with now.
pub const SCHEMA: i64 = 2;

/// Where job records live. Calls come in the order the job states changed.
pub trait JobStore: Send {
    /// Insert or replace a job's record (its queue position is kept).
    fn put(&mut self, spec: &JobSpec, info: &JobInfo) -> Result<()>;
    fn delete(&mut self, id: &str) -> Result<()>;
    /// Every job in queue order; records that cannot be read are skipped with a warning.
    fn load(&mut self) -> Result<Vec<(JobSpec, JobInfo)>>;
}

pub struct SqliteStore {
    db: Connection,
}

impl SqliteStore {
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
                 id     TEXT PRIMARY KEY,
                 seq    INTEGER NOT NULL,
                 spec   TEXT NOT NULL,
                 info   TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS jobs_seq ON jobs(seq);",
        )
        .with_context(|| format!("{}: not a focal job database", path.display()))?;
        // Columns later schemas added; a table focal 0.1 made has rows of schema 1.
        let columns: Vec<String> =
            db.prepare("SELECT name FROM pragma_table_info('jobs')")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        if !columns.iter().any(|c| c == "schema") {
            db.execute_batch("ALTER TABLE jobs ADD COLUMN schema INTEGER NOT NULL DEFAULT 1;")?;
        }
        if !columns.iter().any(|c| c == "owner") {
            db.execute_batch("ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';")?;
        }
        Ok(Self { db })
    }
}

/// A row's spec and info in the host's types, whatever schema wrote them.
fn read_row(schema: i64, spec: &str, info: &str) -> Result<(JobSpec, JobInfo), String> {
    let json = |e: serde_json::Error| e.to_string();
    match schema {
        1 => {
            let spec: v1::SpecV1 = serde_json::from_str(spec).map_err(json)?;
            let info: v1::InfoV1 = serde_json::from_str(info).map_err(json)?;
            Ok((spec.into_domain()?, info.into_domain()))
        }
        SCHEMA => Ok((serde_json::from_str(spec).map_err(json)?, serde_json::from_str(info).map_err(json)?)),
        other => Err(format!("schema {other} is newer than this focal (it writes {SCHEMA})")),
    }
}

impl JobStore for SqliteStore {
    fn put(&mut self, spec: &JobSpec, info: &JobInfo) -> Result<()> {
        self.db.execute(
            "INSERT INTO jobs (id, seq, spec, info, schema, owner)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, info = excluded.info, schema = excluded.schema",
            params![info.id, serde_json::to_string(spec)?, serde_json::to_string(info)?, SCHEMA, spec.owner.0],
        )?;
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<()> {
        self.db.execute("DELETE FROM jobs WHERE id = ?1", params![id])?;
        Ok(())
    }

    fn load(&mut self) -> Result<Vec<(JobSpec, JobInfo)>> {
        let mut stmt = self.db.prepare("SELECT id, schema, spec, info FROM jobs ORDER BY seq")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, schema, spec, info) = row?;
            match read_row(schema, &spec, &info) {
                Ok(job) => jobs.push(job),
                Err(e) => tracing::warn!(job = %id, schema, "skipping a job record this version cannot read: {e}"),
            }
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture focal 0.1 wrote (tests/fixtures/stored-jobs) reads as the host's types, and
    /// a row written back is schema 2 and reads the same.
    #[test]
    fn schema_1_rows_convert_and_round_trip() {
        let dir = std::env::temp_dir().join(format!("focal-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("focal.db");
        std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/stored-jobs/focal.db"), &db).unwrap();
        let mut store = SqliteStore::open(&db).unwrap();
        let jobs = store.load().unwrap();
        assert_eq!(jobs.len(), 2);
        let (spec, info) = &jobs[0];
        assert_eq!(spec.params.prompt, "a stored job");
        assert_eq!(spec.task, focal_core::Task::TextToImage);
        let fooocus = spec.fooocus.as_ref().unwrap();
        assert_eq!(fooocus.patches.unwrap().sharpness, 2.0);
        assert_eq!(fooocus.metadata.as_ref().unwrap().scheme, "fooocus");
        assert_eq!(info.stage, focal_core::JobStage::Success);
        assert_eq!(info.progress.phase, focal_core::Phase::Finished);
        assert_eq!(info.images[0].seed, 7);

        store.put(spec, info).unwrap();
        let again = store.load().unwrap();
        assert_eq!(&again[0], &jobs[0], "rewritten as schema {SCHEMA}, read back the same");
        let schema: i64 = store.db.query_row("SELECT schema FROM jobs WHERE id = ?1", params![info.id], |r| r.get(0)).unwrap();
        assert_eq!(schema, SCHEMA);
        std::fs::remove_dir_all(&dir).ok();
    }
}
