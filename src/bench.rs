//! `focal bench`: engine timings on full-size SDXL shapes with random weights, printed beside
//! the same work done by PyTorch/diffusers on the same machine (bench/pytorch_sdxl.py).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use focal_engine::esrgan::Esrgan;
use focal_engine::expansion::PromptExpansion;
use focal_engine::gpt2::{Gpt2Config, Gpt2Model};
use focal_engine::gpt2_tokenizer::Gpt2Tokenizer;
use focal_engine::profile;
use focal_engine::synthetic::SdxlArchitecture;
use focal_engine::{LoadOptions, Sampler, SdxlModel};

mod sdxl;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Image sizes (square) to time the UNet step and VAE decode at.
    #[arg(long, default_value = "512,1024", value_delimiter = ',')]
    sizes: Vec<usize>,
    /// A checkpoint to time instead of the random full-size one.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Where the random full-size checkpoint is written (once, 6.9 GB) and reused.
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
    /// Python interpreter with torch + diffusers: runs bench/pytorch_sdxl.py first, for the ratios.
    #[arg(long)]
    pytorch: Option<PathBuf>,
    /// Path of the PyTorch script.
    #[arg(long, default_value = "bench/pytorch_sdxl.py")]
    pytorch_script: PathBuf,
    /// Timed runs per measurement; the best is reported (the first also pays for allocations).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    #[arg(long)]
    skip_vae: bool,
    /// Also time a whole image per size: the prompt pair's encoding, this many CFG steps
    /// (Karras), the VAE decode and the PNG (0: none).
    #[arg(long, default_value_t = 0)]
    whole_steps: usize,
    /// The whole image's sampler: euler, or dpmpp_2m_sde_gpu (Fooocus's default; PyTorch's side
    /// runs k-diffusion's DPM++ 2M SDE).
    #[arg(long, default_value = "euler")]
    sampler: String,
    /// Where and in what precision the full-size SDXL runs (`--device cuda` in a CUDA build).
    #[command(flatten)]
    compute: crate::device::Compute,
    /// Time the Fooocus V2 prompt expansion (full-size GPT-2 shapes, random weights) instead
    /// of SDXL; with --pytorch, beside bench/pytorch_expansion.py.
    #[arg(long)]
    expansion: bool,
    /// GPT-2 tokenizer files (vocab.json, merges.txt) for --expansion.
    #[arg(long, default_value = "tests/fixtures/tiny-gpt2")]
    gpt2_tokenizer: PathBuf,
    /// Time Fooocus's upscaler network (full-size RRDBNet ×4, random weights) on one SIZE²
    /// image instead of SDXL; with --pytorch, beside bench/pytorch_upscale.py.
    #[arg(long, value_name = "SIZE", num_args = 0..=1, default_missing_value = "256")]
    upscale: Option<usize>,
    /// Time one tiny-model request end to end (both encoders, 4 Euler/Karras steps at 256²,
    /// CFG 5, VAE decode, PNG) instead of full-size SDXL; with --pytorch, beside
    /// bench/pytorch_small.py doing the same with diffusers on the same weights.
    #[arg(long)]
    small: bool,
    /// Time Fooocus's photo captioner (BLIP-base shapes, random weights) on one 512² image instead
    /// of SDXL; with --pytorch and --fooocus, beside bench/pytorch_describe.py.
    #[arg(long)]
    describe: bool,
    /// A Fooocus checkout whose BLIP classes bench/pytorch_describe.py runs (--describe).
    #[arg(long)]
    fooocus: Option<PathBuf>,
    /// The tiny checkpoint for --small (its diffusers twin for PyTorch: --small-diffusers).
    #[arg(long, default_value = "tests/fixtures/tiny-sdxl/tiny-sdxl-a.safetensors")]
    small_checkpoint: PathBuf,
    #[arg(long, default_value = "tests/fixtures/tiny-sdxl/diffusers")]
    small_diffusers: PathBuf,
}

