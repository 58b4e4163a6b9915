//! transformers' logits processors and warpers (4.42), as the language models Fooocus samples from
//! use them: GPT-2's prompt expansion (top-k) and BLIP's captions (repetition penalty, top-k,
//! top-p). Each works in place on one row of next-token scores; removed tokens become −∞.

/// `RepetitionPenaltyLogitsProcessor`: each token already in the sequence (once, however often it
/// occurs) has its score divided by `penalty` when positive, multiplied when negative.
pub fn repetition_penalty(scores: &mut [f32], seen: &[u32], penalty: f32) {
    let mut done = vec![false; scores.len()];
    for &id in seen {
        let id = id as usize;
        if id < scores.len() && !std::mem::replace(&mut done[id], true) {
            let s = scores[id];
            scores[id] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// `TopKLogitsWarper`: scores below the k-th largest become −∞ (ties kept).
pub fn top_k_filter(scores: &mut [f32], k: usize) {
    if k == 0 || k >= scores.len() {
        return;
    }
    let mut sorted = scores.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for s in scores.iter_mut() {
        if *s < threshold {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `TopPLogitsWarper` (one token always kept): in ascending order of score, tokens whose
/// cumulative probability (torch's `cumsum` accumulates in double) stays at or below `1 − top_p`
/// — compared in f32, as torch compares a float tensor with a Python number — become −∞.
pub fn top_p_filter(scores: &mut [f32], top_p: f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let sorted: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
    let probs = softmax(&sorted);
    let limit = (1.0 - top_p) as f32;
    let mut cumulative = 0f64;
    let keep_from = order.len().saturating_sub(1);
    for (rank, (&i, &p)) in order.iter().zip(&probs).enumerate() {
        cumulative += p as f64;
        if rank < keep_from && cumulative as f32 <= limit {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// Softmax of one row (all −∞ but at least one finite score expected).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_ties_at_the_threshold() {
        let mut l = vec![1.0, 3.0, 2.0, 2.0, 0.0];
        top_k_filter(&mut l, 2);
        assert_eq!(l, [f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_above_the_mass() {
        // probabilities 0.6, 0.32, 0.05, 0.03: the bottom two sum to 0.08 ≤ 1 − 0.9 → removed.
        let mut l: Vec<f32> = [0.6f32, 0.32, 0.05, 0.03].iter().map(|p| p.ln()).collect();
        top_p_filter(&mut l, 0.9);
        assert!(l[0].is_finite() && l[1].is_finite());
        assert_eq!(&l[2..], [f32::NEG_INFINITY, f32::NEG_INFINITY]);
        // A single dominant token is always kept, even when it alone exceeds the mass.
        let mut one = vec![10.0, f32::NEG_INFINITY];
        top_p_filter(&mut one, 0.0);
        assert_eq!(one[0], 10.0);
    }

    #[test]
    fn repetition_penalty_counts_each_token_once() {
        let mut l = vec![2.2, -1.0, 5.0];
        repetition_penalty(&mut l, &[0, 1, 0, 0], 1.1);
        assert_eq!(l, [2.2 / 1.1, -1.1, 5.0]);
    }
}
