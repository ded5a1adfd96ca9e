//! LongAlign-rs patch (vendor/burn-cubecl-fusion/PATCH.md): whether f32 matmuls may run on tensor
//! cores in TF32.
//!
//! CubeK stages both inputs of an f32 matmul as TF32 (10 significant bits) whenever autotune picks
//! an accelerated (Cmma/Mma/TMA) kernel on a device that has TF32 (CUDA, Ampere and newer):
//! `adjust_dtypes` in cubek-matmul 0.2's `definition/blueprint.rs`. Unpatched Burn 0.21 has no way
//! to say no. This switch, off by default as in PyTorch
//! (`torch.backends.cuda.matmul.allow_tf32 = False`), keeps the accelerated candidates out of
//! autotune for f32 × f32 products on such devices, so f32 means f32; half-precision products
//! keep their tensor-core kernels either way. Read by the plain matmul's autotune (burn-cubecl,
//! also patched) and the fused one's (`optim/matmul/tune.rs`).
//!
//! The mode is fixed by the first autotune that reads it: the candidate sets are built once per
//! process, and their names (autotune's cache checksum) carry the mode, so results persisted by
//! a run in the other mode are tuned again rather than reused.

use core::sync::atomic::{AtomicU8, Ordering};

use cubecl::{Runtime, client::ComputeClient, prelude::CubePrimitive, tf32};
use cubek::matmul::launch::MatmulAutotuneKey;

const STRICT: u8 = 0;
const ALLOW: u8 = 1;
/// Set once read: later calls to [`set_allow_tf32`] may not change it.
const READ: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(STRICT);

/// Allows (`true`) or forbids (`false`, the default) TF32 for f32 matmuls. Fails, returning the
/// mode in force, if an autotune has already read a different one.
pub fn set_allow_tf32(allow: bool) -> Result<(), bool> {
    let want = if allow { ALLOW } else { STRICT };
    let mut cur = MODE.load(Ordering::Acquire);
    loop {
        if cur & READ != 0 {
            let in_force = cur & ALLOW != 0;
            return if in_force == allow {
                Ok(())
            } else {
                Err(in_force)
            };
        }
        match MODE.compare_exchange(cur, want, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(now) => cur = now,
        }
    }
}

/// The mode set so far, without fixing it.
pub fn requested() -> bool {
    MODE.load(Ordering::Acquire) & ALLOW != 0
}

/// Whether f32 matmuls may run as TF32; fixes the mode for the rest of the process.
pub fn allow_tf32() -> bool {
    MODE.fetch_or(READ, Ordering::AcqRel) & ALLOW != 0
}

/// Whether `client`'s device would run accelerated f32 matmuls as TF32.
pub fn device_has_tf32<R: Runtime>(client: &ComputeClient<R>) -> bool {
    client
        .properties()
        .supports_type(tf32::as_type_native_unchecked().storage_type())
}

/// Whether the accelerated candidates must sit out for `key`: TF32 forbidden, a device that has
/// it, and both inputs f32 (what `adjust_dtypes` would demote).
pub fn excludes_accelerated(key: &MatmulAutotuneKey, device_has_tf32: bool) -> bool {
    let f32_ty = f32::as_type_native_unchecked().storage_type();
    device_has_tf32
        && !allow_tf32()
        && key.definition.elem_lhs == f32_ty
        && key.definition.elem_rhs == f32_ty
}

/// The name of the marker candidate that puts the mode into autotune's cache checksum (the
/// checksum hashes candidate names). Never run: its priority is negative for every key.
pub fn mode_marker() -> &'static str {
    if allow_tf32() {
        "longalign_f32_matmuls_may_use_tf32"
    } else {
        "longalign_f32_matmuls_strict"
    }
}
