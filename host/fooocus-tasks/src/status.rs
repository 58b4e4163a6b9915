//! Fooocus's status text for a job's progress (`job_status` of Fooocus-API's query-job, e.g.
//! `Step 7/30 in the 1-th Sampling`).

/// Where a job is, in the terms Fooocus reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Waiting,
    LoadingModels,
    /// A model file being fetched, and how far (0–100).
    Downloading,
    ProcessingPrompts,
    EncodingPrompts,
    Sampling,
    Saving,
    Finished,
}

/// What the text says of a job.
pub struct JobProgress<'a> {
    pub phase: Phase,
    /// Image being made (0-based) and how many the job makes.
    pub image: u32,
    pub images: u32,
    pub step: u32,
    pub steps: u32,
    /// The file being fetched and its percent (phase `Downloading`).
    pub download: Option<(&'a str, u8)>,
    pub stopped: bool,
}

/// The status text; none while waiting, as Fooocus-API.
pub fn text(p: &JobProgress) -> Option<String> {
    Some(match p.phase {
        Phase::Waiting => return None,
        Phase::LoadingModels => "Loading models ...".into(),
        Phase::Downloading => match p.download {
            Some((file, percent)) => format!("Downloading {file} ({percent}%) ..."),
            None => "Downloading ...".into(),
        },
        Phase::ProcessingPrompts => "Processing prompts ...".into(),
        Phase::EncodingPrompts => "Encoding prompts ...".into(),
        Phase::Sampling => format!("Step {}/{} in the {}-th Sampling", p.step, p.steps, p.image + 1),
        Phase::Saving => format!("Saving image {}/{} to system ...", p.image + 1, p.images),
        Phase::Finished if p.stopped => "User stopped".into(),
        Phase::Finished => "Finished".into(),
    })
}
