//! The queue's state machine: job records by id, the waiting line, the running job and the
//! finished ones, and what each owner may see of them. No I/O: the job manager persists what
//! changes and wakes whoever waits.

use std::collections::{HashMap, VecDeque};

use focal_core::{Image, JobInfo, JobSpec, JobStage, Owner, Phase, Progress, QueueInfo};

pub(super) struct Entry {
    pub(super) spec: JobSpec,
    pub(super) info: JobInfo,
    /// The latest step preview while the job runs.
    pub(super) preview: Option<Image>,
}

#[derive(Default)]
pub(super) struct Queue {
    entries: HashMap<String, Entry>,
    waiting: VecDeque<String>,
    running: Option<String>,
    /// Oldest first.
    finished: VecDeque<String>,
    /// Each owner's latest submitted job.
    last_job_id: HashMap<Owner, String>,
    /// Owners with waiting jobs, in the order the worker serves them: one job from the first,
    /// which then goes to the back (round robin, so one owner's long line does not starve
    /// another's single job).
    turns: VecDeque<Owner>,
}

impl Queue {
    /// The queue a previous run left: ended jobs into the history (by finish time), the others
    /// reset to waiting, in their old order. Returns the queue and the ids it requeued.
    pub(super) fn restore(records: Vec<(JobSpec, JobInfo)>) -> (Queue, Vec<String>) {
        let mut queue = Queue::default();
        let mut finished = Vec::new();
        let mut requeued = Vec::new();
        for (spec, mut info) in records {
            let id = info.id.clone();
            if info.stage.ended() {
                finished.push(id.clone());
            } else {
                // Killed while waiting or running: run it again from the start.
                info.stage = JobStage::Waiting;
                info.progress = Progress::WAITING;
                info.start_ms = 0;
                info.images.clear();
                queue.waiting.push_back(id.clone());
                requeued.push(id.clone());
                if !queue.turns.contains(&spec.owner) {
                    queue.turns.push_back(spec.owner.clone());
                }
            }
            queue.last_job_id.insert(spec.owner.clone(), id.clone());
            queue.entries.insert(id, Entry { spec, info, preview: None });
        }
        finished.sort_by_key(|id| queue.entries[id].info.finish_ms);
        queue.finished = finished.into();
        (queue, requeued)
    }

    /// Waiting plus running jobs, of every owner (the host's queue limit counts them all).
    pub(super) fn active(&self) -> usize {
        self.waiting.len() + self.running.is_some() as usize
    }

    pub(super) fn push(&mut self, entry: Entry) {
        let id = entry.info.id.clone();
        self.last_job_id.insert(entry.spec.owner.clone(), id.clone());
        if !self.turns.contains(&entry.spec.owner) {
            self.turns.push_back(entry.spec.owner.clone());
        }
        self.waiting.push_back(id.clone());
        self.entries.insert(id, entry);
    }

    /// The next waiting job, now running: the oldest of the owner whose turn it is.
    pub(super) fn start_next(&mut self) -> Option<String> {
        while let Some(owner) = self.turns.pop_front() {
            let Some(pos) = self.waiting.iter().position(|id| self.entries[id].spec.owner == owner) else {
                continue; // nothing waiting: out of the rotation until its next job
            };
            let id = self.waiting.remove(pos).expect("found");
            self.turns.push_back(owner);
            self.running = Some(id.clone());
            return Some(id);
        }
        let id = self.waiting.pop_front()?;
        self.running = Some(id.clone());
        Some(id)
    }

    /// Move the running job `id` into the history.
    pub(super) fn finish(&mut self, id: &str) {
        if self.running.as_deref() == Some(id) {
            self.running = None;
        }
        self.finished.push_back(id.to_string());
    }

