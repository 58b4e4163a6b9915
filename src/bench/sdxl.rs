//! `focal bench` on full-size SDXL (random weights): load, the prompt pair's encoding, a CFG UNet
//! step, the VAE's decode and encode per size, and whole images, on the CPU or a GPU; with
//! `--pytorch`, beside bench/pytorch_sdxl.py doing the same work on the same device.

use super::*;

/// Where focal's side runs, for PyTorch's to run the same way.
pub(super) struct Placement {
    pub(super) device: Device,
    pub(super) dtype: DType,
    pub(super) vae_dtype: DType,
}

pub(super) fn run(args: &BenchArgs, placement: &Placement, sampler: Sampler, reference: Option<&BTreeMap<String, f64>>) -> Result<()> {
    let Placement { device, dtype, vae_dtype } = placement;
    let (device, dtype) = (device.clone(), *dtype);
    let options = LoadOptions { dtype, device: device.clone(), vae_dtype: Some(*vae_dtype), ..Default::default() };
    let checkpoint = match &args.checkpoint {
        Some(p) => p.clone(),
        None => {
            let path = args.work_dir.join("sdxl-base-random-f16.safetensors");
            if !path.exists() {
                std::fs::create_dir_all(&args.work_dir)?;
                eprintln!("writing a random-weight full-size SDXL checkpoint to {} (once)", path.display());
                let tmp = path.with_extension("partial");
                SdxlArchitecture::sdxl_base().write_random_checkpoint(&tmp, 0)?;
                std::fs::rename(&tmp, &path)?;
            }
            path
        }
    };
    let mut sheet = Sheet::default();
    let vram = VramPeak::start(&device);
    // Layer timings wait for a GPU's kernels (none to wait for on the CPU).
    profile::synchronize_with(device.is_cuda().then(|| device.clone()));

    let t0 = Instant::now();
    let model = SdxlModel::load(&checkpoint, &options)?;
    sheet.record("checkpoint_load".into(), t0.elapsed().as_secs_f64());

    let prompt = "a photograph of an astronaut riding a horse, highly detailed, dramatic lighting";
    sheet.measure("text_encode_pair".into(), args.repeat, || {
        model.encode_prompt(prompt, 2)?;
        model.encode_prompt("blurry, low quality", 2)?;
        Ok(())
    })?;
    let cond = model.encode_prompt(prompt, 2)?;

    for &size in &args.sizes {
        let l = size / 8;
        let x = Tensor::randn(0f32, 1f32, (2, 4, l, l), &device)?.to_dtype(dtype)?;
        let ctx = Tensor::cat(&[&cond.context, &cond.context], 0)?.to_dtype(dtype)?;
        let y1 = model.adm(&cond.pooled, focal_engine::sdxl::SizeIds::plain(size as u32, size as u32))?;
        let y = Tensor::cat(&[&y1, &y1], 0)?.to_dtype(dtype)?;
        sheet.measure(format!("unet_step_{size}"), args.repeat, || {
            model.unet.forward(&x, &[999.0, 999.0], &ctx, &y)?;
            // A GPU runs the kernels asynchronously: the time is theirs once they finished.
            device.synchronize()?;
            Ok(())
        })?;
    }
    if !args.skip_vae {
        for &size in &args.sizes {
            let z = Tensor::randn(0f32, 1f32, (1, 4, size / 8, size / 8), &device)?.to_dtype(*vae_dtype)?;
            sheet.measure(format!("vae_decode_{size}"), args.repeat, || {
                model.vae.decode(&z)?;
                device.synchronize()?;
                Ok(())
            })?;
        }
        // The image routes' own work (vary, upscale, inpaint encode their input image).
        for &size in &args.sizes {
            let image = Tensor::rand(-1f32, 1f32, (1, 3, size, size), &device)?.to_dtype(*vae_dtype)?;
            sheet.measure(format!("vae_encode_{size}"), args.repeat, || {
                model.vae.encode(&image)?;
                device.synchronize()?;
                Ok(())
            })?;
        }
    }

    for &size in if args.whole_steps > 0 { args.sizes.as_slice() } else { &[] } {
        let mut params = focal_engine::GenerationParams::txt2img(prompt, size as u32, size as u32, args.whole_steps, 0);
        params.negative_prompt = "blurry, low quality".into();
        params.cfg = 5.0;
        params.sampler = sampler;
        // When each sampling step ended (the device waited for), for the steps' rate.
        let mut ends = Vec::with_capacity(args.whole_steps);
        let mut whole = || {
            ends.clear();
            let mut on_step = |_: focal_engine::Progress| {
                let _ = device.synchronize();
                ends.push(Instant::now());
                true
            };
            model.generate(&params, false, &mut on_step)?.image.encode_png()?;
            Ok(())
        };
        // On a GPU the breakdown's extra run would cost a whole image and its waits would slow
        // the steps: the UNet step's breakdown says where a step's time goes.
        match device.is_cuda() {
            true => sheet.time(format!("whole_{size}"), 1, &mut whole)?,
            false => sheet.measure(format!("whole_{size}"), 1, &mut whole)?,
        }
        if ends.len() > 1 {
            let (first, last) = (ends[0], ends[ends.len() - 1]);
            sheet.record(format!("step_{size}"), (last - first).as_secs_f64() / (ends.len() - 1) as f64);
        }
    }
    profile::synchronize_with(None);
    let vram_gib = vram.map(VramPeak::stop_gib);
    let kernel_lines = match device.is_cuda() {
        true => compare_kernels(&device, dtype, &args.sizes, args.repeat)?,
        false => Vec::new(),
    };

    let on = match &device {
        Device::Cpu => format!("CPU, {} threads, {}", num_threads(), gemm_backend()),
        _ => "CUDA".to_string(),
    };
    println!("focal bench: full-size SDXL (random weights), UNet {dtype:?}, VAE {:?}, text encoders F32, {on}", placement.vae_dtype);
    println!("unet_step = one CFG step (batch 2: cond + uncond); best of {} runs", args.repeat);
    if args.whole_steps > 0 {
        println!(
            "whole = encode prompt + negative, {} CFG {sampler} steps (Karras), VAE decode, PNG; one run; step = its mean sampling step after the first",
            args.whole_steps
        );
    }
    print_rows(&sheet.rows, reference);
    print_rates(&sheet.rows, reference);
    if let Some(focal) = vram_gib {
        let pytorch = reference.and_then(|r| r.get("peak_vram_gib"));
        let beside = pytorch.map(|p| format!(", pytorch {p:.2} GiB, ratio {:.2}", focal / p)).unwrap_or_default();
        println!("peak VRAM (device memory in use above the start, polled every 20 ms): focal {focal:.2} GiB{beside}");
    }
    print_breakdowns(&sheet.breakdowns);
    for line in kernel_lines {
        println!("{line}");
    }
    Ok(())
}

