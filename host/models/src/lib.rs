//! The models folder as Fooocus lays it out, Fooocus's presets (which model each uses and where
//! to download it), and the downloader that fetches them: resumable, sha256-verified, with
//! progress. No engine code here.
pub mod download;
pub mod layout;
pub mod presets;

pub use download::{DownloadError, Downloader};
pub use layout::ModelsDir;
pub use presets::Preset;
