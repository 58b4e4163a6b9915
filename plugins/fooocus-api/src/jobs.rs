//! query-job, job-queue, job-history and stop.

use serde_json::{json, Value};

use crate::exports::focal::plugin::handler::{Request, Response};
use crate::focal::plugin::engine::{self, JobInfo, JobStage, Phase};
use crate::{json_response, query_param, unprocessable};

fn stage_name(stage: JobStage) -> &'static str {
    match stage {
        JobStage::Waiting => "WAITING",
        // The seed (0.5) kept reporting WAITING while running; focal reports RUNNING, which
        // clients already treat as "not finished".
        JobStage::Running => "RUNNING",
        JobStage::Success => "SUCCESS",
        JobStage::Error => "ERROR",
    }
}

/// Options the job was submitted with that shape its results.
fn result_options(info: &JobInfo) -> (bool, String) {
    let request: Value = serde_json::from_str(&info.request).unwrap_or(Value::Null);
    let base64 = request.get("require_base64").and_then(Value::as_bool).unwrap_or(false);
    let ext = request.get("save_extension").and_then(Value::as_str).unwrap_or("png").to_ascii_lowercase();
    (base64, ext)
}

/// Fooocus's `job_status` text for the job's progress.
fn status_text(info: &JobInfo) -> Option<String> {
    use focal_fooocus_tasks::status::{text, JobProgress, Phase as Fooocus};
    let p = &info.progress;
    let phase = match p.phase {
        Phase::Waiting => Fooocus::Waiting,
        Phase::LoadingModels => Fooocus::LoadingModels,
        Phase::Downloading => Fooocus::Downloading,
        Phase::ProcessingPrompts => Fooocus::ProcessingPrompts,
        Phase::EncodingPrompts => Fooocus::EncodingPrompts,
        Phase::Sampling => Fooocus::Sampling,
        Phase::Saving => Fooocus::Saving,
        Phase::Finished => Fooocus::Finished,
    };
    text(&JobProgress {
        phase,
        image: p.image,
        images: p.images,
        step: p.step,
        steps: p.steps,
        download: p.download.as_ref().map(|d| (d.file.as_str(), d.percent)),
        stopped: info.stopped,
    })
}

/// The seed's `AsyncJobResponse`.
pub fn async_job_response(info: &JobInfo, with_preview: bool) -> Value {
    let finished = matches!(info.stage, JobStage::Success | JobStage::Error);
    let result = finished.then(|| {
        let (base64, ext) = result_options(info);
        Value::Array(crate::generate::results(info, base64, &ext))
    });
    let status = match &info.error {
        Some(e) => Some(e.clone()),
        None => status_text(info),
    };
    let preview = (with_preview && !finished).then(|| engine::preview(&info.id).map(|image| crate::base64::encode(&image.png()))).flatten();
    json!({
        "job_id": info.id,
        "job_type": info.label,
        "job_stage": stage_name(info.stage),
        "job_progress": info.progress.percent,
        "job_status": status,
        "job_step_preview": preview,
        "job_result": result,
    })
}

fn flag(query: &str, key: &str) -> Result<bool, Response> {
    match query_param(query, key).as_deref() {
        None => Ok(false),
        Some("true" | "True" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "False" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(unprocessable(
            vec![crate::fields::error_item(
                "bool_parsing",
                &[json!("query"), json!(key)],
                "Input should be a valid boolean, unable to interpret input",
                &json!(other),
                None,
            )],
            Value::Null,
        )),
    }
}

fn int_param(query: &str, key: &str, default: i64) -> Result<i64, Response> {
    match query_param(query, key) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            unprocessable(
                vec![crate::fields::error_item(
                    "int_parsing",
                    &[json!("query"), json!(key)],
                    "Input should be a valid non-negative integer",
                    &json!(v),
                    None,
                )],
                Value::Null,
            )
        }),
    }
}

