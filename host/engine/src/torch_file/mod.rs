//! Reading `torch.save` files without running them: the zip format (`data.pkl` and one entry per
//! storage, torch ≥ 1.6; `zip_format.rs`) and the legacy one before it (pickles and the storages'
//! bytes in one stream; `legacy.rs`). In both the pickle is decoded by candle's opcode reader (which never calls anything),
//! then only plain containers and torch's tensor-rebuild functions are accepted. Any other class
//! (the way a malicious pickle runs code under Python) refuses the file, naming the class.

mod legacy;
mod zip_format;

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::error::{EngineError, Result};

/// `data.pkl` larger than this is not a state dict (a 7 GB checkpoint's is a few MB).
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// What a torch file holds, as far as focal reads it.
#[derive(Debug)]
pub enum Value {
    Tensor(Tensor),
    Dict(Vec<(Value, Value)>),
    List(Vec<Value>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
}

impl Value {
    /// The string keys and tensor values of a dict (other entries are skipped).
    pub fn into_tensors(self) -> Vec<(String, Tensor)> {
        match self {
            Value::Dict(entries) => entries
                .into_iter()
                .filter_map(|(k, v)| match (k, v) {
                    (Value::Str(k), Value::Tensor(t)) => Some((k, t)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The entry `key` of a dict.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(entries) => {
                let i = entries.iter().position(|(k, _)| matches!(k, Value::Str(s) if s == key))?;
                Some(entries.remove(i).1)
            }
            _ => None,
        }
    }
}

fn refuse(path: &Path, what: impl std::fmt::Display) -> EngineError {
    EngineError::checkpoint(path, format!("{what}; only tensors and plain containers are read from torch files"))
}

/// Read a `torch.save` file into [`Value`]s on the CPU.
pub fn load(path: &Path) -> Result<Value> {
    let mut file = std::fs::File::open(path).map_err(|e| EngineError::checkpoint(path, e.to_string()))?;
    let mut head = [0u8; legacy::MAGIC.len()];
    let is_legacy = file.read_exact(&mut head).is_ok() && head == legacy::MAGIC;
    file.seek(SeekFrom::Start(0)).map_err(|e| EngineError::checkpoint(path, e.to_string()))?;
    if is_legacy {
        legacy::load(file, path)
    } else {
        zip_format::load(file, path)
    }
}

/// A checkpoint's tensors from a `.safetensors` file, or from a torch file: the dict under the
/// first of `entries` it has (e.g. BLIP's `model`, an upscaler's `params_ema`), else its own.
pub fn state_dict(path: &Path, entries: &[&str]) -> Result<Vec<(String, Tensor)>> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| EngineError::checkpoint(path, e.to_string()))?;
        return Ok(tensors.into_iter().collect());
    }
    let mut value = load(path)?;
    match entries.iter().find_map(|e| value.take(e)) {
        Some(inner) => Ok(inner.into_tensors()),
        None => Ok(value.into_tensors()),
    }
}

/// A pickle read whole (bounded: a state dict's pickle is a few MB).
fn read_pickle(reader: &mut impl BufRead, path: &Path) -> Result<Object> {
    let mut stack = Stack::empty();
    let mut bounded = reader.take(MAX_PICKLE_BYTES);
    stack.read_loop(&mut bounded).map_err(|e| refuse(path, format!("unreadable pickle: {e}")))?;
    stack.finalize().map_err(|e| refuse(path, format!("unreadable pickle: {e}")))
}

/// Where a format keeps its storages.
trait Storages {
    fn path(&self) -> &Path;
    /// Storage `key` as a flat tensor of `numel` elements of `dtype`.
    fn get(&mut self, key: &str, dtype: DType, numel: usize) -> Result<Tensor>;
}

/// A storage reference (`persistent_id`): `('storage', type, key, location, numel[, view])`.
struct StorageRef<'a> {
    key: &'a str,
    dtype: DType,
    numel: usize,
}

fn storage_ref<'a>(id: &'a Object, path: &Path) -> Result<StorageRef<'a>> {
    let bad = || refuse(path, "malformed tensor record (storage reference)");
    let Object::Tuple(id) = id else { return Err(bad()) };
    let [Object::Unicode(kind), Object::Class { class_name, .. }, Object::Unicode(key), _, numel, rest @ ..] = id.as_slice() else {
        return Err(bad());
    };
    // The legacy format's sixth field names a view into another storage (torch < 1.0); none here.
    if kind != "storage" || rest.iter().any(|v| !matches!(v, Object::None)) {
        return Err(bad());
    }
    let dtype = storage_dtype(class_name).ok_or_else(|| refuse(path, format!("storage type {class_name}")))?;
    let numel = int(numel).and_then(|v| usize::try_from(v).ok()).ok_or_else(bad)?;
    Ok(StorageRef { key, dtype, numel })
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        _ => return None,
    })
}