/// Which library does the matrix products (the `mkl` feature, `scripts/build-mkl.sh`), and
/// with which instructions (the gemm crate picks its kernels when it runs).
fn gemm_backend() -> &'static str {
    if cfg!(feature = "mkl") {
        "GEMM: Intel MKL"
    } else if cpu_has_avx512() {
        "GEMM: gemm crate, AVX-512"
    } else {
        "GEMM: gemm crate"
    }
}

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The prompt of the expansion and --small benchmarks, as in their PyTorch scripts (12 tokens
/// with its comma: the expansion adds 63).
const BENCH_PROMPT: &str = "a photograph of an astronaut riding a horse, highly detailed";

/// One measurement: name, seconds, peak RSS (GiB) when it was taken.
pub(crate) type Row = (String, f64, f64);

/// Peak resident memory of this process so far (VmHWM), in GiB.
pub(crate) fn peak_rss_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / (1024.0 * 1024.0)
}

pub(crate) fn best_of<T>(repeat: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        f()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn run_pytorch(args: &BenchArgs, python: &PathBuf, compute: &sdxl::Placement) -> Result<BTreeMap<String, f64>> {
    let mut cmd = Command::new(python);
    if args.small {
        cmd.arg("bench/pytorch_small.py").arg("--model").arg(&args.small_diffusers).args(["--repeat", &args.repeat.to_string()]);
    } else if let Some(size) = args.upscale {
        cmd.arg("bench/pytorch_upscale.py").args(["--size", &size.to_string(), "--repeat", &args.repeat.to_string()]);
    } else if args.describe {
        let fooocus = args.fooocus.as_ref().context("--describe --pytorch needs --fooocus <Fooocus checkout>")?;
        cmd.arg("bench/pytorch_describe.py").arg("--fooocus").arg(fooocus).args(["--repeat", &args.repeat.to_string()]);
    } else if args.expansion {
        cmd.arg("bench/pytorch_expansion.py").arg("--tokenizer").arg(&args.gpt2_tokenizer);
        cmd.args(["--prompt", BENCH_PROMPT, "--repeat", &args.repeat.to_string()]);
    } else {
        let sizes = args.sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
        cmd.arg(&args.pytorch_script).args(["--sizes", &sizes, "--repeat", &args.repeat.to_string()]);
        if args.skip_vae {
            cmd.arg("--skip-vae");
        }
        cmd.args(["--whole-steps", &args.whole_steps.to_string(), "--sampler", &args.sampler]);
        if compute.device.is_cuda() {
            let name = |d: DType| {
                if d == DType::F32 {
                    "f32"
                } else if d == DType::BF16 {
                    "bf16"
                } else {
                    "f16"
                }
            };
            cmd.args(["--device", "cuda", "--dtype", name(compute.dtype), "--vae-dtype", name(compute.vae_dtype)]);
        }
    }
    eprintln!("running PyTorch: {cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!("the PyTorch benchmark failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    let v: serde_json::Value = serde_json::from_str(last).context("PyTorch benchmark output")?;
    Ok(v.as_object().into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
}

pub fn run(args: BenchArgs) -> Result<()> {
    let crate::device::Resolved { device, dtype, vae_dtype } = args.compute.resolve()?;
    let options = LoadOptions { dtype, device: device.clone(), vae_dtype, ..Default::default() };
    let placement = sdxl::Placement { device: device.clone(), dtype, vae_dtype: options.vae_dtype() };
    let sampler: Sampler = args.sampler.parse().map_err(|e| anyhow::anyhow!("--sampler: {e}"))?;
    // PyTorch first, in its own process, so the two never hold a model in memory at once.
    let reference = match &args.pytorch {
        Some(python) => Some(run_pytorch(&args, python, &placement)?),
        None => None,
    };
    if args.small {
        let (rows, breakdown) = small_rows(&args)?;
        println!(
            "focal bench: tiny SDXL request ({}), f32, CPU, {} threads, {}",
            args.small_checkpoint.display(),
            num_threads(),
            gemm_backend()
        );
        println!(
            "small_request = encode prompt + negative, 4 Euler/Karras steps at 256², CFG 5, VAE decode, PNG; best of {} after a warm-up",
            args.repeat
        );
        print_rows(&rows, reference.as_ref());
        print_breakdowns(&[breakdown]);
        return Ok(());
    }
    if let Some(size) = args.upscale {
        let rows = upscale_rows(&args, size)?;
        println!(
            "focal bench: Fooocus's upscaler (RRDBNet 64 filters, 23 blocks, ×4, random weights), f32, CPU, {} threads, {}",
            num_threads(),
            gemm_backend()
        );
        println!("esrgan_upscale_{size} = one {size}² image super-resolved ×4 (one tile), clamped; best of {} runs", args.repeat);
        print_rows(&rows, reference.as_ref());
        return Ok(());
    }
    if args.describe {
        let rows = crate::bench_describe::rows(args.repeat)?;
        println!(
            "focal bench: Fooocus's BLIP captioner (ViT-B/16 at 384, BERT-base decoder, random weights), f32, CPU, {} threads, {}",
            num_threads(),
            gemm_backend()
        );
        println!(
            "blip_image_encode = one 512² image to embeddings; blip_caption_75 = encode + a 75-token caption (sampling); best of {} runs",
            args.repeat
        );
        print_rows(&rows, reference.as_ref());
        return Ok(());
    }
    if args.expansion {
        let rows = expansion_rows(&args)?;
        println!(
            "focal bench: Fooocus V2 expansion, full-size GPT-2 (124M, random weights), f32, CPU, {} threads, {}",
            num_threads(),
            gemm_backend()
        );
        println!("expand = one prompt expanded to 75 tokens (sampling, KV cache); best of {} runs", args.repeat);
        print_rows(&rows, reference.as_ref());
        return Ok(());
    }
    sdxl::run(&args, &placement, sampler, reference.as_ref())
}

/// The measurements of one run: a row each, and where their time went.
#[derive(Default)]
struct Sheet {
    rows: Vec<Row>,
    breakdowns: Vec<Breakdown>,
}

impl Sheet {
    fn record(&mut self, name: String, secs: f64) {
        eprintln!("focal {name}: {secs:.2} s");
        self.rows.push((name, secs, peak_rss_gib()));
    }

    /// `f` timed (best of `repeat`, no breakdown) and recorded.
    fn time(&mut self, name: String, repeat: usize, f: impl FnMut() -> Result<()>) -> Result<()> {
        let secs = best_of(repeat, f)?;
        self.record(name, secs);
        Ok(())
    }

    /// `f` timed ([`profiled`]: best of `repeat`, with the layer breakdown) and recorded.
    fn measure(&mut self, name: String, repeat: usize, f: impl FnMut() -> Result<()>) -> Result<()> {
        let (secs, breakdown) = profiled(&name, repeat, f)?;
        self.record(name, secs);
        self.breakdowns.push(breakdown);
        Ok(())
    }
}

/// Where one measurement's time went: seconds per kind of layer, mean over its runs.
struct Breakdown {
    name: String,
    total: f64,
    ops: Vec<profile::OpTotal>,
}

/// [`best_of`] with the engine's layer timings on: the best time and the mean breakdown. When
/// the timings wait for a GPU around each layer (which would slow its pipeline of kernels), the
/// timed runs go without them and one more run gives the breakdown.
fn profiled(name: &str, repeat: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, Breakdown)> {
    let waits = profile::waits_for_device();
    let runs = repeat.max(1);
    let unprofiled_best = if waits { Some(best_of(runs, &mut f)?) } else { None };
    let profiled_runs = if waits { 1 } else { runs };
    profile::enable(true);
    let t0 = Instant::now();
    let best = best_of(profiled_runs, f);
    let total = t0.elapsed().as_secs_f64() / profiled_runs as f64;
    let mut ops = profile::totals();
    profile::enable(false);
    for op in &mut ops {
        op.seconds /= profiled_runs as f64;
    }
    Ok((unprofiled_best.map_or(best, Ok)?, Breakdown { name: name.to_string(), total, ops }))
}

fn print_breakdowns(breakdowns: &[Breakdown]) {
    let Some(first) = breakdowns.first() else { return };
    println!("where the time goes (seconds per run, mean of the runs; other = everything between layers)");
    print!("{:<18} {:>8}", "measurement", "total");
    for op in &first.ops {
        print!(" {:>11}", op.op.name());
    }
    println!(" {:>8}", "other");
    for b in breakdowns {
        print!("{:<18} {:>8.2}", b.name, b.total);
        for op in &b.ops {
            print!(" {:>11.2}", op.seconds);
        }
        println!(" {:>8.2}", b.total - b.ops.iter().map(|o| o.seconds).sum::<f64>());
    }
}

/// Measurements side by side with PyTorch's where it has the same name.
fn print_rows(rows: &[Row], reference: Option<&BTreeMap<String, f64>>) {
    match reference {
        Some(_) => println!("{:<18} {:>10} {:>12} {:>10} {:>14}", "measurement", "focal s", "pytorch s", "ratio", "peak RSS GiB"),
        None => println!("{:<18} {:>10} {:>14}", "measurement", "focal s", "peak RSS GiB"),
    }
    for (name, secs, rss) in rows {
        match reference.as_ref().and_then(|r| r.get(name)) {
            Some(p) => println!("{name:<18} {secs:>10.2} {p:>12.2} {:>10.2} {rss:>14.1}", secs / p),
            None if reference.is_some() => println!("{name:<18} {secs:>10.2} {:>12} {:>10} {rss:>14.1}", "-", "-"),
            None => println!("{name:<18} {secs:>10.2} {rss:>14.1}"),
        }
    }
    if let Some(v) = reference.and_then(|r| r.get("peak_rss_gib")) {
        println!("pytorch peak RSS: {v:.1} GiB");
    }
}

/// GPT-2 small with random weights (std 0.02, as transformers initialises it).
fn random_gpt2(config: &Gpt2Config) -> Result<Gpt2Model> {
    let (d, v) = (config.n_embd, config.vocab_size);
    let dev = Device::Cpu;
    let randn = |shape: &[usize]| Tensor::randn(0f32, 0.02, shape, &dev);
    let mut t = std::collections::HashMap::new();
    t.insert("transformer.wte.weight".to_string(), randn(&[v, d])?);
    t.insert("transformer.wpe.weight".to_string(), randn(&[config.n_positions, d])?);
    for name in ["transformer.ln_f"]
        .into_iter()
        .map(String::from)
        .chain((0..config.n_layer).flat_map(|i| [format!("transformer.h.{i}.ln_1"), format!("transformer.h.{i}.ln_2")]))
    {
        t.insert(format!("{name}.weight"), Tensor::ones(d, candle_core::DType::F32, &dev)?);
        t.insert(format!("{name}.bias"), Tensor::zeros(d, candle_core::DType::F32, &dev)?);
    }
    for i in 0..config.n_layer {
        for (layer, (rows, cols)) in
            [("attn.c_attn", (d, 3 * d)), ("attn.c_proj", (d, d)), ("mlp.c_fc", (d, 4 * d)), ("mlp.c_proj", (4 * d, d))]
        {
            t.insert(format!("transformer.h.{i}.{layer}.weight"), randn(&[rows, cols])?);
            t.insert(format!("transformer.h.{i}.{layer}.bias"), Tensor::zeros(cols, candle_core::DType::F32, &dev)?);
        }
    }
    Ok(Gpt2Model::from_tensors(t, config.clone(), candle_core::DType::F32, &dev)?)
}

fn expansion_rows(args: &BenchArgs) -> Result<Vec<Row>> {
    let config = Gpt2Config::from_json("{}").map_err(anyhow::Error::msg)?;
    let tokenizer = Gpt2Tokenizer::from_dir(&args.gpt2_tokenizer).map_err(anyhow::Error::msg)?;
    // Allowed words: every 8th plain lower-case word token (Fooocus's list has 642).
    let words: Vec<String> = (0..tokenizer.vocab_size() as u32)
        .filter_map(|id| tokenizer.decode(&[id]).strip_prefix(' ').map(str::to_string))
        .filter(|w| w.len() > 3 && w.chars().all(|c| c.is_ascii_lowercase()))
        .step_by(8)
        .take(642)
        .collect();
    let expansion = PromptExpansion::new(random_gpt2(&config)?, tokenizer, &words);
    let mut rows = Vec::new();
    let secs = best_of(args.repeat, || Ok(expansion.expand(BENCH_PROMPT, 12345)?))?;
    eprintln!("focal expand: {secs:.2} s");
    rows.push(("expand".to_string(), secs, peak_rss_gib()));
    Ok(rows)
}

/// Fooocus's upscaler shape in the old layout (`model.N…`): 64 filters, growth 32, 23 RRDB
/// blocks, two up-convolutions; weights N(0, 0.02²).
fn random_upscaler() -> Result<Esrgan> {
    const NF: usize = 64;
    const GC: usize = 32;
    let dev = Device::Cpu;
    let mut t = std::collections::HashMap::new();
    let mut conv = |name: String, out: usize, inp: usize| -> Result<()> {
        t.insert(format!("{name}.weight"), Tensor::randn(0f32, 0.02, (out, inp, 3, 3), &dev)?);
        t.insert(format!("{name}.bias"), Tensor::zeros(out, candle_core::DType::F32, &dev)?);
        Ok(())
    };
    conv("model.0".into(), NF, 3)?;
    for i in 0..23 {
        for r in 1..=3 {
            for c in 1..=5 {
                conv(format!("model.1.sub.{i}.RDB{r}.conv{c}.0"), if c < 5 { GC } else { NF }, NF + (c - 1) * GC)?;
            }
        }
    }
    conv("model.1.sub.23".into(), NF, NF)?;
    for n in [3, 6, 8] {
        conv(format!("model.{n}"), NF, NF)?;
    }
    conv("model.10".into(), 3, NF)?;
    Ok(Esrgan::from_tensors(t, &dev)?)
}

fn upscale_rows(args: &BenchArgs, size: usize) -> Result<Vec<Row>> {
    let model = random_upscaler()?;
    let data: Vec<u8> = (0..size * size * 3).map(|i| (i * 37 % 251) as u8).collect();
    let image = focal_engine::image::RgbImage { width: size as u32, height: size as u32, data };
    let secs = best_of(args.repeat, || Ok(model.upscale(&image, &Device::Cpu)?))?;
    let name = format!("esrgan_upscale_{size}");
    eprintln!("focal {name}: {secs:.2} s");
    Ok(vec![(name, secs, peak_rss_gib())])
}

/// The tiny model's load and one request (after a warm-up request), as bench/pytorch_small.py.
fn small_rows(args: &BenchArgs) -> Result<(Vec<Row>, Breakdown)> {
    let t0 = Instant::now();
    let model = SdxlModel::load(&args.small_checkpoint, &LoadOptions::default())?;
    let load = t0.elapsed().as_secs_f64();
    let mut params = focal_engine::GenerationParams::txt2img(BENCH_PROMPT, 256, 256, 4, 0);
    params.negative_prompt = "blurry, low quality".into();
    params.cfg = 5.0;
    let mut request = || -> Result<()> {
        let generated = model.generate(&params, false, &mut |_| true)?;
        generated.image.encode_png()?;
        params.seed += 1;
        Ok(())
    };
    request()?;
    let (secs, breakdown) = profiled("small_request", args.repeat, request)?;
    eprintln!("focal small_load: {load:.2} s, small_request: {secs:.3} s");
    Ok((vec![("small_load".into(), load, peak_rss_gib()), ("small_request".into(), secs, peak_rss_gib())], breakdown))
}

fn num_threads() -> usize {
    candle_core::utils::get_num_threads()
}
