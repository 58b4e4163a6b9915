//! The two on-disk layouts of the same model map to identical canonical tensors.
mod common;
use candle_core::{DType, Device};
use focal_engine::checkpoint::Checkpoint;

#[test]
fn single_file_and_diffusers_layouts_give_the_same_tensors() {
    let single = Checkpoint::open(&common::fixtures().join("tiny-sdxl-a.safetensors")).unwrap();
    let diffusers = Checkpoint::open(&common::fixtures().join("diffusers")).unwrap();
    let ignored = |n: &str| n.ends_with("position_ids") || n.ends_with("logit_scale");
    let a: Vec<&str> = single.names().into_iter().filter(|n| !ignored(n)).collect();
    let b: Vec<&str> = diffusers.names().into_iter().filter(|n| !ignored(n)).collect();
    let only_a: Vec<_> = a.iter().filter(|n| !b.contains(n)).collect();
    let only_b: Vec<_> = b.iter().filter(|n| !a.contains(n)).collect();
    assert!(only_a.is_empty() && only_b.is_empty(), "only single-file: {only_a:?}\nonly diffusers: {only_b:?}");
    for name in a {
        let x = single.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let y = diffusers.tensor(name, DType::F32, &Device::Cpu).unwrap();
        let (x, y) = (x.flatten_all().unwrap(), y.flatten_all().unwrap());
        assert_eq!(x.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap(), "{name}");
    }
}
