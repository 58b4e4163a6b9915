//! An image held by the host: the encoded file as it arrived (PNG, JPEG or WebP) and its size,
//! checked when it was made (see the server's bounded decoder). Cheap to clone; the pixels are
//! decoded where they are used.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// The encoded file; empty once the job that used it ended (records keep only the size).
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    pub encoded: Arc<[u8]>,
}

impl Image {
    /// The size without the file: what a finished job's record keeps.
    pub fn released(&self) -> Image {
        Image { width: self.width, height: self.height, encoded: Arc::from(Vec::new()) }
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}×{}, {} bytes)", self.width, self.height, self.encoded.len())
    }
}

fn to_base64<S: Serializer>(bytes: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn from_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
    let text = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD.decode(text).map(Arc::from).map_err(serde::de::Error::custom)
}
