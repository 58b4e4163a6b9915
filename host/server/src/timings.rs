//! Where a job's time went, from its tracing spans: with `RUST_LOG=focal=debug` (or
//! `focal::timings=debug`) every job ends with one log line listing the wall time of each span
//! below it (`image/engine.sample/engine.vae_decode: 1.20 s`, summed over repeats) and the
//! engine's time per kind of layer (`focal_engine::profile`) while it ran. Off, it costs a
//! lookup per span.

use std::fmt::Write;
use std::time::Instant;

use focal_engine::profile;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The span every job runs in (`jobs::worker`); its `id` field names the job.
pub const JOB_SPAN: &str = "job";
const TARGET: &str = "focal::timings";

/// The layer to add to the subscriber.
pub struct JobTimings;

struct Started(Instant);

/// Per path below the job: (path, seconds, times).
#[derive(Default)]
struct Breakdown {
    job: String,
    parts: Vec<(String, f64, u32)>,
}

impl Breakdown {
    fn add(&mut self, path: String, seconds: f64) {
        match self.parts.iter_mut().find(|(p, _, _)| *p == path) {
            Some(part) => {
                part.1 += seconds;
                part.2 += 1;
            }
            None => self.parts.push((path, seconds, 1)),
        }
    }

    fn report(&self, total: f64) -> String {
        let mut line = format!("job {} took {total:.2} s:", self.job);
        for (path, seconds, times) in &self.parts {
            let _ = write!(line, " {path} {seconds:.2} s");
            if *times > 1 {
                let _ = write!(line, " ({times}×)");
            }
            line.push(';');
        }
        line.push_str(" engine layers:");
        for op in profile::totals().iter().filter(|o| o.calls > 0) {
            let _ = write!(line, " {} {:.2} s ({} calls);", op.op.name(), op.seconds, op.calls);
        }
        line
    }
}

struct JobId(String);

impl Visit for JobId {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "id" {
            self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "id" {
            self.0 = value.to_string();
        }
    }
}

impl<S> Layer<S> for JobTimings
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if span.name() == JOB_SPAN {
            if !tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
                return;
            }
            let mut job = JobId(String::new());
            attrs.record(&mut job);
            extensions.insert(Breakdown { job: job.0, parts: Vec::new() });
            // One engine worker runs one job at a time: the global layer sums are this job's.
            profile::enable(true);
        }
        extensions.insert(Started(Instant::now()));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(seconds) = span.extensions().get::<Started>().map(|s| s.0.elapsed().as_secs_f64()) else { return };
        if span.name() == JOB_SPAN {
            if let Some(breakdown) = span.extensions_mut().remove::<Breakdown>() {
                tracing::debug!(target: TARGET, "{}", breakdown.report(seconds));
                profile::enable(false);
            }
            return;
        }
        let mut path = Vec::new();
        for ancestor in span.scope() {
            if ancestor.name() == JOB_SPAN {
                path.reverse();
                if let Some(breakdown) = ancestor.extensions_mut().get_mut::<Breakdown>() {
                    breakdown.add(path.join("/"), seconds);
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
            let job = tracing::info_span!("job", id = %"abc");
            job.in_scope(|| {
                for _ in 0..2 {
                    let _image = tracing::info_span!("image").entered();
                    let _sample = tracing::info_span!("engine.sample").entered();
                }
                let _steps = tracing::info_span!("image_steps").entered();
            });
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line = text.lines().find(|l| l.contains("job abc took")).unwrap_or_else(|| panic!("no breakdown in {text:?}"));
        assert!(line.contains("image/engine.sample ") && line.contains("(2×)"), "{line}");
        assert!(line.contains(" image_steps "), "{line}");
    }
}