    pub(super) fn entry_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.entries.get_mut(id)
    }

    /// Job `id`, whoever owns it (for the host's own bookkeeping).
    pub(super) fn entry_of(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Job `id` if `owner` may see it.
    pub(super) fn entry(&self, owner: &Owner, id: &str) -> Option<&Entry> {
        self.entries.get(id).filter(|e| &e.spec.owner == owner)
    }

    pub(super) fn running(&self) -> Option<&str> {
        self.running.as_deref()
    }

    pub(super) fn queue_info(&self, owner: &Owner) -> QueueInfo {
        let mine = |id: &&String| &self.entries[*id].spec.owner == owner;
        QueueInfo {
            running_size: (self.running.iter().chain(self.waiting.iter()).filter(mine).count()) as u32,
            finished_size: self.finished.iter().filter(mine).count() as u32,
            last_job_id: self.last_job_id.get(owner).cloned(),
        }
    }

    /// `owner`'s unfinished jobs (oldest first) and finished ones (newest first, `offset` and
    /// `limit` applied), optionally only job `job_id`.
    pub(super) fn history(&self, owner: &Owner, job_id: Option<&str>, offset: u32, limit: u32) -> (Vec<JobInfo>, Vec<JobInfo>) {
        let wanted = |id: &&String| job_id.is_none_or(|j| j == id.as_str()) && &self.entries[*id].spec.owner == owner;
        let info = |id: &String| self.entries[id].info.clone();
        let queue = self.running.iter().chain(self.waiting.iter()).filter(wanted).map(info).collect();
        let history = self.finished.iter().rev().filter(wanted).skip(offset as usize).take(limit as usize).map(info).collect();
        (queue, history)
    }

    /// Take `owner`'s waiting job `id` out of the line, ended as stopped before it started.
    pub(super) fn cancel_waiting(&mut self, owner: &Owner, id: &str, now_ms: u64) -> Option<&Entry> {
        self.entry(owner, id)?;
        let pos = self.waiting.iter().position(|w| w == id)?;
        self.waiting.remove(pos);
        self.finished.push_back(id.to_string());
        let entry = self.entries.get_mut(id)?;
        entry.info.stage = JobStage::Success;
        entry.info.stopped = true;
        entry.info.progress.enter(Phase::Finished, 100);
        entry.info.finish_ms = now_ms;
        entry.spec = entry.spec.released();
        Some(entry)
    }

    /// Remove `owner`'s finished job `id`.
    pub(super) fn remove_finished(&mut self, owner: &Owner, id: &str) -> Option<Entry> {
        self.entry(owner, id)?;
        let pos = self.finished.iter().position(|j| j == id)?;
        self.finished.remove(pos);
        self.entries.remove(id)
    }

    /// Remove the oldest finished job while more than `max` are kept.
    pub(super) fn pop_history_beyond(&mut self, max: usize) -> Option<Entry> {
        if self.finished.len() <= max {
            return None;
        }
        let id = self.finished.pop_front()?;
        self.entries.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_core::job::OutputOptions;
    use focal_core::{GenerationParams, Task};

    fn entry(id: &str, owner: &str) -> Entry {
        let spec = JobSpec {
            owner: Owner(owner.into()),
            label: "Text to Image".into(),
            task: Task::TextToImage,
            controls: vec![],
            params: GenerationParams {
                prompt: String::new(),
                negative_prompt: String::new(),
                width: 64,
                height: 64,
                steps: 1,
                guidance_scale: 1.0,
                sampler: "euler".into(),
                scheduler: "normal".into(),
                seed: 0,
                image_number: 1,
                base_model: String::new(),
                clip_skip: 2,
                disable_seed_increment: false,
                preview: false,
                freeu: None,
                vae: String::new(),
                loras: vec![],
                refiner: None,
            },
            fooocus: None,
            output: OutputOptions { extension: "png".into(), save_name: String::new() },
            post_steps: vec![],
            webhook_url: None,
            request: String::new(),
        };
        let info = JobInfo::waiting(id.into(), &spec, 0);
        Entry { spec, info, preview: None }
    }

    /// Every query answers for its owner only: another owner's job is invisible, cannot be
    /// stopped or deleted, and is not counted in its queue.
    #[test]
    fn owners_see_only_their_own_jobs() {
        let (a, b) = (Owner("a".into()), Owner("b".into()));
        let mut q = Queue::default();
        q.push(entry("a1", "a"));
        q.push(entry("b1", "b"));
        q.push(entry("a2", "a"));
        assert_eq!(q.active(), 3);
        assert_eq!(q.queue_info(&a).running_size, 2);
        assert_eq!(q.queue_info(&b).running_size, 1);
        assert_eq!(q.queue_info(&a).last_job_id.as_deref(), Some("a2"));
        assert_eq!(q.queue_info(&b).last_job_id.as_deref(), Some("b1"));
        assert!(q.entry(&b, "a1").is_none() && q.entry(&a, "a1").is_some());
        let ids = |v: Vec<JobInfo>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(q.history(&a, None, 0, 10).0), ["a1", "a2"]);
        assert_eq!(ids(q.history(&b, Some("a1"), 0, 10).0), Vec::<String>::new());

        assert_eq!(q.start_next().as_deref(), Some("a1"));
        assert!(q.cancel_waiting(&a, "b1", 1).is_none(), "not a's job");
        assert!(q.cancel_waiting(&b, "b1", 1).is_some());
        assert_eq!(q.entry(&b, "b1").unwrap().info.stage, JobStage::Success);
        assert!(q.entry(&b, "b1").unwrap().info.stopped);
        q.finish("a1");
        assert!(q.remove_finished(&b, "a1").is_none(), "b cannot delete a's job");
        assert_eq!(ids(q.history(&a, None, 0, 10).1), ["a1"]);
        assert_eq!(ids(q.history(&b, None, 0, 10).1), ["b1"]);
        assert!(q.remove_finished(&a, "a1").is_some());
        assert_eq!(q.start_next().as_deref(), Some("a2"), "b1 left the line when stopped");
    }

    /// Owners take turns: with a's ten jobs queued first, b's one job runs second.
    #[test]
    fn owners_take_turns() {
        let mut q = Queue::default();
        for i in 0..10 {
            q.push(entry(&format!("a{i}"), "a"));
        }
        q.push(entry("b0", "b"));
        q.push(entry("c0", "c"));
        let mut order = Vec::new();
        while let Some(id) = q.start_next() {
            q.finish(&id);
            order.push(id);
        }
        assert_eq!(order[..5], ["a0", "b0", "c0", "a1", "a2"]);
        assert_eq!(order.len(), 12);
    }

    #[test]
    fn restore_requeues_unfinished_jobs_in_order() {
        let mut done = entry("done", "");
        done.info.stage = JobStage::Success;
        done.info.finish_ms = 5;
        let mut running = entry("running", "");
        running.info.stage = JobStage::Running;
        running.info.progress.enter(Phase::Sampling, 50);
        let waiting = entry("waiting", "");
        let records = [running, done, waiting].into_iter().map(|e| (e.spec, e.info)).collect();
        let (mut q, requeued) = Queue::restore(records);
        assert_eq!(requeued, ["running", "waiting"]);
        assert_eq!(q.entry(&Owner::default(), "running").unwrap().info.progress, Progress::WAITING);
        assert_eq!(q.queue_info(&Owner::default()).finished_size, 1);
        assert_eq!(q.start_next().as_deref(), Some("running"));
    }
}
