//! Fooocus's face detector for FaceSwap's crop (`extras/face_crop.py`): facexlib's RetinaFace with
//! a ResNet-50 body, run as `FaceRestoreHelper.get_face_landmarks_5` runs it. The crop itself (the
//! similarity fit to the face template and the warp) is pixel work done in the controls step
//! (`focal-imageops::face_align`); this crate only finds faces and their five landmarks.

pub mod retinaface;

pub use retinaface::RetinaFace;

/// The largest image the detector runs on (it runs at the image's own size, as Fooocus does; a
/// ResNet-50 over more pixels than this needs gigabytes).
pub const MAX_PIXELS: usize = 2048 * 2048;
