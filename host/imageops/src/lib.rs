//! Fooocus's pixel operations, reproduced bit for bit (Fooocus runs them with PIL, OpenCV and numpy,
//! and an upscale, vary or control image starts from their bytes). Pure Rust without dependencies: the host and
//! image-step components (wasm32-wasip2) share it.

pub mod blur;
pub mod canny;
pub mod crop;
pub mod cv_resize;
pub mod decolor;
pub mod face_align;
pub mod gaussian;
pub mod lab;
pub mod mask;
pub mod pixels;
pub mod resample;
pub mod shape;

pub use blur::box_blur;
pub use canny::{canny, canny_pyramid};
pub use crop::{crop, inpaint_area, pad_constant, pad_edge, paste, CropBox, Margins};
pub use decolor::{cpds, decolor};
pub use face_align::face_crop;
pub use gaussian::gaussian_blur;
pub use pixels::Pixels;
pub use resample::{resize_fill, resize_lanczos};
pub use shape::{image_shape_ceil, round_half_even, set_image_shape_ceil, shape_ceil, shape_ceil_size};
