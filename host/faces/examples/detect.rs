//! Run the face detector on a PNG: `cargo run --release -p focal-faces --example detect -- MODEL IMAGE.png
//! [MIN_SCORE]` (Fooocus's 0.97 by default).
//! Prints each face (box, score, landmarks) and the time taken.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (model, image, min_score) = match args.as_slice() {
        [_, model, image] => (model, image, 0.97),
        [_, model, image, score] => (model, image, score.parse()?),
        _ => anyhow::bail!("usage: detect MODEL IMAGE.png [MIN_SCORE]"),
    };
    let decoder = png::Decoder::new(std::fs::File::open(image)?);
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    anyhow::ensure!(info.color_type == png::ColorType::Rgb, "an RGB PNG, please");
    buf.truncate(info.buffer_size());
    let started = Instant::now();
    let detector = focal_faces::RetinaFace::load(std::path::Path::new(model), &candle_core::Device::Cpu)?;
    println!("loaded in {:.2} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let faces = detector.detect(&buf, info.width as usize, info.height as usize, min_score)?;
    println!("{}×{}: {} faces in {:.2} s", info.width, info.height, faces.len(), started.elapsed().as_secs_f64());
    for f in faces {
        println!("{f:?}");
    }
    Ok(())
}
