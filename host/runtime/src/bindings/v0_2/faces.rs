//! The `faces` import of 0.2.0's `image-step` world: the host's face detector, within the
//! calling step's time limit.

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
        let budget = self.budget(u32::MAX);
        Ok(match tokio::time::timeout(budget, service.detect(image, min_score)).await {
            Ok(found) => found.map(|faces| faces.into_iter().map(face_out).collect()),
            Err(_) => Err("face detection did not finish within the step's time limit".into()),
        })
    }
}
