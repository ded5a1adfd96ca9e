//! Dropout on LoRA inputs, reproducible. Each mask is a function of the micro-batch's key, the
//! adapter and the token offset, not of how many random numbers were drawn before it. So a resumed
//! run is bit-identical to an unbroken one, and activation checkpointing's recompute draws the
//! very masks its forward used (Burn's `Dropout` draws from one stream and has neither property).
//!
//! A trainer opens a [`scope`] around each micro-batch's forward and backward. Outside a scope
//! (scoring, generation, serving) dropout is off, as in PyTorch's `eval()`.

use std::cell::Cell;
use std::sync::Mutex;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::util::rng::SplitMix64;

thread_local! {
    /// (key, token offset) of the open scope on this thread.
    static SCOPE: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Seeding the backend and drawing happen under one lock: Burn's generator is per process, and
/// data-parallel ranks are threads of it.
static DRAW: Mutex<()> = Mutex::new(());

/// Restores the enclosing scope when dropped.
pub struct Scope(Option<(u64, u64)>);

impl Drop for Scope {
    fn drop(&mut self) {
        SCOPE.with(|s| s.set(self.0));
    }
}

/// Dropout on, with masks drawn from `key` (one per micro-batch of a step), until the guard drops.
pub fn scope(key: u64) -> Scope {
    Scope(SCOPE.with(|s| s.replace(Some((key, 0)))))
}

/// Within an open scope: the tokens now computed start at `offset` of the micro-batch (the MLP
/// computed in chunks), so their masks differ from the first chunk's. No effect outside a scope.
pub fn at_offset(offset: usize) -> Scope {
    Scope(SCOPE.with(|s| {
        let prev = s.get();
        s.set(prev.map(|(k, _)| (k, offset as u64)));
        prev
    }))
}

/// `x` with each element zeroed with probability `p` and the rest scaled by `1/(1−p)`, inside a
/// scope; `x` itself outside one or when `p = 0`.
pub fn apply<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64, salt: u64) -> Tensor<B, D> {
    let Some((key, offset)) = SCOPE.with(|s| s.get()).filter(|_| p > 0.0) else {
        return x;
    };
    let mut g = SplitMix64::derive(SplitMix64::derive(key, salt).next_u64(), offset);
    let seed = g.next_u64();
    let mask = {
        let _lock = DRAW.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(&x.device(), seed);
        super::lora::bernoulli::<B, D>(x.dims(), 1.0 - p, &x.device())
    };
    let dtype = x.dtype();
    x * mask.cast(dtype).mul_scalar(1.0 / (1.0 - p))
}
