//! The zip format (torch ≥ 1.6): `<dir>/data.pkl` and each storage in `<dir>/data/<key>`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{convert, read_pickle, refuse, Storages, Value, MAX_PICKLE_BYTES};
use crate::error::Result;

pub(super) fn load(file: File, path: &Path) -> Result<Value> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|_| refuse(path, "not a torch file (neither a torch zip nor the legacy format)"))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).and_then(|n| n.ok()).map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| refuse(path, "no data.pkl in the archive"))?;
    let dir = pkl.trim_end_matches("data.pkl").to_string();
    let object = {
        let entry = zip.by_name(&pkl).map_err(|e| refuse(path, e))?;
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(refuse(path, format!("data.pkl is {} bytes", entry.size())));
        }
        read_pickle(&mut BufReader::new(entry), path)?
    };
    let mut storages = ZipStorages { zip: &mut zip, dir, path, cache: HashMap::new() };
    convert(object, &mut storages)
}

/// The storages of the archive, read on first use (tensors may share one).
struct ZipStorages<'a, R: Read + std::io::Seek> {
    zip: &'a mut zip::ZipArchive<R>,
    dir: String,
    path: &'a Path,
    cache: HashMap<String, (DType, Tensor)>,
}

impl<R: Read + std::io::Seek> Storages for ZipStorages<'_, R> {
    fn path(&self) -> &Path {
        self.path
    }

    fn get(&mut self, key: &str, dtype: DType, numel: usize) -> Result<Tensor> {
        if let Some((d, t)) = self.cache.get(key) {
            if *d == dtype {
                return Ok(t.clone());
            }
        }
        let name = format!("{}data/{key}", self.dir);
        let entry = self.zip.by_name(&name).map_err(|e| refuse(self.path, format!("storage {key}: {e}")))?;
        let bytes = numel.checked_mul(dtype.size_in_bytes()).ok_or_else(|| refuse(self.path, "storage size overflows"))?;
        if entry.size() < bytes as u64 {
            return Err(refuse(self.path, format!("storage {key} holds {} bytes, {bytes} expected", entry.size())));
        }
        let mut data = Vec::with_capacity(bytes);
        entry.take(bytes as u64).read_to_end(&mut data).map_err(|e| refuse(self.path, format!("storage {key}: {e}")))?;
        if data.len() != bytes {
            return Err(refuse(self.path, format!("storage {key} is truncated")));
        }
        let t = Tensor::from_raw_buffer(&data, dtype, &[numel], &Device::Cpu)?;
        self.cache.insert(key.to_string(), (dtype, t.clone()));
        Ok(t)
    }
}
