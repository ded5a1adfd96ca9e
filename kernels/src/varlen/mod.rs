//! Varlen (block-diagonal) causal attention: the layout of a packed batch, the CubeCL kernels and
//! the host (CPU) kernel, and their registration on Burn's CubeCL, fusion, CPU and autodiff
//! backends.

mod autodiff;
pub(crate) use autodiff::untracked;
pub mod blocked;
pub mod cube;
pub(crate) mod flex;
mod fusion;
pub mod host;
pub mod kernel;
pub mod layout;
mod vector;