pub fn query_job(req: &Request) -> Response {
    let Some(id) = query_param(&req.query, "job_id") else {
        return unprocessable(
            vec![crate::fields::error_item("missing", &[json!("query"), json!("job_id")], "Field required", &Value::Null, None)],
            Value::Null,
        );
    };
    let with_preview = match flag(&req.query, "require_step_preview") {
        Ok(b) => b,
        Err(r) => return r,
    };
    match engine::get(&id) {
        Some(info) => json_response(200, &async_job_response(&info, with_preview)),
        None => json_response(
            404,
            &json!({"job_id": "", "job_type": "Not Found", "job_stage": "ERROR", "job_progress": 0, "job_status": "Job not found", "job_step_preview": null, "job_result": null}),
        ),
    }
}

pub fn job_queue() -> Response {
    let q = engine::queue();
    json_response(200, &json!({"running_size": q.running_size, "finished_size": q.finished_size, "last_job_id": q.last_job_id}))
}

fn brief(info: &JobInfo) -> Value {
    json!({
        "job_id": info.id,
        "in_queue_mills": info.in_queue_ms,
        "start_mills": info.start_ms,
        "finish_mills": info.finish_ms,
        "is_finished": matches!(info.stage, JobStage::Success | JobStage::Error),
    })
}

/// `--persistent` shape: the request parameters and the task record.
fn persistent_record(info: &JobInfo) -> Value {
    let params: Value = serde_json::from_str(&info.request).unwrap_or(json!({}));
    let urls: Vec<String> = info.images.iter().map(|i| crate::file_url(&i.path)).collect();
    let finish_reason = match info.stage {
        JobStage::Success => "SUCCESS",
        JobStage::Error => "ERROR",
        _ => "",
    };
    json!({
        "params": params,
        "task_info": {
            "task_id": info.id,
            "task_type": info.label,
            "task_in_queue_mills": info.in_queue_ms,
            "task_start_mills": info.start_ms,
            "task_finish_mills": info.finish_ms,
            "result_url": urls.join(","),
            "finish_reason": finish_reason,
            "date_time": date_time(info.finish_ms.max(info.in_queue_ms)),
        }
    })
}

/// `YYYY-mm-dd HH:MM:SS` (UTC) from epoch milliseconds.
fn date_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn job_history(req: &Request) -> Response {
    let job_id = query_param(&req.query, "job_id").filter(|s| !s.is_empty());
    let delete = match flag(&req.query, "delete") {
        Ok(b) => b,
        Err(r) => return r,
    };
    if delete {
        let Some(id) = job_id else {
            return unprocessable(
                vec![crate::fields::error_item(
                    "missing",
                    &[json!("query"), json!("job_id")],
                    "job_id is required with delete=true",
                    &Value::Null,
                    None,
                )],
                Value::Null,
            );
        };
        let message = if engine::delete(&id) { "Deleted" } else { "Not found" };
        return json_response(200, &json!({"message": message}));
    }
    let persistent = crate::host_config("host.persistent").as_deref() == Some("true");
    let paged = persistent || query_param(&req.query, "page").is_some() || query_param(&req.query, "page_size").is_some();
    let (page, size) = match (int_param(&req.query, "page", 0), int_param(&req.query, "page_size", 20)) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let (offset, limit) = if paged { ((page * size).min(u32::MAX as i64) as u32, size.min(u32::MAX as i64) as u32) } else { (0, u32::MAX) };
    let (queue, history) = engine::history(job_id.as_deref(), offset, limit);
    let shape: fn(&JobInfo) -> Value = if persistent { persistent_record } else { brief };
    json_response(
        200,
        &json!({"queue": queue.iter().map(brief).collect::<Vec<_>>(), "history": history.iter().map(shape).collect::<Vec<_>>()}),
    )
}

/// The seed's stop: the running job, if it is the caller's (a waiting one keeps its turn).
pub fn stop() -> Response {
    let (unfinished, _) = engine::history(None, 0, 0);
    if let Some(running) = unfinished.iter().find(|j| j.stage == JobStage::Running) {
        engine::stop(&running.id);
    }
    json_response(200, &json!({"msg": "success"}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_time_matches_known_instants() {
        assert_eq!(super::date_time(0), "1970-01-01 00:00:00");
        // 2024-02-29T12:34:56Z
        assert_eq!(super::date_time(1_709_210_096_000), "2024-02-29 12:34:56");
    }
}
