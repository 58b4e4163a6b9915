//! Fooocus's face detector for FaceSwap's crop (`extras/face_crop.py`): facexlib's RetinaFace with
//! a ResNet-50 body, run as `FaceRestoreHelper.get_face_landmarks_5` runs it. The crop itself (the
//! similarity fit to the face template and the warp) is pixel work done in the controls step
//! (`focal-imageops::face_align`); this crate only finds faces and their five landmarks.

pub mod retinaface;

pub use retinaface::RetinaFace;

/// The largest image the detector runs on. It runs at the image's own size, as Fooocus does, and a
/// ResNet-50 over a whole photo is heavy: 12 MP took 48 s and 4.6 GB on 2 CPU cores (`examples/
/// detect.rs`); 16 MP (4096×4096) is about 6 GB.
pub const MAX_PIXELS: usize = 4096 * 4096;