fn int(o: &Object) -> Option<i64> {
    match o {
        Object::Int(v) => Some(*v as i64),
        Object::Long(v) => Some(*v),
        _ => None,
    }
}

fn ints(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(items) | Object::List(items) => items.iter().map(|i| int(i).and_then(|v| usize::try_from(v).ok())).collect(),
        _ => None,
    }
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
fn rebuild_tensor(args: Vec<Object>, storages: &mut dyn Storages) -> Result<Tensor> {
    let path = storages.path().to_path_buf();
    let bad = |what: &str| refuse(&path, format!("malformed tensor record ({what})"));
    let [storage, offset, size, stride, ..] = args.as_slice() else { return Err(bad("arguments")) };
    let Object::PersistentLoad(id) = storage else { return Err(bad("storage reference")) };
    let StorageRef { key, dtype, numel } = storage_ref(id, &path)?;
    let offset = int(offset).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| bad("offset"))?;
    let (size, stride) = (ints(size).ok_or_else(|| bad("size"))?, ints(stride).ok_or_else(|| bad("stride"))?);
    if size.len() != stride.len() {
        return Err(bad("stride rank"));
    }
    let flat = storages.get(key, dtype, numel)?;
    // The elements the view reaches must lie inside the storage.
    let last = size
        .iter()
        .zip(&stride)
        .try_fold(offset, |acc, (&n, &s)| if n == 0 { Some(acc) } else { acc.checked_add((n - 1).checked_mul(s)?) });
    let count: usize = size.iter().product();
    match last {
        Some(last) if count == 0 || last < numel => {}
        _ => return Err(bad("view outside its storage")),
    }
    if count == 0 {
        return Ok(Tensor::zeros(size, dtype, &Device::Cpu)?);
    }
    // Gather through the strides (contiguous views are the common case and one narrow).
    let contiguous = {
        let mut expect = 1;
        size.iter().zip(&stride).rev().all(|(&n, &s)| {
            let ok = n == 1 || s == expect;
            expect *= n;
            ok
        })
    };
    if contiguous {
        return Ok(flat.narrow(0, offset, count)?.reshape(size)?);
    }
    let mut index = Vec::with_capacity(count);
    for linear in 0..count {
        let (mut rest, mut at) = (linear, offset);
        for (&n, &s) in size.iter().zip(&stride).rev() {
            at += (rest % n) * s;
            rest /= n;
        }
        index.push(at as u32);
    }
    let index = Tensor::from_vec(index, count, &Device::Cpu)?;
    Ok(flat.index_select(&index, 0)?.reshape(size)?)
}

fn convert(o: Object, storages: &mut dyn Storages) -> Result<Value> {
    Ok(match o {
        Object::Int(v) => Value::Int(v as i64),
        Object::Long(v) => Value::Int(v),
        Object::Float(v) => Value::Float(v),
        Object::Unicode(s) => Value::Str(s),
        Object::Bool(b) => Value::Bool(b),
        Object::None => Value::None,
        Object::Tuple(items) | Object::List(items) => Value::List(items.into_iter().map(|i| convert(i, storages)).collect::<Result<_>>()?),
        Object::Dict(entries) => {
            Value::Dict(entries.into_iter().map(|(k, v)| Ok((convert(k, storages)?, convert(v, storages)?))).collect::<Result<_>>()?)
        }
        Object::Reduce { callable, args } => match (*callable, *args) {
            (Object::Class { module_name, class_name }, Object::Tuple(args)) => match (module_name.as_str(), class_name.as_str()) {
                ("torch._utils", "_rebuild_tensor_v2") => Value::Tensor(rebuild_tensor(args, storages)?),
                ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
                    Some(inner) => convert(inner, storages)?,
                    None => return Err(refuse(storages.path(), "empty parameter record")),
                },
                (m, c) => return Err(refuse(storages.path(), format!("it calls {m}.{c}"))),
            },
            (Object::Class { module_name, class_name }, _) => {
                return Err(refuse(storages.path(), format!("it calls {module_name}.{class_name}")))
            }
            _ => return Err(refuse(storages.path(), "it calls a computed object")),
        },
        // `OrderedDict` with attributes set after construction: keep the dict.
        Object::Build { callable, .. } => convert(*callable, storages)?,
        Object::Class { module_name, class_name } => {
            return Err(refuse(storages.path(), format!("it references {module_name}.{class_name}")))
        }
        Object::PersistentLoad(_) | Object::Mark => return Err(refuse(storages.path(), "a stray storage reference")),
    })
}
