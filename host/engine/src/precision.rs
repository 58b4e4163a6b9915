//! Which precision each part of a model computes in, as Fooocus picks it (ldm_patched's
//! `model_management`): the UNet in the dtype asked for, the text encoders in f32 (small and
//! precision-sensitive), and the VAE in bf16 on NVIDIA GPUs that compute in it (compute
//! capability 8.0 and newer) and f32 elsewhere: SDXL's VAE overflows f16 (black or NaN images),
//! so f16 is only ever taken when asked for by name (Fooocus's `--vae-in-fp16`).

use candle_core::{DType, Device};

use crate::error::{EngineError, Result};

/// The VAE's dtype when none is named. f32 compute (`--dtype f32`, Fooocus's `--all-in-fp32`
/// spirit) keeps the VAE in f32 too.
pub fn default_vae_dtype(device: &Device, compute: DType) -> DType {
    if compute != DType::F32 && computes_bf16(device) {
        DType::BF16
    } else {
        DType::F32
    }
}

/// Whether `device` runs bf16 arithmetic natively: NVIDIA GPUs of compute capability 8.0+
/// (Ampere, Ada, Hopper, Blackwell). candle's CPU backend has no bf16 matrix product.
pub fn computes_bf16(device: &Device) -> bool {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => cuda.cuda_stream().context().compute_capability().is_ok_and(|(major, _)| major >= 8),
        _ => false,
    }
}

/// `dtype` refused where the device cannot compute in it; `field` names the option.
pub fn check_supported(device: &Device, dtype: DType, field: &str) -> Result<()> {
    if dtype == DType::BF16 && !computes_bf16(device) {
        let on = if device.is_cpu() { "the CPU" } else { "this GPU (bf16 needs compute capability 8.0 or newer)" };
        return Err(EngineError::invalid(field, format!("bf16 compute is not available on {on}; use f32 or f16")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_keeps_the_vae_in_f32_and_refuses_bf16_naming_the_field() {
        assert_eq!(default_vae_dtype(&Device::Cpu, DType::F16), DType::F32);
        assert_eq!(default_vae_dtype(&Device::Cpu, DType::F32), DType::F32);
        let err = check_supported(&Device::Cpu, DType::BF16, "vae_dtype").unwrap_err().to_string();
        assert!(err.contains("vae_dtype") && err.contains("bf16"), "{err}");
        assert!(check_supported(&Device::Cpu, DType::F16, "dtype").is_ok());
    }
}
