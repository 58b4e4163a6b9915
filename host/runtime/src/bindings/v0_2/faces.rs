//! The `faces` import of 0.2.0's `image-step` world: the host's face detector. Its time is the
//! host's, not the step's (as for `describe` and the upscaler): the step's budget moves with it.

use focal_core::{Face, Image};
use wasmtime::component::Resource;

use super::generated::image_step::focal::plugin::faces;
use crate::host::State;

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    faces::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

fn face_out(f: Face) -> faces::Face {
    faces::Face { left: f.left, top: f.top, right: f.right, bottom: f.bottom, score: f.score, landmarks: f.landmarks.to_vec() }
}

impl faces::Host for State {
    async fn detect(&mut self, image: Resource<Image>, min_score: f32) -> wasmtime::Result<Result<Vec<faces::Face>, String>> {
        let Some(service) = self.services.faces.clone() else {
            return Ok(Err("this host runs no face detector".into()));
        };
        if !(0.0..=1.0).contains(&min_score) {
            return Ok(Err(format!("min-score {min_score} is not within 0 to 1")));
        }
        let image = self.image(&image)?;
        let started = std::time::Instant::now();
        let found = service.detect(image, min_score).await;
        self.deadline += started.elapsed();
        Ok(found.map(|faces| faces.into_iter().map(face_out).collect()))
    }
}
