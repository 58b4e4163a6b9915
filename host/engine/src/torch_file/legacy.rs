//! The legacy format (`torch.save` before 1.6, or `_use_new_zipfile_serialization=False`), as
//! `torch/serialization.py:_legacy_save` writes it: four pickles in a row (the magic number, the
//! protocol version, the system info, the object itself with storages as persistent ids), a
//! pickled list of the storage keys in order, then each storage as an 8-byte little-endian
//! element count and its raw little-endian elements.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::pickle::Object;
use candle_core::{DType, Device, Tensor};

use super::{convert, read_pickle, refuse, storage_ref, Storages, Value};
use crate::error::Result;

/// The first pickle: protocol 2, `LONG1` of 10 bytes, 0x1950a86a20f9469cfc6c, `STOP`. Compared as
/// bytes (the pickle reader's integers are 64-bit).
pub(super) const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
/// `PROTOCOL_VERSION` of the legacy format.
const PROTOCOL_VERSION: i64 = 1001;

pub(super) fn load(file: File, path: &Path) -> Result<Value> {
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; MAGIC.len()];
    reader.read_exact(&mut magic).map_err(|e| refuse(path, e))?;
    match read_pickle(&mut reader, path)? {
        Object::Int(v) if v as i64 == PROTOCOL_VERSION => {}
        Object::Long(v) if v == PROTOCOL_VERSION => {}
        other => return Err(refuse(path, format!("legacy torch file of protocol {other:?}"))),
    }
    let _system_info = read_pickle(&mut reader, path)?;
    let object = read_pickle(&mut reader, path)?;
    let Object::List(keys) = read_pickle(&mut reader, path)? else {
        return Err(refuse(path, "the legacy storage list is not a list"));
    };
    // Each storage's element type, from the references in the object.
    let mut types = HashMap::new();
    collect_storage_types(&object, path, &mut types)?;
    let mut storages = HashMap::new();
    for key in keys {
        let Object::Unicode(key) = key else { return Err(refuse(path, "a legacy storage key is not a string")) };
        let dtype = *types.get(&key).ok_or_else(|| refuse(path, format!("storage {key} is never used")))?;
        let mut count = [0u8; 8];
        reader.read_exact(&mut count).map_err(|e| refuse(path, format!("storage {key}: {e}")))?;
        let bytes = u64::from_le_bytes(count)
            .checked_mul(dtype.size_in_bytes() as u64)
            .filter(|&b| b <= file_len)
            .ok_or_else(|| refuse(path, format!("storage {key} claims more bytes than the file holds")))?;
        let mut data = Vec::with_capacity(bytes as usize);
        (&mut reader).take(bytes).read_to_end(&mut data).map_err(|e| refuse(path, format!("storage {key}: {e}")))?;
        if data.len() as u64 != bytes {
            return Err(refuse(path, format!("storage {key} is truncated")));
        }
        let numel = bytes as usize / dtype.size_in_bytes();
        storages.insert(key, (dtype, Tensor::from_raw_buffer(&data, dtype, &[numel], &Device::Cpu)?));
    }
    convert(object, &mut LegacyStorages { path, storages })
}

fn collect_storage_types(o: &Object, path: &Path, types: &mut HashMap<String, DType>) -> Result<()> {
    match o {
        Object::PersistentLoad(id) => {
            let r = storage_ref(id, path)?;
            types.insert(r.key.to_string(), r.dtype);
        }
        Object::Tuple(items) | Object::List(items) => items.iter().try_for_each(|i| collect_storage_types(i, path, types))?,
        Object::Dict(entries) => entries.iter().try_for_each(|(k, v)| {
            collect_storage_types(k, path, types)?;
            collect_storage_types(v, path, types)
        })?,
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            collect_storage_types(callable, path, types)?;
            collect_storage_types(args, path, types)?;
        }
        _ => {}
    }
    Ok(())
}

/// The storages, all read (the format has no index to read them on demand).
struct LegacyStorages<'a> {
    path: &'a Path,
    storages: HashMap<String, (DType, Tensor)>,
}

impl Storages for LegacyStorages<'_> {
    fn path(&self) -> &Path {
        self.path
    }

    fn get(&mut self, key: &str, dtype: DType, numel: usize) -> Result<Tensor> {
        match self.storages.get(key) {
            Some((d, t)) if *d == dtype && t.elem_count() >= numel => Ok(t.narrow(0, 0, numel)?),
            Some(_) => Err(refuse(self.path, format!("storage {key} does not hold {numel} elements of {dtype:?}"))),
            None => Err(refuse(self.path, format!("storage {key} is missing"))),
        }
    }
}
