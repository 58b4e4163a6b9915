//! From the heads' outputs to faces, as facexlib's `detect_faces` does it: the prior boxes
//! (`PriorBox`: two sizes per level at strides 8/16/32), decoding with variances 0.1/0.2 in f32,
//! the score threshold, the ranking and torchvision's NMS (IoU 0.4).

use focal_core::Face;

/// `cfg_re50`: anchor sizes per level and the levels' strides.
const MIN_SIZES: [[f64; 2]; 3] = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]];
const STEPS: [usize; 3] = [8, 16, 32];
const VARIANCE: [f32; 2] = [0.1, 0.2];
pub const NMS_THRESHOLD: f64 = 0.4;
/// The best candidates NMS compares (its time is quadratic in them). facexlib keeps all: with
/// Fooocus's threshold of 0.97 a real photo gives a handful, but a caller's threshold of 0 would
/// hand NMS every anchor (700 000 at 16 MP). Pytorch_Retinaface's own demo keeps 5000 too.
const MAX_CANDIDATES: usize = 5000;

/// `(cx, cy, w, h)` relative to the image, in the heads' order: level, row, column, size.
pub fn priors(height: usize, width: usize) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (sizes, &step) in MIN_SIZES.iter().zip(&STEPS) {
        let (rows, cols) = (height.div_ceil(step), width.div_ceil(step));
        for i in 0..rows {
            for j in 0..cols {
                for &size in sizes {
                    let cx = (j as f64 + 0.5) * step as f64 / width as f64;
                    let cy = (i as f64 + 0.5) * step as f64 / height as f64;
                    out.push([cx as f32, cy as f32, (size / width as f64) as f32, (size / height as f64) as f32]);
                }
            }
        }
    }
    out
}

/// The anchors the heads scored, as facexlib decodes them (in the image's pixels).
pub struct Raw<'a> {
    pub priors: &'a [[f32; 4]],
    /// Per anchor: 4 box offsets, 2 class logits' softmax (face second), 10 landmark offsets.
    pub boxes: &'a [f32],
    pub scores: &'a [f32],
    pub landmarks: &'a [f32],
    pub width: usize,
    pub height: usize,
}

/// Faces scoring over `threshold`, best first, overlaps removed.
pub fn faces(raw: &Raw, threshold: f32) -> Vec<Face> {
    let (w, h) = (raw.width as f32, raw.height as f32);
    let mut found: Vec<Face> = Vec::new();
    for (a, p) in raw.priors.iter().enumerate() {
        let score = raw.scores[a * 2 + 1];
        if score <= threshold {
            continue;
        }
        let l = &raw.boxes[a * 4..a * 4 + 4];
        let (cx, cy) = (p[0] + l[0] * VARIANCE[0] * p[2], p[1] + l[1] * VARIANCE[0] * p[3]);
        let (bw, bh) = (p[2] * (l[2] * VARIANCE[1]).exp(), p[3] * (l[3] * VARIANCE[1]).exp());
        let (x0, y0) = (cx - bw / 2.0, cy - bh / 2.0);
        let (x1, y1) = (bw + x0, bh + y0);
        let m = &raw.landmarks[a * 10..a * 10 + 10];
        let landmarks =
            std::array::from_fn(|k| ((p[0] + m[2 * k] * VARIANCE[0] * p[2]) * w, (p[1] + m[2 * k + 1] * VARIANCE[0] * p[3]) * h));
        found.push(Face { left: x0 * w, top: y0 * h, right: x1 * w, bottom: y1 * h, score, landmarks });
    }
    // Best first (numpy's argsort reversed; equal scores are left in anchor order).
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found.truncate(MAX_CANDIDATES);
    nms(found, NMS_THRESHOLD)
}

/// torchvision's `nms`: keep the best, drop later boxes whose IoU with it is over `threshold`.
fn nms(sorted: Vec<Face>, threshold: f64) -> Vec<Face> {
    let area = |f: &Face| (f.right - f.left) * (f.bottom - f.top);
    let mut suppressed = vec![false; sorted.len()];
    let mut keep = Vec::new();
    for i in 0..sorted.len() {
        if suppressed[i] {
            continue;
        }
        let a = &sorted[i];
        for (j, b) in sorted.iter().enumerate().skip(i + 1) {
            if suppressed[j] {
                continue;
            }
            let iw = (a.right.min(b.right) - a.left.max(b.left)).max(0.0);
            let ih = (a.bottom.min(b.bottom) - a.top.max(b.top)).max(0.0);
            let inter = iw * ih;
            let iou = inter / (area(a) + area(b) - inter);
            if iou as f64 > threshold {
                suppressed[j] = true;
            }
        }
        keep.push(i);
    }
    keep.into_iter().map(|i| sorted[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priors_follow_the_feature_maps() {
        // 100×60: levels of 8×13, 4×7 and 2×4 positions, two sizes each.
        let p = priors(60, 100);
        assert_eq!(p.len(), 2 * (8 * 13 + 4 * 7 + 2 * 4));
        assert_eq!(p[0], [0.04, 4.0 / 60.0, 0.16, 16.0 / 60.0]);
        assert_eq!(p[1][2], 0.32);
    }

    #[test]
    fn candidates_are_capped_before_nms() {
        // 6000 small boxes that overlap nothing, all over the threshold: the 5000 best come back.
        let n = 6000;
        let priors: Vec<[f32; 4]> = (0..n).map(|i| [(i % 100) as f32 / 100.0, (i / 100) as f32 / 100.0, 0.001, 0.001]).collect();
        let scores: Vec<f32> = (0..n).flat_map(|i| [0.0, 0.5 + i as f32 / (4 * n) as f32]).collect();
        let (boxes, landmarks) = (vec![0f32; n * 4], vec![0f32; n * 10]);
        let raw = Raw { priors: &priors, boxes: &boxes, scores: &scores, landmarks: &landmarks, width: 10_000, height: 10_000 };
        let kept = faces(&raw, 0.0);
        assert_eq!(kept.len(), MAX_CANDIDATES);
        assert!(kept[0].score > kept[1].score && kept.last().unwrap().score > scores[2 * (n - MAX_CANDIDATES) - 1]);
    }

    #[test]
    fn overlapping_boxes_keep_the_best() {
        let face = |left: f32, score: f32| Face { left, top: 0.0, right: left + 10.0, bottom: 10.0, score, landmarks: [(0.0, 0.0); 5] };
        let kept = nms(vec![face(0.0, 0.99), face(1.0, 0.98), face(20.0, 0.97), face(5.0, 0.96)], 0.4);
        // IoU(0, 1) = 9/11 > 0.4; IoU(0, 5) = 5/15 ≤ 0.4.
        assert_eq!(kept.iter().map(|f| f.left).collect::<Vec<_>>(), vec![0.0, 20.0, 5.0]);
    }
}
