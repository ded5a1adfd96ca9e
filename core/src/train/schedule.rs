//! Learning-rate schedule: linear warmup then cosine decay to zero, as transformers'
//! `get_cosine_schedule_with_warmup` (LongAlign's: 3% warmup, cosine). A pure function of the step,
//! so a resumed run needs no saved scheduler state beyond the step.

/// Learning rate for optimizer step `step` (0-based) of `total`.
pub fn cosine_with_warmup(peak: f64, step: usize, total: usize, warmup: usize) -> f64 {
    // transformers evaluates the multiplier at the number of steps already taken.
    let s = step as f64;
    if step < warmup {
        return peak * s / warmup.max(1) as f64;
    }
    let progress = (s - warmup as f64) / (total.saturating_sub(warmup)).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Warmup steps for a ratio of the total (rounded up, as transformers' `get_warmup_steps`).
pub fn warmup_steps(ratio: f64, total: usize) -> usize {
    (ratio * total as f64).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| cosine_with_warmup(1.0, s, 100, 10);
        assert_eq!(lr(0), 0.0);
        assert!((lr(5) - 0.5).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(55) - 0.5).abs() < 1e-12);
        assert!(lr(99) < 0.001 && lr(99) > 0.0);
        assert_eq!(warmup_steps(0.03, 100), 3);
        assert_eq!(warmup_steps(0.03, 10), 1);
    }
}
