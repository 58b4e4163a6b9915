//! `--device` and `--dtype`: where the engine runs and in what precision. CPU builds run on the
//! CPU only; a build with the `cuda` feature (`scripts/build-cuda.sh`) can run on NVIDIA GPUs.

use anyhow::{bail, Result};
use candle_core::{DType, Device};

#[derive(clap::Args, Debug, Clone)]
pub struct Compute {
    /// Where the engine runs: auto (the first GPU in a CUDA build, else the CPU), cpu,
    /// cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute precision: auto (f16 on a GPU, f32 on the CPU), f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// The VAE's precision: auto (as Fooocus: bf16 on GPUs of compute capability 8.0+ unless
    /// --dtype is f32, else f32), f32, f16 (SDXL's VAE may overflow it) or bf16.
    #[arg(long, default_value = "auto")]
    pub vae_dtype: String,
}

/// What `--device`, `--dtype` and `--vae-dtype` resolve to.
pub struct Resolved {
    pub device: Device,
    pub dtype: DType,
    /// `None`: the engine's default for the device and dtype.
    pub vae_dtype: Option<DType>,
}

impl Compute {
    pub fn resolve(&self) -> Result<Resolved> {
        let device = parse_device(&self.device)?;
        let dtype = match self.dtype.as_str() {
            "auto" if device.is_cuda() => DType::F16,
            "auto" => DType::F32,
            other => parse_dtype(other, "--dtype")?,
        };
        let vae_dtype = match self.vae_dtype.as_str() {
            "auto" => None,
            other => Some(parse_dtype(other, "--vae-dtype")?),
        };
        let options = focal_engine::LoadOptions { device: device.clone(), dtype, vae_dtype, ..Default::default() };
        options.check_supported().map_err(|e| match e {
            // The engine names the option's field; here it is a flag.
            focal_engine::EngineError::InvalidRequest { field, message } => anyhow::anyhow!("--{}: {message}", field.replace('_', "-")),
            other => anyhow::anyhow!("{other}"),
        })?;
        Ok(Resolved { device, dtype, vae_dtype })
    }
}

/// Device memory in use on `device` (total − free, bytes, every process's): `None` on the CPU.
pub fn memory_in_use(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => cuda.cuda_stream().context().mem_get_info().ok().map(|(free, total)| (total - free) as u64),
        _ => None,
    }
}

pub fn parse_device(s: &str) -> Result<Device> {
    let cuda = |ordinal: usize| {
        Device::new_cuda(ordinal).map_err(|e| {
            anyhow::anyhow!(
                "--device {s}: no CUDA device {ordinal} ({e}); a CPU build runs on the CPU only (scripts/build-cuda.sh builds with CUDA)"
            )
        })
    };
    match s {
        "cpu" => Ok(Device::Cpu),
        // candle answers with the CPU when it was built without CUDA or finds no GPU.
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => cuda(n),
            _ => bail!("--device: '{other}' is not one of auto, cpu, cuda, cuda:N"),
        },
    }
}

pub fn parse_dtype(s: &str, flag: &str) -> Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("{flag}: '{other}' is not one of auto, f32, f16, bf16"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_a_cpu_build_refuses_cuda_naming_the_flag() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("gpu").unwrap_err().to_string().contains("--device"));
        let compute = |dtype: &str, vae_dtype: &str| Compute { device: "cpu".into(), dtype: dtype.into(), vae_dtype: vae_dtype.into() };
        let auto = compute("auto", "auto").resolve().unwrap();
        assert_eq!((auto.dtype, auto.vae_dtype), (DType::F32, None));
        assert_eq!(compute("f16", "f32").resolve().unwrap().vae_dtype, Some(DType::F32));
        let err = compute("f32", "bf16").resolve().err().unwrap().to_string();
        assert!(err.contains("--vae-dtype") && err.contains("bf16"), "{err}");
        assert!(compute("f32", "f8").resolve().err().unwrap().to_string().contains("--vae-dtype"));
        if !candle_core::utils::cuda_is_available() {
            assert!(parse_device("auto").unwrap().is_cpu());
            assert!(parse_device("cuda:1").unwrap_err().to_string().contains("--device cuda:1"));
        }
    }
}