/// On a GPU, the engine's fused kernels against candle's ops on the UNet's shapes at each size:
/// the attentions (self and cross, levels 1 and 2, CFG batch), the feed-forward's GEGLU with
/// its projection, and GroupNorm + SiLU (the UNet's and the VAE decoder's); best time of `repeat` runs each and the largest difference of their outputs —
/// the kernels' check at full size.
fn compare_kernels(device: &Device, dtype: DType, sizes: &[usize], repeat: usize) -> Result<Vec<String>> {
    use focal_engine::attention::{attention, by_candle_ops, Kernel};
    use focal_engine::geglu::{geglu, geglu_of};
    let best_ms = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> Result<(f64, Tensor)> {
        let mut best = f64::INFINITY;
        let mut out = f()?;
        for _ in 0..repeat.max(1) {
            device.synchronize()?;
            let t = Instant::now();
            out = f()?;
            device.synchronize()?;
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok((best, out))
    };
    let compare = |name: String, fused: &dyn Fn() -> candle_core::Result<Tensor>, ops: &dyn Fn() -> candle_core::Result<Tensor>| {
        let (fused_ms, fused) = best_ms(fused)?;
        let (ops_ms, ops) = best_ms(ops)?;
        let (fused, ops) = (fused.to_dtype(DType::F32)?, ops.to_dtype(DType::F32)?);
        let diff = (fused - &ops)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let scale = ops.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        anyhow::Ok(format!(
            "{name} {fused_ms:.3} ms, candle ops {ops_ms:.3} ms ({:.2}x), max |diff| {diff:.2e} (max |out| {scale:.2})",
            fused_ms / ops_ms
        ))
    };
    let randn = |shape: (usize, usize, usize)| Tensor::randn(0f32, 1f32, shape, device)?.to_dtype(dtype);
    let mut lines = Vec::new();
    for &size in sizes {
        let tokens = (size / 16).pow(2);
        for (what, n, m, width, heads) in [
            ("self", tokens, tokens, 640, 10),
            ("cross", tokens, 77, 640, 10),
            ("self", tokens / 4, tokens / 4, 1280, 20),
            ("cross", tokens / 4, 77, 1280, 20),
        ] {
            let (q, k, v) = (randn((2, n, width))?, randn((2, m, width))?, randn((2, m, width))?);
            let kernel = Kernel::for_inputs(&q, &k, &v, heads, None);
            lines.push(compare(
                format!("attention_{size} {what} {n}x{m}, {heads} heads of 64: {kernel:?}"),
                &|| attention(&q, &k, &v, heads, None),
                &|| by_candle_ops(&q, &k, &v, heads, None),
            )?);
        }
        for (n, width) in [(tokens, 640), (tokens / 4, 1280)] {
            let x = randn((2, n, width))?;
            let weight = (Tensor::randn(0f32, 1f32, (8 * width, width), device)? / (width as f64).sqrt())?.to_dtype(dtype)?;
            let proj = focal_engine::linear::Linear::new(weight, Some(Tensor::randn(0f32, 0.1f32, 8 * width, device)?.to_dtype(dtype)?));
            lines.push(compare(
                format!("geglu_{size} {n}x{width} -> {}: fused with the bias", 4 * width),
                &|| geglu_of(&proj, &x),
                &|| geglu(&candle_core::Module::forward(&proj, &x)?),
            )?);
        }
        // GroupNorm + SiLU: the UNet's widest level (CFG batch) and the VAE decoder's last block.
        for (what, items, channels, side, eps) in [("unet", 2, 320, size / 8, 1e-5), ("vae", 1, 128, size, 1e-6)] {
            let x = Tensor::randn(0f32, 1f32, (items, channels, side, side), device)?.to_dtype(dtype)?;
            let weight = (Tensor::randn(0f32, 0.2f32, channels, device)? + 1.0)?;
            let norm = focal_engine::norm::GroupNorm::new(weight, Tensor::randn(0f32, 0.2f32, channels, device)?, 32, eps)?;
            lines.push(compare(
                format!("group_norm_silu_{size} {what} {items}x{channels}x{side}x{side}, 32 groups:"),
                &|| norm.forward_silu(&x),
                &|| norm.by_candle_ops(&x, true),
            )?);
        }
    }
    Ok(lines)
}

/// Sampling steps per second (the it/s of Fooocus's and diffusers' progress bars), from the
/// UNet step and the whole image's steps, with PyTorch's beside them.
fn print_rates(rows: &[Row], reference: Option<&BTreeMap<String, f64>>) {
    for (name, secs, _) in rows.iter().filter(|(n, _, _)| n.starts_with("unet_step_") || n.starts_with("step_")) {
        let focal = 1.0 / secs;
        match reference.and_then(|r| r.get(name)) {
            Some(p) => println!("it/s {name:<14} focal {focal:>8.2}  pytorch {:>8.2}  focal/pytorch {:>6.2}", 1.0 / p, p / secs),
            None => println!("it/s {name:<14} focal {focal:>8.2}"),
        }
    }
}

/// Device memory in use above what it was at the start, polled every 20 ms by a thread: the
/// same measure bench/pytorch_sdxl.py takes of itself (both leave out the CUDA context).
struct VramPeak {
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl VramPeak {
    /// `None` on the CPU.
    fn start(device: &Device) -> Option<Self> {
        let start = crate::device::memory_in_use(device)?;
        let (peak, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (device, p, d) = (device.clone(), peak.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                if let Some(used) = crate::device::memory_in_use(&device) {
                    p.fetch_max(used.saturating_sub(start), Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Some(Self { peak, done, thread })
    }

    fn stop_gib(self) -> f64 {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed) as f64 / (1u64 << 30) as f64
    }
}
