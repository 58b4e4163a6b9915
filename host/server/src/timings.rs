//! Where a job's time went, from its tracing spans: with `RUST_LOG=focal=debug` (or
//! `focal::timings=debug`) every job ends with one log line listing the wall time of each span
//! below it (`image/engine.sample/engine.vae_decode: 1.20 s`, summed over repeats) and the
//! engine's time per kind of layer (`focal_engine::profile`) while it ran. Off, each span costs
//! one atomic load.
//!
//! The layer only records (a layer may not log: tracing drops events raised inside a
//! subscriber's own callbacks); the worker starts the recording and logs the line. One engine
//! worker runs one job at a time, so one global record serves.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use focal_engine::profile;
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The span every job runs in (`jobs::worker`).
pub const JOB_SPAN: &str = "job";

static RECORDING: AtomicBool = AtomicBool::new(false);
/// (path below the job span, seconds, times).
static PARTS: Mutex<Vec<(String, f64, u32)>> = Mutex::new(Vec::new());

/// A job's recording, from [`JobRecording::start`] to [`JobRecording::report`].
pub struct JobRecording {
    started: Instant,
}

impl JobRecording {
    /// Start recording when the log would show the line (`None` otherwise).
    pub fn start() -> Option<Self> {
        if !tracing::enabled!(target: "focal::timings", tracing::Level::DEBUG) {
            return None;
        }
        PARTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
        profile::enable(true);
        RECORDING.store(true, Ordering::Relaxed);
        Some(Self { started: Instant::now() })
    }

    /// Stop recording and log the job's line.
    pub fn report(self, job: &str) {
        RECORDING.store(false, Ordering::Relaxed);
        let mut line = format!("job {job} took {:.2} s:", self.started.elapsed().as_secs_f64());
        for (path, seconds, times) in PARTS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = write!(line, " {path} {seconds:.2} s");
            if times > 1 {
                let _ = write!(line, " ({times}×)");
            }
            line.push(';');
        }
        line.push_str(" engine layers:");
        for op in profile::totals().iter().filter(|o| o.calls > 0) {
            let _ = write!(line, " {} {:.2} s ({} calls);", op.op.name(), op.seconds, op.calls);
        }
        profile::enable(false);
        tracing::debug!(target: "focal::timings", "{line}");
    }
}

/// The layer to add to the subscriber: it times the spans below a job's while recording.
pub struct JobTimings;

struct Started(Instant);

impl<S> Layer<S> for JobTimings
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !RECORDING.load(Ordering::Relaxed) {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Started(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(seconds) = span.extensions().get::<Started>().map(|s| s.0.elapsed().as_secs_f64()) else { return };
        let mut path = Vec::new();
        for ancestor in span.scope() {
            if ancestor.name() == JOB_SPAN {
                if path.is_empty() {
                    return; // the job's own span: the worker reports its total
                }
                path.reverse();
                let path = path.join("/");
                let mut parts = PARTS.lock().unwrap_or_else(|e| e.into_inner());
                match parts.iter_mut().find(|(p, _, _)| *p == path) {
                    Some(part) => {
                        part.1 += seconds;
                        part.2 += 1;
                    }
                    None => parts.push((path, seconds, 1)),
                }
                return;
            }
            path.push(ancestor.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects the formatted log lines.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_job_ends_with_its_breakdown() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()).with_ansi(false))
            .with(JobTimings)
            .with(tracing_subscriber::EnvFilter::new("focal=debug"));
        tracing::subscriber::with_default(subscriber, || {
            let recording = JobRecording::start().expect("debug is on for focal");
            let job = tracing::info_span!("job", id = %"abc");
            job.in_scope(|| {
                for _ in 0..2 {
                    let _image = tracing::info_span!("image").entered();
                    let _sample = tracing::info_span!("engine.sample").entered();
                }
                let _steps = tracing::info_span!("image_steps").entered();
            });
            drop(job);
            recording.report("abc");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line = text.lines().find(|l| l.contains("job abc took")).unwrap_or_else(|| panic!("no breakdown in {text:?}"));
        assert!(line.contains("image/engine.sample ") && line.contains("(2×)"), "{line}");
        assert!(line.contains(" image_steps "), "{line}");
    }
}
